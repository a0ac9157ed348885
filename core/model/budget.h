// Budget: how much of an elastic model to use. A plain struct; applying it is instant (views).
#pragma once
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "core/defaults.h"
#include "core/gate/gate_options.h"
#include "core/model/config.h"

namespace nestscope {

struct Budget {
  int64_t rank = 0;  // global NSN rank (0 = full); each layer uses min(rank, its max rank)
  std::map<std::string, int64_t> layer_rank;  // per-projection overrides ("blk.0.mlp.up" -> r)
  int64_t bond = 0;  // global MPO bond dimension χ (0 = full); each layer uses min(bond, its max)
  GateOptions gate;  // the sensing gate over MLP neuron blocks (policy Off = dense MLPs)
  // Composition: which parameterization runs per projection family. Keys are a group ("attn",
  // "mlp", "head") or one family ("attn.q"); a family not named runs the model's own kind. Kinds
  // other than the model's own run the same weights re-parameterized (SVD factors, TT-SVD chain),
  // built once per model; `rank` then acts on the NSN layers and `bond` on the MPO layers.
  std::map<std::string, LinearKind> kind;
  // Prompt compression: after reading a prompt, keep this fraction of its keys/values in the
  // cache (the ones that received the most attention, plus the first and the latest tokens) and
  // drop the rest, so every later token attends to fewer keys. 1 = keep the whole prompt.
  double prompt_keep = 1.0;
  // Joint prompt + model compression, one knob: a MAC target as a fraction of this budget's MACs
  // per generated token without the gate and prompt compression (0 = off). When set, each
  // generation (and each frontier row) picks the gate's active fraction and the prompt keep
  // fraction that fit the target with the least measured KL to the uncompressed model
  // (core/eval/joint_split.h), overriding gate.active and prompt_keep. Needs a calibration text.
  double mac_target = 0;
  // Ablation, for A/B comparisons: attention heads (layer, head) and MLP neuron blocks (layer,
  // block of kAblationBlock neurons in the checkpoint's order) forced off. Empty = none.
  std::set<std::pair<int64_t, int64_t>> heads_off, blocks_off;
  // ... and forced on: heads that run although head gating would skip them, and, with the gate on,
  // blocks (in the gate's block order, as the activation map shows them) that always run.
  std::set<std::pair<int64_t, int64_t>> heads_on, blocks_on;
  // With the gate on, blocks in the gate's order (as the activation map shows them) that never run,
  // whatever the gate picks (the token runs one block fewer when it would have picked them).
  std::set<std::pair<int64_t, int64_t>> gate_blocks_off;
  static constexpr int64_t kAblationBlock = kNeuronBlock;
  bool operator==(const Budget&) const = default;

  // The kind `family` ("attn.q", ..., "head") runs under this budget; a family key wins over its group.
  LinearKind kind_for(const std::string& family, LinearKind own) const {
    if (auto it = kind.find(family); it != kind.end()) return it->second;
    if (auto it = kind.find(family.substr(0, family.find('.'))); it != kind.end()) return it->second;
    return own;
  }
};

class ElasticLinear;

// Checks `budget` against a model before anything changes: its config, the projections the budget
// would run (`layers`, by name), whether heads were probed, and the block size the gate was
// calibrated for (0 = none). Returns each layer's NSN rank to set (0 = not rank-elastic); throws
// Error naming the first thing out of range (rank, χ, fractions, ablation indices, gate sizes, a
// gate option that needs calibration).
std::vector<int64_t> check_budget(const Budget& budget, const ModelConfig& cfg,
                                  const std::vector<std::pair<std::string, const ElasticLinear*>>& layers,
                                  bool heads_calibrated, int64_t gate_calibrated_block);

}  // namespace nestscope
