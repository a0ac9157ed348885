#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "core/engine/engine.h"
#include "core/eval/joint_split.h"
#include "core/error.h"
#include "core/io/atomic_file.h"
#include "core/io/default_model.h"
#include "core/model/budget_json.h"
#include "tests/core/test_util.h"

using namespace nestscope;

namespace {
ModelConfig small_config() {
  auto c = test::tiny_config();
  c.context = 24;
  return c;
}
std::string text() { return test::hamlet_text(); }
TrainOptions quick(int64_t steps) {
  TrainOptions o;
  o.steps = steps;
  o.batch = 4;
  o.warmup = 2;
  return o;
}
// A checkpoint the repository ships (tests/core/data → resources/models).
std::string shipped_model(const char* file) {
  return (std::filesystem::path(NESTSCOPE_TEST_DATA) / "../../../resources/models" / file).string();
}
// The engine on the embedded default model, and its dense accuracy on the validation split of `text`.
double load_default_dense(Engine& e, const std::string& text) {
  e.load_default();
  return e.evaluate(text, true).token_accuracy;
}
}  // namespace

TEST(Engine, GenerateStreamsTokensAndValidatesPrompts) {
  Engine e;
  EXPECT_FALSE(e.has_model());
  EXPECT_THROW(e.generate("To", {}), Error);  // no model yet
  e.train(text(), small_config(), quick(20));
  std::string streamed;
  GenerateOptions o;
  o.max_new_tokens = 50;  // more than the context of 24: exercises the sliding window
  o.seed = 3;
  auto r = e.generate("To be", o, [&](const GeneratedToken& t) {
    streamed += t.text;
    EXPECT_GE(t.entropy, 0);
    EXPECT_GT(t.prob, 0);
    return true;
  });
  EXPECT_EQ(r.generated_tokens, 50);
  EXPECT_EQ(r.text, streamed);
  EXPECT_EQ(e.generate("To be", o).text, r.text);  // same seed, same text
  // A callback returning false stops generation.
  auto stopped = e.generate("To be", o, [](const GeneratedToken& t) { return t.index < 4; });
  EXPECT_TRUE(stopped.stopped);
  EXPECT_EQ(stopped.generated_tokens, 5);
  // Bad prompts: empty, invalid UTF-8, unknown characters, longer than the context.
  auto expect_msg = [&](const std::string& prompt, const std::string& needle) {
    try {
      e.generate(prompt, o);
      FAIL() << "prompt accepted";
    } catch (const Error& err) {
      EXPECT_NE(std::string(err.what()).find(needle), std::string::npos) << err.what();
    }
  };
  expect_msg("", "empty");
  expect_msg("To \xff", "invalid UTF-8");
  expect_msg("To #", "'#'");
  expect_msg(std::string(30, 'o'), "context");
}

TEST(Engine, FailedLoadKeepsTheCurrentModel) {
  test::TempDir dir;
  Engine e;
  e.train(text(), small_config(), quick(5));
  const auto before = e.info();
  write_file_atomic(dir.file("junk.safetensors"), "this is not a checkpoint");
  EXPECT_THROW(e.load(dir.file("junk.safetensors")), Error);
  EXPECT_THROW(e.load(dir.file("absent.safetensors")), Error);
  EXPECT_EQ(e.info().parameters, before.parameters);
  EXPECT_EQ(e.info().source, before.source);
}

TEST(Engine, CancelledTrainingLeavesStateAndFilesIntact) {
  test::TempDir dir;
  Engine e;
  e.train(text(), small_config(), quick(5));
  const auto path = dir.file("m.safetensors");
  e.save(path);
  const auto bytes = read_file_bytes(path);
  const auto gen_before = e.generate("To", {10, 0.0, 0, 0}).text;
  auto cancel_at_3 = [](const Progress& p) { return p.done < 3; };
  EXPECT_THROW(e.train(text(), small_config(), quick(50), /*continue_current=*/true, cancel_at_3), Cancelled);
  EXPECT_EQ(e.generate("To", {10, 0.0, 0, 0}).text, gen_before);
  EXPECT_EQ(read_file_bytes(path), bytes);
}

