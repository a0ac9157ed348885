// Fused NSN product at small rank on raw buffers, y = (x·A_rᵀ)·B_rᵀ + bias, for the ranks where a
// BLAS call is a poor fit: the r-wide middle is 8–16 columns, OpenBLAS's sgemm runs such skinny
// shapes well below peak, and at batch 1 two library calls' fixed costs are a visible share of a
// ~0.1 µs product. The kernel keeps the middle in registers/L1 for 4 rows at a time: x·A_rᵀ as
// register-blocked dot products (4 rows × 4 ranks, reduced with horizontal adds), then
// y = bias + h·Bt_r as broadcast-FMA over 32-wide column strips. 256-bit AVX2 + FMA operations,
// chosen at run time; other CPUs and compilers keep the BLAS path. Torch-free.
#pragma once
#include <cstdint>

namespace nestscope {

// Ranks the fused kernel takes: any up to kLowRankKernelMaxRank; with AVX-512VL, prefills of at
// least kLowRankPrefillRows rows up to kLowRankKernelMaxPrefillRank while in and out are both
// ≤ kLowRankPrefillMaxWidth (where it measured faster than BLAS; nestscope_bench_nsn). The middle
// buffer is on the stack.
inline constexpr int64_t kLowRankKernelMaxRank = 32;
inline constexpr int64_t kLowRankKernelMaxPrefillRank = 128;
inline constexpr int64_t kLowRankPrefillRows = 16;
inline constexpr int64_t kLowRankPrefillMaxWidth = 1024;

// What happens to the middle h before the second product (an MLP block: bias, then act).
enum class LowRankAct { None, Relu, Gelu /* exact, erf */ };

// Instruction sets the kernel is built for. none = use the caller's BLAS path.
enum class LowRankIsa { none, avx2, avx512vl };

// Whether this CPU runs that variant (none: always).
bool low_rank_isa_supported(LowRankIsa isa);

// The variant used: the widest register file this CPU has (AVX-512VL: 32 registers, 6-row blocks;
// AVX2 + FMA: 16 registers, 2-row blocks), or NESTSCOPE_LOW_RANK_ISA=none|avx2|avx512vl where
// supported (to compare them, or to fall back to BLAS).
LowRankIsa low_rank_kernel_isa();
const char* low_rank_isa_name(LowRankIsa isa);

// Rows up to which the AVX2 variant is used; beyond, its 2-row blocks lose to BLAS's sgemm.
inline constexpr int64_t kLowRankAvx2MaxRows = 4;

// True when the kernel runs here and the shape qualifies (see the limits above; k and n multiples
// of 8; rows ≤ kLowRankAvx2MaxRows for the AVX2 variant).
bool low_rank_kernel_applies(int64_t rows, int64_t k, int64_t n, int64_t r);

// y[N, n] = (x[N, k]·A[:r]ᵀ)·Bt[:r] + bias. A is [≥r, k] row-major, Bt is [≥r, n] row-major with
// row stride ldb, bias (n) may be null. Writes y fully. Call only where low_rank_kernel_applies
// (and isa is supported); does nothing for LowRankIsa::none.
void low_rank_kernel(int64_t N, int64_t k, int64_t n, int64_t r, const float* x, const float* A, const float* bt,
                     int64_t ldb, const float* bias, float* y, LowRankIsa isa = low_rank_kernel_isa());

// The general form: h = x·A[:r]ᵀ (+ mid_bias[:r]), h = act(h), then y = h·Bt[:r] + bias, or
// y += h·Bt[:r] with `accumulate` (bias ignored). With A = W_up rows and Bt = W_downᵀ rows of a
// run of neuron blocks this is a gated MLP's block product in one pass (core/gate/mlp_gate).
void low_rank_kernel_ex(int64_t N, int64_t k, int64_t n, int64_t r, const float* x, const float* A,
                        const float* mid_bias, LowRankAct act, const float* bt, int64_t ldb, const float* bias,
                        bool accumulate, float* y, LowRankIsa isa = low_rank_kernel_isa());

}  // namespace nestscope
