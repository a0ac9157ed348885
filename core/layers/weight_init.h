// Random initial weights, and a guard that skips them when a loader is about to fill every weight
// anyway (a 1.1B-parameter model draws ~1.1 billion normal samples otherwise: seconds).
#pragma once
#include <torch/types.h>

#include <vector>

namespace nestscope {

// While one lives on this thread, random_weight returns uninitialised memory. Used around building
// a model that a checkpoint fills next, or a variant that a conversion fills next.
class SkipWeightInit {
 public:
  SkipWeightInit();
  ~SkipWeightInit();
  SkipWeightInit(const SkipWeightInit&) = delete;
  SkipWeightInit& operator=(const SkipWeightInit&) = delete;
  static bool active();

 private:
  bool previous_;
};

// Re-stores parameter `t` in `dtype` in place (every holder of it sees the change): its values
// converted (keep_values), or uninitialised for a loader to fill.
void store_as(torch::Tensor& t, torch::ScalarType dtype, bool keep_values);

// N(0, std²) of `shape` (float32), or uninitialised under SkipWeightInit.
torch::Tensor random_weight(std::vector<int64_t> shape, double std);

}  // namespace nestscope
