#include <gtest/gtest.h>
#include <torch/torch.h>

#include "core/error.h"
#include "core/layers/mpo_linear.h"
#include "core/eval/metrics.h"
#include "core/model/convert.h"
#include "core/text/char_tokenizer.h"
#include "core/train/corpus.h"
#include "core/train/nsn_objective.h"
#include "core/model/transformer.h"

using namespace nestscope;

namespace {

double rel_error(const torch::Tensor& a, const torch::Tensor& b) {
  return ((a - b).norm() / b.norm()).item<double>();
}

// A weight with a decaying spectrum, like a trained one (a random Gaussian matrix has none).
torch::Tensor trained_like_weight(int64_t out, int64_t in, uint64_t seed) {
  torch::manual_seed(seed);
  auto u = torch::linalg::qr(torch::randn({out, out}), "reduced");
  auto v = torch::linalg::qr(torch::randn({in, in}), "reduced");
  const int64_t k = std::min(out, in);
  auto s = torch::exp(-torch::arange(k, torch::kFloat) / double(k) * 4.0);
  return torch::matmul(std::get<0>(u).narrow(1, 0, k) * s, std::get<0>(v).narrow(1, 0, k).t()) +
         0.01 * torch::randn({out, in});
}

}  // namespace

TEST(MpoFactors, BalancedDefaultsReproduceThePublishedScheme) {
  using V = std::vector<int64_t>;
  EXPECT_EQ(balanced_factors(128, 2), (V{8, 16}));
  EXPECT_EQ(balanced_factors(512, 3), (V{8, 8, 8}));
  EXPECT_EQ(balanced_factors(128, 3), (V{4, 4, 8}));
  EXPECT_EQ(balanced_factors(65, 2), (V{5, 13}));
  EXPECT_EQ(balanced_factors(50257, 2), (V{29, 1733}));
  EXPECT_EQ(balanced_factors(7, 3), (V{1, 1, 7}));
  EXPECT_EQ(default_mpo_sites(128, 128), 2);
  EXPECT_EQ(default_mpo_sites(128, 512), 3);
  EXPECT_THROW(balanced_factors(0, 2), Error);
}

TEST(MpoLinear, PublishedShapesHaveThePublishedCoreCounts) {
  for (int64_t chi : {4, 8, 16, 32}) {
    MpoLinear attn(128, 128, {8, 16}, {8, 16}, chi, false, 0.02);
    MpoLinear up(128, 512, {8, 8, 8}, {4, 4, 8}, chi, false, 0.02);
    MpoLinear down(512, 128, {4, 4, 8}, {8, 8, 8}, chi, false, 0.02);
    MpoLinear head(128, 65, {5, 13}, {8, 16}, chi, false, 0.02);
    EXPECT_EQ(attn.params(), 320 * chi);
    EXPECT_EQ(up.params(), 96 * chi + 32 * chi * chi);
    EXPECT_EQ(down.params(), 96 * chi + 32 * chi * chi);
    EXPECT_EQ(head.params(), 248 * chi);
  }
  MpoLinear biased(128, 128, {8, 16}, {8, 16}, 8, true, 0.02);
  EXPECT_EQ(biased.params(), 320 * 8 + 128);
}

TEST(MpoLinear, DirectContractionEqualsTheRebuiltWeight) {
  MpoLinear up(128, 512, {8, 8, 8}, {4, 4, 8}, 16, true, 0.02);
  up.load_from_dense(trained_like_weight(512, 128, 1), torch::randn({512}) * 0.1);
  torch::NoGradGuard g;
  auto x = torch::randn({3, 5, 128});
  auto many = torch::randn({256, 128});
  for (int64_t chi : {1, 3, 8, 16}) {
    up.set_bond(chi);
    auto direct = up.forward_direct(x);
    ASSERT_EQ(direct.sizes(), (std::vector<int64_t>{3, 5, 512}));
    auto reference = torch::matmul(x, up.to_dense().t()) + up.bias();
    EXPECT_LT(rel_error(direct, reference), 1e-5) << "χ=" << chi;
    EXPECT_LT(rel_error(up.forward_rebuilt(x), reference), 1e-5) << "χ=" << chi;
    // forward() picks per call (few rows: the chain; many: one rebuild) and equals both.
    EXPECT_LT(rel_error(up.forward(x), reference), 1e-5) << "χ=" << chi;
    EXPECT_LT(rel_error(up.forward(many), torch::matmul(many, up.to_dense().t()) + up.bias()), 1e-5) << "χ=" << chi;
  }
  // Rebuilding at χ = 16: [32, 16]·[16, 512] then [1024, 16]·[16, 64] (bonds 16, 16).
  EXPECT_EQ(up.rebuild_macs(), 32 * 16 * 32 * 16 + 1024 * 16 * 64);
}

