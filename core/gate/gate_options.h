// GateOptions: how the compressed-sensing gate picks MLP neuron blocks per token (torch-free, part
// of Budget). See core/gate/mlp_gate.h for the method.
#pragma once
#include <cstdint>

namespace nestscope {

enum class GatePolicy {
  Off,      // dense MLP
  Sensing,  // measure y = Φ·W_up·x (m·d MACs), recover block energies by block IHT, run the top-k
  Oracle,   // compute every block, keep the truly strongest k (upper bound; saves nothing)
  Static,   // the k blocks strongest on average over a calibration text (static structured pruning)
  Random,   // k blocks drawn per token from a seeded generator (lower bound)
};

struct GateOptions {
  GatePolicy policy = GatePolicy::Off;
  double active = 1.0;       // fraction of MLP blocks kept, in (0, 1]; k = round(active · N/B) ≥ 1
  int64_t block = 16;        // neurons per aligned block B (must divide the MLP width N)
  int64_t measurements = 0;  // m per token (0 = N/4)
  int64_t iters = 1;         // block IHT iterations (1 = one-step thresholding of Φᵀy)
  bool gaussian = false;     // Φ entries N(0, 1/m) instead of ±1/√m
  uint64_t seed = 0;         // Φ of layer l uses seed + l; Random draws from seed too
  bool operator==(const GateOptions&) const = default;
};

const char* gate_policy_name(GatePolicy p);
// "off", "sensing", "oracle", "static", "random"; throws Error on anything else.
GatePolicy parse_gate_policy(const char* name);

}  // namespace nestscope
