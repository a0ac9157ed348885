#include <gtest/gtest.h>

#include <functional>
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include "core/layers/cpu_gemm.h"
#include "core/model/convert.h"
#include "core/model/macs.h"
#include "core/error.h"
#include "core/io/checkpoint.h"
#include "core/text/char_tokenizer.h"
#include "core/model/transformer.h"
#include "tests/core/test_util.h"

using namespace nestscope;

TEST(ModelConfig, PicoGptHasExactly808448Parameters) {
  const auto cfg = ModelConfig::pico_gpt();
  EXPECT_EQ(cfg.parameter_count(), 808448);
  torch::manual_seed(0);
  Gpt m(cfg);
  EXPECT_EQ(m->parameter_count(), 808448);
  // The published layout: no q/k/v bias, o bias, MLP biases, untied LM head without bias.
  auto params = m->named_parameters();
  EXPECT_EQ(params.find("blk.0.attn.q.bias"), nullptr);
  EXPECT_NE(params.find("blk.0.attn.o.bias"), nullptr);
  EXPECT_NE(params.find("blk.3.mlp.down.bias"), nullptr);
  EXPECT_NE(params.find("head.weight"), nullptr);
  EXPECT_EQ(params.find("head.bias"), nullptr);
  EXPECT_EQ(m->projections().size(), 4u * 6u + 1u);
}

TEST(ModelConfig, JsonRoundTripAndValidation) {
  ModelConfig c = test::tiny_config();
  c.position = PositionEncoding::Learned;
  c.activation = Activation::Gelu;
  c.tied_head = true;
  c.qkv_bias = true;
  EXPECT_EQ(ModelConfig::from_json(c.to_json()), c);
  EXPECT_EQ(c.parameter_count(), [&] {
    Gpt m(c);
    return m->parameter_count();
  }());
  ModelConfig bad = c;
  bad.n_heads = 3;
  EXPECT_THROW(bad.validate(), Error);
  EXPECT_THROW(ModelConfig::from_json(R"({"vocab_size":5})"), Error);
  EXPECT_THROW(ModelConfig::from_json("[1,2"), Error);
}

TEST(Model, SinusoidalPositionsFollowTheFormula) {
  auto pe = sinusoidal_positions(10, 8);
  EXPECT_NEAR(pe[3][0].item<float>(), std::sin(3.0), 1e-6);
  EXPECT_NEAR(pe[3][1].item<float>(), std::cos(3.0), 1e-6);
  EXPECT_NEAR(pe[5][2].item<float>(), std::sin(5.0 / std::pow(10000.0, 2.0 / 8)), 1e-6);
  EXPECT_NEAR(pe[5][7].item<float>(), std::cos(5.0 / std::pow(10000.0, 6.0 / 8)), 1e-6);
}

// The KV-cache decode path must reproduce a full forward over the same prefix.
class KvCacheEquivalence : public ::testing::TestWithParam<PositionEncoding> {};

TEST_P(KvCacheEquivalence, DecodeMatchesFullForward) {
  auto cfg = test::tiny_config();
  cfg.position = GetParam();
  torch::manual_seed(3);
  Gpt m(cfg);
  m->eval();
  torch::NoGradGuard g;
  auto seq = torch::randint(0, cfg.vocab_size, {2, cfg.context}, torch::kInt64);  // [B, T]
  auto full = m->forward(seq);                                                    // [B, T, V]
  auto cache = m->make_cache(2);
  std::vector<torch::Tensor> pieces;
  pieces.push_back(m->forward(seq.narrow(1, 0, 7), &cache));  // prefill 7 tokens
  for (int64_t t = 7; t < 20; ++t) pieces.push_back(m->forward(seq.narrow(1, t, 1), &cache));
  pieces.push_back(m->forward(seq.narrow(1, 20, cfg.context - 20), &cache));  // a second chunk
  auto incremental = torch::cat(pieces, 1);
  EXPECT_EQ(cache.length, cfg.context);
  EXPECT_LT((incremental - full).abs().max().item<double>(), 1e-4);
  EXPECT_THROW(m->forward(seq.narrow(1, 0, 1), &cache), Error);  // context exceeded
}

