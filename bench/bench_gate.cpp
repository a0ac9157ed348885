// nestscope_bench_gate: batch-1 decode time of one gated MLP vs the dense MLP (JSON).
// The gated MLP: measurement y = P·x, recovery (MMSE with a calibration prior, or one-step IHT),
// top-k blocks, then only those blocks of W_up / W_down. "select_us" is measurement + recovery +
// selection alone (the overhead), "total_us" everything; "static" has no overhead at all (fixed
// blocks), which isolates what the gathered block execution itself costs.
// Shapes: PicoGPT's MLP (C 128, N 512, B 16) and GPT-2 small's (C 768, N 3072, B 64).
// usage: nestscope_bench_gate [--threads N] [--iters N]
#include <cstring>
#include <nlohmann/json.hpp>
#include <vector>

#include "bench/bench_util.h"
#include "core/engine/engine.h"
#include "core/gate/mlp_gate.h"
#include "core/layers/dense_linear.h"

using namespace nestscope;
using bench::time_us;

int main(int argc, char** argv) {
  int threads = 0, iters = 4000;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--threads")) threads = std::stoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--iters")) iters = std::stoi(argv[i + 1]);
  }
  init_threads(threads);
  torch::NoGradGuard no_grad;
  struct Shape {
    const char* model;
    int64_t C, N, B;
  };
  nlohmann::json rows = nlohmann::json::array();
  for (const auto& [model, C, N, B] : {Shape{"picogpt", 128, 512, 16}, Shape{"gpt2", 768, 3072, 64}}) {
    torch::manual_seed(0);
    DenseLinear up(C, N, true, 0.02), down(N, C, true, 0.02);
    auto x = torch::randn({1, C});
    auto calib = torch::randn({4 * C, C});
    const auto centred = calib - calib.mean(0);
    GatePrior prior{calib.mean(0), centred.t().mm(centred) / double(calib.size(0) - 1)};
    std::vector<float> h(static_cast<size_t>(N)), y(static_cast<size_t>(C));
    const float* xp = x.data_ptr<float>();
    const int n = int(std::max<int64_t>(50, int64_t(iters) * 128 * 512 / (C * N)));
    auto dense = [&] {
      up.forward_raw(1, xp, h.data());
      for (auto& v : h) v = v > 0 ? v : 0.f;
      down.forward_raw(1, h.data(), y.data());
    };
    for (double active : {0.25, 0.5, 0.75}) {
      struct Variant {
        const char* name;
        GatePolicy policy;
        MeasurementKind measurement;
        Recovery recovery;
        int64_t m;
      };
      std::vector<Variant> variants = {{"static", GatePolicy::Static, MeasurementKind::Rademacher, Recovery::Iht, 0}};
      for (int64_t m : {N / 32, N / 16, N / 8})
        variants.push_back({"sensing-mmse", GatePolicy::Sensing, MeasurementKind::Pca, Recovery::Mmse, m});
      variants.push_back({"sensing-iht", GatePolicy::Sensing, MeasurementKind::Rademacher, Recovery::Iht, N / 16});
      for (const auto& v : variants) {
        GateOptions o{.policy = v.policy, .active = active, .block = B, .measurements = v.m, .measurement = v.measurement,
                      .recovery = v.recovery};
        MlpGate gate(up.to_dense(), up.bias(), down.to_dense(), down.bias(), Activation::Relu, o, 0, {}, &prior);
        if (v.policy == GatePolicy::Static) gate.set_static_energy(torch::rand({N}));
        int64_t select_macs = 0;
        gate.choose(xp, &select_macs);
        // Dense and gated in alternating repeats: the ratio compares them under the same machine state.
        const auto [dense_us, total_us] = bench::time_pair_us(dense, [&] { gate.forward_raw(1, xp, y.data()); }, n);
        const double select_us = time_us([&] { return gate.choose(xp); }, n);
        const double k = double(gate.active_blocks()) * double(B);
        const double mac_fraction = (double(select_macs) + 2 * k * double(C)) / double(2 * N * C);
        rows.push_back({{"model", model},
                        {"shape", "C" + std::to_string(C) + " N" + std::to_string(N) + " B" + std::to_string(B)},
                        {"variant", v.name},
                        {"active_fraction", double(gate.active_blocks()) / double(gate.blocks())},
                        {"measurements", v.policy == GatePolicy::Sensing ? gate.measurements() : 0},
                        {"dense_us", dense_us},
                        {"total_us", total_us},
                        {"select_us", select_us},
                        {"run_us", total_us - select_us},
                        {"speedup", dense_us / total_us},
                        {"mac_fraction", mac_fraction},
                        {"mac_speedup", 1.0 / mac_fraction}});
      }
    }
  }
  nlohmann::json out = {{"threads", at::get_num_threads()}, {"rows", rows}};
  std::printf("%s\n", out.dump(2).c_str());
  return 0;
}
