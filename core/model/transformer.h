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
#include "core/gate/gate_calibration.h"
#include "core/layers/activation.h"
#include "core/layers/elastic_linear.h"
#include "core/layers/variant_set.h"
#include "core/model/budget.h"
#include "core/model/config.h"
#include "core/model/forward_hook.h"

namespace nestscope {

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
  CausalSelfAttentionImpl(const ModelConfig& cfg, int64_t layer);
  // x: [B, T, C]. With a cache, x holds positions cache.length .. cache.length+T-1 and the
  // layer's keys/values are appended to cache.k/v[layer].
  torch::Tensor forward(const torch::Tensor& x, KvCache* cache);
  // The same for one token row of batch 1 on raw buffers (the raw decode step): appends its key
  // and value to the cache at slot cache.length and writes the projected output y [C]. With
  // rotary positions, `cos` and `sin` [rd/2] are this position's angles' cosines and sines.
  void forward_one_raw(const float* x, KvCache& cache, float* y, const float* cos = nullptr,
                       const float* sin = nullptr, int64_t rd = 0);

  std::shared_ptr<ElasticLinear> q, k, v, o;

  // Head gating: run only `heads` (ascending; empty = all). Keys and values are still computed for
  // every head, so the cache stays whole and a later support can use any head; queries, scores
  // and the output projection run for the active heads only (gathered W_q rows, W_o columns).
  void set_active_heads(const std::vector<int64_t>& heads);
  const std::vector<int64_t>& active_heads() const { return heads_; }

 private:
  friend class GptImpl;
  int64_t layer_, n_heads_, n_kv_;
  std::vector<int64_t> heads_;
  torch::Tensor head_index_, wq_, bq_, wo_;  // [kH], [kH·hd, C], [kH·hd] or undefined, [C, kH·hd]
  torch::Tensor kv_index_;                   // [H or kH]: the key/value head each running query head reads
  torch::Tensor head_mask_;                  // ablation (Budget::heads_off): [H] 1 keep / 0 off, undefined = none
  torch::Tensor rope_cos_, rope_sin_;        // rotary tables for this forward's positions, [T, rd] each
  const ForwardHook* hook_ = nullptr;        // the model's hook, when one is set
  // One query per running head (q [H, hd]) against slots 0..L-1 of a layer's cache (k, v
  // [KVH, slots, hd], batch 1): softmax(q·kᵀ/√hd)·v into y [H, hd].
  void attend_one(const float* q, const float* k, const float* v, int64_t slots, int64_t L, int64_t H, int64_t hd,
                  float* y) const;
};
TORCH_MODULE(CausalSelfAttention);

class MlpImpl : public torch::nn::Module {
 public:
  MlpImpl(const ModelConfig& cfg, int64_t layer);
  // [B, T, C] -> [B, T, C]; with the gate on (and autograd off) only the blocks the gate picks run.
  torch::Tensor forward(const torch::Tensor& x);
  // One token row on raw buffers, autograd off (the gate, when on, traces and counts as forward does).
  void forward_one_raw(const float* x, float* y);
  // The hidden activations before down and any gating: act(up·x), or act(gate·x) ⊙ up·x. [.., C] -> [.., N]
  torch::Tensor hidden(const torch::Tensor& x);
  // act(ẑ) [.., N] where ẑ is the PCA + MMSE estimate of the gate's pre-activation from m
  // measurements, the prior being the mean and covariance of the rows of x [.., C] (no grad):
  // what sensing-aware training keeps blocks by.
  torch::Tensor sensed_hidden(const torch::Tensor& x, int64_t m) const;
  const MlpGate* gate() const { return gate_.get(); }  // the sensing gate, when the budget has one

  std::shared_ptr<ElasticLinear> up, down;
  std::shared_ptr<ElasticLinear> gate_proj;  // gated MLP only ("mlp.gate"): down(act(gate_proj·x) ⊙ up·x)

 private:
  friend class GptImpl;
  int64_t layer_;
  Activation activation_;
  std::shared_ptr<MlpGate> gate_;
  std::vector<MlpGateTrace>* trace_ = nullptr;  // filled per token row by the gate when set
  bool trace_oracle_ = false;                   // traces also carry the oracle's blocks
  GateStats* stats_ = nullptr;                  // accumulated by the gate when set
  // Ablation (Budget::blocks_off): [N] 1 keep / 0 off multiplied into the activations (undefined =
  // none). The gate, when on, is built from weights with these neurons zeroed instead.
  torch::Tensor neuron_mask_;
  const ForwardHook* hook_ = nullptr;
};
TORCH_MODULE(Mlp);

