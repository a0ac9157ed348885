// `nestscope-cli frontier`: one sweep over budgets of one or more models, a table, a plot.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace nestscope::cli {

struct FrontierArgs {
  std::string model;               // empty = the embedded default model
  std::vector<std::string> with;   // more checkpoints swept with the same grid (e.g. NSN, MPO fine-tunes)
  std::string device = "auto";
  std::string budgets;             // budget file, or
  std::string grid;                // a built-in grid name
  std::string eval;                // evaluation text; empty = continuations of each full model
  std::string split = "val";
  int64_t windows = 0;
  int64_t continuations = 8;
  bool latency = true;
  std::string out = "frontier.jsonl";
  std::string plot;                // .svg / .png
  std::string title;
  bool json_out = false;
};

// Runs the sweep, prints the table (or JSON), writes the plot; returns the exit code.
int run_frontier(const FrontierArgs& args);

}  // namespace nestscope::cli
