// The CUDA paths (core/cuda): each against the host path on the same weights. They need a GPU, a
// CUDA-enabled LibTorch and a build with the kernels; elsewhere they skip and say which is missing.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "core/cuda/dispatch.h"
#include "core/engine/engine.h"
#include "core/error.h"
#include "core/gate/mlp_gate.h"
#include "core/layers/mpo_linear.h"
#include "tests/core/gate_prior.h"

using namespace nestscope;

namespace {

#define REQUIRE_CUDA_KERNELS()                                                                               \
  do {                                                                                                       \
    if (!torch::cuda::is_available())                                                                        \
      GTEST_SKIP() << "no CUDA device visible to this LibTorch (CUDA kernels: " << cuda_kernels_status() << ")"; \
    if (!cuda_kernels_ready()) GTEST_SKIP() << "CUDA kernels: " << cuda_kernels_status();                   \
  } while (0)

double rel_error(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.cpu() - b.cpu()).norm().item<double>() / b.cpu().norm().item<double>();
}

}  // namespace

TEST(Cuda, HostTensorsAreRefusedWithAClearMessage) {
  // Runs everywhere: the launchers refuse what they cannot run, in builds with and without kernels.
  auto x = torch::randn({1, 8});
  auto blocks = torch::zeros({1, 1}, torch::kInt32);
  auto w = torch::randn({16, 8});
  try {
    gathered_mlp_cuda(x, blocks, 4, w, {}, {}, {}, w, {}, Activation::Relu);
    FAIL() << "a host tensor was accepted";
  } catch (const Error& e) {
    EXPECT_TRUE(std::string(e.what()).find("GPU") != std::string::npos ||
                std::string(e.what()).find("no CUDA kernels") != std::string::npos)
        << e.what();
  }
  EXPECT_FALSE(cuda_kernels_status().empty());
}

TEST(Cuda, MpoChainKernelsMatchTheHostContractionAtEveryChi) {
  REQUIRE_CUDA_KERNELS();
  torch::manual_seed(3);
  torch::NoGradGuard no_grad;
  // Both contraction orders (up: from the last site; down: from the first), with bias.
  MpoLinear up(128, 512, {8, 8, 8}, {4, 4, 8}, 16, true, 0.05);
  MpoLinear down(512, 128, {4, 4, 8}, {8, 8, 8}, 16, true, 0.05);
  for (auto* layer : {&up, &down}) {
    auto x = torch::randn({5, layer->in_features()});
    for (int64_t chi : {16, 7, 1}) {
      layer->set_bond(chi);
      layer->to(torch::kCPU);
      auto host = layer->forward(x);
      layer->to(torch::kCUDA);
      auto gpu = layer->forward(x.cuda());
      ASSERT_TRUE(gpu.is_cuda());
      EXPECT_LT(rel_error(gpu, host), 1e-5) << "χ=" << chi << " in=" << layer->in_features();
      EXPECT_LT(rel_error(layer->forward(x.narrow(0, 0, 1).cuda()), host.narrow(0, 0, 1)), 1e-5) << "batch 1, χ=" << chi;
    }
  }
}

TEST(Cuda, GatheredMlpKernelsMatchTheHostGate) {
  REQUIRE_CUDA_KERNELS();
  torch::manual_seed(5);
  torch::NoGradGuard no_grad;
  const int64_t C = 64, N = 256;
  auto up = torch::randn({N, C}) * 0.2, up_b = torch::randn({N}) * 0.1;
  auto down = torch::randn({C, N}) * 0.2, down_b = torch::randn({C}) * 0.1;
  auto prior = test::sample_prior(C, 400);
  auto x = torch::randn({6, C});
  for (auto policy : {GatePolicy::Oracle, GatePolicy::Sensing}) {
    for (auto act : {Activation::Gelu, Activation::Silu}) {
      GateOptions o{.policy = policy, .active = 0.5, .block = 16, .measurements = 32,
                    .measurement = MeasurementKind::Pca, .recovery = Recovery::Mmse};
      MlpGate host(up, up_b, down, down_b, act, o, 0, {}, &prior);
      MlpGate gpu(up, up_b, down, down_b, act, o, 0, {}, &prior);
      std::vector<MlpGateTrace> want_trace, got_trace;
      host.trace_oracle = gpu.trace_oracle = true;
      auto want = host.forward(x, &want_trace);
      auto got = gpu.forward(x.cuda(), &got_trace);
      ASSERT_TRUE(got.is_cuda());
      EXPECT_LT(rel_error(got, want), 1e-4) << "policy " << int(policy) << " act " << int(act);
      ASSERT_EQ(got_trace.size(), want_trace.size());
      for (size_t r = 0; r < want_trace.size(); ++r) {  // the same blocks, MACs and oracle, row by row
        EXPECT_EQ(got_trace[r].blocks, want_trace[r].blocks) << "row " << r;
        EXPECT_EQ(got_trace[r].oracle, want_trace[r].oracle) << "row " << r;
        EXPECT_EQ(got_trace[r].macs, want_trace[r].macs) << "row " << r;
        EXPECT_EQ(got_trace[r].measurements, want_trace[r].measurements) << "row " << r;
      }
    }
  }
  // A gated (SwiGLU) MLP: the kernels multiply in the third projection.
  auto mul = torch::randn({N, C}) * 0.2;
  GateOptions o{.policy = GatePolicy::Oracle, .active = 0.25, .block = 16};
  MlpGate host(up, {}, down, {}, Activation::Silu, o, 0, {}, nullptr, mul);
  MlpGate gpu(up, {}, down, {}, Activation::Silu, o, 0, {}, nullptr, mul);
  EXPECT_LT(rel_error(gpu.forward(x.cuda()), host.forward(x)), 1e-4);
}

TEST(Cuda, DefaultModelGeneratesTheSameGreedyTokensOnTheGpu) {
  REQUIRE_CUDA_KERNELS();
  Engine e;
  e.load_default();
  GenerateOptions g;
  g.max_new_tokens = 24;
  g.temperature = 0;
  for (int64_t bond : {0, 8}) {
    Budget b;
    if (bond > 0) {
      b.kind["attn"] = b.kind["mlp"] = b.kind["head"] = LinearKind::Mpo;
      b.bond = bond;
    }
    e.set_device("cpu");
    e.set_budget(b);
    const auto host = e.generate("ROMEO:", g).text;
    e.set_device("cuda");
    e.set_budget(b);
    EXPECT_EQ(e.generate("ROMEO:", g).text, host) << "χ=" << bond;
  }
}
