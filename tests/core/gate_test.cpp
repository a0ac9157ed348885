#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "core/eval/calibrate.h"
#include "core/model/macs.h"
#include "core/error.h"
#include "core/eval/joint_split.h"
#include "core/gate/block_recovery.h"
#include "core/eval/head_probe.h"
#include "core/gate/mlp_gate.h"
#include "core/gate/neuron_order.h"
#include "core/model/budget_json.h"
#include "core/model/transformer.h"
#include "tests/core/gate_prior.h"
#include "tests/core/test_util.h"

using namespace nestscope;

namespace {

// A k-block-sparse signal [n·B] with Gaussian entries on k random blocks.
torch::Tensor planted(int64_t n, int64_t B, int64_t k, std::vector<int64_t>* support) {
  auto perm = torch::randperm(n).narrow(0, 0, k);
  *support = std::vector<int64_t>(perm.data_ptr<int64_t>(), perm.data_ptr<int64_t>() + k);
  std::sort(support->begin(), support->end());
  auto z = torch::zeros({n * B});
  for (int64_t b : *support) z.narrow(0, b * B, B).normal_();
  return z;
}

// The shared tiny model, wide enough for 4 MLP blocks of 16.
ModelConfig tiny_config() {
  ModelConfig c = test::tiny_config();
  c.d_model = 32;
  c.d_ff = 64;
  c.context = 16;
  return c;
}

using test::sample_prior;

}  // namespace

TEST(GateRecovery, MeasurementOperatorsAreSeededAndNormalised) {
  for (auto kind : {MeasurementKind::Rademacher, MeasurementKind::Gaussian}) {
    auto a = measurement_operator(64, 256, 7, kind), b = measurement_operator(64, 256, 7, kind);
    EXPECT_TRUE(torch::equal(a, b));
    EXPECT_FALSE(torch::equal(a, measurement_operator(64, 256, 8, kind)));
    // Columns have unit norm on average: E[ΦᵀΦ] = I.
    EXPECT_NEAR(a.square().sum(0).mean().item<double>(), 1.0, 0.05);
  }
  EXPECT_THROW(measurement_operator(0, 8, 1, MeasurementKind::Gaussian), Error);
}

TEST(GateRecovery, BlockOmpAndIhtFindAPlantedSparseSignalExactly) {
  torch::manual_seed(11);
  const int64_t n = 32, B = 8, k = 3;  // N = 256
  // m ≥ C·k·B·log(n/k) with C = 2: 2·24·ln(32/3) ≈ 114.
  const int64_t m = int64_t(std::ceil(2.0 * double(k * B) * std::log(double(n) / double(k))));
  for (uint64_t seed : {1, 2, 3, 4, 5}) {
    std::vector<int64_t> support;
    auto z = planted(n, B, k, &support);
    for (auto kind : {MeasurementKind::Rademacher, MeasurementKind::Gaussian}) {
      auto phi = measurement_operator(m, n * B, seed, kind);
      auto y = phi.mv(z);
      auto omp = block_omp(phi, y, B, k);
      EXPECT_LT((omp - z).norm().item<double>(), 1e-4 * z.norm().item<double>()) << "OMP seed " << seed;
      EXPECT_EQ(top_blocks(block_energy(omp, B), k), support);
      auto iht = block_iht(phi, y, B, k, 60);
      EXPECT_EQ(top_blocks(block_energy(iht, B), k), support) << "IHT seed " << seed;
      EXPECT_LT((iht - z).norm().item<double>(), 1e-2 * z.norm().item<double>()) << "IHT seed " << seed;
    }
  }
}

TEST(GateRecovery, TooFewMeasurementsAndBadSizesAreClearErrors) {
  auto phi = measurement_operator(16, 64, 1, MeasurementKind::Gaussian);
  auto y = torch::zeros({16});
  EXPECT_THROW(block_omp(phi, y, 8, 3), Error);   // k·B = 24 > m = 16
  EXPECT_THROW(block_iht(phi, y, 7, 2, 5), Error);  // 7 does not divide 64
  EXPECT_THROW(block_iht(phi, y, 8, 0, 5), Error);  // k = 0
  EXPECT_THROW(block_iht(phi, y, 8, 9, 5), Error);  // k > 8 blocks
  EXPECT_THROW(block_iht(phi, y, 8, 2, 0), Error);  // no iteration
  EXPECT_THROW(block_iht(phi, torch::zeros({15}), 8, 2, 5), Error);
  EXPECT_DOUBLE_EQ(support_f1({1, 2, 3}, {1, 2, 3}), 1.0);
  EXPECT_DOUBLE_EQ(support_f1({1, 2}, {3, 4}), 0.0);
  EXPECT_NEAR(support_f1({1, 2, 3, 4}, {1, 2}), 2 * 0.5 * 1.0 / 1.5, 1e-12);
}

