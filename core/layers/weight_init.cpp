#include "core/layers/weight_init.h"

#include <torch/torch.h>

namespace nestscope {

namespace {
thread_local bool skipping = false;
}  // namespace

SkipWeightInit::SkipWeightInit() : previous_(skipping) { skipping = true; }
SkipWeightInit::~SkipWeightInit() { skipping = previous_; }
bool SkipWeightInit::active() { return skipping; }

torch::Tensor random_weight(std::vector<int64_t> shape, double std) {
  if (skipping) return torch::empty(shape);
  return torch::randn(shape).mul_(std);
}

}  // namespace nestscope
