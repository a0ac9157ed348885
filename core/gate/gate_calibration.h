// GateCalibration: what the sensing gate learned from a calibration text — per layer the neurons'
// mean energies (the static policy), the co-activation neuron order (clustered blocks) and the MLP
// input prior (MMSE recovery, PCA measurement), plus the heads' probed importance. An object of
// its own, handed to the model beside the budget (Gpt::set_gate_calibration); the model reads it
// when it builds its gates and its head support.
#pragma once
#include <torch/types.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "core/gate/mlp_gate.h"

namespace nestscope {

// One MLP's input and activations over some tokens, for calibration.
struct MlpSample {
  torch::Tensor inputs;  // [T, C]: the MLP's input (the ln2 output fed to the up-projection)
  torch::Tensor acts;    // [T, N]: act(W_up·x + b_up), or act(W_gate·x) ⊙ W_up·x for a gated MLP
};

struct GateCalibration {
  int64_t block = 0;                                 // block size the neuron order is for (0 = none)
  std::vector<torch::Tensor> neuron_energy;          // per layer [N]: mean act(z)² on the calibration text
  std::vector<std::vector<int64_t>> neuron_order;    // per layer [N]: co-activation order for `block`
  std::vector<std::shared_ptr<GatePrior>> prior;     // per layer: MLP input mean and covariance
  torch::Tensor head_importance;                     // [L, H] float64 from knockout probes (undefined = none)

  // The block size the MLP part was calibrated for (0 = not calibrated).
  int64_t mlp_block() const { return neuron_energy.empty() ? 0 : block; }
  bool heads_ready() const { return head_importance.defined(); }
};

// Sets the MLP part of `calib` from per-layer samples (concatenated over a calibration text) of a
// model with MLP input width `d_model` and width `d_ff`: each neuron's mean energy, for `block` the
// co-activation neuron order, and the input mean / covariance. support_rows > 0: the energies and
// the order come from the first support_rows rows only (a text's own tokens), the mean / covariance
// from all of them (the text continued by the model, so the prior has rows enough). Throws Error
// on bad shapes or a block that does not divide d_ff; `calib` is unchanged then.
void calibrate_mlp(GateCalibration& calib, const std::vector<MlpSample>& samples, int64_t d_model, int64_t d_ff,
                   int64_t block, uint64_t seed = 0, int64_t support_rows = 0);

}  // namespace nestscope
