// Progress reports for long work (training, evaluation, conversion, sweeps) and how to cancel it.
#pragma once
#include <cmath>
#include <cstdint>
#include <functional>
#include <string>

#include "core/error.h"

namespace nestscope {

struct Progress {
  std::string phase;                   // "train", "eval", ...
  int64_t done = 0;                    // units finished
  int64_t total = 0;                   // units in all (0 when unknown)
  double loss = std::nan("");          // latest loss, when the phase has one
  double tokens_per_s = std::nan("");  // throughput, when known
};

// Return false to cancel; the worker then throws Cancelled and leaves prior state intact.
using ProgressFn = std::function<bool(const Progress&)>;

// Calls fn (if any) and throws Cancelled when it asks to stop.
inline void report(const ProgressFn& fn, const Progress& p) {
  if (fn && !fn(p)) throw Cancelled();
}

// For work inside one unit of an outer job (a sweep row's evaluation): reports the outer job's
// progress `at` again on every inner step, so Cancel is seen within one inner step (one batch of
// windows) instead of at the end of the unit.
inline ProgressFn within(const ProgressFn& outer, Progress at) {
  if (!outer) return {};
  return [outer, at = std::move(at)](const Progress&) { return outer(at); };
}

}  // namespace nestscope
