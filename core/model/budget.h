// Budget: how much of an elastic model to use. A plain struct; applying it is instant (views).
#pragma once
#include <cstdint>
#include <map>
#include <string>

#include "core/gate/gate_options.h"

namespace nestscope {

struct Budget {
  int64_t rank = 0;  // global NSN rank (0 = full); each layer uses min(rank, its max rank)
  std::map<std::string, int64_t> layer_rank;  // per-projection overrides ("blk.0.mlp.up" -> r)
  int64_t bond = 0;  // global MPO bond dimension χ (0 = full); each layer uses min(bond, its max)
  GateOptions gate;  // the sensing gate over MLP neuron blocks (policy Off = dense MLPs)
  bool operator==(const Budget&) const = default;
};

}  // namespace nestscope
