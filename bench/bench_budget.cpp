// Budget switching: building and caching the variants, moving between composed budgets, and the
// time from a slider move (set_budget) to the first new token. Prints JSON.
//   nestscope_bench_budget [--model FILE]
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/engine/engine.h"

using namespace nestscope;
using Clock = std::chrono::steady_clock;

namespace {
double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

GateOptions sensing(double active) {
  GateOptions g;
  g.policy = GatePolicy::Sensing;
  g.active = active;
  g.measurement = MeasurementKind::Pca;
  g.recovery = Recovery::Mmse;
  g.clustered = true;
  return g;
}
}  // namespace

int main(int argc, char** argv) {
  std::string model;
  for (int i = 1; i + 1 < argc; ++i)
    if (std::string(argv[i]) == "--model") model = argv[i + 1];
  const auto tmp = std::filesystem::temp_directory_path() / ("nestscope-bench-budget-" + std::to_string(::getpid()));
  std::filesystem::create_directories(tmp);
  ::setenv("XDG_CACHE_HOME", tmp.c_str(), 1);  // the embedded model's variant cache goes here
  auto open = [&](Engine& e) { model.empty() ? e.load_default() : e.load(model); };
  const std::vector<LinearKind> kinds = {LinearKind::Nsn, LinearKind::Mpo};
  nlohmann::json out;

  {  // No cache: SVD + TT-SVD of every projection.
    Engine e;
    e.set_variant_cache(false);
    open(e);
    const auto t = Clock::now();
    const auto r = e.prepare_variants(kinds);
    out["variants_build_ms"] = ms_since(t);
    out["variant_layers"] = r.built;
  }
  {  // First open writes the cache; the second reads it.
    Engine a;
    open(a);
    auto t = Clock::now();
    a.prepare_variants(kinds);
    out["variants_build_and_write_ms"] = ms_since(t);
    Engine b;
    open(b);
    t = Clock::now();
    const auto r = b.prepare_variants(kinds);
    out["variants_from_cache_ms"] = ms_since(t);
    out["variants_from_cache_layers"] = r.from_cache;
  }

  Engine e;
  open(e);
  e.prepare_variants(kinds);
  const std::string prompt = "ROMEO:\nWhat light through yonder window breaks? It is the east, and Juliet";
  e.calibrate_gate(prompt, 16);
  std::vector<std::pair<std::string, Budget>> budgets = {
      {"full", Budget{}},
      {"svd r=32", Budget{.rank = 32, .kind = {{"attn", LinearKind::Nsn}, {"mlp", LinearKind::Nsn}}}},
      {"svd r=64", Budget{.rank = 64, .kind = {{"attn", LinearKind::Nsn}, {"mlp", LinearKind::Nsn}}}},
      {"tt-svd χ=16", Budget{.bond = 16, .kind = {{"attn", LinearKind::Mpo}, {"mlp", LinearKind::Mpo}}}},
      {"svd-mlp+tt-svd-attn", Budget{.rank = 48, .bond = 16, .kind = {{"mlp", LinearKind::Nsn}, {"attn", LinearKind::Mpo}}}},
      {"gate 50%", Budget{.gate = sensing(0.5)}},
      {"svd-attn+gate", Budget{.rank = 48, .gate = sensing(0.5), .kind = {{"attn", LinearKind::Nsn}}}},
      {"prompt keep 50%", Budget{.prompt_keep = 0.5}},
  };
  nlohmann::json rows = nlohmann::json::array();
  std::vector<double> all_first;
  for (const auto& [name, b] : budgets) {
    std::vector<double> apply, first;
    for (int rep = 0; rep < 9; ++rep) {
      e.set_budget(Budget{});  // every move starts from somewhere else
      auto t = Clock::now();
      e.set_budget(b);
      apply.push_back(ms_since(t));
      t = Clock::now();
      double first_ms = -1;
      e.generate(prompt, {1, 0.8, 0, uint64_t(rep)}, [&](const GeneratedToken&) {
        first_ms = ms_since(t);
        return false;
      });
      first.push_back(apply.back() + first_ms);
    }
    all_first.push_back(median(first));
    rows.push_back({{"budget", name},
                    {"set_budget_ms", median(apply)},
                    {"slider_to_first_token_ms", median(first)},
                    {"macs_per_token", e.info().macs_per_token}});
  }
  out["moves"] = rows;
  out["slider_to_first_token_ms_worst_median"] = *std::max_element(all_first.begin(), all_first.end());
  out["prompt_chars"] = prompt.size();
  std::filesystem::remove_all(tmp);
  std::cout << out.dump(2) << "\n";
  return 0;
}
