#include "core/layers/low_rank_kernel.h"

#include <cmath>
#include <cstdlib>
#include <string>

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define NESTSCOPE_LOW_RANK_AVX2 1
#endif

namespace nestscope {

#ifdef NESTSCOPE_LOW_RANK_AVX2
namespace {

// 16 registers: AVX2 + FMA.
namespace avx2 {
#define NS_TARGET __attribute__((target("avx2,fma")))
#define NS_ROWS 2
#include "core/layers/low_rank_kernel_body.inc"
#undef NS_ROWS
#undef NS_TARGET
}  // namespace avx2

// 32 registers: the same 256-bit operations with AVX-512VL's register file.
namespace avx512vl {
#define NS_TARGET __attribute__((target("avx2,fma,avx512f,avx512vl")))
#define NS_ROWS 6
#include "core/layers/low_rank_kernel_body.inc"
#undef NS_ROWS
#undef NS_TARGET
}  // namespace avx512vl

}  // namespace
#endif

bool low_rank_isa_supported(LowRankIsa isa) {
#ifdef NESTSCOPE_LOW_RANK_AVX2
  static const bool avx2 = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  static const bool avx512vl = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl");
  switch (isa) {
    case LowRankIsa::none: return true;
    case LowRankIsa::avx2: return avx2;
    case LowRankIsa::avx512vl: return avx512vl;
  }
#endif
  return isa == LowRankIsa::none;
}

LowRankIsa low_rank_kernel_isa() {
  static const LowRankIsa isa = [] {
    const char* force = std::getenv("NESTSCOPE_LOW_RANK_ISA");
    for (LowRankIsa candidate : {LowRankIsa::none, LowRankIsa::avx2, LowRankIsa::avx512vl})
      if (force && std::string(force) == low_rank_isa_name(candidate) && low_rank_isa_supported(candidate))
        return candidate;
    if (low_rank_isa_supported(LowRankIsa::avx512vl)) return LowRankIsa::avx512vl;
    return low_rank_isa_supported(LowRankIsa::avx2) ? LowRankIsa::avx2 : LowRankIsa::none;
  }();
  return isa;
}

const char* low_rank_isa_name(LowRankIsa isa) {
  switch (isa) {
    case LowRankIsa::avx2: return "avx2";
    case LowRankIsa::avx512vl: return "avx512vl";
    case LowRankIsa::none: break;
  }
  return "none";
}

bool low_rank_kernel_applies(int64_t rows, int64_t k, int64_t n, int64_t r) {
  const LowRankIsa isa = low_rank_kernel_isa();
  if (isa == LowRankIsa::none || r < 1 || k <= 0 || n <= 0 || k % 8 != 0 || n % 8 != 0) return false;
  // With 16 registers the 2-row blocks lose to BLAS's sgemm on prefills (measured); decode wins.
  if (isa == LowRankIsa::avx2) return rows <= kLowRankAvx2MaxRows && r <= kLowRankKernelMaxRank;
  // 6-row blocks: every rank up to 32; prefills up to rank 128 while rows of x and y stay short
  // (beyond, BLAS's cache blocking wins: at in = 3072 the dot blocks run at a third of its speed,
  // at out = 3072 the kernel takes 1.4× its time).
  return r <= kLowRankKernelMaxRank || (r <= kLowRankKernelMaxPrefillRank && rows >= kLowRankPrefillRows &&
                                        k <= kLowRankPrefillMaxWidth && n <= kLowRankPrefillMaxWidth);
}

void low_rank_kernel(int64_t N, int64_t k, int64_t n, int64_t r, const float* x, const float* A, const float* bt,
                     int64_t ldb, const float* bias, float* y, LowRankIsa isa) {
  low_rank_kernel_ex(N, k, n, r, x, A, nullptr, LowRankAct::None, bt, ldb, bias, false, y, isa);
}

void low_rank_kernel_ex(int64_t N, int64_t k, int64_t n, int64_t r, const float* x, const float* A,
                        const float* mid_bias, LowRankAct act, const float* bt, int64_t ldb, const float* bias,
                        bool accumulate, float* y, LowRankIsa isa) {
#ifdef NESTSCOPE_LOW_RANK_AVX2
  if (isa == LowRankIsa::avx512vl)
    return avx512vl::low_rank(N, k, n, r, x, A, mid_bias, act, bt, ldb, bias, accumulate, y);
  if (isa == LowRankIsa::avx2) return avx2::low_rank(N, k, n, r, x, A, mid_bias, act, bt, ldb, bias, accumulate, y);
#endif
  (void)N, (void)k, (void)n, (void)r, (void)x, (void)A, (void)mid_bias, (void)act, (void)bt, (void)ldb, (void)bias,
      (void)accumulate, (void)y, (void)isa;
}

}  // namespace nestscope