TEST(MpoLinear, TrainingBatchesGiveTheSameOutputAndGradientsReachEveryCore) {
  // A training batch rebuilds W once; the result must equal the direct contraction that
  // inference uses, at a χ where the chain is cheaper per row (4) and where it is not (16).
  MpoLinear up(128, 512, {8, 8, 8}, {4, 4, 8}, 16, true, 0.02);
  up.load_from_dense(trained_like_weight(512, 128, 2), torch::randn({512}) * 0.1);
  auto x = torch::randn({4, 64, 128});
  for (int64_t chi : {4, 16}) {
    up.set_bond(chi);
    up.zero_grad();
    torch::Tensor direct;
    {
      torch::NoGradGuard g;
      direct = up.forward_direct(x);
    }
    auto trained = up.forward(x);  // autograd on
    EXPECT_LT(rel_error(trained.detach(), direct), 1e-5) << "χ=" << chi;
    trained.square().sum().backward();
    for (const auto& p : up.parameters()) {
      ASSERT_TRUE(p.grad().defined());
      EXPECT_GT(p.grad().abs().sum().item<double>(), 0.0) << "χ=" << chi;
    }
  }
}

TEST(MpoLinear, BothContractionOrdersAreExactAndTheCheaperOneRuns) {
  MpoLinear up(128, 512, {8, 8, 8}, {4, 4, 8}, 16, false, 0.02);
  MpoLinear down(512, 128, {4, 4, 8}, {8, 8, 8}, 16, true, 0.02);
  EXPECT_TRUE(up.right_to_left());
  EXPECT_FALSE(down.right_to_left());
  EXPECT_EQ(up.macs(), 1024 * 16 + 1024 * 16 * 16 + 2048 * 16);    // from the last site
  EXPECT_EQ(down.macs(), 2048 * 16 + 1024 * 16 * 16 + 1024 * 16);  // from the first site
  torch::NoGradGuard g;
  auto x = torch::randn({7, 128}), z = torch::randn({7, 512});
  EXPECT_LT(rel_error(up.forward(x), torch::matmul(x, up.to_dense().t())), 1e-5);
  EXPECT_LT(rel_error(down.forward(z), torch::matmul(z, down.to_dense().t()) + down.bias()), 1e-5);
}

TEST(MpoLinear, InferenceFollowsEveryChangeOfChiAndOfTheCores) {
  // Inference packs the cores once per χ; new weights (loading, an optimizer step in place) and a
  // new χ must each be seen by the very next call.
  MpoLinear attn(128, 128, {8, 16}, {8, 16}, 16, true, 0.02);
  attn.load_from_dense(trained_like_weight(128, 128, 3), torch::randn({128}) * 0.1);
  torch::NoGradGuard g;
  auto x = torch::randn({1, 128});
  auto check_now = [&](const char* what) {
    EXPECT_LT(rel_error(attn.forward(x), torch::matmul(x, attn.to_dense().t()) + attn.bias()), 1e-5) << what;
  };
  check_now("first call");
  attn.set_bond(5);
  check_now("after χ 16 → 5");
  attn.load_from_dense(trained_like_weight(128, 128, 4), torch::randn({128}) * 0.1);
  check_now("after loading other weights");
  for (auto& p : attn.parameters()) p.add_(torch::randn_like(p) * 0.01);  // as an optimizer step does
  check_now("after an in-place update");
  attn.set_bond(16);
  check_now("after χ 5 → 16");
}

TEST(MpoLinear, FullBondTtSvdReproducesTheWeight) {
  auto w = trained_like_weight(128, 512, 2);
  MpoLinear down(512, 128, {4, 4, 8}, {8, 8, 8}, 1 << 20, false, 0.02);
  down.load_from_dense(w, {});
  EXPECT_EQ(down.full_bond_dim(1), 32);  // min(4·8, 4·8·8·8)
  EXPECT_EQ(down.full_bond_dim(2), 64);  // min(32·4·8, 8·8)
  EXPECT_LT(rel_error(down.to_dense(), w), 1e-5);
}

