#include <gtest/gtest.h>

#include <cmath>
#include <torch/torch.h>

#include "core/model/macs.h"
#include "core/engine/engine.h"
#include "core/error.h"
#include "core/eval/metrics.h"
#include "core/eval/rank_allocation.h"
#include "core/io/checkpoint.h"
#include "core/layers/low_rank_kernel.h"
#include "core/layers/nsn_linear.h"
#include "core/model/convert.h"
#include "core/text/char_tokenizer.h"
#include "core/train/nsn_objective.h"
#include "core/variants/variants.h"
#include "tests/core/test_util.h"

using namespace nestscope;

TEST(NsnLinear, RankRUsesOnlyThePrefix) {
  torch::manual_seed(1);
  NsnLinear l(12, 10, 8, true, 0.02);
  torch::NoGradGuard g;
  l.set_rank(3);
  auto x = torch::randn({5, 12});
  auto before = l.forward(x);
  // Entries beyond rank 3 (rows 3.. of A, columns 3.. of B) do not matter at rank 3.
  l.A().narrow(0, 3, 5).normal_();
  l.B().narrow(1, 3, 5).normal_();
  EXPECT_TRUE(torch::equal(l.forward(x), before));
  // ...but they do at rank 4: the rank-3 model is a strict prefix of the rank-4 one.
  l.set_rank(4);
  EXPECT_FALSE(torch::allclose(l.forward(x), before));
  EXPECT_EQ(l.macs(), 4 * (12 + 10));
  EXPECT_EQ(l.params(), 4 * (12 + 10) + 10);
}

TEST(NsnLinear, ForwardEqualsTheDenseReference) {
  torch::manual_seed(2);
  NsnLinear l(16, 24, 16, true, 0.02);
  torch::NoGradGuard g;
  l.bias().normal_();
  auto x = torch::randn({3, 7, 16});
  for (int64_t r : {1, 5, 16}) {
    l.set_rank(r);
    auto ref = torch::matmul(x, l.to_dense().t()) + l.bias();
    EXPECT_LT((l.forward(x) - ref).abs().max().item<double>(), 1e-5) << "rank " << r;
  }
}

TEST(NsnLinear, RawBufferPathMatchesAndFollowsInPlaceUpdates) {
  torch::manual_seed(4);
  NsnLinear l(16, 24, 16, true, 0.02);
  torch::NoGradGuard g;
  l.bias().normal_();
  for (int64_t rows : {1, 5}) {
    auto x = torch::randn({rows, 16});
    std::vector<float> y(size_t(rows * 24));
    for (int64_t r : {1, 7, 16}) {
      l.set_rank(r);
      if (!l.forward_raw(rows, x.data_ptr<float>(), y.data())) GTEST_SKIP() << "built without CBLAS: no raw path";
      auto ref = torch::matmul(x, l.to_dense().t()) + l.bias();
      auto got = torch::from_blob(y.data(), {rows, 24}).clone();
      EXPECT_LT((got - ref).abs().max().item<double>(), 1e-5) << "rows " << rows << " rank " << r;
    }
    // An optimizer-style in-place step on B must reach the cached Bᵀ of the fast path.
    l.B().mul_(2.0);
    auto ref = torch::matmul(x, l.to_dense().t()) + l.bias();
    EXPECT_LT((l.forward(x) - ref).abs().max().item<double>(), 1e-5) << "rows " << rows;
  }
}

