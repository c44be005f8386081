#include "engine/model.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/status_macros.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/jet_ops.h"

namespace jetserve {

namespace kc = kernels::cpu;

namespace {

kc::WeightMatrix Matrix(const TensorView& t) {
  if (!t.present()) return {};
  return {t.dtype, t.data, t.shape[0], t.shape.size() > 1 ? t.shape[1] : 1};
}

// Small per-channel tensors are used many times per step: convert them to fp32 once.
std::vector<float> ToFloat(const TensorView& t) {
  std::vector<float> out;
  if (!t.present()) return out;
  out.resize(t.numel());
  for (int64_t i = 0; i < t.numel(); ++i) out[i] = t.at(i);
  return out;
}

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Adds the wall time of its scope to *sink when sink is set.
class ScopedTimer {
 public:
  explicit ScopedTimer(double* sink) : sink_(sink), start_(sink != nullptr ? Now() : 0) {}
  ~ScopedTimer() {
    if (sink_ != nullptr) *sink_ += Now() - start_;
  }

 private:
  double* sink_;
  double start_;
};

float* Grow(std::vector<float>& v, int64_t n) {
  if (static_cast<int64_t>(v.size()) < n) v.resize(n);
  return v.data();
}

}  // namespace

struct Model::Layer {
  LayerType type;
  std::vector<float> input_norm, post_norm;  // [H]
  kc::WeightMatrix gate, up, down;
  kc::WeightMatrix q, k, v, o;
  std::vector<float> q_bias, k_bias, v_bias;  // attn/swa
  // jet
  kc::WeightMatrix g, a, b, conv_w1, conv_w2;
  std::vector<float> a_log, dt_bias, conv_w2_bias, o_norm;
};

Model::Model(std::unique_ptr<Checkpoint> checkpoint) : checkpoint_(std::move(checkpoint)) {
  const ModelWeights& w = checkpoint_->weights();
  embed_ = Matrix(w.embed_tokens);
  lm_head_ = Matrix(w.lm_head);
  final_norm_ = ToFloat(w.final_norm);
  const ModelConfig& c = checkpoint_->config();
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const LayerWeights& lw = w.layers[l];
    Layer layer;
    layer.type = c.layer_types[l];
    layer.input_norm = ToFloat(lw.input_layernorm);
    layer.post_norm = ToFloat(lw.post_attention_layernorm);
    layer.gate = Matrix(lw.gate_proj);
    layer.up = Matrix(lw.up_proj);
    layer.down = Matrix(lw.down_proj);
    layer.q = Matrix(lw.q_proj);
    layer.k = Matrix(lw.k_proj);
    layer.v = Matrix(lw.v_proj);
    layer.o = Matrix(lw.o_proj);
    layer.q_bias = ToFloat(lw.q_bias);
    layer.k_bias = ToFloat(lw.k_bias);
    layer.v_bias = ToFloat(lw.v_bias);
    layer.g = Matrix(lw.g_proj);
    layer.a = Matrix(lw.a_proj);
    layer.b = Matrix(lw.b_proj);
    layer.conv_w1 = Matrix(lw.conv_w1);
    layer.conv_w2 = Matrix(lw.conv_w2);
    layer.a_log = ToFloat(lw.A_log);
    layer.dt_bias = ToFloat(lw.dt_bias);
    layer.conv_w2_bias = ToFloat(lw.conv_w2_bias);
    layer.o_norm = ToFloat(lw.o_norm);
    layers_.push_back(std::move(layer));
  }
}

Model::~Model() = default;

void Model::set_backend(std::unique_ptr<ForwardBackend> backend) { backend_ = std::move(backend); }

absl::Status Model::ForwardKeepLogits(const ForwardBatch& batch, HybridMemory& memory) {
  if (backend_ == nullptr) return absl::FailedPreconditionError("no backend attached");
  RETURN_IF_ERROR(Validate(batch, memory));
  return backend_->ForwardKeepLogits(batch, memory);
}