TEST(MpoLinear, TruncationErrorFallsWithChiAndMatchesAFreshTtSvd) {
  auto w = trained_like_weight(512, 128, 3);
  MpoLinear up(128, 512, {8, 8, 8}, {4, 4, 8}, 64, false, 0.02);
  up.load_from_dense(w, {});
  double previous = 1e9;
  for (int64_t chi = 1; chi <= 64; chi *= 2) {
    up.set_bond(chi);
    const double live = rel_error(up.to_dense(), w);
    MpoLinear fresh(128, 512, {8, 8, 8}, {4, 4, 8}, chi, false, 0.02);
    fresh.load_from_dense(w, {});
    const double optimal = rel_error(fresh.to_dense(), w);
    EXPECT_LE(live, previous + 1e-9) << "χ=" << chi;
    EXPECT_LE(live, 1.10 * optimal + 1e-6) << "χ=" << chi << ": live truncation vs fresh TT-SVD";
    previous = live;
  }
}

TEST(MpoLinear, CanonicalizeKeepsTheFunction) {
  MpoLinear attn(128, 128, {8, 16}, {8, 16}, 32, true, 0.02);
  attn.load_from_dense(trained_like_weight(128, 128, 4), torch::zeros({128}));
  {
    torch::NoGradGuard g;
    for (auto& p : attn.parameters()) p.add_(torch::randn_like(p) * 0.01);  // "fine-tuned"
  }
  attn.set_bond(8);
  const auto before = attn.to_dense().detach().clone();
  attn.set_bond(32);
  const auto full = attn.to_dense().detach().clone();
  attn.set_bond(8);
  attn.canonicalize();
  EXPECT_EQ(attn.bond(), 8);
  attn.set_bond(32);
  EXPECT_LT(rel_error(attn.to_dense(), full), 1e-5);
  attn.set_bond(8);  // re-sorted bonds: truncation is no worse than before
  EXPECT_LE(rel_error(attn.to_dense(), full), rel_error(before, full) + 1e-6);
}

TEST(MpoLinear, BadShapesAndBondsAreClearErrors) {
  EXPECT_THROW(MpoLinear(128, 128, {8, 16}, {8, 8}, 4, false, 0.02), Error);     // 64 ≠ 128
  EXPECT_THROW(MpoLinear(128, 128, {8, 16}, {2, 4, 16}, 4, false, 0.02), Error);  // site counts differ
  EXPECT_THROW(MpoLinear(128, 128, {8, 16}, {8, 16}, 0, false, 0.02), Error);
  MpoLinear attn(128, 128, {8, 16}, {8, 16}, 16, false, 0.02);
  EXPECT_THROW(attn.set_bond(0), Error);
  EXPECT_THROW(attn.set_bond(17), Error);
  EXPECT_EQ(attn.bond(), 16);
  try {
    MpoLinear(128, 128, {8, 16}, {8, 8}, 4, false, 0.02);
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("multiply to 64, not 128"), std::string::npos) << e.what();
  }
  EXPECT_THROW(attn.load_from_dense(torch::zeros({128, 64}), {}), Error);
}

TEST(MpoModel, PicoGptCountsAre13696Plus6136ChiPlus256ChiSquared) {
  const ModelConfig pico = ModelConfig::pico_gpt();
  const std::map<int64_t, int64_t> published = {{4, 42336}, {8, 79168}, {16, 177408}, {32, 472192}};
  for (const auto& [chi, total] : published) {
    const ModelConfig c = mpo_config(pico, {}, chi);
    EXPECT_EQ(c.parameter_count(), 13696 + 6136 * chi + 256 * chi * chi);
    EXPECT_EQ(c.parameter_count(), total) << "χ=" << chi;
    Gpt model(c);
    int64_t counted = 0;
    for (const auto& p : model->parameters()) counted += p.numel();
    EXPECT_EQ(counted, total) << "χ=" << chi;
    EXPECT_EQ(ModelConfig::from_json(c.to_json()), c);
  }
  const auto up = mpo_config(pico, {}, 8).linear.at("mlp.up");
  EXPECT_EQ(up.out_factors, (std::vector<int64_t>{8, 8, 8}));
  EXPECT_EQ(up.in_factors, (std::vector<int64_t>{4, 4, 8}));
  EXPECT_THROW(mpo_config(pico, {}, 0), Error);
  ModelConfig bad = mpo_config(pico, {"attn.q"}, 8);
  bad.linear["attn.q"].out_factors = {8, 8};
  EXPECT_THROW(bad.validate(), Error);
}