TEST(LowRankKernel, EveryVariantMatchesTheReferenceOnRowTailsRanksAndStrides) {
  // The fused small-rank kernel behind NsnLinear's raw path: every row count (6-row and 2-row
  // blocks plus their tails), every rank up to its limit (4-wide rank blocks plus tails), a Bᵀ
  // wider than n (a column prefix), with and without bias, on each variant this CPU runs.
  int variants = 0;
  for (LowRankIsa isa : {LowRankIsa::avx2, LowRankIsa::avx512vl}) {
    if (!low_rank_isa_supported(isa)) continue;
    ++variants;
    torch::manual_seed(9);
    const int64_t k = 40, n = 48, R = kLowRankKernelMaxPrefillRank, ldb = 56;
    auto A = torch::randn({R, k}), Bt = torch::randn({R, ldb}), bias = torch::randn({n});
    for (int64_t rows : {1, 2, 3, 5, 6, 7, 13}) {  // rows 13: also ranks past 32 (prefill limit)
      auto x = torch::randn({rows, k});
      for (int64_t r = 1; r <= R; ++r) {
        for (bool with_bias : {true, false}) {
          std::vector<float> y(size_t(rows * n), std::nanf(""));
          low_rank_kernel(rows, k, n, r, x.data_ptr<float>(), A.data_ptr<float>(), Bt.data_ptr<float>(), ldb,
                          with_bias ? bias.data_ptr<float>() : nullptr, y.data(), isa);
          auto ref = torch::matmul(torch::matmul(x, A.narrow(0, 0, r).t()), Bt.narrow(0, 0, r).narrow(1, 0, n));
          if (with_bias) ref = ref + bias;
          auto got = torch::from_blob(y.data(), {rows, n}).clone();
          ASSERT_LT((got - ref).abs().max().item<double>(), 1e-4 * (1 + ref.abs().max().item<double>()))
              << low_rank_isa_name(isa) << " rows " << rows << " rank " << r << " bias " << with_bias;
        }
      }
    }
  }
  if (variants == 0) GTEST_SKIP() << "this CPU has no AVX2+FMA: NsnLinear uses the BLAS path";
  EXPECT_FALSE(low_rank_kernel_applies(1, 12, 48, 8));   // k not a multiple of 8
  EXPECT_FALSE(low_rank_kernel_applies(1, 40, 48, kLowRankKernelMaxPrefillRank + 1));
}

TEST(NsnLinear, SvdConversionIsTheEckartYoungBestApproximation) {
  torch::manual_seed(3);
  auto W = torch::randn({20, 14}, torch::kFloat64).to(torch::kFloat32);
  NsnLinear l(14, 20, 14, false, 0.02);
  l.load_from_dense(W, {});
  auto S = std::get<1>(torch::linalg::svd(W.to(torch::kFloat64), false, c10::nullopt));  // [14]
  torch::NoGradGuard g;
  for (int64_t r = 1; r <= 14; ++r) {
    l.set_rank(r);
    const double err = (l.to_dense().to(torch::kFloat64) - W.to(torch::kFloat64)).norm().item<double>();
    const double best = r < 14 ? S.narrow(0, r, 14 - r).pow(2).sum().sqrt().item<double>() : 0.0;
    EXPECT_NEAR(err, best, 1e-4 * (1 + best)) << "rank " << r;
  }
}

// A tall matrix (a vocabulary head's shape) converts through its Gram matrix: every rank's
// product is the truncated SVD's, as for any other matrix.
TEST(NsnLinear, ATallMatrixConvertsToTheSameNestedFactorsThroughItsGramMatrix) {
  torch::manual_seed(8);
  const int64_t out = 8192, in = 128;  // 2^20 weights, 64× taller than wide
  auto w = torch::randn({out, 16}).matmul(torch::randn({16, in})) + 0.05 * torch::randn({out, in});
  NsnLinear layer(in, out, in, false, 0.02);
  layer.load_from_dense(w, {});
  auto [U, S, Vh] = torch::linalg::svd(w.to(torch::kFloat64), false, c10::nullopt);
  torch::NoGradGuard g;
  for (int64_t r : {1, 8, 16, 64, 128}) {
    layer.set_rank(r);
    const auto want = U.narrow(1, 0, r).matmul(torch::diag(S.narrow(0, 0, r))).matmul(Vh.narrow(0, 0, r));
    const double err = (layer.to_dense().to(torch::kFloat64) - want).abs().max().item<double>();
    EXPECT_LT(err, 1e-4 * w.abs().max().item<double>()) << "rank " << r;
  }
}

TEST(NsnLinear, RanksOutOfRangeAreClearErrors) {
  NsnLinear l(8, 8, 6, false, 0.02);
  EXPECT_THROW(l.set_rank(0), Error);
  EXPECT_THROW(l.set_rank(7), Error);
  EXPECT_THROW(NsnLinear(8, 8, 9, false, 0.02), Error);
  try {
    l.set_rank(-2);
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("outside [1, 6]"), std::string::npos) << e.what();
  }
  EXPECT_EQ(l.rank(), 6);  // unchanged by the failed calls
}

namespace {
Gpt trained_like_model(const ModelConfig& cfg) {
  torch::manual_seed(5);
  Gpt m(cfg);
  torch::NoGradGuard g;
  for (auto& p : m->parameters()) p.add_(torch::randn_like(p) * 0.2);  // weights far from init
  m->eval();
  return m;
}
}  // namespace