class BlockImpl : public torch::nn::Module {
 public:
  BlockImpl(const ModelConfig& cfg, int64_t layer);
  torch::Tensor forward(const torch::Tensor& x, KvCache* cache);

  NormLayer ln1{nullptr}, ln2{nullptr};
  CausalSelfAttention attn{nullptr};
  Mlp mlp{nullptr};
  bool parallel = false;  // ModelConfig::parallel_residual
};
TORCH_MODULE(Block);

// The model: weights, the forward, and the raw decode step. What it runs is set by apply_budget
// (views of its own projections or their variants, head and gate supports); everything that
// decides — calibration, variant building, sweeps — lives outside and hands it objects.
class GptImpl : public torch::nn::Module {
 public:
  // Builds the model with fresh N(0, init_std) weights from the current torch seed.
  explicit GptImpl(const ModelConfig& cfg);

  // idx: [B, T] token ids -> logits [B, T, V]. With a cache, idx continues the cached prefix.
  // One token of batch 1 with a cache, on the CPU without autograd, takes the raw decode step
  // (below) when it applies.
  // last_only: logits of the last position only ([B, 1, V]): what a prompt's prefill needs, and the
  // head is a quarter or more of a small model's MACs per position.
  torch::Tensor forward(const torch::Tensor& idx, KvCache* cache = nullptr, bool last_only = false);
  // The raw decode step (raw_decode.cpp): the whole token — embedding, norms, every projection's
  // forward_raw, attention over the cache, the MLP or its gate, the head — on preallocated float
  // buffers, with no ATen op per part (at PicoGPT's size their dispatch cost more than the
  // arithmetic). Same result as the general path within float rounding (tested). Applies to
  // float32 or bfloat16 CPU models without ablation masks, a hook or attention-mass
  // tracking. Off when false; the environment's NESTSCOPE_RAW_DECODE=0 sets false at construction.
  bool raw_decode = true;
  int64_t raw_decode_steps = 0;  // tokens the raw step has decoded (tests and benchmarks read it)

  // Weight storage: float32, or bfloat16 for the token embedding (and tied head) and every dense
  // projection (NSN factors, MPO cores and variants stay float32). bfloat16 halves the bytes a
  // decode step reads; products widen each weight exactly and accumulate in float32. keep_values
  // converts the current weights; false leaves them to be filled (a loader's next step).
  // Training and conversion read float32 copies (to_dense(), clone_model()).
  void set_weight_storage(torch::ScalarType dtype, bool keep_values = true);
  torch::ScalarType weight_storage() const { return tok_emb->weight.scalar_type(); }

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
  const std::vector<Block>& blocks() const { return blocks_; }
  // Every projection now in a slot (own or variant), named like the checkpoint ("blk.0.attn.q", ..., "head").
  std::vector<std::pair<std::string, std::shared_ptr<ElasticLinear>>> projections() const;
  // The model's own projections (whatever the budget swapped in), named like projections().
  const std::vector<std::pair<std::string, std::shared_ptr<ElasticLinear>>>& own_projections() const { return own_; }
  // The kind a projection family ("attn.q", ..., "head") has in the model's own config.
  LinearKind own_kind(const std::string& family) const { return cfg_.linear_spec(family).kind; }
  int64_t parameter_count() const;

  // Sets every elastic layer, head and gate for `budget` (checked by check_budget first: an
  // invalid one throws Error and changes nothing); takes effect on the next forward.
  void apply_budget(const Budget& budget);
  const GateOptions& gate_options() const { return gate_; }
  // Other parameterizations of the own projections (core/variants/ builds them); apply_budget
  // swaps them in when Budget::kind asks.
  VariantSet& variants() { return variants_; }
  const VariantSet& variants() const { return variants_; }

