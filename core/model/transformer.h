// Gpt: a decoder-only pre-norm transformer whose variants are config fields: GPT-2 style (LayerNorm,
// learned or sinusoidal positions, GELU/ReLU MLP) and Llama style (RMSNorm, rotary positions,
// grouped-query attention, SwiGLU MLP).
#pragma once
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include <cmath>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/defaults.h"
#include "core/layers/elastic_linear.h"
#include "core/model/budget.h"
#include "core/model/config.h"

namespace nestscope {

class MlpGate;
struct MlpGateTrace;
struct GateStats;
struct GatePrior;

// One MLP's input and activations over some tokens, for gate calibration.
struct MlpSample {
  torch::Tensor inputs;  // [T, C]: the ln2 output fed to the up-projection
  torch::Tensor acts;    // [T, N]: act(W_up·x + b_up)
};

// Keys and values of every layer for incremental decoding.
struct KvCache {
  std::vector<torch::Tensor> k;  // per layer [B, KVH, context, hd] (KVH = key/value heads)
  std::vector<torch::Tensor> v;  // per layer [B, KVH, context, hd]
  int64_t length = 0;            // slots filled so far (keys each new token attends to)
  int64_t position = 0;          // absolute position of the next token (> length after compression)
  // When defined ([B, context]): every forward adds the attention each cached slot receives,
  // summed over layers, heads and queries (what prompt compression ranks by).
  torch::Tensor key_mass;
};

// act(z) elementwise, as the MLP applies it; the scalar form is the raw paths' (same formulas).
torch::Tensor activate(const torch::Tensor& z, Activation activation);
inline float activate(float v, Activation activation) {
  switch (activation) {
    case Activation::Relu: return v > 0 ? v : 0.f;
    case Activation::Gelu: return 0.5f * v * (1.f + std::erf(v * 0.70710678f));  // exact GELU, as torch::gelu
    case Activation::GeluTanh: return 0.5f * v * (1.f + std::tanh(0.7978845608f * (v + 0.044715f * v * v * v)));
    case Activation::Silu: return v / (1.f + std::exp(-v));
  }
  return v;
}

// LayerNorm (weight and bias) or RMSNorm (weight only), per ModelConfig::norm; parameters are named
// "weight" and "bias" either way, so checkpoints keep one naming.
class NormLayerImpl : public torch::nn::Module {
 public:
  explicit NormLayerImpl(const ModelConfig& cfg);
  torch::Tensor forward(const torch::Tensor& x);  // [..., C] -> [..., C]
  void forward_raw(const float* x, float* y) const;  // one row [C], CPU float32 parameters
  torch::Tensor weight, bias;                     // [C], [C] or undefined (RMSNorm)

 private:
  Norm kind_;
  double eps_;
};
TORCH_MODULE(NormLayer);

class CausalSelfAttentionImpl : public torch::nn::Module {
 public:
  explicit CausalSelfAttentionImpl(const ModelConfig& cfg);
  // x: [B, T, C]. With a cache, x holds positions cache.length .. cache.length+T-1 and the
  // layer's keys/values are appended to cache.k/v[layer].
  torch::Tensor forward(const torch::Tensor& x, KvCache* cache, int64_t layer);
  // The same for one token row of batch 1 on raw buffers (GptImpl's raw decode step): appends
  // its key and value to the cache at slot cache.length and writes the projected output y [C].
  void forward_one_raw(const float* x, KvCache& cache, int64_t layer, float* y);

  std::shared_ptr<ElasticLinear> q, k, v, o;

  // Head gating: run only `heads` (ascending; empty = all). Keys and values are still computed for
  // every head, so the cache stays whole and a later support can use any head; queries, scores
  // and the output projection run for the active heads only (gathered W_q rows, W_o columns).
  void set_active_heads(const std::vector<int64_t>& heads);
  const std::vector<int64_t>& active_heads() const { return heads_; }
  // Knockout probing: per-sequence head masks [B, H] (1 keep, 0 knock out) multiplied into the
  // heads' outputs; undefined = none. Measurement only: everything is still computed.
  torch::Tensor probe_mask;
  // Ablation: [H] 1 keep / 0 off multiplied into every head's output (undefined = none).
  torch::Tensor head_mask;
  // Head-aware training (autograd on only): each sequence keeps a random train_head_active
  // fraction of the heads (at least one); the others' outputs are zeroed. 1 = off.
  double train_head_active = 1.0;
  // Rotary embedding for this forward's positions, [T, hd] each (set by GptImpl; undefined = none).
  torch::Tensor rope_cos, rope_sin;

