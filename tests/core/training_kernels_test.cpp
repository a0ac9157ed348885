// The fast training paths against their plain references: fused causal attention, the
// row-parallel linear, the CPU tensor cache.
#include <gtest/gtest.h>

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include "core/train/cpu_tensor_cache.h"
#include "core/layers/parallel_linear.h"
#include "core/model/causal_attention.h"

using namespace nestscope;

namespace {

// softmax(q·kᵀ/√hd + causal mask)·v, materialized: the textbook formula.
torch::Tensor reference_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v) {
  const int64_t T = q.size(2), hd = q.size(3);
  auto att = torch::matmul(q, k.transpose(-2, -1)) / std::sqrt(double(hd));  // [B, H, T, T]
  att = att.masked_fill(torch::ones({T, T}, torch::kBool).triu(1), -std::numeric_limits<float>::infinity());
  return torch::matmul(torch::softmax(att, -1), v);
}

struct Grads {
  torch::Tensor y, dq, dk, dv;
};

template <class F>
Grads run(F&& f, const torch::Tensor& q0, const torch::Tensor& k0, const torch::Tensor& v0, const torch::Tensor& dy) {
  auto q = q0.clone().requires_grad_(true), k = k0.clone().requires_grad_(true), v = v0.clone().requires_grad_(true);
  auto y = f(q, k, v);
  y.backward(dy);
  return {y.detach(), q.grad(), k.grad(), v.grad()};
}

}  // namespace

TEST(FusedAttention, MatchesTheMaterializedFormulaInValueAndGradients) {
  for (auto [B, H, T, hd] : std::vector<std::array<int64_t, 4>>{{3, 8, 37, 8}, {2, 2, 64, 13}, {1, 1, 1, 4}}) {
    torch::manual_seed(B * 100 + T);
    auto q = torch::randn({B, H, T, hd}) * 2, k = torch::randn({B, H, T, hd}) * 2, v = torch::randn({B, H, T, hd});
    auto dy = torch::randn({B, H, T, hd});
    const auto fused = run([](auto& a, auto& b, auto& c) { return fused_causal_attention(a, b, c); }, q, k, v, dy);
    const auto ref = run([](auto& a, auto& b, auto& c) { return reference_attention(a, b, c); }, q, k, v, dy);
    EXPECT_TRUE(torch::allclose(fused.y, ref.y, 1e-4, 1e-5)) << "T " << T << " hd " << hd;
    EXPECT_TRUE(torch::allclose(fused.dq, ref.dq, 1e-3, 1e-4)) << "T " << T << " hd " << hd;
    EXPECT_TRUE(torch::allclose(fused.dk, ref.dk, 1e-3, 1e-4)) << "T " << T << " hd " << hd;
    EXPECT_TRUE(torch::allclose(fused.dv, ref.dv, 1e-3, 1e-4)) << "T " << T << " hd " << hd;
  }
}

TEST(FusedAttention, TrainingUsesItAndInferenceKeepsTheChunkedPath) {
  torch::manual_seed(1);
  auto q = torch::randn({2, 4, 16, 8}), k = torch::randn({2, 4, 16, 8}), v = torch::randn({2, 4, 16, 8});
  auto qg = q.clone().requires_grad_(true);
  auto trained = causal_attention(qg, k, v, 0);
  EXPECT_NE(trained.grad_fn()->name().find("FusedCausalAttention"), std::string::npos) << trained.grad_fn()->name();
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::allclose(causal_attention(q, k, v, 0), reference_attention(q, k, v), 1e-4, 1e-5));
  // A continuation (past > 0) sees every earlier key: the last query of the full sequence.
  auto last = causal_attention(q.narrow(2, 15, 1), k, v, 15);
  EXPECT_TRUE(torch::allclose(last, reference_attention(q, k, v).narrow(2, 15, 1), 1e-4, 1e-5));
}

TEST(RowParallelLinear, MatchesTorchLinearInValueAndGradients) {
  if (at::get_num_threads() < 2) at::set_num_threads(2);
  torch::manual_seed(2);
  auto x0 = torch::randn({4, 300, 96}), w0 = torch::randn({40, 96}), b0 = torch::randn({40});
  auto dy = torch::randn({4, 300, 40});
  for (bool bias : {true, false}) {
    auto x = x0.clone().requires_grad_(true), w = w0.clone().requires_grad_(true), b = b0.clone().requires_grad_(true);
    ASSERT_TRUE(row_parallel_applies(x, w));
    auto y = training_linear(x, w, bias ? b : torch::Tensor());
    y.backward(dy);
    auto xr = x0.clone().requires_grad_(true), wr = w0.clone().requires_grad_(true), br = b0.clone().requires_grad_(true);
    auto yr = torch::linear(xr, wr, bias ? br : torch::Tensor());
    yr.backward(dy);
    EXPECT_TRUE(torch::allclose(y, yr, 1e-4, 1e-5));
    EXPECT_TRUE(torch::allclose(x.grad(), xr.grad(), 1e-4, 1e-5));
    EXPECT_TRUE(torch::allclose(w.grad(), wr.grad(), 1e-3, 1e-4));
    if (bias) EXPECT_TRUE(torch::allclose(b.grad(), br.grad(), 1e-3, 1e-4));
  }
  torch::NoGradGuard no_grad;
  EXPECT_FALSE(row_parallel_applies(x0, w0)) << "inference keeps the inference kernels";
}

TEST(CpuTensorCache, ReusesFreedBuffersOnlyInsideAScope) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "the cache is a pass-through under AddressSanitizer";
#endif
  {
    CpuTensorCache scope;
    const auto before = cpu_cache_stats();
    EXPECT_TRUE(before.installed);
    void* first = nullptr;
    {
      auto t = torch::empty({1 << 18});  // 1 MB
      first = t.data_ptr();
    }
    EXPECT_GE(cpu_cache_stats().cached_bytes, int64_t(1) << 20);
    auto again = torch::empty({1 << 18});
    EXPECT_EQ(again.data_ptr(), first);
    EXPECT_EQ(cpu_cache_stats().hits, before.hits + 1);
  }
  EXPECT_EQ(cpu_cache_stats().cached_bytes, 0) << "the last scope gives the buffers back";
  const auto outside = cpu_cache_stats();
  { auto t = torch::empty({1 << 18}); }
  EXPECT_EQ(cpu_cache_stats().cached_bytes, 0);
  EXPECT_EQ(cpu_cache_stats().hits, outside.hits);
}