INSTANTIATE_TEST_SUITE_P(Positions, KvCacheEquivalence,
                         ::testing::Values(PositionEncoding::Sinusoidal, PositionEncoding::Learned));

// The raw decode step (GptImpl::decode_raw) against the general path, token by token, over the
// architecture variants it covers and every layer kind, head gating and the MLP gate.
TEST(Model, RawDecodeStepMatchesTheGeneralPathForEveryVariantAndBudget) {
  struct Case {
    std::string name;
    std::function<void(ModelConfig&)> edit;
    Budget budget;
  };
  Budget heads;
  heads.gate.head_active = 0.5;
  Budget gated;
  gated.gate = {.policy = GatePolicy::Oracle, .active = 0.5, .block = 8};
  std::vector<Case> cases{
      {"gpt2-like", [](ModelConfig&) {}, {}},
      {"learned positions, tied head, GELU", [](ModelConfig& c) {
         c.position = PositionEncoding::Learned;
         c.tied_head = true;
         c.activation = Activation::Gelu;
       }, {}},
      {"RMSNorm, SwiGLU, GQA, parallel residual", [](ModelConfig& c) {
         c.norm = Norm::RmsNorm;
         c.gated_mlp = true;
         c.activation = Activation::Silu;
         c.n_heads = 4;
         c.n_kv_heads = 2;
         c.parallel_residual = true;
         c.qkv_bias = true;
       }, {}},
      {"NSN at rank 3", [](ModelConfig& c) {
         for (const auto& f : c.families()) c.linear[f] = {.kind = LinearKind::Nsn};
       }, [] { Budget b; b.rank = 3; return b; }()},
      {"MPO at chi 2", [](ModelConfig& c) {
         for (const auto& f : c.families()) c.linear[f] = {.kind = LinearKind::Mpo, .bond = 4};
       }, [] { Budget b; b.bond = 2; return b; }()},
      {"half the heads", [](ModelConfig& c) { c.n_heads = 4; }, heads},
      {"oracle gate at half the blocks", [](ModelConfig&) {}, gated},
  };
  for (const auto& tc : cases) {
    auto cfg = test::tiny_config();
    tc.edit(cfg);
    torch::manual_seed(9);
    Gpt m(cfg);
    torch::NoGradGuard g;
    for (auto& p : m->parameters()) p.add_(torch::randn_like(p) * 0.1);  // non-trivial norms and biases
    if (tc.budget.gate.head_active < 1) m->set_head_importance(torch::rand({cfg.n_layers, cfg.n_heads}));
    m->apply_budget(tc.budget);
    auto seq = torch::randint(0, cfg.vocab_size, {1, 20}, torch::kInt64);
    std::vector<torch::Tensor> out[2];
    for (bool raw : {false, true}) {
      m->raw_decode = raw;
      auto cache = m->make_cache(1);
      out[raw].push_back(m->forward(seq.narrow(1, 0, 6), &cache));  // prefill: the general path either way
      const int64_t steps = m->raw_decode_steps;
      for (int64_t t = 6; t < 20; ++t) out[raw].push_back(m->forward(seq.narrow(1, t, 1), &cache));
      EXPECT_EQ(cache.length, 20) << tc.name;
      EXPECT_EQ(m->raw_decode_steps - steps, raw ? 14 : 0) << tc.name;  // the raw step really ran
    }
    auto general = torch::cat(out[0], 1), raw = torch::cat(out[1], 1);
    EXPECT_LT((raw - general).abs().max().item<double>(), 1e-4 * (1 + general.abs().max().item<double>())) << tc.name;
  }
  // A token outside the vocabulary is refused, the cache left as it was.
  Gpt m(test::tiny_config());
  torch::NoGradGuard g;
  auto cache = m->make_cache(1);
  m->forward(torch::zeros({1, 3}, torch::kInt64), &cache);
  EXPECT_THROW(m->forward(torch::full({1, 1}, 11, torch::kInt64), &cache), Error);
  EXPECT_EQ(cache.length, 3);
}

