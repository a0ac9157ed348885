// NsnLinear: a Nested Subspace Network layer, y = B_r (A_r x) + b, every rank a prefix of the next.
// Rauba & van der Schaar, "Deep Hierarchical Learning with Nested Subspace Networks", ICLR 2026.
#pragma once
#include "core/layers/elastic_linear.h"

namespace nestscope {

class NsnLinear : public ElasticLinear {
 public:
  // A, B random with std(B·A) ≈ init_std; bias zero. Rank starts at max_rank.
  NsnLinear(int64_t in_features, int64_t out_features, int64_t max_rank, bool with_bias, double init_std);

  // Surgical conversion (Eckart–Young): W = U·S·Vᵀ → B = U·√S, A = √S·Vᵀ over the first R
  // singular triplets, bias copied. Rank r then gives the best rank-r approximation of W. A tall
  // matrix (a vocabulary head) goes through its Gram matrix instead (load_tall).
  void load_from_dense(const torch::Tensor& weight, const torch::Tensor& bias) override;

  torch::Tensor forward(const torch::Tensor& x) override;
  bool forward_raw(int64_t rows, const float* x, float* y) override;
  int64_t macs() const override { return rank_ * (in_features() + out_features()); }
  int64_t params() const override;
  torch::Tensor to_dense() const override;
  torch::Tensor bias() const override { return bias_; }

  int64_t max_rank() const override { return A_.size(0); }
  int64_t rank() const override { return rank_; }
  void set_rank(int64_t rank) override;  // throws Error outside [1, max_rank]

  const torch::Tensor& A() const { return A_; }  // [R, in]
  const torch::Tensor& B() const { return B_; }  // [out, R]

 private:
  // Bᵀ [R, out], contiguous, for the CPU inference path (see cpu_gemm_nn_raw): B's own memory,
  // which is laid out so; for a B in another layout, a copy rebuilt when B changed since (its
  // version counter or storage moved). Null when the fast path does not apply.
  const float* transposed_b();
  // At least 8× taller than wide and 2^20 weights or more (GPT-2's head: 50,257 × 768).
  static bool tall_matrix(int64_t out, int64_t in);
  // The SVD of a tall W through the float64 eigendecomposition of WᵀW [in, in], over row slices:
  // a direct float64 SVD holds W and U in float64 (1.2 GB for GPT-2's head), this only the Gram.
  void load_tall(const torch::Tensor& weight);

  torch::Tensor A_;     // [R, in]: rows are the nested input subspace
  torch::Tensor B_;     // [out, R], a transposed view of [R, out] memory
  torch::Tensor bias_;  // [out] or undefined; never truncated
  int64_t rank_;
  torch::Tensor bt_;               // cached Bᵀ
  int64_t bt_version_ = -1;        // B_._version() when bt_ was made
  const void* bt_source_ = nullptr;  // B_'s data pointer then
};

}  // namespace nestscope
