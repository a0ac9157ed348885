#include "core/model/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"

namespace nestscope {

Sampler::Sampler(const SamplerOptions& opts) : opts_(opts), rng_(opts.seed) {
  check(opts.temperature >= 0 && std::isfinite(opts.temperature),
        "temperature must be a finite number >= 0 (0 = greedy), got " + std::to_string(opts.temperature));
  check(opts.top_k >= 0, "top-k must be >= 0 (0 = off), got " + std::to_string(opts.top_k));
}

Sample Sampler::next(const std::vector<float>& logits) {
  check(!logits.empty(), "sampler: empty logits");
  const size_t V = logits.size();
  for (float l : logits) check(std::isfinite(l), "sampler: the model produced non-finite logits");
  const float max_logit = *std::max_element(logits.begin(), logits.end());

  // Temperature-1 distribution: reported probability and entropy.
  // H = −Σ p·log p = log z − Σ e_i·(l_i − max) / z with e_i = exp(l_i − max): one exp per token
  // of the vocabulary and no log (a 50,257-word vocabulary made the logs a visible share of a
  // small budget's decode step).
  probs_.resize(V);
  double z = 0, weighted = 0;
  for (size_t i = 0; i < V; ++i) {
    const double d = double(logits[i]) - max_logit;
    const double e = std::exp(d);
    probs_[i] = e;
    z += e;
    weighted += e * d;
  }
  for (size_t i = 0; i < V; ++i) probs_[i] /= z;
  const double entropy = std::max(0.0, std::log(z) - weighted / z);
  const size_t argmax = std::max_element(logits.begin(), logits.end()) - logits.begin();
  if (opts_.temperature == 0) return {int64_t(argmax), probs_[argmax], entropy};

  // Sampling distribution: logits / T, restricted to the top k.
  std::vector<double> w(V);
  for (size_t i = 0; i < V; ++i) w[i] = (double(logits[i]) - max_logit) / opts_.temperature;
  if (opts_.top_k > 0 && size_t(opts_.top_k) < V) {
    std::vector<double> sorted = w;
    std::nth_element(sorted.begin(), sorted.begin() + (opts_.top_k - 1), sorted.end(), std::greater<>());
    const double kth = sorted[opts_.top_k - 1];
    for (auto& x : w) if (x < kth) x = -INFINITY;
  }
  double total = 0;
  for (auto& x : w) total += x = std::exp(x);
  double u = std::uniform_real_distribution<double>(0.0, total)(rng_);
  size_t pick = V - 1;
  for (size_t i = 0; i < V; ++i) {
    if (w[i] > 0 && (u -= w[i]) <= 0) { pick = i; break; }
  }
  while (w[pick] == 0 && pick > 0) --pick;  // guard against rounding at the tail
  return {int64_t(pick), probs_[pick], entropy};
}

}  // namespace nestscope
