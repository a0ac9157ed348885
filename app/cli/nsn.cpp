// `nestscope-cli nsn convert | finetune | frontier`: Nested Subspace Networks.
#include <cmath>

#include "app/cli/command.h"
#include "core/engine/presets.h"
#include "core/io/atomic_file.h"

namespace nestscope::cli {

Json finetune_json(const NsnFinetuneReport& r, const std::string& out) {
  Json buckets = Json::array();
  for (const auto& b : r.buckets)
    buckets.push_back({{"lo", b.lo}, {"hi", b.hi}, {"samples", b.samples}, {"mean_loss", b.mean_loss},
                       {"sigma", b.sigma}});
  Json j = {{"out", out}, {"steps", r.train.steps}, {"seconds", r.train.seconds},
            {"tokens_per_s", r.train.tokens_per_s}, {"token_accuracy", r.train.validation.token_accuracy},
            {"loss", r.train.validation.loss}, {"perplexity", r.train.validation.perplexity}, {"buckets", buckets}};
  if (r.train.communication_seconds > 0) j["allreduce_seconds"] = r.train.communication_seconds;
  return j;
}

namespace {

struct NsnArgs : MechanismArgs {
  NsnArgs() { train = nsn_finetune_recipe(); }
  int64_t max_rank = 0;
  // frontier
  std::string ranks, fractions;
  double mac_fraction = 0;
  bool energy = false, sensitivity = false;
  int64_t calibration_windows = 8;
};

int run_finetune(const NsnArgs& a, Engine& engine, ProgressBar& bar) {
  open_model(engine, a.common);
  TrainOptions t = a.train;
  const bool root = join_data_parallel(t, engine.info().device == "cuda");
  if (engine.info().max_rank == 0) engine.convert_nsn({}, a.max_rank, rank_bar_fn(bar, root));
  const auto r = engine.finetune_nsn(read_text_file(a.preset.corpus), t, a.nested, rank_bar_fn(bar, root));
  if (root) save_and_print(engine, bar, a.out, finetune_json(r, a.out), a.common.json_out);
  return 0;
}

// A grid of ranks through the sweep: a dense model is converted at full rank first and swept as
// plain SVD truncation ("svd"), an NSN model as itself ("nsn").
int run_frontier(const NsnArgs& a, Engine& engine, ProgressBar& bar) {
  open_model(engine, a.common);
  const PresetArgs& p = a.preset;
  const std::string text = read_text_file(p.corpus);
  RankGridOptions g;
  g.ranks = parse_list<int64_t>(a.ranks, "--ranks");
  g.mac_fractions = parse_list<double>(a.fractions, "--fractions");
  if (a.mac_fraction > 0) g.mac_fractions = {a.mac_fraction};
  if (g.ranks.empty() && g.mac_fractions.empty()) g.mac_fractions = default_rank_fractions();
  g.energy_allocation = a.energy;
  g.sensitivity_allocation = a.sensitivity;
  g.calibration_windows = a.calibration_windows;
  g.calibration_text = text;
  const double dense_acc = dense_reference(engine, p.dense_model, a.common.device, text, p.windows).token_accuracy;
  const bool is_nsn = engine.info().max_rank > 0;
  if (!is_nsn) engine.convert_nsn({}, 0, bar_fn(bar));
  const auto budgets = engine.rank_grid(g, is_nsn ? "nsn" : "svd", bar_fn(bar));
  const auto rows = sweep_preset(engine, budgets, text, p.windows, false, bar, SweepOptions{}.calibration_windows, p.reference);
  const auto info = engine.info();
  Json arr = Json::array();
  for (size_t i = 0; i < rows.size(); ++i) {
    const Budget& b = budgets[i].budget;
    Json j = preset_row_json(rows[i], info, dense_acc);
    j["allocation"] = budgets[i].label.substr(0, budgets[i].label.find(' '));
    double mean = double(b.rank);
    if (!b.layer_rank.empty()) {
      mean = 0;
      for (const auto& [n, r] : b.layer_rank) mean += double(r);
      mean /= double(b.layer_rank.size());
    }
    j["rank"] = int64_t(std::llround(mean));
    arr.push_back(j);
  }
  if (!p.rows_out.empty()) write_rows(p.rows_out, arr);
  print_preset(arr, a.mac_fraction > 0 ? 0 : -1, a.mac_fraction > 0 ? Json::object() : Json{{"dense_token_accuracy", dense_acc}},
               a.common.json_out);
  return 0;
}

}  // namespace

void add_nsn(CLI::App& app, Registry& r) {
  auto a = std::make_shared<NsnArgs>();
  auto* nsn = app.add_subcommand("nsn", "Nested Subspace Networks: convert, fine-tune, sweep ranks");
  nsn->require_subcommand(1);

  auto* convert = nsn->add_subcommand("convert", "surgical conversion of a dense model by truncated SVD");
  convert->add_option("-o,--out", a->out, "where to write the NSN checkpoint")->required();
  convert->add_option("--families", a->families,
                      "comma-separated projections to convert (attn.q,attn.k,attn.v,attn.o,mlp.up,mlp.down,head); "
                      "default: attention and MLP");
  convert->add_option("--max-rank", a->max_rank, "largest rank R kept (0 = full)")->capture_default_str();
  add_common(convert, a->common);
  r.add(convert, [a](Engine& e, ProgressBar& bar) {
    return run_conversion(
        *a, e, bar, [a](Engine& en, const ProgressFn& p) { en.convert_nsn(split_list(a->families), a->max_rank, p); },
        "max_rank");
  });

  auto* finetune = nsn->add_subcommand("finetune", "multi-rank fine-tuning with learned per-rank log-variances");
  finetune->add_option("--corpus", a->preset.corpus, "training text; the last 10% validates")->required();
  finetune->add_option("-o,--out", a->out, "where to write the fine-tuned checkpoint")->required();
  add_training_options(finetune, a->train);
  finetune->add_option("--min-rank", a->nested.min_rank, "lowest rank sampled")->capture_default_str();
  finetune->add_option("--buckets", a->nested.buckets, "log-variance buckets")->capture_default_str();
  finetune->add_option("--max-sample-rank", a->nested.max_sample,
                       "highest rank sampled besides the full-rank anchor (0 = R)")
      ->capture_default_str();
  finetune->add_option("--curriculum", a->nested.curriculum, "fraction of steps to widen the rank range")
      ->capture_default_str();
  finetune->add_option("--max-rank", a->max_rank, "R when the model is dense and gets converted first (0 = full)")
      ->capture_default_str();
  add_common(finetune, a->common);
  r.add(finetune, [a](Engine& e, ProgressBar& bar) { return run_finetune(*a, e, bar); });

  auto* frontier = nsn->add_subcommand("frontier", "accuracy against linear-layer MACs over NSN ranks");
  add_preset_options(frontier, a->preset);
  frontier->add_option("--ranks", a->ranks, "comma-separated global ranks");
  frontier->add_option("--fractions", a->fractions, "comma-separated fractions of dense linear MACs");
  frontier->add_option("--mac-fraction", a->mac_fraction, "evaluate the one budget closest to this fraction");
  frontier->add_flag("--energy", a->energy, "also evaluate per-layer ranks allocated by spectral energy");
  frontier->add_flag("--sensitivity", a->sensitivity,
                     "also evaluate per-layer ranks allocated by measured loss sensitivity");
  frontier->add_option("--calibration-windows", a->calibration_windows,
                       "training-split windows that measure the sensitivity")
      ->capture_default_str();
  add_common(frontier, a->common);
  r.add(frontier, [a](Engine& e, ProgressBar& bar) { return run_frontier(*a, e, bar); });
}

}  // namespace nestscope::cli
