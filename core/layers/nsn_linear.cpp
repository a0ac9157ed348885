#include "core/layers/nsn_linear.h"
#include "core/layers/parallel_linear.h"

#include "core/error.h"
#include "core/layers/cpu_gemm.h"
#include "core/layers/weight_init.h"

namespace nestscope {

NsnLinear::NsnLinear(int64_t in_features, int64_t out_features, int64_t max_rank, bool with_bias, double init_std)
    : ElasticLinear(in_features, out_features), rank_(max_rank) {
  check(max_rank >= 1 && max_rank <= std::min(in_features, out_features),
        "NSN max rank " + std::to_string(max_rank) + " is outside [1, " +
            std::to_string(std::min(in_features, out_features)) + "]");
  // Var(W_ij) = R·Var(B)·Var(A) = init_std² with std(A) = √init_std, std(B) = √(init_std / R).
  A_ = register_parameter("A", random_weight({max_rank, in_features}, std::sqrt(init_std)));
  // B [out, R] is stored as Bᵀ (a transposed view of [R, out] memory): the rank-r prefix of Bᵀ
  // is its first r rows, which the CPU path reads in place (one copy of B, not two). Drawn in
  // [out, R] order, so a seeded model keeps its weights.
  auto b = SkipWeightInit::active() ? torch::empty({max_rank, out_features}).t()
                                    : random_weight({out_features, max_rank}, std::sqrt(init_std / double(max_rank)))
                                          .t()
                                          .contiguous()
                                          .t();
  B_ = register_parameter("B", b);
  if (with_bias) bias_ = register_parameter("bias", torch::zeros({out_features}));
}

void NsnLinear::load_from_dense(const torch::Tensor& weight, const torch::Tensor& bias) {
  check(weight.dim() == 2 && weight.size(0) == out_features() && weight.size(1) == in_features(),
        "NSN conversion: weight shape does not match the layer");
  const int64_t R = max_rank();
  torch::NoGradGuard no_grad;
  if (tall_matrix(out_features(), in_features())) {
    load_tall(weight.detach());
  } else {
    auto [U, S, Vh] = torch::linalg::svd(weight.detach().to(torch::kFloat64), /*full_matrices=*/false, c10::nullopt);
    auto root = S.narrow(0, 0, R).sqrt();                                       // [R]
    auto B = U.narrow(1, 0, R) * root.unsqueeze(0);                             // [out, R]
    auto A = root.unsqueeze(1) * Vh.narrow(0, 0, R);                            // [R, in]
    A_.copy_(A);
    B_.copy_(B);
  }
  if (bias_.defined()) {
    check(bias.defined(), "NSN conversion: the dense layer has no bias to copy");
    bias_.copy_(bias);
  }
}

bool NsnLinear::tall_matrix(int64_t out, int64_t in) { return out >= 8 * in && out * in >= (int64_t(1) << 20); }

void NsnLinear::load_tall(const torch::Tensor& weight) {
  // WᵀW = V·S²·Vᵀ in float64, accumulated over slices of rows; then B = W·V_R / √S_R row slice by
  // row slice, A = √S_R·V_Rᵀ. Singular values below σ_max·1e-6 lose relative accuracy this way
  // (the Gram squares them); their factors are tiny and they come last in the nested order.
  const int64_t in = in_features(), out = out_features(), R = max_rank();
  constexpr int64_t kSlice = 8192;
  auto gram = torch::zeros({in, in}, torch::kFloat64);
  for (int64_t r = 0; r < out; r += kSlice) {
    const auto rows = weight.narrow(0, r, std::min(kSlice, out - r)).to(torch::kFloat64);
    gram.addmm_(rows.t(), rows);
  }
  auto [evals, evecs] = torch::linalg::eigh(gram, "L");  // ascending
  const auto order = torch::arange(in - 1, -1, -1, torch::kInt64);
  const auto s = evals.index_select(0, order).narrow(0, 0, R).clamp_min(0).sqrt();  // σ, descending
  const auto v = evecs.index_select(1, order).narrow(1, 0, R);                      // [in, R]
  const auto root = s.sqrt();
  const auto inv_root = torch::where(root > 0, 1.0 / root, torch::zeros_like(root));
  A_.copy_(root.unsqueeze(1) * v.t());
  const auto scaled = v * inv_root.unsqueeze(0);  // [in, R]: W·V_R / √S_R = U_R·√S_R
  for (int64_t r = 0; r < out; r += kSlice) {
    const int64_t n = std::min(kSlice, out - r);
    B_.narrow(0, r, n).copy_(weight.narrow(0, r, n).to(torch::kFloat64).matmul(scaled));
  }
}

const float* NsnLinear::transposed_b() {
  if (!A_.is_contiguous() || !B_.device().is_cpu() || B_.scalar_type() != torch::kFloat32) return nullptr;
  if (B_.stride(0) == 1 && B_.stride(1) == out_features()) return B_.data_ptr<float>();  // stored as Bᵀ
  if (!B_.is_contiguous()) return nullptr;
  if (!bt_.defined() || bt_version_ != B_._version() || bt_source_ != B_.data_ptr()) {
    torch::NoGradGuard no_grad;
    bt_ = B_.detach().t().contiguous();  // [R, out]
    bt_version_ = B_._version();
    bt_source_ = B_.data_ptr();
  }
  return bt_.data_ptr<float>();
}

bool NsnLinear::forward_raw(int64_t rows, const float* x, float* y) {
  // transposed_b() checks A's and B's device, dtype and layout; a ~0.06 µs rank-8 product makes
  // every repeated check a visible share.
  if (!cpu_gemm_available() || at::GradMode::is_enabled()) return false;
  const float* bt = transposed_b();
  if (!bt || (bias_.defined() && !bias_.is_contiguous())) return false;
  cpu_low_rank_raw(rows, in_features(), out_features(), rank_, x, A_.data_ptr<float>(), bt, out_features(),
                   bias_.defined() ? bias_.data_ptr<float>() : nullptr, y);
  return true;
}

torch::Tensor NsnLinear::forward(const torch::Tensor& x) {
  // Views, not copies: A_r = A[:r] and B_r = B[:, :r]. Two skinny matmuls, r·(in+out) MACs.
  if (cpu_gemm_applies(x, A_)) {
    if (const float* bt = transposed_b()) return cpu_low_rank(x, A_, bt, out_features(), out_features(), rank_, bias_);
  }
  auto h = training_linear(x, A_.narrow(0, 0, rank_));          // [..., r]
  return training_linear(h, B_.narrow(1, 0, rank_), bias_);     // [..., out]
}

int64_t NsnLinear::params() const {
  return rank_ * (in_features() + out_features()) + (bias_.defined() ? bias_.numel() : 0);
}

torch::Tensor NsnLinear::to_dense() const {
  return torch::matmul(B_.narrow(1, 0, rank_), A_.narrow(0, 0, rank_));  // [out, in]
}

void NsnLinear::set_rank(int64_t rank) {
  check(rank >= 1 && rank <= max_rank(),
        "rank " + std::to_string(rank) + " is outside [1, " + std::to_string(max_rank()) + "]");
  rank_ = rank;
}

}  // namespace nestscope
