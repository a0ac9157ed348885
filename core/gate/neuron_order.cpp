#include "core/gate/neuron_order.h"

#include <algorithm>
#include <numeric>
#include <random>

#include "core/error.h"

namespace nestscope {

std::vector<int64_t> coactivation_order(const torch::Tensor& acts, int64_t block, uint64_t seed, int64_t rounds) {
  check(acts.dim() == 2 && acts.size(0) >= 1, "neuron order: activations must be [tokens, neurons]");
  const int64_t N = acts.size(1);
  check(block >= 1 && N % block == 0,
        "neuron order: block size " + std::to_string(block) + " does not divide " + std::to_string(N) + " neurons");
  const int64_t n = N / block;
  // Unit-norm activation profiles, one row per neuron: [N, T].
  auto f = acts.detach().to(torch::kCPU, torch::kFloat32).t().contiguous();
  f = f / f.norm(2, 1, true).clamp_min(1e-12);
  std::vector<int64_t> assign(static_cast<size_t>(N));
  std::iota(assign.begin(), assign.end(), 0);
  std::mt19937_64 rng(seed ^ 0x5851F42D4C957F2Dull);
  std::shuffle(assign.begin(), assign.end(), rng);
  for (auto& a : assign) a /= block;  // a random balanced start
  for (int64_t round = 0; round < rounds; ++round) {
    // Centroids of the current clusters: [n, T].
    auto idx = torch::tensor(assign, torch::kInt64);
    auto c = torch::zeros({n, f.size(1)}).index_add_(0, idx, f);
    c = c / c.norm(2, 1, true).clamp_min(1e-12);
    auto sim = f.mm(c.t()).contiguous();  // [N, n] cosine similarity
    const float* s = sim.data_ptr<float>();
    // Greedy capacity-constrained assignment: the most similar (neuron, cluster) pairs first.
    std::vector<int64_t> pairs(static_cast<size_t>(N * n));
    std::iota(pairs.begin(), pairs.end(), 0);
    std::stable_sort(pairs.begin(), pairs.end(), [&](int64_t a, int64_t b) { return s[a] > s[b]; });
    std::vector<int64_t> next(static_cast<size_t>(N), -1), room(static_cast<size_t>(n), block);
    int64_t placed = 0;
    for (int64_t p : pairs) {
      const int64_t i = p / n, k = p % n;
      if (next[size_t(i)] >= 0 || room[size_t(k)] == 0) continue;
      next[size_t(i)] = k;
      --room[size_t(k)];
      if (++placed == N) break;
    }
    if (next == assign) break;
    assign = std::move(next);
  }
  // Blocks in cluster order; neurons ascending inside a block.
  std::vector<int64_t> order(static_cast<size_t>(N));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return assign[size_t(a)] < assign[size_t(b)]; });
  return order;
}

}  // namespace nestscope