 private:
  int64_t n_heads_, n_kv_;
  std::vector<int64_t> heads_;
  torch::Tensor head_index_, wq_, bq_, wo_;  // [kH], [kH·hd, C], [kH·hd] or undefined, [C, kH·hd]
  torch::Tensor kv_index_;                   // [H or kH]: the key/value head each running query head reads
  // One query per running head (q [H, hd]) against slots 0..L-1 of a layer's cache (k, v
  // [KVH, slots, hd], batch 1): softmax(q·kᵀ/√hd)·v into y [H, hd].
  void attend_one(const float* q, const float* k, const float* v, int64_t slots, int64_t L, int64_t H, int64_t hd,
                  float* y) const;
};
TORCH_MODULE(CausalSelfAttention);

class MlpImpl : public torch::nn::Module {
 public:
  explicit MlpImpl(const ModelConfig& cfg);
  torch::Tensor forward(const torch::Tensor& x);  // [B, T, C] -> [B, T, C]
  // One token row on raw buffers, autograd off (the gate, when on, traces and counts as forward does).
  void forward_one_raw(const float* x, float* y);
  // The hidden activations before down and any gating: act(up·x), or act(gate·x) ⊙ up·x. [.., C] -> [.., N]
  torch::Tensor hidden(const torch::Tensor& x);

  std::shared_ptr<ElasticLinear> up, down;
  std::shared_ptr<ElasticLinear> gate_proj;  // gated MLP only ("mlp.gate"): down(act(gate_proj·x) ⊙ up·x)
  // When set (and autograd is off) the MLP runs gated: only the neuron blocks the gate picks.
  std::shared_ptr<MlpGate> gate;
  std::vector<MlpGateTrace>* trace = nullptr;  // filled per token row by the gate when set
  bool trace_oracle = false;                   // traces also carry the oracle's blocks
  // Gate-aware training (autograd on only): keep per token the `train_active` fraction of blocks of
  // `train_block` neurons with the largest activation energy; the rest are zeroed. 1 = off.
  double train_active = 1.0;
  int64_t train_block = kNeuronBlock;
  // With train_sensing = m > 0 the kept blocks are those the sensing gate (PCA measurement + MMSE
  // recovery, m measurements) would pick, its prior taken from this batch's inputs: the model
  // trains on the support it is scored with, recovery misses included. 0 = the oracle's blocks.
  int64_t train_sensing = 0;
  // act(ẑ) [.., N] where ẑ is the PCA + MMSE estimate of the gate's pre-activation from m
  // measurements, the prior being the mean and covariance of the rows of x [.., C] (no grad).
  torch::Tensor sensed_hidden(const torch::Tensor& x, int64_t m);
  // Ablation: [N] 1 keep / 0 off multiplied into the activations (undefined = none). The gate,
  // when on, is built from weights with these neurons zeroed instead.
  torch::Tensor neuron_mask;
  GateStats* stats = nullptr;                  // accumulated by the gate when set

 private:
  Activation activation_;
};
TORCH_MODULE(Mlp);

class BlockImpl : public torch::nn::Module {
 public:
  explicit BlockImpl(const ModelConfig& cfg);
  torch::Tensor forward(const torch::Tensor& x, KvCache* cache, int64_t layer);

  NormLayer ln1{nullptr}, ln2{nullptr};
  CausalSelfAttention attn{nullptr};
  Mlp mlp{nullptr};
  bool parallel = false;  // ModelConfig::parallel_residual
};
TORCH_MODULE(Block);

class GptImpl : public torch::nn::Module {
 public:
  // Builds the model with fresh N(0, init_std) weights from the current torch seed.
  explicit GptImpl(const ModelConfig& cfg);

  // idx: [B, T] token ids -> logits [B, T, V]. With a cache, idx continues the cached prefix.
  // One token of batch 1 with a cache, on the CPU without autograd, takes the raw decode step
  // (below) when it applies.
  torch::Tensor forward(const torch::Tensor& idx, KvCache* cache = nullptr);
  // The raw decode step: the whole token — embedding, norms, every projection's forward_raw,
  // attention over the cache, the MLP or its gate, the head — on preallocated float buffers, with
  // no ATen op per part (at PicoGPT's size their dispatch cost more than the arithmetic). Same
  // result as the general path within float rounding (tested). Applies to float32 CPU models
  // without rotary positions, ablation masks, knockout probes or attention-mass tracking. Off when
  // false; the environment's NESTSCOPE_RAW_DECODE=0 sets false at construction (to compare both).
  bool raw_decode = true;
  int64_t raw_decode_steps = 0;  // tokens the raw step has decoded (tests and benchmarks read it)