TEST(MlpGate, EveryPolicyWithAllBlocksActiveEqualsTheDenseModel) {
  torch::manual_seed(3);
  Gpt model(tiny_config());
  torch::NoGradGuard no_grad;
  for (auto& p : model->parameters()) p.add_(torch::randn_like(p) * 0.05);  // non-trivial biases too
  auto idx = torch::randint(0, 11, {2, 9});
  auto dense = model->forward(idx);
  for (auto policy : {GatePolicy::Sensing, GatePolicy::Oracle, GatePolicy::Random}) {
    Budget b;
    b.gate = {.policy = policy, .active = 1.0, .block = 16, .measurements = 16};
    model->apply_budget(b);
    EXPECT_LT((model->forward(idx) - dense).abs().max().item<double>(), 1e-4) << gate_policy_name(policy);
  }
  model->apply_budget(Budget{});
  EXPECT_TRUE(torch::allclose(model->forward(idx), dense));
}

TEST(MlpGate, GatedMlpComputesExactlyTheChosenBlocks) {
  torch::manual_seed(4);
  const int64_t C = 32, N = 64;
  auto up = torch::randn({N, C}) * 0.3, up_b = torch::randn({N}) * 0.1;
  auto down = torch::randn({C, N}) * 0.3, down_b = torch::randn({C}) * 0.1;
  for (auto policy : {GatePolicy::Oracle, GatePolicy::Sensing, GatePolicy::Random}) {
    MlpGate gate(up, up_b, down, down_b, Activation::Relu, {.policy = policy, .active = 0.5, .block = 8, .measurements = 8},
                 0);
    auto x = torch::randn({5, C});
    std::vector<MlpGateTrace> trace;
    auto y = gate.forward(x, &trace);
    ASSERT_EQ(trace.size(), 5u);
    for (int64_t r = 0; r < 5; ++r) {
      // Reference: the dense MLP with every neuron outside the chosen blocks masked to zero.
      auto mask = torch::zeros({N});
      for (int64_t b : trace[size_t(r)].blocks) mask.narrow(0, b * 8, 8).fill_(1);
      EXPECT_EQ(trace[size_t(r)].blocks.size(), 4u);  // k = 0.5 · 8 blocks
      auto h = torch::relu(torch::mv(up, x[r]) + up_b) * mask;
      auto ref = torch::mv(down, h) + down_b;
      EXPECT_LT((y[r] - ref).abs().max().item<double>(), 1e-4) << gate_policy_name(policy);
    }
    if (policy == GatePolicy::Oracle) {
      // The oracle keeps the truly strongest blocks.
      auto e = gate.block_energies(x);
      for (int64_t r = 0; r < 5; ++r) EXPECT_EQ(trace[size_t(r)].blocks, top_blocks(e[r], 4));
    }
    if (policy == GatePolicy::Sensing) {
      // m·C + m·N to measure and recover, 2·k·B·C to run: below the dense 2·N·C.
      EXPECT_EQ(trace[0].measurements, 8);
      EXPECT_EQ(trace[0].macs, 8 * C + 8 * N + 2 * 4 * 8 * C);
      EXPECT_LT(trace[0].macs, gate.dense_macs());
    }
  }
}

