#include "core/model/transformer.h"
#include "core/model/causal_attention.h"

#include <cstdlib>
#include <numeric>

#include "core/error.h"
#include "core/gate/block_recovery.h"
#include "core/gate/mlp_gate.h"
#include "core/layers/cpu_gemm.h"
#include "core/model/linear_factory.h"
#include "core/layers/weight_init.h"

namespace nestscope {

torch::Tensor sinusoidal_positions(int64_t context, int64_t channels) {
  // PE[t, 2i] = sin(t / 10000^(2i/C)), PE[t, 2i+1] = cos(t / 10000^(2i/C))
  auto t = torch::arange(context, torch::kFloat).unsqueeze(1);                    // [T, 1]
  auto i2 = torch::arange(0, channels, 2, torch::kFloat);                          // [C/2]
  auto freq = torch::exp(i2 * (-std::log(10000.0) / static_cast<double>(channels)));  // [C/2]
  auto angle = t * freq;                                                            // [T, C/2]
  return torch::stack({torch::sin(angle), torch::cos(angle)}, 2).reshape({context, channels});
}

NormLayerImpl::NormLayerImpl(const ModelConfig& cfg) : kind_(cfg.norm), eps_(cfg.ln_eps) {
  weight = register_parameter("weight", torch::ones({cfg.d_model}));
  if (kind_ == Norm::LayerNorm) bias = register_parameter("bias", torch::zeros({cfg.d_model}));
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

CausalSelfAttentionImpl::CausalSelfAttentionImpl(const ModelConfig& cfg, int64_t layer)
    : layer_(layer), n_heads_(cfg.n_heads), n_kv_(cfg.kv_heads()) {
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

torch::Tensor CausalSelfAttentionImpl::forward(const torch::Tensor& x, KvCache* cache) {
  const int64_t layer = layer_;
  const int64_t B = x.size(0), T = x.size(1), C = x.size(2), hd = C / n_heads_;
  const bool gated = !heads_.empty() && !at::GradMode::is_enabled();
  const int64_t H = gated ? int64_t(heads_.size()) : n_heads_;  // heads that run
  auto split = [&](const torch::Tensor& t, int64_t h) { return t.view({B, T, h, hd}).transpose(1, 2); };
  auto qh = gated ? split(torch::linear(x, wq_, bq_), H) : split(q->forward(x), H);  // [B, H, T, hd]
  auto kh = split(k->forward(x), n_kv_);  // [B, KVH, T, hd]
  auto vh = split(v->forward(x), n_kv_);  // [B, KVH, T, hd]
  if (rope_cos_.defined()) {  // positions enter q and k by rotation; cached keys stay rotated
    qh = rotate(qh, rope_cos_, rope_sin_);
    kh = rotate(kh, rope_cos_, rope_sin_);
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
      !cache->key_mass.defined() && !hook_ && cache->k[layer].is_contiguous() &&
      cache->v[layer].is_contiguous()) {
    // Batch-1 decode: one query per head against the cached keys, in plain loops — the ATen ops
    // of the general path below (two matmuls, scale, softmax, transposes) cost more in dispatch
    // than their arithmetic at this size. Same result (tested against the full forward).
    auto y = torch::empty({1, 1, H * hd});
    attend_one(qh.contiguous().data_ptr<float>(), cache->k[layer].data_ptr<float>(), cache->v[layer].data_ptr<float>(),
               cache->k[layer].size(2), past + 1, H, hd, y.data_ptr<float>());
    if (head_mask_.defined()) {
      auto m = (gated ? head_mask_.index_select(0, head_index_.to(head_mask_.device())) : head_mask_).to(torch::kFloat32).cpu();
      y = y * m.repeat_interleave(hd).view({1, 1, H * hd});
    }
    return gated ? torch::linear(y, wo_, o->bias()) : o->forward(y);
  }
  if (kv_index_.defined()) {  // each running query head's key/value head (GQA groups, head gating)
    const auto idx = kv_index_.to(kh.device());
    kh = kh.index_select(1, idx);  // [B, H, L, hd]
    vh = vh.index_select(1, idx);
  }
  auto yh = causal_attention(qh, kh, vh, past, cache ? cache->key_mass : torch::Tensor());  // [B, H, T, hd]
  if (hook_) yh = (*hook_)("attn.heads", layer, yh);  // probes, head-aware training
  if (head_mask_.defined()) {  // ablated heads contribute nothing
    auto m = gated ? head_mask_.index_select(0, head_index_.to(head_mask_.device())) : head_mask_;
    yh = yh * m.to(yh.options()).view({1, H, 1, 1});
  }
  auto y = yh.transpose(1, 2).reshape({B, T, H * hd});  // [B, T, H·hd]
  return gated ? torch::linear(y, wo_, o->bias()) : o->forward(y);
}

MlpImpl::MlpImpl(const ModelConfig& cfg, int64_t layer) : layer_(layer), activation_(cfg.activation) {
  if (cfg.gated_mlp) gate_proj = register_module("gate", make_linear(cfg, "mlp.gate"));
  up = register_module("up", make_linear(cfg, "mlp.up"));
  down = register_module("down", make_linear(cfg, "mlp.down"));
}

torch::Tensor MlpImpl::hidden(const torch::Tensor& x) {
  return gate_proj ? activate(gate_proj->forward(x), activation_) * up->forward(x) : activate(up->forward(x), activation_);
}

torch::Tensor MlpImpl::forward(const torch::Tensor& x) {
  if (gate_ && !at::GradMode::is_enabled()) {
    gate_->trace_oracle = trace_oracle_;
    return gate_->forward(x, trace_, stats_);
  }
  auto h = hidden(hook_ ? (*hook_)("mlp.in", layer_, x) : x);  // [B, T, N]
  if (hook_) h = (*hook_)("mlp.hidden", layer_, h);             // calibration, gate-aware training
  if (neuron_mask_.defined()) h = h * neuron_mask_.to(h.options());  // ablated neurons off
  return down->forward(h);  // [B, T, C]
}

torch::Tensor MlpImpl::sensed_hidden(const torch::Tensor& x, int64_t m) const {
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

BlockImpl::BlockImpl(const ModelConfig& cfg, int64_t layer) : parallel(cfg.parallel_residual) {
  ln1 = register_module("ln1", NormLayer(cfg));
  attn = register_module("attn", CausalSelfAttention(cfg, layer));
  ln2 = register_module("ln2", NormLayer(cfg));
  mlp = register_module("mlp", Mlp(cfg, layer));
}

torch::Tensor BlockImpl::forward(const torch::Tensor& x, KvCache* cache) {
  auto h = x + attn->forward(ln1->forward(x), cache);     // [B, T, C]
  return h + mlp->forward(ln2->forward(parallel ? x : h));  // parallel: both read the block's input
}

namespace {

// N(0, init_std²), drawn as torch::nn::Embedding's own N(0, 1) initialisation followed by our
// re-draw always were, so a seeded model from scratch keeps its weights.
torch::Tensor embedding_weight(const ModelConfig& cfg) {
  if (SkipWeightInit::active()) return torch::empty({cfg.vocab_size, cfg.d_model});
  torch::NoGradGuard no_grad;
  return torch::empty({cfg.vocab_size, cfg.d_model}).normal_(0.0, 1.0).normal_(0.0, cfg.init_std);
}

}  // namespace

GptImpl::GptImpl(const ModelConfig& cfg) : cfg_(cfg) {
  cfg_.validate();
  if (const char* env = std::getenv("NESTSCOPE_RAW_DECODE")) raw_decode = std::string(env) != "0";
  tok_emb = register_module(
      "tok_emb", torch::nn::Embedding(torch::nn::EmbeddingOptions(cfg.vocab_size, cfg.d_model)
                                          ._weight(embedding_weight(cfg))));
  torch::NoGradGuard no_grad;
  if (cfg.position == PositionEncoding::Learned) {
    pos_emb = register_parameter("pos_emb", random_weight({cfg.context, cfg.d_model}, cfg.init_std));
  } else if (cfg.position == PositionEncoding::Sinusoidal) {
    pos_emb = register_buffer("pos_sin", sinusoidal_positions(cfg.context, cfg.d_model));
  } else {
    const int64_t rd = cfg.rotary_dims();
    rope_inv_freq_ = 1.0 / torch::pow(cfg.rope_theta, torch::arange(0, rd, 2, torch::kInt64).to(torch::kFloat) / double(rd));  // [rd/2]
  }
  blk = register_module("blk", torch::nn::ModuleList());
  for (int64_t l = 0; l < cfg.n_layers; ++l) {
    blocks_.push_back(Block(cfg, l));
    blk->push_back(blocks_.back());
  }
  ln_f = register_module("ln_f", NormLayer(cfg));
  if (!cfg.tied_head) head = register_module("head", make_linear(cfg, "head"));
  own_ = projections();
}

torch::Tensor GptImpl::forward(const torch::Tensor& idx, KvCache* cache, bool last_only) {
  check(idx.dim() == 2, "model input must be [batch, time] token ids");
  const int64_t T = idx.size(1);
  const int64_t pos = cache ? cache->position : 0;  // absolute position of idx[:, 0]
  check(T > 0, "model input is empty");
  check(pos + T <= cfg_.context, "sequence of " + std::to_string(pos + T) + " tokens exceeds the model's context of " +
                                     std::to_string(cfg_.context) +
                                     (cfg_.sliding_window > 0 ? " (its sliding attention window: a longer sequence would "
                                                                "attend differently and is not supported)"
                                                              : ""));
  if (raw_decode_applies(idx, cache)) return decode_raw(idx.cpu().item<int64_t>(), *cache);
  auto x = tok_emb->forward(idx);  // [B, T, C]
  if (x.scalar_type() != ln_f->weight.scalar_type()) x = x.to(ln_f->weight.scalar_type());  // bfloat16 storage
  if (pos_emb.defined()) x = x + pos_emb.narrow(0, pos, T);
  set_rope(pos, T, x.device());
  for (auto& b : blocks_) x = b->forward(x, cache);
  if (cache) {
    cache->length += T;
    cache->position += T;
  }
  if (last_only && T > 1) x = x.narrow(1, T - 1, 1);
  x = ln_f->forward(x);
  return head ? head->forward(x) : linear_any(x, tok_emb->weight, {});  // [B, T or 1, V]
}

void GptImpl::set_rope(int64_t pos, int64_t T, const torch::Device& device) {
  if (!rope_inv_freq_.defined()) return;
  // HF Llama: freqs = t ⊗ θ^(−2i/hd) in float32, emb = [freqs, freqs].
  auto t = torch::arange(pos, pos + T, torch::kInt64).to(torch::kFloat);  // [T]
  auto freqs = torch::outer(t, rope_inv_freq_);                            // [T, hd/2]
  auto emb = torch::cat({freqs, freqs}, -1);                               // [T, rd]
  const auto dtype = ln_f->weight.scalar_type();  // the activations' (weights may be bfloat16)
  auto cos = emb.cos().to(device, dtype), sin = emb.sin().to(device, dtype);
  for (auto& b : blocks_) {
    b->attn->rope_cos_ = cos;
    b->attn->rope_sin_ = sin;
  }
}

void GptImpl::set_weight_storage(torch::ScalarType dtype, bool keep_values) {
  check(dtype == torch::kFloat32 || dtype == torch::kBFloat16, "weights can be stored as float32 or bfloat16 only");
  torch::NoGradGuard no_grad;
  for (const auto& [name, layer] : own_) layer->set_storage(dtype, keep_values);
  store_as(tok_emb->weight, dtype, keep_values);
}

KvCache GptImpl::make_cache(int64_t batch) const {
  KvCache c;
  auto opts = ln_f->weight.options().requires_grad(false);  // activations' dtype, the model's device
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

int64_t GptImpl::parameter_count() const {
  int64_t n = 0;
  for (const auto& p : parameters()) n += p.numel();
  return n;
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

std::vector<std::pair<std::string, std::shared_ptr<ElasticLinear>>> GptImpl::planned(const Budget& budget) const {
  for (const auto& [key, kind] : budget.kind) {
    bool known = key == "attn" || key == "mlp" || key == "head";
    for (const auto& f : projection_families()) known |= key == f;
    check(known, "budget: unknown projection family '" + key + "' (use attn, mlp, head or one of attn.q ... mlp.down)");
  }
  auto out = own_;
  // A tied head has no projection of its own; a budget may still run it as a variant built from
  // the embedding (then it is a projection until a budget without it).
  if (cfg_.tied_head && budget.kind_for("head", LinearKind::Dense) != LinearKind::Dense) out.emplace_back("head", nullptr);
  for (auto& [name, layer] : out) {
    const std::string family = projection_family(name);
    const LinearKind own = own_kind(family), want = budget.kind_for(family, own);
    if (want == own) continue;
    auto v = variants_.get(name, want);
    check(v != nullptr,
          std::string("budget: '") + name + "' has no " + linear_kind_name(want) + " variant (build the model's variants first)");
    layer = std::move(v);
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

void GptImpl::apply_budget(const Budget& asked) {
  Budget budget = asked;  // the gate's block resolved for this MLP width (gate_block)
  budget.gate.block = gate_block(budget.gate.block, cfg_.d_ff);
  const auto layers = planned(budget);
  std::vector<std::pair<std::string, const ElasticLinear*>> views;
  for (const auto& [name, p] : layers) views.emplace_back(name, p.get());
  // Everything is checked before anything changes.
  const auto ranks = check_budget(budget, cfg_, views, calib_.heads_ready(), calib_.mlp_block());
  if (cfg_.tied_head) head = nullptr;  // back to the embedding unless this budget installs a variant
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
  set_ablation(budget);
  rebuild_gates();
}

void GptImpl::set_ablation(const Budget& budget) {
  const auto dev = tok_emb->weight.device();
  for (int64_t l = 0; l < cfg_.n_layers; ++l) {
    auto& b = blocks_[size_t(l)];
    b->attn->head_mask_ = b->mlp->neuron_mask_ = torch::Tensor();
    for (const auto& [layer, h] : budget.heads_off)
      if (layer == l) {
        if (!b->attn->head_mask_.defined()) b->attn->head_mask_ = torch::ones({cfg_.n_heads}, torch::TensorOptions().device(dev));
        b->attn->head_mask_[h] = 0;
      }
    for (const auto& [layer, k] : budget.blocks_off)
      if (layer == l) {
        if (!b->mlp->neuron_mask_.defined()) b->mlp->neuron_mask_ = torch::ones({cfg_.d_ff}, torch::TensorOptions().device(dev));
        b->mlp->neuron_mask_.narrow(0, k * Budget::kAblationBlock, Budget::kAblationBlock).zero_();
      }
  }
}

void GptImpl::apply_head_support() {
  torch::NoGradGuard no_grad;
  if (gate_.head_active >= 1 || !calib_.head_importance.defined()) return clear_head_support();
  // Heads: the top by probed importance (whole heads), per layer or model-wide (GateOptions).
  auto keep = head_support(calib_.head_importance, gate_.head_active, gate_.head_global);
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
      mlp->gate_.reset();
      continue;
    }
    // The weights at the current rank / χ: the gate composes with NSN and MPO budgets. A gated MLP
    // senses its activated projection (mlp.gate) and multiplies in mlp.up for the chosen blocks.
    // Ablated neurons: their rows, biases and down columns zeroed (act(0) = 0 for every activation).
    const auto& sensed = mlp->gate_proj ? mlp->gate_proj : mlp->up;
    auto up_w = sensed->to_dense(), up_b = sensed->bias(), down_w = mlp->down->to_dense();
    torch::Tensor mul_w, mul_b;
    if (mlp->gate_proj) mul_w = mlp->up->to_dense(), mul_b = mlp->up->bias();
    if (mlp->neuron_mask_.defined()) {
      const auto m = mlp->neuron_mask_.to(up_w.options());
      up_w = up_w * m.unsqueeze(1);
      down_w = down_w * m.unsqueeze(0);
      if (up_b.defined()) up_b = up_b * m;
      if (mul_w.defined()) mul_w = mul_w * m.unsqueeze(1);
      if (mul_b.defined()) mul_b = mul_b * m;
    }
    mlp->gate_ = std::make_shared<MlpGate>(up_w, up_b, down_w, mlp->down->bias(), cfg_.activation, gate_, l,
                                           gate_.clustered ? calib_.neuron_order[size_t(l)] : std::vector<int64_t>{},
                                           calib_.prior.empty() ? nullptr : calib_.prior[size_t(l)].get(), mul_w, mul_b);
    if (gate_.policy == GatePolicy::Static) mlp->gate_->set_static_energy(calib_.neuron_energy[size_t(l)]);
    std::vector<int64_t> forced;
    for (const auto& [layer, b] : blocks_on_)
      if (layer == l) forced.push_back(b);
    mlp->gate_->set_forced_on(std::move(forced));
    std::vector<int64_t> off;
    for (const auto& [layer, b] : gate_blocks_off_)
      if (layer == l) off.push_back(b);
    mlp->gate_->set_forced_off(std::move(off));
  }
}

void GptImpl::set_gate_trace(std::vector<std::vector<MlpGateTrace>>* sink, bool with_oracle) {
  if (sink) sink->resize(size_t(cfg_.n_layers));
  for (int64_t l = 0; l < cfg_.n_layers; ++l) {
    blocks_[size_t(l)]->mlp->trace_ = sink ? &(*sink)[size_t(l)] : nullptr;
    blocks_[size_t(l)]->mlp->trace_oracle_ = sink != nullptr && with_oracle;
  }
}

void GptImpl::set_gate_stats(GateStats* stats) {
  for (auto& b : blocks_) b->mlp->stats_ = stats;
}

void GptImpl::set_gate_uncertainty(double h) {
  for (auto& b : blocks_)
    if (b->mlp->gate_) b->mlp->gate_->set_uncertainty(h);
}

void GptImpl::set_hook(ForwardHook hook) {
  hook_ = std::move(hook);
  for (auto& b : blocks_) b->attn->hook_ = b->mlp->hook_ = hook_ ? &hook_ : nullptr;
}

void GptImpl::set_gate_calibration(GateCalibration calibration) {
  if (calibration.head_importance.defined()) set_head_importance(calibration.head_importance);
  calibration.head_importance = calib_.head_importance;
  calib_ = std::move(calibration);
}

void GptImpl::set_head_importance(const torch::Tensor& importance) {
  check(importance.dim() == 2 && importance.size(0) == cfg_.n_layers && importance.size(1) == cfg_.n_heads,
        "head importance must be [layers, heads]");
  calib_.head_importance = importance.detach().to(torch::kCPU, torch::kFloat64).clone();
}

void GptImpl::set_prompt_keep(double keep) {
  check(keep > 0 && keep <= 1, "prompt keep fraction must be in (0, 1], got " + std::to_string(keep));
  prompt_keep_ = keep;
}

}  // namespace nestscope
