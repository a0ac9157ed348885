#include "core/model/causal_attention.h"

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

namespace nestscope {

namespace {

#define NS_INLINE inline __attribute__((always_inline))

// exp(x) for x ≤ 0 (scores minus their row's maximum) in plain arithmetic the compiler vectorizes:
// 2ⁿ·e^r with n = round(x·log₂e), r = x − n·ln 2 in two parts (Cody–Waite) and Cephes' degree-6
// polynomial for e^r — within 2 ulp of expf. A call to expf per score cost more than all the
// products around it.
NS_INLINE float exp_nonpositive(float x) {
  x = std::max(x, -87.0f);
  const float n = std::floor(x * 1.44269504088896341f + 0.5f);
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (int32_t(n) + 127) << 23;
  float two_n;
  std::memcpy(&two_n, &bits, sizeof two_n);
  return p * two_n;
}

// One (sequence, head) pair, forward: for each query row i, s_j = scale·q_i·k_j (j ≤ i),
// lse_i = log Σ_j exp(s_j), y_i = Σ_j exp(s_j − lse_i) v_j. kt, vt are the head's keys and
// values transposed to [hd, T] so every loop runs over keys j, contiguous.
NS_INLINE void head_forward(int64_t T, int64_t hd, float scale, const float* q, const float* kt, const float* vt,
                            float* y, float* lse, float* s) {
  for (int64_t i = 0; i < T; ++i) {
    const int64_t n = i + 1;
    const float* qi = q + i * hd;
    for (int64_t j = 0; j < n; ++j) s[j] = 0.f;
    for (int64_t d = 0; d < hd; ++d) {
      const float qd = qi[d] * scale;
      const float* kd = kt + d * T;
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) s[j] += qd * kd[j];
    }
    float m = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : m)
    for (int64_t j = 0; j < n; ++j) m = std::max(m, s[j]);
    float sum = 0.f;
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < n; ++j) {
      s[j] = exp_nonpositive(s[j] - m);
      sum += s[j];
    }
    const float inv = 1.f / sum;
    for (int64_t d = 0; d < hd; ++d) {
      const float* vd = vt + d * T;
      float acc = 0.f;
#pragma omp simd reduction(+ : acc)
      for (int64_t j = 0; j < n; ++j) acc += s[j] * vd[j];
      y[i * hd + d] = acc * inv;
    }
    lse[i] = m + std::log(sum);
  }
}

// Backward of one pair: with p_j = exp(s_j − lse_i), dp_j = dy_i·v_j and D_i = dy_i·y_i,
// ds_j = p_j (dp_j − D_i); dq_i = scale Σ_j ds_j k_j, dk_j += scale ds_j q_i, dv_j += p_j dy_i.
// dkt, dvt are [hd, T] (zeroed by the caller).
NS_INLINE void head_backward(int64_t T, int64_t hd, float scale, const float* q, const float* kt, const float* vt,
                             const float* y, const float* lse, const float* dy, float* dq, float* dkt, float* dvt,
                             float* p, float* dp) {
  for (int64_t i = 0; i < T; ++i) {
    const int64_t n = i + 1;
    const float* qi = q + i * hd;
    const float* dyi = dy + i * hd;
    for (int64_t j = 0; j < n; ++j) p[j] = 0.f, dp[j] = 0.f;
    float D = 0.f;
    for (int64_t d = 0; d < hd; ++d) {
      const float qd = qi[d] * scale, dyd = dyi[d];
      const float *kd = kt + d * T, *vd = vt + d * T;
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) {
        p[j] += qd * kd[j];
        dp[j] += dyd * vd[j];
      }
      D += dyd * y[i * hd + d];
    }
    const float l = lse[i];
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) p[j] = exp_nonpositive(p[j] - l);
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) dp[j] = p[j] * (dp[j] - D) * scale;  // ds_j · scale
    for (int64_t d = 0; d < hd; ++d) {
      const float* kd = kt + d * T;
      float* dkd = dkt + d * T;
      float* dvd = dvt + d * T;
      const float qd = qi[d], dyd = dyi[d];
      float acc = 0.f;
#pragma omp simd reduction(+ : acc)
      for (int64_t j = 0; j < n; ++j) {
        acc += dp[j] * kd[j];
        dkd[j] += dp[j] * qd;
        dvd[j] += p[j] * dyd;
      }
      dq[i * hd + d] = acc;
    }
  }
}

