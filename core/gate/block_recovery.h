// Measurement operators and block-sparse recovery for the compressed-sensing gate.
// A signal z ∈ R^N is split into n = N / B aligned blocks of B entries; a measurement is
// y = Φ·z with a seeded random Φ (m×N, entries ±1/√m or N(0, 1/m), so E[ΦᵀΦ] = I).
// Recovery estimates a k-block-sparse z from y:
//  - block OMP (Eldar, Kuppinger & Bölcskei 2010): add the block whose columns correlate most with
//    the residual, re-fit by least squares on all chosen columns; exact for a k-block-sparse z
//    once m ≳ C·k·B·log(n/k) (needs m ≥ k·B for the fit);
//  - block IHT, normalised (Blumensath & Davies 2010; model-based form of Baraniuk et al. 2010):
//    z ← H_k(z + μ·Φᵀ(y − Φz)), H_k keeping the k blocks of largest energy, μ = ‖g_S‖²/‖Φg_S‖²
//    on the current support S (a fixed μ = 1 diverges when ‖Φ_S‖ > 1), halved while the residual
//    grows. Works for any k; one iteration from z = 0 is one-step thresholding of Φᵀy with μ = 1,
//    the unbiased estimate (E[ΦᵀΦ] = I) the gate uses on its cheapest setting.
#pragma once
#include <torch/types.h>

#include <cstdint>
#include <vector>

#include "core/gate/gate_options.h"

namespace nestscope {

// Φ [m, n] float32 from `seed`, entries ±1/√m (Rademacher) or N(0, 1/m). Throws Error when m or n
// is below 1, or for Pca (that one comes from a calibration prior, see MlpGate). Same seed, same Φ, on every machine (its own generator, not torch's).
torch::Tensor measurement_operator(int64_t m, int64_t n, uint64_t seed, MeasurementKind kind);

// The top principal directions of u = W·x for inputs x with covariance Σ_x: W [N, C], cov_x [C, C]
// (float64) -> [N, r] orthonormal columns, the leading eigenvectors of Σ_u = W Σ_x Wᵀ in descending
// order, r = min(m, the directions carrying variance above 1e-10 of the largest). Σ_u has rank ≤ C,
// so this solves a C×C problem (Σ_x = L Lᵀ, M = W L, eigh(MᵀM)) instead of an N×N one. The PCA
// measurement rows of the gate, and the subspace its MMSE estimate projects onto.
torch::Tensor principal_directions(const torch::Tensor& w, const torch::Tensor& cov_x, int64_t m);

// Per-block energy Σ z_i² over aligned blocks of `block` entries: z [..., N] -> [..., N/B].
torch::Tensor block_energy(const torch::Tensor& z, int64_t block);

// The k blocks of largest energy [n], ascending block order. Ties go to the lower block.
std::vector<int64_t> top_blocks(const torch::Tensor& energy, int64_t k);

// The heads kept per layer, ascending, from importance [L, H] and the kept fraction in (0, 1]:
// per layer the top round(active·H) (at least 1), or, `global`, the top round(active·L·H) of the
// whole model with every layer keeping at least its best head. Ties go to the lower index.
std::vector<std::vector<int64_t>> head_support(const torch::Tensor& importance, double active, bool global);

// Block OMP: estimate [N] with at most k nonzero blocks. phi [m, N], y [m]. Throws Error when the
// shapes disagree, B does not divide N, k is outside [1, N/B] or k·B > m.
torch::Tensor block_omp(const torch::Tensor& phi, const torch::Tensor& y, int64_t block, int64_t k);

// Block IHT with `iters` iterations. Same errors as block_omp, without the k·B ≤ m limit; iters ≥ 1.
torch::Tensor block_iht(const torch::Tensor& phi, const torch::Tensor& y, int64_t block, int64_t k, int64_t iters);

// The same on raw float buffers (the gate's per-token path): phi [m, N] row-major, y [m]. Writes
// the k-block-sparse estimate to z [N] and the last iterate before thresholding to g [N]; returns
// the MACs spent. No checks: callers validate sizes once.
int64_t block_iht_raw(int64_t m, int64_t N, const float* phi, const float* y, int64_t block, int64_t k, int64_t iters,
                      float* z, float* g);

// F1 of a chosen support against a reference one (block indices; order does not matter).
double support_f1(const std::vector<int64_t>& chosen, const std::vector<int64_t>& reference);

// Checks shared by the gate: block divides n, k in [1, n/block], m in [1, n]. Throws Error.
void check_gate_sizes(int64_t n, int64_t block, int64_t k, int64_t m);

}  // namespace nestscope
