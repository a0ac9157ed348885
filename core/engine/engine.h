// Engine: the only API the GUI and the CLI use. Torch-free: it hands out plain structs.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/defaults.h"
#include "core/eval/eval_result.h"
#include "core/eval/frontier.h"
#include "core/model/budget_json.h"
#include "core/variants/variant_report.h"
#include "core/model/budget.h"
#include "core/model/config.h"
#include "core/progress.h"
#include "core/train/self_corpus.h"
#include "core/train/train_options.h"

namespace nestscope {

struct ModelInfo {
  std::string source;          // file path or "<embedded default model>"
  std::string hash;            // of the checkpoint's bytes (empty: made in this session)
  ModelConfig config;
  std::string tokenizer_kind;
  int64_t parameters = 0;
  int64_t macs_per_token = 0;  // one decode step at a full context
  std::string device;          // "cpu" or "cuda"
  std::string weights;         // "f32" or "bf16": how the embedding and dense projections are stored
  std::string training_json;   // what the trainer recorded, "{}" if nothing
  int64_t max_rank = 0;        // largest NSN rank (0 = no rank-elastic layers)
  int64_t max_bond = 0;        // largest MPO bond dimension χ (0 = no bond-elastic layers)
  int64_t active_parameters = 0;  // in use at the current budget
  int64_t linear_macs = 0;        // projection MACs per token at the current budget
  int64_t dense_linear_macs = 0;  // the same for the dense equivalent
  int64_t dense_macs_per_token = 0;  // the whole dense model, one token at full context
  // Slider ranges over the model's own layers and the variants built so far (prepare_variants).
  int64_t rank_limit = 0;
  int64_t bond_limit = 0;
};

// Budget lists of the mechanism presets (`nsn frontier`, `mpo frontier`, `gate frontier`): grids
// for Engine::sweep like the built-in ones.
struct RankGridOptions {
  std::vector<int64_t> ranks;           // uniform global ranks
  std::vector<double> mac_fractions;    // uniform ranks closest to these fractions of dense linear MACs
  bool energy_allocation = false;       // also per-layer ranks by spectral energy, per fraction
  bool sensitivity_allocation = false;  // ... and by measured loss sensitivity
  std::string calibration_text;         // its training split measures the sensitivity
  int64_t calibration_windows = 8;
};

struct GateGridOptions {
  std::vector<GatePolicy> policies = {GatePolicy::Sensing, GatePolicy::Oracle, GatePolicy::Static, GatePolicy::Random};
  std::vector<double> actives = {0.5};      // fractions of MLP blocks kept
  std::vector<int64_t> measurements = {0};  // m values for the sensing policy (0 = N/16)
  int64_t block = kNeuronBlock;
  int64_t iters = 1;                        // block IHT iterations
  MeasurementKind measurement = MeasurementKind::Rademacher;
  Recovery recovery = Recovery::Iht;
  uint64_t seed = 0;
  bool clustered = true;                    // blocks follow the co-activation neuron order
  // Head rows (MLP ungated): per fraction, heads ranked by the probes, by exhaustive knockout and at
  // random (GateOptions::head_ranking).
  std::vector<double> head_actives;
  bool head_global = false;
  int64_t head_probes = 0;                  // knockout probes (0 = 2·L·H)
};

struct NsnFinetuneReport {
  TrainResult train;
  std::vector<NsnBucketLog> buckets;  // per-rank-bucket loss and learned σ
};

struct GenerateOptions {
  int64_t max_new_tokens = 200;
  double temperature = 0.8;  // 0 = greedy
  int64_t top_k = 0;         // 0 = off
  uint64_t seed = 0;
  bool trace_oracle = false;  // gate traces also carry the oracle's top-k blocks (costs a full up-projection)
};

struct GeneratedToken {
  int64_t index = 0;    // 0-based position among the generated tokens
  int64_t id = 0;
  std::string text;     // the decoded piece, always valid UTF-8: bytes of a character that byte-level tokens
                        // split arrive with the token that completes it (so a piece may be empty), bytes
                        // that form no character show as U+FFFD
  double prob = 0;      // model probability of the chosen token
  double entropy = 0;   // predictive entropy (nats) before choosing it
  int64_t macs = 0;     // MACs of the forward step that produced it, at the budget then in force
  std::vector<MlpGateTrace> gate;  // per layer, the MLP blocks that step used (empty: no gate)
  std::vector<std::vector<int64_t>> heads;  // per layer, the attention heads that ran
  std::vector<std::pair<std::string, double>> top;  // the 5 likeliest tokens (temperature 1) and their probabilities
  bool heads_reprobed = false;  // the head support was re-estimated just before this step (high entropy)
  int64_t probe_macs = 0;       // MACs those knockout probes spent (included in `macs`)
  std::string bytes;  // this token's own raw bytes (all tokens' bytes concatenated = the decoded ids)
  int64_t dense_macs = 0;  // what the dense model spends on the same step (same tokens in context)
};

struct GenerateResult {
  std::string text;          // everything generated (without the prompt)
  int64_t prompt_tokens = 0;
  int64_t generated_tokens = 0;
  double prefill_ms = 0;
  double decode_ms = 0;
  double tokens_per_s = 0;   // decode throughput
  bool stopped = false;      // the callback asked to stop early
  bool ended = false;        // the model wrote an end-of-text token (the tokenizer's stop_ids; not shown)
  // With Budget::prompt_keep < 1: the prompt tokens (0-based) whose keys/values stayed cached.
  std::vector<int64_t> kept_prompt_tokens;
  // With Budget::mac_target: the split the joint knob chose for this prompt (core/eval/joint_split.h).
  struct Joint {
    bool used = false;
    double active = 1;        // gate active fraction (1 = gate off)
    double prompt_keep = 1;
    double mac_fraction = 1;  // mean MACs per generated token / without gate and compression
    double kl = 0;            // measured on the calibration text
    double agreement = 1;
    bool fits = true;         // false: the target was below every candidate; the cheapest ran
  } joint;
};

// How Engine::sweep evaluates each budget.
struct SweepOptions {
  std::string text;              // evaluation text; empty = continuations sampled from the full model
  bool validation_split = true;  // score the last 10% of `text` (gate calibration uses the first 90%)
  int64_t max_windows = 0;       // 0 = every context window
  int64_t continuations = 8;     // sequences of one context each, when `text` is empty
  uint64_t seed = 0;             // continuation sampling
  int64_t calibration_windows = 8;  // gate calibration windows
  bool measure_latency = true;
  std::string results;           // JSON-lines file: rows already in it are reused, new rows appended
  bool gate_details = false;     // fill SweepRow's gate details (support and head F1, overhead, attention MACs)
  // Agreement and KL against this checkpoint or Hugging Face folder (the dense model a variant was
  // fine-tuned from) instead of the swept model at full budget; empty = the latter.
  std::string reference_model;
  Shard shard;                   // evaluate only this shard's budgets (frontier --shard i/n)
  std::function<void(const SweepRow&)> on_row;  // each row as it finishes (or is reused), in grid order
};

// One projection as the teaching view draws it (plain values, row-major matrices).
struct LayerView {
  std::string name;                   // "blk.0.mlp.up"
  int64_t rows = 0, cols = 0;         // W is [out, in]
  std::vector<double> singular_values;  // descending, of W at full budget
  int64_t rank = 0;                   // the rank shown
  double energy_retained = 1;         // Σ_{i<r} σ_i² / Σ σ_i²
  double rank_error = 0;              // ‖W − W_r‖_F / ‖W‖_F (Eckart–Young: √(1 − energy))
  std::vector<float> weight, reconstruction;  // W and W_r, rows × cols
  // The MPO chain of W at bond dimension `bond` (TT-SVD, sites as the MPO layers use them).
  int64_t bond = 0;
  std::vector<int64_t> out_factors, in_factors, bond_dims;  // bond_dims: D_0 … D_L at χ
  double bond_error = 0;              // ‖W − W_χ‖_F / ‖W‖_F
  int64_t mpo_params = 0;             // parameters of the chain at χ
};

// Called for every generated token; return false to stop.
using TokenFn = std::function<bool(const GeneratedToken&)>;

class Engine {
 public:
  Engine();
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Loading validates the whole file first; on error the current model stays loaded. `path` is a
  // NestScope checkpoint or a Hugging Face model folder (core/io/hf_model.h); `weights` says how
  // its weights stay in memory (Auto: bfloat16 for a bfloat16 folder, else float32).
  void load(const std::string& path, WeightStorage weights = WeightStorage::Auto);
  // Writes the current model at the current budget as a Hugging Face folder; returns its model_type.
  std::string export_hf(const std::string& dir) const;
  void load_default(WeightStorage weights = WeightStorage::Auto);  // Auto: float32
  bool has_model() const;
  ModelInfo info() const;  // throws Error when no model is loaded
  // "auto" (CUDA when present), "cpu" or "cuda".
  void set_device(const std::string& device);
  static bool cuda_available();
  // NestScope's own CUDA kernels (core/cuda): "compiled, N device(s)", "compiled, no usable
  // device" or "not compiled (...)". Without them a CUDA model runs on LibTorch's ops alone.
  static std::string cuda_kernels();

