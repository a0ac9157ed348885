#include "core/layers/cpu_gemm.h"
#include "core/layers/parallel_linear.h"

#include "core/layers/avx512_kernels.h"
#include "core/layers/low_rank_kernel.h"

#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#endif
#include <cstring>

#ifdef NESTSCOPE_HAVE_CBLAS
#include <cblas.h>
#endif

namespace nestscope {

bool cpu_gemm_available() {
#ifdef NESTSCOPE_HAVE_CBLAS
  return true;
#else
  return false;
#endif
}

bool cpu_gemm_applies(const torch::Tensor& x, const torch::Tensor& weight) {
#ifdef NESTSCOPE_HAVE_CBLAS
  return !at::GradMode::is_enabled() && x.device().is_cpu() && weight.device().is_cpu() &&
         x.scalar_type() == torch::kFloat32 && weight.scalar_type() == torch::kFloat32 && x.is_contiguous() &&
         weight.stride(-1) == 1;
#else
  (void)x, (void)weight;
  return false;
#endif
}

namespace {

#if defined(__GNUC__) && defined(__x86_64__)
#define NESTSCOPE_GEMV_AVX2 1
// y[o] = beta·y[o] + W[o, :]·x for o in [0, n), W row-major with leading dimension ldw, k % 8 == 0.
// Four rows share each load of x; eight lanes per row, reduced once at the end. Batch-1 decode is
// a stream of weights through these dot products: what counts is keeping loads in flight.
__attribute__((target("avx2,fma"))) inline float hsum(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_shuffle_ps(t, t, 1)));
}

__attribute__((target("avx2,fma"))) void gemv_rows_avx2(int64_t n, int64_t k, const float* x, const float* w,
                                                         int64_t ldw, float beta, float* y) {
  int64_t o = 0;
  for (; o + 4 <= n; o += 4) {
    const float *w0 = w + o * ldw, *w1 = w0 + ldw, *w2 = w1 + ldw, *w3 = w2 + ldw;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int64_t j = 0; j < k; j += 8) {
      const __m256 xv = _mm256_loadu_ps(x + j);
      a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + j), xv, a0);
      a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w1 + j), xv, a1);
      a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w2 + j), xv, a2);
      a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w3 + j), xv, a3);
    }
    const float s[4] = {hsum(a0), hsum(a1), hsum(a2), hsum(a3)};
    for (int r = 0; r < 4; ++r) y[o + r] = (beta == 0.f ? 0.f : beta * y[o + r]) + s[r];
  }
  for (; o < n; ++o) {
    __m256 a = _mm256_setzero_ps();
    for (int64_t j = 0; j < k; j += 8) a = _mm256_fmadd_ps(_mm256_loadu_ps(w + o * ldw + j), _mm256_loadu_ps(x + j), a);
    y[o] = (beta == 0.f ? 0.f : beta * y[o]) + hsum(a);
  }
}

bool gemv_avx2_supported() {
  static const bool ok = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return ok;
}
#endif

// Runs fn(o0, on) over slices of the n output columns on LibTorch's threads when the weight is
// large (≥ 1 MB: reading it is the cost). OpenBLAS itself runs at one thread (init_threads: its
// pool fights LibTorch's), so without this a batch-1 decode step of a 124M-parameter model reads
// every weight from one core, at about half the machine's memory bandwidth. Small weights (the
// default model's) stay on one call: there, splitting measured no faster.
// A low-rank pair (NSN) counts as one product: its factors are split when together they are large.
thread_local int64_t split_weights_at = int64_t(1) << 18;

template <class Fn>
void over_columns(int64_t n, int64_t k, const Fn& fn) {
  const int64_t threads = at::get_num_threads();
  if (threads <= 1 || n * k < split_weights_at || at::in_parallel_region()) return fn(int64_t(0), n);
  const int64_t align = 16;  // whole cache lines of y and of a transposed weight's rows
  const int64_t per = std::max<int64_t>(align, (n / threads + align - 1) / align * align);
  at::parallel_for(0, (n + per - 1) / per, 1, [&](int64_t b, int64_t e) {
    for (int64_t s = b; s < e; ++s) {
      const int64_t o0 = s * per;
      fn(o0, std::min(per, n - o0));
    }
  });
}

}  // namespace