  // The gate's calibration (core/gate/gate_calibration.h), read when gates and head supports are
  // built: from the next apply_budget (or apply_head_support) on.
  void set_gate_calibration(GateCalibration calibration);
  const GateCalibration& gate_calibration() const { return calib_; }
  // Only the head importance [L, H] (knockout probes), e.g. re-estimated while decoding.
  void set_head_importance(const torch::Tensor& importance);
  const torch::Tensor& head_importance() const { return calib_.head_importance; }
  // Per layer, the heads that run (all of them when head gating is off).
  std::vector<std::vector<int64_t>> active_heads() const;
  // Head support from the current importance and budget (what apply_budget does for heads);
  // clear_head_support runs every head until then (what probes need).
  void apply_head_support();
  void clear_head_support();

  // The gate while decoding: per-layer traces (a forward appends one MlpGateTrace per token row
  // to (*sink)[layer]; nullptr stops: the fast path pays nothing), accumulated statistics
  // (nullptr stops), and the last token's normalised predictive entropy H/log V for
  // token-adaptive gates.
  void set_gate_trace(std::vector<std::vector<MlpGateTrace>>* sink, bool with_oracle = false);
  void set_gate_stats(GateStats* stats);
  void set_gate_uncertainty(double h);
  // Named intermediates (core/model/forward_hook.h); an empty function clears it.
  void set_hook(ForwardHook hook);
  const ForwardHook& hook() const { return hook_; }

  torch::nn::Embedding tok_emb{nullptr};
  torch::Tensor pos_emb;  // [context, C]: learned parameter, fixed sinusoidal buffer, or undefined (rotary)
  torch::nn::ModuleList blk{nullptr};
  NormLayer ln_f{nullptr};
  // Null when tied to tok_emb, unless a budget runs the tied head as a variant (NSN, MPO) built
  // from the embedding; the embedding itself stays the input table either way.
  std::shared_ptr<ElasticLinear> head;

 private:
  // Builds (or, with policy Off, removes) every layer's MlpGate from the current weights.
  void rebuild_gates();
  // The projections `budget` runs (own or variant), in projections() order; throws Error when a
  // kind has no variant or names an unknown family.
  std::vector<std::pair<std::string, std::shared_ptr<ElasticLinear>>> planned(const Budget& budget) const;
  bool raw_decode_applies(const torch::Tensor& idx, const KvCache* cache) const;
  torch::Tensor decode_raw(int64_t token, KvCache& cache);
  std::vector<float> raw_x_, raw_a_, raw_b_, raw_h_;  // the raw step's activations, [C] each
  std::vector<float> raw_cos_, raw_sin_;              // its rotary angles, [rd/2] each
  // Rotary tables for positions pos .. pos+T-1 into every attention layer (no-op without rotary).
  void set_rope(int64_t pos, int64_t T, const torch::Device& device);
  // Puts `layer` in the slot of projection `name` (a plain pointer swap, no copy).
  void install(const std::string& name, const std::shared_ptr<ElasticLinear>& layer);
  // The ablation masks of `budget` (heads_off, blocks_off) into every layer.
  void set_ablation(const Budget& budget);

  ModelConfig cfg_;
  std::vector<Block> blocks_;
  GateOptions gate_;
  double prompt_keep_ = 1.0;
  std::set<std::pair<int64_t, int64_t>> heads_on_, blocks_on_;  // forced on (Budget)
  std::set<std::pair<int64_t, int64_t>> gate_blocks_off_;       // forced off in gate order (Budget)
  GateCalibration calib_;
  ForwardHook hook_;
  torch::Tensor rope_inv_freq_;    // [rd/2] float32: θ^(−2i/rd) over the rd rotary channels, as HF computes it
  std::vector<std::pair<std::string, std::shared_ptr<ElasticLinear>>> own_;  // registered projections
  VariantSet variants_;
};
TORCH_MODULE(Gpt);

// A hook for one scope: set on construction; the one before is back when the scope ends (return
// or throw).
class ScopedHook {
 public:
  ScopedHook(Gpt& model, ForwardHook hook) : model_(model), previous_(model->hook()) { model_->set_hook(std::move(hook)); }
  ~ScopedHook() { model_->set_hook(std::move(previous_)); }
  ScopedHook(const ScopedHook&) = delete;
  ScopedHook& operator=(const ScopedHook&) = delete;

 private:
  Gpt& model_;
  ForwardHook previous_;
};

// The fixed sinusoidal table of "Attention Is All You Need" §3.5: [context, C].
torch::Tensor sinusoidal_positions(int64_t context, int64_t channels);

}  // namespace nestscope
