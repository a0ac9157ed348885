#include "core/layers/avx512_kernels.h"

#include <algorithm>
#include <cstring>
#include <vector>
#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define NESTSCOPE_X86 1
#endif

namespace nestscope {

namespace {

// bfloat16 is the upper half of a float32: widening is a 16-bit shift, exact.
inline float bf16_to_float(uint16_t h) {
  const uint32_t bits = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

#ifdef NESTSCOPE_X86
#define AVX512 __attribute__((target("avx512f")))

AVX512 inline __m512 widen16(const uint16_t* p) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)p)), 16));
}

// The bfloat16 4-row GEMV: four rows share each load of x. A 64-byte load holds
// 32 weights; as sixteen 32-bit lanes, lane i carries weight 2i in its low half and 2i+1 in its
// high half, so a 16-bit left shift gives the even weights as float32 and masking off the low half
// the odd ones — exact, with no shuffle — multiplied by x's even and odd elements (x de-interleaved
// once per call into xs). Accumulation is float32 with float32 activations (vdpbf16ps would round
// the activations to 16 bits). Fewer instructions per byte than widening through vpmovzxwd:
// 10–25% more bandwidth on 2 threads here.
AVX512 void gemv_bf16(int64_t n, int64_t k, const float* x, const uint16_t* w,
                                                         int64_t ldw, float beta, float* y) {
  const int64_t k32 = k / 32 * 32;
  thread_local std::vector<float> xs;
  xs.resize(size_t(k32));
  for (int64_t j = 0; j < k32; j += 32)
    for (int64_t i = 0; i < 16; ++i) xs[size_t(j + i)] = x[j + 2 * i], xs[size_t(j + 16 + i)] = x[j + 2 * i + 1];
  const float* xp = xs.data();
  const __m512i high = _mm512_set1_epi32(int(0xffff0000u));
#define NESTSCOPE_EVEN(v) _mm512_castsi512_ps(_mm512_slli_epi32(v, 16))
#define NESTSCOPE_ODD(v) _mm512_castsi512_ps(_mm512_and_si512(v, high))
  auto tail = [&](const uint16_t* row) {
    float s = 0;
    for (int64_t j = k32; j < k; ++j) s += bf16_to_float(row[j]) * x[j];
    return s;
  };
  // Software prefetch two row groups ahead: this loop does more work per byte than the float32 one,
  // so fewer loads are in flight and the hardware alone reached 19 GB/s from memory where the
  // float32 loop reached 30; with it, 26 (a prefetch past the end of the matrix never faults).
  const int64_t ahead = 8 * ldw;
  int64_t o = 0;
  for (; o + 4 <= n; o += 4) {
    const uint16_t *w0 = w + o * ldw, *w1 = w0 + ldw, *w2 = w1 + ldw, *w3 = w2 + ldw;
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
    for (int64_t j = 0; j < k32; j += 32) {
      for (const uint16_t* r : {w0, w1, w2, w3}) _mm_prefetch(reinterpret_cast<const char*>(r + j + ahead), _MM_HINT_T0);
      const __m512 xe = _mm512_loadu_ps(xp + j), xo = _mm512_loadu_ps(xp + j + 16);
      const __m512i v0 = _mm512_loadu_si512(w0 + j), v1 = _mm512_loadu_si512(w1 + j);
      const __m512i v2 = _mm512_loadu_si512(w2 + j), v3 = _mm512_loadu_si512(w3 + j);
      a0 = _mm512_fmadd_ps(NESTSCOPE_EVEN(v0), xe, a0), b0 = _mm512_fmadd_ps(NESTSCOPE_ODD(v0), xo, b0);
      a1 = _mm512_fmadd_ps(NESTSCOPE_EVEN(v1), xe, a1), b1 = _mm512_fmadd_ps(NESTSCOPE_ODD(v1), xo, b1);
      a2 = _mm512_fmadd_ps(NESTSCOPE_EVEN(v2), xe, a2), b2 = _mm512_fmadd_ps(NESTSCOPE_ODD(v2), xo, b2);
      a3 = _mm512_fmadd_ps(NESTSCOPE_EVEN(v3), xe, a3), b3 = _mm512_fmadd_ps(NESTSCOPE_ODD(v3), xo, b3);
    }
    const float s[4] = {_mm512_reduce_add_ps(_mm512_add_ps(a0, b0)) + tail(w0),
                        _mm512_reduce_add_ps(_mm512_add_ps(a1, b1)) + tail(w1),
                        _mm512_reduce_add_ps(_mm512_add_ps(a2, b2)) + tail(w2),
                        _mm512_reduce_add_ps(_mm512_add_ps(a3, b3)) + tail(w3)};
    for (int r = 0; r < 4; ++r) y[o + r] = (beta == 0.f ? 0.f : beta * y[o + r]) + s[r];
  }
  for (; o < n; ++o) {
    const uint16_t* row = w + o * ldw;
    __m512 a = _mm512_setzero_ps(), b = a;
    for (int64_t j = 0; j < k32; j += 32) {
      const __m512i v = _mm512_loadu_si512(row + j);
      a = _mm512_fmadd_ps(NESTSCOPE_EVEN(v), _mm512_loadu_ps(xp + j), a);
      b = _mm512_fmadd_ps(NESTSCOPE_ODD(v), _mm512_loadu_ps(xp + j + 16), b);
    }
    y[o] = (beta == 0.f ? 0.f : beta * y[o]) + _mm512_reduce_add_ps(_mm512_add_ps(a, b)) + tail(row);
  }
}
#undef NESTSCOPE_EVEN
#undef NESTSCOPE_ODD

