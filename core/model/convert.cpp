#include "core/model/convert.h"

#include "core/error.h"

namespace nestscope {

ModelConfig nsn_config(const ModelConfig& src, const std::vector<std::string>& families, int64_t max_rank) {
  ModelConfig c = src;
  std::vector<std::string> chosen = families;
  if (chosen.empty())
    for (const auto& f : src.families())
      if (f != "head") chosen.push_back(f);
  for (const auto& f : chosen) {
    const auto [in, out] = src.family_shape(f);  // throws on unknown families
    check(max_rank >= 0, "NSN max rank must be >= 0 (0 = full rank), got " + std::to_string(max_rank));
    c.linear[f] = {LinearKind::Nsn, max_rank == 0 ? 0 : std::min(max_rank, std::min(in, out))};
  }
  c.validate();
  return c;
}

ModelConfig mpo_config(const ModelConfig& src, const std::vector<std::string>& families, int64_t bond) {
  check(bond >= 1, "bond dimension must be at least 1, got " + std::to_string(bond));
  ModelConfig c = src;
  std::vector<std::string> chosen = families;
  if (chosen.empty())
    for (const auto& f : src.families())
      if (f != "head" || !src.tied_head) chosen.push_back(f);
  for (const auto& f : chosen) {
    src.family_shape(f);  // throws on unknown families
    LinearSpec spec{LinearKind::Mpo};
    spec.bond = bond;
    c.linear[f] = spec;
    std::tie(spec.out_factors, spec.in_factors) = c.mpo_factors(f);
    c.linear[f] = spec;
  }
  c.validate();
  return c;
}

Gpt clone_model(Gpt& src) {
  Gpt dst(src->config());
  torch::NoGradGuard no_grad;
  auto src_params = src->named_parameters();
  for (auto& p : dst->named_parameters()) p.value().copy_(src_params[p.key()]);
  dst->to(src->tok_emb->weight.device());
  const auto from = src->own_projections();
  const auto to = dst->projections();
  for (size_t i = 0; i < to.size(); ++i) {
    if (to[i].second->max_rank() > 0) to[i].second->set_rank(from[i].second->rank());
    if (to[i].second->max_bond() > 0) to[i].second->set_bond(from[i].second->bond());
  }
  dst->eval();
  return dst;
}

Gpt convert_model(Gpt& src, const ModelConfig& target, const ProgressFn& progress) {
  ModelConfig a = src->config(), b = target;
  a.linear.clear();
  b.linear.clear();
  check(a == b, "conversion: target config differs from the source in more than the parameterization");
  Gpt dst(target);
  torch::NoGradGuard no_grad;
  const auto src_proj = src->own_projections();
  const auto dst_proj = dst->projections();
  const int64_t n = int64_t(dst_proj.size());
  report(progress, {"convert", 0, n});
  for (int64_t i = 0; i < n; ++i) {
    dst_proj[size_t(i)].second->load_from_dense(src_proj[size_t(i)].second->to_dense(), src_proj[size_t(i)].second->bias());
    report(progress, {"convert", i + 1, n});
  }
  // Everything that is not a projection (embeddings, LayerNorms, learned positions) is copied.
  auto src_params = src->named_parameters();
  for (auto& p : dst->named_parameters()) {
    bool is_projection = false;
    for (const auto& [name, layer] : dst_proj) is_projection |= p.key().rfind(name + ".", 0) == 0;
    if (!is_projection) p.value().copy_(src_params[p.key()]);
  }
  dst->to(src->tok_emb->weight.device());
  dst->eval();
  return dst;
}

}  // namespace nestscope
