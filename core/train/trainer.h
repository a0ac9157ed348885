// Trainer: next-token LM training with AdamW, warmup + cosine schedule and gradient clipping.
#pragma once
#include "core/model/transformer.h"
#include "core/progress.h"
#include "core/train/corpus.h"
#include "core/train/train_options.h"

namespace nestscope {

// Learning rate at 0-based `step`: linear warmup to lr, then cosine down to min_lr at `steps`.
double learning_rate_at(const TrainOptions& o, int64_t step);

// One training batch: ids x -> y ([B, T]) and, when distilling, the teacher's probabilities at the
// distillation temperature ([B, T, V], no grad) with their mean Σ p·log p per token, the weight
// and the temperature.
struct Batch {
  torch::Tensor x, y;
  torch::Tensor teacher_p;   // undefined = no distillation
  double teacher_plogp = 0;  // mean over tokens of Σ_v p log p (KL = this − Σ_v p log q)
  double distill = 0.0;
  double temperature = 1.0;
};

// `batch` with the teacher's distribution over its inputs at temperature τ filled in.
void add_teacher(Batch& batch, Gpt& teacher, double distill, double temperature);

// The loss of one step on a batch; default: next_token_loss.
using LossFn = std::function<torch::Tensor(const Batch& batch, int64_t step)>;

// The model's (at its current budget) next-token loss on a batch: mean cross-entropy, mixed with
// τ²·KL(teacher ‖ model) at temperature τ when the batch carries the teacher's log-probabilities.
torch::Tensor next_token_loss(Gpt& model, const Batch& batch);

// Gate-aware training (TrainOptions::mlp_block_active) as a forward hook: under autograd every MLP
// keeps, per token, the `active` fraction of its blocks of `block` neurons with the largest
// activation energy — the oracle support the sensing gate estimates — or, with sensing = m > 0,
// the blocks the PCA + MMSE gate would pick with m measurements, its prior taken from the batch's
// MLP inputs. active = 1: a hook that changes nothing. Throws Error on a block that does not divide
// the MLP width, an active fraction outside (0, 1] or m < 0. `model` must outlive the hook.
ForwardHook gate_aware_hook(Gpt& model, double active, int64_t block, int64_t sensing = 0);
// One hook that runs `hooks` in order, each on the previous one's output.
ForwardHook chain_hooks(std::vector<ForwardHook> hooks);

// Head-aware training for the model-wide allocation (TrainOptions::head_global): [batch, L, H]
// 0/1 masks, row b = head_support(importance·exp(noise·ε_b), active, global) with ε_b ~ N(0, 1)
// per head, drawn from torch's generator. importance [L, H] must be positive.
torch::Tensor sample_head_masks(const torch::Tensor& importance, double active, double noise, int64_t batch);

// Trains `model` in place on random context windows of corpus.train (seeded), validates on
// corpus.validation. `extra_params` (e.g. an objective's learned weights) are optimized too,
// without weight decay. With options.distill > 0, `teacher` (same vocabulary, context at least
// the model's; not trained) gives every batch its soft targets. Progress reports every step; a
// cancel throws Cancelled.
TrainResult train_model(Gpt& model, const Corpus& corpus, const TrainOptions& options,
                        const ProgressFn& progress = {}, const LossFn& loss = {},
                        const std::vector<torch::Tensor>& extra_params = {}, Gpt* teacher = nullptr);

}  // namespace nestscope
