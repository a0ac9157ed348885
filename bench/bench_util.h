// Helpers shared by the layer benchmarks.
#pragma once
#include <algorithm>
#include <chrono>
#include <vector>

namespace nestscope::bench {

// Median over 7 repeats of the mean time (µs) of `iters` calls, after 20 warm-up calls.
template <class F>
double time_us(F&& f, int iters) {
  std::vector<double> reps;
  for (int w = 0; w < 20; ++w) f();
  for (int rep = 0; rep < 7; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < iters; ++i) f();
    reps.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / iters);
  }
  std::nth_element(reps.begin(), reps.begin() + 3, reps.end());
  return reps[3];
}

}  // namespace nestscope::bench