// [T, hd] → [hd, T]
NS_INLINE void transpose_into(int64_t T, int64_t hd, const float* src, float* dst) {
  for (int64_t t = 0; t < T; ++t)
    for (int64_t d = 0; d < hd; ++d) dst[d * T + t] = src[t * hd + d];
}

template <bool Backward>
NS_INLINE void run_pairs(int64_t p0, int64_t p1, int64_t T, int64_t hd, float scale, const float* q, const float* k,
                         const float* v, float* y, float* lse, const float* dy, float* dq, float* dk, float* dv) {
  std::vector<float> buf(size_t(4 * hd * T + 2 * T));
  float *kt = buf.data(), *vt = kt + hd * T, *dkt = vt + hd * T, *dvt = dkt + hd * T, *s = dvt + hd * T, *s2 = s + T;
  for (int64_t pr = p0; pr < p1; ++pr) {
    const int64_t off = pr * T * hd;
    transpose_into(T, hd, k + off, kt);
    transpose_into(T, hd, v + off, vt);
    if constexpr (!Backward) {
      head_forward(T, hd, scale, q + off, kt, vt, y + off, lse + pr * T, s);
    } else {
      std::fill(dkt, dkt + 2 * hd * T, 0.f);
      head_backward(T, hd, scale, q + off, kt, vt, y + off, lse + pr * T, dy + off, dq + off, dkt, dvt, s, s2);
      for (int64_t t = 0; t < T; ++t)
        for (int64_t d = 0; d < hd; ++d) {
          dk[off + t * hd + d] = dkt[d * T + t];
          dv[off + t * hd + d] = dvt[d * T + t];
        }
    }
  }
}

__attribute__((target("avx512f,avx512vl,fma"))) void pairs_avx512(bool bwd, int64_t p0, int64_t p1, int64_t T,
                                                                   int64_t hd, float scale, const float* q,
                                                                   const float* k, const float* v, float* y,
                                                                   float* lse, const float* dy, float* dq, float* dk,
                                                                   float* dv) {
  if (bwd) run_pairs<true>(p0, p1, T, hd, scale, q, k, v, y, lse, dy, dq, dk, dv);
  else run_pairs<false>(p0, p1, T, hd, scale, q, k, v, y, lse, dy, dq, dk, dv);
}

void pairs_generic(bool bwd, int64_t p0, int64_t p1, int64_t T, int64_t hd, float scale, const float* q,
                   const float* k, const float* v, float* y, float* lse, const float* dy, float* dq, float* dk,
                   float* dv) {
  if (bwd) run_pairs<true>(p0, p1, T, hd, scale, q, k, v, y, lse, dy, dq, dk, dv);
  else run_pairs<false>(p0, p1, T, hd, scale, q, k, v, y, lse, dy, dq, dk, dv);
}

void for_pairs(bool bwd, int64_t pairs, int64_t T, int64_t hd, const float* q, const float* k, const float* v,
               float* y, float* lse, const float* dy = nullptr, float* dq = nullptr, float* dk = nullptr,
               float* dv = nullptr) {
  static const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl");
  const float scale = float(1.0 / std::sqrt(double(hd)));
  // Small problems stay on the calling thread: a parallel region costs a barrier, and with
  // another process on the cores (ctest -j2) spinning threads turned a 1 s test into 10 s.
  const int64_t work = T * T * hd / 2;  // multiply-adds per pair and pass
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 20) / std::max<int64_t>(1, work));
  at::parallel_for(0, pairs, grain, [&](int64_t p0, int64_t p1) {
    (avx512 ? pairs_avx512 : pairs_generic)(bwd, p0, p1, T, hd, scale, q, k, v, y, lse, dy, dq, dk, dv);
  });
}

