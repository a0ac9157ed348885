// `nestscope-cli mpo convert | finetune | frontier`: Matrix Product Operator layers.
#include "app/cli/command.h"
#include "core/defaults.h"
#include "core/engine/presets.h"
#include "core/io/atomic_file.h"

namespace nestscope::cli {

namespace {

struct MpoArgs : MechanismArgs {
  MpoArgs() {
    train = mpo_finetune_recipe();
    nested = nested_bond_recipe();
  }
  int64_t bond = 0;
  bool use_nested = false;  // finetune
  std::string bonds;        // frontier
};

int run_finetune(const MpoArgs& a, Engine& engine, ProgressBar& bar) {
  open_model(engine, a.common);
  TrainOptions t = a.train;
  const bool root = join_data_parallel(t, engine.info().device == "cuda");
  if (engine.info().max_bond == 0)
    engine.convert_mpo({}, a.bond > 0 ? a.bond : kAutoConvertBond, rank_bar_fn(bar, root));
  const auto r = engine.finetune_mpo(read_text_file(a.preset.corpus), t,
                                     a.use_nested ? std::optional<NsnTrainOptions>(a.nested) : std::nullopt,
                                     rank_bar_fn(bar, root));
  if (!root) return 0;
  Json j = finetune_json(r, a.out);
  j["bond"] = engine.info().max_bond;
  j["parameters"] = engine.info().parameters;
  save_and_print(engine, bar, a.out, j, a.common.json_out);
  return 0;
}

// A grid of bond dimensions through the sweep: a dense model is converted once losslessly and swept
// as live TT-SVD truncation ("tt-svd"), an MPO model as itself ("mpo").
int run_frontier(const MpoArgs& a, Engine& engine, ProgressBar& bar) {
  open_model(engine, a.common);
  const PresetArgs& p = a.preset;
  const std::string text = read_text_file(p.corpus);
  std::vector<int64_t> bonds = parse_list<int64_t>(a.bonds, "--bonds");
  if (a.bond > 0) bonds = {a.bond};
  if (bonds.empty()) bonds = default_bonds();
  const DenseReference ref = dense_reference(engine, p.dense_model, a.common.device, text, p.windows);
  const bool is_mpo = engine.info().max_bond > 0;
  if (!is_mpo) engine.convert_mpo({}, kUncappedBond, bar_fn(bar));
  const auto budgets = engine.bond_grid(bonds, is_mpo ? "mpo" : "tt-svd");
  const auto rows = sweep_preset(engine, budgets, text, p.windows, false, bar, SweepOptions{}.calibration_windows, p.reference);
  const auto info = engine.info();
  Json arr = Json::array();
  for (size_t i = 0; i < rows.size(); ++i) {
    const auto& r = rows[i];
    Json j = preset_row_json(r, info, ref.token_accuracy);
    j["allocation"] = "uniform";
    j["rank"] = 0;
    j["bond"] = budgets[i].budget.bond;
    j["compression_ratio"] = double(ref.parameters) / double(r.parameters);
    j["accuracy_vs_dense"] = r.eval.token_accuracy / ref.token_accuracy;
    arr.push_back(j);
  }
  if (!p.rows_out.empty()) write_rows(p.rows_out, arr);
  print_preset(arr, a.bond > 0 ? 0 : -1,
               a.bond > 0 ? Json::object()
                          : Json{{"dense_token_accuracy", ref.token_accuracy}, {"dense_parameters", ref.parameters}},
               a.common.json_out);
  return 0;
}

void add_finetune(CLI::App* mpo, const std::shared_ptr<MpoArgs>& a, Registry& r) {
  auto* finetune = mpo->add_subcommand("finetune", "fine-tune MPO cores (full χ, or nested-χ with --nested)");
  finetune->add_option("--corpus", a->preset.corpus, "training text; the last 10% validates")->required();
  finetune->add_option("-o,--out", a->out, "where to write the fine-tuned checkpoint")->required();
  add_training_options(finetune, a->train);
  finetune->add_flag("--nested", a->use_nested, "each step trains the full χ and one sampled χ (learned weights)");
  finetune->add_option("--min-bond", a->nested.min_rank, "lowest χ sampled with --nested")->capture_default_str();
  finetune->add_option("--buckets", a->nested.buckets, "log-variance buckets with --nested")->capture_default_str();
  finetune->add_option("--max-sample-bond", a->nested.max_sample,
                       "highest χ sampled besides the anchor with --nested (0 = max)")
      ->capture_default_str();
  finetune->add_option("--curriculum", a->nested.curriculum, "fraction of steps to widen the χ range")
      ->capture_default_str();
  finetune->add_option("--bond", a->bond, "χ when the model is dense and gets converted first")->capture_default_str();
  add_common(finetune, a->common);
  r.add(finetune, [a](Engine& e, ProgressBar& bar) { return run_finetune(*a, e, bar); });
}

}  // namespace

void add_mpo(CLI::App& app, Registry& r) {
  auto a = std::make_shared<MpoArgs>();
  auto* mpo = app.add_subcommand("mpo", "Matrix Product Operators: convert by TT-SVD, sweep bond dimensions");
  mpo->require_subcommand(1);
  auto* convert = mpo->add_subcommand("convert", "TT-SVD conversion of a dense model into MPO chains");
  convert->add_option("-o,--out", a->out, "where to write the MPO checkpoint")->required();
  convert->add_option("--families", a->families,
                      "comma-separated projections to convert (attn.q,...,mlp.down,head); default: all");
  convert->add_option("--bond", a->bond, "bond dimension χ kept")->required();
  add_common(convert, a->common);
  r.add(convert, [a](Engine& e, ProgressBar& bar) {
    return run_conversion(*a, e, bar, [a](Engine& en, const ProgressFn& p) { en.convert_mpo(split_list(a->families), a->bond, p); },
                          "bond");
  });

  add_finetune(mpo, a, r);

  auto* frontier = mpo->add_subcommand("frontier", "accuracy against parameters over bond dimensions");
  add_preset_options(frontier, a->preset);
  frontier->add_option("--bonds", a->bonds, "comma-separated bond dimensions (default 2,4,8,16,32,64)");
  frontier->add_option("--bond", a->bond, "evaluate this one bond dimension and print one object");
  add_common(frontier, a->common);
  r.add(frontier, [a](Engine& e, ProgressBar& bar) { return run_frontier(*a, e, bar); });
}

}  // namespace nestscope::cli
