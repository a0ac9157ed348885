// Metrics: cross-entropy, perplexity and token accuracy over non-overlapping context windows.
#pragma once
#include <vector>

#include "core/defaults.h"
#include "core/eval/eval_result.h"
#include "core/model/transformer.h"
#include "core/progress.h"

namespace nestscope {

// Scores every position of floor((n-1)/T) non-overlapping windows of T = context tokens:
// window w feeds tokens[wT, wT+T) and predicts tokens[wT+1, wT+T+1).
// max_windows > 0 scores only the first max_windows windows.
// With `reference`, the model is also run at that budget on every window (then put back to the
// budget it had) to fill top1_agreement and kl. Under prompt compression (Budget::prompt_keep < 1)
// each window's first half is the prompt: read, compressed, then the second half is predicted
// against the kept keys (the first half's predictions are the uncompressed ones).
// With `reference_model` (same vocabulary, at its own budget) that model is the reference instead:
// agreement and KL of a fine-tuned variant against the dense model it was distilled from.
EvalResult evaluate_tokens(Gpt& model, const std::vector<int64_t>& tokens, int64_t max_windows = 0,
                           int64_t batch = kEvalBatch, const ProgressFn& progress = {}, const Budget* reference = nullptr,
                           const Budget* budget = nullptr, Gpt* reference_model = nullptr);

// Logits of windows x [B, T] at the model's current budget: one forward, or, under prompt
// compression, the first half read as a prompt and compressed, then the second half against it.
torch::Tensor prompt_window_logits(Gpt& model, const torch::Tensor& x);

// Median wall time (ms) of one batch-1 decode step with the KV cache, over `tokens` steps after
// a `prompt`-token prefill, at the model's current budget.
double measure_decode_ms(Gpt& model, int64_t prompt = 64, int64_t tokens = 64);

}  // namespace nestscope
