// Gate calibration runs: reading a model's MLP inputs and activations through its forward hook,
// and calibrating the sensing gate (GateCalibration) from a text's tokens.
#pragma once
#include <cstdint>
#include <vector>

#include "core/gate/gate_calibration.h"
#include "core/model/transformer.h"

namespace nestscope {

// Each layer's MLP inputs and activations for the tokens of idx [B, T] (B·T rows each), read from
// the forward's "mlp.in" / "mlp.hidden" intermediates (the model must run its MLPs ungated).
std::vector<MlpSample> mlp_samples(Gpt& model, const torch::Tensor& idx);
// calibrate_mlp into the model's own calibration (its head importance is kept): the model's
// gates use it from the next apply_budget.
void calibrate_gate(Gpt& model, const std::vector<MlpSample>& samples, int64_t block, uint64_t seed = 0,
                    int64_t support_rows = 0);
// Bounds that keep calibration's memory and time flat in the context length.
inline constexpr int64_t kCalibrationRows = 2048;  // token rows of MLP samples per layer, at most
inline constexpr int64_t kProbeTokens = 256;       // tokens each head knockout probe scores, at most

// Gate calibration from the first `max_windows` context windows of `tokens` (a shorter text is one
// window; no more windows than kCalibrationRows rows): MLP samples per layer, concatenated, into
// calibrate_gate. The model must run ungated here (callers apply a budget without a gate first).
// Heads are probed on the first window's first kProbeTokens tokens with `head_probes` random
// knockout masks (0 = 2·L·H). own_tokens > 0: only the first own_tokens are
// the text's (the rest the model's continuation): they alone set the head probes, the static
// energies and the neuron order; every token feeds the MMSE / PCA prior.
void calibrate_on_tokens(Gpt& model, const std::vector<int64_t>& tokens, int64_t context, int64_t block, uint64_t seed,
                         int64_t max_windows, int64_t head_probes = 0, int64_t own_tokens = 0);

}  // namespace nestscope
