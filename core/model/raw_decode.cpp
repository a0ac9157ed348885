// The raw decode step: one token of batch 1 through the whole model on float buffers, no ATen op
// per part (GptImpl::forward takes it when raw_decode_applies). Tested against the general path.
#include <ATen/Parallel.h>

#include <cstring>

#include "core/error.h"
#include "core/gate/mlp_gate.h"
#include "core/layers/activation.h"
#include "core/layers/cpu_gemm.h"
#include "core/model/transformer.h"

namespace nestscope {

namespace {

// y[out] = layer(x[in]) for one row: the layer's raw path, or its forward on a borrowed tensor
// where it has none (another kind of layer, a build without CBLAS).
void linear_one(ElasticLinear& layer, const float* x, float* y) {
  if (layer.forward_raw(1, x, y)) return;
  auto out = layer.forward(torch::from_blob(const_cast<float*>(x), {1, layer.in_features()})).contiguous();
  std::memcpy(y, out.data_ptr<float>(), sizeof(float) * size_t(layer.out_features()));
}

const float* data_or_null(const torch::Tensor& t) { return t.defined() ? t.data_ptr<float>() : nullptr; }

// Rotary embedding of `heads` rows of hd channels in place, HF's rotate-half layout on the first
// rd channels: (x_i, x_{i+rd/2}) -> (x_i·cos − x_{i+rd/2}·sin, x_{i+rd/2}·cos + x_i·sin).
void rotate_rows(float* x, int64_t heads, int64_t hd, const float* cos, const float* sin, int64_t rd) {
  const int64_t half = rd / 2;
  for (int64_t h = 0; h < heads; ++h) {
    float* r = x + h * hd;
    for (int64_t i = 0; i < half; ++i) {
      const float a = r[i], b = r[i + half];
      r[i] = a * cos[i] - b * sin[i];
      r[i + half] = b * cos[i] + a * sin[i];
    }
  }
}

}  // namespace

void NormLayerImpl::forward_raw(const float* x, float* y) const {
  const int64_t C = weight.numel();
  const float* w = weight.data_ptr<float>();
  if (kind_ == Norm::LayerNorm) {
    double sum = 0, sq = 0;
    for (int64_t c = 0; c < C; ++c) sum += x[c];
    const double mean = sum / double(C);
    for (int64_t c = 0; c < C; ++c) sq += (x[c] - mean) * (x[c] - mean);
    const float rstd = float(1.0 / std::sqrt(sq / double(C) + eps_)), mu = float(mean);
    const float* b = bias.data_ptr<float>();
    for (int64_t c = 0; c < C; ++c) y[c] = (x[c] - mu) * rstd * w[c] + b[c];
    return;
  }
  double sq = 0;
  for (int64_t c = 0; c < C; ++c) sq += double(x[c]) * x[c];
  const float r = float(1.0 / std::sqrt(sq / double(C) + eps_));
  for (int64_t c = 0; c < C; ++c) y[c] = x[c] * r * w[c];
}

void CausalSelfAttentionImpl::attend_one(const float* q, const float* k, const float* v, int64_t slots, int64_t L,
                                         int64_t H, int64_t hd, float* y) const {
  const float scale = 1.0f / std::sqrt(float(hd));
  const int64_t* kv = kv_index_.defined() ? kv_index_.data_ptr<int64_t>() : nullptr;
  // Per head: scores = K·q (a GEMV over the cached keys), softmax, y = Vᵀ·a (the axpy form over
  // the cached values); AVX-512 where the head width allows, plain loops otherwise. Heads go over
  // the threads once the cache is long enough to pay for it: scalar loops here were a quarter of
  // a decode step at 1,000 tokens of context, on one core.
  const bool vector = avx512_available() && hd % 16 == 0;
  auto head = [&](int64_t h) {
    thread_local std::vector<float> w;
    w.resize(size_t(L));
    const int64_t g = kv ? kv[h] : h;  // the key/value head this query head reads
    const float* qh = q + h * hd;
    const float* kh = k + g * slots * hd;
    const float* vh = v + g * slots * hd;
    if (vector) {
      avx512_gemv_f32(L, hd, qh, kh, hd, 0.f, w.data());
    } else {
      for (int64_t j = 0; j < L; ++j) {
        float s = 0;
        for (int64_t d = 0; d < hd; ++d) s += qh[d] * kh[j * hd + d];
        w[size_t(j)] = s;
      }
    }
    float top = -std::numeric_limits<float>::infinity();
    for (int64_t j = 0; j < L; ++j) top = std::max(top, w[size_t(j)] *= scale);
    float z = 0;
    for (int64_t j = 0; j < L; ++j) z += (w[size_t(j)] = std::exp(w[size_t(j)] - top));
    for (int64_t j = 0; j < L; ++j) w[size_t(j)] /= z;
    float* yh = y + h * hd;
    if (vector) {
      avx512_gemv_t_f32(hd, L, w.data(), vh, hd, 0.f, yh);
    } else {
      std::fill(yh, yh + hd, 0.0f);
      for (int64_t j = 0; j < L; ++j)
        for (int64_t d = 0; d < hd; ++d) yh[d] += w[size_t(j)] * vh[j * hd + d];
    }
  };
  if (H > 1 && L * H * hd >= (int64_t(1) << 16) && at::get_num_threads() > 1 && !at::in_parallel_region()) {
    at::parallel_for(0, H, 1, [&](int64_t b, int64_t e) {
      for (int64_t h = b; h < e; ++h) head(h);
    });
  } else {
    for (int64_t h = 0; h < H; ++h) head(h);
  }
}

void CausalSelfAttentionImpl::forward_one_raw(const float* x, KvCache& cache, float* y, const float* cos,
                                              const float* sin, int64_t rd) {
  const int64_t layer = layer_;
  const int64_t C = q->in_features(), hd = C / n_heads_;
  const bool gated = !heads_.empty();
  const int64_t H = gated ? int64_t(heads_.size()) : n_heads_;
  thread_local std::vector<float> qb, kb, vb, yb;
  qb.resize(size_t(H * hd));
  kb.resize(size_t(n_kv_ * hd));
  vb.resize(size_t(n_kv_ * hd));
  yb.resize(size_t(H * hd));
  if (gated) cpu_linear_raw(1, C, H * hd, x, wq_.data_ptr<float>(), data_or_null(bq_), qb.data());
  else linear_one(*q, x, qb.data());
  linear_one(*k, x, kb.data());
  linear_one(*v, x, vb.data());
  if (cos) {  // positions enter q and k by rotation; cached keys stay rotated
    rotate_rows(qb.data(), H, hd, cos, sin, rd);
    rotate_rows(kb.data(), n_kv_, hd, cos, sin, rd);
  }
  const int64_t slots = cache.k[size_t(layer)].size(2), past = cache.length;
  float* kc = cache.k[size_t(layer)].data_ptr<float>();
  float* vc = cache.v[size_t(layer)].data_ptr<float>();
  for (int64_t g = 0; g < n_kv_; ++g) {  // the cache is [1, KVH, slots, hd]
    std::memcpy(kc + (g * slots + past) * hd, kb.data() + g * hd, sizeof(float) * size_t(hd));
    std::memcpy(vc + (g * slots + past) * hd, vb.data() + g * hd, sizeof(float) * size_t(hd));
  }
  attend_one(qb.data(), kc, vc, slots, past + 1, H, hd, yb.data());
  if (gated) {
    const auto bias = o->bias().defined() ? o->bias().contiguous() : torch::Tensor();
    cpu_linear_raw(1, H * hd, C, yb.data(), wo_.data_ptr<float>(), data_or_null(bias), y);
  } else {
    linear_one(*o, yb.data(), y);
  }
}

void MlpImpl::forward_one_raw(const float* x, float* y) {
  if (gate_) {
    gate_->trace_oracle = trace_oracle_;
    gate_->forward_raw(1, x, y, trace_, stats_);
    return;
  }
  const int64_t N = up->out_features();
  thread_local std::vector<float> z, g;
  z.resize(size_t(N));
  linear_one(*up, x, z.data());
  // The activation through ATen's vectorized kernels on the borrowed buffers (one op, no copy of
  // the weights): a scalar tanhf / expf per neuron was half a millisecond per token on GPT-2-124M.
  auto zt = torch::from_blob(z.data(), {N});
  if (gate_proj) {  // act(gate·x) ⊙ up·x
    g.resize(size_t(N));
    linear_one(*gate_proj, x, g.data());
    zt.mul_(activate(torch::from_blob(g.data(), {N}), activation_));
  } else {
    zt.copy_(activate(zt, activation_));
  }
  linear_one(*down, z.data(), y);
}

namespace {

bool plain_tensor(const torch::Tensor& t) {
  return !t.defined() || (t.is_cpu() && t.scalar_type() == torch::kFloat32 && t.is_contiguous());
}

}  // namespace

bool GptImpl::raw_decode_applies(const torch::Tensor& idx, const KvCache* cache) const {
  if (!raw_decode || hook_ || !cache || idx.size(0) != 1 || idx.size(1) != 1 || at::GradMode::is_enabled() ||
      cache->key_mass.defined() || (rope_inv_freq_.defined() && !plain_tensor(rope_inv_freq_)))
    return false;
  const auto plain = plain_tensor;
  const auto& emb = tok_emb->weight;
  const bool emb_ok = emb.is_cpu() && emb.is_contiguous() &&
                      (emb.scalar_type() == torch::kFloat32 || emb.scalar_type() == torch::kBFloat16);
  if (!emb_ok || !plain(pos_emb) || !plain(ln_f->weight) || !plain(ln_f->bias))
    return false;
  for (size_t l = 0; l < blocks_.size(); ++l) {
    const auto& b = blocks_[l];
    if (b->attn->head_mask_.defined() || b->mlp->neuron_mask_.defined() ||
        !plain(cache->k[l]) || !plain(cache->v[l]) || !plain(b->ln1->weight) || !plain(b->ln1->bias) ||
        !plain(b->ln2->weight) || !plain(b->ln2->bias))
      return false;
  }
  return true;
}

torch::Tensor GptImpl::decode_raw(int64_t token, KvCache& cache) {
  const int64_t C = cfg_.d_model, V = cfg_.vocab_size;
  check(token >= 0 && token < V, "token id " + std::to_string(token) + " is outside the vocabulary of " + std::to_string(V));
  for (auto* buf : {&raw_x_, &raw_a_, &raw_b_, &raw_h_}) buf->resize(size_t(C));
  float *x = raw_x_.data(), *a = raw_a_.data(), *b = raw_b_.data(), *h = raw_h_.data();
  const auto& emb = tok_emb->weight;
  if (is_bf16_weight(emb)) widen_bf16(reinterpret_cast<const uint16_t*>(emb.data_ptr<at::BFloat16>()) + token * C, x, C);
  else std::copy_n(emb.data_ptr<float>() + token * C, C, x);
  if (pos_emb.defined()) {
    const float* p = pos_emb.data_ptr<float>() + cache.position * C;
    for (int64_t c = 0; c < C; ++c) x[c] += p[c];
  }
  // Rotary angles of this position, as set_rope computes them: float32 t·θ^(−2i/rd).
  const int64_t rd = rope_inv_freq_.defined() ? 2 * rope_inv_freq_.numel() : 0;
  raw_cos_.resize(size_t(rd / 2));
  raw_sin_.resize(size_t(rd / 2));
  if (rd > 0) {
    const float* f = rope_inv_freq_.data_ptr<float>();
    for (int64_t i = 0; i < rd / 2; ++i) {
      const float angle = float(cache.position) * f[i];
      raw_cos_[size_t(i)] = std::cos(angle);
      raw_sin_[size_t(i)] = std::sin(angle);
    }
  }
  const float* cos = rd > 0 ? raw_cos_.data() : nullptr;
  const float* sin = rd > 0 ? raw_sin_.data() : nullptr;
  for (int64_t l = 0; l < cfg_.n_layers; ++l) {
    auto& blk = blocks_[size_t(l)];
    blk->ln1->forward_raw(x, a);
    blk->attn->forward_one_raw(a, cache, h, cos, sin, rd);  // h = attn(ln1(x))
    if (blk->parallel) {                          // both read the block's input
      blk->ln2->forward_raw(x, a);
      blk->mlp->forward_one_raw(a, b);
      for (int64_t c = 0; c < C; ++c) x[c] += h[c] + b[c];
    } else {
      for (int64_t c = 0; c < C; ++c) x[c] += h[c];
      blk->ln2->forward_raw(x, a);
      blk->mlp->forward_one_raw(a, b);
      for (int64_t c = 0; c < C; ++c) x[c] += b[c];
    }
  }
  cache.length += 1;
  cache.position += 1;
  ++raw_decode_steps;
  ln_f->forward_raw(x, a);
  auto logits = torch::empty({1, 1, V});
  if (head) linear_one(*head, a, logits.data_ptr<float>());
  else if (!cpu_linear_raw_any(emb, {}, 1, a, logits.data_ptr<float>()))  // a build without CBLAS
    logits.view({1, V}).copy_(linear_any(torch::from_blob(a, {1, C}), emb, {}));
  return logits;
}

}  // namespace nestscope