TEST(MlpGate, ForcedOffBlocksNeverRunAndForcedOnAlwaysDo) {
  torch::manual_seed(5);
  const int64_t C = 32, N = 64;
  auto up = torch::randn({N, C}) * 0.3, up_b = torch::randn({N}) * 0.1;
  auto down = torch::randn({C, N}) * 0.3, down_b = torch::randn({C}) * 0.1;
  MlpGate gate(up, up_b, down, down_b, Activation::Relu, {.policy = GatePolicy::Oracle, .active = 0.5, .block = 8}, 0);
  auto x = torch::randn({6, C});
  std::vector<MlpGateTrace> free_trace, trace;
  gate.forward(x, &free_trace);
  gate.set_forced_off({free_trace[0].blocks[0], 7});
  gate.set_forced_on({3});
  auto y = gate.forward(x, &trace);
  for (int64_t r = 0; r < 6; ++r) {
    const auto& b = trace[size_t(r)].blocks;
    EXPECT_EQ(std::count(b.begin(), b.end(), free_trace[0].blocks[0]), 0);
    EXPECT_EQ(std::count(b.begin(), b.end(), 7), 0);
    EXPECT_EQ(std::count(b.begin(), b.end(), 3), 1);
    auto mask = torch::zeros({N});
    for (int64_t k : b) mask.narrow(0, k * 8, 8).fill_(1);
    auto ref = torch::mv(down, torch::relu(torch::mv(up, x[r]) + up_b) * mask) + down_b;
    EXPECT_LT((y[r] - ref).abs().max().item<double>(), 1e-4);
  }
  EXPECT_THROW(gate.set_forced_off({8}), Error);
  // Through a budget: the gate must be on, the block in range and not forced on as well.
  ModelConfig c = tiny_config();
  Gpt model(c);
  Budget bad;
  bad.gate_blocks_off = {{0, 1}};
  EXPECT_THROW(model->apply_budget(bad), Error);  // gate off
  bad.gate.policy = GatePolicy::Random;
  bad.gate.active = 0.5;
  bad.blocks_on = {{0, 1}};
  EXPECT_THROW(model->apply_budget(bad), Error);  // on and off at once
  bad.blocks_on.clear();
  bad.gate_blocks_off = {{0, c.d_ff / 16}};
  EXPECT_THROW(model->apply_budget(bad), Error);  // out of range
  bad.gate_blocks_off = {{0, 1}};
  model->apply_budget(bad);
  EXPECT_EQ(budget_from_json(budget_to_json(bad)), bad);
}

TEST(MlpGate, SeedsMakeRunsReproducible) {
  torch::manual_seed(5);
  auto up = torch::randn({64, 32}), down = torch::randn({32, 64});
  auto x = torch::randn({6, 32});
  auto run = [&](GatePolicy p, uint64_t seed) {
    MlpGate g(up, {}, down, {}, Activation::Gelu, {.policy = p, .active = 0.25, .block = 8, .seed = seed}, 2);
    std::vector<MlpGateTrace> t;
    g.forward(x, &t);
    std::vector<std::vector<int64_t>> s;
    for (auto& r : t) s.push_back(r.blocks);
    return s;
  };
  for (auto p : {GatePolicy::Sensing, GatePolicy::Random}) {
    EXPECT_EQ(run(p, 9), run(p, 9)) << gate_policy_name(p);
    EXPECT_NE(run(p, 9), run(p, 10)) << gate_policy_name(p);
  }
}

