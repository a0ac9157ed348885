// Model conversion: the same network re-parameterized (e.g. dense -> NSN by truncated SVD).
#pragma once
#include <string>
#include <vector>

#include "core/model/transformer.h"
#include "core/progress.h"

namespace nestscope {

// A new model of `target` (same shapes as src's config, other LinearSpecs): every projection is
// filled by load_from_dense(src projection), every other tensor copied. Throws Error when the
// configs differ in anything but the parameterization. Reports {"convert", projections done, all}
// after each projection; a cancel throws Cancelled and src is untouched.
Gpt convert_model(Gpt& src, const ModelConfig& target, const ProgressFn& progress = {});

// A deep copy (same config, same parameter values, same device).
Gpt clone_model(Gpt& src);

// src's config with `families` (empty = attention q/k/v/o and MLP up/down) made NSN of max rank R
// (0 = full rank min(d_in, d_out)).
ModelConfig nsn_config(const ModelConfig& src, const std::vector<std::string>& families, int64_t max_rank);

// src's config with `families` (empty = every projection, the LM head included, as published)
// made MPO chains of bond dimension `bond`, with each family's balanced default factors.
ModelConfig mpo_config(const ModelConfig& src, const std::vector<std::string>& families, int64_t bond);

}  // namespace nestscope