TEST(NsnConversion, FullRankModelMatchesTheDenseModel) {
  auto dense = trained_like_model(test::tiny_config());
  auto nsn = convert_model(dense, nsn_config(dense->config(), {}, 0));
  torch::NoGradGuard g;
  auto x = torch::randint(0, 11, {2, 20}, torch::kInt64);
  auto a = dense->forward(x), b = nsn->forward(x);
  EXPECT_LT(((a - b).norm() / a.norm()).item<double>(), 1e-4);
  // Six families converted in every block, the head left dense.
  EXPECT_EQ(nsn->config().linear.size(), 6u);
  EXPECT_EQ(nsn->parameter_count(), nsn->config().parameter_count());
}

// A tied LM head (GPT-2's) runs as an NSN variant built from the embedding when a budget names
// it: full rank gives the dense logits, rank r costs r·(C + V) MACs, and a budget without it goes
// back to the embedding (the input table is never touched).
TEST(NsnConversion, ATiedHeadRunsAsAnNsnVariantOfTheEmbeddingWhenABudgetNamesIt) {
  auto cfg = test::tiny_config();
  cfg.tied_head = true;
  cfg.vocab_size = 40;
  torch::manual_seed(6);
  Gpt m(cfg);
  m->eval();
  torch::NoGradGuard g;
  const auto idx = torch::randint(0, cfg.vocab_size, {1, 12}, torch::kInt64);
  const auto dense = m->forward(idx);
  const int64_t dense_linear = linear_macs_per_token(*m);
  const auto embedding = m->tok_emb->weight.clone();
  Budget head;
  head.kind["head"] = LinearKind::Nsn;
  EXPECT_THROW(m->apply_budget(head), Error);  // no variant yet: refused, nothing changed
  EXPECT_EQ(m->head, nullptr);
  EXPECT_EQ(variant_needs(*m, head), (VariantNeeds{{"head", LinearKind::Nsn}}));
  for (const auto& [name, kind] : variant_needs(*m, std::vector<LinearKind>{LinearKind::Nsn}))
    EXPECT_NE(name, "head");  // "every projection as NSN" leaves the tied head alone (its SVD is the vocabulary's)
  build_variants(m, variant_needs(*m, head));
  m->apply_budget(head);
  ASSERT_NE(m->head, nullptr);
  EXPECT_LT((m->forward(idx) - dense).abs().max().item<double>(), 1e-4);  // full rank = dense
  const int64_t CV = cfg.d_model * cfg.vocab_size, C_plus_V = cfg.d_model + cfg.vocab_size;
  EXPECT_EQ(linear_macs_per_token(*m), dense_linear - CV + cfg.d_model * C_plus_V);  // full rank: 16·(16 + 40)
  head.rank = 4;
  m->apply_budget(head);
  EXPECT_EQ(m->head->macs(), 4 * C_plus_V);
  EXPECT_EQ(linear_macs_per_token(*m), dense_linear - CV + 4 * C_plus_V);
  EXPECT_GT((m->forward(idx) - dense).abs().max().item<double>(), 1e-3);  // rank 4 of 16 changes the logits
  m->apply_budget(Budget{});
  EXPECT_EQ(m->head, nullptr);
  EXPECT_TRUE(torch::equal(m->forward(idx), dense));
  EXPECT_TRUE(torch::equal(m->tok_emb->weight, embedding));
  // A TT-SVD chain of the tied head too: its memory is estimated and it runs.
  Budget chain;
  chain.kind["head"] = LinearKind::Mpo;
  EXPECT_GT(variant_bytes(*m, variant_needs(*m, chain)), 0);
  build_variants(m, variant_needs(*m, chain));
  m->apply_budget(chain);
  EXPECT_LT((m->forward(idx) - dense).abs().max().item<double>(), 1e-3);  // the full chain is the embedding
  m->apply_budget(Budget{});
}

TEST(NsnConversion, BudgetsApplyInstantlyAndBadRanksChangeNothing) {
  auto dense = trained_like_model(test::tiny_config());
  auto nsn = convert_model(dense, nsn_config(dense->config(), {"mlp.up", "mlp.down"}, 12));
  nsn->apply_budget(Budget{4});
  for (const auto& [name, p] : nsn->projections()) EXPECT_EQ(p->rank(), p->max_rank() ? 4 : 0) << name;
  const int64_t macs4 = linear_macs_per_token(*nsn);
  EXPECT_EQ(macs4, 2 * (4 * 16 * 16 + 2 * 4 * (16 + 32)) + 16 * 11);
  EXPECT_THROW(nsn->apply_budget(Budget{13}), Error);
  EXPECT_THROW(nsn->apply_budget(Budget{-1}), Error);
  EXPECT_THROW(nsn->apply_budget(Budget{0, {{"blk.0.mlp.up", 40}}}), Error);
  EXPECT_THROW(nsn->apply_budget(Budget{0, {{"blk.0.attn.q", 2}}}), Error);  // not elastic
  EXPECT_THROW(nsn->apply_budget(Budget{0, {{"blk.7.mlp.up", 2}}}), Error);  // no such layer
  EXPECT_EQ(linear_macs_per_token(*nsn), macs4);  // all rejected before any change
  nsn->apply_budget(Budget{0, {{"blk.1.mlp.down", 2}}});
  EXPECT_EQ(nsn->projections()[11].second->rank(), 2);
  EXPECT_EQ(nsn->projections()[4].second->rank(), 12);
}