TEST(MlpGate, BadGateBudgetsAreClearErrorsAndChangeNothing) {
  torch::manual_seed(6);
  Gpt model(tiny_config());
  torch::NoGradGuard no_grad;
  Budget good;
  good.gate = {.policy = GatePolicy::Oracle, .active = 0.5, .block = 16};
  model->apply_budget(good);
  auto idx = torch::randint(0, 11, {1, 5});
  auto before = model->forward(idx);
  auto expect_rejected = [&](GateOptions g, const std::string& needle) {
    Budget b;
    b.gate = g;
    try {
      model->apply_budget(b);
      ADD_FAILURE() << "accepted " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
    EXPECT_EQ(model->gate_options(), good.gate);
    EXPECT_TRUE(torch::equal(model->forward(idx), before));
  };
  expect_rejected({.policy = GatePolicy::Sensing, .active = 0.5, .block = 0}, "block size 0");
  expect_rejected({.policy = GatePolicy::Sensing, .active = 0.0, .block = 16}, "active fraction");
  expect_rejected({.policy = GatePolicy::Sensing, .active = 1.5, .block = 16}, "active fraction");
  expect_rejected({.policy = GatePolicy::Sensing, .active = 0.5, .block = 16, .measurements = 65}, "measurements m");
  expect_rejected({.policy = GatePolicy::Sensing, .active = 0.5, .block = 16, .iters = 0}, "iterations");
  expect_rejected({.policy = GatePolicy::Static, .active = 0.5, .block = 16}, "calibration");
  EXPECT_THROW(parse_gate_policy("magic"), Error);
  // A block that does not divide the width runs as the largest one below it that does: 24 on this
  // width of 64 runs blocks of 16 (4 blocks, 2 of them active at 50%).
  EXPECT_EQ(gate_block(24, 32), 16);
  EXPECT_EQ(gate_block(16, 172), 4);
  EXPECT_EQ(gate_block(16, 5632), 16);
  EXPECT_EQ(gate_block(16, 31), 1);
  Budget odd;
  odd.gate = {.policy = GatePolicy::Oracle, .active = 0.5, .block = 24};
  model->apply_budget(odd);
  std::vector<std::vector<MlpGateTrace>> trace(2);
  model->set_gate_trace(&trace);
  model->forward(idx.narrow(1, 0, 1));
  model->set_gate_trace(nullptr);
  ASSERT_FALSE(trace.empty());
  ASSERT_FALSE(trace[0].empty());
  EXPECT_EQ(trace[0][0].blocks.size(), 2u);
}

TEST(MlpGate, StaticPolicyKeepsTheCalibratedStrongestBlocks) {
  torch::manual_seed(7);
  Gpt model(tiny_config());
  torch::NoGradGuard no_grad;
  auto calib = torch::randint(0, 11, {2, 16});
  auto samples = mlp_samples(model, calib);
  ASSERT_EQ(samples.size(), 2u);
  ASSERT_EQ(samples[0].acts.size(0), 32);
  ASSERT_EQ(samples[0].acts.size(1), 64);
  ASSERT_EQ(samples[0].inputs.size(1), 32);
  calibrate_gate(model, samples, 16);
  std::vector<torch::Tensor> energy;  // per block, checkpoint order
  for (auto& s : samples) energy.push_back(s.acts.to(torch::kFloat64).square().mean(0).view({4, 16}).sum(1));
  Budget b;
  b.gate = {.policy = GatePolicy::Static, .active = 0.5, .block = 16};
  model->apply_budget(b);
  std::vector<std::vector<MlpGateTrace>> traces;
  model->set_gate_trace(&traces);
  model->forward(torch::randint(0, 11, {1, 3}));
  model->set_gate_trace(nullptr);
  ASSERT_EQ(traces.size(), 2u);
  for (int64_t l = 0; l < 2; ++l) {
    ASSERT_EQ(traces[size_t(l)].size(), 3u);  // one entry per token row
    for (const auto& t : traces[size_t(l)]) EXPECT_EQ(t.blocks, top_blocks(energy[size_t(l)], 2));
  }
}

TEST(NeuronOrder, CoactivationClusteringRecoversPlantedGroups) {
  torch::manual_seed(8);
  // 64 neurons in 8 hidden groups of 8, scattered; each token fires 2 random groups.
  const int64_t N = 64, B = 8, T = 400;
  auto perm = torch::randperm(N);
  auto acts = torch::zeros({T, N});
  for (int64_t t = 0; t < T; ++t)
    for (int64_t g : {int64_t(t % 8), int64_t((t * 5 + 3) % 8)})
      for (int64_t j = 0; j < B; ++j) acts[t][perm[g * B + j].item<int64_t>()] = 1.0 + 0.1 * double(j);
  auto order = coactivation_order(acts, B, 1);
  std::vector<int64_t> sorted(order);
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < N; ++i) ASSERT_EQ(sorted[size_t(i)], i);  // a permutation
  // Every block of the order is exactly one planted group.
  auto group_of = torch::empty({N}, torch::kInt64);
  for (int64_t i = 0; i < N; ++i) group_of[perm[i].item<int64_t>()] = i / B;
  for (int64_t b = 0; b < N / B; ++b) {
    const int64_t g = group_of[order[size_t(b * B)]].item<int64_t>();
    for (int64_t j = 1; j < B; ++j) EXPECT_EQ(group_of[order[size_t(b * B + j)]].item<int64_t>(), g) << "block " << b;
  }
  EXPECT_THROW(coactivation_order(acts, 7, 1), Error);
}

