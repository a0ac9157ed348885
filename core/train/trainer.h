// Trainer: next-token LM training with AdamW, warmup + cosine schedule and gradient clipping.
#pragma once
#include "core/model/transformer.h"
#include "core/progress.h"
#include "core/train/corpus.h"
#include "core/train/train_options.h"

namespace nestscope {

// Learning rate at 0-based `step`: linear warmup to lr, then cosine down to min_lr at `steps`.
double learning_rate_at(const TrainOptions& o, int64_t step);

// The loss of one step on a batch x, y ([B, T] ids); default: next-token cross-entropy.
using LossFn = std::function<torch::Tensor(const torch::Tensor& x, const torch::Tensor& y, int64_t step)>;

// Mean next-token cross-entropy of the model (at its current budget) on x -> y.
torch::Tensor next_token_loss(Gpt& model, const torch::Tensor& x, const torch::Tensor& y);

// Trains `model` in place on random context windows of corpus.train (seeded), validates on
// corpus.validation. `extra_params` (e.g. an objective's learned weights) are optimized too,
// without weight decay. Progress reports every step; a cancel throws Cancelled.
TrainResult train_model(Gpt& model, const Corpus& corpus, const TrainOptions& options,
                        const ProgressFn& progress = {}, const LossFn& loss = {},
                        const std::vector<torch::Tensor>& extra_params = {});

}  // namespace nestscope