absl::Status Model::AttachMemory(HybridMemory& memory) {
  return backend_ != nullptr ? backend_->AttachMemory(memory) : absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Model>> Model::Load(const std::string& dir) {
  ASSIGN_OR_RETURN(std::unique_ptr<Checkpoint> checkpoint, Checkpoint::Open(dir));
  return std::unique_ptr<Model>(new Model(std::move(checkpoint)));
}

absl::Status Model::Validate(const ForwardBatch& batch, HybridMemory& memory) const {
  const ModelConfig& c = config();
  int64_t total = 0;
  for (const BatchSequence& s : batch.seqs) {
    if (s.num_tokens < 1 || s.start_position < 0 || s.memory == nullptr) {
      return absl::InvalidArgumentError("every sequence in a batch needs memory and >= 1 token");
    }
    const int64_t end = s.start_position + s.num_tokens;
    if (c.has_layer_type(LayerType::kJet) && s.memory->state_slot < 0) {
      return absl::FailedPreconditionError("sequence has no state slot");
    }
    if (c.has_layer_type(LayerType::kSwa) && s.memory->window_ring < 0) {
      return absl::FailedPreconditionError("sequence has no window ring");
    }
    if (PagedKvPool* kv = memory.paged_kv();
        kv != nullptr &&
        static_cast<int64_t>(s.memory->kv_blocks.size()) * kv->shape().page_size < end) {
      return absl::FailedPreconditionError(absl::StrCat("sequence holds KV blocks for ",
                                                        s.memory->kv_blocks.size(),
                                                        " pages but needs positions up to ", end));
    }
    total += s.num_tokens;
  }
  if (total != static_cast<int64_t>(batch.token_ids.size())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "batch has ", batch.token_ids.size(), " token ids but its sequences add up to ", total));
  }
  for (int32_t id : batch.token_ids) {
    if (id < 0 || id >= c.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("token id ", id, " is outside the vocabulary [0, ", c.vocab_size, ")"));
    }
  }
  return absl::OkStatus();
}

void Model::Linear(const float* x, int64_t tokens, const kc::WeightMatrix& w, const float* bias,
                   float* y) {
  if (profile_ == nullptr) {
    kc::Linear(x, tokens, w, bias, y);
    return;
  }
  ScopedTimer timer(&profile_->linear_seconds);
  kc::Linear(x, tokens, w, bias, y);
  profile_->linear_flops += 2.0 * tokens * w.rows * w.cols;
  profile_->linear_weight_bytes += static_cast<double>(w.rows) * w.cols * DTypeSize(w.dtype);
}

absl::Status Model::Forward(const ForwardBatch& batch, HybridMemory& memory,
                            std::vector<float>* logits) {
  RETURN_IF_ERROR(Validate(batch, memory));
  if (backend_ != nullptr) return backend_->Forward(batch, memory, logits);
  ScopedTimer forward_timer(profile_ != nullptr ? &profile_->forward_seconds : nullptr);
  if (profile_ != nullptr) ++profile_->forward_calls;
  const ModelConfig& c = config();
  const int64_t T = static_cast<int64_t>(batch.token_ids.size());
  const int64_t H = c.hidden_size;
  float* x = Grow(x_, T * H);    // [T, H]
  float* hn = Grow(hn_, T * H);  // [T, H]
  Grow(delta_, T * H);
  positions_.resize(T);
  {
    int64_t row = 0;
    for (const BatchSequence& s : batch.seqs) {
      for (int64_t t = 0; t < s.num_tokens; ++t) {
        positions_[row++] = static_cast<int32_t>(s.start_position + t);
      }
    }
  }
  kc::EmbeddingGather(embed_, batch.token_ids.data(), T, x);
  for (int64_t l = 0; l < static_cast<int64_t>(layers_.size()); ++l) {
    const Layer& layer = layers_[l];
    kc::RmsNorm(x, layer.input_norm.data(), T, H, c.rms_norm_eps, hn);
    if (layer.type == LayerType::kJet) {
      JetMixer(layer, l, batch, memory);
    } else {
      AttentionMixer(layer, l, batch, memory);
    }
    kc::AddRmsNorm(x, delta_.data(), layer.post_norm.data(), T, H, c.rms_norm_eps, hn);
    Mlp(layer, T);
    kc::AddInPlace(x, delta_.data(), T * H);
  }
  // Final norm and lm_head only for the rows whose logits are wanted.
  const int64_t rows = batch.logits_rows();
  float* selected = Grow(buf_[0], rows * H);  // [rows, H]
  {
    int64_t row = 0, offset = 0;
    for (const BatchSequence& s : batch.seqs) {
      const int64_t first = s.all_logits ? 0 : s.num_tokens - 1;
      for (int64_t t = first; t < s.num_tokens; ++t) {
        std::copy_n(x + (offset + t) * H, H, selected + (row++) * H);
      }
      offset += s.num_tokens;
    }
  }
  kc::RmsNorm(selected, final_norm_.data(), rows, H, c.rms_norm_eps, selected);
  logits->resize(rows * c.vocab_size);
  Linear(selected, rows, lm_head_, nullptr, logits->data());
  return absl::OkStatus();
}

