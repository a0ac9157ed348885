// Variant files packed from fine-tunes (pack_variants): what a model's budgets then run, and what
// the pack refuses.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "core/engine/engine.h"
#include "core/error.h"
#include "core/io/atomic_file.h"
#include "core/io/checkpoint.h"
#include "core/variants/variants.h"
#include "tests/core/test_util.h"

using namespace nestscope;

namespace {

TrainOptions few_steps(bool projections_only) {
  TrainOptions o;
  o.steps = 3;
  o.batch = 2;
  o.warmup = 1;
  o.lr = 1e-2;
  o.projections_only = projections_only;
  return o;
}

std::string bytes_of(const std::string& path) { return read_text_file(path); }

}  // namespace

TEST(VariantPack, FineTunedProjectionsRunUnderTheBaseModelsBudgetsAndTheFileIsKept) {
  test::TempDir dir;
  const std::string text = test::hamlet_text();
  ModelConfig cfg = test::tiny_config();
  Engine base;
  base.train(text, cfg, few_steps(false));
  base.save(dir.file("base.safetensors"));
  base.load(dir.file("base.safetensors"));
  // A multi-rank fine-tune of the projections only, and one of everything.
  Engine tuned;
  tuned.load(dir.file("base.safetensors"));
  tuned.convert_nsn({}, 0);
  tuned.finetune_nsn(text, few_steps(true), NsnTrainOptions{.min_rank = 1, .buckets = 2});
  tuned.save(dir.file("nsn.safetensors"));
  Engine all;
  all.load(dir.file("base.safetensors"));
  all.convert_nsn({}, 0);
  all.finetune_nsn(text, few_steps(false), NsnTrainOptions{.min_rank = 1, .buckets = 2});
  all.save(dir.file("nsn-all.safetensors"));

  EXPECT_THROW(base.pack_variants({dir.file("nsn-all.safetensors")}, dir.file("bad.safetensors"), "x"), Error)
      << "a fine-tune that moved the embeddings or norms is not a variant";
  EXPECT_FALSE(std::filesystem::exists(dir.file("bad.safetensors")));
  const std::string pack = dir.file("pack.safetensors");
  base.pack_variants({dir.file("nsn.safetensors")}, pack, "nsn test fine-tune");
  EXPECT_EQ(variant_file_origin(pack), "nsn test fine-tune");
  EXPECT_EQ(variant_file_origin(dir.file("base.safetensors")), "");

  // The base model with the pack as its variant file: rank budgets are the fine-tuned model's,
  // MPO budgets (not in the pack) convert beside it, and the pack is not rewritten.
  auto lm = load_checkpoint(dir.file("base.safetensors"));
  const std::string before = bytes_of(pack);
  const auto rep = build_variants(lm.model, {LinearKind::Nsn, LinearKind::Mpo}, pack, lm.hash);
  EXPECT_GT(rep.from_cache, 0);
  EXPECT_GT(rep.built, 0);
  EXPECT_EQ(bytes_of(pack), before);
  auto ft = load_checkpoint(dir.file("nsn.safetensors"));
  {
    torch::NoGradGuard no_grad;
    auto x = torch::randint(cfg.vocab_size, {1, 16}, torch::kInt64);
    for (int64_t r : {1, 4, 16}) {
      lm.model->apply_budget(Budget{.rank = r, .kind = {{"attn", LinearKind::Nsn}, {"mlp", LinearKind::Nsn}}});
      ft.model->apply_budget(Budget{.rank = r});
      EXPECT_TRUE(torch::allclose(lm.model->forward(x), ft.model->forward(x), 1e-5, 1e-6)) << "rank " << r;
    }
  }
  // A file written for another checkpoint is not used.
  Engine other;
  other.train(text, cfg, few_steps(false));
  other.save(dir.file("other.safetensors"));
  auto o = load_checkpoint(dir.file("other.safetensors"));
  const auto rep2 = build_variants(o.model, {LinearKind::Nsn}, pack, o.hash);
  EXPECT_EQ(rep2.from_cache, 0);
  EXPECT_NE(rep2.cache_note.find("another checkpoint"), std::string::npos) << rep2.cache_note;
}

TEST(SweepReference, AgreementIsAgainstTheGivenModelAndPartOfTheRowKey) {
  test::TempDir dir;
  const std::string text = test::hamlet_text();
  Engine a;
  a.train(text, test::tiny_config(), few_steps(false));
  a.save(dir.file("a.safetensors"));
  Engine b;
  b.load(dir.file("a.safetensors"));
  b.train(text, {}, few_steps(false), /*continue_current=*/true);
  b.save(dir.file("b.safetensors"));
  b.load(dir.file("b.safetensors"));
  SweepOptions o;
  o.text = text;
  o.measure_latency = false;
  const std::vector<NamedBudget> dense = {{"dense", "dense", Budget{}}};
  const auto own = b.sweep(dense, o);
  o.reference_model = dir.file("b.safetensors");
  const auto self = b.sweep(dense, o);
  o.reference_model = dir.file("a.safetensors");
  const auto other = b.sweep(dense, o);
  EXPECT_DOUBLE_EQ(own[0].eval.top1_agreement, 1.0);
  EXPECT_DOUBLE_EQ(self[0].eval.top1_agreement, 1.0);
  EXPECT_NEAR(self[0].eval.kl, 0.0, 1e-6);
  EXPECT_LT(other[0].eval.top1_agreement, 1.0) << "b trained three more steps than a";
  EXPECT_GT(other[0].eval.kl, 0.0);
  EXPECT_DOUBLE_EQ(other[0].eval.token_accuracy, own[0].eval.token_accuracy) << "the model under test is the same";
  EXPECT_NE(other[0].key, own[0].key);
  EXPECT_NE(other[0].key, self[0].key);
  // A reference with another tokenizer is refused.
  Engine c;
  c.train("abcdefghij klmnopqrstuvwxyz\n" + text, test::tiny_config(), few_steps(false));
  c.save(dir.file("c.safetensors"));
  o.reference_model = dir.file("c.safetensors");
  EXPECT_THROW(b.sweep(dense, o), Error);
}