  // Streams tokens after the prompt. The prompt must be non-empty, valid UTF-8, in the
  // vocabulary and shorter than the context; generation past the context keeps the latest
  // half of the context and re-reads it (a sliding window).
  GenerateResult generate(const std::string& prompt, const GenerateOptions& options, const TokenFn& on_token = {});

  // Scores the text's tokens (the last (1 - train_fraction) of it when `validation_split`); with
  // max_windows > 0 only the first that many context windows.
  EvalResult evaluate(const std::string& text, bool validation_split, double train_fraction = kTrainFraction,
                      const ProgressFn& progress = {}, int64_t max_windows = 0);

  // Trains on `corpus_text`: a fresh model of `config` with a character vocabulary built from the
  // corpus (config.vocab_size is set from it), or, with `continue_current`, the loaded model.
  // The trained model becomes the current one only when training finished.
  TrainResult train(const std::string& corpus_text, const ModelConfig& config, const TrainOptions& options,
                    bool continue_current = false, const ProgressFn& progress = {});
  // Atomic save of the current model, tokenizer, training record and objective state.
  void save(const std::string& path) const;

  // Budgets act on the next token; an invalid one throws and changes nothing. A budget that
  // composes kinds (Budget::kind) builds the model's variants first, once (prepare_variants).
  void set_budget(const Budget& budget);
  Budget budget() const;
  // Builds the model's other parameterizations (NSN by SVD, MPO by TT-SVD, dense) from its own
  // weights, or reads them from the cache next to the checkpoint; no-op when they exist. Progress
  // reports each variant built; a cancel leaves the model without the new variants.
  VariantReport prepare_variants(const std::vector<LinearKind>& kinds, const ProgressFn& progress = {});
  void set_variant_cache(bool on);  // default on; off = build in memory only
  // The projection `name` of the loaded model at full budget: its spectrum, its best rank-`rank`
  // approximation, and its MPO chain truncated to χ = `bond` (rank / bond 0 = full). Throws Error
  // on an unknown name or an out-of-range rank or χ. The budget is left as it was.
  LayerView layer_view(const std::string& name, int64_t rank, int64_t bond);
  std::vector<std::string> projection_names() const;
  // Multiply-accumulates of one token at position context_len-1, per part, at the current budget.
  std::vector<std::pair<std::string, int64_t>> mac_breakdown(int64_t context_len) const;