// The CPU kernels against a double-precision reference on shapes with every kind of tail: weight
// rows not a multiple of 4, x rows not a multiple of the register tile's, columns not a multiple
// of 16 or 32, a row stride wider than k, one row (decode), a few (prefill tiles) and many (BLAS),
// and weights large enough to split over the threads.
TEST(CpuKernels, Bf16AndSmallBatchProductsMatchTheReferenceOnTailsStridesAndSplits) {
  torch::manual_seed(5);
  struct Shape { int64_t N, n, k, ldw; };
  for (const Shape sh : {Shape{1, 37, 45, 45}, Shape{3, 37, 45, 50}, Shape{1, 4, 16, 16}, Shape{1, 700, 520, 520},
                         Shape{5, 700, 520, 520}, Shape{7, 37, 64, 80}, Shape{13, 10, 96, 96}, Shape{64, 600, 512, 512},
                         Shape{200, 9, 64, 64}}) {
    auto w = torch::randn({sh.n, sh.ldw}).to(torch::kBFloat16);
    auto x = torch::randn({sh.N, sh.k});
    auto y = torch::randn({sh.N, sh.n});
    const auto want = (x.to(torch::kFloat64).matmul(w.narrow(1, 0, sh.k).to(torch::kFloat64).t()) +
                       0.5 * y.to(torch::kFloat64));
    cpu_gemm_nt_bf16_raw(sh.N, sh.n, sh.k, x.data_ptr<float>(),
                         reinterpret_cast<const uint16_t*>(w.data_ptr<at::BFloat16>()), sh.ldw, 0.5f,
                         y.data_ptr<float>());
    EXPECT_LT((y.to(torch::kFloat64) - want).abs().max().item<double>(), 1e-4 * std::sqrt(double(sh.k)))
        << sh.N << "x" << sh.n << "x" << sh.k;
  }
  // The float32 products on the same shapes (register tiles for a few rows, GEMV for one).
  for (const Shape sh : {Shape{1, 37, 48, 48}, Shape{7, 37, 64, 80}, Shape{13, 10, 96, 96}, Shape{64, 600, 512, 512},
                         Shape{6, 8, 32, 32}}) {
    auto w = torch::randn({sh.n, sh.ldw});
    auto x = torch::randn({sh.N, sh.k});
    auto y = torch::randn({sh.N, sh.n});
    const auto want = x.to(torch::kFloat64).matmul(w.narrow(1, 0, sh.k).to(torch::kFloat64).t());
    cpu_gemm_nt_raw(sh.N, sh.n, sh.k, x.data_ptr<float>(), w.data_ptr<float>(), sh.ldw, 0.f, y.data_ptr<float>());
    EXPECT_LT((y.to(torch::kFloat64) - want).abs().max().item<double>(), 1e-4 * std::sqrt(double(sh.k)))
        << sh.N << "x" << sh.n << "x" << sh.k;
  }
  // The transposed form (an NSN layer's Bᵀ at batch 1): 64-column strips and a tail, a wide stride.
  for (const Shape sh : {Shape{1, 100, 7, 120}, Shape{1, 3072, 48, 3072}}) {
    auto bt = torch::randn({sh.k, sh.ldw});
    auto x = torch::randn({1, sh.k});
    auto y = torch::randn({1, sh.n});
    const auto want = x.to(torch::kFloat64).matmul(bt.narrow(1, 0, sh.n).to(torch::kFloat64)) + 2 * y.to(torch::kFloat64);
    cpu_gemm_nn_raw(1, sh.n, sh.k, x.data_ptr<float>(), bt.data_ptr<float>(), sh.ldw, 2.f, y.data_ptr<float>());
    EXPECT_LT((y.to(torch::kFloat64) - want).abs().max().item<double>(), 1e-4 * std::sqrt(double(sh.k))) << sh.n;
  }
  auto w = torch::randn({3, 40}).to(torch::kBFloat16);
  std::vector<float> wide(40);
  widen_bf16(reinterpret_cast<const uint16_t*>(w.data_ptr<at::BFloat16>()) + 40, wide.data(), 40);
  EXPECT_TRUE(torch::equal(torch::from_blob(wide.data(), {40}), w[1].to(torch::kFloat32)));  // widening is exact
}