  // An empty cache for batch B on the model's device.
  KvCache make_cache(int64_t batch) const;
  // Prompt compression (Budget::prompt_keep): keeps ceil(keep·length) slots of every row — the
  // first (an attention sink) and the latest `recent` always, then the most attended by
  // cache.key_mass — moved to the front in their order; clears key_mass. Returns, per row, the
  // kept slots (ascending). Later tokens keep their absolute positions (cache.position).
  std::vector<std::vector<int64_t>> compress_cache(KvCache& cache, double keep, int64_t recent = 4) const;
  double prompt_keep() const { return prompt_keep_; }
  // Only the prompt keep fraction, without rebuilding anything (what the joint knob's scoring sweeps).
  void set_prompt_keep(double keep);

  const ModelConfig& config() const { return cfg_; }
  // Every projection, named like the checkpoint ("blk.0.attn.q", ..., "head").
  std::vector<std::pair<std::string, std::shared_ptr<ElasticLinear>>> projections() const;
  // Multiply-accumulates for one token at position `context_len`-1 at the current budget: the sum
  // of mac_breakdown (attention scores, head gating and the MLP gate included).
  int64_t macs_per_token(int64_t context_len) const;
  // The same per part, named "blk.0.attn.q", ..., "blk.0.attn.scores", "blk.0.mlp.up" (or
  // "blk.0.mlp.gated" under the gate: measurement + recovery + the chosen blocks at the gate's
  // current m and k), "head". Counted from the real shapes and the budget.
  std::vector<std::pair<std::string, int64_t>> mac_breakdown(int64_t context_len) const;
  // macs_per_token without the gated MLPs' estimates (the decode loop adds what each gate's trace
  // says it spent). No allocation: it runs once per generated token.
  int64_t macs_without_gated_mlp(int64_t context_len) const;
  int64_t parameter_count() const;
  // Parameters used at the current budget (a truncated NSN layer counts r·(in+out) + bias).
  int64_t active_parameter_count() const;
  // Multiply-accumulates of the projections alone for one token at the current budget.
  int64_t linear_macs_per_token() const;
  // Sets every elastic layer for `budget`; takes effect on the next forward. Throws Error (and
  // changes nothing) when a rank is out of range or a kind has no variant.
  void apply_budget(const Budget& budget);

  // Variants: another parameterization of projection `name` holding the same weights (SVD factors,
  // a TT-SVD chain, a dense matrix), swapped in by apply_budget when Budget::kind asks. Only the
  // model's own projections are registered modules, so checkpoints and training never see them.
  void set_variant(const std::string& name, LinearKind kind, std::shared_ptr<ElasticLinear> layer);
  bool has_variant(const std::string& name, LinearKind kind) const;
  void clear_variants();  // back to the own projections only (e.g. after moving the model)
  // The largest NSN rank and MPO χ any own or variant projection offers (0 = none): slider ranges.
  std::pair<int64_t, int64_t> elastic_limits() const;
  // Per layer, the heads that run (all of them when head gating is off).
  std::vector<std::vector<int64_t>> active_heads() const;
  // The model's own projections (whatever the budget swapped in), named like projections().
  std::vector<std::pair<std::string, std::shared_ptr<ElasticLinear>>> own_projections() const;
  // The kind a projection family ("attn.q", ..., "head") has in the model's own config.
  LinearKind own_kind(const std::string& family) const { return cfg_.linear_spec(family).kind; }
  const GateOptions& gate_options() const { return gate_; }

