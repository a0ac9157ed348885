#include "core/layers/dense_linear.h"

namespace nestscope {

DenseLinear::DenseLinear(int64_t in_features, int64_t out_features, bool with_bias, double init_std)
    : ElasticLinear(in_features, out_features) {
  weight_ = register_parameter("weight", torch::randn({out_features, in_features}) * init_std);
  if (with_bias) bias_ = register_parameter("bias", torch::zeros({out_features}));
}

torch::Tensor DenseLinear::forward(const torch::Tensor& x) { return torch::linear(x, weight_, bias_); }

int64_t DenseLinear::macs() const { return in_features() * out_features(); }

int64_t DenseLinear::params() const {
  return weight_.numel() + (bias_.defined() ? bias_.numel() : 0);
}

}  // namespace nestscope
