// Neuron order for block gating: a permutation of an MLP's N neurons that puts neurons which fire
// together into the same aligned block, so the per-token activation, sparse at neuron level, is
// also sparse at block level (where hardware skips work). Function-preserving: the gate permutes
// its own copies of W_up's rows, b_up and W_down's columns; the model is untouched.
// Method: balanced spherical k-means over the neurons' activation profiles on a calibration text
// (n = N/B clusters of exactly B neurons; greedy capacity-constrained assignment by cosine
// similarity, 8 rounds). Co-activation clustering of this kind is how Deja Vu / PowerInfer group
// "hot" neurons; here it is the prior that makes block sparsity exist at all.
#pragma once
#include <torch/types.h>

#include <cstdint>
#include <vector>

namespace nestscope {

// acts [T, N] (activations of T calibration tokens) -> order [N]: block b holds neurons
// order[b·B .. b·B+B). Deterministic for a seed. Throws Error when B does not divide N.
std::vector<int64_t> coactivation_order(const torch::Tensor& acts, int64_t block, uint64_t seed = 0, int64_t rounds = 8);

}  // namespace nestscope