TEST(Engine, CancelledConversionsAndVariantBuildsLeaveTheModelAsItWas) {
  Engine e;
  e.train(text(), small_config(), quick(5));
  e.set_variant_cache(false);
  e.set_budget(Budget{});
  const auto before = e.info();
  const auto gen_before = e.generate("To", {10, 0.0, 0, 0}).text;
  std::vector<Progress> seen;
  auto cancel_after_2 = [&](const Progress& p) {
    seen.push_back(p);
    return p.done < 2;
  };
  EXPECT_THROW(e.convert_nsn({}, 0, cancel_after_2), Cancelled);
  ASSERT_FALSE(seen.empty());
  EXPECT_EQ(seen.back().phase, "convert");
  EXPECT_EQ(seen.back().total, 2 * 6 + 1);  // q, k, v, o, up, down per layer and the head
  seen.clear();
  EXPECT_THROW(e.convert_mpo({}, 4, cancel_after_2), Cancelled);
  EXPECT_EQ(seen.back().phase, "convert");
  seen.clear();
  EXPECT_THROW(e.prepare_variants({LinearKind::Nsn, LinearKind::Mpo}, cancel_after_2), Cancelled);
  EXPECT_EQ(seen.back().phase, "variants");
  EXPECT_EQ(seen.back().total, 2 * (2 * 6 + 1));
  EXPECT_EQ(e.info().parameters, before.parameters);
  EXPECT_EQ(e.info().max_rank, 0);
  EXPECT_EQ(e.info().max_bond, 0);
  EXPECT_EQ(e.info().source, before.source);
  EXPECT_EQ(e.generate("To", {10, 0.0, 0, 0}).text, gen_before);
  // Not cancelled, the same calls finish and report every unit.
  seen.clear();
  auto all = [&](const Progress& p) {
    seen.push_back(p);
    return true;
  };
  e.prepare_variants({LinearKind::Nsn, LinearKind::Mpo}, all);
  EXPECT_EQ(seen.back().done, seen.back().total);
  e.convert_nsn({}, 0, all);
  EXPECT_GT(e.info().max_rank, 0);
}

TEST(Engine, DistilledFineTuningLearnsFromTheTeacherCheckpointAndRefusesAnotherTokenizer) {
  test::TempDir dir;
  Engine teacher;
  teacher.train(text(), small_config(), quick(30));
  teacher.save(dir.file("teacher.safetensors"));
  Engine e;
  e.load(dir.file("teacher.safetensors"));
  e.convert_mpo({}, 4);
  TrainOptions o = quick(10);
  o.distill = 0.5;
  o.teacher = dir.file("teacher.safetensors");
  const auto r = e.finetune_mpo(text(), o, std::nullopt);
  EXPECT_EQ(r.train.steps, 10);
  EXPECT_TRUE(std::isfinite(r.train.final_train_loss));
  EXPECT_NE(e.info().training_json.find("\"distill\":0.5"), std::string::npos);

  Engine other;  // a tokenizer from another text: same model shape, other symbols
  other.train("Completely different words, digits 0123456789 and symbols!? " + text().substr(0, 2000),
              small_config(), quick(2));
  other.save(dir.file("other.safetensors"));
  const auto params = e.info().parameters;
  o.teacher = dir.file("other.safetensors");
  try {
    e.finetune_mpo(text(), o, std::nullopt);
    FAIL() << "a teacher with another tokenizer was accepted";
  } catch (const Error& err) {
    EXPECT_NE(std::string(err.what()).find("tokenizer"), std::string::npos) << err.what();
  }
  EXPECT_EQ(e.info().parameters, params);
}

