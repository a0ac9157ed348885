// Metrics: cross-entropy, perplexity and token accuracy over non-overlapping context windows.
#pragma once
#include <vector>

#include "core/eval/eval_result.h"
#include "core/model/transformer.h"
#include "core/progress.h"

namespace nestscope {

// Scores every position of floor((n-1)/T) non-overlapping windows of T = context tokens:
// window w feeds tokens[wT, wT+T) and predicts tokens[wT+1, wT+T+1).
// max_windows > 0 scores only the first max_windows windows.
EvalResult evaluate_tokens(Gpt& model, const std::vector<int64_t>& tokens, int64_t max_windows = 0,
                           int64_t batch = 16, const ProgressFn& progress = {});

}  // namespace nestscope