TEST(NeuronOrder, ClusteredGateIsFunctionPreservingAndNeedsCalibration) {
  torch::manual_seed(9);
  Gpt model(tiny_config());
  torch::NoGradGuard no_grad;
  auto idx = torch::randint(0, 11, {2, 9});
  auto dense = model->forward(idx);
  Budget b;
  b.gate = {.policy = GatePolicy::Sensing, .active = 1.0, .block = 16, .clustered = true};
  EXPECT_THROW(model->apply_budget(b), Error);  // no calibration yet
  calibrate_gate(model, mlp_samples(model, torch::randint(0, 11, {2, 16})), 16, 3);
  for (auto policy : {GatePolicy::Sensing, GatePolicy::Oracle, GatePolicy::Static}) {
    b.gate.policy = policy;
    model->apply_budget(b);
    EXPECT_LT((model->forward(idx) - dense).abs().max().item<double>(), 1e-4) << gate_policy_name(policy);
  }
  b.gate.block = 8;  // calibrated for 16, not 8
  EXPECT_THROW(model->apply_budget(b), Error);
}

TEST(MlpGate, MmseRecoveryWithMAtLeastTheInputWidthIsExact) {
  // u = W_up·x lives in a C-dim subspace; with the calibration prior, m = C random measurements
  // determine it, so the sensing gate picks exactly the oracle's blocks.
  torch::manual_seed(10);
  const int64_t C = 16, N = 64;
  auto up = torch::randn({N, C}), up_b = torch::randn({N}) * 0.1, down = torch::randn({C, N});
  const GatePrior prior = sample_prior(C);
  auto x = torch::randn({20, C});
  for (auto kind : {MeasurementKind::Rademacher, MeasurementKind::Pca}) {
    GateOptions o{.policy = GatePolicy::Sensing, .active = 0.25, .block = 8, .measurements = C, .measurement = kind,
                  .recovery = Recovery::Mmse};
    MlpGate gate(up, up_b, down, {}, Activation::Relu, o, 0, {}, &prior);
    GateStats stats;
    gate.forward(x, nullptr, &stats);
    EXPECT_NEAR(stats.f1 / double(stats.f1_rows), 1.0, 1e-9) << measurement_name(kind);
  }
  // Without a prior both are clear errors.
  EXPECT_THROW(MlpGate(up, up_b, down, {}, Activation::Relu,
                       {.policy = GatePolicy::Sensing, .active = 0.25, .block = 8, .recovery = Recovery::Mmse}, 0),
               Error);
  EXPECT_THROW(parse_recovery("lasso"), Error);
  EXPECT_THROW(parse_measurement("fourier"), Error);
}

TEST(MlpGate, UncertaintySetsMeasurementsAndActiveBlocksWithHysteresis) {
  torch::manual_seed(12);
  const int64_t C = 16, N = 64;
  auto up = torch::randn({N, C}), up_b = torch::randn({N}) * 0.1, down = torch::randn({C, N});
  const GatePrior prior = sample_prior(C);
  GateOptions o{.policy = GatePolicy::Sensing, .active = 0.25, .block = 8, .measurements = 8,
                .measurement = MeasurementKind::Pca, .recovery = Recovery::Mmse, .gamma = 1.0, .m_max = 16};
  MlpGate gate(up, up_b, down, {}, Activation::Relu, o, 0, {}, &prior);
  EXPECT_EQ(gate.measurements(), 8);
  EXPECT_EQ(gate.current_active_blocks(), 2);
  gate.set_uncertainty(0.05);  // 8·1.05 rounds to 8: nothing moves
  EXPECT_EQ(gate.measurements(), 8);
  gate.set_uncertainty(1.0);   // m_t = 16, k_t = 4
  EXPECT_EQ(gate.measurements(), 16);
  EXPECT_EQ(gate.current_active_blocks(), 4);
  gate.set_uncertainty(0.9);   // 15.2 → 15 is within 15% of 16: hysteresis holds 16
  EXPECT_EQ(gate.measurements(), 16);
  // With PCA rows the MMSE gain of a prefix is exact: m_t = 16 picks what a fixed m = 16 gate picks.
  GateOptions fixed = o;
  fixed.gamma = 0;
  fixed.measurements = 16;
  fixed.active = 0.5;
  MlpGate reference(up, up_b, down, {}, Activation::Relu, fixed, 0, {}, &prior);
  auto x = torch::randn({10, C});
  std::vector<MlpGateTrace> a, b;
  gate.forward(x, &a);
  reference.forward(x, &b);
  for (size_t r = 0; r < a.size(); ++r) {
    EXPECT_EQ(a[r].blocks, b[r].blocks);
    EXPECT_EQ(a[r].measurements, 16);
    EXPECT_EQ(a[r].macs, b[r].macs);
  }
  gate.set_uncertainty(0.0);   // back to m = 8, k = 2
  EXPECT_EQ(gate.measurements(), 8);
  EXPECT_EQ(gate.current_active_blocks(), 2);
  GateOptions bad = o;
  bad.m_max = 4;  // below m
  EXPECT_THROW(MlpGate(up, up_b, down, {}, Activation::Relu, bad, 0, {}, &prior), Error);
}

