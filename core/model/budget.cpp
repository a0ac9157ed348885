#include "core/model/budget.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "core/gate/block_recovery.h"
#include "core/layers/elastic_linear.h"

namespace nestscope {

std::vector<int64_t> check_budget(const Budget& budget, const ModelConfig& cfg,
                                  const std::vector<std::pair<std::string, const ElasticLinear*>>& layers,
                                  bool heads_calibrated, int64_t gate_calibrated_block) {
  check(budget.prompt_keep > 0 && budget.prompt_keep <= 1,
        "prompt keep fraction must be in (0, 1], got " + std::to_string(budget.prompt_keep));
  check(budget.mac_target >= 0 && budget.mac_target <= 1,
        "MAC target must be a fraction in (0, 1] (0 = off), got " + std::to_string(budget.mac_target));
  for (const auto& [l, h] : budget.heads_off)
    check(l >= 0 && l < cfg.n_layers && h >= 0 && h < cfg.n_heads,
          "ablation: head (" + std::to_string(l) + ", " + std::to_string(h) + ") is outside " +
              std::to_string(cfg.n_layers) + " layers × " + std::to_string(cfg.n_heads) + " heads");
  for (const auto& [l, b] : budget.blocks_off)
    check(l >= 0 && l < cfg.n_layers && b >= 0 && (b + 1) * Budget::kAblationBlock <= cfg.d_ff,
          "ablation: neuron block (" + std::to_string(l) + ", " + std::to_string(b) + ") is outside " +
              std::to_string(cfg.n_layers) + " layers × " + std::to_string(cfg.d_ff / Budget::kAblationBlock) +
              " blocks of " + std::to_string(Budget::kAblationBlock));
  for (const auto& [l, h] : budget.heads_on)
    check(l >= 0 && l < cfg.n_layers && h >= 0 && h < cfg.n_heads,
          "forced-on head (" + std::to_string(l) + ", " + std::to_string(h) + ") is outside the model");
  for (const auto& [l, b] : budget.blocks_on)
    check(budget.gate.policy != GatePolicy::Off && l >= 0 && l < cfg.n_layers && b >= 0 &&
              b < cfg.d_ff / std::max<int64_t>(1, budget.gate.block),
          "forced-on block (" + std::to_string(l) + ", " + std::to_string(b) +
              ") needs the gate on and a block index of the gate's order");
  for (const auto& [l, b] : budget.gate_blocks_off)
    check(budget.gate.policy != GatePolicy::Off && l >= 0 && l < cfg.n_layers && b >= 0 &&
              b < cfg.d_ff / std::max<int64_t>(1, budget.gate.block) && !budget.blocks_on.count({l, b}),
          "forced-off gate block (" + std::to_string(l) + ", " + std::to_string(b) +
              ") needs the gate on, a block index of the gate's order and not the same block forced on");
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
  check(budget.gate.head_active == 1 || heads_calibrated,
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
    check(g.block >= 1 && cfg.d_ff % g.block == 0, "gate: block size " + std::to_string(g.block) +
                                                         " does not divide the MLP width " + std::to_string(cfg.d_ff));
    const int64_t n = cfg.d_ff / g.block;
    const int64_t k = std::clamp<int64_t>(std::llround(g.active * double(n)), 1, n);
    check_gate_sizes(cfg.d_ff, g.block, k, g.measurements > 0 ? g.measurements : default_measurements(cfg.d_ff));
    check(g.iters >= 1 && g.iters <= 50, "gate: IHT iterations must be in [1, 50], got " + std::to_string(g.iters));
    const bool mmse = g.policy == GatePolicy::Sensing && g.recovery == Recovery::Mmse;
    const bool pca = g.policy == GatePolicy::Sensing && g.measurement == MeasurementKind::Pca;
    const char* what = g.clustered ? "clustered neuron order" : g.policy == GatePolicy::Static ? "static policy"
                                                            : mmse ? "MMSE recovery" : "PCA measurement";
    check((g.policy != GatePolicy::Static && !g.clustered && !mmse && !pca) || gate_calibrated_block == g.block,
          std::string("gate: the ") + what + " needs a calibration text at block size " + std::to_string(g.block) +
              " first");
  }
  return ranks;
}

}  // namespace nestscope
