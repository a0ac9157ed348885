// The budget grids: the built-in "default" grid and the mechanism presets' grids, each a list of
// named budgets for Engine::sweep.
#include <cmath>

#include "core/engine/engine_impl.h"
#include "core/engine/presets.h"
#include "core/eval/rank_allocation.h"
#include "core/train/corpus.h"
#include "core/io/cache.h"
#include "core/variants/variants.h"

#include <cstring>

namespace nestscope {

namespace {

std::string fmt_pct(double f) { return std::to_string(int(std::lround(f * 100))) + "%"; }

}  // namespace

std::vector<NamedBudget> Engine::grid(const std::string& name) const {
  check(name == "default", "unknown grid '" + name + "' (built in: default)");
  const auto& m = impl_->need();
  const auto& cfg = m.config;
  std::vector<NamedBudget> out;
  auto add = [&](std::string method, std::string label, Budget b) {
    out.push_back({std::move(method), std::move(label), std::move(b)});
  };
  const LinearKind attn = m.model->own_kind("attn.q"), mlp = m.model->own_kind("mlp.up");
  const bool nsn = attn == LinearKind::Nsn || mlp == LinearKind::Nsn;
  const bool mpo = attn == LinearKind::Mpo || mlp == LinearKind::Mpo;
  const int64_t full_rank = std::min(cfg.d_model, cfg.d_ff);  // the MLP's R; attention's is d_model
  std::vector<int64_t> ranks;
  for (int64_t r : {cfg.d_model / 16, cfg.d_model / 8, cfg.d_model / 4, 3 * cfg.d_model / 8, cfg.d_model / 2,
                    3 * cfg.d_model / 4})
    if (r >= 1 && r <= full_rank && (ranks.empty() || r > ranks.back())) ranks.push_back(r);
  const std::vector<int64_t> bonds = {4, 8, 16, 32, 64};
  const std::vector<double> actives = {0.25, 0.5, 0.75};
  using K = LinearKind;
  // A variant file packed from fine-tunes (pack_variants) replaces the SVD / TT-SVD conversions:
  // its rows are named for what runs.
  const bool tuned = impl_->variant_cache && !m.hash.empty() && !variant_file_origin(variant_cache_path(m.hash)).empty();
  auto named = [tuned](std::string method) {
    if (!tuned) return method;
    for (auto [from, to] : {std::pair<const char*, const char*>{"tt-svd", "mpo-ft"}, {"svd", "nsn-ft"}})
      for (size_t at; (at = method.find(from)) != std::string::npos;) method.replace(at, std::strlen(from), to);
    return method;
  };
  if (!nsn && !mpo) {
    add("dense", "dense", Budget{});
    for (int64_t r : ranks) add(named("svd"), "r=" + std::to_string(r), Budget{.rank = r, .kind = {{"attn", K::Nsn}, {"mlp", K::Nsn}}});
    for (int64_t b : bonds)
      add(named("tt-svd"), "χ=" + std::to_string(b), Budget{.bond = b, .kind = {{"attn", K::Mpo}, {"mlp", K::Mpo}, {"head", K::Mpo}}});
    for (double a : actives) add("gate", "sensing " + fmt_pct(a), Budget{.gate = recommended_gate(a)});
    for (double k : {0.5, 0.25, 0.1}) add("prompt", "keep " + fmt_pct(k), Budget{.prompt_keep = k});
    add("gate+prompt", "50% keep 50%", Budget{.gate = recommended_gate(0.5), .prompt_keep = 0.5});
    // One knob: the split between gate and prompt measured per target (core/eval/joint_split.h).
    for (double t : {0.9, 0.8, 0.7, 0.6})
      add("joint", "target " + fmt_pct(t), Budget{.gate = recommended_gate(0.5), .mac_target = t});
    for (auto [r, b] : {std::pair<int64_t, int64_t>{cfg.d_model / 4, 8}, {cfg.d_model / 2, 16}, {3 * cfg.d_model / 4, 32}})
      add(named("svd-mlp+tt-svd-attn"), "r=" + std::to_string(r) + " χ=" + std::to_string(b),
          Budget{.rank = r, .bond = b, .kind = {{"mlp", K::Nsn}, {"attn", K::Mpo}}});
    for (int64_t r : {cfg.d_model / 4, cfg.d_model / 2})
      for (double a : {0.5, 0.75})
        add(named("svd-attn+gate"), "r=" + std::to_string(r) + " " + fmt_pct(a),
            Budget{.rank = r, .gate = recommended_gate(a), .kind = {{"attn", K::Nsn}}});
  } else if (nsn) {
    for (int64_t r : ranks) add("nsn", "r=" + std::to_string(r), Budget{.rank = r});
    for (double k : {0.5, 0.25})
      add("nsn+prompt", "r=" + std::to_string(cfg.d_model / 2) + " keep " + fmt_pct(k),
          Budget{.rank = cfg.d_model / 2, .prompt_keep = k});
    for (int64_t r : {cfg.d_model / 4, cfg.d_model / 2})
      for (double a : {0.5, 0.75})
        add("nsn+gate", "r=" + std::to_string(r) + " " + fmt_pct(a), Budget{.rank = r, .gate = recommended_gate(a)});
    for (auto [r, b] : {std::pair<int64_t, int64_t>{cfg.d_model / 4, 8}, {cfg.d_model / 2, 16}, {3 * cfg.d_model / 4, 32}})
      add("nsn-mlp+tt-svd-attn", "r=" + std::to_string(r) + " χ=" + std::to_string(b),
          Budget{.rank = r, .bond = b, .kind = {{"attn", K::Mpo}}});
  } else {
    int64_t largest = 0;
    for (const auto& [n, p] : m.model->own_projections()) largest = std::max(largest, p->max_bond());
    for (int64_t b : bonds)
      if (b <= largest) add("mpo", "χ=" + std::to_string(b), Budget{.bond = b});
    for (int64_t b : {largest / 2, largest})
      for (double a : {0.5, 0.75})
        if (b >= 1) add("mpo+gate", "χ=" + std::to_string(b) + " " + fmt_pct(a), Budget{.bond = b, .gate = recommended_gate(a)});
  }
  return out;
}

std::vector<NamedBudget> Engine::rank_grid(const RankGridOptions& o, const std::string& method,
                                           const ProgressFn& progress) {
  auto& m = impl_->need();
  check(info().max_rank > 0, "the model has no rank-elastic (NSN) layers: convert it first (nestscope-cli nsn convert)");
  ModelScope scope(*impl_);  // allocation moves the ranks
  Gpt& model = m.model;
  std::vector<NamedBudget> out;
  for (int64_t r : o.ranks) out.push_back({method, "uniform r=" + std::to_string(r), Budget{.rank = r}});
  RankSensitivity sensitivity;
  if (o.sensitivity_allocation && !o.mac_fractions.empty())
    sensitivity = measure_rank_sensitivity(model, make_corpus(*m.tokenizer, o.calibration_text, kTrainFraction).train,
                                           o.calibration_windows, 8, progress);
  for (double f : o.mac_fractions) {
    out.push_back({method, "uniform " + fmt_pct(f), uniform_rank_budget(model, f)});
    if (o.energy_allocation) out.push_back({method, "energy " + fmt_pct(f), energy_rank_budget(model, f)});
    if (o.sensitivity_allocation)
      out.push_back({method, "sensitivity " + fmt_pct(f), sensitivity_rank_budget(model, sensitivity, f)});
  }
  return out;
}

std::vector<NamedBudget> Engine::bond_grid(const std::vector<int64_t>& bonds, const std::string& method) const {
  check(!bonds.empty(), "MPO frontier: give at least one bond dimension");
  const int64_t largest = info().max_bond;
  check(largest > 0, "the model has no MPO layers: convert it first (nestscope-cli mpo convert)");
  std::vector<NamedBudget> out;
  for (int64_t b : bonds) {
    check(b >= 1 && b <= largest, "bond dimension " + std::to_string(b) + " is outside [1, " + std::to_string(largest) + "]");
    out.push_back({method, "χ=" + std::to_string(b), Budget{.bond = b}});
  }
  return out;
}

std::vector<NamedBudget> Engine::gate_grid(const GateGridOptions& o) const {
  check(!o.policies.empty() && !o.actives.empty() && !o.measurements.empty(),
        "gate frontier: give at least one policy, active fraction and m");
  for (double f : o.head_actives)
    check(f > 0 && f <= 1, "gate frontier: head active fraction must be in (0, 1], got " + std::to_string(f));
  Budget off;
  off.gate.block = o.block;  // the ungated row's blocks are counted at the grid's block size
  std::vector<NamedBudget> out = {{"gate", "off", off}};
  for (GatePolicy p : o.policies) {
    check(p != GatePolicy::Off, "gate frontier: the ungated row comes first anyway; do not list 'off'");
    const std::vector<int64_t> ms = p == GatePolicy::Sensing ? o.measurements : std::vector<int64_t>{0};
    for (double a : o.actives)
      for (int64_t mm : ms) {
        const GateOptions g{.policy = p, .active = a, .block = o.block, .measurements = mm, .iters = o.iters,
                            .measurement = o.measurement, .recovery = o.recovery, .seed = o.seed,
                            .clustered = o.clustered, .head_probes = o.head_probes};
        out.push_back({"gate", std::string(gate_policy_name(p)) + " " + fmt_pct(a) + " m=" + std::to_string(mm),
                       Budget{.gate = g}});
      }
  }
  for (double f : o.head_actives)
    for (HeadRanking r : {HeadRanking::Probed, HeadRanking::Oracle, HeadRanking::Random}) {
      const GateOptions g{.block = o.block, .seed = o.seed, .head_active = f, .head_global = o.head_global,
                          .head_probes = o.head_probes, .head_ranking = r};
      out.push_back({"heads", std::string(head_ranking_name(r)) + " " + fmt_pct(f), Budget{.gate = g}});
    }
  return out;
}

}  // namespace nestscope
