// `jetserve bench-serve`: an online serving benchmark in the manner of vLLM's: drives a running
// jetserve over gRPC with a fixed number of requests, either keeping `--concurrency` requests in
// flight or starting them as a Poisson process of `--request-rate` per second, with prompt and
// output lengths drawn from fixed values or uniform ranges. Prompts are random token ids and
// outputs have fixed lengths (ignore_eos), so the load is known exactly. Reports request and
// token throughput and TTFT / inter-token latency percentiles as JSON on stdout, with a
// progress bar on stderr.
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <deque>
#include <iostream>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "grpcpp/grpcpp.h"
#include "jetserve/v1/jetserve.grpc.pb.h"
#include "nlohmann/json.hpp"
#include "server/bench_util.h"
#include "server/cli_args.h"
#include "server/commands.h"
#include "server/status_util.h"

namespace jetserve {
namespace {

using nlohmann::json;

// A length distribution: "N" (always N) or "A:B" (uniform over [A, B]).
struct LengthRange {
  int64_t lo = 1;
  int64_t hi = 1;
};

absl::StatusOr<LengthRange> ParseRange(const std::string& flag, const std::string& text) {
  std::vector<std::string> parts = absl::StrSplit(text, ':');
  LengthRange r;
  if (parts.size() > 2 || !absl::SimpleAtoi(parts[0], &r.lo) ||
      (parts.size() == 2 && !absl::SimpleAtoi(parts[1], &r.hi))) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, ": '", text, "' is not N or MIN:MAX"));
  }
  if (parts.size() == 1) r.hi = r.lo;
  // Token counts go into int32 proto fields, and prompts are built in memory: a context longer
  // than any model's is a typo, not a workload.
  constexpr int64_t kMaxLen = int64_t{1} << 24;
  if (r.lo < 1 || r.hi < r.lo || r.hi > kMaxLen) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, ": need 1 <= MIN <= MAX <= ", kMaxLen, ", got '", text, "'"));
  }
  return r;
}

struct Planned {
  std::vector<int32_t> prompt;
  int32_t output_len = 0;
  double send_at = 0;  // seconds after the start (rate mode)
};

struct Outcome {
  bool ok = false;
  std::string error;
  double send = 0;         // seconds after the start
  double first_token = 0;  // seconds after send; 0 when no token came
  double end = 0;          // seconds after send
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  std::vector<double> itl;  // seconds between tokens (a message of k tokens gives k gaps/k)
};

class Progress {
 public:
  explicit Progress(int64_t total, bool enabled) : total_(total), enabled_(enabled) {}
  void Done() {
    std::lock_guard<std::mutex> lock(mu_);
    ++done_;
    if (!enabled_) return;
    constexpr int kWidth = 40;
    const int filled = static_cast<int>(kWidth * done_ / std::max<int64_t>(1, total_));
    std::cerr << "\r[" << std::string(filled, '#') << std::string(kWidth - filled, ' ') << "] "
              << done_ << "/" << total_ << " requests" << (done_ == total_ ? "\n" : "")
              << std::flush;
  }

 private:
  std::mutex mu_;
  int64_t done_ = 0;
  const int64_t total_;
  const bool enabled_;
};

Outcome RunOne(v1::JetServe::Stub& stub, const Planned& plan, double t0, double timeout_s) {
  Outcome out;
  v1::GenerateRequest request;
  request.mutable_token_ids()->mutable_ids()->Add(plan.prompt.begin(), plan.prompt.end());
  v1::SamplingParams* p = request.mutable_sampling();
  p->set_max_tokens(plan.output_len);
  p->set_ignore_eos(true);
  p->set_temperature(0.0f);
  grpc::ClientContext context;
  context.set_deadline(DeadlineAfter(timeout_s));
  const double send = NowSeconds();
  out.send = send - t0;
  std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader =
      stub.Generate(&context, request);
  v1::GenerateResponse response;
  double last = 0;
  while (reader->Read(&response)) {
    const double now = NowSeconds() - send;
    const int k = response.token_ids_size();
    if (k > 0) {
      if (out.first_token == 0) {
        out.first_token = now;
        for (int i = 1; i < k; ++i) out.itl.push_back(0);
      } else {
        for (int i = 0; i < k; ++i) out.itl.push_back((now - last) / k);
      }
      last = now;
    }
    if (response.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) {
      out.prompt_tokens = response.usage().prompt_tokens();
      out.completion_tokens = response.usage().completion_tokens();
    }
  }
  const grpc::Status status = reader->Finish();
  out.end = NowSeconds() - send;
  out.ok = status.ok();
  if (!status.ok()) {
    out.error = absl::StrCat(StatusCodeName(status.error_code()), ": ", status.error_message());
  }
  return out;
}

