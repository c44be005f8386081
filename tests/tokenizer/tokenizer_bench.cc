// Encode throughput of the Qwen2.5 tokenizer on one thread, over ~10 MB of varied English text.
// Prints one JSON object. Run by hand (not a CTest test):
//   build/tests/tokenizer/tokenizer_bench [model_dir] [megabytes]
//
// The text is generated deterministically: a Zipf-distributed vocabulary of common English words
// plus a long tail of made-up words (so the pre-token cache sees misses as real text does),
// sentence punctuation, numbers, contractions in mixed case, and paragraph/markdown structure.
// It is encoded in request-sized chunks (2-8 kB) with a freshly loaded tokenizer, so the first
// pass starts with a cold cache; a second pass over the same text shows the warm-cache rate.
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "engine/tokenizer/tokenizer.h"
#include "tests/test_paths.h"

namespace {

// Common English words, most frequent first (Zipf rank order).
constexpr const char* kCommonWords =
    "the of and to a in is that for it as was with be by on not he this are or his from at "
    "which but have an had they you were their one all we can her has there been if more when "
    "will would who so no she other its may these what them than some him time into only do "
    "could new about two first then also any like my over such our man me even most made after "
    "did many must before through years where much your way well down should because each just "
    "those people how too little state good very make world still own see men work long get "
    "here between both life being under never day same another know while last might great old "
    "year off come since against go came right used take three model system data government "
    "number question information development language computer performance inference tokenizer "
    "memory architecture experiment university research analysis software library important "
    "different following without however therefore although everything understanding "
    "particularly international environment responsibility implementation configuration "
    "approximately characteristics nevertheless ";
constexpr const char* kContractions[] = {"don't", "it's", "I'm",   "we've", "they'll", "she'd",
                                         "DON'T", "I'M",  "We'Re", "can't", "won't",   "you're"};
constexpr const char* kSyllables[] = {
    "ka", "ri",  "to", "men", "sel", "vo", "tra", "gon", "li",  "pre", "qua",  "nos", "ber",
    "dy", "fle", "xo", "un",  "ath", "or", "ic",  "ism", "ent", "ly",  "tion", "ous", "est"};

class TextGenerator {
 public:
  explicit TextGenerator(uint32_t seed) : rng_(seed) {
    for (const char* p = kCommonWords; *p != '\0';) {
      const char* end = std::strchr(p, ' ');
      words_.emplace_back(p, end - p);
      p = end + 1;
    }
    // The long tail: made-up words from syllables.
    std::uniform_int_distribution<int> nsyl(2, 5), syl(0, std::size(kSyllables) - 1);
    for (int i = 0; i < 40000; ++i) {
      std::string w;
      for (int k = nsyl(rng_); k > 0; --k) w += kSyllables[syl(rng_)];
      words_.push_back(w);
    }
    // Zipf weights over the ranked vocabulary.
    std::vector<double> weights(words_.size());
    for (size_t r = 0; r < words_.size(); ++r) weights[r] = 1.0 / std::pow(r + 1.0, 1.05);
    zipf_ = std::discrete_distribution<size_t>(weights.begin(), weights.end());
  }

  std::string Paragraph() {
    std::string p;
    if (Chance(0.08)) p += "## Section " + std::to_string(++section_) + "\n\n";
    if (Chance(0.1)) p += "- ";
    const int sentences = 1 + Uniform(6);
    for (int s = 0; s < sentences; ++s) {
      const int n = 4 + Uniform(20);
      for (int i = 0; i < n; ++i) {
        std::string w =
            Chance(0.03) ? kContractions[Uniform(std::size(kContractions))] : words_[zipf_(rng_)];
        if (i == 0 || Chance(0.04)) w[0] = static_cast<char>(std::toupper(w[0]));
        if (Chance(0.03)) w = std::to_string(Uniform(100000));
        if (Chance(0.01)) w = "\"" + w + "\"";
        p += w;
        if (i + 1 < n) p += Chance(0.07) ? ", " : (Chance(0.01) ? " (" + w + ") " : " ");
      }
      p += Chance(0.1) ? "?" : (Chance(0.05) ? "!" : ".");
      p += (s + 1 < sentences) ? " " : "";
    }
    p += Chance(0.05) ? "  \n\n" : "\n\n";
    return p;
  }

 private:
  bool Chance(double p) { return std::uniform_real_distribution<double>(0, 1)(rng_) < p; }
  int Uniform(int n) { return std::uniform_int_distribution<int>(0, n - 1)(rng_); }

  std::mt19937 rng_;
  std::vector<std::string> words_;
  std::discrete_distribution<size_t> zipf_;
  int section_ = 0;
};

}  // namespace

int main(int argc, char** argv) {
  const std::string dir = argc > 1 ? argv[1] : jetserve::testing::SharedModelDir();
  const double megabytes = argc > 2 ? std::atof(argv[2]) : 10.0;
  const auto load_start = std::chrono::steady_clock::now();
  absl::StatusOr<std::unique_ptr<jetserve::Tokenizer>> tok = jetserve::Tokenizer::LoadFromDir(dir);
  const double load_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count();
  if (!tok.ok()) {
    std::fprintf(stderr, "{\"error\": \"%s\"}\n", std::string(tok.status().message()).c_str());
    return 1;
  }

  // Chunks of 2-8 kB, like individual requests.
  TextGenerator gen(12345);
  std::vector<std::string> chunks;
  size_t total = 0;
  std::mt19937 rng(7);
  while (total < megabytes * 1e6) {
    const size_t target = 2000 + rng() % 6000;
    std::string chunk;
    while (chunk.size() < target) chunk += gen.Paragraph();
    total += chunk.size();
    chunks.push_back(std::move(chunk));
  }

  auto run = [&](size_t* tokens) {
    const auto start = std::chrono::steady_clock::now();
    for (const std::string& c : chunks) {
      absl::StatusOr<std::vector<int32_t>> ids = (*tok)->Encode(c, false);
      if (!ids.ok()) {
        std::fprintf(stderr, "encode failed: %s\n", std::string(ids.status().message()).c_str());
        std::exit(1);
      }
      *tokens += ids->size();
    }
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  size_t tokens = 0, tokens_warm = 0;
  const double cold_s = run(&tokens);
  const double warm_s = run(&tokens_warm);
  std::printf(
      "{\"bench\": \"tokenizer_encode\", \"threads\": 1, \"bytes\": %zu, \"chunks\": %zu, "
      "\"tokens\": %zu, \"bytes_per_token\": %.3f, \"seconds\": %.4f, \"mb_per_s\": %.2f, "
      "\"seconds_warm\": %.4f, \"mb_per_s_warm\": %.2f, \"load_seconds\": %.3f}\n",
      total, chunks.size(), tokens, static_cast<double>(total) / tokens, cold_s,
      total / cold_s / 1e6, warm_s, total / warm_s / 1e6, load_s);
  return 0;
}