TEST(Engine, EmbeddedDefaultModelIsPicoGpt) {
  if (!has_default_model()) GTEST_SKIP() << "this build embedded no default model";
  Engine e;
  e.load_default();
  const auto i = e.info();
  EXPECT_EQ(i.parameters, 808448);
  EXPECT_EQ(i.config, ModelConfig::pico_gpt());
  auto r = e.generate("ROMEO:\n", {40, 0.8, 0, 1});
  EXPECT_EQ(r.generated_tokens, 40);
}

// The committed model measures 53.62% (val loss 1.559); the bar is the project's 50%.
TEST(Engine, DefaultModelScoresAtLeast50PercentOnTheValidationSplit) {
  if (!has_default_model()) GTEST_SKIP() << "this build embedded no default model";
  NESTSCOPE_NEED_CORPUS();
  Engine e;
  e.load_default();
  const auto r = e.evaluate(read_text_file(NESTSCOPE_CORPUS), /*validation_split=*/true);
  EXPECT_EQ(r.windows, 435);  // (111,540 - 1) / 256 non-overlapping windows
  EXPECT_GE(r.token_accuracy, 0.50);
  EXPECT_LT(r.loss, 1.60);
  std::printf("default model on the validation split: token accuracy %.4f, loss %.4f\n", r.token_accuracy, r.loss);
}

// Issue 4's χ = 8 target, on the shipped checkpoint (resources/models/picogpt-mpo8.safetensors:
// TT-SVD of the default model at χ = 8, then 5,000 fine-tuning steps; README, MPO section).
TEST(Engine, ShippedChi8MpoModelKeepsAtLeast95PercentOfDenseAccuracy) {
  if (!has_default_model()) GTEST_SKIP() << "this build embedded no default model";
  NESTSCOPE_NEED_CORPUS();
  const std::string text = read_text_file(NESTSCOPE_CORPUS);
  Engine e;
  const double dense = load_default_dense(e, text);
  e.load(shipped_model("picogpt-mpo8.safetensors"));
  EXPECT_EQ(e.info().parameters, 13696 + 6136 * 8 + 256 * 8 * 8);
  EXPECT_EQ(e.info().max_bond, 8);
  const auto r = e.evaluate(text, true);
  EXPECT_EQ(r.windows, 435);
  EXPECT_GE(r.token_accuracy, 0.95 * dense);
  std::printf("chi = 8 MPO model: token accuracy %.4f = %.2f%% of dense %.4f\n", r.token_accuracy,
              100 * r.token_accuracy / dense, dense);
}

// Issue 5's target, on the shipped gate-tuned checkpoint (resources/models/picogpt-gate50.safetensors:
// the default model after the gate-aware chain of the README's gate section, the last stage
// sensing-aware): the sensing gate at 50% of the MLP blocks and 50% of the heads (model-wide) within
// 1 pp of the default model's dense accuracy (measured 53.00% vs 53.62%); random blocks far below.
TEST(Engine, ShippedGate50ModelIsWithin1ppOfDenseAtHalfTheHeadsAndBlocks) {
  if (!has_default_model()) GTEST_SKIP() << "this build embedded no default model";
  NESTSCOPE_NEED_CORPUS();
  const std::string text = read_text_file(NESTSCOPE_CORPUS);
  Engine e;
  const double dense = load_default_dense(e, text);
  e.load(shipped_model("picogpt-gate50.safetensors"));
  const auto budgets = parse_budget_list(R"([
    {"method": "gate+heads", "label": "sensing", "budget": {"gate": {"policy": "sensing", "active": 0.5,
      "measurement": "pca", "recovery": "mmse", "head_active": 0.5, "head_global": true}}},
    {"method": "gate+heads", "label": "random", "budget": {"gate": {"policy": "random", "active": 0.5,
      "head_active": 0.5, "head_global": true}}}])",
                                         "test");
  SweepOptions o;
  o.text = text;
  o.measure_latency = false;
  const auto rows = e.sweep(budgets, o);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].eval.windows, 435);
  EXPECT_GE(rows[0].eval.token_accuracy, dense - 0.01);
  EXPECT_LT(rows[0].mac_fraction, 0.70);  // measurement and recovery included
  EXPECT_LT(rows[1].eval.token_accuracy, rows[0].eval.token_accuracy - 0.2);
  std::printf("gate-tuned model, sensing 50%% blocks + 50%% heads: %.4f (dense default model %.4f, %.2f pp), "
              "%.1f%% of the MACs; random blocks %.4f\n",
              rows[0].eval.token_accuracy, dense, 100 * (dense - rows[0].eval.token_accuracy),
              100 * rows[0].mac_fraction, rows[1].eval.token_accuracy);
}

