// Inference fast path for small CPU matmuls: one cblas_sgemm on raw pointers instead of a
// dispatched ATen op. At PicoGPT sizes a 128×128 batch-1 product is ~1 µs of arithmetic and
// several µs of per-op overhead; NSN's two skinny products pay that overhead twice, so both the
// dense and the NSN layers use this path when it applies (no autograd, CPU, float32, contiguous).
#pragma once
#include <torch/types.h>

namespace nestscope {

// True when the build has CBLAS and x, the weight and the bias qualify: grad mode off, CPU,
// float32, x contiguous.
bool cpu_gemm_applies(const torch::Tensor& x, const torch::Tensor& weight);

// y[N, n] = x[N, k] · W[:, :k]ᵀ (+ bias) where W is row-major [n, ≥k] with row stride ldw: the
// first k columns of every row (an NSN B_r is such a column prefix; A_r is a row prefix, k = in).
// x is [..., k]; the result has x's leading shape.
torch::Tensor cpu_gemm_nt(const torch::Tensor& x, const float* w, int64_t n, int64_t ldw, const torch::Tensor& bias);

// The same on raw row-major buffers: y[N, n] = x[N, k] · W[:, :k]ᵀ + beta·y. One row uses gemv
// (OpenBLAS's gemm is several times slower than its gemv for a single row).
void cpu_gemm_nt_raw(int64_t N, int64_t n, int64_t k, const float* x, const float* w, int64_t ldw, float beta,
                     float* y);

// NSN at rank r on the fast path: y = B[:, :r]·(A[:r]·x) + bias, the r-wide middle kept in a
// per-thread scratch buffer instead of a tensor.
torch::Tensor cpu_low_rank(const torch::Tensor& x, const torch::Tensor& A, const torch::Tensor& B, int64_t r,
                           const torch::Tensor& bias);

}  // namespace nestscope
