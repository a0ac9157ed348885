#include <gtest/gtest.h>
#include <torch/torch.h>

#include "core/error.h"
#include "core/eval/metrics.h"
#include "core/text/char_tokenizer.h"
#include "core/train/trainer.h"
#include "tests/core/test_util.h"

using namespace nestscope;

namespace {
// A small, very regular corpus: a tiny model can learn it in a few hundred steps.
std::string tiny_corpus() {
  std::string s;
  for (int i = 0; i < 400; ++i) s += "the cat sat on the mat. the dog ate the log.\n";
  return s;
}
}  // namespace

TEST(Schedule, LinearWarmupThenCosineToMinimum) {
  TrainOptions o;
  o.steps = 1000;
  o.warmup = 100;
  o.lr = 1e-3;
  EXPECT_NEAR(learning_rate_at(o, 0), 1e-5, 1e-12);
  EXPECT_NEAR(learning_rate_at(o, 99), 1e-3, 1e-12);
  EXPECT_NEAR(learning_rate_at(o, 100), 1e-3, 1e-12);
  EXPECT_NEAR(learning_rate_at(o, 550), 0.5e-3, 1e-9);
  EXPECT_NEAR(learning_rate_at(o, 1000), 0.0, 1e-12);
}

TEST(Trainer, LossFallsOnATinyCorpusWithinAFewHundredSteps) {
  const auto text = tiny_corpus();
  auto tok = CharTokenizer::from_corpus(text);
  auto cfg = test::tiny_config();
  cfg.vocab_size = tok.vocab_size();
  torch::manual_seed(1);
  Gpt m(cfg);
  const auto corpus = make_corpus(tok, text);
  const auto before = evaluate_tokens(m, corpus.validation).loss;
  TrainOptions o;
  o.steps = 300;
  o.batch = 16;
  o.warmup = 20;
  o.lr = 3e-3;
  const auto r = train_model(m, corpus, o);
  EXPECT_LT(r.validation.loss, 0.5 * before);
  EXPECT_GT(r.validation.token_accuracy, 0.6);
  EXPECT_LT(r.log.back().loss, r.log.front().loss);
  EXPECT_EQ(r.log.size(), 300u);
}
