// Variants: a model's projections re-parameterized once (SVD factors, TT-SVD chains, dense
// matrices) so one Budget can compose NSN, MPO and dense layers without reloading anything.
#pragma once
#include <string>
#include <vector>

#include "core/model/transformer.h"
#include "core/variants/variant_report.h"
#include "core/progress.h"

namespace nestscope {

// Projections by name and the kind each should also exist as.
using VariantNeeds = std::vector<std::pair<std::string, LinearKind>>;

// What `budget` needs: every own projection whose kind the budget changes.
VariantNeeds variant_needs(const GptImpl& model, const Budget& budget);
// Every own projection as every kind in `kinds` other than its own.
VariantNeeds variant_needs(const GptImpl& model, const std::vector<LinearKind>& kinds);

// A matrix of at least this many weights is "large": its lossless TT-SVD chain is never built.
inline constexpr int64_t kLargeMatrix = int64_t(1) << 20;
// The χ an MPO variant of `family` is built at: capped only by the shapes (lossless) for a small
// matrix; for a large one, the largest χ whose cores hold no more weights than the matrix (a
// chain bigger than the matrix it stands for compresses nothing). A function of the shapes only,
// so the same budget is the same model in a sweep, the GUI and the CLI.
int64_t variant_bond(const ModelConfig& config, const std::string& family);
// Bytes the missing variants of `needs` will hold, plus the largest conversion's working space.
int64_t variant_bytes(const GptImpl& model, const VariantNeeds& needs);

// Builds each missing variant of `needs` from the projection at full budget (NSN: full-rank SVD,
// B = U·√S, A = √S·Vᵀ; MPO: TT-SVD at variant_bond; dense: the matrix), so at full rank / χ
// every variant equals the own layer (up to the χ cap of a large matrix). Before allocating, the
// memory they need is checked against the memory free: too little is an Error saying how much is
// needed and free, and nothing changes. With `cache_path`, variants are read from it when it was
// written for `checkpoint_hash` and this config, and written to it (atomically) after building; a
// stale, corrupt or unwritable cache is rebuilt or skipped, never an error. The model must be at
// its full budget with no kinds swapped (Engine applies Budget{} around this). Reports
// {"variants", built, to build} per variant; a cancel throws Cancelled before the model is touched.
VariantReport build_variants(Gpt& model, const VariantNeeds& needs, const std::string& cache_path = "",
                             const std::string& checkpoint_hash = "", const ProgressFn& progress = {});
VariantReport build_variants(Gpt& model, const std::vector<LinearKind>& kinds, const std::string& cache_path = "",
                             const std::string& checkpoint_hash = "", const ProgressFn& progress = {});
// Writes the projections of fine-tuned variants of `base` — models whose non-projection weights
// equal base's (trained with TrainOptions::projections_only) — as base's variant file at `path`:
// build_variants then reads them from there instead of converting by SVD / TT-SVD, so a budget of
// base runs the fine-tuned projections. `origin` (what they were trained with) is stored in the
// file. Throws Error, writing nothing, when a model differs from base outside its projections, a
// projection's shape is not the variant's, or two models give the same projection and kind.
void pack_variants(const GptImpl& base, const std::string& base_hash, const std::vector<const GptImpl*>& tuned,
                   const std::string& path, const std::string& origin);
// The `origin` of a variant file written by pack_variants; empty for a plain conversion cache, a
// missing or an unreadable file.
std::string variant_file_origin(const std::string& path);

// Frees every variant that is not in `keep`.
void release_variants(Gpt& model, const VariantNeeds& keep);
// Memory the system can still give (MemAvailable), in bytes; -1 when unknown.
int64_t available_memory_bytes();

}  // namespace nestscope