// Weights stored in bfloat16 give the float32 model's result on the same (bf16-rounded) weights:
// the general path (prefill, several rows per product) and the raw decode step, for the GPT-2
// and the Llama layouts, head gating and the MLP gate; half the bytes per weight.
TEST(Model, Bfloat16WeightsGiveTheFloat32ResultOnTheSameWeights) {
  Budget heads;
  heads.gate.head_active = 0.5;
  Budget gated;
  gated.gate = {.policy = GatePolicy::Oracle, .active = 0.5, .block = 8};
  struct Case {
    std::string name;
    std::function<void(ModelConfig&)> edit;
    Budget budget;
  };
  std::vector<Case> cases{
      {"gpt2-like, tied head", [](ModelConfig& c) { c.position = PositionEncoding::Learned; c.tied_head = true; }, {}},
      {"llama-like: RMSNorm, rotary, GQA, SwiGLU", [](ModelConfig& c) {
         c.norm = Norm::RmsNorm;
         c.position = PositionEncoding::Rope;
         c.gated_mlp = true;
         c.activation = Activation::Silu;
         c.n_kv_heads = 2;
         c.tied_head = false;
       }, {}},
      {"half the heads", [](ModelConfig&) {}, heads},
      {"oracle gate at half the blocks", [](ModelConfig&) {}, gated},
  };
  for (const auto& tc : cases) {
    auto cfg = test::tiny_config();
    cfg.d_model = 24;  // a 16-wide kernel with a tail of 8
    cfg.n_heads = 4;
    cfg.d_ff = 40;
    tc.edit(cfg);
    torch::manual_seed(3);
    Gpt m(cfg);
    torch::NoGradGuard g;
    for (auto& p : m->parameters()) p.add_(torch::randn_like(p) * 0.1);
    m->set_weight_storage(torch::kBFloat16);
    EXPECT_EQ(m->weight_storage(), torch::kBFloat16) << tc.name;
    EXPECT_EQ(m->tok_emb->weight.element_size(), 2) << tc.name;
    for (const auto& [name, layer] : m->own_projections()) EXPECT_EQ(layer->to_dense().scalar_type(), torch::kFloat32);
    Gpt ref = clone_model(m);  // float32, holding the rounded values
    EXPECT_EQ(ref->weight_storage(), torch::kFloat32) << tc.name;
    if (tc.budget.gate.head_active < 1) {
      const auto importance = torch::rand({cfg.n_layers, cfg.n_heads});
      m->set_head_importance(importance);
      ref->set_head_importance(importance);
    }
    m->apply_budget(tc.budget);
    ref->apply_budget(tc.budget);
    auto seq = torch::randint(0, cfg.vocab_size, {1, 20}, torch::kInt64);
    std::vector<torch::Tensor> out[2];
    Gpt models[2] = {ref, m};
    for (int i : {0, 1}) {
      auto cache = models[i]->make_cache(1);
      out[i].push_back(models[i]->forward(seq.narrow(1, 0, 6), &cache));
      const int64_t steps = models[i]->raw_decode_steps;
      for (int64_t t = 6; t < 20; ++t) out[i].push_back(models[i]->forward(seq.narrow(1, t, 1), &cache));
      EXPECT_EQ(models[i]->raw_decode_steps - steps, 14) << tc.name;
    }
    auto f32 = torch::cat(out[0], 1), bf16 = torch::cat(out[1], 1);
    EXPECT_EQ(bf16.scalar_type(), torch::kFloat32);
    EXPECT_LT((bf16 - f32).abs().max().item<double>(), 1e-4 * (1 + f32.abs().max().item<double>())) << tc.name;
    EXPECT_TRUE(torch::equal(bf16.argmax(-1), f32.argmax(-1))) << tc.name;
    // And back: float32 storage keeps the values.
    m->set_weight_storage(torch::kFloat32);
    EXPECT_TRUE(torch::equal(m->tok_emb->weight, ref->tok_emb->weight)) << tc.name;
  }
  Gpt m(test::tiny_config());
  EXPECT_THROW(m->set_weight_storage(torch::kFloat16), Error);
}