// The float32 4-row GEMV (cpu_gemm.cpp's AVX2 loop at sixteen lanes): 10–20% more bandwidth than
// eight lanes on this machine's AVX-512 cores. k % 16 == 0.
AVX512 void gemv_f32(int64_t n, int64_t k, const float* x, const float* w,
                                                         int64_t ldw, float beta, float* y) {
  int64_t o = 0;
  for (; o + 4 <= n; o += 4) {
    const float *w0 = w + o * ldw, *w1 = w0 + ldw, *w2 = w1 + ldw, *w3 = w2 + ldw;
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int64_t j = 0; j < k; j += 16) {
      const __m512 xv = _mm512_loadu_ps(x + j);
      a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w0 + j), xv, a0);
      a1 = _mm512_fmadd_ps(_mm512_loadu_ps(w1 + j), xv, a1);
      a2 = _mm512_fmadd_ps(_mm512_loadu_ps(w2 + j), xv, a2);
      a3 = _mm512_fmadd_ps(_mm512_loadu_ps(w3 + j), xv, a3);
    }
    const float s[4] = {_mm512_reduce_add_ps(a0), _mm512_reduce_add_ps(a1), _mm512_reduce_add_ps(a2),
                        _mm512_reduce_add_ps(a3)};
    for (int r = 0; r < 4; ++r) y[o + r] = (beta == 0.f ? 0.f : beta * y[o + r]) + s[r];
  }
  for (; o < n; ++o) {
    __m512 a = _mm512_setzero_ps();
    for (int64_t j = 0; j < k; j += 16) a = _mm512_fmadd_ps(_mm512_loadu_ps(w + o * ldw + j), _mm512_loadu_ps(x + j), a);
    y[o] = (beta == 0.f ? 0.f : beta * y[o]) + _mm512_reduce_add_ps(a);
  }
}