TEST(HeadGate, GatedHeadsEqualMaskingTheOthersAndKeepTheCache) {
  torch::manual_seed(13);
  ModelConfig c = tiny_config();
  c.n_heads = 4;
  Gpt model(c);
  torch::NoGradGuard no_grad;
  for (auto& p : model->parameters()) p.add_(torch::randn_like(p) * 0.05);
  auto idx = torch::randint(0, 11, {1, 10});
  Budget b;
  b.gate.head_active = 0.5;
  EXPECT_THROW(model->apply_budget(b), Error);  // no probes yet
  auto importance = torch::tensor({{0.1, 0.9, 0.5, 0.2}, {0.8, 0.1, 0.3, 0.7}}, torch::kFloat64);
  model->set_head_importance(importance);
  model->apply_budget(b);  // layer 0 keeps heads 1, 2; layer 1 keeps 0, 3
  auto gated = model->forward(idx);
  // Reference: every head computed, the inactive ones' outputs zeroed.
  model->apply_budget(Budget{});
  auto mask = torch::tensor({{0.f, 1.f, 1.f, 0.f}, {1.f, 0.f, 0.f, 1.f}}).unsqueeze(0);  // [1, L, H]
  model->set_hook(head_mask_hook(mask));
  auto reference = model->forward(idx);
  model->set_hook({});
  EXPECT_LT((gated - reference).abs().max().item<double>(), 1e-5);
  // Incremental decode with the cache equals the full forward under the same head support.
  model->apply_budget(b);
  auto cache = model->make_cache(1);
  model->forward(idx.narrow(1, 0, 7), &cache);
  auto step = model->forward(idx.narrow(1, 7, 3), &cache);
  EXPECT_LT((step - gated.narrow(1, 7, 3)).abs().max().item<double>(), 1e-5);
  // Probing needs every head.
  model->set_hook(head_mask_hook(mask));
  EXPECT_THROW(model->forward(idx), Error);
  model->set_hook({});
  b.gate.head_active = 0.0;
  EXPECT_THROW(model->apply_budget(b), Error);
}

TEST(HeadGate, ModelWideAllocationKeepsTheTopHeadsWithOnePerLayerAtLeast) {
  ModelConfig c = tiny_config();
  c.n_heads = 4;
  Gpt model(c);
  torch::NoGradGuard no_grad;
  // Layer 0's heads all matter more than layer 1's best one.
  model->set_head_importance(torch::tensor({{0.1, 0.9, 0.85, 0.8}, {0.05, 0.01, 0.3, 0.02}}, torch::kFloat64));
  Budget b;
  b.gate.head_active = 0.5;  // per layer: 2 + 2 heads
  model->apply_budget(b);
  EXPECT_EQ(model->active_heads(), (std::vector<std::vector<int64_t>>{{1, 2}, {0, 2}}));
  const int64_t per_layer_macs = macs_per_token(*model, 16);
  b.gate.head_global = true;  // model-wide: the top 4 of 8, layer 1 keeping its best
  model->apply_budget(b);
  EXPECT_EQ(model->active_heads(), (std::vector<std::vector<int64_t>>{{1, 2, 3}, {2}}));
  EXPECT_EQ(macs_per_token(*model, 16), per_layer_macs);  // the same number of heads, so the same MACs
  b.gate.head_active = 0.1;  // round(0.8) = 1 head in all, raised to one per layer
  model->apply_budget(b);
  EXPECT_EQ(model->active_heads(), (std::vector<std::vector<int64_t>>{{1}, {2}}));
  b.gate.head_active = 0.75;  // 6 of 8
  b.heads_on = {{1, 1}};      // 4 + 2 (heads 0, 2) by importance; forced on comes on top
  model->apply_budget(b);
  EXPECT_EQ(model->active_heads(), (std::vector<std::vector<int64_t>>{{0, 1, 2, 3}, {0, 1, 2}}));
  const Budget back = budget_from_json(budget_to_json(b));
  EXPECT_TRUE(back.gate.head_global);
  EXPECT_EQ(back, b);
}