void Model::AttentionMixer(const Layer& layer, int64_t layer_index, const ForwardBatch& batch,
                           HybridMemory& memory) {
  const ModelConfig& c = config();
  const int64_t T = static_cast<int64_t>(batch.token_ids.size());
  const kc::AttentionShape shape{c.num_attention_heads, c.num_key_value_heads, c.head_dim};
  const int64_t q_width = shape.q_heads * shape.head_dim;
  const int64_t kv_width = shape.kv_heads * shape.head_dim;
  float* q = Grow(buf_[0], T * q_width);     // [T, Nq, hd]
  float* k = Grow(buf_[1], T * kv_width);    // [T, Nkv, hd]
  float* v = Grow(buf_[2], T * kv_width);    // [T, Nkv, hd]
  float* attn = Grow(buf_[3], T * q_width);  // [T, Nq, hd]
  Linear(hn_.data(), T, layer.q, layer.q_bias.data(), q);
  Linear(hn_.data(), T, layer.k, layer.k_bias.data(), k);
  Linear(hn_.data(), T, layer.v, layer.v_bias.data(), v);
  const double attention_start = profile_ != nullptr ? Now() : 0;
  kc::Rope(q, positions_.data(), T, shape.q_heads, shape.head_dim, c.rope_theta);
  kc::Rope(k, positions_.data(), T, shape.kv_heads, shape.head_dim, c.rope_theta);

  const int64_t kind_index = memory.index_within_type(static_cast<int>(layer_index));
  // Reused across steps: resize only allocates when the batch grows past its largest so far.
  std::vector<kc::AttentionSeq>& seqs = attn_seqs_;
  seqs.resize(batch.seqs.size());
  int64_t offset = 0;
  for (size_t i = 0; i < batch.seqs.size(); ++i) {
    const BatchSequence& s = batch.seqs[i];
    kc::AttentionSeq& a = seqs[i];
    a = kc::AttentionSeq{};
    a.token_offset = offset;
    a.num_tokens = s.num_tokens;
    a.start_position = s.start_position;
    if (layer.type == LayerType::kAttn) {
      a.block_table = s.memory->kv_blocks.data();
    } else {
      a.k_ring = memory.window_rings()->keys(s.memory->window_ring, kind_index);
      a.v_ring = memory.window_rings()->values(s.memory->window_ring, kind_index);
    }
    offset += s.num_tokens;
  }
  if (layer.type == LayerType::kAttn) {
    PagedKvPool* kv = memory.paged_kv();
    kc::PagedAttention(q, k, v, seqs.data(), seqs.size(), shape, kv->shape().page_size,
                       kv->keys(kind_index), kv->values(kind_index), attn);
  } else {
    kc::WindowAttention(q, k, v, seqs.data(), seqs.size(), shape, c.swa_window_size, attn);
  }
  if (profile_ != nullptr) profile_->attention_seconds += Now() - attention_start;
  Linear(attn, T, layer.o, nullptr, delta_.data());
}

