// MlpGate: the compressed-sensing gate over one MLP's neuron blocks (Kiruluta 2026, "Compressed-
// Sensing-Guided, Inference-Aware Structured Reduction for Large Language Models", §3–4).
//
// Per token x [C]: the pre-activation is z = W_up·x + b_up [N], split into n = N/B aligned blocks.
//  1. Measure: y = Φ·W_up·x with a seeded Φ [m, N] folded into P = Φ·W_up [m, C] once, so the
//     measurement costs m·C MACs instead of N·C.
//  2. Recover: block IHT on u = W_up·x from y (core/gate/block_recovery.h), starting at one-step
//     thresholding g = Φᵀy; the known bias is added back, ẑ = g + b_up.
//  3. Select: the k blocks with the largest estimated activation energy ‖act(ẑ_b)‖².
//  4. Execute only those: each run of adjacent active blocks is one W_up row-slice product and one
//     W_downᵀ row-slice product (W_down is stored transposed so a block's columns are contiguous).
// Everything else never runs. Policies Oracle / Static / Random choose differently (GateOptions).
#pragma once
#include <torch/types.h>

#include <cstdint>
#include <map>
#include <random>
#include <vector>

#include "core/gate/gate_options.h"
#include "core/activation.h"

namespace nestscope {

// Calibration statistics of one MLP's input x [C] (the ln2 output): the prior for MMSE recovery and
// PCA measurements.
struct GatePrior {
  torch::Tensor mean;  // [C]
  torch::Tensor cov;   // [C, C]
};

// Running totals over tokens and layers, for frontiers (cheaper than keeping every trace).
struct GateStats {
  int64_t rows = 0;           // token rows gated (summed over layers)
  double macs = 0;            // MLP MACs spent, all rows
  double dense_macs = 0;      // what the dense MLPs would have spent
  double overhead_macs = 0;   // of `macs`, measurement + recovery (+ the oracle's full up-projection)
  double f1 = 0;              // Σ block-support F1 against the oracle top-k of the same row
  int64_t f1_rows = 0;
};

class MlpGate {
 public:
  // The MLP at its current budget: up [N, C], up_bias [N] or undefined, down [C, N], down_bias [C]
  // or undefined. `layer` offsets the seed. `order` (empty = identity) is a neuron permutation:
  // block b holds neurons order[b·B .. b·B+B). Throws Error on bad sizes (block, k, m) or shapes.
  // A gated (SwiGLU) MLP passes its activated projection as `up` and the multiplied one as `mul`
  // [N, C] (+ `mul_bias`): hidden = act(up·x + b) ⊙ (mul·x + b_mul). Sensing then estimates act(up·x)
  // per block (the gate factor; the multiplier is not measured) and the chosen blocks run all three.
  MlpGate(const torch::Tensor& up, const torch::Tensor& up_bias, const torch::Tensor& down,
          const torch::Tensor& down_bias, Activation activation, const GateOptions& options, int64_t layer,
          const std::vector<int64_t>& order = {}, const GatePrior* prior = nullptr,
          const torch::Tensor& mul = {}, const torch::Tensor& mul_bias = {});

  // x [..., C] -> [..., C]; every row is gated on its own. `trace` (optional) gets one entry per
  // row; `stats` (optional) accumulates, and then also scores each row's support against the
  // oracle's (computing the full pre-activation: only for measurements, never on the fast path).
  torch::Tensor forward(const torch::Tensor& x, std::vector<MlpGateTrace>* trace = nullptr, GateStats* stats = nullptr);
  // The same on raw buffers: rows × C in, rows × C out.
  void forward_raw(int64_t rows, const float* x, float* y, std::vector<MlpGateTrace>* trace = nullptr,
                   GateStats* stats = nullptr);
  // The oracle's top-k for one row (full up-projection).
  std::vector<int64_t> oracle_blocks(const float* x);

  // The blocks the policy picks for one row, and the MACs that choice cost.
  std::vector<int64_t> choose(const float* x, int64_t* macs = nullptr);
  // True activation energies ‖act(z_b)‖² of each block (in the gate's order): x [rows, C] ->
  // [rows, n] (float64).
  torch::Tensor block_energies(const torch::Tensor& x) const;
  // The Static policy's ranking from the mean activation energy of each neuron [N] (checkpoint
  // order) over a calibration text.
  void set_static_energy(const torch::Tensor& neuron_energy);
  // Blocks (in the gate's order) that run for every row whatever the policy picks: an ablation
  // "forced on". Throws Error on an index outside [0, blocks()).
  void set_forced_on(std::vector<int64_t> blocks);
  // Blocks (gate order) that never run: removed from whatever the policy chose (an ablation).
  void set_forced_off(std::vector<int64_t> blocks);

