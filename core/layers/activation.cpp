#include "core/layers/activation.h"

#include <torch/torch.h>

namespace nestscope {

torch::Tensor activate(const torch::Tensor& z, Activation activation) {
  switch (activation) {
    case Activation::Relu: return torch::relu(z);
    case Activation::Gelu: return torch::gelu(z);
    case Activation::GeluTanh: return torch::gelu(z, "tanh");
    case Activation::Silu: return torch::silu(z);
  }
  return z;
}

}  // namespace nestscope
