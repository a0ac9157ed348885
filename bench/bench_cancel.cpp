// Cancel latency of the long jobs: each starts on the default model, Cancel comes 0.5 s in (the
// progress callback starts returning false), and we time how long the job takes to stop and check
// that the loaded model is the one it was (same hash, same parameters, same budget). Conversions
// and variant builds run on a GPT-2-small-sized model, where they take seconds.
// usage: nestscope_bench_cancel [--corpus FILE] [--after-ms N]
#include <atomic>
#include <chrono>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <thread>

#include "core/engine/engine.h"
#include "core/error.h"
#include "core/io/atomic_file.h"

using namespace nestscope;
using Clock = std::chrono::steady_clock;
using Json = nlohmann::json;

int main(int argc, char** argv) {
  std::string corpus;
  int after_ms = 500;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--corpus" && i + 1 < argc) corpus = argv[++i];
    else if (a == "--after-ms" && i + 1 < argc) after_ms = std::stoi(argv[++i]);
    else {
      std::cerr << "usage: nestscope_bench_cancel [--corpus FILE] [--after-ms N]\n";
      return 2;
    }
  }
  std::string text;
  if (!corpus.empty() && std::filesystem::exists(corpus)) {
    text = read_text_file(corpus);
  } else {
    for (int i = 0; i < 2000; ++i) text += "To be, or not to be: that is the question.\nWhether 'tis nobler in the mind to suffer\n";
  }
  Engine e;
  e.load_default();
  Json rows = Json::array();
  auto measure = [&](const std::string& job, const std::function<void(const ProgressFn&)>& run) {
    const auto before = e.info();
    std::atomic<bool> cancel{false};
    std::atomic<int64_t> reports{0};
    Clock::time_point asked;
    std::thread timer([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(after_ms));
      asked = Clock::now();
      cancel = true;
    });
    bool cancelled = false;
    std::string error;
    try {
      run([&](const Progress&) {
        ++reports;
        return !cancel.load();
      });
    } catch (const Cancelled&) {
      cancelled = true;
    } catch (const std::exception& ex) {
      error = ex.what();
    }
    const auto stopped = Clock::now();
    timer.join();
    const auto after = e.info();
    rows.push_back({{"job", job},
                    {"cancelled", cancelled},
                    {"stop_ms", cancelled ? std::chrono::duration<double, std::milli>(stopped - asked).count() : -1.0},
                    {"progress_reports", reports.load()},
                    {"model_unchanged", after.hash == before.hash && after.parameters == before.parameters &&
                                            after.source == before.source},
                    {"error", error}});
  };
  TrainOptions t;
  t.steps = 100000;
  t.batch = 8;
  measure("train (continue the loaded model)", [&](const ProgressFn& p) { e.train(text, {}, t, true, p); });
  measure("evaluate (every window)", [&](const ProgressFn& p) { e.evaluate(text + text + text, false, 0.9, p); });
  SweepOptions s;
  s.text = text;
  s.measure_latency = false;
  measure("frontier sweep (default grid)", [&](const ProgressFn& p) { e.sweep(e.grid("default"), s, p); });
  std::vector<NamedBudget> svd;  // the `nsn frontier` preset on a dense model: SVD truncation
  for (int64_t r : {4, 8, 16, 32, 64, 96, 128})
    svd.push_back({"svd", "r=" + std::to_string(r), Budget{.rank = r, .kind = {{"attn", LinearKind::Nsn}, {"mlp", LinearKind::Nsn}}}});
  measure("NSN frontier (SVD truncation)", [&](const ProgressFn& p) { e.sweep(svd, s, p); });
  e.convert_nsn({}, 0);
  const auto nsn_before = e.info();
  NsnTrainOptions n;
  measure("NSN multi-rank fine-tune", [&](const ProgressFn& p) { e.finetune_nsn(text, t, n, p); });
  // Conversions and variant builds on a GPT-2-small-sized model (d = 768, 12 layers, d_ff 3,072;
  // random weights after one training step): on PicoGPT they take well under a second.
  ModelConfig big;
  big.d_model = 768;
  big.n_heads = 12;
  big.n_layers = 12;
  big.d_ff = 3072;
  big.context = 256;
  TrainOptions one;
  one.steps = 1;
  one.batch = 1;
  one.warmup = 0;
  e.train(text, big, one);
  e.set_variant_cache(false);
  const int64_t big_params = e.info().parameters;
  measure("NSN conversion (SVD, 85M-parameter model)", [&](const ProgressFn& p) { e.convert_nsn({}, 0, p); });
  measure("MPO conversion (TT-SVD χ = 64, 85M-parameter model)", [&](const ProgressFn& p) { e.convert_mpo({}, 64, p); });
  measure("SVD + TT-SVD variants (85M-parameter model)",
          [&](const ProgressFn& p) { e.prepare_variants({LinearKind::Nsn, LinearKind::Mpo}, p); });
  std::cout << Json{{"after_ms", after_ms}, {"jobs", rows}, {"nsn_model_hash", nsn_before.hash},
                    {"big_model_parameters", big_params}}
                   .dump(2)
            << "\n";
  return 0;
}