void cpu_gemm_nt_bf16_raw(int64_t N, int64_t n, int64_t k, const float* x, const uint16_t* w, int64_t ldw,
                          float beta, float* y) {
  over_columns(n, k, [&](int64_t o0, int64_t on) {
    if (avx512_available()) {
      if (N == 1) return avx512_gemv_bf16(on, k, x, w + o0 * ldw, ldw, beta, y + o0);
      if (N <= kSmallGemmRows && k % 32 == 0) return avx512_gemm_bf16(N, on, k, x, w + o0 * ldw, ldw, beta, y + o0, n);
    }
    // Tiles of about 1 MB of rows widened to float32, then one float32 product per tile: the
    // widening is paid once per weight for all N rows of x (prefill), the product runs at BLAS speed.
    thread_local std::vector<float> tile;
    const int64_t rows = std::clamp<int64_t>((int64_t(1) << 18) / std::max<int64_t>(k, 1), 16, on);
    tile.resize(size_t(rows * k));
    for (int64_t t0 = 0; t0 < on; t0 += rows) {
      const int64_t tn = std::min(rows, on - t0);
      for (int64_t r = 0; r < tn; ++r) widen_bf16(w + (o0 + t0 + r) * ldw, tile.data() + r * k, k);
#ifdef NESTSCOPE_HAVE_CBLAS
      if (N == 1)
        cblas_sgemv(CblasRowMajor, CblasNoTrans, int(tn), int(k), 1.f, tile.data(), int(k), x, 1, beta, y + o0 + t0, 1);
      else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(N), int(tn), int(k), 1.f, x, int(k), tile.data(),
                    int(k), beta, y + o0 + t0, int(n));
#else
      for (int64_t i = 0; i < N; ++i)
        for (int64_t o = 0; o < tn; ++o) {
          float s = 0;
          for (int64_t j = 0; j < k; ++j) s += x[i * k + j] * tile[size_t(o * k + j)];
          float& out = y[i * n + o0 + t0 + o];
          out = (beta == 0.f ? 0.f : beta * out) + s;
        }
#endif
    }
  });
}

void cpu_gemm_nt_raw(int64_t N, int64_t n, int64_t k, const float* x, const float* w, int64_t ldw, float beta,
                     float* y) {
#ifdef NESTSCOPE_HAVE_CBLAS
  over_columns(n, k, [&](int64_t o0, int64_t on) {
    if (avx512_available() && k % 16 == 0) {
      if (N == 1) return avx512_gemv_f32(on, k, x, w + o0 * ldw, ldw, beta, y + o0);
      if (N <= kSmallGemmRows) return avx512_gemm_f32(N, on, k, x, w + o0 * ldw, ldw, beta, y + o0, n);
    }
#ifdef NESTSCOPE_GEMV_AVX2
    if (N == 1 && k % 8 == 0 && gemv_avx2_supported()) return gemv_rows_avx2(on, k, x, w + o0 * ldw, ldw, beta, y + o0);
#endif
    if (N == 1)
      cblas_sgemv(CblasRowMajor, CblasNoTrans, int(on), int(k), 1.f, w + o0 * ldw, int(ldw), x, 1, beta, y + o0, 1);
    else
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(N), int(on), int(k), 1.f, x, int(k), w + o0 * ldw,
                  int(ldw), beta, y + o0, int(n));
  });
#else
  // Plain loops without CBLAS: correct, not fast (the ATen paths serve the model then).
  for (int64_t i = 0; i < N; ++i)
    for (int64_t o = 0; o < n; ++o) {
      float s = 0;
      for (int64_t j = 0; j < k; ++j) s += x[i * k + j] * w[o * ldw + j];
      y[i * n + o] = (beta == 0.f ? 0.f : beta * y[i * n + o]) + s;
    }