  // Each layer's MLP inputs and activations for the tokens of idx [B, T] (B·T rows each).
  std::vector<MlpSample> mlp_samples(const torch::Tensor& idx);
  // Calibrates the gate from samples (as mlp_samples, concatenated over a calibration text): each
  // neuron's mean energy (the Static policy), for `block` the co-activation neuron order
  // (GateOptions::clustered), and the input mean / covariance (MMSE recovery, PCA measurement).
  // Kept across budget changes. support_rows > 0: the energies and the order come from the first
  // support_rows rows only (a text's own tokens), the mean / covariance from all of them (the text
  // continued by the model so the prior has rows enough; Engine::calibrate_gate).
  void calibrate_gate(const std::vector<MlpSample>& samples, int64_t block, uint64_t seed = 0,
                      int64_t support_rows = 0);
  bool gate_calibrated(int64_t block) const { return calib_block_ == block && !neuron_energy_.empty(); }
  // Per-layer gate traces: a forward appends one MlpGateTrace per token row to (*sink)[layer].
  // nullptr stops tracing (the default: the fast path pays nothing).
  void set_gate_trace(std::vector<std::vector<MlpGateTrace>>* sink, bool with_oracle = false);
  // Head importance [L, H] (from knockout probes) used when GateOptions::head_active < 1.
  void set_head_importance(const torch::Tensor& importance);
  bool heads_calibrated() const { return head_importance_.defined(); }
  // Head support from the current importance and budget (what set_budget does for heads), e.g.
  // after a re-estimate; clear_head_support runs every head until then (what probes need).
  void apply_head_support();
  void clear_head_support();
  const torch::Tensor& head_importance() const { return head_importance_; }
  // Knockout probing: masks [B, L, H] for a batch of B sequences (undefined = clear).
  void set_head_probe_masks(const torch::Tensor& masks);
  // The last token's normalised predictive entropy H/log V, for token-adaptive gates.
  void set_gate_uncertainty(double h);
  // Every layer's gate accumulates into `stats` (nullptr stops).
  void set_gate_stats(GateStats* stats);
  // Gate-aware training (see MlpImpl::train_active) in every layer; throws Error when `block`
  // does not divide the MLP width.
  void set_train_block_support(double active, int64_t block, int64_t sensing = 0);
  // Head-aware training (see CausalSelfAttentionImpl::train_head_active) in every layer.
  void set_train_head_support(double active);

  torch::nn::Embedding tok_emb{nullptr};
  torch::Tensor pos_emb;  // [context, C]: learned parameter, fixed sinusoidal buffer, or undefined (rotary)
  torch::nn::ModuleList blk{nullptr};
  NormLayer ln_f{nullptr};
  std::shared_ptr<ElasticLinear> head;  // null when tied to tok_emb

 private:
  // Builds (or, with policy Off, removes) every layer's MlpGate from the current weights.
  void rebuild_gates();
  // The projections `budget` runs (own or variant), in projections() order; throws Error when a
  // kind has no variant or names an unknown family.
  std::vector<std::pair<std::string, std::shared_ptr<ElasticLinear>>> planned(const Budget& budget) const;
  bool raw_decode_applies(const torch::Tensor& idx, const KvCache* cache) const;
  torch::Tensor decode_raw(int64_t token, KvCache& cache);
  std::vector<float> raw_x_, raw_a_, raw_b_, raw_h_;  // the raw step's activations, [C] each
  // Rotary tables for positions pos .. pos+T-1 into every attention layer (no-op without rotary).
  void set_rope(int64_t pos, int64_t T, const torch::Device& device);
  // Calls f(layer, part, macs) for every part of one token's cost (mac_breakdown without strings).
  template <class F>
  void visit_macs(int64_t context_len, F&& f) const;
  // Puts `layer` in the slot of projection `name` (a plain pointer swap, no copy).
  void install(const std::string& name, const std::shared_ptr<ElasticLinear>& layer);

  ModelConfig cfg_;
  std::vector<Block> blocks_;
  GateOptions gate_;
  double prompt_keep_ = 1.0;
  std::set<std::pair<int64_t, int64_t>> heads_on_, blocks_on_;  // forced on (Budget)
  std::set<std::pair<int64_t, int64_t>> gate_blocks_off_;       // forced off in gate order (Budget)
  std::vector<torch::Tensor> neuron_energy_;         // per layer [N]: mean act(z)² on the calibration text
  std::vector<std::vector<int64_t>> neuron_order_;   // per layer [N]: co-activation order for calib_block_
  std::vector<std::shared_ptr<GatePrior>> prior_;   // per layer: MLP input mean and covariance
  int64_t calib_block_ = 0;
  torch::Tensor head_importance_;  // [L, H]
  torch::Tensor rope_inv_freq_;    // [rd/2] float32: θ^(−2i/rd) over the rd rotary channels, as HF computes it
  std::vector<std::pair<std::string, std::shared_ptr<ElasticLinear>>> own_;  // registered projections
  std::map<std::string, std::map<LinearKind, std::shared_ptr<ElasticLinear>>> variants_;
};
TORCH_MODULE(Gpt);

// The fixed sinusoidal table of "Attention Is All You Need" §3.5: [context, C].
torch::Tensor sinusoidal_positions(int64_t context, int64_t channels);

}  // namespace nestscope
