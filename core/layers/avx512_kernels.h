// AVX-512 kernels of the CPU fast paths (cpu_gemm.cpp dispatches to them): batch-1 GEMV and
// small-batch GEMM over float32 or bfloat16 weights read in place, row-major [n, ≥k] with row
// stride ldw. Each computes y[N, n] = x[N, k]·W[:, :k]ᵀ + beta·y (y's row stride n) for the
// column slice the caller gives. bfloat16 weights are widened exactly to float32 and accumulated
// in float32 with float32 activations. Callers check avx512_available() first; the functions
// exist on every build (compiled with a target attribute, not a global -mavx512f).
#pragma once
#include <cstdint>

namespace nestscope {

// The CPU this process runs on has AVX-512F (and the build targets x86-64 with GCC or Clang).
bool avx512_available();

// dst[i] = float(src[i]) for n bfloat16 values (exact). Portable; AVX-512 where available.
void widen_bf16(const uint16_t* src, float* dst, int64_t n);

// One row of x (decode): four weight rows per pass. Float32: k % 16 == 0.
void avx512_gemv_f32(int64_t n, int64_t k, const float* x, const float* w, int64_t ldw, float beta, float* y);
void avx512_gemv_bf16(int64_t n, int64_t k, const float* x, const uint16_t* w, int64_t ldw, float beta, float* y);

// One row of x against a transposed weight: y[o] = beta·y[o] + Σ_j x[j]·Bt[j, o], Bt row-major
// [k, ≥n] with row stride ldb (an NSN layer's Bᵀ, whose rank-r prefix is its first r rows).
void avx512_gemv_t_f32(int64_t n, int64_t k, const float* x, const float* bt, int64_t ldb, float beta, float* y);

// A few rows of x (a prompt's prefill, N up to kSmallGemmRows): register tiles of 6 (bfloat16: 5)
// rows of x by 4 rows of W, each a dot product along k, with no packing. A BLAS packs W for every call, which
// at 64 rows of x costs as much as the arithmetic (measured: half of the time in sgemm_incopy).
// y has row stride ldy. Float32: k % 16 == 0; bfloat16: k % 32 == 0.
constexpr int64_t kSmallGemmRows = 128;
void avx512_gemm_f32(int64_t N, int64_t n, int64_t k, const float* x, const float* w, int64_t ldw, float beta,
                     float* y, int64_t ldy);
void avx512_gemm_bf16(int64_t N, int64_t n, int64_t k, const float* x, const uint16_t* w, int64_t ldw, float beta,
                      float* y, int64_t ldy);

}  // namespace nestscope
