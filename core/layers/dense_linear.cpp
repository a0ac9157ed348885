#include "core/layers/dense_linear.h"

#include "core/error.h"
#include "core/layers/cpu_gemm.h"
#include "core/layers/weight_init.h"

namespace nestscope {

DenseLinear::DenseLinear(int64_t in_features, int64_t out_features, bool with_bias, double init_std)
    : ElasticLinear(in_features, out_features) {
  weight_ = register_parameter("weight", random_weight({out_features, in_features}, init_std));
  if (with_bias) bias_ = register_parameter("bias", torch::zeros({out_features}));
}

torch::Tensor DenseLinear::forward(const torch::Tensor& x) { return linear_any(x, weight_, bias_); }

bool DenseLinear::forward_raw(int64_t rows, const float* x, float* y) {
  return cpu_linear_raw_any(weight_, bias_, rows, x, y);
}

void DenseLinear::load_from_dense(const torch::Tensor& weight, const torch::Tensor& bias) {
  check(weight.sizes() == weight_.sizes(), "dense conversion: weight shape does not match the layer");
  check(bias.defined() == bias_.defined(), "dense conversion: bias presence does not match the layer");
  torch::NoGradGuard no_grad;
  weight_.copy_(weight);
  if (bias_.defined()) bias_.copy_(bias);
}

torch::Tensor DenseLinear::to_dense() const {
  return weight_.scalar_type() == torch::kFloat32 ? weight_ : weight_.to(torch::kFloat32);
}

bool DenseLinear::set_storage(torch::ScalarType dtype, bool keep_values) {
  if (dtype != torch::kFloat32 && dtype != torch::kBFloat16) return false;
  if (weight_.scalar_type() == dtype) return true;
  store_as(weight_, dtype, keep_values);
  return true;
}

int64_t DenseLinear::macs() const { return in_features() * out_features(); }

int64_t DenseLinear::params() const {
  return weight_.numel() + (bias_.defined() ? bias_.numel() : 0);
}

}  // namespace nestscope