TEST(MpoModel, FullBondConversionKeepsTheLogitsAndBudgetsSetChi) {
  ModelConfig cfg{.vocab_size = 12, .d_model = 16, .n_heads = 2, .n_layers = 2, .context = 16, .d_ff = 64};
  torch::manual_seed(7);
  Gpt dense(cfg);
  {
    torch::NoGradGuard g;
    for (auto& p : dense->parameters()) p.add_(torch::randn_like(p) * 0.2);
  }
  dense->eval();
  auto mpo = convert_model(dense, mpo_config(cfg, {}, 1024));
  torch::NoGradGuard g;
  auto x = torch::randint(0, 12, {2, 10}, torch::kInt64);
  auto a = dense->forward(x), b = mpo->forward(x);
  EXPECT_LT(((a - b).abs().max() / a.abs().max()).item<double>(), 1e-4);

  mpo->apply_budget(Budget{.bond = 2});
  for (const auto& [name, p] : mpo->projections()) EXPECT_EQ(p->bond(), 2) << name;
  const auto c = mpo->forward(x);
  EXPECT_GT((a - c).abs().max().item<double>(), 1e-3);  // χ = 2 is a real truncation
  EXPECT_THROW(mpo->apply_budget(Budget{.bond = 5000}), Error);
  for (const auto& [name, p] : mpo->projections()) EXPECT_EQ(p->bond(), 2) << name << ": a bad budget changed state";
  EXPECT_THROW(dense->apply_budget(Budget{.bond = 2}), Error);
  mpo->apply_budget(Budget{});
  EXPECT_LT(((a - mpo->forward(x)).abs().max() / a.abs().max()).item<double>(), 1e-4);
}

TEST(MpoModel, NestedChiTrainingReachesEveryLogVarianceAndLowersLowChiLoss) {
  std::string text;
  for (int i = 0; i < 80; ++i) text += "abcdefghij k\n";
  auto tok = CharTokenizer::from_corpus(text);
  ModelConfig cfg{.vocab_size = tok.vocab_size(), .d_model = 16, .n_heads = 2, .n_layers = 1, .context = 16,
                  .d_ff = 64};
  torch::manual_seed(3);
  Gpt dense(cfg);
  auto mpo = convert_model(dense, mpo_config(cfg, {}, 8));
  const auto corpus = make_corpus(tok, text);
  auto low_chi_loss = [&] {
    mpo->apply_budget(Budget{.bond = 2});
    const double l = evaluate_tokens(mpo, corpus.validation).loss;
    mpo->apply_budget(Budget{});
    return l;
  };
  const double before = low_chi_loss();
  NsnTrainOptions n;
  n.axis = NestedAxis::Bond;
  n.min_rank = 2;
  n.buckets = 3;
  n.curriculum = 0.3;
  TrainOptions o;
  o.steps = 60;
  o.batch = 4;
  o.warmup = 2;
  o.lr = 1e-2;
  auto r = train_nsn_multirank(mpo, corpus, o, n);
  ASSERT_EQ(r.log_var.numel(), 3);
  for (int64_t k = 0; k < 3; ++k) {
    EXPECT_GT(r.buckets[k].samples, 0) << "bucket " << k;
    EXPECT_NE(r.log_var[k].item<float>(), 0.f) << "s_" << k << " got no gradient";
  }
  for (const auto& [name, p] : mpo->projections()) EXPECT_EQ(p->bond(), p->max_bond()) << name;
  EXPECT_LT(low_chi_loss(), before - 0.5) << "χ = 2 was trained through the shared cores";
  NsnTrainOptions too_low = n;
  too_low.min_rank = 9;
  EXPECT_THROW(train_nsn_multirank(mpo, corpus, o, too_low), Error);
}
