// Rank allocation: which NSN ranks meet a target fraction of the dense linear-layer MACs.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "core/model/budget.h"
#include "core/model/transformer.h"
#include "core/progress.h"

namespace nestscope {

// Σ d_in·d_out over every projection: the linear-layer MACs per token of the dense model.
int64_t dense_linear_macs(Gpt& model);
// Linear-layer MACs per token of `model` at `budget` (the model's budget is restored after).
int64_t linear_macs_at(Gpt& model, const Budget& budget);

// The one global rank whose linear MACs are closest to `fraction` of dense_linear_macs.
Budget uniform_rank_budget(Gpt& model, double fraction);
// Per-layer ranks by retained spectral energy: components (energy ||B[:,i]||·||A[i,:]||, as a
// share of the layer's total) are taken greedily by energy share per MAC, always as a prefix,
// until the MACs reach `fraction` of dense_linear_macs.
Budget energy_rank_budget(Gpt& model, double fraction);

// Measured sensitivity: the calibration loss when one NSN layer alone is cut to each rank of a
// grid (every other layer at full rank).
struct RankSensitivity {
  std::vector<int64_t> grid;                         // ranks measured, ascending, ending at R
  double full_loss = 0;                              // every layer at full rank
  std::map<std::string, std::vector<double>> loss;   // layer -> loss at each grid rank
};
// `tokens` are calibration tokens (use training text, never the split you report on); the
// first `windows` context windows are scored at every (layer, grid rank).
RankSensitivity measure_rank_sensitivity(Gpt& model, const std::vector<int64_t>& tokens, int64_t windows,
                                         int64_t step = 8, const ProgressFn& progress = {});
// Per-layer ranks from grid points: treats the loss increases as additive and repeatedly buys
// the upgrade (to any higher grid rank of one layer) with the largest loss drop per MAC, until
// the MACs reach `fraction` of dense_linear_macs.
Budget sensitivity_rank_budget(Gpt& model, const RankSensitivity& sensitivity, double fraction);

}  // namespace nestscope
