// DenseLinear: a plain full-rank weight, the reference parameterization.
#pragma once
#include "core/layers/elastic_linear.h"

namespace nestscope {

class DenseLinear : public ElasticLinear {
 public:
  // Weights N(0, init_std), bias zero.
  DenseLinear(int64_t in_features, int64_t out_features, bool with_bias, double init_std);

  torch::Tensor forward(const torch::Tensor& x) override;
  bool forward_raw(int64_t rows, const float* x, float* y) override;
  int64_t macs() const override;
  int64_t params() const override;
  torch::Tensor to_dense() const override;  // float32 (a copy when the weight is stored in bfloat16)
  bool set_storage(torch::ScalarType dtype, bool keep_values) override;
  torch::Tensor bias() const override { return bias_; }
  void load_from_dense(const torch::Tensor& weight, const torch::Tensor& bias) override;

 private:
  torch::Tensor weight_;  // [out, in]
  torch::Tensor bias_;    // [out] or undefined
};

}  // namespace nestscope
