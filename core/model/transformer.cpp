#include "core/model/transformer.h"

#include <cstdlib>
#include <cstring>
#include <numeric>

#include "core/error.h"
#include "core/gate/block_recovery.h"
#include "core/gate/mlp_gate.h"
#include "core/gate/neuron_order.h"
#include "core/layers/cpu_gemm.h"
#include "core/layers/factory.h"

namespace nestscope {

torch::Tensor sinusoidal_positions(int64_t context, int64_t channels) {
  // PE[t, 2i] = sin(t / 10000^(2i/C)), PE[t, 2i+1] = cos(t / 10000^(2i/C))
  auto t = torch::arange(context, torch::kFloat).unsqueeze(1);                    // [T, 1]
  auto i2 = torch::arange(0, channels, 2, torch::kFloat);                          // [C/2]
  auto freq = torch::exp(i2 * (-std::log(10000.0) / static_cast<double>(channels)));  // [C/2]
  auto angle = t * freq;                                                            // [T, C/2]
  return torch::stack({torch::sin(angle), torch::cos(angle)}, 2).reshape({context, channels});
}

torch::Tensor activate(const torch::Tensor& z, Activation activation) {
  switch (activation) {
    case Activation::Relu: return torch::relu(z);
    case Activation::Gelu: return torch::gelu(z);
    case Activation::GeluTanh: return torch::gelu(z, "tanh");
    case Activation::Silu: return torch::silu(z);
  }
  return z;
}

namespace {

// y[out] = layer(x[in]) for one row: the layer's raw path, or its forward on a borrowed tensor
// where it has none (another kind of layer, a build without CBLAS).
void linear_one(ElasticLinear& layer, const float* x, float* y) {
  if (layer.forward_raw(1, x, y)) return;
  auto out = layer.forward(torch::from_blob(const_cast<float*>(x), {1, layer.in_features()})).contiguous();
  std::memcpy(y, out.data_ptr<float>(), sizeof(float) * size_t(layer.out_features()));
}

const float* data_or_null(const torch::Tensor& t) { return t.defined() ? t.data_ptr<float>() : nullptr; }

}  // namespace

NormLayerImpl::NormLayerImpl(const ModelConfig& cfg) : kind_(cfg.norm), eps_(cfg.ln_eps) {
  weight = register_parameter("weight", torch::ones({cfg.d_model}));
  if (kind_ == Norm::LayerNorm) bias = register_parameter("bias", torch::zeros({cfg.d_model}));
}

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

torch::Tensor NormLayerImpl::forward(const torch::Tensor& x) {
  if (kind_ == Norm::LayerNorm) return torch::layer_norm(x, {x.size(-1)}, weight, bias, eps_);
  // RMSNorm: x / sqrt(mean(x²) + eps) · w
  return x * torch::rsqrt(x.square().mean(-1, /*keepdim=*/true) + eps_) * weight;
}

namespace {

// [H] or [kH] int64: the key/value head each query head in `heads` reads (grouped-query attention).
torch::Tensor kv_heads_of(const std::vector<int64_t>& heads, int64_t n_heads, int64_t n_kv) {
  std::vector<int64_t> kv;
  for (int64_t h : heads) kv.push_back(h / (n_heads / n_kv));
  return torch::tensor(kv, torch::kInt64);
}

// Rotary embedding, HF Llama's layout: x·cos + rotate_half(x)·sin with rotate_half(x) = [−x₂, x₁],
// on the first rd = cos.size(-1) channels of each head (GPT-NeoX rotates a fraction; the rest pass).
torch::Tensor rotate(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  const int64_t rd = cos.size(-1), half = rd / 2;
  auto r = rd == x.size(-1) ? x : x.narrow(-1, 0, rd);                             // [B, H, T, rd]
  auto rotated = torch::cat({-r.narrow(-1, half, half), r.narrow(-1, 0, half)}, -1);
  auto out = r * cos + rotated * sin;
  return rd == x.size(-1) ? out : torch::cat({out, x.narrow(-1, rd, x.size(-1) - rd)}, -1);
}

}  // namespace

CausalSelfAttentionImpl::CausalSelfAttentionImpl(const ModelConfig& cfg) : n_heads_(cfg.n_heads), n_kv_(cfg.kv_heads()) {
  q = register_module("q", make_linear(cfg, "attn.q"));
  k = register_module("k", make_linear(cfg, "attn.k"));
  v = register_module("v", make_linear(cfg, "attn.v"));
  o = register_module("o", make_linear(cfg, "attn.o"));
  if (n_kv_ != n_heads_) {
    std::vector<int64_t> all(static_cast<size_t>(n_heads_));
    std::iota(all.begin(), all.end(), 0);
    kv_index_ = kv_heads_of(all, n_heads_, n_kv_);
  }
}

void CausalSelfAttentionImpl::set_active_heads(const std::vector<int64_t>& heads) {
  torch::NoGradGuard no_grad;
  heads_.clear();
  head_index_ = wq_ = bq_ = wo_ = torch::Tensor();
  std::vector<int64_t> all(static_cast<size_t>(n_heads_));
  std::iota(all.begin(), all.end(), 0);
  kv_index_ = n_kv_ != n_heads_ ? kv_heads_of(all, n_heads_, n_kv_) : torch::Tensor();
  if (heads.empty() || int64_t(heads.size()) == n_heads_) return;
  const int64_t C = q->in_features(), hd = C / n_heads_;
  std::vector<int64_t> cols;  // channels of the active heads
  for (int64_t h : heads) {
    check(h >= 0 && h < n_heads_, "head " + std::to_string(h) + " is outside [0, " + std::to_string(n_heads_) + ")");
    for (int64_t j = 0; j < hd; ++j) cols.push_back(h * hd + j);
  }
  heads_ = heads;
  head_index_ = torch::tensor(heads, torch::kInt64);
  kv_index_ = kv_heads_of(heads, n_heads_, n_kv_);
  auto idx = torch::tensor(cols, torch::kInt64).to(q->to_dense().device());
  wq_ = q->to_dense().index_select(0, idx).contiguous();                 // [kH·hd, C]
  if (q->bias().defined()) bq_ = q->bias().index_select(0, idx).contiguous();
  wo_ = o->to_dense().index_select(1, idx).contiguous();                 // [C, kH·hd]
}

void CausalSelfAttentionImpl::attend_one(const float* q, const float* k, const float* v, int64_t slots, int64_t L,
                                         int64_t H, int64_t hd, float* y) const {
  thread_local std::vector<float> w;
  w.resize(size_t(L));
  const float scale = 1.0f / std::sqrt(float(hd));
  const int64_t* kv = kv_index_.defined() ? kv_index_.data_ptr<int64_t>() : nullptr;
  for (int64_t h = 0; h < H; ++h) {
    const int64_t g = kv ? kv[h] : h;  // the key/value head this query head reads
    const float* qh = q + h * hd;
    const float* kh = k + g * slots * hd;
    const float* vh = v + g * slots * hd;
    float top = -std::numeric_limits<float>::infinity();
    for (int64_t j = 0; j < L; ++j) {
      float s = 0;
      for (int64_t d = 0; d < hd; ++d) s += qh[d] * kh[j * hd + d];
      w[size_t(j)] = s * scale;
      top = std::max(top, w[size_t(j)]);
    }
    float z = 0;
    for (int64_t j = 0; j < L; ++j) z += (w[size_t(j)] = std::exp(w[size_t(j)] - top));
    float* yh = y + h * hd;
    std::fill(yh, yh + hd, 0.0f);
    for (int64_t j = 0; j < L; ++j) {
      const float a = w[size_t(j)] / z;
      for (int64_t d = 0; d < hd; ++d) yh[d] += a * vh[j * hd + d];
    }
  }
}

void CausalSelfAttentionImpl::forward_one_raw(const float* x, KvCache& cache, int64_t layer, float* y) {
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

torch::Tensor CausalSelfAttentionImpl::forward(const torch::Tensor& x, KvCache* cache, int64_t layer) {
  const int64_t B = x.size(0), T = x.size(1), C = x.size(2), hd = C / n_heads_;
  const bool gated = !heads_.empty() && !at::GradMode::is_enabled();
  const int64_t H = gated ? int64_t(heads_.size()) : n_heads_;  // heads that run
  auto split = [&](const torch::Tensor& t, int64_t h) { return t.view({B, T, h, hd}).transpose(1, 2); };
  auto qh = gated ? split(torch::linear(x, wq_, bq_), H) : split(q->forward(x), H);  // [B, H, T, hd]
  auto kh = split(k->forward(x), n_kv_);  // [B, KVH, T, hd]
  auto vh = split(v->forward(x), n_kv_);  // [B, KVH, T, hd]
  if (rope_cos.defined()) {  // positions enter q and k by rotation; cached keys stay rotated
    qh = rotate(qh, rope_cos, rope_sin);
    kh = rotate(kh, rope_cos, rope_sin);
  }
  int64_t past = 0;
  if (cache) {
    past = cache->length;
    cache->k[layer].narrow(2, past, T).copy_(kh);
    cache->v[layer].narrow(2, past, T).copy_(vh);
    kh = cache->k[layer].narrow(2, 0, past + T);  // [B, KVH, L, hd]
    vh = cache->v[layer].narrow(2, 0, past + T);  // [B, KVH, L, hd]
  }
  if (cache && B == 1 && T == 1 && !at::GradMode::is_enabled() && x.is_cpu() && x.scalar_type() == torch::kFloat32 &&
      !cache->key_mass.defined() && !probe_mask.defined() && cache->k[layer].is_contiguous() &&
      cache->v[layer].is_contiguous()) {
    // Batch-1 decode: one query per head against the cached keys, in plain loops — the ATen ops
    // of the general path below (two matmuls, scale, softmax, transposes) cost more in dispatch
    // than their arithmetic at this size. Same result (tested against the full forward).
    auto y = torch::empty({1, 1, H * hd});
    attend_one(qh.contiguous().data_ptr<float>(), cache->k[layer].data_ptr<float>(), cache->v[layer].data_ptr<float>(),
               cache->k[layer].size(2), past + 1, H, hd, y.data_ptr<float>());
    if (head_mask.defined()) {
      auto m = (gated ? head_mask.index_select(0, head_index_.to(head_mask.device())) : head_mask).to(torch::kFloat32).cpu();
      y = y * m.repeat_interleave(hd).view({1, 1, H * hd});
    }
    return gated ? torch::linear(y, wo_, o->bias()) : o->forward(y);
  }
  if (kv_index_.defined()) {  // each running query head's key/value head (GQA groups, head gating)
    const auto idx = kv_index_.to(kh.device());
    kh = kh.index_select(1, idx);  // [B, H, L, hd]
    vh = vh.index_select(1, idx);
  }
  const int64_t L = past + T;
  auto att = torch::matmul(qh, kh.transpose(-2, -1)) * (1.0 / std::sqrt(static_cast<double>(hd)));  // [B, H, T, L]
  if (T > 1) {
    // Query t (absolute position past+t) may see keys 0..past+t.
    auto mask = torch::ones({T, L}, torch::TensorOptions().dtype(torch::kBool).device(x.device()))
                    .triu(past + 1);  // [T, L]
    att = att.masked_fill(mask, -std::numeric_limits<float>::infinity());
  }
  att = torch::softmax(att, -1);
  if (cache && cache->key_mass.defined())  // attention each slot receives, over heads and queries
    cache->key_mass.narrow(1, 0, L).add_(att.sum({1, 2}).to(cache->key_mass.dtype()));  // [B, L]
  auto yh = torch::matmul(att, vh);  // [B, H, T, hd]
  if (probe_mask.defined()) yh = yh * probe_mask.to(yh.options()).view({B, H, 1, 1});
  if (train_head_active < 1 && at::GradMode::is_enabled()) {  // k random heads per sequence
    const int64_t k = std::clamp<int64_t>(std::llround(train_head_active * double(H)), 1, H);
    auto chosen = torch::rand({B, H}).argsort(int64_t(1), false).narrow(1, 0, k);  // [B, k]
    auto keep = torch::zeros({B, H}).scatter_(1, chosen, 1.0).to(yh.options());
    yh = yh * keep.view({B, H, 1, 1});
  }
  if (head_mask.defined()) {  // ablated heads contribute nothing
    auto m = gated ? head_mask.index_select(0, head_index_.to(head_mask.device())) : head_mask;
    yh = yh * m.to(yh.options()).view({1, H, 1, 1});
  }
  auto y = yh.transpose(1, 2).reshape({B, T, H * hd});  // [B, T, H·hd]
  return gated ? torch::linear(y, wo_, o->bias()) : o->forward(y);
}

MlpImpl::MlpImpl(const ModelConfig& cfg) : activation_(cfg.activation) {
  if (cfg.gated_mlp) gate_proj = register_module("gate", make_linear(cfg, "mlp.gate"));
  up = register_module("up", make_linear(cfg, "mlp.up"));
  down = register_module("down", make_linear(cfg, "mlp.down"));
}

void MlpImpl::forward_one_raw(const float* x, float* y) {
  if (gate) {
    gate->trace_oracle = trace_oracle;
    gate->forward_raw(1, x, y, trace, stats);
    return;
  }
  const int64_t N = up->out_features();
  thread_local std::vector<float> z, g;
  z.resize(size_t(N));
  linear_one(*up, x, z.data());
  if (gate_proj) {  // act(gate·x) ⊙ up·x
    g.resize(size_t(N));
    linear_one(*gate_proj, x, g.data());
    for (int64_t j = 0; j < N; ++j) z[size_t(j)] *= activate(g[size_t(j)], activation_);
  } else {
    for (int64_t j = 0; j < N; ++j) z[size_t(j)] = activate(z[size_t(j)], activation_);
  }
  linear_one(*down, z.data(), y);
}

torch::Tensor MlpImpl::hidden(const torch::Tensor& x) {
  return gate_proj ? activate(gate_proj->forward(x), activation_) * up->forward(x) : activate(up->forward(x), activation_);
}

torch::Tensor MlpImpl::forward(const torch::Tensor& x) {
  if (gate && !at::GradMode::is_enabled()) {
    gate->trace_oracle = trace_oracle;
    return gate->forward(x, trace, stats);
  }
  auto h = hidden(x);  // [B, T, N]
  if (neuron_mask.defined()) h = h * neuron_mask.to(h.options());  // ablated neurons off
  if (train_active < 1 && at::GradMode::is_enabled()) {
    // The oracle support in the loop: per token, the k blocks with the largest ‖act(z_b)‖².
    const auto sizes = h.sizes().vec();
    const int64_t N = h.size(-1), nb = N / train_block;
    const int64_t k = std::clamp<int64_t>(std::llround(train_active * double(nb)), 1, nb);
    auto blocks = h.reshape({-1, nb, train_block});                     // [BT, nb, blk]
    auto energy = (train_sensing > 0 ? sensed_hidden(x, train_sensing).reshape({-1, nb, train_block}) : blocks.detach())
                      .square()
                      .sum(-1);  // [BT, nb]
    auto keep = torch::zeros_like(energy).scatter_(1, std::get<1>(energy.topk(k, 1)), 1.0);  // [BT, nb]
    h = (blocks * keep.unsqueeze(-1)).reshape(sizes);
  }
  return down->forward(h);  // [B, T, C]
}

torch::Tensor MlpImpl::sensed_hidden(const torch::Tensor& x, int64_t m) {
  torch::NoGradGuard no_grad;
  // The sensed projection: up, or the activated one of a gated MLP (what MlpGate measures).
  const auto& proj = gate_proj ? gate_proj : up;
  auto w = proj->to_dense().detach().to(torch::kFloat64);  // [N, C]
  const int64_t C = w.size(1);
  auto xr = x.detach().reshape({-1, C}).to(torch::kFloat64);  // [rows, C]
  check(xr.size(0) >= 2, "sensing-aware training needs at least two token rows");
  auto mean = xr.mean(0);
  auto xc = xr - mean;
  auto cov = xc.t().mm(xc) / double(xr.size(0) - 1);  // Σ_x [C, C]
  // PCA rows Φ are eigenvectors of Σ_u = W Σ_x Wᵀ, so the MMSE estimate μ_u + Σ_u Φᵀ(Φ Σ_u Φᵀ)⁻¹ Φ(u − μ_u)
  // is the projection of u − μ_u onto the top-m principal subspace: Φᵀ Φ (u − μ_u). Σ_u has rank
  // ≤ C, so m ≥ C recovers u exactly.
  auto phi = principal_directions(w, cov, m);                 // [N, r] orthonormal columns
  auto folded = phi.t().mm(w);                                // Φ W [r, C]: y = Φ (u − μ_u) = folded (x − μ_x)
  auto z = xc.mm(folded.t()).mm(phi.t()) + w.mv(mean);        // [rows, N]
  if (auto b = proj->bias(); b.defined()) z = z + b.detach().to(torch::kFloat64);
  auto sizes = x.sizes().vec();
  sizes.back() = w.size(0);
  return activate(z.to(x.scalar_type()), activation_).reshape(sizes);  // [.., N]
}

BlockImpl::BlockImpl(const ModelConfig& cfg) : parallel(cfg.parallel_residual) {
  ln1 = register_module("ln1", NormLayer(cfg));
  attn = register_module("attn", CausalSelfAttention(cfg));
  ln2 = register_module("ln2", NormLayer(cfg));
  mlp = register_module("mlp", Mlp(cfg));
}

torch::Tensor BlockImpl::forward(const torch::Tensor& x, KvCache* cache, int64_t layer) {
  auto h = x + attn->forward(ln1->forward(x), cache, layer);  // [B, T, C]
  return h + mlp->forward(ln2->forward(parallel ? x : h));     // parallel: both read the block's input
}

GptImpl::GptImpl(const ModelConfig& cfg) : cfg_(cfg) {
  cfg_.validate();
  if (const char* env = std::getenv("NESTSCOPE_RAW_DECODE")) raw_decode = std::string(env) != "0";
  tok_emb = register_module("tok_emb", torch::nn::Embedding(cfg.vocab_size, cfg.d_model));
  torch::NoGradGuard no_grad;
  tok_emb->weight.normal_(0.0, cfg.init_std);
  if (cfg.position == PositionEncoding::Learned) {
    pos_emb = register_parameter("pos_emb", torch::randn({cfg.context, cfg.d_model}).mul_(cfg.init_std));
  } else if (cfg.position == PositionEncoding::Sinusoidal) {
    pos_emb = register_buffer("pos_sin", sinusoidal_positions(cfg.context, cfg.d_model));
  } else {
    const int64_t rd = cfg.rotary_dims();
    rope_inv_freq_ = 1.0 / torch::pow(cfg.rope_theta, torch::arange(0, rd, 2, torch::kInt64).to(torch::kFloat) / double(rd));  // [rd/2]
  }
  blk = register_module("blk", torch::nn::ModuleList());
  for (int64_t l = 0; l < cfg.n_layers; ++l) {
    blocks_.push_back(Block(cfg));
    blk->push_back(blocks_.back());
  }
  ln_f = register_module("ln_f", NormLayer(cfg));
  if (!cfg.tied_head) head = register_module("head", make_linear(cfg, "head"));
  own_ = projections();
}

torch::Tensor GptImpl::forward(const torch::Tensor& idx, KvCache* cache) {
  check(idx.dim() == 2, "model input must be [batch, time] token ids");
  const int64_t T = idx.size(1);
  const int64_t pos = cache ? cache->position : 0;  // absolute position of idx[:, 0]
  check(T > 0, "model input is empty");
  check(pos + T <= cfg_.context, "sequence of " + std::to_string(pos + T) +
                                     " tokens exceeds the model's context of " + std::to_string(cfg_.context));
  if (raw_decode_applies(idx, cache)) return decode_raw(idx.cpu().item<int64_t>(), *cache);
  auto x = tok_emb->forward(idx);  // [B, T, C]
  if (pos_emb.defined()) x = x + pos_emb.narrow(0, pos, T);
  set_rope(pos, T, x.device());
  for (int64_t l = 0; l < cfg_.n_layers; ++l) x = blocks_[l]->forward(x, cache, l);
  if (cache) {
    cache->length += T;
    cache->position += T;
  }
  x = ln_f->forward(x);
  return head ? head->forward(x) : torch::linear(x, tok_emb->weight);  // [B, T, V]
}

bool GptImpl::raw_decode_applies(const torch::Tensor& idx, const KvCache* cache) const {
  if (!raw_decode || !cache || idx.size(0) != 1 || idx.size(1) != 1 || at::GradMode::is_enabled() ||
      rope_inv_freq_.defined() || cache->key_mass.defined())
    return false;
  auto plain = [](const torch::Tensor& t) {
    return !t.defined() || (t.is_cpu() && t.scalar_type() == torch::kFloat32 && t.is_contiguous());
  };
  if (!tok_emb->weight.is_cpu() || !plain(tok_emb->weight) || !plain(pos_emb) || !plain(ln_f->weight) || !plain(ln_f->bias))
    return false;
  for (size_t l = 0; l < blocks_.size(); ++l) {
    const auto& b = blocks_[l];
    if (b->attn->probe_mask.defined() || b->attn->head_mask.defined() || b->mlp->neuron_mask.defined() ||
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
  const float* e = tok_emb->weight.data_ptr<float>() + token * C;
  if (pos_emb.defined()) {
    const float* p = pos_emb.data_ptr<float>() + cache.position * C;
    for (int64_t c = 0; c < C; ++c) x[c] = e[c] + p[c];
  } else {
    std::copy_n(e, C, x);
  }
  for (int64_t l = 0; l < cfg_.n_layers; ++l) {
    auto& blk = blocks_[size_t(l)];
    blk->ln1->forward_raw(x, a);
    blk->attn->forward_one_raw(a, cache, l, h);  // h = attn(ln1(x))
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
  else cpu_linear_raw(1, C, V, a, tok_emb->weight.data_ptr<float>(), nullptr, logits.data_ptr<float>());
  return logits;
}

void GptImpl::set_rope(int64_t pos, int64_t T, const torch::Device& device) {
  if (!rope_inv_freq_.defined()) return;
  // HF Llama: freqs = t ⊗ θ^(−2i/hd) in float32, emb = [freqs, freqs].
  auto t = torch::arange(pos, pos + T, torch::kInt64).to(torch::kFloat);  // [T]
  auto freqs = torch::outer(t, rope_inv_freq_);                            // [T, hd/2]
  auto emb = torch::cat({freqs, freqs}, -1);                               // [T, rd]
  auto cos = emb.cos().to(device, tok_emb->weight.scalar_type()), sin = emb.sin().to(device, tok_emb->weight.scalar_type());
  for (auto& b : blocks_) {
    b->attn->rope_cos = cos;
    b->attn->rope_sin = sin;
  }
}

KvCache GptImpl::make_cache(int64_t batch) const {
  KvCache c;
  auto opts = tok_emb->weight.options().requires_grad(false);
  for (int64_t l = 0; l < cfg_.n_layers; ++l) {
    c.k.push_back(torch::empty({batch, cfg_.kv_heads(), cfg_.context, cfg_.head_dim()}, opts));
    c.v.push_back(torch::empty({batch, cfg_.kv_heads(), cfg_.context, cfg_.head_dim()}, opts));
  }
  return c;
}

std::vector<std::vector<int64_t>> GptImpl::compress_cache(KvCache& cache, double keep, int64_t recent) const {
  check(keep > 0 && keep <= 1, "prompt keep fraction must be in (0, 1], got " + std::to_string(keep));
  check(cache.key_mass.defined(), "prompt compression needs the attention mass of the prompt (cache.key_mass)");
  torch::NoGradGuard no_grad;
  const int64_t n = cache.length, B = cache.k.empty() ? 0 : cache.k[0].size(0);
  const int64_t k = std::clamp<int64_t>(int64_t(std::ceil(keep * double(n) - 1e-9)), 1, n);
  std::vector<std::vector<int64_t>> kept(static_cast<size_t>(B));
  if (n == 0) return kept;
  auto mass = cache.key_mass.narrow(1, 0, n).to(torch::kCPU, torch::kFloat64).clone();  // [B, n]
  // The sink and the latest tokens first (infinite mass), then by attention received.
  mass.select(1, 0).fill_(std::numeric_limits<double>::infinity());
  mass.narrow(1, std::max<int64_t>(0, n - recent), std::min(recent, n)).fill_(std::numeric_limits<double>::infinity());
  const auto top = std::get<0>(std::get<1>(mass.topk(k, 1)).sort(1));  // [B, k] ascending slots
  for (int64_t b = 0; b < B; ++b) {
    auto idx = top[b].to(cache.k[0].device());
    for (size_t l = 0; l < cache.k.size(); ++l) {
      cache.k[l][b].narrow(1, 0, k).copy_(cache.k[l][b].narrow(1, 0, n).index_select(1, idx));  // [H, k, hd]
      cache.v[l][b].narrow(1, 0, k).copy_(cache.v[l][b].narrow(1, 0, n).index_select(1, idx));
    }
    auto t = top[b].contiguous();
    kept[size_t(b)].assign(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + k);
  }
  cache.length = k;
  cache.key_mass = torch::Tensor();
  return kept;
}

std::vector<std::pair<std::string, std::shared_ptr<ElasticLinear>>> GptImpl::projections() const {
  std::vector<std::pair<std::string, std::shared_ptr<ElasticLinear>>> out;
  for (size_t l = 0; l < blocks_.size(); ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    const auto& a = blocks_[l]->attn;
    const auto& m = blocks_[l]->mlp;
    out.insert(out.end(), {{p + "attn.q", a->q}, {p + "attn.k", a->k}, {p + "attn.v", a->v}, {p + "attn.o", a->o}});
    if (m->gate_proj) out.emplace_back(p + "mlp.gate", m->gate_proj);
    out.insert(out.end(), {{p + "mlp.up", m->up}, {p + "mlp.down", m->down}});
  }
  if (head) out.emplace_back("head", head);
  return out;
}

template <class F>
void GptImpl::visit_macs(int64_t context_len, F&& f) const {
  check(context_len >= 1 && context_len <= cfg_.context, "MAC count: context length " + std::to_string(context_len) +
                                                             " is outside [1, " + std::to_string(cfg_.context) + "]");
  const int64_t C = cfg_.d_model, H = cfg_.n_heads, hd = cfg_.head_dim();
  for (int64_t l = 0; l < cfg_.n_layers; ++l) {
    const auto& a = blocks_[size_t(l)]->attn;
    const auto& m = blocks_[size_t(l)]->mlp;
    // Head gating runs q and o as gathered dense rows / columns of the active heads only.
    const int64_t kh = a->active_heads().empty() ? H : int64_t(a->active_heads().size());
    f(l, "attn.q", kh == H ? a->q->macs() : kh * hd * C);
    f(l, "attn.k", a->k->macs());
    f(l, "attn.v", a->v->macs());
    // Scores q·k over context_len keys and the weighted sum of v, per active head.
    f(l, "attn.scores", 2 * context_len * kh * hd);
    f(l, "attn.o", kh == H ? a->o->macs() : kh * hd * C);
    if (m->gate) {
      f(l, "mlp.gated", m->gate->macs_estimate());
    } else {
      if (m->gate_proj) f(l, "mlp.gate", m->gate_proj->macs());
      f(l, "mlp.up", m->up->macs());
      f(l, "mlp.down", m->down->macs());
    }
  }
  f(-1, "head", head ? head->macs() : C * cfg_.vocab_size);
}

int64_t GptImpl::macs_per_token(int64_t context_len) const {
  int64_t macs = 0;
  visit_macs(context_len, [&](int64_t, const char*, int64_t n) { macs += n; });
  return macs;
}

int64_t GptImpl::macs_without_gated_mlp(int64_t context_len) const {
  int64_t macs = 0;
  visit_macs(context_len, [&](int64_t, const char* part, int64_t n) {
    if (std::strcmp(part, "mlp.gated") != 0) macs += n;
  });
  return macs;
}

std::vector<std::pair<std::string, int64_t>> GptImpl::mac_breakdown(int64_t context_len) const {
  std::vector<std::pair<std::string, int64_t>> out;
  visit_macs(context_len, [&](int64_t l, const char* part, int64_t n) {
    out.emplace_back(l < 0 ? std::string(part) : "blk." + std::to_string(l) + "." + part, n);
  });
  return out;
}

int64_t GptImpl::parameter_count() const {
  int64_t n = 0;
  for (const auto& p : parameters()) n += p.numel();
  return n;
}

int64_t GptImpl::active_parameter_count() const {
  // Everything that is not a projection, plus each running projection at its budget.
  int64_t n = parameter_count();
  for (const auto& [name, p] : own_)
    for (const auto& t : p->parameters()) n -= t.numel();
  for (const auto& [name, p] : projections()) n += p->params();
  return n;
}

int64_t GptImpl::linear_macs_per_token() const {
  int64_t macs = 0;
  for (const auto& [name, p] : projections()) macs += p->macs();
  return macs;
}

void GptImpl::set_variant(const std::string& name, LinearKind kind, std::shared_ptr<ElasticLinear> layer) {
  bool known = false;
  for (const auto& [n, p] : own_)
    if (n == name) {
      known = true;
      check(layer && layer->in_features() == p->in_features() && layer->out_features() == p->out_features(),
            "variant of '" + name + "' has the wrong shape");
    }
  check(known, "no projection named '" + name + "'");
  variants_[name][kind] = std::move(layer);
}

bool GptImpl::has_variant(const std::string& name, LinearKind kind) const {
  auto it = variants_.find(name);
  return it != variants_.end() && it->second.count(kind) > 0;
}

std::pair<int64_t, int64_t> GptImpl::elastic_limits() const {
  int64_t rank = 0, bond = 0;
  auto see = [&](const ElasticLinear& p) {
    rank = std::max(rank, p.max_rank());
    bond = std::max(bond, p.max_bond());
  };
  for (const auto& [name, p] : own_) see(*p);
  for (const auto& [name, kinds] : variants_)
    for (const auto& [kind, p] : kinds) see(*p);
  return {rank, bond};
}

std::vector<std::vector<int64_t>> GptImpl::active_heads() const {
  std::vector<std::vector<int64_t>> out;
  for (const auto& b : blocks_) {
    auto h = b->attn->active_heads();
    if (h.empty())
      for (int64_t i = 0; i < cfg_.n_heads; ++i) h.push_back(i);
    out.push_back(std::move(h));
  }
  return out;
}

void GptImpl::clear_variants() {
  for (const auto& [name, p] : own_) install(name, p);
  variants_.clear();
}

std::vector<std::pair<std::string, std::shared_ptr<ElasticLinear>>> GptImpl::own_projections() const { return own_; }

std::vector<std::pair<std::string, std::shared_ptr<ElasticLinear>>> GptImpl::planned(const Budget& budget) const {
  for (const auto& [key, kind] : budget.kind) {
    bool known = key == "attn" || key == "mlp" || key == "head";
    for (const auto& f : projection_families()) known |= key == f;
    check(known, "budget: unknown projection family '" + key + "' (use attn, mlp, head or one of attn.q ... mlp.down)");
  }
  auto out = own_;
  for (auto& [name, layer] : out) {
    const std::string family = projection_family(name);
    const LinearKind own = own_kind(family), want = budget.kind_for(family, own);
    if (want == own) continue;
    auto v = variants_.find(name);
    check(v != variants_.end() && v->second.count(want),
          std::string("budget: '") + name + "' has no " + linear_kind_name(want) + " variant (build the model's variants first)");
    layer = v->second.at(want);
  }
  return out;
}

void GptImpl::install(const std::string& name, const std::shared_ptr<ElasticLinear>& layer) {
  if (name == "head") {
    head = layer;
    return;
  }
  const int64_t l = std::stoll(name.substr(4, name.find('.', 4) - 4));
  const std::string family = projection_family(name);
  auto& a = blocks_[size_t(l)]->attn;
  auto& m = blocks_[size_t(l)]->mlp;
  if (family == "attn.q") a->q = layer;
  else if (family == "attn.k") a->k = layer;
  else if (family == "attn.v") a->v = layer;
  else if (family == "attn.o") a->o = layer;
  else if (family == "mlp.up") m->up = layer;
  else if (family == "mlp.gate" && m->gate_proj) m->gate_proj = layer;
  else if (family == "mlp.down") m->down = layer;
  else throw Error("no projection slot '" + name + "'");
}

void GptImpl::apply_budget(const Budget& budget) {
  check(budget.prompt_keep > 0 && budget.prompt_keep <= 1,
        "prompt keep fraction must be in (0, 1], got " + std::to_string(budget.prompt_keep));
  check(budget.mac_target >= 0 && budget.mac_target <= 1,
        "MAC target must be a fraction in (0, 1] (0 = off), got " + std::to_string(budget.mac_target));
  for (const auto& [l, h] : budget.heads_off)
    check(l >= 0 && l < cfg_.n_layers && h >= 0 && h < cfg_.n_heads,
          "ablation: head (" + std::to_string(l) + ", " + std::to_string(h) + ") is outside " +
              std::to_string(cfg_.n_layers) + " layers × " + std::to_string(cfg_.n_heads) + " heads");
  for (const auto& [l, b] : budget.blocks_off)
    check(l >= 0 && l < cfg_.n_layers && b >= 0 && (b + 1) * Budget::kAblationBlock <= cfg_.d_ff,
          "ablation: neuron block (" + std::to_string(l) + ", " + std::to_string(b) + ") is outside " +
              std::to_string(cfg_.n_layers) + " layers × " + std::to_string(cfg_.d_ff / Budget::kAblationBlock) +
              " blocks of " + std::to_string(Budget::kAblationBlock));
  for (const auto& [l, h] : budget.heads_on)
    check(l >= 0 && l < cfg_.n_layers && h >= 0 && h < cfg_.n_heads,
          "forced-on head (" + std::to_string(l) + ", " + std::to_string(h) + ") is outside the model");
  for (const auto& [l, b] : budget.blocks_on)
    check(budget.gate.policy != GatePolicy::Off && l >= 0 && l < cfg_.n_layers && b >= 0 &&
              b < cfg_.d_ff / std::max<int64_t>(1, budget.gate.block),
          "forced-on block (" + std::to_string(l) + ", " + std::to_string(b) +
              ") needs the gate on and a block index of the gate's order");
  for (const auto& [l, b] : budget.gate_blocks_off)
    check(budget.gate.policy != GatePolicy::Off && l >= 0 && l < cfg_.n_layers && b >= 0 &&
              b < cfg_.d_ff / std::max<int64_t>(1, budget.gate.block) && !budget.blocks_on.count({l, b}),
          "forced-off gate block (" + std::to_string(l) + ", " + std::to_string(b) +
              ") needs the gate on, a block index of the gate's order and not the same block forced on");
  const auto layers = planned(budget);
  int64_t largest = 0;
  for (const auto& [name, p] : layers) largest = std::max(largest, p->max_rank());
  check(budget.rank >= 0, "rank must be >= 1 (or 0 for full rank), got " + std::to_string(budget.rank));
  check(budget.rank == 0 || largest > 0, "this model has no rank-elastic (NSN) layers; convert it first");
  check(budget.rank <= largest, "rank " + std::to_string(budget.rank) + " is outside [1, " + std::to_string(largest) +
                                    "], the largest NSN rank of this model");
  int64_t largest_bond = 0;
  for (const auto& [name, p] : layers) largest_bond = std::max(largest_bond, p->max_bond());
  check(budget.bond >= 0, "bond dimension must be >= 1 (or 0 for full), got " + std::to_string(budget.bond));
  check(budget.bond == 0 || largest_bond > 0, "this model has no bond-elastic (MPO) layers; convert it first");
  check(budget.bond <= largest_bond, "bond dimension " + std::to_string(budget.bond) + " is outside [1, " +
                                         std::to_string(largest_bond) + "], the largest χ of this model");
  std::vector<int64_t> ranks;  // validate everything before changing anything
  for (const auto& [name, p] : layers) {
    int64_t r = p->max_rank() == 0 ? 0 : (budget.rank == 0 ? p->max_rank() : std::min(budget.rank, p->max_rank()));
    if (auto it = budget.layer_rank.find(name); it != budget.layer_rank.end()) {
      check(p->max_rank() > 0, "layer '" + name + "' is not rank-elastic");
      check(it->second >= 1 && it->second <= p->max_rank(), "rank " + std::to_string(it->second) + " of layer '" +
                                                                name + "' is outside [1, " +
                                                                std::to_string(p->max_rank()) + "]");
      r = it->second;
    }
    ranks.push_back(r);
  }
  for (const auto& [name, r] : budget.layer_rank) {
    bool known = false;
    for (const auto& l : layers) known |= l.first == name;
    check(known, "budget names an unknown layer '" + name + "'");
  }
  check(budget.gate.head_active > 0 && budget.gate.head_active <= 1,
        "gate: head active fraction must be in (0, 1], got " + std::to_string(budget.gate.head_active));
  check(budget.gate.head_active == 1 || heads_calibrated(),
        "gate: head gating needs a calibration text first (knockout probes)");
  check(budget.gate.head_reprobe >= 0 && budget.gate.head_reprobe <= 1,
        "gate: head re-probe entropy threshold must be in [0, 1] (0 = never), got " +
            std::to_string(budget.gate.head_reprobe));
  check(budget.gate.head_reprobe_cooldown >= 1,
        "gate: head re-probe cooldown must be at least 1 token, got " + std::to_string(budget.gate.head_reprobe_cooldown));
  check(budget.gate.head_probes == 0 || budget.gate.head_probes >= 2,
        "gate: head probes must be 0 (= 2·layers·heads) or at least 2, got " + std::to_string(budget.gate.head_probes));
  if (budget.gate.policy != GatePolicy::Off) {
    const auto& g = budget.gate;
    check(g.active > 0 && g.active <= 1, "gate: active fraction must be in (0, 1], got " + std::to_string(g.active));
    check(g.block >= 1 && cfg_.d_ff % g.block == 0, "gate: block size " + std::to_string(g.block) +
                                                         " does not divide the MLP width " + std::to_string(cfg_.d_ff));
    const int64_t n = cfg_.d_ff / g.block;
    const int64_t k = std::clamp<int64_t>(std::llround(g.active * double(n)), 1, n);
    check_gate_sizes(cfg_.d_ff, g.block, k, g.measurements > 0 ? g.measurements : default_measurements(cfg_.d_ff));
    check(g.iters >= 1 && g.iters <= 50, "gate: IHT iterations must be in [1, 50], got " + std::to_string(g.iters));
    const bool mmse = g.policy == GatePolicy::Sensing && g.recovery == Recovery::Mmse;
    const bool pca = g.policy == GatePolicy::Sensing && g.measurement == MeasurementKind::Pca;
    const char* what = g.clustered ? "clustered neuron order" : g.policy == GatePolicy::Static ? "static policy"
                                                            : mmse ? "MMSE recovery" : "PCA measurement";
    check((g.policy != GatePolicy::Static && !g.clustered && !mmse && !pca) || gate_calibrated(g.block),
          std::string("gate: the ") + what + " needs a calibration text at block size " + std::to_string(g.block) +
              " first");
  }
  for (size_t i = 0; i < layers.size(); ++i) {
    install(layers[i].first, layers[i].second);
    auto& p = *layers[i].second;
    if (ranks[i] > 0) p.set_rank(ranks[i]);
    if (p.max_bond() > 0) p.set_bond(budget.bond == 0 ? p.max_bond() : std::min(budget.bond, p.max_bond()));
  }
  gate_ = budget.gate;
  prompt_keep_ = budget.prompt_keep;
  heads_on_ = budget.heads_on;
  blocks_on_ = budget.blocks_on;
  gate_blocks_off_ = budget.gate_blocks_off;
  const auto dev = tok_emb->weight.device();
  for (int64_t l = 0; l < cfg_.n_layers; ++l) {
    auto& b = blocks_[size_t(l)];
    b->attn->head_mask = b->mlp->neuron_mask = torch::Tensor();
    for (const auto& [layer, h] : budget.heads_off)
      if (layer == l) {
        if (!b->attn->head_mask.defined()) b->attn->head_mask = torch::ones({cfg_.n_heads}, torch::TensorOptions().device(dev));
        b->attn->head_mask[h] = 0;
      }
    for (const auto& [layer, k] : budget.blocks_off)
      if (layer == l) {
        if (!b->mlp->neuron_mask.defined()) b->mlp->neuron_mask = torch::ones({cfg_.d_ff}, torch::TensorOptions().device(dev));
        b->mlp->neuron_mask.narrow(0, k * Budget::kAblationBlock, Budget::kAblationBlock).zero_();
      }
  }
  rebuild_gates();
}

void GptImpl::apply_head_support() {
  torch::NoGradGuard no_grad;
  if (gate_.head_active >= 1 || !head_importance_.defined()) return clear_head_support();
  // Heads: the top by probed importance (whole heads), per layer or model-wide (GateOptions).
  auto keep = head_support(head_importance_, gate_.head_active, gate_.head_global);
  for (int64_t l = 0; l < cfg_.n_layers; ++l) {
    auto& heads = keep[size_t(l)];
    for (const auto& [layer, h] : heads_on_)  // forced on
      if (layer == l && std::find(heads.begin(), heads.end(), h) == heads.end()) heads.push_back(h);
    std::sort(heads.begin(), heads.end());
    blocks_[size_t(l)]->attn->set_active_heads(heads);
  }
}

void GptImpl::clear_head_support() {
  for (auto& b : blocks_) b->attn->set_active_heads({});
}

void GptImpl::rebuild_gates() {
  torch::NoGradGuard no_grad;
  apply_head_support();
  for (int64_t l = 0; l < cfg_.n_layers; ++l) {
    auto& mlp = blocks_[size_t(l)]->mlp;
    if (gate_.policy == GatePolicy::Off) {
      mlp->gate.reset();
      continue;
    }
    // The weights at the current rank / χ: the gate composes with NSN and MPO budgets. A gated MLP
    // senses its activated projection (mlp.gate) and multiplies in mlp.up for the chosen blocks.
    // Ablated neurons: their rows, biases and down columns zeroed (act(0) = 0 for every activation).
    const auto& sensed = mlp->gate_proj ? mlp->gate_proj : mlp->up;
    auto up_w = sensed->to_dense(), up_b = sensed->bias(), down_w = mlp->down->to_dense();
    torch::Tensor mul_w, mul_b;
    if (mlp->gate_proj) mul_w = mlp->up->to_dense(), mul_b = mlp->up->bias();
    if (mlp->neuron_mask.defined()) {
      const auto m = mlp->neuron_mask.to(up_w.options());
      up_w = up_w * m.unsqueeze(1);
      down_w = down_w * m.unsqueeze(0);
      if (up_b.defined()) up_b = up_b * m;
      if (mul_w.defined()) mul_w = mul_w * m.unsqueeze(1);
      if (mul_b.defined()) mul_b = mul_b * m;
    }
    mlp->gate = std::make_shared<MlpGate>(up_w, up_b, down_w,
                                          mlp->down->bias(), cfg_.activation, gate_, l,
                                          gate_.clustered ? neuron_order_[size_t(l)] : std::vector<int64_t>{},
                                          prior_.empty() ? nullptr : prior_[size_t(l)].get(), mul_w, mul_b);
    if (gate_.policy == GatePolicy::Static) mlp->gate->set_static_energy(neuron_energy_[size_t(l)]);
    std::vector<int64_t> forced;
    for (const auto& [layer, b] : blocks_on_)
      if (layer == l) forced.push_back(b);
    mlp->gate->set_forced_on(std::move(forced));
    std::vector<int64_t> off;
    for (const auto& [layer, b] : gate_blocks_off_)
      if (layer == l) off.push_back(b);
    mlp->gate->set_forced_off(std::move(off));
  }
}

void GptImpl::set_gate_trace(std::vector<std::vector<MlpGateTrace>>* sink, bool with_oracle) {
  if (sink) sink->resize(size_t(cfg_.n_layers));
  for (int64_t l = 0; l < cfg_.n_layers; ++l) {
    blocks_[size_t(l)]->mlp->trace = sink ? &(*sink)[size_t(l)] : nullptr;
    blocks_[size_t(l)]->mlp->trace_oracle = sink != nullptr && with_oracle;
  }
}

void GptImpl::set_head_importance(const torch::Tensor& importance) {
  check(importance.dim() == 2 && importance.size(0) == cfg_.n_layers && importance.size(1) == cfg_.n_heads,
        "head importance must be [layers, heads]");
  head_importance_ = importance.detach().to(torch::kCPU, torch::kFloat64).clone();
}

void GptImpl::set_head_probe_masks(const torch::Tensor& masks) {
  check(!masks.defined() || (masks.dim() == 3 && masks.size(1) == cfg_.n_layers && masks.size(2) == cfg_.n_heads),
        "head probe masks must be [batch, layers, heads]");
  for (const auto& b : blocks_)
    check(!masks.defined() || b->attn->active_heads().empty(),
          "head probes run with every head: clear the head budget first");
  for (int64_t l = 0; l < cfg_.n_layers; ++l)
    blocks_[size_t(l)]->attn->probe_mask = masks.defined() ? masks.select(1, l) : torch::Tensor();
}

void GptImpl::set_prompt_keep(double keep) {
  check(keep > 0 && keep <= 1, "prompt keep fraction must be in (0, 1], got " + std::to_string(keep));
  prompt_keep_ = keep;
}

void GptImpl::set_gate_uncertainty(double h) {
  for (auto& b : blocks_)
    if (b->mlp->gate) b->mlp->gate->set_uncertainty(h);
}

void GptImpl::set_train_block_support(double active, int64_t block, int64_t sensing) {
  check(sensing >= 0, "sensing-aware training needs m >= 0 measurements, got " + std::to_string(sensing));
  check(active > 0 && active <= 1, "MLP block active fraction must be in (0, 1]");
  check(active == 1 || (block >= 1 && cfg_.d_ff % block == 0),
        "MLP block size " + std::to_string(block) + " does not divide the MLP width " + std::to_string(cfg_.d_ff));
  for (auto& b : blocks_) {
    b->mlp->train_active = active;
    b->mlp->train_block = block;
    b->mlp->train_sensing = sensing;
  }
}

void GptImpl::set_train_head_support(double active) {
  check(active > 0 && active <= 1, "head active fraction must be in (0, 1]");
  for (auto& b : blocks_) b->attn->train_head_active = active;
}

void GptImpl::set_gate_stats(GateStats* stats) {
  for (auto& b : blocks_) b->mlp->stats = stats;
}

std::vector<MlpSample> GptImpl::mlp_samples(const torch::Tensor& idx) {
  check(idx.dim() == 2 && idx.size(1) > 0 && idx.size(1) <= cfg_.context,
        "calibration input must be [B, T] with T in [1, context]");
  torch::NoGradGuard no_grad;
  std::vector<MlpSample> out;
  // The dense forward of BlockImpl::forward, keeping each MLP's input and activations.
  auto x = tok_emb->forward(idx);  // [B, T, C]
  if (pos_emb.defined()) x = x + pos_emb.narrow(0, 0, idx.size(1));
  set_rope(0, idx.size(1), x.device());
  for (int64_t l = 0; l < cfg_.n_layers; ++l) {
    auto& b = blocks_[size_t(l)];
    auto h = x + b->attn->forward(b->ln1->forward(x), nullptr, l);
    auto u = b->ln2->forward(b->parallel ? x : h);                     // [B, T, C]
    auto z = b->mlp->hidden(u);                                       // [B, T, N]
    out.push_back({u.reshape({-1, cfg_.d_model}).to(torch::kCPU, torch::kFloat32),
                   z.reshape({-1, cfg_.d_ff}).to(torch::kCPU, torch::kFloat32)});
    x = h + b->mlp->down->forward(z);
  }
  return out;
}

void GptImpl::calibrate_gate(const std::vector<MlpSample>& samples, int64_t block, uint64_t seed,
                             int64_t support_rows) {
  check(int64_t(samples.size()) == cfg_.n_layers, "gate calibration: one sample per layer expected");
  check(block >= 1 && cfg_.d_ff % block == 0, "gate: block size " + std::to_string(block) +
                                                   " does not divide the MLP width " + std::to_string(cfg_.d_ff));
  std::vector<torch::Tensor> energy;
  std::vector<std::vector<int64_t>> order;
  std::vector<std::shared_ptr<GatePrior>> prior;
  for (const auto& s : samples) {
    check(s.acts.dim() == 2 && s.acts.size(1) == cfg_.d_ff && s.acts.size(0) > 0 && s.inputs.dim() == 2 &&
              s.inputs.size(0) == s.acts.size(0) && s.inputs.size(1) == cfg_.d_model,
          "gate calibration: samples must be inputs [T, C] and activations [T, N]");
    const auto acts = support_rows > 0 ? s.acts.narrow(0, 0, std::min(support_rows, s.acts.size(0))) : s.acts;
    energy.push_back(acts.to(torch::kFloat64).square().mean(0));  // [N]
    order.push_back(coactivation_order(acts, block, seed));
    auto x = s.inputs.to(torch::kFloat64);                           // [T, C]
    auto mean = x.mean(0);                                           // [C]
    auto centred = x - mean;
    auto cov = centred.t().mm(centred) / double(std::max<int64_t>(1, x.size(0) - 1));  // [C, C]
    prior.push_back(std::make_shared<GatePrior>(GatePrior{mean, cov}));
  }
  neuron_energy_ = std::move(energy);
  neuron_order_ = std::move(order);
  prior_ = std::move(prior);
  calib_block_ = block;
}

}  // namespace nestscope
