// GateOptions: how the compressed-sensing gate picks MLP neuron blocks per token (torch-free, part
// of Budget). See core/gate/mlp_gate.h for the method.
#pragma once
#include <cstdint>
#include <vector>

#include "core/defaults.h"

namespace nestscope {

enum class GatePolicy {
  Off,      // dense MLP
  Sensing,  // measure y = Φ·W_up·x (m·d MACs), recover block energies by block IHT, run the top-k
  Oracle,   // compute every block, keep the truly strongest k (upper bound; saves nothing)
  Static,   // the k blocks strongest on average over a calibration text (static structured pruning)
  Random,   // k blocks drawn per token from a seeded generator (lower bound)
};

// How Φ is drawn: seeded random (the compressed-sensing default) or the top-m principal directions
// of the calibration pre-activations (the best linear measurement for that prior; needs calibration).
enum class MeasurementKind { Rademacher, Gaussian, Pca };
// How the block energies are recovered from y: block IHT (no prior; 1 iteration = Φᵀy), or the
// MMSE (Wiener / Gaussian-prior) estimate with the calibration mean and covariance, which is exact
// once m reaches the rank of the pre-activations' covariance (≤ C). Same m·N cost per token.
enum class Recovery { Iht, Mmse };
// In a sweep, how the kept heads are ranked: by the knockout probes' importance (what generation
// uses), by exhaustive single-head knockout on the first scored window (the oracle, an upper
// bound), or at random from the gate's seed (a lower bound).
enum class HeadRanking { Probed, Oracle, Random };

struct GateOptions {
  GatePolicy policy = GatePolicy::Off;
  double active = 1.0;       // fraction of MLP blocks kept, in (0, 1]; k = round(active · N/B) ≥ 1
  int64_t block = kNeuronBlock;  // neurons per aligned block B, at most (see gate_block)
  int64_t measurements = 0;  // m per token (0 = default_measurements(N))
  int64_t iters = 1;         // block IHT iterations (1 = one-step thresholding of Φᵀy)
  MeasurementKind measurement = MeasurementKind::Rademacher;  // ±1/√m, N(0, 1/m) or PCA rows
  Recovery recovery = Recovery::Iht;
  uint64_t seed = 0;         // Φ of layer l uses seed + l; Random draws from seed too
  bool clustered = false;    // blocks follow the calibrated co-activation neuron order
                             // (core/gate/neuron_order.h) instead of the checkpoint's order
  // Token-adaptive budget: with the last predictive entropy H_t (normalised h = H_t / log V),
  // m_t = clip(m·(1 + γ·h), m_min, m_max) and k_t = clip(k·(1 + γ·h), 1, N/B); a level moves only
  // when the new value differs from the current one by more than `hysteresis` (relative), so it
  // does not flap between neighbouring tokens. γ = 0 keeps m and k fixed.
  double gamma = 0;
  int64_t m_min = 0;         // 0 = m/2
  int64_t m_max = 0;         // 0 = min(4·m, N)
  double hysteresis = 0.15;
  // Attention heads: the fraction kept per layer (1 = all). The support is the top heads by the
  // importance that random knockout probes recovered on the calibration text (Engine::
  // calibrate_gate); inactive heads skip their query rows, scores and output columns.
  double head_active = 1.0;
  // false: every layer keeps the same number of heads (round(head_active·H)); true: the top
  // round(head_active·L·H) heads of the whole model by importance (probed Δ KL, comparable across
  // layers), each layer keeping at least its best head — layers that matter more keep more.
  bool head_global = false;
  // Token-adaptive heads: when the last token's normalised entropy h reaches head_reprobe, decoding
  // re-runs the knockout probes on the context so far and takes the new top heads (0 = never).
  // Hysteresis: after a re-probe it re-arms only once h has fallen below
  // head_reprobe·(1 − hysteresis), and at least head_reprobe_cooldown tokens later.
  double head_reprobe = 0;
  int64_t head_reprobe_cooldown = 16;
  int64_t head_probes = 0;   // probes per re-estimate (0 = 2·L·H)
  HeadRanking head_ranking = HeadRanking::Probed;  // sweeps only (see HeadRanking)
  bool operator==(const GateOptions&) const = default;
};

// What the gate did for one token in one layer (a Trace entry; torch-free for the GUI).
struct MlpGateTrace {
  std::vector<int64_t> blocks;  // active block indices (in the gate's neuron order), ascending
  int64_t measurements = 0;     // m used (0 for policies that do not measure)
  int64_t macs = 0;             // MLP MACs spent: measurement + recovery + the active blocks
  std::vector<int64_t> oracle;  // the true top-k blocks, when asked for (a full up-projection: measurement only)
};

// m when GateOptions::measurements is 0: N/16 (PCA + MMSE reaches block-support F1 ≈ 0.94 there
// on the default model; see README).
inline int64_t default_measurements(int64_t width) { return width / 16 > 0 ? width / 16 : 1; }  // m = N/16

// The block size the gate runs on an MLP of `width` neurons when `requested` is asked: `requested`
// itself when it divides the width, else the largest divisor of the width below it (a SwiGLU width
// of 172 runs blocks of 4; 3072 or 5632 keep 16). Blocks stay aligned and equal, so every kernel,
// recovery and calibration sees whole blocks. Returns `requested` unchanged when it is < 1 (the
// budget check reports it).
int64_t gate_block(int64_t requested, int64_t width);

const char* gate_policy_name(GatePolicy p);
const char* measurement_name(MeasurementKind k);  // "rademacher", "gaussian", "pca"
const char* recovery_name(Recovery r);            // "iht", "mmse"
const char* head_ranking_name(HeadRanking r);     // "probed", "oracle", "random"
HeadRanking parse_head_ranking(const char* name);  // throws Error
MeasurementKind parse_measurement(const char* name);  // throws Error
Recovery parse_recovery(const char* name);            // throws Error
// "off", "sensing", "oracle", "static", "random"; throws Error on anything else.
GatePolicy parse_gate_policy(const char* name);

}  // namespace nestscope
