// Sampler: picks the next token from logits (greedy, temperature, top-k), reproducibly by seed.
#pragma once
#include <cstdint>
#include <random>
#include <vector>

namespace nestscope {

struct SamplerOptions {
  double temperature = 0.8;  // 0 = greedy (argmax)
  int64_t top_k = 0;         // 0 = no top-k cut
  uint64_t seed = 0;
};

struct Sample {
  int64_t id = 0;
  double prob = 0;     // probability of the chosen token under the temperature-1 distribution
  double entropy = 0;  // predictive entropy (nats) of the temperature-1 distribution
};

class Sampler {
 public:
  explicit Sampler(const SamplerOptions& opts);  // throws Error on negative temperature / top_k
  // logits: V raw scores.
  Sample next(const std::vector<float>& logits);

 private:
  SamplerOptions opts_;
  std::mt19937_64 rng_;
  std::vector<double> probs_;  // scratch
};

}  // namespace nestscope
