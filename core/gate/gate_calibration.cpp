#include "core/gate/gate_calibration.h"

#include <torch/torch.h>

#include "core/error.h"
#include "core/gate/neuron_order.h"

namespace nestscope {

void calibrate_mlp(GateCalibration& calib, const std::vector<MlpSample>& samples, int64_t d_model, int64_t d_ff,
                   int64_t block, uint64_t seed, int64_t support_rows) {
  block = gate_block(block, d_ff);
  check(block >= 1 && d_ff % block == 0,
        "gate: block size " + std::to_string(block) + " does not divide the MLP width " + std::to_string(d_ff));
  std::vector<torch::Tensor> energy;
  std::vector<std::vector<int64_t>> order;
  std::vector<std::shared_ptr<GatePrior>> prior;
  for (const auto& s : samples) {
    check(s.acts.dim() == 2 && s.acts.size(1) == d_ff && s.acts.size(0) > 0 && s.inputs.dim() == 2 &&
              s.inputs.size(0) == s.acts.size(0) && s.inputs.size(1) == d_model,
          "gate calibration: samples must be inputs [T, C] and activations [T, N]");
    const auto acts = support_rows > 0 ? s.acts.narrow(0, 0, std::min(support_rows, s.acts.size(0))) : s.acts;
    energy.push_back(acts.to(torch::kFloat64).square().mean(0));  // [N]
    order.push_back(coactivation_order(acts, block, seed));
    auto x = s.inputs.to(torch::kFloat64);                           // [T, C]
    auto mean = x.mean(0);                                           // [C]
    auto centred = x - mean;
    auto cov = centred.t().mm(centred) / double(std::max<int64_t>(1, x.size(0) - 1));  // [C, C]
    prior.push_back(std::make_shared<GatePrior>(GatePrior{mean, cov}));
  }
  calib.neuron_energy = std::move(energy);
  calib.neuron_order = std::move(order);
  calib.prior = std::move(prior);
  calib.block = block;
}

}  // namespace nestscope
