// Which attention heads matter for this text: random knockout probes + sparse regression
// (the head half of the sensing gate; Kiruluta 2026, §3). Each probe j runs the text with a random
// Bernoulli(½) mask M_j over all L·H heads (all probes in one batch) and measures
// Δ_j = mean KL(p_full ‖ p_masked) over the text's positions. A linear knockout model
// Δ_j ≈ c + Σ_h (1 − M_jh)·w_h is fitted by OMP on the centred design (run to min(L·H, m−1)
// atoms: least squares when m > L·H, sparse below); w_h is head h's importance.
// The oracle is exhaustive single-head knockout: L·H forwards (also one batch).
#pragma once
#include <torch/types.h>

#include <cstdint>

#include "core/model/transformer.h"

namespace nestscope {

// idx [1, T] -> importance [L, H] (float64) from `probes` random masks (≥ 2). Runs with every
// head (no head budget); throws Error otherwise or when probes < 2.
torch::Tensor probe_heads(Gpt& model, const torch::Tensor& idx, int64_t probes, uint64_t seed);

// idx [1, T] -> [L, H]: Δ of knocking out each head alone (the oracle ranking).
torch::Tensor knockout_heads(Gpt& model, const torch::Tensor& idx);

}  // namespace nestscope