#endif
}

namespace {

// [N, n] output rows, pre-filled with the bias when there is one (then beta = 1).
std::pair<torch::Tensor, float> output_rows(const torch::Tensor& x, int64_t N, int64_t n, const torch::Tensor& bias) {
  // Zeros, not empty, without a bias: some BLAS builds read y even when beta is 0 (0·NaN = NaN).
  if (!bias.defined()) return {torch::zeros({N, n}, x.options()), 0.f};
  auto y = torch::empty({N, n}, x.options());
  if (!bias.is_contiguous() || bias.scalar_type() != torch::kFloat32) {
    y.copy_(bias.expand({N, n}));
    return {y, 1.f};
  }
  const float* b = bias.data_ptr<float>();
  float* out = y.data_ptr<float>();
  for (int64_t i = 0; i < N; ++i) std::memcpy(out + i * n, b, size_t(n) * sizeof(float));
  return {y, 1.f};
}

std::vector<int64_t> with_last(const torch::Tensor& x, int64_t n) {
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = n;
  return shape;
}

}  // namespace

torch::Tensor cpu_gemm_nt(const torch::Tensor& x, const float* w, int64_t n, int64_t ldw, const torch::Tensor& bias) {
  const int64_t k = x.size(-1);
  const int64_t N = x.numel() / std::max<int64_t>(k, 1);
  auto [y, beta] = output_rows(x, N, n, bias);
  cpu_gemm_nt_raw(N, n, k, x.data_ptr<float>(), w, ldw, beta, y.data_ptr<float>());
  return y.view(with_last(x, n));
}

void cpu_gemm_nn_raw(int64_t N, int64_t n, int64_t k, const float* x, const float* bt, int64_t ldb, float beta,
                     float* y) {
#ifdef NESTSCOPE_HAVE_CBLAS
  over_columns(n, k, [&](int64_t o0, int64_t on) {
    if (N == 1 && avx512_available()) return avx512_gemv_t_f32(on, k, x, bt + o0, ldb, beta, y + o0);
    if (N == 1)
      cblas_sgemv(CblasRowMajor, CblasTrans, int(k), int(on), 1.f, bt + o0, int(ldb), x, 1, beta, y + o0, 1);
    else
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(N), int(on), int(k), 1.f, x, int(k), bt + o0,
                  int(ldb), beta, y + o0, int(n));
  });
#else
  for (int64_t i = 0; i < N; ++i) {
    float* yi = y + i * n;
    for (int64_t o = 0; o < n; ++o) yi[o] = beta == 0.f ? 0.f : beta * yi[o];
    for (int64_t j = 0; j < k; ++j)
      for (int64_t o = 0; o < n; ++o) yi[o] += x[i * k + j] * bt[j * ldb + o];
  }
#endif
}

namespace {

// Rows of y set to the bias (beta = 1 afterwards) or to zero (beta = 0; zeros, see output_rows).
float fill_bias(int64_t N, int64_t n, const float* bias, float* y) {
  if (!bias) {
    std::fill_n(y, N * n, 0.f);
    return 0.f;
  }
  for (int64_t i = 0; i < N; ++i) std::memcpy(y + i * n, bias, size_t(n) * sizeof(float));
  return 1.f;
}

}  // namespace

void cpu_low_rank_raw(int64_t N, int64_t k, int64_t n, int64_t r, const float* x, const float* A, const float* bt,
                      int64_t ldb, const float* bias, float* y) {
  if (low_rank_kernel_applies(N, k, n, r)) return low_rank_kernel(N, k, n, r, x, A, bt, ldb, bias, y);
  thread_local std::vector<float> h;
  if (int64_t(h.size()) < N * r) h.resize(size_t(N * r));
  std::fill_n(h.begin(), N * r, 0.f);
  const int64_t saved = split_weights_at;  // both factors go over the threads when the pair is large
  if (r * (k + n) >= (int64_t(1) << 17)) split_weights_at = std::min<int64_t>(saved, int64_t(1) << 14);
  cpu_gemm_nt_raw(N, r, k, x, A, k, 0.f, h.data());  // [N, r]
  const float beta = fill_bias(N, n, bias, y);
  cpu_gemm_nn_raw(N, n, r, h.data(), bt, ldb, beta, y);  // [N, n]
  split_weights_at = saved;
}