// The GUI calibrates the gate on the prompt. "ROMEO:" alone is 6 rows: a prior of rank ≤ 5, and a
// PCA + MMSE gate blind outside it. calibrate_gate continues a short text with the model's own
// sample first, so a prompt-calibrated gate scores like one calibrated on real text.
TEST(Engine, AShortPromptCalibratesTheGateOnItsOwnContinuation) {
  const std::string text =
      "Shall I compare thee to a summer's day?\nThou art more lovely and more temperate:\n"
      "Rough winds do shake the darling buds of May,\nAnd summer's lease hath all too short a date;\n"
      "Sometime too hot the eye of heaven shines,\nAnd often is his gold complexion dimm'd;\n"
      "And every fair from fair sometime declines,\nBy chance or nature's changing course untrimm'd;\n"
      "But thy eternal summer shall not fade,\nNor lose possession of that fair thou owest;\n";
  Engine e;  // the gate-tuned model (issue 5): the one meant to run at 50%
  e.load(shipped_model("picogpt-gate50.safetensors"));
  const double dense = e.evaluate(text, false).token_accuracy;
  Budget b;
  b.gate = {.policy = GatePolicy::Sensing, .active = 0.5, .measurement = MeasurementKind::Pca, .recovery = Recovery::Mmse};
  e.calibrate_gate(text, 16);
  e.set_budget(b);
  const double on_text = e.evaluate(text, false).token_accuracy;
  e.calibrate_gate("ROMEO:", 16);
  const double on_prompt = e.evaluate(text, false).token_accuracy;
  e.calibrate_gate("ROMEO:", 16);  // same prompt, same seed: the same continuation and gate
  EXPECT_EQ(e.evaluate(text, false).token_accuracy, on_prompt);
  std::printf("dense %.4f, gate at 50%% calibrated on the text %.4f, on \"ROMEO:\" %.4f\n", dense, on_text, on_prompt);
  EXPECT_GE(on_prompt, on_text - 0.05);
  EXPECT_GE(on_prompt, dense - 0.05);
}

TEST(Engine, CalibratingAtAnotherBlockSizeThanTheRunningGateIsRefusedAndChangesNothing) {
  Engine e;
  auto c = small_config();
  e.train(text(), c, quick(4));
  e.calibrate_gate(text(), 16, 1);
  Budget b;
  b.gate = {.policy = GatePolicy::Sensing, .active = 0.5, .measurement = MeasurementKind::Pca,
            .recovery = Recovery::Mmse, .clustered = true};
  e.set_budget(b);
  GenerateOptions greedy;
  greedy.max_new_tokens = 8;
  greedy.temperature = 0;
  const auto before = e.generate("To be", greedy).text;
  try {
    e.calibrate_gate(text(), 8, 1);
    ADD_FAILURE() << "calibrating at block 8 under a gate of block 16 was accepted";
  } catch (const Error& err) {
    EXPECT_NE(std::string(err.what()).find("blocks of 16"), std::string::npos) << err.what();
  }
  EXPECT_EQ(e.budget(), b);
  EXPECT_EQ(e.generate("To be", greedy).text, before);  // the same gate, the same calibration
}

