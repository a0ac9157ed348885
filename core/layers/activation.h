// act(z) elementwise on tensors, as the MLP and the gate apply it (the scalar form: core/activation.h).
#pragma once
#include <torch/types.h>

#include "core/activation.h"

namespace nestscope {

torch::Tensor activate(const torch::Tensor& z, Activation activation);

}  // namespace nestscope
