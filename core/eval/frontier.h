// Frontier results: one row per (model, budget), their append-only JSON-lines file, the Pareto
// front, and how smooth (predictable) each method's accuracy-vs-MACs curve is. Torch-free.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/eval/eval_result.h"

namespace nestscope {

struct SweepRow {
  std::string key;            // identifies (model, evaluation, method, label, budget): resume key
  std::string model;          // checkpoint source
  std::string model_hash;
  std::string method, label;  // series and point, from the NamedBudget
  std::string budget_json;    // budget_to_json of the budget
  std::string resolved_json;  // with Budget::mac_target: the budget the joint knob chose (else empty)
  std::string evaluated_on;   // "text" (validation split of a text) or "continuations" (of the full model)
  // What was scored and against what (the text's hash and split, windows, calibration, the
  // reference model): rows of one sweep share it, so shards of one sweep can be checked before
  // they are merged. Empty in files written before it was recorded.
  std::string evaluation;
  int64_t grid_index = -1;    // the budget's position in the swept grid (-1: not recorded)
  int64_t macs = 0;           // whole model, one decode step at full context (gate: measured mean)
  int64_t dense_macs = 0;     // the same for the dense model
  double mac_fraction = 1;    // macs / dense_macs
  int64_t linear_macs = 0;    // projections only (gate rows: as parameterized, before gating)
  int64_t parameters = 0;     // in use at this budget
  EvalResult eval;            // token accuracy (+ CI), perplexity; agreement and KL vs the full model
  double mlp_mac_fraction = 1;  // gate rows: MLP MACs spent (measurement included) / dense MLP
  double ms_per_token = 0;    // measured batch-1 decode step (median), 0 when not measured
  // Gate details (SweepOptions::gate_details; -1 otherwise): the mean block-support F1 against the
  // oracle top-k (-1 for rows without a sensing, static or random gate), measurement + recovery
  // MACs / dense MLP MACs, the per-layer head-support F1 against exhaustive knockout (-1 without
  // head gating), and attention projection MACs / dense ones (from the model's MAC count).
  double support_f1 = -1, overhead_fraction = -1, head_f1 = -1, attn_mac_fraction = -1;
  bool resumed = false;       // read back from the results file, not computed in this run
  // Non-empty when the budget could not be evaluated (out of range for this model, out of memory,
  // ...): the row then carries only its identity and this message, the sweep goes on, and a
  // resumed sweep tries it again. Fronts, fits and charts skip such rows.
  std::string error;
};

// One JSON object per line (no newline inside).
std::string sweep_row_to_json(const SweepRow& row);
SweepRow sweep_row_from_json(const std::string& line);  // throws Error

// What reading a results file does with a torn last line (a writer that died mid-line).
enum class TornLine {
  Cut,     // cut it off the file so appends stay line-aligned (resuming a sweep)
  Skip,    // leave the file as it is and read the complete lines (opening it to look at)
  Refuse,  // throw Error (merging: a shard that was still being written)
};
// Reads a results file: every complete, valid line; `note` says what happened to a torn last line.
// A missing file is empty. Any other bad line throws Error (the file is not ours, or was edited):
// nothing is overwritten.
std::vector<SweepRow> read_sweep_rows(const std::string& path, std::string* note = nullptr,
                                      TornLine torn = TornLine::Cut);
// Appends one line and flushes it to disk before returning.
void append_sweep_row(const std::string& path, const SweepRow& row);

// Sharded sweeps: shard `index` of `count` evaluates the budgets whose identity (method, label and
// budget JSON: not the model, not the grid's order) hashes to it, so a budget stays in its shard
// when the grid grows and every model of a run shards its grid the same way.
struct Shard {
  int64_t index = 0, count = 1;
  bool all() const { return count == 1; }
};
Shard parse_shard(const std::string& text);  // "i/n", 0 <= i < n; throws Error
bool in_shard(const Shard& shard, const std::string& method, const std::string& label, const std::string& budget_json);

// Joins the results files of one sharded sweep: every file complete (a torn one is refused), every
// row scored the same way (SweepRow::evaluation), every non-empty file holding the same models;
// a budget in several files is kept once (a finished row over a failed one). Rows come back in
// grid order per model, models in the order the files first name them, as one unsharded run
// prints them. Throws Error, naming the file, when the files are not shards of one sweep.
struct MergedRows {
  std::vector<SweepRow> rows;
  int64_t duplicates = 0;  // rows dropped because another file had the same budget
};
MergedRows merge_sweep_files(const std::vector<std::string>& paths);

// Indices of rows on the Pareto front of (fewer MACs, higher token accuracy), by ascending MACs.
// With use_agreement, top-1 agreement with the full model replaces token accuracy.
std::vector<size_t> pareto_front(const std::vector<SweepRow>& rows, bool use_agreement = false);

// How predictable a method's frontier is: accuracy fitted as a quadratic in log(MACs) (a line with
// fewer than 4 points), and the leave-one-out error when predicting each interior budget (not the
// cheapest or dearest: those would be extrapolations) from all the others.
struct FrontierFit {
  std::string method;
  int64_t points = 0;
  std::vector<double> coef;  // accuracy ≈ Σ coef[i]·log(macs)^i
  double rmse = 0;           // in-sample, accuracy units (0..1)
  double loo_mae = -1;       // interior leave-one-out mean absolute error (-1: fewer than 3 points)
  double loo_max = -1;       // interior leave-one-out worst absolute error
};
std::vector<FrontierFit> fit_frontiers(const std::vector<SweepRow>& rows, bool use_agreement = false);

// The accuracy a budget should reach, read off the frontier: among rows of the model `model_hash`
// whose budgets have the same structure as `budget_json` (same kinds, gate policy, head gating,
// prompt compression, and which of rank / χ is set), linear interpolation in log MACs at `macs`
// (clamped to the measured range). -1 when no such row exists.
double estimate_accuracy(const std::vector<SweepRow>& rows, const std::string& model_hash,
                         const std::string& budget_json, double macs);
// For a budget of a kind no row has: the best accuracy any row of the model reaches at or below
// `macs` (the Pareto front, interpolated the same way), an upper bound. -1 when there are no rows.
double pareto_accuracy(const std::vector<SweepRow>& rows, const std::string& model_hash, double macs);

// An upper bound on the accuracy of a composed budget no series holds (say MPO at χ = 4 with the
// gate at 50%): the least of the Pareto front at `macs` and of each of the budget's parts swept
// alone — its parameterization (kinds with rank or χ), its gate, its prompt compression — read off
// that part's own series by the part's knob (rank, χ, active fraction, keep fraction). Cutting
// compute in one part is taken not to raise the accuracy another part allows. `from` names what
// bounds it ("the best swept budget at these MACs", "χ = 4 alone", …); accuracy -1 when no rows.
struct AccuracyBound {
  double accuracy = -1;
  std::string from;
};
AccuracyBound accuracy_bound(const std::vector<SweepRow>& rows, const std::string& model_hash,
                             const std::string& budget_json, double macs);

}  // namespace nestscope
