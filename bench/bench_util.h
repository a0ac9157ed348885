// Helpers shared by the layer benchmarks.
#pragma once
#include <algorithm>
#include <chrono>
#include <utility>
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

// Medians (µs per call) of two functions timed in alternating repeats, 9 each, so that a ratio
// of the two compares them under the same machine state (frequency, neighbours) rather than
// minutes apart.
template <class F, class G>
std::pair<double, double> time_pair_us(F&& f, G&& g, int iters) {
  std::vector<double> a, b;
  for (int w = 0; w < 20; ++w) f(), g();
  auto once = [&](auto&& fn) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < iters; ++i) fn();
    return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / iters;
  };
  for (int rep = 0; rep < 9; ++rep) {
    a.push_back(once(f));
    b.push_back(once(g));
  }
  std::nth_element(a.begin(), a.begin() + 4, a.end());
  std::nth_element(b.begin(), b.begin() + 4, b.end());
  return {a[4], b[4]};
}

}  // namespace nestscope::bench
