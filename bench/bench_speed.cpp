// nestscope_bench_speed: what the explorer's user waits for, measured through the Engine (JSON).
//   * batch-1 greedy decode tokens/s at each mechanism's budgets (dense; NSN ranks and MPO χ as
//     the SVD / TT-SVD variants of the loaded model; the sensing gate at several active
//     fractions), each next to its MAC ratio: time per token at the budget / dense against the
//     mean MACs per generated token at the budget / dense (gate measurement included);
//   * prefill tokens/s of a 255-token prompt (dense);
//   * slider-change-to-first-token latency: set_budget to a new rank, then a 1-token generation
//     from a 64-character prompt, alternating two budgets (median and max);
//   * frontier sweep wall time for the decode budgets on the first windows of a text.
// usage: nestscope_bench_speed [--model FILE] [--threads N] [--decode-tokens N] [--corpus FILE]
//                              [--sweep-windows N] [--device auto|cpu|cuda] [--rounds N]
#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/engine/engine.h"
#include "core/error.h"
#include "core/io/atomic_file.h"
#include "core/model/budget_json.h"

using namespace nestscope;
using Clock = std::chrono::steady_clock;
using Json = nlohmann::json;

namespace {

double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

struct Point {
  std::string mechanism, label;
  Budget budget;
};

Budget every_family(LinearKind k) {
  Budget b;
  b.kind = {{"attn", k}, {"mlp", k}, {"head", k}};
  return b;
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_path, corpus, device = "cpu";
  int threads = 0;
  int64_t decode_tokens = 128, sweep_windows = 16;
  int rounds = 5;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw Error(a + " needs a value");
      return argv[++i];
    };
    try {
      if (a == "--model") model_path = next();
      else if (a == "--threads") threads = std::stoi(next());
      else if (a == "--decode-tokens") decode_tokens = std::stoll(next());
      else if (a == "--corpus") corpus = next();
      else if (a == "--sweep-windows") sweep_windows = std::stoll(next());
      else if (a == "--device") device = next();
      else if (a == "--rounds") rounds = std::max(1, std::stoi(next()));
      else throw Error("unknown argument " + a);
    } catch (const std::exception& e) {
      std::cerr << e.what() << "\nusage: nestscope_bench_speed [--model FILE] [--threads N] [--decode-tokens N] "
                                "[--corpus FILE] [--sweep-windows N] [--device auto|cpu|cuda] [--rounds N]\n";
      return 2;
    }
  }
  try {
    Engine e;              // sets the default threads ($NESTSCOPE_THREADS, else all cores) ...
    if (threads > 0) init_threads(threads);  // ... which --threads overrides
    e.set_variant_cache(false);
    if (model_path.empty()) e.load_default(); else e.load(model_path);
    e.set_device(device);
    const ModelInfo info = e.info();
    std::string text;
    if (!corpus.empty() && std::filesystem::exists(corpus)) {
      text = read_text_file(corpus);
    } else {
      for (int i = 0; i < 400; ++i) text += "To be, or not to be: that is the question.\nWhether 'tis nobler in the mind to suffer\n";
    }
    const std::string prompt = text.substr(0, 64);
    decode_tokens = std::min<int64_t>(decode_tokens, info.config.context - 64);
    e.prepare_variants({LinearKind::Nsn, LinearKind::Mpo});
    e.calibrate_gate(text.substr(0, 20000), 16);

    std::vector<Point> points{{"dense", "dense", Budget{}}};
    for (int64_t r : {16, 32, 64, 96}) {
      Budget b = every_family(LinearKind::Nsn);
      b.rank = r;
      points.push_back({"nsn (SVD variant)", "r=" + std::to_string(r), b});
    }
    for (int64_t chi : {4, 8, 16, 32}) {
      Budget b = every_family(LinearKind::Mpo);
      b.bond = chi;
      points.push_back({"mpo (TT-SVD variant)", "chi=" + std::to_string(chi), b});
    }
    for (double a : {0.75, 0.5, 0.25}) {
      Budget b;
      b.gate.policy = GatePolicy::Sensing;  // as the CLI's and the explorer's default: PCA + MMSE
      b.gate.measurement = MeasurementKind::Pca;
      b.gate.recovery = Recovery::Mmse;
      b.gate.active = a;
      points.push_back({"sensing gate (MLP blocks)", "active=" + std::to_string(int(a * 100)) + "%", b});
    }

    Json out = {{"model", info.source}, {"parameters", info.parameters}, {"threads", current_threads()},
                {"device", e.info().device}, {"cuda_kernels", Engine::cuda_kernels()},
                {"decode_tokens", decode_tokens}, {"rounds", rounds}};
    // Rounds go over every budget in turn (best round per budget), so a slow spell of this shared
    // machine hits all budgets alike instead of one.
    std::vector<double> best_ms(points.size(), 1e30), macs(points.size(), 0);
    for (int round = 0; round < rounds; ++round) {
      for (size_t i = 0; i < points.size(); ++i) {
        e.set_budget(points[i].budget);
        double sum = 0;
        int64_t n = 0;
        const auto r = e.generate(prompt, {decode_tokens, 0.0, 0, 0}, [&](const GeneratedToken& t) {
          sum += double(t.macs);
          ++n;
          return true;
        });
        best_ms[i] = std::min(best_ms[i], r.decode_ms / double(std::max<int64_t>(1, r.generated_tokens - 1)));
        macs[i] = sum / double(std::max<int64_t>(1, n));
      }
    }
    Json rows = Json::array();
    for (size_t i = 0; i < points.size(); ++i)  // points[0] is dense
      rows.push_back({{"mechanism", points[i].mechanism},
                      {"budget", points[i].label},
                      {"ms_per_token", best_ms[i]},
                      {"tokens_per_s", 1e3 / best_ms[i]},
                      {"macs_per_token", macs[i]},
                      {"time_ratio", best_ms[i] / best_ms[0]},
                      {"mac_ratio", macs[i] / macs[0]}});
    out["decode"] = rows;

    e.set_budget(Budget{});
    {  // Prefill: a 255-character prompt (255 tokens for a character model) and one new token.
      double best = 1e30;
      int64_t tokens = 0;
      for (int rep = 0; rep < 5; ++rep) {
        auto r = e.generate(text.substr(0, 255), {1, 0.0, 0, 0});
        tokens = r.prompt_tokens;
        best = std::min(best, r.prefill_ms);
      }
      out["prefill"] = {{"tokens", tokens}, {"ms", best}, {"tokens_per_s", double(tokens) / (best / 1e3)}};
    }

    {  // Slider change to first token: what a drag of the rank slider costs before text appears.
      std::vector<double> lat;
      for (int i = 0; i < 20; ++i) {
        Budget b = every_family(LinearKind::Nsn);
        b.rank = i % 2 ? 32 : 64;
        const auto t0 = Clock::now();
        e.set_budget(b);
        double first = 0;
        e.generate(prompt, {1, 0.0, 0, 0}, [&](const GeneratedToken&) {
          first = ms_since(t0);
          return true;
        });
        lat.push_back(first);
      }
      std::sort(lat.begin(), lat.end());
      out["slider_to_first_token_ms"] = {{"median", lat[lat.size() / 2]}, {"max", lat.back()}, {"samples", lat.size()}};
    }

    {  // A frontier sweep over the decode budgets (latency column off: that is the decode table).
      std::vector<NamedBudget> budgets;
      for (const auto& p : points) budgets.push_back({p.mechanism, p.label, p.budget});
      SweepOptions s;
      s.text = text;
      s.max_windows = sweep_windows;
      s.measure_latency = false;
      const auto t0 = Clock::now();
      const auto swept = e.sweep(budgets, s);
      out["sweep"] = {{"budgets", swept.size()}, {"windows", sweep_windows}, {"seconds", ms_since(t0) / 1e3}};
    }
    std::cout << out.dump(2) << "\n";
  } catch (const std::exception& ex) {
    std::cerr << "nestscope_bench_speed: " << ex.what() << "\n";
    return 1;
  }
  return 0;
}
