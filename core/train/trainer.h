// Trainer: next-token LM training with AdamW, warmup + cosine schedule and gradient clipping.
#pragma once
#include "core/model/transformer.h"
#include "core/progress.h"
#include "core/train/corpus.h"
#include "core/train/train_options.h"

namespace nestscope {

// Learning rate at 0-based `step`: linear warmup to lr, then cosine down to min_lr at `steps`.
double learning_rate_at(const TrainOptions& o, int64_t step);

// Trains `model` in place on random context windows of corpus.train (seeded), validates on
// corpus.validation. Progress reports every step; a cancel throws Cancelled.
TrainResult train_model(Gpt& model, const Corpus& corpus, const TrainOptions& options,
                        const ProgressFn& progress = {});

}  // namespace nestscope