TEST(HeadGate, KnockoutProbesFindAPlantedDominantHead) {
  torch::manual_seed(14);
  ModelConfig c = tiny_config();
  c.n_heads = 4;
  Gpt model(c);
  torch::NoGradGuard no_grad;
  const int64_t hd = c.d_model / c.n_heads;
  // Head 2 of every layer writes 30× larger values: knocking it out changes the output most.
  for (const auto& [name, p] : model->projections())
    if (name.find("attn.v") != std::string::npos) p->parameters()[0].narrow(0, 2 * hd, hd).mul_(30.0);
  auto idx = torch::randint(0, 11, {1, 16});
  auto oracle = knockout_heads(model, idx);
  auto probed = probe_heads(model, idx, 24, 5);
  ASSERT_EQ(probed.sizes(), (std::vector<int64_t>{2, 4}));
  for (int64_t l = 0; l < 2; ++l) {
    EXPECT_EQ(oracle[l].argmax().item<int64_t>(), 2) << "layer " << l;
    EXPECT_EQ(probed[l].argmax().item<int64_t>(), 2) << "layer " << l;
  }
  EXPECT_TRUE(torch::equal(probed, probe_heads(model, idx, 24, 5)));  // seeded
  EXPECT_THROW(probe_heads(model, idx, 1, 5), Error);
}

TEST(JointSplit, PicksTheLeastKlCandidateWithinTheTargetByTheModelsOwnMacCount) {
  torch::manual_seed(21);
  ModelConfig c = tiny_config();
  Gpt model(c);
  torch::NoGradGuard no_grad;
  Budget base;
  base.gate.policy = GatePolicy::Sensing;
  base.gate.block = 16;
  base.gate.active = 0.5;
  auto tokens = torch::randint(0, 11, {3 * c.context + 1});
  std::vector<int64_t> toks(tokens.data_ptr<int64_t>(), tokens.data_ptr<int64_t>() + tokens.numel());
  auto scored = score_joint_candidates(model, toks, base, 2);
  ASSERT_EQ(scored.size(), joint_active_grid().size() * joint_keep_grid().size());
  for (const auto& s : scored) {
    if (s.active >= 1 && s.prompt_keep >= 1) {
      EXPECT_NEAR(s.kl, 0, 1e-6);  // the uncompressed model itself
      EXPECT_EQ(s.agreement, 1);
    }
    EXPECT_GE(s.kl, -1e-6);
  }
  // Independent MAC count: decode tokens 1..G after K kept prompt keys, at each candidate's budget.
  const int64_t P = 6, G = 5;
  auto mean_macs = [&](double active, double keep) {
    Budget b = base;
    if (active >= 1) b.gate = GateOptions{};
    else b.gate.active = active;
    model->apply_budget(b);
    const int64_t K = keep >= 1 ? P : std::max<int64_t>(1, int64_t(std::ceil(keep * P - 1e-9)));
    double sum = 0;
    for (int64_t t = 1; t <= G; ++t) sum += double(macs_per_token(*model, K + t));
    return sum / double(G);
  };
  const double full = mean_macs(1, 1);
  for (double target : {0.95, 0.8, 0.6}) {
    auto choice = choose_joint_split(model, scored, base, target, P, G);
    double best = 1e300;
    for (const auto& s : scored)
      if (mean_macs(s.active, s.prompt_keep) / full <= target + 1e-9) best = std::min(best, s.kl);
    if (best < 1e300) {
      EXPECT_TRUE(choice.fits) << target;
      EXPECT_DOUBLE_EQ(choice.kl, best) << target;
      EXPECT_NEAR(choice.mac_fraction, mean_macs(choice.active, choice.prompt_keep) / full, 1e-9) << target;
    }
  }
  EXPECT_THROW(choose_joint_split(model, scored, base, 0, P, G), Error);
  EXPECT_THROW(choose_joint_split(model, {}, base, 0.5, P, G), Error);
}