TEST(NsnConversion, CheckpointRoundTripKeepsTheNestedFactors) {
  test::TempDir dir;
  auto dense = trained_like_model(test::tiny_config());
  auto nsn = convert_model(dense, nsn_config(dense->config(), {}, 8));
  save_checkpoint(dir.file("n.safetensors"), nsn, CharTokenizer::from_corpus("abcdefghijk"), "{}",
                  {{"train.nsn.log_var", torch::tensor({0.5f, -0.25f})}});
  auto back = load_checkpoint(dir.file("n.safetensors"));
  EXPECT_EQ(back.config, nsn->config());
  EXPECT_TRUE(torch::equal(back.extras.at("train.nsn.log_var"), torch::tensor({0.5f, -0.25f})));
  torch::NoGradGuard g;
  auto x = torch::randint(0, 11, {1, 12}, torch::kInt64);
  nsn->apply_budget(Budget{3});
  back.model->apply_budget(Budget{3});
  EXPECT_TRUE(torch::equal(nsn->forward(x), back.model->forward(x)));
}

TEST(NsnObjective, GradientsReachEveryLogVarianceAndTheCurriculumWidens) {
  NsnTrainOptions n;
  n.min_rank = 2;
  n.buckets = 4;
  n.curriculum = 0.5;
  EXPECT_EQ(nsn_curriculum_floor(n, 16, 0, 100), 16);
  EXPECT_EQ(nsn_curriculum_floor(n, 16, 49, 100), 2);
  EXPECT_EQ(nsn_curriculum_floor(n, 16, 99, 100), 2);
  EXPECT_EQ(nsn_bucket(2, 2, 16, 4), 0);
  EXPECT_EQ(nsn_bucket(16, 2, 16, 4), 3);
  EXPECT_THROW(n.validate(0), Error);
  NsnTrainOptions bad = n;
  bad.min_rank = 20;
  EXPECT_THROW(bad.validate(16), Error);

  std::string text;
  for (int i = 0; i < 80; ++i) text += "abcdefghij k\n";
  auto tok = CharTokenizer::from_corpus(text);
  auto cfg = test::tiny_config();
  cfg.vocab_size = tok.vocab_size();
  auto base = trained_like_model(cfg);
  auto nsn = convert_model(base, nsn_config(cfg, {}, 16));
  TrainOptions o;
  o.steps = 40;
  o.batch = 4;
  o.warmup = 2;
  o.lr = 1e-2;
  auto r = train_nsn_multirank(nsn, make_corpus(tok, text), o, n);
  ASSERT_EQ(r.log_var.numel(), 4);
  for (int64_t k = 0; k < 4; ++k) {
    EXPECT_GT(r.buckets[k].samples, 0) << "bucket " << k;
    EXPECT_NE(r.log_var[k].item<float>(), 0.f) << "s_" << k << " got no gradient";
  }
  for (const auto& [name, p] : nsn->projections()) EXPECT_EQ(p->rank(), p->max_rank() ? 16 : 0);
}

TEST(RankAllocation, UniformAndEnergyBudgetsHitTheMacTarget) {
  auto dense = trained_like_model(ModelConfig{.vocab_size = 11, .d_model = 32, .n_heads = 2, .n_layers = 2,
                                              .context = 16, .d_ff = 64});
  auto nsn = convert_model(dense, nsn_config(dense->config(), {}, 0));
  const double full = double(dense_linear_macs(nsn));
  for (double f : {0.25, 0.5, 0.75}) {
    const auto u = uniform_rank_budget(nsn, f);
    const auto e = energy_rank_budget(nsn, f);
    EXPECT_NEAR(double(linear_macs_at(nsn, u)) / full, f, 0.03) << f;
    EXPECT_NEAR(double(linear_macs_at(nsn, e)) / full, f, 0.03) << f;
    EXPECT_EQ(e.layer_rank.size(), 12u);
  }
  EXPECT_THROW(uniform_rank_budget(nsn, 0.0), Error);
  EXPECT_THROW(uniform_rank_budget(dense, 0.5), Error);
}