torch::Tensor cpu_low_rank(const torch::Tensor& x, const torch::Tensor& A, const float* bt, int64_t ldb, int64_t n,
                           int64_t r, const torch::Tensor& bias) {
  const int64_t k = x.size(-1);
  const int64_t N = x.numel() / std::max<int64_t>(k, 1);
  auto y = torch::empty({N, n}, x.options());
  const bool raw_bias = bias.defined() && bias.is_contiguous() && bias.scalar_type() == torch::kFloat32;
  cpu_low_rank_raw(N, k, n, r, x.data_ptr<float>(), A.data_ptr<float>(), bt, ldb,
                   raw_bias ? bias.data_ptr<float>() : nullptr, y.data_ptr<float>());
  if (bias.defined() && !raw_bias) y.add_(bias.to(y.options()));
  return y.view(with_last(x, n));
}

void cpu_linear_raw(int64_t N, int64_t k, int64_t n, const float* x, const float* w, const float* bias, float* y) {
  const float beta = fill_bias(N, n, bias, y);
  cpu_gemm_nt_raw(N, n, k, x, w, k, beta, y);
}

void cpu_linear_bf16_raw(int64_t N, int64_t k, int64_t n, const float* x, const uint16_t* w, const float* bias,
                         float* y) {
  const float beta = fill_bias(N, n, bias, y);
  cpu_gemm_nt_bf16_raw(N, n, k, x, w, k, beta, y);
}

bool is_bf16_weight(const torch::Tensor& w) { return w.defined() && w.scalar_type() == torch::kBFloat16; }

torch::Tensor linear_any(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias) {
  if (!is_bf16_weight(weight)) {
    if (cpu_gemm_applies(x, weight) && weight.is_contiguous())
      return cpu_gemm_nt(x, weight.data_ptr<float>(), weight.size(0), weight.size(1), bias);
    return training_linear(x, weight, bias);
  }
  const bool raw = !at::GradMode::is_enabled() && x.device().is_cpu() && weight.device().is_cpu() &&
                   x.scalar_type() == torch::kFloat32 && weight.is_contiguous() &&
                   (!bias.defined() || bias.scalar_type() == torch::kFloat32);
  if (!raw) return torch::linear(x, weight.to(x.scalar_type()), bias);
  const auto xc = x.contiguous();
  const int64_t k = x.size(-1), n = weight.size(0);
  const int64_t N = x.numel() / std::max<int64_t>(k, 1);
  auto [y, beta] = output_rows(xc, N, n, bias);
  cpu_gemm_nt_bf16_raw(N, n, k, xc.data_ptr<float>(), reinterpret_cast<const uint16_t*>(weight.data_ptr<at::BFloat16>()),
                       k, beta, y.data_ptr<float>());
  return y.view(with_last(x, n));
}

bool cpu_linear_raw_any(const torch::Tensor& weight, const torch::Tensor& bias, int64_t N, const float* x, float* y) {
  if (!weight.is_cpu() || !weight.is_contiguous() || (bias.defined() && !bias.is_contiguous())) return false;
  const float* b = bias.defined() ? bias.data_ptr<float>() : nullptr;
  const int64_t n = weight.size(0), k = weight.size(1);
  if (is_bf16_weight(weight))
    cpu_linear_bf16_raw(N, k, n, x, reinterpret_cast<const uint16_t*>(weight.data_ptr<at::BFloat16>()), b, y);
  else if (cpu_gemm_applies(weight, weight))
    cpu_linear_raw(N, k, n, x, weight.data_ptr<float>(), b, y);
  else
    return false;
  return true;
}

}  // namespace nestscope
