// Multi-rank fine-tuning of an NSN model with the uncertainty-weighted objective
// L = Σ_k exp(−s_k)·CE_k + s_k, one learned log-variance s_k per rank bucket (NSN paper, §3.3;
// Kendall et al. 2018 for the weighting). Each step trains the anchor (full) rank and one
// sampled rank; a curriculum widens the sampled range from the top rank down to min_rank.
#pragma once
#include <vector>

#include "core/train/trainer.h"

namespace nestscope {

struct NsnTrainResult {
  TrainResult train;
  std::vector<NsnBucketLog> buckets;
  torch::Tensor log_var;  // [K] learned s_k, saved as "train.nsn.log_var"
};

// Bucket of a global rank r in [min_rank, R].
int64_t nsn_bucket(int64_t r, int64_t min_rank, int64_t max_rank, int64_t buckets);
// The lowest rank the curriculum allows at `step`.
int64_t nsn_curriculum_floor(const NsnTrainOptions& n, int64_t max_rank, int64_t step, int64_t steps);

// `model` must have NSN layers. `log_var` continues a previous run's s_k when defined. With
// options.distill > 0 every sampled rank learns from `teacher` (see train_model).
NsnTrainResult train_nsn_multirank(Gpt& model, const Corpus& corpus, const TrainOptions& options,
                                   const NsnTrainOptions& nsn, const ProgressFn& progress = {},
                                   torch::Tensor log_var = {}, Gpt* teacher = nullptr);

}  // namespace nestscope
