// Variants: a model's projections re-parameterized once (SVD factors, TT-SVD chains, dense
// matrices) so one Budget can compose NSN, MPO and dense layers without reloading anything.
#pragma once
#include <string>
#include <vector>

#include "core/model/transformer.h"
#include "core/variants/variant_report.h"
#include "core/progress.h"

namespace nestscope {

// For every own projection of `model` and every kind in `kinds` other than its own, builds the
// variant from the projection at full budget (NSN: full-rank SVD, B = U·√S, A = √S·Vᵀ; MPO:
// TT-SVD with χ capped only by the shapes; dense: the matrix), so at full rank / χ every variant
// equals the own layer. With `cache_path`, variants are read from it when it was written for
// `checkpoint_hash` and this config, and written to it (atomically) after building; a stale,
// corrupt or unwritable cache is rebuilt or skipped, never an error. The model must be at its
// full budget with no kinds swapped (Engine applies Budget{} around this). Reports {"variants",
// built, to build} per variant; a cancel throws Cancelled before the model is touched.
VariantReport build_variants(Gpt& model, const std::vector<LinearKind>& kinds, const std::string& cache_path = "",
                             const std::string& checkpoint_hash = "", const ProgressFn& progress = {});

// Where the variants of a checkpoint are cached: "<path>.variants-<hash>.safetensors" next to
// a checkpoint file, or under $XDG_CACHE_HOME/nestscope (~/.cache/nestscope) for the embedded
// model. Empty when the model has no hash (made in this session).
std::string variant_cache_path(const std::string& source, const std::string& hash, bool embedded);

}  // namespace nestscope
