// The CUDA kernels declared in core/cuda/kernels.h.
#include <cuda_runtime.h>

#include <cmath>

#include "core/cuda/kernels.h"

namespace nestscope::cuda {
namespace {

constexpr int kWarp = 32;
constexpr int kWarpsPerBlock = 8;  // up kernel: one warp per hidden neuron
constexpr int kThreads = 256;      // down and MPO kernels: one thread per output element

__device__ __forceinline__ float activate(float v, Act act) {
  switch (act) {
    case Act::Relu: return v > 0.f ? v : 0.f;
    case Act::Gelu: return 0.5f * v * (1.f + erff(v * 0.70710678118654752f));
    case Act::GeluTanh: {
      const float u = 0.79788456080286536f * (v + 0.044715f * v * v * v);
      return 0.5f * v * (1.f + tanhf(u));
    }
    case Act::Silu: return v / (1.f + expf(-v));
    default: return v;
  }
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int off = kWarp / 2; off > 0; off /= 2) v += __shfl_down_sync(0xffffffffu, v, off);
  return v;
}

// grid (rows, ceil(k·B / kWarpsPerBlock)); a warp reads one neuron's contiguous row of W_up (and of
// W_mul), coalesced, and reduces the dot product with shuffles.
__global__ void gathered_up_kernel(int C, int B, int k, const int32_t* __restrict__ blocks,
                                   const float* __restrict__ x, const float* __restrict__ up,
                                   const float* __restrict__ up_bias, const float* __restrict__ mul,
                                   const float* __restrict__ mul_bias, Act act, float* __restrict__ hidden) {
  const int r = blockIdx.x;
  const int t = blockIdx.y * kWarpsPerBlock + threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (t >= k * B) return;  // whole warps leave together: the shuffles below stay full-mask
  const int64_t n = int64_t(blocks[int64_t(r) * k + t / B]) * B + t % B;
  const float* xr = x + int64_t(r) * C;
  const float* w = up + n * C;
  float z = 0.f;
  for (int c = lane; c < C; c += kWarp) z += w[c] * xr[c];
  z = warp_sum(z);
  float u = 0.f;
  if (mul) {
    const float* wm = mul + n * C;
    for (int c = lane; c < C; c += kWarp) u += wm[c] * xr[c];
    u = warp_sum(u);
  }
  if (lane == 0) {
    float h = activate(z + (up_bias ? up_bias[n] : 0.f), act);
    if (mul) h *= u + (mul_bias ? mul_bias[n] : 0.f);
    hidden[int64_t(r) * k * B + t] = h;
  }
}

// grid (rows, ceil(C / kThreads)); thread c accumulates over the row's active neurons; for each
// neuron the block's threads read consecutive entries of its W_downᵀ row (coalesced), the hidden
// values come from shared memory.
__global__ void gathered_down_kernel(int C, int B, int k, const int32_t* __restrict__ blocks,
                                     const float* __restrict__ hidden, const float* __restrict__ down_t,
                                     const float* __restrict__ down_bias, float* __restrict__ y) {
  extern __shared__ float h[];  // [k·B]
  const int r = blockIdx.x;
  const int K = k * B;
  for (int t = threadIdx.x; t < K; t += blockDim.x) h[t] = hidden[int64_t(r) * K + t];
  __syncthreads();
  const int c = blockIdx.y * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float acc = down_bias ? down_bias[c] : 0.f;
  for (int b = 0; b < k; ++b) {
    const float* w = down_t + int64_t(blocks[int64_t(r) * k + b]) * B * C + c;
    const float* hb = h + b * B;
    for (int j = 0; j < B; ++j) acc += hb[j] * w[int64_t(j) * C];
  }
  y[int64_t(r) * C + c] = acc;
}

// One thread per output element out[m, a, e, r]; the sum runs over D·i ≤ χ·i terms.
__global__ void mpo_site_kernel(int64_t total, int D, int o, int i, int D2, int rest, const float* __restrict__ s,
                                const float* __restrict__ g, int64_t g0, int64_t g1, int64_t g2, int64_t g3,
                                const float* __restrict__ bias, int out_features, float* __restrict__ out) {
  const int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= total) return;
  int64_t rem = idx;
  const int r = int(rem % rest);
  rem /= rest;
  const int e = int(rem % D2);
  rem /= D2;
  const int a = int(rem % o);
  const int64_t m = rem / o;
  float acc = 0.f;
  for (int d = 0; d < D; ++d) {
    const float* sd = s + ((m * D + d) * i) * rest + r;
    const float* gd = g + d * g0 + a * g1 + e * g3;
    for (int j = 0; j < i; ++j) acc += sd[int64_t(j) * rest] * gd[j * g2];
  }
  if (bias) acc += bias[idx % out_features];
  out[idx] = acc;
}

const char* last_error() {
  const cudaError_t e = cudaGetLastError();
  return e == cudaSuccess ? nullptr : cudaGetErrorString(e);
}

}  // namespace

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky "no driver" error
    return 0;
  }
  return n;
}

const char* gathered_mlp(int rows, int C, int N, int B, int k, const int32_t* blocks, const float* x,
                         const float* up, const float* up_bias, const float* mul, const float* mul_bias,
                         const float* down_t, const float* down_bias, Act act, float* hidden, float* y,
                         void* stream) {
  if (rows <= 0) return nullptr;
  if (C <= 0 || B <= 0 || k <= 0 || int64_t(k) * B > N) return "gathered_mlp: bad sizes";
  auto st = static_cast<cudaStream_t>(stream);
  const int K = k * B;
  const dim3 up_grid(unsigned(rows), unsigned((K + kWarpsPerBlock - 1) / kWarpsPerBlock));
  gathered_up_kernel<<<up_grid, kWarpsPerBlock * kWarp, 0, st>>>(C, B, k, blocks, x, up, up_bias, mul, mul_bias,
                                                                  act, hidden);
  if (const char* e = last_error()) return e;
  const dim3 down_grid(unsigned(rows), unsigned((C + kThreads - 1) / kThreads));
  const size_t shared = size_t(K) * sizeof(float);
  if (shared > 48 * 1024) return "gathered_mlp: more than 12,288 active neurons per row";
  gathered_down_kernel<<<down_grid, kThreads, shared, st>>>(C, B, k, blocks, hidden, down_t, down_bias, y);
  return last_error();
}

const char* mpo_site(int M, int D, int o, int i, int D2, int rest, const float* s, const float* g,
                     const int64_t g_strides[4], const float* bias, int out_features, float* out, void* stream) {
  const int64_t total = int64_t(M) * o * D2 * rest;
  if (total == 0) return nullptr;
  if (D <= 0 || i <= 0 || (bias && out_features <= 0)) return "mpo_site: bad sizes";
  const unsigned grid = unsigned((total + kThreads - 1) / kThreads);
  mpo_site_kernel<<<grid, kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      total, D, o, i, D2, rest, s, g, g_strides[0], g_strides[1], g_strides[2], g_strides[3], bias, out_features, out);
  return last_error();
}

}  // namespace nestscope::cuda