void Model::JetMixer(const Layer& layer, int64_t layer_index, const ForwardBatch& batch,
                     HybridMemory& memory) {
  const JetConfig& jc = config().jet;
  const int64_t T = static_cast<int64_t>(batch.token_ids.size());
  const kc::JetShape shape{jc.num_heads, jc.head_dim, jc.value_head_dim, jc.conv_size};
  const int64_t kd = jc.key_dim(), vd = jc.value_dim(), hj = jc.num_heads;
  float* q = Grow(buf_[0], T * kd);                    // [T, Hj, Dk]
  float* k = Grow(buf_[1], T * kd);                    // [T, Hj, Dk]
  float* u = Grow(buf_[2], T * vd);                    // [T, Hj*Dv] conv input
  float* gate = Grow(buf_[3], T * vd);                 // [T, Hj, Dv]
  float* a = Grow(buf_[4], T * hj);                    // [T, Hj] -> g
  float* b = Grow(buf_[5], T * hj);                    // [T, Hj] -> beta
  float* gen = Grow(buf_[6], T * jc.generator_dim());  // [T, value_dim/R]
  float* kern = Grow(buf_[7], T * vd * jc.conv_size);  // [T, value_dim, W]
  const float* h = hn_.data();
  Linear(h, T, layer.q, nullptr, q);
  Linear(h, T, layer.k, nullptr, k);
  Linear(h, T, layer.v, nullptr, u);
  Linear(h, T, layer.g, nullptr, gate);
  Linear(h, T, layer.a, nullptr, a);
  Linear(h, T, layer.b, nullptr, b);
  Linear(h, T, layer.conv_w1, nullptr, gen);
  double jet_start = profile_ != nullptr ? Now() : 0;
  kc::SiluInPlace(q, T * kd);
  kc::SiluInPlace(k, T * kd);
  kc::L2NormHeads(q, T, hj, jc.head_dim, 1e-6f, 1.0f / std::sqrt(static_cast<float>(jc.head_dim)));
  kc::L2NormHeads(k, T, hj, jc.head_dim, 1e-6f, 1.0f);
  kc::JetGates(a, b, layer.a_log.data(), layer.dt_bias.data(), T, hj);
  kc::SiluInPlace(gen, T * jc.generator_dim());
  if (profile_ != nullptr) profile_->jet_seconds += Now() - jet_start;
  Linear(gen, T, layer.conv_w2, layer.conv_w2_bias.data(), kern);

  jet_start = profile_ != nullptr ? Now() : 0;
  const int64_t jet_index = memory.index_within_type(static_cast<int>(layer_index));
  StateSlotPool* slots = memory.state_slots();
  std::vector<kc::JetSeq>& seqs = jet_seqs_;
  seqs.resize(batch.seqs.size());
  int64_t offset = 0;
  for (size_t i = 0; i < batch.seqs.size(); ++i) {
    const BatchSequence& s = batch.seqs[i];
    seqs[i] = {offset, s.num_tokens, slots->state(s.memory->state_slot, jet_index),
               slots->conv_tail(s.memory->state_slot, jet_index)};
    offset += s.num_tokens;
  }
  // v reuses gen's role: the conv output goes into buf_[6] resized to [T, value_dim].
  float* v = Grow(buf_[6], T * vd);  // [T, Hj, Dv]
  kc::DynamicCausalConv(u, kern, seqs.data(), seqs.size(), shape, v);
  float* o = u;  // [T, Hj, Dv]: u is no longer needed
  kc::GatedDeltaRule(q, k, v, a, b, seqs.data(), seqs.size(), shape, o);
  kc::GatedRmsNorm(o, gate, layer.o_norm.data(), T, hj, jc.value_head_dim, jc.norm_eps);
  if (profile_ != nullptr) profile_->jet_seconds += Now() - jet_start;
  Linear(o, T, layer.o, nullptr, delta_.data());
}

void Model::Mlp(const Layer& layer, int64_t tokens) {
  const int64_t I = config().intermediate_size;
  float* gate = Grow(buf_[0], tokens * I);  // [T, I]
  float* up = Grow(buf_[1], tokens * I);    // [T, I]
  Linear(hn_.data(), tokens, layer.gate, nullptr, gate);
  Linear(hn_.data(), tokens, layer.up, nullptr, up);
  kc::SiluMul(gate, up, tokens, I, gate);
  Linear(gate, tokens, layer.down, nullptr, delta_.data());
}

}  // namespace jetserve