struct FusedCausalAttention : torch::autograd::Function<FusedCausalAttention> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& q_in,
                               const torch::Tensor& k_in, const torch::Tensor& v_in) {
    auto q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous();
    const int64_t B = q.size(0), H = q.size(1), T = q.size(2), hd = q.size(3);
    auto y = torch::empty_like(q);                      // [B, H, T, hd]
    auto lse = torch::empty({B, H, T}, q.options());    // [B, H, T]
    for_pairs(false, B * H, T, hd, q.data_ptr<float>(), k.data_ptr<float>(), v.data_ptr<float>(), y.data_ptr<float>(),
              lse.data_ptr<float>());
    ctx->save_for_backward({q, k, v, y, lse});
    return y;
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grads) {
    const auto s = ctx->get_saved_variables();
    const auto &q = s[0], &k = s[1], &v = s[2], &y = s[3], &lse = s[4];
    const auto dy = grads[0].contiguous();
    auto dq = torch::empty_like(q), dk = torch::empty_like(k), dv = torch::empty_like(v);
    const int64_t B = q.size(0), H = q.size(1), T = q.size(2), hd = q.size(3);
    for_pairs(true, B * H, T, hd, q.data_ptr<float>(), k.data_ptr<float>(), v.data_ptr<float>(),
              const_cast<float*>(y.data_ptr<float>()), const_cast<float*>(lse.data_ptr<float>()), dy.data_ptr<float>(),
              dq.data_ptr<float>(), dk.data_ptr<float>(), dv.data_ptr<float>());
    return {dq, dk, dv};
  }
};

}  // namespace

torch::Tensor fused_causal_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v) {
  TORCH_CHECK(q.dim() == 4 && q.sizes() == k.sizes() && q.sizes() == v.sizes() && q.is_cpu() &&
                  q.scalar_type() == torch::kFloat32 && k.scalar_type() == torch::kFloat32 &&
                  v.scalar_type() == torch::kFloat32,
              "fused causal attention takes float32 CPU q, k, v of one shape [B, H, T, hd]");
  return FusedCausalAttention::apply(q, k, v);
}

torch::Tensor causal_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, int64_t past,
                               const torch::Tensor& key_mass) {
  const int64_t B = q.size(0), H = q.size(1), T = q.size(2), L = k.size(2), hd = q.size(3);
  if (at::GradMode::is_enabled() && past == 0 && T > 1 && !key_mass.defined() && q.is_cpu() &&
      q.scalar_type() == torch::kFloat32 && k.sizes() == q.sizes() && v.sizes() == q.sizes())
    return fused_causal_attention(q, k, v);
  // The ATen path in batch chunks: a whole training batch's scores are above glibc's largest mmap
  // threshold, so each call mapped fresh pages and faulted them in. The mask enters as an additive
  // bias inside the score GEMM (one pass fewer than a separate scale and fill).
  constexpr int64_t kScoreChunkBytes = int64_t(4) << 20;
  const double scale = 1.0 / std::sqrt(double(hd));
  torch::Tensor bias;  // [T, L]: 0 where query t may see the key, −∞ after it
  if (T > 1)
    bias = torch::zeros({T, L}, q.options())
               .masked_fill_(torch::ones({T, L}, q.options().dtype(torch::kBool)).triu(past + 1),
                             -std::numeric_limits<float>::infinity());
  const int64_t per_sequence = H * T * L * int64_t(q.element_size());
  const int64_t chunk = std::clamp<int64_t>(kScoreChunkBytes / std::max<int64_t>(1, per_sequence), 1, B);
  std::vector<torch::Tensor> parts;
  for (int64_t b0 = 0; b0 < B; b0 += chunk) {
    const int64_t n = std::min(chunk, B - b0);
    auto qc = q.narrow(0, b0, n).reshape({n * H, T, hd});
    auto kt = k.narrow(0, b0, n).reshape({n * H, L, hd}).transpose(1, 2);  // [nH, hd, L]
    auto vc = v.narrow(0, b0, n).reshape({n * H, L, hd});
    auto att = bias.defined() ? torch::baddbmm(bias, qc, kt, 1.0, scale) : torch::bmm(qc, kt).mul_(scale);  // [nH, T, L]
    att = torch::softmax(att, -1);
    if (key_mass.defined())
      key_mass.narrow(0, b0, n).narrow(1, 0, L).add_(att.view({n, H, T, L}).sum({1, 2}).to(key_mass.dtype()));
    parts.push_back(torch::bmm(att, vc).view({n, H, T, hd}));
  }
  return parts.size() == 1 ? parts[0] : torch::cat(parts, 0);
}

}  // namespace nestscope