json Stats(std::vector<double> v) {
  double sum = 0;
  for (double x : v) sum += x;
  return {{"mean", v.empty() ? 0 : sum / v.size()},
          {"p50", Percentile(v, 50)},
          {"p90", Percentile(v, 90)},
          {"p99", Percentile(v, 99)},
          {"count", v.size()}};
}

}  // namespace

int RunBenchServe(int argc, char** argv) {
  CliArgs args;
  args.AddValue("target", "server address, HOST:PORT", "127.0.0.1:50051");
  args.AddValue("num-requests", "requests to send in all", "100");
  args.AddValue("concurrency", "requests kept in flight (closed loop); default when no rate", "8");
  args.AddValue("request-rate",
                "requests per second, Poisson arrivals (open loop); overrides --concurrency");
  args.AddValue("prompt-len", "prompt tokens: N or MIN:MAX (uniform)", "128");
  args.AddValue("output-len", "generated tokens: N or MIN:MAX (uniform); EOS is ignored", "64");
  args.AddValue("seed", "seed for lengths, prompt ids and arrival times", "0");
  args.AddValue("timeout", "deadline in seconds for each request", "600");
  args.AddBool("wait-for-ready", "wait (up to 60 s) for the server to come up instead of failing");
  args.AddBool("no-progress", "no progress bar on stderr");
  args.AddBool("json", "print the result as one JSON object (the default output)");
  for (int i = 2; i < argc; ++i) {
    if (std::string(argv[i]) == "--help" || std::string(argv[i]) == "-h") {
      std::cout << "usage: jetserve bench-serve --target HOST:PORT [--num-requests N] "
                   "[--concurrency C | --request-rate R] [--prompt-len N|A:B] "
                   "[--output-len N|A:B] [--seed S] [--json]\n"
                << "drives a running server over gRPC and reports throughput and latency "
                   "percentiles as JSON\n\nflags:\n"
                << args.Usage();
      return 0;
    }
  }
  if (absl::Status s = args.Parse(argc, argv, 2); !s.ok())
    return ReportUsageError("bench-serve", s, args);
  auto num = args.GetInt("num-requests", 1, 1 << 24);
  auto concurrency = args.GetInt("concurrency", 1, 4096);
  auto seed = args.GetInt("seed", 0, INT64_MAX);
  auto timeout = args.GetDouble("timeout");
  auto prompt_len = ParseRange("prompt-len", args.Get("prompt-len"));
  auto output_len = ParseRange("output-len", args.Get("output-len"));
  for (const absl::Status& s : {num.status(), concurrency.status(), seed.status(), timeout.status(),
                                prompt_len.status(), output_len.status()}) {
    if (!s.ok()) return ReportUsageError("bench-serve", s, args);
  }
  double rate = 0;
  if (args.Has("request-rate")) {
    auto r = args.GetDouble("request-rate");
    if (!r.ok()) return ReportUsageError("bench-serve", r.status(), args);
    if (!(*r > 0) || !std::isfinite(*r)) {
      return ReportUsageError("bench-serve",
                              absl::InvalidArgumentError("--request-rate: must be > 0"), args);
    }
    rate = *r;
  }
  if (!(*timeout > 0)) {
    return ReportUsageError("bench-serve",
                            absl::InvalidArgumentError("--timeout: must be > 0 seconds"), args);
  }

  auto channel = grpc::CreateChannel(args.Get("target"), grpc::InsecureChannelCredentials());
  std::unique_ptr<v1::JetServe::Stub> stub = v1::JetServe::NewStub(channel);
  v1::GetModelInfoResponse info;
  {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    context.set_wait_for_ready(args.GetBool("wait-for-ready"));
    const grpc::Status s = stub->GetModelInfo(&context, v1::GetModelInfoRequest{}, &info);
    if (!s.ok()) {
      std::cerr << "jetserve bench-serve: GetModelInfo on " << args.Get("target") << ": "
                << StatusCodeName(s.error_code()) << ": " << s.error_message() << "\n";
      return 1;
    }
  }

  // The whole workload is drawn before the first request, from the seed alone.
  std::mt19937_64 rng(static_cast<uint64_t>(*seed));
  std::vector<Planned> plan(*num);
  double t = 0;
  for (Planned& p : plan) {
    const int64_t plen =
        std::uniform_int_distribution<int64_t>(prompt_len->lo, prompt_len->hi)(rng);
    p.output_len = static_cast<int32_t>(
        std::uniform_int_distribution<int64_t>(output_len->lo, output_len->hi)(rng));
    p.prompt.resize(plen);
    std::uniform_int_distribution<int32_t> id(0, std::max(1, info.vocab_size()) - 1);
    for (int32_t& x : p.prompt) x = id(rng);
    if (rate > 0) {
      p.send_at = t;
      t += std::exponential_distribution<double>(rate)(rng);
    }
  }

  std::vector<Outcome> outcomes(plan.size());
  Progress progress(static_cast<int64_t>(plan.size()), !args.GetBool("no-progress"));
  const double t0 = NowSeconds();
  std::vector<std::thread> threads;
  // Shared by the closed-loop workers, which run until the joins below: declared out here, not
  // in the branch that starts them (ASan: stack-use-after-scope once the branch had ended).
  std::atomic<size_t> next{0};
  std::string thread_error;
  if (rate > 0) {
    // Open loop: each request starts at its arrival time on its own thread, however many are
    // still in flight. Finished threads are joined as later ones start (an unjoined thread
    // keeps its stack: 100,000 requests would not fit), oldest first.
    std::deque<std::pair<std::thread, std::shared_ptr<std::atomic<bool>>>> open;
    for (size_t i = 0; i < plan.size(); ++i) {
      const double wait = plan[i].send_at - (NowSeconds() - t0);
      if (wait > 0) std::this_thread::sleep_for(std::chrono::duration<double>(wait));
      while (!open.empty() && open.front().second->load()) {
        open.front().first.join();
        open.pop_front();
      }
      auto done = std::make_shared<std::atomic<bool>>(false);
      try {
        open.emplace_back(std::thread([&, i, done] {
                            outcomes[i] = RunOne(*stub, plan[i], t0, *timeout);
                            progress.Done();
                            *done = true;
                          }),
                          done);
      } catch (const std::system_error& e) {
        // The machine cannot run another thread: stop sending, report what was measured.
        thread_error = absl::StrCat("could not start request ", i, " with ", open.size(),
                                    " in flight (", e.what(), "): lower --request-rate");
        for (size_t j = i; j < plan.size(); ++j) outcomes[j].error = thread_error;
        break;
      }
    }
    for (auto& [thread, done] : open) threads.push_back(std::move(thread));
  } else {
    const int64_t workers = std::min<int64_t>(*concurrency, static_cast<int64_t>(plan.size()));
    for (int64_t w = 0; w < workers; ++w) {
      threads.emplace_back([&] {
        for (size_t i = next.fetch_add(1); i < plan.size(); i = next.fetch_add(1)) {
          outcomes[i] = RunOne(*stub, plan[i], t0, *timeout);
          progress.Done();
        }
      });
    }
  }
  for (std::thread& th : threads) th.join();
  const double duration = NowSeconds() - t0;
  if (!thread_error.empty()) std::cerr << "jetserve bench-serve: " << thread_error << "\n";

  std::vector<double> ttft, itl, tpot, e2e;
  int64_t completed = 0, prompt_total = 0, completion_total = 0;
  json errors = json::array();
  for (const Outcome& o : outcomes) {
    if (!o.ok) {
      if (errors.size() < 5) errors.push_back(o.error);
      continue;
    }
    ++completed;
    prompt_total += o.prompt_tokens;
    completion_total += o.completion_tokens;
    e2e.push_back(o.end);
    if (o.first_token > 0) ttft.push_back(o.first_token);
    itl.insert(itl.end(), o.itl.begin(), o.itl.end());
    if (o.completion_tokens > 1) {
      tpot.push_back((o.end - o.first_token) / static_cast<double>(o.completion_tokens - 1));
    }
  }
  json out = {{"target", args.Get("target")},
              {"model",
               {{"name", info.model_name()},
                {"layer_types",
                 std::vector<std::string>(info.layer_types().begin(), info.layer_types().end())}}},
              {"config",
               {{"num_requests", plan.size()},
                {"mode", rate > 0 ? "request_rate" : "concurrency"},
                {"request_rate", rate > 0 ? json(rate) : json(nullptr)},
                {"concurrency", rate > 0 ? json(nullptr) : json(*concurrency)},
                {"prompt_len", {{"min", prompt_len->lo}, {"max", prompt_len->hi}}},
                {"output_len", {{"min", output_len->lo}, {"max", output_len->hi}}},
                {"seed", *seed}}},
              {"completed", completed},
              {"failed", static_cast<int64_t>(plan.size()) - completed},
              {"errors", errors},
              {"duration_s", duration},
              {"request_throughput_per_s", completed / duration},
              {"output_tokens_per_s", completion_total / duration},
              {"total_tokens_per_s", (prompt_total + completion_total) / duration},
              {"prompt_tokens", prompt_total},
              {"completion_tokens", completion_total},
              {"ttft_s", Stats(ttft)},
              {"itl_s", Stats(itl)},
              {"tpot_s", Stats(tpot)},
              {"e2e_latency_s", Stats(e2e)}};
  std::cout << out.dump(2) << "\n";
  return completed == static_cast<int64_t>(plan.size()) ? 0 : 1;
}

}  // namespace jetserve
