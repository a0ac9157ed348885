#include "core/model/macs.h"

#include <cstring>

#include "core/error.h"
#include "core/gate/mlp_gate.h"

namespace nestscope {

namespace {

// Calls f(layer, part, macs) for every part of one token's cost (mac_breakdown without strings).
template <class F>
void visit_macs(const GptImpl& model, int64_t context_len, F&& f) {
  const auto& cfg = model.config();
  check(context_len >= 1 && context_len <= cfg.context, "MAC count: context length " + std::to_string(context_len) +
                                                            " is outside [1, " + std::to_string(cfg.context) + "]");
  const int64_t C = cfg.d_model, H = cfg.n_heads, hd = cfg.head_dim();
  for (int64_t l = 0; l < cfg.n_layers; ++l) {
    const auto& a = model.blocks()[size_t(l)]->attn;
    const auto& m = model.blocks()[size_t(l)]->mlp;
    // Head gating runs q and o as gathered dense rows / columns of the active heads only.
    const int64_t kh = a->active_heads().empty() ? H : int64_t(a->active_heads().size());
    f(l, "attn.q", kh == H ? a->q->macs() : kh * hd * C);
    f(l, "attn.k", a->k->macs());
    f(l, "attn.v", a->v->macs());
    // Scores q·k over context_len keys and the weighted sum of v, per active head.
    f(l, "attn.scores", 2 * context_len * kh * hd);
    f(l, "attn.o", kh == H ? a->o->macs() : kh * hd * C);
    if (m->gate()) {
      f(l, "mlp.gated", m->gate()->macs_estimate());
    } else {
      if (m->gate_proj) f(l, "mlp.gate", m->gate_proj->macs());
      f(l, "mlp.up", m->up->macs());
      f(l, "mlp.down", m->down->macs());
    }
  }
  f(-1, "head", model.head ? model.head->macs() : C * cfg.vocab_size);
}

}  // namespace

int64_t macs_per_token(const GptImpl& model, int64_t context_len) {
  int64_t macs = 0;
  visit_macs(model, context_len, [&](int64_t, const char*, int64_t n) { macs += n; });
  return macs;
}

int64_t macs_without_gated_mlp(const GptImpl& model, int64_t context_len) {
  int64_t macs = 0;
  visit_macs(model, context_len, [&](int64_t, const char* part, int64_t n) {
    if (std::strcmp(part, "mlp.gated") != 0) macs += n;
  });
  return macs;
}

std::vector<std::pair<std::string, int64_t>> mac_breakdown(const GptImpl& model, int64_t context_len) {
  std::vector<std::pair<std::string, int64_t>> out;
  visit_macs(model, context_len, [&](int64_t l, const char* part, int64_t n) {
    out.emplace_back(l < 0 ? std::string(part) : "blk." + std::to_string(l) + "." + part, n);
  });
  return out;
}

int64_t linear_macs_per_token(const GptImpl& model) {
  int64_t macs = 0;
  for (const auto& [name, p] : model.projections()) macs += p->macs();
  // A tied head is a product with the embedding: a linear layer's MACs like any head.
  if (!model.head) macs += model.config().d_model * model.config().vocab_size;
  return macs;
}

int64_t active_parameter_count(const GptImpl& model) {
  // Everything that is not a projection, plus each running projection at its budget.
  int64_t n = model.parameter_count();
  for (const auto& [name, p] : model.own_projections())
    for (const auto& t : p->parameters()) n -= t.numel();
  for (const auto& [name, p] : model.projections()) n += p->params();
  return n;
}

}  // namespace nestscope
