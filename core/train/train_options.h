// TrainOptions / TrainResult: the trainer's plain settings and report (torch-free).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/defaults.h"
#include "core/eval/eval_result.h"

namespace nestscope {

class DataParallel;

// Defaults are the MPO paper's PicoGPT protocol.
struct TrainOptions {
  int64_t steps = 2000;
  int64_t batch = 32;
  int64_t context = 0;         // tokens per training sequence; 0 = the model's context
  int64_t warmup = 100;        // linear warmup steps, then cosine to min_lr
  double lr = 3e-4;
  double min_lr = 0.0;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double weight_decay = 0.1;   // applied to matrices and embeddings, not to biases or LayerNorms
  double grad_clip = 1.0;      // global L2 norm; 0 = off
  double train_fraction = kTrainFraction; // first part of the corpus trains, the rest validates
  uint64_t seed = 1337;
  int64_t eval_every = 0;      // 0 = evaluate at the end only
  int64_t eval_windows = 0;    // windows per intermediate evaluation; 0 = the whole split
  int threads = 0;             // 0 = $NESTSCOPE_THREADS, else all cores
  // Gate-aware training: every MLP keeps, per token, only the mlp_block_active fraction of its
  // aligned blocks of mlp_block neurons (checkpoint order) with the largest activation energy —
  // the oracle support the sensing gate estimates — so the model learns to work on it. 1 = off.
  double mlp_block_active = 1.0;
  int64_t mlp_block = kNeuronBlock;
  // Sensing-aware: with mlp_block_sensing = m > 0 the kept blocks are the ones the sensing gate
  // (PCA measurements + MMSE recovery, m of them) picks, its prior taken from each batch, instead
  // of the oracle's — the model trains on the support it will be scored with. 0 = oracle.
  int64_t mlp_block_sensing = 0;
  // Head-aware training: in every layer each sequence keeps a random head_active fraction of the
  // attention heads (at least one), the others knocked out as head gating skips them, so whichever
  // support the knockout probes pick later has been trained for. 1 = off.
  double head_active = 1.0;
  // With head_active < 1, head_global trains for the model-wide allocation (GateOptions::
  // head_global) instead: every head_reprobe_every steps the knockout probes re-rank the heads on a
  // training window, and each sequence keeps the model-wide top head_active fraction (each layer at
  // least one) of that importance times log-normal noise exp(head_noise·ε), so it is trained for
  // the supports the probes pick and their neighbours, not for one fixed set.
  bool head_global = false;
  double head_noise = 0.5;
  int64_t head_reprobe_every = 200;
  // Knowledge distillation: the loss is (1 − distill)·CE + distill·τ²·KL(teacher ‖ model) at
  // temperature τ, the teacher being the checkpoint `teacher` (empty: the embedded default model).
  // 0 = plain next-token cross-entropy. Teacher and model must share the vocabulary.
  double distill = 0.0;
  double distill_temperature = 1.0;
  std::string teacher;
  // Train the NSN and MPO projections only; embeddings, norms and dense projections stay as they
  // are, so the trained projections are variants of the untouched model (the shipped fine-tuned
  // NSN and MPO variants of the demo model are trained so).
  bool projections_only = false;
  // Data-parallel training (core/train/data_parallel.h): each of the group's ranks trains on its
  // own `batch` sequences of every step's world × batch, gradients averaged before each update,
  // so N ranks of batch b take the steps one process of batch N·b would. Null: one process.
  std::shared_ptr<DataParallel> data_parallel;

  void validate() const;       // throws Error naming the bad field
};

struct TrainLogRow {
  int64_t step = 0;
  double loss = 0;
  double lr = 0;
  double val_loss = -1;        // -1 when not evaluated at this step
  double val_token_accuracy = -1;
};

struct TrainResult {
  int64_t steps = 0;
  double final_train_loss = 0;  // mean over the last 50 steps
  double seconds = 0;
  double tokens_per_s = 0;     // every rank's tokens (data-parallel: the group's throughput)
  double communication_seconds = 0;  // data-parallel: time in gradient and loss all-reduces
  EvalResult validation;
  std::vector<TrainLogRow> log;
};

// Which budget knob the nested objective samples: NSN rank or MPO bond dimension χ.
enum class NestedAxis { Rank, Bond };

// Multi-rank NSN fine-tuning (see core/train/nsn_objective.h); with axis Bond the same objective
// samples MPO bond dimensions ("nested-χ" training) and min_rank is the lowest χ.
struct NsnTrainOptions {
  NestedAxis axis = NestedAxis::Rank;
  int64_t min_rank = 4;     // lowest global rank (or χ) ever sampled
  int64_t buckets = 8;      // log-variance buckets over [min_rank, R]
  double curriculum = 0.5;  // fraction of the steps over which the range widens to min_rank
  int64_t max_sample = 0;   // highest rank (or χ) sampled besides the anchor; 0 = the maximum.
                            // Ranks above r* cost more than dense, so capping spends the steps
                            // where the slider is useful.
  void validate(int64_t max_rank) const;  // throws Error
};

struct NsnBucketLog {
  int64_t lo = 0, hi = 0;  // ranks in this bucket
  int64_t samples = 0;     // steps that sampled it (the anchor counts in the top bucket)
  double mean_loss = 0;    // mean CE over those steps
  double sigma = 0;        // exp(s_k / 2) at the end
};

// One JSON object with the options and the result, stored in checkpoints and printed by the CLI.
std::string train_record_json(const TrainOptions& o, const TrainResult& r, int64_t corpus_bytes);

}  // namespace nestscope
