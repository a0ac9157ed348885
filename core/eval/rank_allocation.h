// Rank allocation: which NSN ranks meet a target fraction of the dense linear-layer MACs.
#pragma once
#include <string>

#include "core/model/budget.h"
#include "core/model/transformer.h"

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

}  // namespace nestscope
