// `nestscope-cli frontier`: one sweep over budgets of one or more models, a table, a plot.
#include <cstdio>
#include <iostream>

#include "app/cli/command.h"
#include "core/io/atomic_file.h"
#ifdef NESTSCOPE_PLOT
#include "widgets/frontier_chart.h"
#endif

namespace nestscope::cli {

namespace {

struct FrontierArgs {
  std::string model;               // empty = the embedded default model
  std::vector<std::string> with;   // more checkpoints swept with the same grid (e.g. NSN, MPO fine-tunes)
  std::string device = "auto";
  std::string budgets;             // budget file, or
  std::string grid;                // a built-in grid name
  std::string eval;                // evaluation text; empty = continuations of each full model
  std::string split = "val";
  std::string reference;           // agreement / KL against this model instead of each full model
  int64_t windows = 0;
  int64_t continuations = 8;
  bool latency = true;
  bool gate_details = false;       // support / head F1 against the oracle, measurement overhead
  std::string shard;               // "i/n": this run's share of the budgets
  std::string out = "frontier.jsonl";
  std::string plot;                // .svg / .png
  std::string title;
  bool json_out = false;
};

struct MergeArgs {
  std::vector<std::string> files;  // shards of one sweep
  std::string out;
  std::string plot, title;
  bool json_out = false;
};

std::string human(double v) {
  char buf[32];
  if (v >= 1e9) std::snprintf(buf, sizeof buf, "%.2fG", v / 1e9);
  else if (v >= 1e6) std::snprintf(buf, sizeof buf, "%.2fM", v / 1e6);
  else if (v >= 1e3) std::snprintf(buf, sizeof buf, "%.1fk", v / 1e3);
  else std::snprintf(buf, sizeof buf, "%.0f", v);
  return buf;
}

// The table (or JSON), the Pareto front, the fits per method and the chart of a run's rows.
void print_rows(const std::vector<SweepRow>& rows, const std::string& out, bool json_out, const std::string& plot,
                const std::string& plot_title) {
  const auto front = pareto_front(rows);
  std::vector<bool> on_front(rows.size());
  for (size_t i : front) on_front[i] = true;
  const auto fits = fit_frontiers(rows);
  if (json_out) {
    nlohmann::json j = {{"results", out}, {"rows", nlohmann::json::array()}, {"fits", nlohmann::json::array()}};
    for (size_t i = 0; i < rows.size(); ++i) {
      auto r = nlohmann::json::parse(sweep_row_to_json(rows[i]));
      r["pareto"] = bool(on_front[i]);
      r["resumed"] = rows[i].resumed;
      j["rows"].push_back(r);
    }
    for (const auto& f : fits)
      j["fits"].push_back({{"method", f.method}, {"points", f.points}, {"rmse", f.rmse}, {"loo_mae", f.loo_mae},
                           {"loo_max", f.loo_max}});
    std::cout << j.dump() << "\n";
  } else {
    std::printf("%-22s %-14s %9s %7s %9s %16s %8s %7s %7s %8s %s\n", "method", "budget", "MACs", "%dense", "params",
                "accuracy ±95%", "ppl", "agree", "KL", "ms/tok", "pareto");
    for (size_t i = 0; i < rows.size(); ++i) {
      const auto& r = rows[i];
      if (!r.error.empty()) {
        std::printf("%-22s %-14s failed: %s\n", r.method.c_str(), r.label.c_str(), r.error.c_str());
        continue;
      }
      std::printf("%-22s %-14s %9s %6.1f%% %9s %8.2f%% ±%5.2f %8.3f %7.3f %7.4f %8.3f %s\n", r.method.c_str(),
                  r.label.c_str(), human(double(r.macs)).c_str(), 100 * r.mac_fraction,
                  human(double(r.parameters)).c_str(), 100 * r.eval.token_accuracy, 100 * r.eval.accuracy_ci95,
                  r.eval.perplexity, r.eval.top1_agreement, r.eval.kl, r.ms_per_token, on_front[i] ? "*" : "");
    }
    std::printf("\nsmoothness: accuracy ~ quadratic in log(MACs) per method; error predicting each interior budget from the others\n");
    for (const auto& f : fits) {
      if (f.loo_mae < 0) continue;
      std::printf("  %-22s %2lld points  fit rmse %.2f pp  held-out mean |err| %.2f pp  worst %.2f pp\n",
                  f.method.c_str(), (long long)f.points, 100 * f.rmse, 100 * f.loo_mae, 100 * f.loo_max);
    }
    std::printf("results: %s\n", out.c_str());
  }
#ifdef NESTSCOPE_PLOT
  if (!plot.empty()) {
    std::string err;
    const std::string title = plot_title.empty() ? "NestScope compute–accuracy frontier" : plot_title;
    check(render_frontier_plot(rows, plot, title, &err), "frontier: " + err);
    std::fprintf(stderr, "plot: %s\n", plot.c_str());
  }
#else
  (void)plot;
  (void)plot_title;
#endif
}

void check_plot_path(const std::string& plot) {
#ifndef NESTSCOPE_PLOT
  check(plot.empty(), "frontier: --plot needs the Qt libraries; rebuild with -DNESTSCOPE_GUI=ON");
#endif
  if (plot.empty()) return;
  const bool svg = plot.size() > 4 && plot.substr(plot.size() - 4) == ".svg";
  const bool png = plot.size() > 4 && plot.substr(plot.size() - 4) == ".png";
  check(svg || png, "frontier: --plot must name a .svg or .png file, got '" + plot + "'");
}

int run_frontier(const FrontierArgs& a) {
  check(a.budgets.empty() != a.grid.empty(), "frontier: give exactly one of --budgets FILE and --grid NAME");
  check(a.with.empty() || !a.grid.empty(), "frontier: --with needs --grid (a budget file names one model's budgets)");
  // Everything that can be wrong with the inputs is checked before the first evaluation.
  check_plot_path(a.plot);
  const Shard shard = a.shard.empty() ? Shard{} : parse_shard(a.shard);
  std::vector<NamedBudget> file_budgets;
  if (!a.budgets.empty()) file_budgets = read_budget_file(a.budgets);
  const std::string text = a.eval.empty() ? std::string() : read_text_file(a.eval);

  std::vector<std::string> models = {a.model};
  models.insert(models.end(), a.with.begin(), a.with.end());
  std::vector<SweepRow> rows;
  for (const auto& path : models) {
    Engine engine;
    engine.set_device(a.device);
    if (path.empty()) engine.load_default(); else engine.load(path);
    const auto budgets = a.grid.empty() ? file_budgets : engine.grid(a.grid);
    SweepOptions o;
    o.text = text;
    o.validation_split = a.split == "val";
    o.max_windows = a.windows;
    o.continuations = a.continuations;
    o.measure_latency = a.latency;
    o.reference_model = a.reference;
    o.gate_details = a.gate_details;
    o.results = a.out;
    o.shard = shard;
    if (shard.all())
      std::fprintf(stderr, "%s: %zu budgets\n", engine.info().source.c_str(), budgets.size());
    else
      std::fprintf(stderr, "%s: shard %lld/%lld of %zu budgets\n", engine.info().source.c_str(),
                   (long long)shard.index, (long long)shard.count, budgets.size());
    ProgressBar bar;
    std::string note;
    std::vector<SweepRow> part;
    try {
      part = engine.sweep(budgets, o, [&bar](const Progress& p) { return bar.update(p); }, &note);
    } catch (const Cancelled&) {
      bar.finish();
      std::fprintf(stderr, "cancelled; finished rows are in %s: rerun the same command to resume\n", a.out.c_str());
      return 130;
    }
    bar.finish();
    if (!note.empty()) std::fprintf(stderr, "%s\n", note.c_str());
    int64_t resumed = 0;
    for (const auto& r : part) resumed += r.resumed;
    if (resumed) std::fprintf(stderr, "  %lld of %zu rows reused from %s\n", (long long)resumed, part.size(), a.out.c_str());
    report_failed_rows(part);
    rows.insert(rows.end(), part.begin(), part.end());
  }

  print_rows(rows, a.out, a.json_out, a.plot, a.title);
  return 0;
}

int run_merge(const MergeArgs& a) {
  check_plot_path(a.plot);
  const auto merged = merge_sweep_files(a.files);
  check(!merged.rows.empty(), "frontier merge: the files hold no rows");
  std::string text;
  for (const auto& r : merged.rows) text += sweep_row_to_json(r) + "\n";
  write_file_atomic(a.out, text);  // an input may be the output: everything was read first
  std::fprintf(stderr, "merged %zu files: %zu rows", a.files.size(), merged.rows.size());
  if (merged.duplicates) std::fprintf(stderr, " (%lld duplicates dropped)", (long long)merged.duplicates);
  std::fprintf(stderr, "\n");
  report_failed_rows(merged.rows);
  print_rows(merged.rows, a.out, a.json_out, a.plot, a.title);
  return 0;
}

}  // namespace

void add_frontier(CLI::App& app, Registry& r) {
  auto a = std::make_shared<FrontierArgs>();
  auto* cmd = app.add_subcommand("frontier", "accuracy against MACs and latency for a list or grid of budgets");
  cmd->add_option("-m,--model", a->model, "checkpoint (.safetensors) or Hugging Face model folder; default: the embedded PicoGPT");
  cmd->add_option("--with", a->with, "more checkpoints swept with the same --grid (repeatable)");
  auto* budgets = cmd->add_option("--budgets", a->budgets, "JSON array of {method, label, budget}");
  auto* grid = cmd->add_option("--grid", a->grid, "built-in budget grid (default)");
  budgets->excludes(grid);
  cmd->add_option("--eval", a->eval, "evaluation text (UTF-8); omitted = continuations of the full model");
  cmd->add_option("--split", a->split, "val = the last 10% of --eval, all = all of it")
      ->check(CLI::IsMember({"val", "all"}))
      ->capture_default_str();
  cmd->add_option("--windows", a->windows, "context windows scored per budget (0 = all)")->capture_default_str();
  cmd->add_option("--reference", a->reference,
                  "top-1 agreement and KL against this checkpoint or HF folder (e.g. the dense model a variant was "
                  "fine-tuned from); default: each model at its full budget");
  cmd->add_option("--continuations", a->continuations, "sampled sequences when there is no --eval")
      ->capture_default_str();
  cmd->add_flag("!--no-latency", a->latency, "skip the ms/token measurement");
  cmd->add_flag("--gate-details", a->gate_details,
                "gated rows also carry the block-support and head F1 against the oracle and the measurement overhead");
  cmd->add_option("-o,--out", a->out, "results, one JSON object per line; rerunning resumes from it")
      ->capture_default_str();
  cmd->add_option("--plot", a->plot, "write the chart (.svg or .png, via Qt Charts offscreen)");
  cmd->add_option("--title", a->title, "chart title");
  cmd->add_option("--device", a->device, "auto, cpu or cuda")->capture_default_str();
  cmd->add_option("--shard", a->shard,
                  "i/n: evaluate the i-th of n shares of the budgets (0 <= i < n; by budget, stable when the grid "
                  "grows); give each shard its own --out and join them with `frontier merge`");
  cmd->add_flag("--json", a->json_out, "print one JSON object on stdout");

  auto m = std::make_shared<MergeArgs>();
  auto* merge = cmd->add_subcommand("merge", "join the results files of a sharded sweep and print them as one run");
  merge->add_option("files", m->files, "results files, one per shard")->required()->check(CLI::ExistingFile);
  merge->add_option("-o,--out", m->out, "the merged results file (written atomically)")->required();
  merge->add_option("--plot", m->plot, "write the chart (.svg or .png)");
  merge->add_option("--title", m->title, "chart title");
  merge->add_flag("--json", m->json_out, "print one JSON object on stdout");
  cmd->require_subcommand(0, 1);
  // Registered first: `frontier merge` parses both commands, and the merge is the one to run.
  r.add(merge, [m](Engine&, ProgressBar&) { return run_merge(*m); });
  r.add(cmd, [a](Engine&, ProgressBar&) { return run_frontier(*a); });
}

}  // namespace nestscope::cli