  // A built-in list of budgets for the current model: "default" sweeps every mechanism the model
  // supports (a dense model: dense, SVD truncation, TT-SVD truncation, the sensing gate, and the
  // compositions SVD-MLP + TT-SVD-attention and SVD-attention + gate; an NSN or MPO model: its own
  // slider, plus gate and cross-kind compositions). Throws Error on an unknown name.
  std::vector<NamedBudget> grid(const std::string& name) const;
  // The mechanism presets' grids. rank_grid: uniform ranks labelled "uniform r=32", and per
  // fraction the uniform rank closest to it ("uniform 50%"), per-layer energy ("energy 50%") and
  // sensitivity ("sensitivity 50%") allocations; needs rank-elastic layers (convert_nsn first).
  std::vector<NamedBudget> rank_grid(const RankGridOptions& options, const std::string& method,
                                     const ProgressFn& progress = {});
  // Bond dimensions "χ=8", each checked against the largest χ of the model; needs MPO layers.
  std::vector<NamedBudget> bond_grid(const std::vector<int64_t>& bonds, const std::string& method) const;
  // The ungated model ("off"), then policy × active fraction × m, then per head fraction the heads
  // ranked by probes, oracle and at random (method "gate", labels name the point).
  std::vector<NamedBudget> gate_grid(const GateGridOptions& options) const;
  // Evaluates each budget: MACs, parameters, token accuracy with its 95% interval and perplexity
  // on `options.text` (or on continuations of the full model), top-1 agreement and KL against the
  // full model, measured ms/token. Each row is appended to options.results as soon as it is done,
  // and rows already there (same model, evaluation and budget) are returned without recomputing:
  // a cancelled or crashed sweep resumes where it stopped. The budget is restored afterwards.
  std::vector<SweepRow> sweep(const std::vector<NamedBudget>& budgets, const SweepOptions& options,
                              const ProgressFn& progress = {}, std::string* note = nullptr);