  int64_t blocks() const { return n_; }
  int64_t active_blocks() const { return k_; }
  int64_t measurements() const { return m_t_; }  // in use now (token-adaptive: m_t)
  int64_t current_active_blocks() const { return k_t_; }
  // The normalised predictive entropy h = H/log V of the last token, in [0, 1]: sets m_t and k_t
  // when GateOptions::gamma > 0 (with hysteresis). Ignored otherwise.
  void set_uncertainty(double h);
  int64_t width() const { return N_; }
  const GateOptions& options() const { return options_; }
  // With a trace: also record each row's oracle top-k (costs a full up-projection; for display).
  bool trace_oracle = false;
  // MACs of the dense MLP per token (2·N·C, 3·N·C gated), for ratios.
  int64_t dense_macs() const { return projections() * N_ * C_; }
  int64_t projections() const { return mul_.defined() ? 3 : 2; }
  // MACs per token row at the current m_t and k_t: measurement + recovery + the k_t chosen blocks
  // (2·k·B·C). Exact for every policy but iterative IHT, counted here at one Φᵀy per iteration
  // (its line search may spend more; GateStats measures what a text really cost).
  int64_t macs_estimate() const;

 private:
  // choose() without allocations: fills chosen_ and returns it.
  const std::vector<int64_t>& select(const float* x, int64_t* macs);
  void run_blocks(const float* x, const std::vector<int64_t>& blocks, float* y);
  // On a GPU (core/cuda): the Oracle's or MMSE sensing's choice as tensor ops on the device (no
  // copy of x to the host), then the gathered-MLP kernel; a trace copies the chosen blocks back.
  // Other policies, forced blocks and statistics take the host path.
  bool device_path_applies(const torch::Tensor& x, bool stats) const;
  torch::Tensor forward_device(const torch::Tensor& x, std::vector<MlpGateTrace>* trace);
  struct DeviceCopy {  // the gate's tensors on one GPU, made on first use
    torch::Device device{torch::kCPU};
    torch::Tensor up, up_bias, mul, mul_bias, down_t, down_bias, folded;
    std::map<int64_t, std::pair<torch::Tensor, torch::Tensor>> mmse;  // m -> (K_m [m, N], c_m [N])
  };
  DeviceCopy device_;
  void block_activation_energy(const float* z);  // energy_[b] = ‖act(z_b)‖² (gated: the gate factor only)
  void keep_top_k();                             // chosen_ = the k largest energy_, ascending
  int64_t select_oracle(const float* x);         // chosen_ = the true top-k; returns its MACs
  float act(float v) const;

  GateOptions options_;
  Activation activation_;
  // Per-prefix MMSE gain Kᵀ_m [m, N] (exact prefix for PCA; cached per m for random Φ).
  const float* mmse_gain(int64_t m);

  int64_t C_, N_, B_, n_, k_, m_;  // m_ = rows folded (the largest m_t); k_ = base k
  int64_t m_base_ = 0, m_t_ = 0, k_t_ = 0, m_lo_ = 0;
  torch::Tensor up_, up_bias_, down_t_, down_bias_;  // [N, C], [N], [N, C] (= W_downᵀ), [C]; rows in gate order
  torch::Tensor mul_, mul_bias_;                     // gated MLP: [N, C], [N] in gate order; undefined otherwise
  torch::Tensor order_;                              // [N] int64, gate position -> neuron
  std::vector<int64_t> forced_;                      // blocks always run (ascending)
  std::vector<int64_t> forced_off_;                  // blocks never run (ascending)
  torch::Tensor phi_, folded_;                       // Φ [m, N], P = Φ·W_up [m, C]
  // MMSE, û = μ_u + K_m (y − ȳ): μ_u [N], ȳ = P μ_x [m]; S = P Σ_x Pᵀ + λI [m, m] and
  // Σ_u Φᵀ [N, m] (float64) make K_m for any prefix m.
  torch::Tensor mean_u_, y_mean_, s_, cross_;
  std::map<int64_t, torch::Tensor> gains_;
  // Per m: c_m = μ_u + b_up − ȳ_m·K_m, so that ẑ = c_m + (P_m·x)·K_m is one fused low-rank product.
  std::map<int64_t, torch::Tensor> offsets_;
  const float* mmse_offset(int64_t m);
  // Block indices checked against [0, n) (Error naming `what`), sorted, without repeats.
  std::vector<int64_t> checked_blocks(std::vector<int64_t> blocks, const char* what) const;
  torch::Tensor static_energy_;                      // [n] mean block energy on the calibration text
  std::mt19937_64 rng_;
  std::vector<float> y_, g_, u_, z_;                 // scratch: [m], [N], [N], [N]
  std::vector<float> energy_;                        // scratch: [n]
  std::vector<int64_t> rank_, chosen_;               // scratch: [n], [k]
};

}  // namespace nestscope
