// MpoLinear: a Matrix Product Operator layer. W (out×in), with out = o_1·…·o_L and in = i_1·…·i_L,
// is a chain of cores G_l [D_{l-1}, o_l, i_l, D_l] (D_0 = D_L = 1); the bond dimension χ caps
// every D_l. Javanmard et al., "Compressing Transformer Language Models via Matrix Product
// Operator Decomposition: A Case Study on PicoGPT", 2026.
#pragma once
#include <algorithm>
#include <vector>

#include "core/layers/elastic_linear.h"
#include "core/layers/mpo_shape.h"

namespace nestscope {

class MpoLinear : public ElasticLinear {
 public:
  // Random cores with std(W) ≈ init_std; bias zero; the bond starts at max_bond. Throws Error
  // when the factors do not multiply to the shape, their counts differ, or max_bond < 1.
  MpoLinear(int64_t in_features, int64_t out_features, std::vector<int64_t> out_factors,
            std::vector<int64_t> in_factors, int64_t max_bond, bool with_bias, double init_std);

  // TT-SVD: sequential SVDs over the interleaved (o_l, i_l) indices, keeping at most max_bond
  // singular vectors per bond. The cores are left-orthogonal with the bond indices sorted by
  // singular value, so a lower χ is a truncation of every bond (the slider), not a new TT-SVD.
  void load_from_dense(const torch::Tensor& weight, const torch::Tensor& bias) override;
  // Re-runs TT-SVD on the chain's own full-χ weight: restores the sorted canonical form after
  // fine-tuning without changing the full-χ function (up to rounding).
  void canonicalize();

  // Direct contraction of x with the chain, site by site, from whichever end costs fewer MACs;
  // W is never formed — unless the rows are so many that rebuilding W once and one dense product
  // costs fewer MACs (long prompts, evaluation windows, training batches); then forward_rebuilt.
  torch::Tensor forward(const torch::Tensor& x) override;
  // Always the direct contraction (what forward does for few rows without autograd).
  torch::Tensor forward_direct(const torch::Tensor& x);
  // MACs of rebuilding W from the cores at the current χ (to_dense).
  int64_t rebuild_macs() const;
  // The reference path: rebuild W from the cores, then one matmul.
  torch::Tensor forward_rebuilt(const torch::Tensor& x) const;
  // The same direct contraction on raw float buffers (CPU float32 cores, no autograd): the packed
  // per-χ path of forward(). Returns false (nothing written) otherwise.
  bool forward_raw(int64_t rows, const float* x, float* y) override;
  int64_t macs() const override;  // of the direct contraction, per input row
  bool right_to_left() const;     // the cheaper order at the current χ
  int64_t params() const override;
  torch::Tensor to_dense() const override;
  torch::Tensor bias() const override { return bias_; }

  int64_t max_bond() const override { return max_bond_; }
  int64_t reach_bond() const override { return *std::max_element(full_bonds_.begin(), full_bonds_.end()); }
  int64_t bond() const override { return bond_; }
  void set_bond(int64_t bond) override;  // throws Error outside [1, max_bond]

  const std::vector<int64_t>& out_factors() const { return out_factors_; }
  const std::vector<int64_t>& in_factors() const { return in_factors_; }
  int64_t sites() const { return int64_t(cores_.size()); }
  // Bond l (1 ≤ l < sites) at the current χ, and at the maximum χ.
  int64_t bond_dim(size_t l) const;
  int64_t full_bond_dim(size_t l) const { return full_bonds_[l]; }
  std::vector<int64_t> bond_dims() const;  // D_0 … D_L at the current χ
  // Core l at the current χ (a view).
  torch::Tensor core(size_t l) const;

 private:
  // Inference fast path (no autograd, CPU, float32): each site's core at the current χ packed
  // once as the [D·i, o·D'] matrix the contraction multiplies by, in the cheaper direction, then
  // every call is raw permutes and one small gemm per site — no ATen dispatch per site. The
  // packing is redone when χ changes or a core's storage or version does (training, loading).
  struct PackedSite {
    int64_t D, o, i, D2;
    std::vector<float> b;  // [D·i, o·D2] row-major
  };
  bool packed_current() const;
  void pack() const;
  void contract_raw(const float* x, int64_t N, float* y) const;
  mutable std::vector<PackedSite> packed_;
  mutable std::vector<std::pair<const void*, int64_t>> packed_from_;  // each core's data and version
  mutable int64_t packed_bond_ = -1;
  mutable bool packed_rtl_ = false;

  std::vector<int64_t> out_factors_, in_factors_;
  std::vector<int64_t> full_bonds_;  // D_0 … D_L at max χ
  std::vector<torch::Tensor> cores_; // [D_{l-1}, o_l, i_l, D_l]
  torch::Tensor bias_;
  int64_t max_bond_;
  int64_t bond_;
};

}  // namespace nestscope