TEST(Engine, HighEntropyReprobesTheHeadSupportWithHysteresisAndCooldown) {
  Engine e;
  auto c = small_config();
  c.n_heads = 4;
  e.train(text(), c, quick(10));
  e.calibrate_gate(text(), 16, 1);
  Budget b = e.budget();
  b.gate.head_active = 0.5;
  e.set_budget(b);
  GenerateOptions o;
  o.max_new_tokens = 20;  // within the context: no sliding window
  o.seed = 4;
  const std::string plain = e.generate("To be", o).text;
  auto run = [&](double threshold, int64_t cooldown) {
    Budget r = b;
    r.gate.head_reprobe = threshold;
    r.gate.head_reprobe_cooldown = cooldown;
    e.set_budget(r);
    std::vector<GeneratedToken> toks;
    e.generate("To be", o, [&](const GeneratedToken& t) {
      toks.push_back(t);
      return true;
    });
    e.set_budget(b);
    return toks;
  };
  // Never reached (h ≤ 1): no probes, the same text as without the option.
  auto none = run(1.0, 1);
  for (const auto& t : none) EXPECT_FALSE(t.heads_reprobed);
  // The decision replayed on the run's own entropies: after token i (h_i = H_i / log V), probe when
  // armed, h_i ≥ θ and i + 1 − last ≥ cooldown; re-arm once h < θ·(1 − hysteresis). The probe is
  // charged to token i + 1, which runs on the new support.
  const double logv = std::log(double(e.info().config.vocab_size));
  std::vector<double> h;
  for (const auto& t : none) h.push_back(t.entropy / logv);
  std::vector<double> sorted = h;
  std::sort(sorted.begin(), sorted.end());
  const double theta = sorted[sorted.size() / 2];  // the median: crossed several times
  auto toks = run(theta, 3);
  ASSERT_EQ(toks.size(), 20u);
  bool armed = true;
  int64_t last = 0, probes = 0;
  for (size_t i = 0; i + 1 < toks.size(); ++i) {
    const double hi = toks[i].entropy / logv;
    if (!armed && hi < theta * (1 - b.gate.hysteresis)) armed = true;
    const bool expect = armed && hi >= theta && int64_t(i) + 1 - last >= 3;
    if (expect) armed = false, last = int64_t(i) + 1, ++probes;
    EXPECT_EQ(toks[i + 1].heads_reprobed, expect) << "token " << i + 1;
    if (toks[i + 1].heads_reprobed) {
      EXPECT_GT(toks[i + 1].probe_macs, 0);
      EXPECT_GT(toks[i + 1].macs, 2 * toks[i].macs);  // dozens of probe forwards ride on this token
      for (const auto& layer : toks[i + 1].heads) EXPECT_EQ(layer.size(), 2u);  // still half the heads
    }
  }
  EXPECT_GE(probes, 1);
  // A low threshold that h never drops below by the hysteresis margin probes exactly once.
  auto once = run(1e-6, 5);
  int64_t flagged = 0;
  for (const auto& t : once) flagged += t.heads_reprobed;
  EXPECT_EQ(flagged, 1);
  EXPECT_TRUE(once[5].heads_reprobed);
  // The calibrated support is back after each generation: the same text as before.
  EXPECT_EQ(e.generate("To be", o).text, plain);
  // Out of range settings are clear errors and change nothing.
  Budget bad = b;
  bad.gate.head_reprobe = 1.5;
  EXPECT_THROW(e.set_budget(bad), Error);
  bad = b;
  bad.gate.head_reprobe_cooldown = 0;
  EXPECT_THROW(e.set_budget(bad), Error);
  bad = b;
  bad.gate.head_probes = 1;
  EXPECT_THROW(e.set_budget(bad), Error);
  EXPECT_EQ(e.budget(), b);
}

