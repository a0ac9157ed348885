// nestscope_bench_finetune: fine-tuning throughput (tokens/s) on an imported model, JSON.
// usage: nestscope_bench_finetune [--model DIR] [--corpus FILE] [--steps N] [--batch B] [--context T]
//                                 [--objective ce|nsn|nsn-distill] [--threads N] [--profile TRACE.json]
// Default: ../shared/models/stories260K, NSN multi-rank with distillation from the dense model,
// batch 32 x 256 — the fine-tuning the stories260K results use.
#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include <torch/csrc/autograd/profiler_legacy.h>

#include "core/engine/engine.h"
#include "core/error.h"
#include "core/threads.h"

using namespace nestscope;

int main(int argc, char** argv) {
  std::string model = "../shared/models/stories260K", corpus_path = "../shared/data/tinyshakespeare.txt";
  std::string objective = "nsn-distill", profile_path;
  TrainOptions t;
  t.steps = 10;
  t.batch = 32;
  t.context = 256;
  t.warmup = 1;
  t.weight_decay = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--model")) model = argv[i + 1];
    else if (!std::strcmp(argv[i], "--corpus")) corpus_path = argv[i + 1];
    else if (!std::strcmp(argv[i], "--steps")) t.steps = std::stoll(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--batch")) t.batch = std::stoll(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--context")) t.context = std::stoll(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--objective")) objective = argv[i + 1];
    else if (!std::strcmp(argv[i], "--threads")) t.threads = std::stoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--profile")) profile_path = argv[i + 1];
  }
  try {
    std::ifstream f(corpus_path, std::ios::binary);
    check(bool(f), corpus_path + ": cannot read the corpus");
    std::stringstream ss;
    ss << f.rdbuf();
    std::string text = ss.str().substr(0, 400000);  // enough windows; tokenizing all costs time
    Engine e;
    e.load(model);
    TrainResult r;
    // --profile FILE: a chrome://tracing file of every ATen op (LibTorch's legacy profiler).
    std::unique_ptr<torch::autograd::profiler::RecordProfile> profile;
    if (!profile_path.empty()) profile = std::make_unique<torch::autograd::profiler::RecordProfile>(profile_path);
    if (objective == "ce") {
      r = e.train(text, {}, t, true);
    } else {
      check(objective == "nsn" || objective == "nsn-distill", "objective must be ce, nsn or nsn-distill");
      if (objective == "nsn-distill") {
        t.distill = 1.0;
        t.teacher = model;
      }
      e.convert_nsn({}, 0);
      NsnTrainOptions n;
      r = e.finetune_nsn(text, t, n).train;
    }
    profile.reset();
    nlohmann::json out = {{"model", model}, {"objective", objective}, {"threads", default_threads()},
                          {"batch", t.batch}, {"context", t.context}, {"steps", t.steps},
                          {"seconds", r.seconds}, {"tokens_per_s", r.tokens_per_s},
                          {"s_per_step", r.seconds / double(t.steps)}, {"final_train_loss", r.final_train_loss}};
    std::printf("%s\n", out.dump(2).c_str());
  } catch (const std::exception& ex) {
    std::fprintf(stderr, "error: %s\n", ex.what());
    return 1;
  }
  return 0;
}
