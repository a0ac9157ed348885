#include "core/model/transformer.h"

#include "core/error.h"
#include "core/layers/dense_linear.h"

namespace nestscope {

namespace {
std::shared_ptr<ElasticLinear> dense(int64_t in, int64_t out, bool bias, const ModelConfig& cfg) {
  return std::make_shared<DenseLinear>(in, out, bias, cfg.init_std);
}
}  // namespace

torch::Tensor sinusoidal_positions(int64_t context, int64_t channels) {
  // PE[t, 2i] = sin(t / 10000^(2i/C)), PE[t, 2i+1] = cos(t / 10000^(2i/C))
  auto t = torch::arange(context, torch::kFloat).unsqueeze(1);                    // [T, 1]
  auto i2 = torch::arange(0, channels, 2, torch::kFloat);                          // [C/2]
  auto freq = torch::exp(i2 * (-std::log(10000.0) / static_cast<double>(channels)));  // [C/2]
  auto angle = t * freq;                                                            // [T, C/2]
  return torch::stack({torch::sin(angle), torch::cos(angle)}, 2).reshape({context, channels});
}

CausalSelfAttentionImpl::CausalSelfAttentionImpl(const ModelConfig& cfg) : n_heads_(cfg.n_heads) {
  const int64_t C = cfg.d_model;
  q = register_module("q", dense(C, C, cfg.qkv_bias, cfg));
  k = register_module("k", dense(C, C, cfg.qkv_bias, cfg));
  v = register_module("v", dense(C, C, cfg.qkv_bias, cfg));
  o = register_module("o", dense(C, C, cfg.out_bias, cfg));
}

torch::Tensor CausalSelfAttentionImpl::forward(const torch::Tensor& x, KvCache* cache, int64_t layer) {
  const int64_t B = x.size(0), T = x.size(1), C = x.size(2), H = n_heads_, hd = C / H;
  auto split = [&](const torch::Tensor& t) { return t.view({B, T, H, hd}).transpose(1, 2); };
  auto qh = split(q->forward(x));  // [B, H, T, hd]
  auto kh = split(k->forward(x));  // [B, H, T, hd]
  auto vh = split(v->forward(x));  // [B, H, T, hd]
  int64_t past = 0;
  if (cache) {
    past = cache->length;
    cache->k[layer].narrow(2, past, T).copy_(kh);
    cache->v[layer].narrow(2, past, T).copy_(vh);
    kh = cache->k[layer].narrow(2, 0, past + T);  // [B, H, L, hd]
    vh = cache->v[layer].narrow(2, 0, past + T);  // [B, H, L, hd]
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
  auto y = torch::matmul(att, vh).transpose(1, 2).reshape({B, T, C});  // [B, T, C]
  return o->forward(y);
}

MlpImpl::MlpImpl(const ModelConfig& cfg) : activation_(cfg.activation) {
  up = register_module("up", dense(cfg.d_model, cfg.d_ff, cfg.mlp_bias, cfg));
  down = register_module("down", dense(cfg.d_ff, cfg.d_model, cfg.mlp_bias, cfg));
}

torch::Tensor MlpImpl::forward(const torch::Tensor& x) {
  auto h = up->forward(x);  // [B, T, N]
  h = activation_ == Activation::Relu ? torch::relu(h) : torch::gelu(h);
  return down->forward(h);  // [B, T, C]
}

BlockImpl::BlockImpl(const ModelConfig& cfg) {
  auto ln = [&] { return torch::nn::LayerNorm(torch::nn::LayerNormOptions({cfg.d_model}).eps(cfg.ln_eps)); };
  ln1 = register_module("ln1", ln());
  attn = register_module("attn", CausalSelfAttention(cfg));
  ln2 = register_module("ln2", ln());
  mlp = register_module("mlp", Mlp(cfg));
}

torch::Tensor BlockImpl::forward(const torch::Tensor& x, KvCache* cache, int64_t layer) {
  auto h = x + attn->forward(ln1->forward(x), cache, layer);  // [B, T, C]
  return h + mlp->forward(ln2->forward(h));
}

GptImpl::GptImpl(const ModelConfig& cfg) : cfg_(cfg) {
  cfg_.validate();
  tok_emb = register_module("tok_emb", torch::nn::Embedding(cfg.vocab_size, cfg.d_model));
  torch::NoGradGuard no_grad;
  tok_emb->weight.normal_(0.0, cfg.init_std);
  if (cfg.position == PositionEncoding::Learned) {
    pos_emb = register_parameter("pos_emb", torch::randn({cfg.context, cfg.d_model}) * cfg.init_std);
  } else {
    pos_emb = register_buffer("pos_sin", sinusoidal_positions(cfg.context, cfg.d_model));
  }
  blk = register_module("blk", torch::nn::ModuleList());
  for (int64_t l = 0; l < cfg.n_layers; ++l) {
    blocks_.push_back(Block(cfg));
    blk->push_back(blocks_.back());
  }
  ln_f = register_module("ln_f", torch::nn::LayerNorm(torch::nn::LayerNormOptions({cfg.d_model}).eps(cfg.ln_eps)));
  if (!cfg.tied_head) head = register_module("head", dense(cfg.d_model, cfg.vocab_size, cfg.lm_head_bias, cfg));
}

torch::Tensor GptImpl::forward(const torch::Tensor& idx, KvCache* cache) {
  check(idx.dim() == 2, "model input must be [batch, time] token ids");
  const int64_t T = idx.size(1);
  const int64_t past = cache ? cache->length : 0;
  check(T > 0, "model input is empty");
  check(past + T <= cfg_.context, "sequence of " + std::to_string(past + T) +
                                      " tokens exceeds the model's context of " + std::to_string(cfg_.context));
  auto x = tok_emb->forward(idx) + pos_emb.narrow(0, past, T);  // [B, T, C]
  for (int64_t l = 0; l < cfg_.n_layers; ++l) x = blocks_[l]->forward(x, cache, l);
  if (cache) cache->length += T;
  x = ln_f->forward(x);
  return head ? head->forward(x) : torch::linear(x, tok_emb->weight);  // [B, T, V]
}

KvCache GptImpl::make_cache(int64_t batch) const {
  KvCache c;
  auto opts = tok_emb->weight.options().requires_grad(false);
  for (int64_t l = 0; l < cfg_.n_layers; ++l) {
    c.k.push_back(torch::empty({batch, cfg_.n_heads, cfg_.context, cfg_.head_dim()}, opts));
    c.v.push_back(torch::empty({batch, cfg_.n_heads, cfg_.context, cfg_.head_dim()}, opts));
  }
  return c;
}

std::vector<std::pair<std::string, std::shared_ptr<ElasticLinear>>> GptImpl::projections() const {
  std::vector<std::pair<std::string, std::shared_ptr<ElasticLinear>>> out;
  for (size_t l = 0; l < blocks_.size(); ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    const auto& a = blocks_[l]->attn;
    const auto& m = blocks_[l]->mlp;
    out.insert(out.end(), {{p + "attn.q", a->q}, {p + "attn.k", a->k}, {p + "attn.v", a->v},
                           {p + "attn.o", a->o}, {p + "mlp.up", m->up}, {p + "mlp.down", m->down}});
  }
  if (head) out.emplace_back("head", head);
  return out;
}

int64_t GptImpl::macs_per_token(int64_t context_len) const {
  int64_t macs = 0;
  for (const auto& [name, p] : projections()) macs += p->macs();
  if (!head) macs += cfg_.d_model * cfg_.vocab_size;
  // Attention: scores q·k and the weighted sum of v, over context_len keys, in every layer.
  macs += cfg_.n_layers * 2 * context_len * cfg_.d_model;
  return macs;
}

int64_t GptImpl::parameter_count() const {
  int64_t n = 0;
  for (const auto& p : parameters()) n += p.numel();
  return n;
}

}  // namespace nestscope
