#include "core/engine/presets.h"

#include "core/defaults.h"

namespace nestscope {

GateOptions recommended_gate(double active) {
  GateOptions g;
  g.policy = GatePolicy::Sensing;
  g.active = active;
  g.block = kNeuronBlock;
  g.measurement = MeasurementKind::Pca;
  g.recovery = Recovery::Mmse;
  g.clustered = true;
  return g;
}

namespace {
TrainOptions finetune_recipe(double lr) {
  TrainOptions o;
  o.steps = 500;
  o.warmup = 20;
  o.lr = lr;
  o.weight_decay = 0.0;
  return o;
}
}  // namespace

TrainOptions nsn_finetune_recipe() { return finetune_recipe(3e-4); }
TrainOptions mpo_finetune_recipe() { return finetune_recipe(1e-3); }

NsnTrainOptions nested_bond_recipe() {
  NsnTrainOptions n;
  n.min_rank = 2;
  return n;
}

std::vector<double> default_rank_fractions() { return {0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0}; }
std::vector<int64_t> default_bonds() { return {2, 4, 8, 16, 32, 64}; }
std::vector<double> default_gate_actives() { return {0.25, 0.5, 0.75}; }

}  // namespace nestscope