TEST(Engine, OneMacKnobSplitsComputeBetweenPromptAndGateByMeasurement) {
  Engine e;
  auto c = small_config();
  c.d_ff = 64;  // 4 blocks of 16
  e.train(text(), c, quick(10));
  Budget b;
  b.gate.policy = GatePolicy::Sensing;
  b.gate.active = 0.5;
  b.mac_target = 0.8;
  GenerateOptions o;
  o.max_new_tokens = 12;
  o.seed = 5;
  const std::string prompt = "To be, or not to be";
  // The knob measures its split on a calibration text: without one, a clear error, nothing changed.
  e.set_budget(b);
  try {
    e.generate(prompt, o);
    FAIL() << "generated without a calibration text";
  } catch (const Error& err) {
    EXPECT_NE(std::string(err.what()).find("calibration"), std::string::npos) << err.what();
  }
  EXPECT_EQ(e.budget(), b);
  e.calibrate_gate(text(), 16, 1);
  auto r = e.generate(prompt, o);
  ASSERT_TRUE(r.joint.used);
  EXPECT_TRUE(r.joint.fits);
  EXPECT_LE(r.joint.mac_fraction, 0.8 + 1e-9);
  const auto actives = joint_active_grid(), keeps = joint_keep_grid();
  EXPECT_NE(std::find(actives.begin(), actives.end(), r.joint.active), actives.end());
  EXPECT_NE(std::find(keeps.begin(), keeps.end(), r.joint.prompt_keep), keeps.end());
  EXPECT_EQ(e.budget(), b);  // the engine keeps the target; the split was for that generation
  // The same prompt, the same split and text; a resolved split reproduces the text exactly.
  auto again = e.generate(prompt, o);
  EXPECT_EQ(again.text, r.text);
  EXPECT_EQ(again.joint.active, r.joint.active);
  EXPECT_EQ(again.joint.prompt_keep, r.joint.prompt_keep);
  Budget fixed = b;
  fixed.mac_target = 0;
  fixed.prompt_keep = r.joint.prompt_keep;
  if (r.joint.active >= 1) fixed.gate = GateOptions{};
  else fixed.gate.active = r.joint.active;
  e.set_budget(fixed);
  EXPECT_EQ(e.generate(prompt, o).text, r.text);
  // A lower target never costs more MACs; an unreachable one runs the cheapest split, flagged.
  b.mac_target = 0.5;
  e.set_budget(b);
  auto lower = e.generate(prompt, o);
  EXPECT_LE(lower.joint.mac_fraction, r.joint.mac_fraction + 1e-12);
  b.mac_target = 0.01;
  e.set_budget(b);
  auto floor = e.generate(prompt, o);
  EXPECT_FALSE(floor.joint.fits);
  EXPECT_EQ(floor.joint.active, actives.back());
  EXPECT_EQ(floor.joint.prompt_keep, keeps.back());
  Budget bad = b;
  bad.mac_target = 1.5;
  EXPECT_THROW(e.set_budget(bad), Error);
  EXPECT_EQ(e.budget(), b);
}

TEST(Engine, MacKnobCalibratedOnAShortPromptContinuesItToScore) {
  Engine e;
  auto c = small_config();
  c.d_ff = 64;
  e.train(text(), c, quick(10));
  e.calibrate_gate("To be, or not", 16, 1);  // shorter than one context window: the GUI's case
  Budget b;
  b.gate.policy = GatePolicy::Sensing;
  b.mac_target = 0.85;
  e.set_budget(b);
  GenerateOptions o;
  o.max_new_tokens = 8;
  auto r = e.generate("To be", o);
  ASSERT_TRUE(r.joint.used);
  EXPECT_LE(r.joint.mac_fraction, 0.85 + 1e-9);
  EXPECT_EQ(r.generated_tokens, 8);
  EXPECT_EQ(e.budget(), b);
}