// y[o] = beta·y[o] + Σ_j x[j]·Bt[j, o] for o in [0, n): Bt row-major [k, ≥n] with row stride ldb
// (an NSN layer's Bᵀ). Row after row of Bt is streamed once against y, which stays in registers
// 64 columns at a time: the axpy form, so even k = 8 runs at full width.
AVX512 void gemv_t_f32(int64_t n, int64_t k, const float* x, const float* bt, int64_t ldb, float beta, float* y) {
  int64_t o = 0;
  for (; o + 64 <= n; o += 64) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int64_t j = 0; j < k; ++j) {
      const float* row = bt + j * ldb + o;
      const __m512 xv = _mm512_set1_ps(x[j]);
      a0 = _mm512_fmadd_ps(xv, _mm512_loadu_ps(row), a0);
      a1 = _mm512_fmadd_ps(xv, _mm512_loadu_ps(row + 16), a1);
      a2 = _mm512_fmadd_ps(xv, _mm512_loadu_ps(row + 32), a2);
      a3 = _mm512_fmadd_ps(xv, _mm512_loadu_ps(row + 48), a3);
    }
    const __m512 acc[4] = {a0, a1, a2, a3};
    for (int q = 0; q < 4; ++q) {
      float* out = y + o + 16 * q;
      const __m512 prev = beta == 0.f ? _mm512_setzero_ps() : _mm512_mul_ps(_mm512_set1_ps(beta), _mm512_loadu_ps(out));
      _mm512_storeu_ps(out, _mm512_add_ps(prev, acc[q]));
    }
  }
  for (; o < n; ++o) {
    float s = 0;
    for (int64_t j = 0; j < k; ++j) s += x[j] * bt[j * ldb + o];
    y[o] = (beta == 0.f ? 0.f : beta * y[o]) + s;
  }
}

// A register tile's accumulators: zeroed, and reduced into y[i, r] = beta·y + Σ lanes.
template <int RM, int RN>
AVX512 inline void zero_tile(__m512 (&acc)[RM][RN]) {
#pragma GCC unroll 8
  for (int i = 0; i < RM; ++i)
#pragma GCC unroll 8
    for (int r = 0; r < RN; ++r) acc[i][r] = _mm512_setzero_ps();
}

template <int RM, int RN>
AVX512 inline void store_tile(__m512 (&acc)[RM][RN], float beta, float* y, int64_t ldy) {
#pragma GCC unroll 8
  for (int i = 0; i < RM; ++i)
#pragma GCC unroll 8
    for (int r = 0; r < RN; ++r) {
      float& out = y[i * ldy + r];
      out = (beta == 0.f ? 0.f : beta * out) + _mm512_reduce_add_ps(acc[i][r]);
    }
}

// One register tile: y[i, r] for RM rows of x and RN rows of W, dot products along k (k % 16 == 0),
// sixteen lanes per accumulator, reduced once at the end.
template <int RM, int RN>
AVX512 void tile_f32(int64_t k, const float* x, int64_t ldx, const float* w, int64_t ldw, float beta, float* y,
                     int64_t ldy) {
  __m512 acc[RM][RN];
  zero_tile(acc);
  for (int64_t j = 0; j < k; j += 16) {
    __m512 wv[RN];
#pragma GCC unroll 8
    for (int r = 0; r < RN; ++r) wv[r] = _mm512_loadu_ps(w + r * ldw + j);
#pragma GCC unroll 8
    for (int i = 0; i < RM; ++i) {
      const __m512 xv = _mm512_loadu_ps(x + i * ldx + j);
#pragma GCC unroll 8
      for (int r = 0; r < RN; ++r) acc[i][r] = _mm512_fmadd_ps(xv, wv[r], acc[i][r]);
    }
  }
  store_tile(acc, beta, y, ldy);
}

// The same over bfloat16 W (k % 32 == 0): 32 weights per 64-byte load, split into even and odd
// lanes as in gemv_bf16, against x de-interleaved the same way (xs, row stride ldx).
template <int RM, int RN>
AVX512 void tile_bf16(int64_t k, const float* xs, int64_t ldx, const uint16_t* w, int64_t ldw, float beta, float* y,
                      int64_t ldy) {
  const __m512i high = _mm512_set1_epi32(int(0xffff0000u));
  __m512 acc[RM][RN];
  zero_tile(acc);
  for (int64_t j = 0; j < k; j += 32) {
    __m512 we[RN], wo[RN];
#pragma GCC unroll 8
    for (int r = 0; r < RN; ++r) {
      const __m512i v = _mm512_loadu_si512(w + r * ldw + j);
      we[r] = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
      wo[r] = _mm512_castsi512_ps(_mm512_and_si512(v, high));
    }
#pragma GCC unroll 8
    for (int i = 0; i < RM; ++i) {
      const __m512 xe = _mm512_loadu_ps(xs + i * ldx + j), xo = _mm512_loadu_ps(xs + i * ldx + j + 16);
#pragma GCC unroll 8
      for (int r = 0; r < RN; ++r) acc[i][r] = _mm512_fmadd_ps(xo, wo[r], _mm512_fmadd_ps(xe, we[r], acc[i][r]));
    }
  }
  store_tile(acc, beta, y, ldy);
}

