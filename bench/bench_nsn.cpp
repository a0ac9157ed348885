// nestscope_bench_nsn: time of NSN linear layers vs dense at rank fractions of r* (JSON).
// r* = d_in·d_out / (d_in + d_out) is the rank where NSN's r·(d_in+d_out) MACs equal dense's.
// Shapes: PicoGPT's projections (overhead-bound at batch 1) and GPT-2 small's (compute-bound).
// Two timings per row: "call" = forward() on tensors (allocates the output, as the model does
// today), "kernel" = forward_raw() into preallocated buffers (the arithmetic a decoder with fixed
// activation buffers pays). The acceptance ratio (time ≤ 1.2× MACs) is read on the kernel.
// Ranks ≤ 32 on AVX2 CPUs run the fused kernel of core/layers/low_rank_kernel.h, the rest BLAS.
// usage: nestscope_bench_nsn [--threads N] [--iters N]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <tuple>
#include <vector>
#include <nlohmann/json.hpp>

#include "bench/bench_util.h"
#include "core/engine/engine.h"
#include "core/layers/dense_linear.h"
#include "core/layers/low_rank_kernel.h"
#include "core/layers/nsn_linear.h"

using namespace nestscope;

using bench::time_us;

int main(int argc, char** argv) {
  int threads = 0, iters = 2000;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--threads")) threads = std::stoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--iters")) iters = std::stoi(argv[i + 1]);
  }
  init_threads(threads);
  torch::NoGradGuard no_grad;
  nlohmann::json rows = nlohmann::json::array();
  struct Shape {
    const char* model;
    int64_t in, out;
  };
  const Shape shapes[] = {{"picogpt", 128, 128}, {"picogpt", 128, 512}, {"picogpt", 512, 128},
                          {"gpt2", 768, 768},    {"gpt2", 768, 3072},   {"gpt2", 3072, 768}};
  for (const auto& [model, in, out] : shapes) {
    torch::manual_seed(0);
    DenseLinear dense(in, out, true, 0.02);
    NsnLinear nsn(in, out, std::min(in, out), true, 0.02);
    nsn.load_from_dense(dense.to_dense(), dense.bias());
    const double r_star = double(in * out) / double(in + out);
    for (int64_t tokens : {int64_t(1), int64_t(64)}) {
      auto x = torch::randn({tokens, in});
      // About the same work per repeat for every shape: fewer calls for big layers.
      const int n = int(std::clamp<int64_t>(int64_t(iters) * 128 * 128 / (in * out * tokens), 20, iters));
      const double dense_us = time_us([&] { return dense.forward(x); }, n);
      std::vector<float> y(size_t(tokens * out));
      const float* xp = x.data_ptr<float>();
      const bool raw = dense.forward_raw(tokens, xp, y.data());
      for (double f : {0.125, 0.25, 0.5, 1.0}) {
        const int64_t r = std::max<int64_t>(1, std::llround(f * r_star));
        nsn.set_rank(r);
        const double nsn_us = time_us([&] { return nsn.forward(x); }, n);
        // The kernel ratio pairs each NSN rank with a fresh dense timing (alternating repeats).
        double dense_kernel_us = -1, nsn_kernel_us = -1;
        if (raw && nsn.forward_raw(tokens, xp, y.data()))
          std::tie(dense_kernel_us, nsn_kernel_us) = bench::time_pair_us(
              [&] { dense.forward_raw(tokens, xp, y.data()); }, [&] { nsn.forward_raw(tokens, xp, y.data()); }, n);
        const double mac_ratio = double(r * (in + out)) / double(in * out);
        const double kernel_ratio = nsn_kernel_us > 0 ? nsn_kernel_us / dense_kernel_us : -1;
        rows.push_back({{"model", model},
                        {"shape", std::to_string(out) + "x" + std::to_string(in)},
                        {"tokens", tokens},
                        {"fraction_of_r_star", f},
                        {"rank", r},
                        {"dense_us", dense_us},
                        {"nsn_us", nsn_us},
                        {"time_ratio", nsn_us / dense_us},
                        {"mac_ratio", mac_ratio},
                        {"time_over_mac_ratio", (nsn_us / dense_us) / mac_ratio},
                        {"dense_kernel_us", dense_kernel_us},
                        {"nsn_kernel_us", nsn_kernel_us},
                        {"kernel_time_ratio", kernel_ratio},
                        {"kernel_time_over_mac_ratio", kernel_ratio > 0 ? kernel_ratio / mac_ratio : -1}});
      }
    }
  }
  // kernel_isa: the fused small-rank kernel's variant (none = BLAS for every rank; choose with
  // NESTSCOPE_LOW_RANK_ISA=none|avx2|avx512vl).
  nlohmann::json outj = {{"threads", at::get_num_threads()},
                         {"kernel_isa", low_rank_isa_name(low_rank_kernel_isa())},
                         {"rows", rows}};
  std::printf("%s\n", outj.dump(2).c_str());
  return 0;
}