TEST(RankAllocation, SensitivityBudgetsHitTheTargetAndFavourTheSensitiveLayer) {
  auto dense = trained_like_model(ModelConfig{.vocab_size = 11, .d_model = 32, .n_heads = 2, .n_layers = 2,
                                              .context = 16, .d_ff = 64});
  auto nsn = convert_model(dense, nsn_config(dense->config(), {}, 0));
  std::vector<int64_t> tokens;
  for (int i = 0; i < 200; ++i) tokens.push_back((i * 7 + i / 3) % 11);
  nsn->apply_budget(Budget{24});
  const auto measured = measure_rank_sensitivity(nsn, tokens, 4);
  for (const auto& [name, p] : nsn->projections()) EXPECT_EQ(p->rank(), p->max_rank() ? 24 : 0) << name;
  EXPECT_EQ(measured.grid, (std::vector<int64_t>{8, 16, 24, 32}));
  ASSERT_EQ(measured.loss.size(), 12u);
  for (const auto& [name, curve] : measured.loss) {
    EXPECT_DOUBLE_EQ(curve.back(), measured.full_loss) << name;
    EXPECT_NE(curve.front(), measured.full_loss) << name << ": rank 8 of 32 should change the loss";
  }
  {  // one point, recomputed: only that layer is cut
    const Budget one{0, {{"blk.0.mlp.down", 16}}};
    nsn->apply_budget(one);
    EXPECT_NEAR(evaluate_tokens(nsn, tokens, 4).loss, measured.loss.at("blk.0.mlp.down")[1], 1e-6);
    nsn->apply_budget(Budget{24});
  }
  const double full = double(dense_linear_macs(nsn));
  for (double f : {0.5, 0.7, 0.9}) {
    const auto b = sensitivity_rank_budget(nsn, measured, f);
    EXPECT_EQ(b.layer_rank.size(), 12u);
    EXPECT_NEAR(double(linear_macs_at(nsn, b)) / full, f, 0.05) << f;
  }
  // A made-up profile where only blk.1.mlp.up matters: it gets its full rank first.
  RankSensitivity fake = measured;
  for (auto& [name, curve] : fake.loss) curve = {1.0, 1.0, 1.0, 1.0};
  fake.loss["blk.1.mlp.up"] = {3.0, 2.0, 1.5, 1.0};
  const auto b = sensitivity_rank_budget(nsn, fake, 0.6);
  EXPECT_EQ(b.layer_rank.at("blk.1.mlp.up"), 32);
  EXPECT_EQ(b.layer_rank.at("blk.0.mlp.up"), 8);
  EXPECT_THROW(sensitivity_rank_budget(nsn, RankSensitivity{}, 0.5), Error);
  EXPECT_THROW(measure_rank_sensitivity(nsn, std::vector<int64_t>(10, 1), 4), Error);  // shorter than a window
}

TEST(NsnEngine, ABudgetSetDuringGenerationActsOnTheNextToken) {
  std::string text;
  for (int i = 0; i < 60; ++i) text += "To be, or not to be: that is the question.\n";
  Engine e;
  auto cfg = test::tiny_config();
  cfg.context = 24;
  TrainOptions o;
  o.steps = 5;
  o.batch = 4;
  o.warmup = 1;
  e.train(text, cfg, o);
  EXPECT_THROW(e.set_budget(Budget{2}), Error);  // dense: nothing to truncate yet
  e.convert_nsn({}, 0);
  const auto full = e.info();
  EXPECT_EQ(full.max_rank, 16);
  std::vector<int64_t> macs;
  GenerateOptions g;
  g.max_new_tokens = 8;
  g.temperature = 0;
  e.generate("To be", g, [&](const GeneratedToken& t) {
    macs.push_back(t.macs);
    if (t.index == 3) e.set_budget(Budget{2});
    return true;
  });
  ASSERT_EQ(macs.size(), 8u);
  for (int i = 1; i <= 3; ++i) EXPECT_GT(macs[i], macs[i - 1]);  // attention grows with context
  EXPECT_LT(macs[4], macs[3] / 2);  // the next token already runs at rank 2
  // Per block: q,k,v,o at rank 2 cost 2·(16+16), up/down 2·(16+32); the dense head 16·vocab.
  EXPECT_EQ(e.info().linear_macs, 2 * (4 * 2 * 32 + 2 * 2 * 48) + 16 * e.info().config.vocab_size);
  EXPECT_THROW(e.set_budget(Budget{17}), Error);
  EXPECT_EQ(e.budget(), Budget{2});
}