  // Surgical NSN conversion of the current model by truncated SVD (`families` empty = attention
  // q/k/v/o and MLP up/down; max_rank 0 = full rank). The current model is replaced only on success.
  // Progress reports each converted projection; a cancel leaves the current model as it was.
  void convert_nsn(const std::vector<std::string>& families, int64_t max_rank, const ProgressFn& progress = {});
  // Multi-rank fine-tuning of the current NSN model; it is replaced only when training finished.
  NsnFinetuneReport finetune_nsn(const std::string& corpus_text, const TrainOptions& options,
                                 const NsnTrainOptions& nsn, const ProgressFn& progress = {});
  // MPO conversion of the current model by TT-SVD (`families` empty = every projection, the LM
  // head included) at bond dimension χ = `bond`. The current model is replaced only on success.
  void convert_mpo(const std::vector<std::string>& families, int64_t bond, const ProgressFn& progress = {});
  // Fine-tunes the current MPO model (autograd through the cores). With `nested`, every step
  // trains the full χ and one sampled χ under the NSN objective (nested.axis is set to Bond), so
  // every χ of the slider stays good; without, it trains at the full χ only. The model is
  // replaced only when training finished.
  NsnFinetuneReport finetune_mpo(const std::string& corpus_text, const TrainOptions& options,
                                 const std::optional<NsnTrainOptions>& nested, const ProgressFn& progress = {});

  // Writes the projections of `tuned` (checkpoints fine-tuned from the current model with
  // TrainOptions::projections_only) as the current model's variant file `out` (see
  // pack_variants in core/variants/variants.h); placed at variant_cache_path(hash) it makes every
  // NSN / MPO budget of the current model run the fine-tuned projections.
  void pack_variants(const std::vector<std::string>& tuned, const std::string& out, const std::string& origin) const;

  // A distillation corpus sampled from the current model at its current budget (see
  // core/train/self_corpus.h): for a pretrained model whose training text is not at hand.
  SelfCorpus sample_corpus(const SelfCorpusOptions& options, const ProgressFn& progress = {});

  // Calibrates the sensing gate on `text` (its first `max_windows` context windows; a prompt works:
  // the task-conditioned prior): per-neuron energy (static policy), the co-activation neuron order
  // for `block`, and the MLP input mean / covariance (MMSE recovery, PCA measurement). Throws Error
  // on an empty or out-of-vocabulary text; the model's weights are untouched.
  void calibrate_gate(const std::string& text, int64_t block, uint64_t seed = 0, int64_t max_windows = 8);

 private:
  struct Impl;
  friend class ModelScope;
  friend struct FineTune;
  std::unique_ptr<Impl> impl_;
};

// Sets LibTorch's intra-op threads (0 = $NESTSCOPE_THREADS if set, else all cores) and
// OpenBLAS's to 1 (see engine.cpp).
// Called by Engine's constructor.
void init_threads(int threads = 0);
// LibTorch's intra-op threads now.
int current_threads();

}  // namespace nestscope
