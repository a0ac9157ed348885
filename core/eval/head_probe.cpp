#include "core/eval/head_probe.h"

#include <algorithm>
#include <random>
#include <vector>

#include "core/error.h"
#include "core/gate/block_recovery.h"

namespace nestscope {

namespace {

// Mean KL(full ‖ masked) per sequence for masks [B, L, H] over idx [1, T] -> [B] (float64).
torch::Tensor knockout_effect(Gpt& model, const torch::Tensor& idx, const torch::Tensor& masks) {
  torch::NoGradGuard no_grad;
  const int64_t B = masks.size(0), T = idx.size(1), V = model->config().vocab_size;
  auto full = torch::log_softmax(model->forward(idx), -1);  // [1, T, V]
  const auto p = full.exp();
  // Probes run in batches whose logits stay within 256 MB (one at a time for a large vocabulary).
  const int64_t chunk = std::clamp<int64_t>((int64_t(256) << 20) / std::max<int64_t>(1, 3 * T * V * 4), 1, B);
  const auto on = masks.to(full.device());
  std::vector<torch::Tensor> parts;
  for (int64_t b0 = 0; b0 < B; b0 += chunk) {
    const int64_t n = std::min(chunk, B - b0);
    torch::Tensor masked;
    {
      ScopedHook hook(model, head_mask_hook(on.narrow(0, b0, n)));
      masked = torch::log_softmax(model->forward(idx.expand({n, T}).contiguous()), -1);  // [n, T, V]
    }
    parts.push_back((p * (full - masked)).sum(-1).mean(-1).to(torch::kCPU, torch::kFloat64));  // [n]
  }
  return torch::cat(parts);  // [B]
}

void check_input(const torch::Tensor& idx) {
  check(idx.dim() == 2 && idx.size(0) == 1 && idx.size(1) >= 1, "head probes need one sequence [1, T]");
}

}  // namespace

torch::Tensor probe_heads(Gpt& model, const torch::Tensor& idx, int64_t probes, uint64_t seed) {
  check_input(idx);
  check(probes >= 2, "head probes: at least 2 probes, got " + std::to_string(probes));
  const int64_t L = model->config().n_layers, H = model->config().n_heads, n = L * H;
  std::mt19937_64 rng(seed ^ 0xA0761D6478BD642Full);
  auto masks = torch::empty({probes, L, H});
  float* m = masks.data_ptr<float>();
  for (int64_t i = 0; i < probes * n; ++i) m[i] = float(rng() >> 63);  // Bernoulli(½)
  auto delta = knockout_effect(model, idx, masks);                          // [m]
  auto off = (1 - masks.view({probes, n})).to(torch::kFloat64);              // [m, L·H] design
  auto A = off - off.mean(0, true);                                           // centred: the intercept drops out
  auto y = delta - delta.mean();
  // Columns of a centred Bernoulli design have norm √m/2; OMP needs no scaling for ranking.
  const int64_t atoms = std::min<int64_t>(n, probes - 1);
  auto w = block_omp(A, y, 1, atoms);  // [L·H]
  return w.view({L, H});
}

torch::Tensor knockout_heads(Gpt& model, const torch::Tensor& idx) {
  check_input(idx);
  const int64_t L = model->config().n_layers, H = model->config().n_heads;
  auto masks = torch::ones({L * H, L, H});
  for (int64_t i = 0; i < L * H; ++i) masks[i][i / H][i % H] = 0;
  return knockout_effect(model, idx, masks).view({L, H});
}

}  // namespace nestscope
