// Presets: the recommended gate, the fine-tune recipes and the default lists that the CLI, the GUI
// and the built-in grids share. Defined once here (torch-free).
#pragma once
#include <cstdint>
#include <vector>

#include "core/gate/gate_options.h"
#include "core/train/train_options.h"

namespace nestscope {

// The sensing gate as the method pages measure it: PCA measurements, MMSE recovery, clustered
// blocks of kNeuronBlock, m = N/16, keeping `active` of the blocks.
GateOptions recommended_gate(double active);

// Fine-tuning recipes (`nsn finetune`, `mpo finetune`): short runs from a converted model, no
// weight decay (the factors are already the pretrained weights).
TrainOptions nsn_finetune_recipe();  // 500 steps, warmup 20, lr 3e-4
TrainOptions mpo_finetune_recipe();  // 500 steps, warmup 20, lr 1e-3
NsnTrainOptions nested_bond_recipe();  // nested-χ: the smallest χ sampled is 2

// χ a dense model is converted at when an MPO fine-tune is asked of it.
inline constexpr int64_t kAutoConvertBond = 32;

// Default lists of the mechanism presets (`nsn frontier`, `mpo frontier`, `gate frontier`).
std::vector<double> default_rank_fractions();  // 1/8 … 1 of the dense linear MACs
std::vector<int64_t> default_bonds();          // χ = 2 … 64
std::vector<double> default_gate_actives();    // 25%, 50%, 75% of the blocks

}  // namespace nestscope
