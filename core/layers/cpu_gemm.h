// Inference fast path for small CPU matmuls: one cblas_sgemm on raw pointers instead of a
// dispatched ATen op. At PicoGPT sizes a 128×128 batch-1 product is ~1 µs of arithmetic and
// several µs of per-op overhead; NSN's two skinny products pay that overhead twice, so both the
// dense and the NSN layers use this path when it applies (no autograd, CPU, float32, contiguous).
#pragma once
#include <torch/types.h>

#include "core/layers/avx512_kernels.h"  // widen_bf16

namespace nestscope {

// True when the build has CBLAS (the raw paths below exist without it too, as plain loops).
bool cpu_gemm_available();

// True when the build has CBLAS and x, the weight and the bias qualify: grad mode off, CPU,
// float32, x contiguous.
bool cpu_gemm_applies(const torch::Tensor& x, const torch::Tensor& weight);

// y[N, n] = x[N, k] · W[:, :k]ᵀ (+ bias) where W is row-major [n, ≥k] with row stride ldw: the
// first k columns of every row (an NSN B_r is such a column prefix; A_r is a row prefix, k = in).
// x is [..., k]; the result has x's leading shape.
torch::Tensor cpu_gemm_nt(const torch::Tensor& x, const float* w, int64_t n, int64_t ldw, const torch::Tensor& bias);

// The same on raw row-major buffers: y[N, n] = x[N, k] · W[:, :k]ᵀ + beta·y. One row uses gemv
// (OpenBLAS's gemm is several times slower than its gemv for a single row). The raw functions
// work without CBLAS too (plain loops), so callers need no second path.
void cpu_gemm_nt_raw(int64_t N, int64_t n, int64_t k, const float* x, const float* w, int64_t ldw, float beta,
                     float* y);

// y[N, n] = x[N, k] · Bt[:k, :] + beta·y where Bt is row-major [≥k, n] with row stride ldb: the
// first k rows (Bᵀ of an NSN layer, whose B_r columns become contiguous rows). One row is an
// axpy-shaped gemv, which stays efficient for k as small as 8; the NoTrans form of B_r would be
// n dot products of length k.
void cpu_gemm_nn_raw(int64_t N, int64_t n, int64_t k, const float* x, const float* bt, int64_t ldb, float beta,
                     float* y);

// NSN at rank r on raw buffers: y[N, n] = (x[N, k]·A[:r]ᵀ)·Bt[:r] + bias, with the r-wide middle
// in a per-thread scratch buffer. A is [R, k] row-major, Bt = Bᵀ is [R, n] row-major, bias may be
// null. Writes y fully.
void cpu_low_rank_raw(int64_t N, int64_t k, int64_t n, int64_t r, const float* x, const float* A, const float* bt,
                      int64_t ldb, const float* bias, float* y);

// The same returning a tensor with x's leading shape.
torch::Tensor cpu_low_rank(const torch::Tensor& x, const torch::Tensor& A, const float* bt, int64_t ldb, int64_t n,
                           int64_t r, const torch::Tensor& bias);

// y[N, n] = x·Wᵀ + bias on raw buffers, W row-major [n, k]; bias may be null. Writes y fully.
void cpu_linear_raw(int64_t N, int64_t k, int64_t n, const float* x, const float* w, const float* bias, float* y);

// bfloat16 weights (--weights bf16): W is row-major [n, ≥k] bfloat16 with row stride ldw, read in
// place; every weight is widened exactly to float32 and accumulated in float32 with float32
// activations, so the result equals the float32 path on the same (bf16-representable) weights up
// to summation order. AVX-512 for one row; tiles widened into a float32 GEMM for several rows
// (prefill); plain loops elsewhere. y[N, n] = x[N, k]·W[:, :k]ᵀ + beta·y.
void cpu_gemm_nt_bf16_raw(int64_t N, int64_t n, int64_t k, const float* x, const uint16_t* w, int64_t ldw,
                          float beta, float* y);
// y[N, n] = x·Wᵀ + bias for bfloat16 W [n, k]; bias (float32) may be null. Writes y fully.
void cpu_linear_bf16_raw(int64_t N, int64_t k, int64_t n, const float* x, const uint16_t* w, const float* bias,
                         float* y);

bool is_bf16_weight(const torch::Tensor& w);
// y[N, n] = x·Wᵀ + bias on raw buffers for a float32 or bfloat16 W [n, k] held in a tensor (CPU,
// contiguous; bias float32 or undefined). False, writing nothing, where neither path applies.
bool cpu_linear_raw_any(const torch::Tensor& weight, const torch::Tensor& bias, int64_t N, const float* x, float* y);
// x·Wᵀ + bias for a float32 or bfloat16 W: the kernels above when x is float32 on the CPU without
// autograd (cpu_gemm_nt for float32 W), else torch::linear (on a float32 copy of a bfloat16 W).
torch::Tensor linear_any(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias);

}  // namespace nestscope