TEST(Model, CausalityFutureTokensDoNotChangeEarlierLogits) {
  torch::manual_seed(4);
  Gpt m(test::tiny_config());
  m->eval();
  torch::NoGradGuard g;
  auto a = torch::randint(0, 11, {1, 16}, torch::kInt64);
  auto b = a.clone();
  b.narrow(1, 10, 6).fill_(3);
  auto la = m->forward(a), lb = m->forward(b);
  EXPECT_TRUE(torch::allclose(la.narrow(1, 0, 10), lb.narrow(1, 0, 10)));
  EXPECT_FALSE(torch::allclose(la.narrow(1, 10, 6), lb.narrow(1, 10, 6)));
}

TEST(Model, MacsPerTokenCountsEveryProjectionAndAttention) {
  Gpt m(ModelConfig::pico_gpt());
  // Projections: 4 layers x (4·128² + 2·128·512) + head 128·65, attention 4 layers x 2·256·128.
  const int64_t expected = 4 * (4 * 128 * 128 + 2 * 128 * 512) + 128 * 65 + 4 * 2 * 256 * 128;
  EXPECT_EQ(macs_per_token(*m, 256), expected);
}

// Our forward against an independent PyTorch implementation of the same checkpoint.
class PyTorchReference : public ::testing::TestWithParam<bool> {};

TEST_P(PyTorchReference, LogitsMatchWithin1e4) {
  std::string probe;
  if (test::run_command("/usr/bin/python3 -c 'import torch' 2>&1", &probe) != 0)
    GTEST_SKIP() << "/usr/bin/python3 with torch (Debian python3-torch) is not installed";
  test::TempDir dir;
  auto cfg = test::tiny_config();
  if (GetParam()) {  // the other variants: learned positions, GELU, tied head, q/k/v bias
    cfg.position = PositionEncoding::Learned;
    cfg.activation = Activation::Gelu;
    cfg.tied_head = true;
    cfg.qkv_bias = true;
  }
  torch::manual_seed(11);
  Gpt m(cfg);
  {
    torch::NoGradGuard g;  // non-zero biases and LayerNorm params so every term is exercised
    for (auto& p : m->parameters()) p.add_(torch::randn_like(p) * 0.1);
  }
  m->eval();
  const auto path = dir.file("ref.safetensors");
  save_checkpoint(path, m, CharTokenizer::from_corpus("abcdefghijk"), "{}");
  std::vector<int64_t> ids = {1, 5, 2, 9, 0, 3, 3, 7, 10, 4, 6, 8};
  std::string cmd = "/usr/bin/python3 " NESTSCOPE_PYTHON_REF " " + path;
  for (auto i : ids) cmd += " " + std::to_string(i);
  std::string out;
  ASSERT_EQ(test::run_command(cmd + " 2>&1", &out), 0) << out;
  auto ref = nlohmann::json::parse(out);
  torch::NoGradGuard g;
  auto logits = m->forward(torch::tensor(ids, torch::kInt64).view({1, -1}))[0];  // [T, V]
  double max_diff = 0;
  for (size_t t = 0; t < ids.size(); ++t)
    for (int64_t v = 0; v < cfg.vocab_size; ++v)
      max_diff = std::max(max_diff, std::abs(ref[t][v].get<double>() - logits[t][v].item<double>()));
  EXPECT_LT(max_diff, 1e-4);
}

INSTANTIATE_TEST_SUITE_P(Variants, PyTorchReference, ::testing::Values(false, true));
