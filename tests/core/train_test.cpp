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

TEST(Distillation, LossIsTheMixOfCrossEntropyAndKlToTheTeacher) {
  auto cfg = test::tiny_config();
  torch::manual_seed(2);
  Gpt m(cfg);
  m->eval();
  auto x = torch::randint(cfg.vocab_size, {2, 12}, torch::kInt64);
  auto y = torch::randint(cfg.vocab_size, {2, 12}, torch::kInt64);
  const double ce = next_token_loss(m, Batch{x, y}).item<double>();
  // The model as its own teacher: KL = 0, the loss is (1 − α)·CE at any temperature.
  for (double tau : {1.0, 2.5}) {
    Batch self{x, y};
    add_teacher(self, m, 0.3, tau);
    EXPECT_NEAR(next_token_loss(m, self).item<double>(), 0.7 * ce, 1e-5);
  }
  // A uniform teacher: KL(u ‖ p) = −log V − mean log p at τ = 1.
  const int64_t V = cfg.vocab_size;
  auto uniform = torch::full({2, 12, V}, 1.0 / double(V));
  auto logp = torch::log_softmax(m->forward(x), -1);
  const double kl = (-std::log(double(V)) - logp.mean(-1)).mean().item<double>();
  EXPECT_NEAR(next_token_loss(m, Batch{x, y, uniform, -std::log(double(V)), 1.0, 1.0}).item<double>(), kl, 1e-5);
}

TEST(Distillation, AStudentLearnsTheCorpusFromTheTeacherAloneAndBadTeachersAreRefused) {
  const auto text = tiny_corpus();
  auto tok = CharTokenizer::from_corpus(text);
  auto cfg = test::tiny_config();
  cfg.vocab_size = tok.vocab_size();
  const auto corpus = make_corpus(tok, text);
  TrainOptions o;
  o.steps = 200;
  o.batch = 16;
  o.warmup = 20;
  o.lr = 3e-3;
  torch::manual_seed(3);
  Gpt teacher(cfg);
  const auto t = train_model(teacher, corpus, o);
  ASSERT_GT(t.validation.token_accuracy, 0.6);

  torch::manual_seed(4);
  Gpt student(cfg);
  const double before = evaluate_tokens(student, corpus.validation).token_accuracy;
  o.distill = 1.0;  // no cross-entropy at all: only the teacher's distributions teach
  o.distill_temperature = 2.0;
  o.seed = 99;
  const auto s = train_model(student, corpus, o, {}, {}, {}, &teacher);
  EXPECT_LT(before, 0.3);
  EXPECT_GT(s.validation.token_accuracy, 0.6);
  EXPECT_NEAR(s.validation.token_accuracy, t.validation.token_accuracy, 0.1);

  EXPECT_THROW(train_model(student, corpus, o), Error);  // distill without a teacher
  auto other = cfg;
  other.vocab_size += 1;
  Gpt wrong(other);
  try {
    train_model(student, corpus, o, {}, {}, {}, &wrong);
    FAIL() << "a teacher with another vocabulary was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("vocabulary"), std::string::npos) << e.what();
  }
  o.distill = 1.5;
  EXPECT_THROW(o.validate(), Error);
}
