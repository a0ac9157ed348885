#include "core/layers/weight_init.h"

#include <torch/torch.h>

namespace nestscope {

namespace {
thread_local bool skipping = false;
}  // namespace

SkipWeightInit::SkipWeightInit() : previous_(skipping) { skipping = true; }
SkipWeightInit::~SkipWeightInit() { skipping = previous_; }
bool SkipWeightInit::active() { return skipping; }

void store_as(torch::Tensor& t, torch::ScalarType dtype, bool keep_values) {
  if (t.scalar_type() == dtype) return;
  torch::NoGradGuard no_grad;
  t.set_data(keep_values ? t.to(dtype) : torch::empty(t.sizes(), t.options().dtype(dtype)));
}

torch::Tensor random_weight(std::vector<int64_t> shape, double std) {
  if (skipping) return torch::empty(shape);
  return torch::randn(shape).mul_(std);
}

}  // namespace nestscope
