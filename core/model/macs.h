// What one token costs a model at its current budget: multiply-accumulates per part and parameters
// in use, counted from the real shapes (head gating, grouped-query attention, the gate's
// measurement + recovery + chosen blocks included).
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/model/transformer.h"

namespace nestscope {

// MACs for one token at position `context_len`-1: the sum of mac_breakdown.
int64_t macs_per_token(const GptImpl& model, int64_t context_len);
// The same per part, named "blk.0.attn.q", ..., "blk.0.attn.scores", "blk.0.mlp.up" (or
// "blk.0.mlp.gated" under the gate: measurement + recovery + the chosen blocks at the gate's
// current m and k), "head".
std::vector<std::pair<std::string, int64_t>> mac_breakdown(const GptImpl& model, int64_t context_len);
// macs_per_token without the gated MLPs' estimates (the decode loop adds what each gate's trace
// says it spent). No allocation: it runs once per generated token.
int64_t macs_without_gated_mlp(const GptImpl& model, int64_t context_len);
// The projections alone, one token, at the current budget (a tied head counted as the product
// with the embedding it is).
int64_t linear_macs_per_token(const GptImpl& model);
// Parameters in use at the current budget (a truncated NSN layer counts r·(in+out) + bias).
int64_t active_parameter_count(const GptImpl& model);

}  // namespace nestscope
