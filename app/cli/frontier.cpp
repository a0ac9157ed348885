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
  std::string out = "frontier.jsonl";
  std::string plot;                // .svg / .png
  std::string title;
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

int run_frontier(const FrontierArgs& a) {
  check(a.budgets.empty() != a.grid.empty(), "frontier: give exactly one of --budgets FILE and --grid NAME");
  check(a.with.empty() || !a.grid.empty(), "frontier: --with needs --grid (a budget file names one model's budgets)");
#ifndef NESTSCOPE_PLOT
  check(a.plot.empty(), "frontier: --plot needs the Qt libraries; rebuild with -DNESTSCOPE_GUI=ON");
#endif
  // Everything that can be wrong with the inputs is checked before the first evaluation.
  std::vector<NamedBudget> file_budgets;
  if (!a.budgets.empty()) file_budgets = read_budget_file(a.budgets);
  const std::string text = a.eval.empty() ? std::string() : read_text_file(a.eval);
  if (!a.plot.empty()) {
    const bool svg = a.plot.size() > 4 && a.plot.substr(a.plot.size() - 4) == ".svg";
    const bool png = a.plot.size() > 4 && a.plot.substr(a.plot.size() - 4) == ".png";
    check(svg || png, "frontier: --plot must name a .svg or .png file, got '" + a.plot + "'");
  }

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
    std::fprintf(stderr, "%s: %zu budgets\n", engine.info().source.c_str(), budgets.size());
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

  const auto front = pareto_front(rows);
  std::vector<bool> on_front(rows.size());
  for (size_t i : front) on_front[i] = true;
  const auto fits = fit_frontiers(rows);
  if (a.json_out) {
    nlohmann::json j = {{"results", a.out}, {"rows", nlohmann::json::array()}, {"fits", nlohmann::json::array()}};
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
    std::printf("results: %s\n", a.out.c_str());
  }
#ifdef NESTSCOPE_PLOT
  if (!a.plot.empty()) {
    std::string err;
    const std::string title = a.title.empty() ? "NestScope compute–accuracy frontier" : a.title;
    check(render_frontier_plot(rows, a.plot, title, &err), "frontier: " + err);
    std::fprintf(stderr, "plot: %s\n", a.plot.c_str());
  }
#endif
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
  cmd->add_flag("--json", a->json_out, "print one JSON object on stdout");
  r.add(cmd, [a](Engine&, ProgressBar&) { return run_frontier(*a); });
}

}  // namespace nestscope::cli
