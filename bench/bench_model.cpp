// nestscope_bench: batch-1 decode, 64- and 256-token prefill and training throughput of a model (JSON).
// usage: nestscope_bench [--model FILE] [--decode-tokens N] [--train-steps N] [--threads N]
#include <chrono>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "core/model/macs.h"
#include "core/engine/engine.h"
#include "core/io/checkpoint.h"
#include "core/io/default_model.h"
#include "core/model/sampler.h"
#include "core/train/trainer.h"

using namespace nestscope;
using Clock = std::chrono::steady_clock;

namespace {
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }
}  // namespace

int main(int argc, char** argv) {
  std::string model_path;
  int64_t decode_tokens = 255, train_steps = 5;
  int threads = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--model")) model_path = argv[i + 1];
    else if (!std::strcmp(argv[i], "--decode-tokens")) decode_tokens = std::stoll(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--train-steps")) train_steps = std::stoll(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--threads")) threads = std::stoi(argv[i + 1]);
  }
  try {
    init_threads(threads);
    LoadedModel lm = model_path.empty() ? load_checkpoint_bytes(default_model_bytes(), "<embedded default model>")
                                        : load_checkpoint(model_path);
    auto& m = lm.model;
    const auto& cfg = lm.config;
    decode_tokens = std::min(decode_tokens, cfg.context - 1);
    nlohmann::json out = {{"model", lm.source}, {"parameters", m->parameter_count()},
                          {"threads", at::get_num_threads()}};

    {  // Batch-1 decode with the KV cache: one token in, one distribution out, greedy.
      torch::NoGradGuard g;
      m->eval();
      Sampler sampler({0.0, 0, 0});
      double best = 1e30;
      std::vector<int64_t> greedy;  // the ids after token 0: bench/peer_pytorch.py must find the same
      for (int rep = 0; rep < 5; ++rep) {
        auto cache = m->make_cache(1);
        auto x = torch::zeros({1, 1}, torch::kInt64);
        greedy.clear();
        const auto t0 = Clock::now();
        for (int64_t i = 0; i < decode_tokens; ++i) {
          auto logits = m->forward(x, &cache).view({-1}).contiguous();  // [V]
          std::vector<float> l(logits.data_ptr<float>(), logits.data_ptr<float>() + logits.numel());
          const int64_t id = sampler.next(l).id;
          if (greedy.size() < 64) greedy.push_back(id);
          x.fill_(id);
        }
        best = std::min(best, seconds_since(t0));
      }
      out["greedy_ids"] = greedy;
      out["decode_tokens"] = decode_tokens;
      out["decode_tokens_per_s"] = double(decode_tokens) / best;
      out["decode_ms_per_token"] = 1000.0 * best / double(decode_tokens);
      out["macs_per_token_full_context"] = macs_per_token(*m, cfg.context);

      for (int64_t want : {int64_t(64), int64_t(256)}) {  // prefill: one forward of the prompt into the cache
        const int64_t prefill = std::min<int64_t>(want, cfg.context);
        auto prompt = torch::randint(0, cfg.vocab_size, {1, prefill}, torch::kInt64);
        double best_prefill = 1e30;
        for (int rep = 0; rep < 20; ++rep) {
          auto cache = m->make_cache(1);
          const auto t0 = Clock::now();
          m->forward(prompt, &cache);
          best_prefill = std::min(best_prefill, seconds_since(t0));
        }
        const std::string key = "prefill" + std::to_string(want);
        out[key + "_tokens"] = prefill;
        out[key + "_ms"] = 1000.0 * best_prefill;
        out[key + "_tokens_per_s"] = double(prefill) / best_prefill;
      }
    }
    if (train_steps > 0) {  // Training throughput at the published batch (32 x context).
      std::vector<int64_t> tokens(200000);
      std::mt19937_64 rng(1);
      for (auto& t : tokens) t = int64_t(rng() % uint64_t(cfg.vocab_size));
      Corpus corpus{{tokens.begin(), tokens.begin() + 190000}, {tokens.begin() + 190000, tokens.end()}};
      TrainOptions o;
      o.steps = train_steps;
      o.warmup = 1;
      o.threads = threads;
      Gpt fresh(cfg);
      const auto r = train_model(fresh, corpus, o);
      out["train_batch"] = o.batch;
      out["train_steps"] = train_steps;
      out["train_tokens_per_s"] = r.tokens_per_s;
      out["train_s_per_step"] = r.seconds / double(train_steps);
    }
    std::printf("%s\n", out.dump(2).c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
