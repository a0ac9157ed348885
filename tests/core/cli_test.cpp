// End-to-end: the nestscope-cli binary trains a tiny model, evaluates it and generates from it.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "core/io/atomic_file.h"
#include "tests/core/test_util.h"

namespace nestscope::test {

int run_command(const std::string& cmd, std::string* out) {
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return -1;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0)
    if (out) out->append(buf.data(), n);
  const int status = ::pclose(p);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace nestscope::test

using namespace nestscope;
using nlohmann::json;

namespace {
const std::string kCli = NESTSCOPE_CLI;

json run_json(const std::string& args) {
  std::string out;
  const int rc = test::run_command(kCli + " " + args + " 2>/dev/null", &out);
  EXPECT_EQ(rc, 0) << args << "\n" << out;
  auto j = json::parse(out, nullptr, false);
  EXPECT_TRUE(j.is_object()) << out;
  return j;
}
}  // namespace

TEST(Cli, TrainEvalGenerateEndToEnd) {
  test::TempDir dir;
  std::string text;
  for (int i = 0; i < 80; ++i) text += "O Romeo, Romeo! wherefore art thou Romeo?\n";
  write_file_atomic(dir.file("c.txt"), text);
  const auto model = dir.file("m.safetensors");
  auto t = run_json("train --corpus " + dir.file("c.txt") + " --out " + model +
                    " --steps 150 --batch 8 --context 32 --layers 1 --d-model 32 --heads 2 --d-ff 64 --warmup 5"
                    " --lr 3e-3 --json");
  EXPECT_EQ(t["steps"], 150);
  EXPECT_GT(t["token_accuracy"].get<double>(), 0.3);
  auto e = run_json("eval --model " + model + " --corpus " + dir.file("c.txt") + " --json");
  for (const char* key : {"token_accuracy", "loss", "perplexity", "parameters", "tokens"}) EXPECT_TRUE(e.contains(key)) << key;
  EXPECT_NEAR(e["token_accuracy"].get<double>(), t["token_accuracy"].get<double>(), 1e-9);
  EXPECT_NEAR(e["perplexity"].get<double>(), std::exp(e["loss"].get<double>()), 1e-9);
  auto g = run_json("generate --model " + model + " --prompt Romeo --tokens 25 --seed 4 --json");
  EXPECT_EQ(g["generated_tokens"], 25);
  EXPECT_EQ(g["tokens"].size(), 25u);
  EXPECT_EQ(g["text"].get<std::string>().size(), 25u);
  auto g2 = run_json("generate --model " + model + " --prompt Romeo --tokens 25 --seed 4 --json");
  EXPECT_EQ(g2["text"], g["text"]);
}

TEST(Cli, BadInputGivesAMessageAndNonZeroExit) {
  test::TempDir dir;
  std::string out;
  EXPECT_EQ(test::run_command(kCli + " eval --model " + dir.file("none.safetensors") + " --corpus x 2>&1", &out), 1);
  EXPECT_NE(out.find("no such file"), std::string::npos) << out;
  write_file_atomic(dir.file("bad.safetensors"), std::string(100, 'x'));
  out.clear();
  EXPECT_EQ(test::run_command(kCli + " generate --model " + dir.file("bad.safetensors") + " --prompt hi 2>&1", &out), 1);
  EXPECT_NE(out.find("bad.safetensors"), std::string::npos) << out;
  out.clear();
  EXPECT_NE(test::run_command(kCli + " train --corpus " + dir.file("absent.txt") + " --out " + dir.file("o") + " 2>&1", &out), 0);
  EXPECT_NE(out.find("absent.txt"), std::string::npos) << out;
}

TEST(Cli, DefaultModelIsUsedWithoutModelFlag) {
  std::string out;
  const int rc = test::run_command(kCli + " info --json 2>&1", &out);
  if (rc != 0 && out.find("no embedded default model") != std::string::npos) GTEST_SKIP() << out;
  ASSERT_EQ(rc, 0) << out;
  auto j = json::parse(out);
  EXPECT_EQ(j["parameters"], 808448);
  out.clear();
  EXPECT_EQ(test::run_command(kCli + " generate --prompt '' 2>&1", &out), 1);
  EXPECT_NE(out.find("prompt is empty"), std::string::npos) << out;
}

TEST(Cli, WeightsFlagKeepsBfloat16InMemoryAndRefusesOtherValues) {
  std::string out;
  if (test::run_command(kCli + " info --json 2>&1", &out) != 0) GTEST_SKIP() << out;
  EXPECT_EQ(run_json("info --json")["weights"], "f32");
  EXPECT_EQ(run_json("info --weights bf16 --json")["weights"], "bf16");
  // Greedy text from bfloat16 weights: the default model's rounded weights still write Shakespeare.
  const auto g = run_json("generate --weights bf16 --prompt 'ROMEO:' -n 24 -t 0 --json");
  EXPECT_EQ(g["generated_tokens"], 24) << g.dump();
  out.clear();
  EXPECT_EQ(test::run_command(kCli + " info --weights f16 2>&1", &out), 1);
  EXPECT_NE(out.find("weights must be auto, f32 or bf16"), std::string::npos) << out;
}

TEST(Cli, NsnConvertFrontierAndBadRanks) {
  test::TempDir dir;
  std::string text;
  for (int i = 0; i < 80; ++i) text += "O Romeo, Romeo! wherefore art thou Romeo?\n";
  write_file_atomic(dir.file("c.txt"), text);
  const auto dense = dir.file("d.safetensors"), nsn = dir.file("n.safetensors");
  run_json("train --corpus " + dir.file("c.txt") + " --out " + dense +
           " --steps 20 --batch 4 --context 32 --layers 1 --d-model 32 --heads 2 --d-ff 64 --warmup 2 --json");
  auto c = run_json("nsn convert --model " + dense + " --out " + nsn + " --json");
  EXPECT_EQ(c["max_rank"], 32);
  auto f = run_json("nsn frontier --model " + nsn + " --dense " + dense + " --corpus " + dir.file("c.txt") +
                    " --mac-fraction 0.5 --json");
  for (const char* key : {"mac_fraction", "rank", "token_accuracy", "dense_token_accuracy", "accuracy_drop_pp",
                          "top1_agreement", "kl", "ms_per_token", "linear_macs", "parameters"})
    EXPECT_TRUE(f.contains(key)) << key;
  EXPECT_NEAR(f["mac_fraction"].get<double>(), 0.5, 0.05);
  EXPECT_NEAR(f["accuracy_drop_pp"].get<double>(),
              100 * (f["dense_token_accuracy"].get<double>() - f["token_accuracy"].get<double>()), 1e-9);
  auto sweep = run_json("nsn frontier --model " + dense + " --corpus " + dir.file("c.txt") + " --ranks 1,8,32 --rows " +
                        dir.file("rows.csv") + " --json");
  ASSERT_EQ(sweep["rows"].size(), 3u);
  EXPECT_EQ(sweep["rows"][0]["method"], "svd");
  EXPECT_NEAR(sweep["rows"][2]["top1_agreement"].get<double>(), 1.0, 1e-12);
  EXPECT_TRUE(std::filesystem::exists(dir.file("rows.csv")));
  std::string out;
  EXPECT_EQ(test::run_command(kCli + " nsn frontier --model " + nsn + " --corpus " + dir.file("c.txt") +
                                  " --ranks 0,40 2>&1",
                              &out),
            1);
  EXPECT_NE(out.find("outside [1, 32]"), std::string::npos) << out;
}

TEST(Cli, NsnSensitivityAllocationAndMpoConvertFrontier) {
  test::TempDir dir;
  std::string text;
  for (int i = 0; i < 80; ++i) text += "Now is the winter of our discontent, made glorious summer.\n";
  write_file_atomic(dir.file("c.txt"), text);
  const auto dense = dir.file("d.safetensors"), mpo = dir.file("m.safetensors");
  run_json("train --corpus " + dir.file("c.txt") + " --out " + dense +
           " --steps 20 --batch 4 --context 32 --layers 1 --d-model 32 --heads 2 --d-ff 64 --warmup 2 --json");
  auto s = run_json("nsn frontier --model " + dense + " --corpus " + dir.file("c.txt") +
                    " --fractions 0.5 --sensitivity --calibration-windows 2 --json");
  ASSERT_EQ(s["rows"].size(), 2u);
  EXPECT_EQ(s["rows"][1]["allocation"], "sensitivity");
  EXPECT_NEAR(s["rows"][1]["mac_fraction"].get<double>(), 0.5, 0.05);

  auto c = run_json("mpo convert --model " + dense + " --out " + mpo + " --bond 4 --json");
  EXPECT_EQ(c["bond"], 4);
  auto info = run_json("info --model " + mpo + " --json");
  EXPECT_EQ(info["max_bond"], 4);
  EXPECT_EQ(info["parameters"], c["parameters"]);
  auto f = run_json("mpo frontier --model " + mpo + " --dense " + dense + " --corpus " + dir.file("c.txt") +
                    " --bond 2 --json");
  for (const char* key : {"bond", "parameters", "token_accuracy", "dense_token_accuracy", "accuracy_vs_dense",
                          "compression_ratio", "linear_macs", "top1_agreement", "kl", "ms_per_token"})
    EXPECT_TRUE(f.contains(key)) << key;
  EXPECT_EQ(f["method"], "mpo");
  EXPECT_NEAR(f["accuracy_vs_dense"].get<double>(),
              f["token_accuracy"].get<double>() / f["dense_token_accuracy"].get<double>(), 1e-9);
  auto sweep = run_json("mpo frontier --model " + dense + " --corpus " + dir.file("c.txt") + " --bonds 2,16 --json");
  ASSERT_EQ(sweep["rows"].size(), 2u);
  EXPECT_EQ(sweep["rows"][0]["method"], "tt-svd");
  std::string out;
  EXPECT_EQ(test::run_command(kCli + " mpo frontier --model " + mpo + " --corpus " + dir.file("c.txt") +
                                  " --bonds 0 2>&1", &out), 1);
  EXPECT_NE(out.find("outside [1, 4]"), std::string::npos) << out;
  EXPECT_EQ(test::run_command(kCli + " mpo convert --model " + dense + " --out " + mpo + " --bond 0 2>&1", &out), 1);
  EXPECT_NE(out.find("at least 1"), std::string::npos) << out;
  EXPECT_EQ(run_json("info --model " + mpo + " --json")["max_bond"], 4);  // the failed convert left the file

  const auto tuned = dir.file("t.safetensors");
  auto ft = run_json("mpo finetune --model " + mpo + " --corpus " + dir.file("c.txt") + " --out " + tuned +
                     " --steps 6 --batch 4 --warmup 1 --nested --min-bond 2 --buckets 2 --json");
  EXPECT_EQ(ft["bond"], 4);
  ASSERT_EQ(ft["buckets"].size(), 2u);
  EXPECT_GT(ft["buckets"][0]["samples"].get<int>(), 0);
  auto tuned_info = run_json("info --model " + tuned + " --json");
  EXPECT_EQ(tuned_info["training"]["objective"], "mpo-nested-bond");
  EXPECT_EQ(tuned_info["parameters"], c["parameters"]);
}

TEST(Cli, GateFrontierAndRunWithTraces) {
  test::TempDir dir;
  std::string text;
  for (int i = 0; i < 120; ++i) text += "O Romeo, Romeo! wherefore art thou Romeo?\n";
  write_file_atomic(dir.file("c.txt"), text);
  const auto model = dir.file("m.safetensors");
  run_json("train --corpus " + dir.file("c.txt") + " --out " + model +
           " --steps 20 --batch 4 --context 32 --layers 2 --d-model 32 --heads 2 --d-ff 64 --warmup 2 --json");
  auto f = run_json("gate frontier --model " + model + " --corpus " + dir.file("c.txt") +
                    " --active 0.5 --block 8 --measurements 8 --measurement pca --recovery mmse --json");
  for (const char* key : {"active_fraction", "token_accuracy", "dense_token_accuracy", "accuracy_drop_pp", "support_f1",
                          "mlp_mac_fraction", "overhead_fraction", "measurements", "ms_per_token", "kl"})
    EXPECT_TRUE(f.contains(key)) << key;
  EXPECT_EQ(f["policy"], "sensing");
  EXPECT_DOUBLE_EQ(f["active_fraction"].get<double>(), 0.5);
  EXPECT_GE(f["support_f1"].get<double>(), 0.0);
  EXPECT_LE(f["support_f1"].get<double>(), 1.0);
  // The ungated row, then sensing, oracle, static, random.
  ASSERT_EQ(f["rows"].size(), 5u);
  EXPECT_EQ(f["rows"][0]["policy"], "off");
  EXPECT_EQ(f["rows"][2]["policy"], "oracle");
  EXPECT_NEAR(f["accuracy_drop_pp"].get<double>(),
              100 * (f["dense_token_accuracy"].get<double>() - f["token_accuracy"].get<double>()), 1e-9);
  // MACs: measuring (m·(C+N) = 8·96) plus half the blocks (2·32·32), over the dense 2·64·32.
  EXPECT_NEAR(f["mlp_mac_fraction"].get<double>(), (8.0 * 96 + 2 * 32 * 32) / (2 * 64 * 32), 1e-9);

  auto h = run_json("gate frontier --model " + model + " --corpus " + dir.file("c.txt") +
                    " --policies sensing --actives 0.5 --block 8 --head-actives 0.5 --json");
  ASSERT_EQ(h["rows"].size(), 5u);  // off, sensing, then heads by probes, oracle, random
  EXPECT_EQ(h["rows"][2]["policy"], "heads-sensing");
  EXPECT_EQ(h["rows"][3]["policy"], "heads-oracle");
  EXPECT_DOUBLE_EQ(h["rows"][3]["head_support_f1"].get<double>(), 1.0);
  EXPECT_DOUBLE_EQ(h["rows"][2]["attn_mac_fraction"].get<double>(), 0.75);  // k, v whole; q, o half

  auto r = run_json("gate run --model " + model + " --prompt Romeo --tokens 6 --active 0.25 --block 8 --json");
  ASSERT_EQ(r["tokens"].size(), 6u);
  for (const auto& t : r["tokens"]) {
    ASSERT_EQ(t["layers"].size(), 2u);  // one trace per layer
    for (const auto& l : t["layers"]) EXPECT_EQ(l["blocks"].size(), 2u);  // k = 0.25 · 8 blocks
  }
  std::string out;
  EXPECT_EQ(test::run_command(kCli + " gate run --model " + model + " --prompt Romeo --block 0 2>&1", &out), 1);
  EXPECT_NE(out.find("block size 0"), std::string::npos) << out;
}

// `frontier`: a budget file composing mechanisms, the table as JSON, a resumed rerun, the plot
// (when the GUI libraries are built), and clear errors for bad files and flags.
TEST(Cli, FrontierComposesResumesAndPlots) {
  test::TempDir dir;
  std::string text;
  for (int i = 0; i < 80; ++i) text += "O Romeo, Romeo! wherefore art thou Romeo?\n";
  write_file_atomic(dir.file("c.txt"), text);
  const auto model = dir.file("m.safetensors");
  run_json("train --corpus " + dir.file("c.txt") + " --out " + model +
           " --steps 20 --warmup 2 --batch 8 --context 32 --layers 1 --d-model 32 --heads 2 --d-ff 64 --json");
  write_file_atomic(dir.file("b.json"), R"([
    {"method": "dense", "budget": {}},
    {"method": "svd", "label": "r=4", "budget": {"rank": 4, "kind": {"attn": "nsn", "mlp": "nsn"}}},
    {"method": "svd-mlp+tt-svd-attn", "label": "r=8 χ=2", "budget": {"rank": 8, "bond": 2, "kind": {"mlp": "nsn", "attn": "mpo"}}}
  ])");
  const std::string common = "frontier --model " + model + " --budgets " + dir.file("b.json") + " --eval " +
                             dir.file("c.txt") + " --out " + dir.file("r.jsonl") + " --no-latency --json";
  auto j = run_json(common);
  ASSERT_EQ(j["rows"].size(), 3u);
  for (const char* key : {"method", "budget", "macs", "token_accuracy", "ms_per_token", "top1_agreement", "kl",
                          "token_accuracy_ci95", "params", "pareto"})
    EXPECT_TRUE(j["rows"][2].contains(key)) << key;
  EXPECT_EQ(j["rows"][2]["budget"]["kind"]["attn"], "mpo");
  EXPECT_EQ(j["rows"][0]["mac_fraction"], 1.0);
  EXPECT_FALSE(j["rows"][0]["resumed"].get<bool>());
  auto again = run_json(common);
  for (const auto& r : again["rows"]) EXPECT_TRUE(r["resumed"].get<bool>());
  EXPECT_EQ(again["rows"][1]["token_accuracy"], j["rows"][1]["token_accuracy"]);
  std::string out;
#ifdef NESTSCOPE_HAVE_GUI
  EXPECT_EQ(test::run_command(kCli + " " + common + " --plot " + dir.file("f.svg") + " 2>&1", &out), 0) << out;
  EXPECT_NE(read_text_file(dir.file("f.svg")).find("<svg"), std::string::npos);
  out.clear();
#endif
  write_file_atomic(dir.file("bad.json"), R"([{"method": "svd", "budget": {"rank": 4, "kind": {"attn": "lowrank"}}}])");
  EXPECT_EQ(test::run_command(kCli + " frontier --model " + model + " --budgets " + dir.file("bad.json") + " 2>&1", &out), 1);
  EXPECT_NE(out.find("entry 1"), std::string::npos) << out;
  EXPECT_NE(out.find("unknown parameterization 'lowrank'"), std::string::npos) << out;
  out.clear();
  EXPECT_NE(test::run_command(kCli + " frontier --model " + model + " 2>&1", &out), 0);
  EXPECT_NE(out.find("exactly one of --budgets FILE and --grid NAME"), std::string::npos) << out;
  out.clear();
  EXPECT_EQ(test::run_command(kCli + " frontier --model " + model + " --grid nope 2>&1", &out), 1);
  EXPECT_NE(out.find("unknown grid 'nope'"), std::string::npos) << out;
}
