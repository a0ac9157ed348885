// ElasticLinear: the one interface every projection of the model goes through (Dense, NSN, MPO).
#pragma once
#include <torch/nn/module.h>

#include <cstdint>

namespace nestscope {

// y = x·Wᵀ + b for some parameterization of W. The model never branches on the concrete type;
// a budget changes how much of the parameterization is used, not which code path runs.
class ElasticLinear : public torch::nn::Module {
 public:
  ElasticLinear(int64_t in_features, int64_t out_features)
      : in_features_(in_features), out_features_(out_features) {}

  int64_t in_features() const { return in_features_; }
  int64_t out_features() const { return out_features_; }

  // x: [..., in] -> [..., out]
  virtual torch::Tensor forward(const torch::Tensor& x) = 0;
  // Multiply-accumulates per input row at the current budget.
  virtual int64_t macs() const = 0;
  // Parameters in use at the current budget (bias included).
  virtual int64_t params() const = 0;
  // Inference on caller-owned float buffers, no tensors: y[rows, out] = x[rows, in]·Wᵀ + b at the
  // current budget. Returns false (and writes nothing) when this layer or build has no such path
  // (no CBLAS, not CPU float32); then use forward(). A decoder that preallocates its activations
  // pays only arithmetic here, which is what the layer benchmarks compare.
  virtual bool forward_raw(int64_t /*rows*/, const float* /*x*/, float* /*y*/) { return false; }
  // The reference: W as a dense [out, in] matrix at the current budget.
  virtual torch::Tensor to_dense() const = 0;
  // The bias [out], or an undefined tensor when there is none.
  virtual torch::Tensor bias() const = 0;

  // Re-parameterizes from a dense weight [out, in] and bias [out] (undefined = none): a copy for
  // Dense, a truncated SVD for NSN. Throws Error on a shape mismatch.
  virtual void load_from_dense(const torch::Tensor& weight, const torch::Tensor& bias) = 0;

  // Stores the weights in `dtype` (float32 or bfloat16) from now on, converting them
  // (keep_values) or leaving them to be filled (a loader's next step). Returns false, changing
  // nothing, where this parameterization has no such storage (only dense layers keep bfloat16;
  // NSN factors and MPO cores stay float32).
  virtual bool set_storage(torch::ScalarType dtype, bool /*keep_values*/) { return dtype == torch::kFloat32; }

  // Rank elasticity (NSN): the largest rank (0 = this layer has no rank knob), the rank in
  // use, and a new rank in [1, max_rank()] that takes effect on the next forward.
  virtual int64_t max_rank() const { return 0; }
  virtual int64_t rank() const { return 0; }
  virtual void set_rank(int64_t /*rank*/) {}

  // Bond elasticity (MPO): the largest bond dimension χ (0 = no bond knob), the χ in use, and a
  // new χ in [1, max_bond()] that takes effect on the next forward.
  virtual int64_t max_bond() const { return 0; }
  // The largest bond the chain actually has (≤ max_bond): a χ above it changes nothing.
  virtual int64_t reach_bond() const { return max_bond(); }
  virtual int64_t bond() const { return 0; }
  virtual void set_bond(int64_t /*bond*/) {}

 private:
  int64_t in_features_;
  int64_t out_features_;
};

}  // namespace nestscope
