// A gate calibration prior for tests: the mean and covariance of n Gaussian MLP inputs of width C.
#pragma once
#include <torch/torch.h>

#include "core/gate/mlp_gate.h"

namespace nestscope::test {

inline GatePrior sample_prior(int64_t C, int64_t n = 200) {
  auto calib = torch::randn({n, C});
  auto centred = calib - calib.mean(0);
  return {calib.mean(0), centred.t().mm(centred) / double(n - 1)};
}

}  // namespace nestscope::test