// Tiles of rm < RM rows of x (the edge of a block of rows).
template <template <int, int> class Tile, int RN, int RM, class W>
void edge_tile(int64_t rm, int64_t k, const float* x, int64_t ldx, const W* w, int64_t ldw, float beta, float* y,
               int64_t ldy) {
  if constexpr (RM > 1) {
    if (rm == RM - 1) return Tile<RM - 1, RN>::run(k, x, ldx, w, ldw, beta, y, ldy);
    return edge_tile<Tile, RN, RM - 1>(rm, k, x, ldx, w, ldw, beta, y, ldy);
  }
}

// Every tile of y[N, n]: W's rows in blocks of 4 (a block stays in L1 while all of x, in L2,
// passes it), x's rows in blocks of RM; the edges with narrower tiles. RM = 6 for float32 (24
// accumulators, 4 weight and 1 x register of the 32): 10–30% faster than 4 x 4 on GPT-2's shapes
// here, the accumulators' final reductions spread over more work.
template <template <int, int> class Tile, int RM, class W>
void tiles(int64_t N, int64_t n, int64_t k, const float* x, int64_t ldx, const W* w, int64_t ldw, float beta,
           float* y, int64_t ldy) {
  for (int64_t o = 0; o < n;) {
    const bool four = o + 4 <= n;
    for (int64_t i = 0; i < N;) {
      const int64_t rm = std::min<int64_t>(RM, N - i);
      const float* xi = x + i * ldx;
      const W* wo = w + o * ldw;
      float* yo = y + i * ldy + o;
      if (four) {
        if (rm == RM) Tile<RM, 4>::run(k, xi, ldx, wo, ldw, beta, yo, ldy);
        else edge_tile<Tile, 4, RM>(rm, k, xi, ldx, wo, ldw, beta, yo, ldy);
      } else {
        if (rm == RM) Tile<RM, 1>::run(k, xi, ldx, wo, ldw, beta, yo, ldy);
        else edge_tile<Tile, 1, RM>(rm, k, xi, ldx, wo, ldw, beta, yo, ldy);
      }
      i += rm;
    }
    o += four ? 4 : 1;
  }
}

template <int RM, int RN>
struct F32Tile {
  static void run(int64_t k, const float* x, int64_t ldx, const float* w, int64_t ldw, float beta, float* y,
                  int64_t ldy) {
    tile_f32<RM, RN>(k, x, ldx, w, ldw, beta, y, ldy);
  }
};

template <int RM, int RN>
struct Bf16Tile {
  static void run(int64_t k, const float* x, int64_t ldx, const uint16_t* w, int64_t ldw, float beta, float* y,
                  int64_t ldy) {
    tile_bf16<RM, RN>(k, x, ldx, w, ldw, beta, y, ldy);
  }
};

AVX512 void widen_avx512(const uint16_t* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(dst + i, widen16(src + i));
  for (; i < n; ++i) dst[i] = bf16_to_float(src[i]);
}
#undef AVX512
#endif

}  // namespace

bool avx512_available() {
#ifdef NESTSCOPE_X86
  static const bool ok = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f");
  }();
  return ok;
#else
  return false;
#endif
}

void widen_bf16(const uint16_t* src, float* dst, int64_t n) {
#ifdef NESTSCOPE_X86
  if (avx512_available()) return widen_avx512(src, dst, n);
#endif
  for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_float(src[i]);
}

