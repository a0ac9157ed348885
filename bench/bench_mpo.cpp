// nestscope_bench_mpo: time of PicoGPT's MPO layers by direct contraction vs rebuilding W vs the
// dense layer, at several bond dimensions χ, batch-1 decode and a 64-token prefill (JSON).
// usage: nestscope_bench_mpo [--threads N] [--iters N]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>

#include "core/engine/engine.h"
#include "core/layers/dense_linear.h"
#include "core/layers/mpo_linear.h"

using namespace nestscope;

namespace {
// Median over 7 repeats of the mean time (µs) of `iters` calls.
template <class F>
double time_us(F&& f, int iters) {
  std::vector<double> reps;
  for (int w = 0; w < 20; ++w) f();  // warm-up
  for (int rep = 0; rep < 7; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < iters; ++i) f();
    reps.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / iters);
  }
  std::nth_element(reps.begin(), reps.begin() + 3, reps.end());
  return reps[3];
}
}  // namespace

int main(int argc, char** argv) {
  int threads = 0, iters = 2000;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--threads")) threads = std::stoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--iters")) iters = std::stoi(argv[i + 1]);
  }
  init_threads(threads);
  torch::NoGradGuard no_grad;
  struct Shape {
    const char* name;
    int64_t in, out;
  };
  // PicoGPT's published scheme: the balanced default factors (8·16, 8·8·8 / 4·4·8, 5·13).
  const Shape shapes[] = {{"attn (128x128)", 128, 128}, {"mlp.up (512x128)", 128, 512},
                          {"mlp.down (128x512)", 512, 128}, {"head (65x128)", 128, 65}};
  nlohmann::json rows = nlohmann::json::array();
  for (const auto& [name, in, out] : shapes) {
    torch::manual_seed(0);
    DenseLinear dense(in, out, true, 0.02);
    const int64_t sites = default_mpo_sites(in, out);
    MpoLinear mpo(in, out, balanced_factors(out, sites), balanced_factors(in, sites), 32, true, 0.02);
    mpo.load_from_dense(dense.to_dense(), dense.bias());
    for (int64_t tokens : {int64_t(1), int64_t(64)}) {
      auto x = torch::randn({tokens, in});
      const int n = int(std::clamp<int64_t>(int64_t(iters) * 128 * 128 / (in * out * tokens), 20, iters));
      const double dense_us = time_us([&] { return dense.forward(x); }, n);
      for (int64_t chi : {4, 8, 16, 32}) {
        mpo.set_bond(chi);
        const double direct_us = time_us([&] { return mpo.forward(x); }, n);
        const double rebuild_us = time_us([&] { return mpo.forward_rebuilt(x); }, n);
        rows.push_back({{"layer", name},
                        {"tokens", tokens},
                        {"bond", chi},
                        {"params", mpo.params()},
                        {"dense_us", dense_us},
                        {"direct_us", direct_us},
                        {"rebuild_us", rebuild_us},
                        {"direct_ratio", direct_us / dense_us},
                        {"rebuild_ratio", rebuild_us / dense_us},
                        {"mac_ratio", double(mpo.macs()) / double(in * out)}});
      }
    }
  }
  nlohmann::json outj = {{"threads", at::get_num_threads()}, {"rows", rows}};
  std::printf("%s\n", outj.dump(2).c_str());
  return 0;
}
