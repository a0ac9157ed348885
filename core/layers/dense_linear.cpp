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

torch::Tensor DenseLinear::forward(const torch::Tensor& x) {
  if (is_bf16_weight(weight_)) return linear_any(x, weight_, bias_);
  if (cpu_gemm_applies(x, weight_) && weight_.is_contiguous())
    return cpu_gemm_nt(x, weight_.data_ptr<float>(), out_features(), in_features(), bias_);
  return torch::linear(x, weight_, bias_);
}

bool DenseLinear::forward_raw(int64_t rows, const float* x, float* y) {
  if (is_bf16_weight(weight_) && weight_.is_cpu() && weight_.is_contiguous() &&
      (!bias_.defined() || bias_.is_contiguous())) {
    cpu_linear_bf16_raw(rows, in_features(), out_features(), x,
                        reinterpret_cast<const uint16_t*>(weight_.data_ptr<at::BFloat16>()),
                        bias_.defined() ? bias_.data_ptr<float>() : nullptr, y);
    return true;
  }
  if (!cpu_gemm_applies(weight_, weight_) || !weight_.is_contiguous() || (bias_.defined() && !bias_.is_contiguous()))
    return false;
  cpu_linear_raw(rows, in_features(), out_features(), x, weight_.data_ptr<float>(),
                 bias_.defined() ? bias_.data_ptr<float>() : nullptr, y);
  return true;
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
  torch::NoGradGuard no_grad;
  weight_.set_data(keep_values ? weight_.to(dtype) : torch::empty(weight_.sizes(), weight_.options().dtype(dtype)));
  return true;
}

int64_t DenseLinear::macs() const { return in_features() * out_features(); }

int64_t DenseLinear::params() const {
  return weight_.numel() + (bias_.defined() ? bias_.numel() : 0);
}

}  // namespace nestscope