#ifdef NESTSCOPE_X86
void avx512_gemv_f32(int64_t n, int64_t k, const float* x, const float* w, int64_t ldw, float beta, float* y) {
  gemv_f32(n, k, x, w, ldw, beta, y);
}

void avx512_gemv_bf16(int64_t n, int64_t k, const float* x, const uint16_t* w, int64_t ldw, float beta, float* y) {
  gemv_bf16(n, k, x, w, ldw, beta, y);
}

void avx512_gemv_t_f32(int64_t n, int64_t k, const float* x, const float* bt, int64_t ldb, float beta, float* y) {
  gemv_t_f32(n, k, x, bt, ldb, beta, y);
}

void avx512_gemm_f32(int64_t N, int64_t n, int64_t k, const float* x, const float* w, int64_t ldw, float beta,
                     float* y, int64_t ldy) {
  tiles<F32Tile, 6>(N, n, k, x, k, w, ldw, beta, y, ldy);
}

void avx512_gemm_bf16(int64_t N, int64_t n, int64_t k, const float* x, const uint16_t* w, int64_t ldw, float beta,
                      float* y, int64_t ldy) {
  thread_local std::vector<float> xs;  // x de-interleaved per 32 columns (see gemv_bf16)
  xs.resize(size_t(N * k));
  for (int64_t i = 0; i < N; ++i)
    for (int64_t j = 0; j < k; j += 32)
      for (int64_t c = 0; c < 16; ++c) {
        xs[size_t(i * k + j + c)] = x[i * k + j + 2 * c];
        xs[size_t(i * k + j + 16 + c)] = x[i * k + j + 2 * c + 1];
      }
  tiles<Bf16Tile, 5>(N, n, k, xs.data(), k, w, ldw, beta, y, ldy);  // 20 + 8 + 2 registers
}
#else
// Without x86 these are never dispatched to (avx512_available() is false); plain loops keep the
// symbols defined.
namespace {
template <class W, class Get>
void plain(int64_t N, int64_t n, int64_t k, const float* x, const W* w, int64_t ldw, float beta, float* y, int64_t ldy,
           Get get) {
  for (int64_t i = 0; i < N; ++i)
    for (int64_t o = 0; o < n; ++o) {
      float s = 0;
      for (int64_t j = 0; j < k; ++j) s += x[i * k + j] * get(w[o * ldw + j]);
      y[i * ldy + o] = (beta == 0.f ? 0.f : beta * y[i * ldy + o]) + s;
    }
}
}  // namespace
void avx512_gemv_f32(int64_t n, int64_t k, const float* x, const float* w, int64_t ldw, float beta, float* y) {
  plain(1, n, k, x, w, ldw, beta, y, n, [](float v) { return v; });
}
void avx512_gemv_bf16(int64_t n, int64_t k, const float* x, const uint16_t* w, int64_t ldw, float beta, float* y) {
  plain(1, n, k, x, w, ldw, beta, y, n, bf16_to_float);
}
void avx512_gemv_t_f32(int64_t n, int64_t k, const float* x, const float* bt, int64_t ldb, float beta, float* y) {
  for (int64_t o = 0; o < n; ++o) {
    float s = 0;
    for (int64_t j = 0; j < k; ++j) s += x[j] * bt[j * ldb + o];
    y[o] = (beta == 0.f ? 0.f : beta * y[o]) + s;
  }
}
void avx512_gemm_f32(int64_t N, int64_t n, int64_t k, const float* x, const float* w, int64_t ldw, float beta,
                     float* y, int64_t ldy) {
  plain(N, n, k, x, w, ldw, beta, y, ldy, [](float v) { return v; });
}
void avx512_gemm_bf16(int64_t N, int64_t n, int64_t k, const float* x, const uint16_t* w, int64_t ldw, float beta,
                      float* y, int64_t ldy) {
  plain(N, n, k, x, w, ldw, beta, y, ldy, bf16_to_float);
}
#endif

}  // namespace nestscope
