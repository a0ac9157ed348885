// The one-budget frontier engine: composed budgets, MAC accounting, variants and their cache,
// resumable sweeps, budget files.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <nlohmann/json.hpp>

#include "core/eval/calibrate.h"
#include "core/model/macs.h"
#include "core/engine/engine.h"
#include "core/error.h"
#include "core/eval/frontier.h"
#include "core/io/atomic_file.h"
#include "core/io/cache.h"
#include "core/layers/mpo_linear.h"
#include "core/model/budget_json.h"
#include "core/model/transformer.h"
#include "core/variants/variants.h"
#include "core/text/char_tokenizer.h"
#include "core/train/trainer.h"
#include "tests/core/test_util.h"

using namespace nestscope;

namespace {

// Wide enough for MLP blocks of 16 (the gate) and two-site MPO chains.
ModelConfig config() {
  ModelConfig c = test::tiny_config();
  c.d_model = 32;
  c.d_ff = 64;
  c.context = 24;
  return c;
}

std::string text() { return test::hamlet_text(); }

// A trained-for-a-moment checkpoint of config() in `dir` (real loading, real hash).
std::string checkpoint(const test::TempDir& dir) {
  Engine e;
  TrainOptions o;
  o.steps = 4;
  o.batch = 4;
  o.warmup = 1;
  e.train(text(), config(), o);
  const std::string path = dir.file("tiny.safetensors");
  e.save(path);
  return path;
}

Budget composed(std::map<std::string, LinearKind> kinds, int64_t rank = 0, int64_t bond = 0) {
  Budget b;
  b.kind = std::move(kinds);
  b.rank = rank;
  b.bond = bond;
  return b;
}

// Contracts one input row through an MPO chain with plain loops, left to right, counting every
// multiply-add as it is performed: the independent count (and value) for MpoLinear.
int64_t loop_contract(const MpoLinear& m, const std::vector<float>& x, std::vector<float>* y) {
  std::vector<float> state = x;  // [A = outputs done][D = bond][R = inputs left]
  int64_t A = 1, D = 1, R = m.in_features(), count = 0;
  for (size_t l = 0; l < size_t(m.sites()); ++l) {
    const auto G = m.core(l).contiguous();  // [D, o, i, D']
    const int64_t o = G.size(1), i = G.size(2), D2 = G.size(3), R2 = R / i;
    auto g = G.accessor<float, 4>();
    std::vector<float> next(size_t(A * o * D2 * R2), 0.f);
    for (int64_t a = 0; a < A; ++a)
      for (int64_t oo = 0; oo < o; ++oo)
        for (int64_t d2 = 0; d2 < D2; ++d2)
          for (int64_t r = 0; r < R2; ++r) {
            float acc = 0;
            for (int64_t d = 0; d < D; ++d)
              for (int64_t ii = 0; ii < i; ++ii) {
                acc += state[size_t((a * D + d) * R + ii * R2 + r)] * g[d][oo][ii][d2];
                ++count;
              }
            next[size_t(((a * o + oo) * D2 + d2) * R2 + r)] = acc;
          }
    state = std::move(next);
    A *= o, D = D2, R = R2;
  }
  *y = state;
  return count;
}

// The same count from the right end (inputs consumed last site first), without the values.
int64_t right_to_left_count(const MpoLinear& m) {
  int64_t A = 1, R = m.in_features(), count = 0;
  const auto d = m.bond_dims();
  for (int64_t l = m.sites() - 1; l >= 0; --l) {
    const int64_t o = m.out_factors()[size_t(l)], i = m.in_factors()[size_t(l)];
    R /= i;
    count += A * o * d[size_t(l)] * R * d[size_t(l + 1)] * i;
    A *= o;
  }
  return count;
}

}  // namespace

TEST(Budget, JsonRoundTripsAndNamesBadFields) {
  Budget b = composed({{"attn", LinearKind::Mpo}, {"mlp.up", LinearKind::Nsn}}, 12, 3);
  b.layer_rank["blk.1.mlp.up"] = 7;
  b.gate.policy = GatePolicy::Sensing;
  b.gate.active = 0.25;
  b.gate.measurement = MeasurementKind::Pca;
  b.gate.head_active = 0.5;
  EXPECT_EQ(budget_from_json(budget_to_json(b)), b);
  EXPECT_EQ(budget_to_json(budget_from_json(budget_to_json(b))), budget_to_json(b));
  EXPECT_EQ(budget_from_json("{}"), Budget{});
  // Defaults are left out, so fields added later keep old texts (and sweep keys) unchanged.
  EXPECT_EQ(budget_to_json(Budget{}), "{}");
  Budget r;
  r.rank = 16;
  r.gate.head_active = 0.5;
  EXPECT_EQ(budget_to_json(r), R"({"gate":{"head_active":0.5},"rank":16})");
  r.mac_target = 0.7;
  r.gate.head_reprobe = 0.5;
  EXPECT_EQ(budget_from_json(budget_to_json(r)), r);
  auto msg = [](const std::string& j) {
    try {
      budget_from_json(j);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(msg(R"({"rnak": 3})").find("unknown key 'rnak'"), std::string::npos);
  EXPECT_NE(msg(R"({"rank": "high"})").find("'rank'"), std::string::npos);
  EXPECT_NE(msg(R"({"kind": {"attn": "lowrank"}})").find("unknown parameterization 'lowrank'"), std::string::npos);
  EXPECT_NE(msg(R"({"gate": {"policy": "magic"}})").find("magic"), std::string::npos);
  EXPECT_NE(msg("{rank: 3").find("not valid JSON"), std::string::npos);
}

TEST(Budget, ComposedBudgetAtFullSettingsEqualsDense) {
  torch::manual_seed(3);
  Gpt model(config());
  build_variants(model, {LinearKind::Nsn, LinearKind::Mpo});
  auto idx = torch::randint(0, config().vocab_size, {2, 20}, torch::kInt64);
  torch::NoGradGuard no_grad;
  const auto dense = model->forward(idx);
  for (const auto& kinds : std::vector<std::map<std::string, LinearKind>>{
           {{"attn", LinearKind::Nsn}, {"mlp", LinearKind::Mpo}, {"head", LinearKind::Mpo}},
           {{"attn", LinearKind::Mpo}, {"mlp", LinearKind::Nsn}},
           {{"attn.q", LinearKind::Mpo}, {"attn", LinearKind::Nsn}, {"mlp.down", LinearKind::Nsn}}}) {
    model->apply_budget(composed(kinds));
    const auto y = model->forward(idx);
    EXPECT_LT(((y - dense).abs().max() / dense.abs().max()).item<double>(), 1e-4);
  }
  // Truncating really changes the function, and the own layers come back with Budget{}.
  model->apply_budget(composed({{"attn", LinearKind::Nsn}, {"mlp", LinearKind::Mpo}}, 2, 2));
  EXPECT_GT((model->forward(idx) - dense).abs().max().item<double>(), 1e-3);
  model->apply_budget(Budget{});
  EXPECT_TRUE(torch::equal(model->forward(idx), dense));
  // Checkpoint tensors are the own ones whatever runs.
  int64_t own = 0;
  for (const auto& p : model->parameters()) own += p.numel();
  EXPECT_EQ(own, config().parameter_count());
}

TEST(Budget, KindsWithoutVariantsOrUnknownFamiliesAreClearErrors) {
  Gpt model(config());
  const auto before = linear_macs_per_token(*model);
  try {
    model->apply_budget(composed({{"mlp", LinearKind::Mpo}}));
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no mpo variant"), std::string::npos) << e.what();
  }
  build_variants(model, {LinearKind::Nsn});
  EXPECT_THROW(model->apply_budget(composed({{"attention", LinearKind::Nsn}})), Error);
  EXPECT_THROW(model->apply_budget(composed({{"attn", LinearKind::Nsn}}, /*rank=*/999)), Error);
  EXPECT_THROW(model->apply_budget(composed({{"attn", LinearKind::Nsn}}, 0, /*bond=*/2)), Error);  // no MPO layer
  EXPECT_EQ(linear_macs_per_token(*model), before);
}

TEST(Macs, MpoCountMatchesALoopContraction) {
  torch::manual_seed(5);
  MpoLinear m(32, 64, {4, 4, 4}, {2, 4, 4}, 1 << 10, false, 0.05);
  m.load_from_dense(torch::randn({64, 32}), torch::Tensor());
  torch::NoGradGuard no_grad;
  for (int64_t chi : std::vector<int64_t>{1, 2, 3, 8, m.max_bond()}) {
    m.set_bond(chi);
    auto x = torch::randn({32});
    std::vector<float> y;
    const int64_t ltr = loop_contract(m, std::vector<float>(x.data_ptr<float>(), x.data_ptr<float>() + 32), &y);
    EXPECT_EQ(m.macs(), std::min(ltr, right_to_left_count(m))) << "χ=" << chi;
    auto ref = m.forward(x.unsqueeze(0)).squeeze(0);
    EXPECT_TRUE(torch::allclose(torch::tensor(y), ref, 1e-4, 1e-4)) << "χ=" << chi;
  }
}

TEST(Macs, ModelCountMatchesAnIndependentCount) {
  torch::manual_seed(7);
  const auto c = config();
  Gpt model(c);
  build_variants(model, {LinearKind::Nsn, LinearKind::Mpo});
  const int64_t C = c.d_model, N = c.d_ff, V = c.vocab_size, H = c.n_heads, hd = C / H, T = 17;
  // Dense: 4 C² + 2 C N per layer, scores 2·T·C, an untied head C·V.
  EXPECT_EQ(macs_per_token(*model, T), c.n_layers * (4 * C * C + 2 * C * N + 2 * T * C) + C * V);
  // NSN attention at r = 5, MPO MLP at χ = 2: r·(in + out) per NSN layer; the MPO layers by loops.
  model->apply_budget(composed({{"attn", LinearKind::Nsn}, {"mlp", LinearKind::Mpo}}, 5, 2));
  int64_t expected = C * V;
  for (const auto& [name, p] : model->projections()) {
    if (name == "head") continue;
    if (name.find(".attn.") != std::string::npos) {
      expected += 5 * (C + C);
    } else {
      auto* mpo = dynamic_cast<MpoLinear*>(p.get());
      ASSERT_NE(mpo, nullptr) << name;
      std::vector<float> y;
      expected += std::min(loop_contract(*mpo, std::vector<float>(size_t(mpo->in_features()), 1.f), &y),
                           right_to_left_count(*mpo));
    }
  }
  expected += c.n_layers * 2 * T * C;
  EXPECT_EQ(macs_per_token(*model, T), expected);
  int64_t parts = 0;
  for (const auto& [part, n] : mac_breakdown(*model, T)) parts += n;
  EXPECT_EQ(parts, expected);
  // Half the heads and a static gate keeping 2 of 4 blocks of 16: gathered q / o rows for one head,
  // scores for one head, and 2·k·B·C in each MLP.
  model->apply_budget(Budget{});
  auto idx = torch::randint(0, V, {1, 20}, torch::kInt64);
  calibrate_gate(model, mlp_samples(model, idx), 16);
  model->set_head_importance(torch::rand({c.n_layers, H}));
  Budget g;
  g.gate.policy = GatePolicy::Static;
  g.gate.active = 0.5;
  g.gate.block = 16;
  g.gate.head_active = 0.5;
  model->apply_budget(g);
  EXPECT_EQ(macs_per_token(*model, T),
            c.n_layers * (1 * hd * C + 2 * C * C + 2 * T * 1 * hd + 1 * hd * C + 2 * 2 * 16 * C) + C * V);
  EXPECT_THROW(mac_breakdown(*model, c.context + 1), Error);
}

TEST(Variants, CachedInTheUsersCacheAndRebuiltWhenStale) {
  test::TempDir dir;
  const std::string cache = dir.file("user-cache");
  ::setenv("NESTSCOPE_CACHE_DIR", cache.c_str(), 1);
  const auto path = checkpoint(dir);
  Engine a;
  a.load(path);
  const auto first = a.prepare_variants({LinearKind::Nsn, LinearKind::Mpo});
  EXPECT_GT(first.built, 0);
  EXPECT_EQ(first.from_cache, 0);
  ASSERT_TRUE(std::filesystem::exists(first.cache_path)) << first.cache_note;
  EXPECT_EQ(first.cache_path.rfind(cache + "/variants/", 0), 0u);  // not next to the checkpoint
  const Budget b = composed({{"attn", LinearKind::Mpo}, {"mlp", LinearKind::Nsn}}, 6, 3);
  a.set_budget(b);
  const auto ref = a.generate("To be", {30, 0.0, 0, 0}).text;

  Engine again;  // reopening needs no SVD: every variant comes from the cache
  again.load(path);
  const auto second = again.prepare_variants({LinearKind::Nsn, LinearKind::Mpo});
  EXPECT_EQ(second.built, 0);
  EXPECT_EQ(second.from_cache, first.built);
  again.set_budget(b);
  EXPECT_EQ(again.generate("To be", {30, 0.0, 0, 0}).text, ref);

  write_file_atomic(first.cache_path, "garbage");  // a corrupt cache is rebuilt, not an error
  Engine third;
  third.load(path);
  const auto rebuilt = third.prepare_variants({LinearKind::Nsn, LinearKind::Mpo});
  EXPECT_EQ(rebuilt.built, first.built);
  EXPECT_NE(rebuilt.cache_note.find("not used"), std::string::npos);
  third.set_budget(b);
  EXPECT_EQ(third.generate("To be", {30, 0.0, 0, 0}).text, ref);
  ::unsetenv("NESTSCOPE_CACHE_DIR");
}

TEST(Variants, AReadOnlyModelFolderGetsNothingWrittenAndTheCacheKeepsItsCap) {
  test::TempDir dir;
  const std::string models = dir.file("models"), cache = dir.file("cache");
  std::filesystem::create_directories(models);
  const auto path = checkpoint(dir);
  std::filesystem::rename(path, models + "/model.safetensors");
  const auto listing = [&] {
    std::vector<std::string> names;
    for (const auto& e : std::filesystem::directory_iterator(models)) names.push_back(e.path().filename().string());
    return names;
  };
  const auto before = listing();
  std::filesystem::permissions(models, std::filesystem::perms::owner_read | std::filesystem::perms::owner_exec |
                                           std::filesystem::perms::group_read | std::filesystem::perms::others_read);
  ::setenv("NESTSCOPE_CACHE_DIR", cache.c_str(), 1);
  Engine e;
  e.load(models + "/model.safetensors");
  const auto rep = e.prepare_variants({LinearKind::Nsn, LinearKind::Mpo});
  e.set_budget(composed({{"attn", LinearKind::Nsn}, {"mlp", LinearKind::Nsn}}, 4));
  EXPECT_FALSE(e.generate("To be", {10, 0.0, 0, 0}).text.empty());
  EXPECT_EQ(listing(), before);  // nothing written next to the checkpoint
  ASSERT_TRUE(std::filesystem::exists(rep.cache_path)) << rep.cache_note;
  const auto bytes = cache_size_bytes();
  EXPECT_EQ(bytes, int64_t(std::filesystem::file_size(rep.cache_path)));
  // An older file beyond the cap goes first; the one just written stays.
  const std::string old = cache + "/frontier/0000.jsonl";
  std::filesystem::create_directories(cache + "/frontier");
  write_file_atomic(old, std::string(1000, 'x'));
  std::filesystem::last_write_time(old, std::filesystem::file_time_type::clock::now() - std::chrono::hours(1));
  EXPECT_EQ(trim_cache(bytes, rep.cache_path), 1000);
  EXPECT_FALSE(std::filesystem::exists(old));
  EXPECT_TRUE(std::filesystem::exists(rep.cache_path));
  EXPECT_EQ(clear_cache(), bytes);
  EXPECT_EQ(cache_size_bytes(), 0);
  std::filesystem::permissions(models, std::filesystem::perms::owner_all);
  ::unsetenv("NESTSCOPE_CACHE_DIR");
}

TEST(Sweep, ResumesAfterACancelWithoutRecomputing) {
  test::TempDir dir;
  const auto path = checkpoint(dir);
  Engine e;
  e.load(path);
  std::vector<NamedBudget> budgets = {
      {"dense", "dense", Budget{}},
      {"svd", "r=4", composed({{"attn", LinearKind::Nsn}, {"mlp", LinearKind::Nsn}}, 4)},
      {"tt-svd", "χ=2", composed({{"attn", LinearKind::Mpo}, {"mlp", LinearKind::Mpo}}, 0, 2)},
  };
  SweepOptions o;
  o.text = text();
  o.measure_latency = false;
  o.results = dir.file("rows.jsonl");
  auto stop_after_one = [](const Progress& p) { return p.done < 1; };
  EXPECT_THROW(e.sweep(budgets, o, stop_after_one), Cancelled);
  ASSERT_EQ(read_sweep_rows(o.results).size(), 1u);

  // A crash mid-write leaves a torn line: it is dropped, the finished row is kept.
  { std::ofstream(o.results, std::ios::app) << R"({"key":"abc","model":)"; }
  std::string note;
  const auto rows = e.sweep(budgets, o, {}, &note);
  EXPECT_NE(note.find("incomplete last line"), std::string::npos);
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_TRUE(rows[0].resumed);
  EXPECT_FALSE(rows[1].resumed);
  EXPECT_FALSE(rows[2].resumed);
  EXPECT_EQ(read_sweep_rows(o.results).size(), 3u);
  // The dense row is the full model: agreement 1, KL 0; truncations cost accuracy and MACs.
  EXPECT_DOUBLE_EQ(rows[0].eval.top1_agreement, 1.0);
  EXPECT_NEAR(rows[0].eval.kl, 0.0, 1e-6);
  EXPECT_DOUBLE_EQ(rows[0].mac_fraction, 1.0);
  EXPECT_LT(rows[1].macs, rows[0].macs);
  EXPECT_LT(rows[1].eval.top1_agreement, 1.0);
  EXPECT_GT(rows[0].eval.accuracy_ci95, 0.0);

  // Everything done: a rerun computes nothing and appends nothing.
  const auto bytes = read_file_bytes(o.results);
  int64_t calls = 0;
  const auto again = e.sweep(budgets, o, [&](const Progress&) { return ++calls, true; });
  for (const auto& r : again) EXPECT_TRUE(r.resumed);
  EXPECT_EQ(read_file_bytes(o.results), bytes);
  EXPECT_EQ(again[1].eval.token_accuracy, rows[1].eval.token_accuracy);
  EXPECT_EQ(e.budget(), Budget{});
}

TEST(Sweep, WithoutATextScoresContinuationsAndGatesCompose) {
  test::TempDir dir;
  Engine e;
  e.load(checkpoint(dir));
  Budget gated = composed({{"attn", LinearKind::Nsn}}, 8);
  gated.gate.policy = GatePolicy::Oracle;
  gated.gate.active = 0.5;
  SweepOptions o;
  o.continuations = 3;
  o.measure_latency = false;
  const auto rows = e.sweep({{"dense", "", Budget{}}, {"svd-attn+gate", "r=8 50%", gated}}, o);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].evaluated_on, "continuations");
  EXPECT_EQ(rows[0].eval.windows, 3);
  EXPECT_DOUBLE_EQ(rows[0].eval.top1_agreement, 1.0);
  // The oracle gate computes the full up-projection (N·C) to rank the blocks, then runs the k
  // chosen ones (2·k·B·C): at 50% that is exactly the dense MLP's 2·N·C. It is the upper bound.
  EXPECT_NEAR(rows[1].mlp_mac_fraction, 1.0, 1e-9);
  EXPECT_LT(rows[1].macs, rows[0].macs);
}

TEST(Sweep, GatePresetCountsAttentionFromTheModelUnderGroupedQueryAttention) {
  Engine e;
  ModelConfig c = config();
  c.n_heads = 4;
  c.n_kv_heads = 2;  // k and v are half as wide as q and o
  TrainOptions o;
  o.steps = 2;
  o.batch = 4;
  o.warmup = 1;
  e.train(text(), c, o);
  GateGridOptions g;
  g.policies = {GatePolicy::Sensing};
  g.actives = {0.5};
  g.head_actives = {0.5};
  const auto budgets = e.gate_grid(g);
  ASSERT_EQ(budgets.size(), 5u);  // ungated, sensing 50%, then heads ranked by probes, oracle, random
  EXPECT_EQ(budgets[3].budget.gate.head_ranking, HeadRanking::Oracle);
  SweepOptions s;
  s.text = text();
  s.measure_latency = false;
  s.gate_details = true;
  const auto rows = e.sweep(budgets, s);
  ASSERT_EQ(rows.size(), 5u);
  // Two of four heads: q and o (C×C each) at half, k and v (C×C/2 each) whole: 2/3 of attention's
  // projection MACs. A count that assumes four equal projections would say (2 + 2·½)/4 = 3/4.
  for (size_t i = 2; i < 5; ++i) EXPECT_NEAR(rows[i].attn_mac_fraction, 2.0 / 3.0, 1e-12) << budgets[i].label;
  EXPECT_DOUBLE_EQ(rows[0].attn_mac_fraction, 1.0);
  EXPECT_DOUBLE_EQ(rows[3].head_f1, 1.0);  // the oracle's own heads
  EXPECT_EQ(rows[1].head_f1, -1.0);        // no head gating on the MLP row
  EXPECT_GE(rows[1].support_f1, 0.0);
  EXPECT_EQ(e.budget(), Budget{});  // the sweep put the engine's budget back
}

TEST(ForwardHook, NamedIntermediatesReachTheHookAndAScopedHookPutsThePreviousOneBack) {
  Gpt model(config());
  torch::NoGradGuard no_grad;
  auto idx = torch::randint(0, config().vocab_size, {2, 6}, torch::kInt64);
  const auto plain = model->forward(idx);
  std::vector<std::string> seen;
  model->set_hook([&](std::string_view name, int64_t layer, const torch::Tensor& t) {
    seen.push_back(std::string(name) + "@" + std::to_string(layer) + ":" + std::to_string(t.dim()));
    return t;
  });
  EXPECT_LT((model->forward(idx) - plain).abs().max().item<double>(), 1e-6);  // reading changes nothing
  const std::vector<std::string> expected = {"attn.heads@0:4", "mlp.in@0:3", "mlp.hidden@0:3",
                                             "attn.heads@1:4", "mlp.in@1:3", "mlp.hidden@1:3"};
  EXPECT_EQ(seen, expected);
  {
    // Zeroing the MLP activations leaves attention alone: the output changes.
    ScopedHook zero(model, [](std::string_view name, int64_t, const torch::Tensor& t) {
      return name == "mlp.hidden" ? torch::zeros_like(t) : t;
    });
    EXPECT_GT((model->forward(idx) - plain).abs().max().item<double>(), 1e-4);
  }
  seen.clear();
  model->forward(idx);
  EXPECT_EQ(seen.size(), expected.size());  // the first hook is back
  // With a hook the raw decode step stands aside (it has no intermediates to show).
  auto cache = model->make_cache(1);
  model->forward(idx.narrow(0, 0, 1).narrow(1, 0, 5), &cache);
  const int64_t raw = model->raw_decode_steps;
  model->forward(idx.narrow(0, 0, 1).narrow(1, 5, 1), &cache);
  EXPECT_EQ(model->raw_decode_steps, raw);
  model->set_hook({});
  EXPECT_FALSE(model->hook());
}

TEST(Sweep, AFailingBudgetIsRecordedAndTheOthersFinish) {
  test::TempDir dir;
  Engine e;
  e.load(checkpoint(dir));
  SweepOptions o;
  o.text = text();
  o.max_windows = 2;
  o.results = dir.file("rows.jsonl");
  const std::vector<NamedBudget> budgets = {{"dense", "", Budget{}},
                                            {"svd", "r=999", composed({{"attn", LinearKind::Nsn}}, 999)},
                                            {"svd", "r=8", composed({{"attn", LinearKind::Nsn}}, 8)}};
  const auto rows = e.sweep(budgets, o);
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_TRUE(rows[0].error.empty()) << rows[0].error;
  EXPECT_NE(rows[1].error.find("rank 999"), std::string::npos) << rows[1].error;
  EXPECT_TRUE(rows[2].error.empty()) << rows[2].error;
  EXPECT_GT(rows[0].eval.tokens, 0);
  EXPECT_EQ(rows[2].eval.tokens, rows[0].eval.tokens);
  EXPECT_GT(rows[2].eval.kl, 0);  // a truncated model, really evaluated
  EXPECT_LT(rows[2].macs, rows[0].macs);
  // The file records the failure too; fronts skip it and a rerun tries it again (it fails again,
  // the two measured rows are reused).
  const auto saved = read_sweep_rows(o.results);
  ASSERT_EQ(saved.size(), 3u);
  EXPECT_EQ(saved[1].error, rows[1].error);
  for (size_t i : pareto_front(saved)) EXPECT_NE(i, 1u);
  const auto again = e.sweep(budgets, o);
  EXPECT_TRUE(again[0].resumed && again[2].resumed);
  EXPECT_FALSE(again[1].resumed);
  EXPECT_FALSE(again[1].error.empty());

  auto file_error = [&](const std::string& body) {
    write_file_atomic(dir.file("b.json"), body);
    try {
      read_budget_file(dir.file("b.json"));
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(file_error("[").find("not valid JSON"), std::string::npos);
  EXPECT_NE(file_error("{}").find("JSON array"), std::string::npos);
  EXPECT_NE(file_error(R"([{"method": "a", "budget": {}}, {"budget": {}}])").find("entry 2"), std::string::npos);
  EXPECT_NE(file_error(R"([{"method": "a", "budget": {"bond": 1.5}}])").find("'bond'"), std::string::npos);
  EXPECT_NE(file_error(R"([{"method": "a", "budgte": {}}])").find("unknown key 'budgte'"), std::string::npos);
  EXPECT_NE(file_error("").find("JSON"), std::string::npos);
  EXPECT_THROW(read_budget_file(dir.file("absent.json")), Error);
  EXPECT_EQ(read_budget_file((write_file_atomic(dir.file("ok.json"), R"([{"method": "nsn", "label": "r=8",
      "budget": {"rank": 8, "kind": {"attn": "nsn", "mlp": "nsn"}}}])"), dir.file("ok.json")))[0].budget.rank, 8);

  // A results file that is not ours is an error, and is left as it was.
  write_file_atomic(o.results, "not json\n");
  EXPECT_THROW(e.sweep({{"dense", "", Budget{}}}, o), Error);
  EXPECT_EQ(read_text_file(o.results), "not json\n");
}

// A grid of twelve budgets of config(): NSN ranks, MPO bonds, a composition and the dense point.
std::vector<NamedBudget> twelve_budgets() {
  std::vector<NamedBudget> g = {{"dense", "dense", Budget{}}};
  for (int64_t r : {2, 4, 6, 8, 12, 16})
    g.push_back({"svd", "r=" + std::to_string(r), composed({{"attn", LinearKind::Nsn}, {"mlp", LinearKind::Nsn}}, r)});
  for (int64_t chi : {2, 4, 8})
    g.push_back({"tt-svd", "χ=" + std::to_string(chi), composed({{"attn", LinearKind::Mpo}, {"mlp", LinearKind::Mpo}}, 0, chi)});
  g.push_back({"svd-attn", "r=4", composed({{"attn", LinearKind::Nsn}}, 4)});
  g.push_back({"svd-mlp+tt-attn", "r=4 χ=4", composed({{"attn", LinearKind::Mpo}, {"mlp", LinearKind::Nsn}}, 4, 4)});
  return g;
}

TEST(ShardedSweep, ShardsPartitionTheGridAndTheirMergeIsTheUnshardedRun) {
  test::TempDir dir;
  Engine e;
  e.load(checkpoint(dir));
  const auto grid = twelve_budgets();
  SweepOptions o;
  o.text = text();
  o.max_windows = 2;
  o.measure_latency = false;
  o.results = dir.file("all.jsonl");
  const auto whole = e.sweep(grid, o);
  ASSERT_EQ(whole.size(), 12u);

  // Three shards, each its own file: every budget in exactly one of them.
  std::vector<std::string> files;
  std::multiset<std::string> seen;
  for (int64_t i = 0; i < 3; ++i) {
    o.shard = parse_shard(std::to_string(i) + "/3");
    o.results = dir.file("shard-" + std::to_string(i) + ".jsonl");
    for (const auto& r : e.sweep(grid, o)) {
      seen.insert(r.key);
      EXPECT_TRUE(in_shard(o.shard, r.method, r.label, r.budget_json));
      EXPECT_EQ(r.evaluation, whole.front().evaluation);
    }
    files.push_back(o.results);
  }
  EXPECT_EQ(seen.size(), 12u);
  for (const auto& r : whole) EXPECT_EQ(seen.count(r.key), 1u) << r.method << " " << r.label;
  // A budget's shard is its own, not its place in the grid: with the grid grown at the front,
  // shard 1 reuses every row it had and computes at most the new budget.
  auto grown = grid;
  grown.insert(grown.begin(), {"svd", "r=3", composed({{"attn", LinearKind::Nsn}, {"mlp", LinearKind::Nsn}}, 3)});
  o.shard = parse_shard("1/3");
  o.results = dir.file("grown-1.jsonl");
  std::filesystem::copy_file(files[1], o.results);
  int64_t fresh = 0;
  for (const auto& r : e.sweep(grown, o)) fresh += !r.resumed;
  EXPECT_LE(fresh, 1);
  EXPECT_EQ(int64_t(read_sweep_rows(o.results).size()), int64_t(read_sweep_rows(files[1]).size()) + fresh);

  // Merged (in any file order, one file twice): the unsharded run's rows, in its order.
  const auto merged = merge_sweep_files({files[2], files[0], files[1], files[0]});
  ASSERT_EQ(merged.rows.size(), whole.size());
  EXPECT_EQ(merged.duplicates, int64_t(read_sweep_rows(files[0]).size()));
  for (size_t i = 0; i < whole.size(); ++i) {
    EXPECT_EQ(merged.rows[i].key, whole[i].key) << i;
    EXPECT_EQ(merged.rows[i].grid_index, int64_t(i));
    EXPECT_DOUBLE_EQ(merged.rows[i].eval.token_accuracy, whole[i].eval.token_accuracy) << whole[i].label;
    EXPECT_DOUBLE_EQ(merged.rows[i].eval.top1_agreement, whole[i].eval.top1_agreement) << whole[i].label;
    EXPECT_EQ(merged.rows[i].macs, whole[i].macs);
  }
  EXPECT_EQ(pareto_front(merged.rows), pareto_front(whole));

  // Not shards of one sweep: refused with the file named, and no file is touched.
  auto merge_error = [&](const std::vector<std::string>& f) {
    try {
      merge_sweep_files(f);
    } catch (const Error& err) {
      return std::string(err.what());
    }
    return std::string("no error");
  };
  const std::string shard0 = read_text_file(files[0]);
  o.shard = parse_shard("0/3");
  o.text = text() + text();  // other evaluation data
  o.results = dir.file("other-text.jsonl");
  e.sweep(grid, o);
  EXPECT_NE(merge_error({files[1], o.results}).find("other-text.jsonl"), std::string::npos);
  EXPECT_NE(merge_error({files[1], o.results}).find("scored on other data"), std::string::npos);
  Engine other;  // another model on the same data
  TrainOptions t;
  t.steps = 2;
  t.batch = 4;
  t.warmup = 1;
  t.seed = 7;
  other.train(text(), config(), t);
  other.save(dir.file("other.safetensors"));
  other.load(dir.file("other.safetensors"));
  o.text = text();
  o.results = dir.file("other-model.jsonl");
  other.sweep(grid, o);
  EXPECT_NE(merge_error({files[1], o.results}).find("not shards of one sweep"), std::string::npos);
  write_file_atomic(dir.file("torn.jsonl"), shard0 + R"({"key":"abc","model":)");
  EXPECT_NE(merge_error({files[1], dir.file("torn.jsonl")}).find("incomplete"), std::string::npos);
  EXPECT_EQ(read_text_file(dir.file("torn.jsonl")), shard0 + R"({"key":"abc","model":)");
  // Opening a torn file to look at it reads the complete rows and leaves it as it was.
  std::string note;
  EXPECT_EQ(read_sweep_rows(dir.file("torn.jsonl"), &note, TornLine::Skip).size(), read_sweep_rows(files[0]).size());
  EXPECT_NE(note.find("not read"), std::string::npos);
  EXPECT_EQ(read_text_file(dir.file("torn.jsonl")), shard0 + R"({"key":"abc","model":)");
  EXPECT_EQ(read_text_file(files[0]), shard0);

  for (const char* bad : {"3/3", "-1/2", "1/0", "a/b", "1", "1/2/3", ""})
    EXPECT_THROW(parse_shard(bad), Error) << bad;
  EXPECT_TRUE(parse_shard("0/1").all());
}

TEST(ShardedSweep, TheCliShardsAndMergesIntoOneTable) {
  test::TempDir dir;
  const std::string model = checkpoint(dir);
  std::string budgets = "[";
  for (const auto& b : twelve_budgets())
    budgets += std::string(budgets.size() > 1 ? "," : "") + R"({"method":")" + b.method + R"(","label":")" + b.label +
               R"(","budget":)" + budget_to_json(b.budget) + "}";
  write_file_atomic(dir.file("budgets.json"), budgets + "]");
  write_file_atomic(dir.file("eval.txt"), text());
  const std::string cli = std::string(NESTSCOPE_CLI) + " frontier -m " + model + " --budgets " +
                          dir.file("budgets.json") + " --eval " + dir.file("eval.txt") + " --windows 2 --no-latency";
  std::string log;
  ASSERT_EQ(test::run_command(cli + " -o " + dir.file("all.jsonl") + " --json 2>/dev/null", &log), 0);
  const auto whole = nlohmann::json::parse(log);
  std::string merge = std::string(NESTSCOPE_CLI) + " frontier merge --json -o " + dir.file("merged.jsonl");
  for (int i = 0; i < 2; ++i) {
    const std::string f = dir.file("s" + std::to_string(i) + ".jsonl");
    log.clear();
    ASSERT_EQ(test::run_command(cli + " --shard " + std::to_string(i) + "/2 -o " + f + " 2>&1", &log), 0) << log;
    EXPECT_NE(log.find("shard " + std::to_string(i) + "/2 of 12 budgets"), std::string::npos) << log;
    merge += " " + f;
  }
  log.clear();
  ASSERT_EQ(test::run_command(merge + " 2>/dev/null", &log), 0) << log;
  const auto merged = nlohmann::json::parse(log);
  ASSERT_EQ(merged["rows"].size(), 12u);
  for (size_t i = 0; i < 12; ++i) {
    EXPECT_EQ(merged["rows"][i]["key"], whole["rows"][i]["key"]);
    EXPECT_EQ(merged["rows"][i]["token_accuracy"], whole["rows"][i]["token_accuracy"]);
    EXPECT_EQ(merged["rows"][i]["pareto"], whole["rows"][i]["pareto"]);
  }
  EXPECT_EQ(merged["fits"], whole["fits"]);
  EXPECT_EQ(read_sweep_rows(dir.file("merged.jsonl")).size(), 12u);  // what the explorer opens
  log.clear();
  EXPECT_NE(test::run_command(std::string(NESTSCOPE_CLI) + " frontier -m " + model + " --grid default --shard 2/2 2>&1", &log), 0);
  EXPECT_NE(log.find("0 <= i < n"), std::string::npos) << log;
}

TEST(Frontier, ParetoFrontAndLeaveOneOutFit) {
  std::vector<SweepRow> rows;
  auto row = [](std::string method, int64_t macs, double acc) {
    SweepRow r;
    r.method = std::move(method);
    r.macs = macs;
    r.eval.token_accuracy = acc;
    return r;
  };
  // A method exactly quadratic in log(MACs) is predicted perfectly from the other points.
  for (int64_t m : {100, 200, 400, 800, 1600}) {
    const double x = std::log(double(m));
    rows.push_back(row("smooth", m, 0.1 + 0.02 * x - 0.001 * x * x));
  }
  rows.push_back(row("noisy", 150, 0.9));
  rows.push_back(row("noisy", 300, 0.1));
  rows.push_back(row("noisy", 900, 0.5));
  const auto fits = fit_frontiers(rows);
  ASSERT_EQ(fits.size(), 2u);
  EXPECT_EQ(fits[1].method, "smooth");
  EXPECT_LT(fits[1].loo_mae, 1e-9);
  EXPECT_GT(fits[0].loo_mae, 0.1);
  const auto front = pareto_front(rows);
  ASSERT_EQ(front.size(), 2u);  // 100 (the cheapest) and 150 at 0.9; nothing dearer beats 0.9
  EXPECT_EQ(rows[front[0]].macs, 100);
  EXPECT_EQ(rows[front[1]].macs, 150);
}

TEST(PromptCompression, KeepsTheSinkTheLatestAndTheMostAttendedSlots) {
  torch::manual_seed(11);
  Gpt model(config());
  torch::NoGradGuard no_grad;
  auto x = torch::randint(0, config().vocab_size, {2, 20}, torch::kInt64);
  const auto full = model->forward(x);
  auto run = [&](double keep, int64_t recent, std::vector<std::vector<int64_t>>* kept, KvCache* out) {
    auto cache = model->make_cache(2);
    cache.key_mass = torch::zeros({2, config().context});
    auto a = model->forward(x.narrow(1, 0, 10), &cache);
    const auto mass = cache.key_mass.clone();
    const auto k0 = cache.k[0].clone();
    *kept = model->compress_cache(cache, keep, recent);
    for (int64_t b = 0; b < 2; ++b)  // the kept slots moved to the front, in order
      for (size_t j = 0; j < (*kept)[size_t(b)].size(); ++j)
        EXPECT_TRUE(torch::equal(cache.k[0][b].select(1, int64_t(j)), k0[b].select(1, (*kept)[size_t(b)][j])));
    auto y = torch::cat({a, model->forward(x.narrow(1, 10, 10), &cache)}, 1);
    *out = cache;
    return std::make_pair(y, mass);
  };
  std::vector<std::vector<int64_t>> kept;
  KvCache cache;
  // Keep everything: the chunked, compressed path is the plain forward.
  auto [y1, m1] = run(1.0, 4, &kept, &cache);
  EXPECT_LT((y1 - full).abs().max().item<double>(), 1e-5);
  EXPECT_EQ(kept[0], (std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}));
  // Keep half with 2 recent: slot 0, slots 8 and 9, and the 2 most attended of slots 1..7.
  auto [y2, mass] = run(0.5, 2, &kept, &cache);
  EXPECT_EQ(cache.length, 5 + 10);
  EXPECT_EQ(cache.position, 20);
  for (int64_t b = 0; b < 2; ++b) {
    auto middle = mass[b].narrow(0, 1, 7);
    auto top = std::get<1>(middle.topk(2)) + 1;
    std::vector<int64_t> expected = {0, top[0].item<int64_t>(), top[1].item<int64_t>(), 8, 9};
    std::sort(expected.begin(), expected.end());
    EXPECT_EQ(kept[size_t(b)], expected) << "row " << b;
  }
  EXPECT_LT((y2.narrow(1, 0, 10) - full.narrow(1, 0, 10)).abs().max().item<double>(), 1e-5);  // the prompt's own
  EXPECT_GT((y2.narrow(1, 10, 10) - full.narrow(1, 10, 10)).abs().max().item<double>(), 1e-4);
  // Fewer keys, fewer attention MACs for the next token.
  EXPECT_LT(macs_per_token(*model, cache.length), macs_per_token(*model, 20));
}

TEST(PromptCompression, BudgetGenerateAndSweep) {
  test::TempDir dir;
  Engine e;
  e.load(checkpoint(dir));
  for (double bad : {0.0, 1.5, std::nan("")}) {
    Budget b;
    b.prompt_keep = bad;
    EXPECT_THROW(e.set_budget(b), Error) << bad;
  }
  EXPECT_EQ(e.budget(), Budget{});
  const std::string prompt = "To be, or not to be:";  // 20 characters
  std::vector<int64_t> first_macs;
  std::vector<std::vector<int64_t>> dense_macs;
  for (double keep : {1.0, 0.4}) {
    Budget b;
    b.prompt_keep = keep;
    e.set_budget(b);
    std::vector<int64_t> macs;
    dense_macs.emplace_back();
    auto r = e.generate(prompt, {5, 0.0, 0, 0}, [&](const GeneratedToken& t) {
      dense_macs.back().push_back(t.dense_macs);
      return macs.push_back(t.macs), true;
    });
    EXPECT_EQ(r.generated_tokens, 5);
    first_macs.push_back(macs[1]);
    // The dense model on the same steps: equal to the full budget's, and above a dropped prompt's.
    for (size_t i = 0; i < macs.size(); ++i) {
      if (keep == 1.0) EXPECT_EQ(macs[i], dense_macs.back()[i]) << i;
      else EXPECT_LT(macs[i], dense_macs.back()[i]) << i;
      if (i > 0) EXPECT_GT(dense_macs.back()[i], dense_macs.back()[i - 1]) << "one more key each step";
    }
    if (keep < 1) {
      ASSERT_EQ(r.kept_prompt_tokens.size(), 8u);  // ceil(0.4 · 20)
      EXPECT_EQ(r.kept_prompt_tokens.front(), 0);
      EXPECT_EQ(r.kept_prompt_tokens.back(), 19);
    } else {
      EXPECT_TRUE(r.kept_prompt_tokens.empty());
    }
  }
  EXPECT_LT(first_macs[1], first_macs[0]);
  EXPECT_EQ(dense_macs[0], dense_macs[1]);  // the dense model keeps every prompt token
  e.set_budget(Budget{});
  SweepOptions o;
  o.text = text();
  o.measure_latency = false;
  Budget half;
  half.prompt_keep = 0.5;
  const auto rows = e.sweep({{"dense", "", Budget{}}, {"prompt", "keep 50%", half}}, o);
  EXPECT_LT(rows[1].macs, rows[0].macs);
  EXPECT_GT(rows[1].eval.kl, 0.0);              // dropped keys change the second halves
  EXPECT_GT(rows[1].eval.top1_agreement, 0.5);  // the first half of every window is untouched
}

TEST(LayerView, SpectrumReconstructionAndChainOfOneProjection) {
  test::TempDir dir;
  Engine e;
  e.load(checkpoint(dir));
  const auto names = e.projection_names();
  ASSERT_EQ(names.front(), "blk.0.attn.q");
  const auto v = e.layer_view("blk.1.mlp.up", 5, 3);
  EXPECT_EQ(v.rows, 64);
  EXPECT_EQ(v.cols, 32);
  ASSERT_EQ(v.singular_values.size(), 32u);
  EXPECT_TRUE(std::is_sorted(v.singular_values.rbegin(), v.singular_values.rend()));
  // Eckart–Young: the rank-r error is exactly the dropped energy.
  EXPECT_NEAR(v.rank_error, std::sqrt(1 - v.energy_retained), 1e-6);
  EXPECT_EQ(v.weight.size(), size_t(64 * 32));
  EXPECT_EQ(v.bond, 3);
  for (size_t l = 1; l + 1 < v.bond_dims.size(); ++l) EXPECT_LE(v.bond_dims[l], 3);
  EXPECT_LT(v.mpo_params, 64 * 32);
  EXPECT_GT(v.bond_error, 0.0);
  const auto full = e.layer_view("blk.1.mlp.up", 0, 0);
  EXPECT_NEAR(full.rank_error, 0.0, 1e-6);
  EXPECT_NEAR(full.bond_error, 0.0, 1e-5);
  EXPECT_THROW(e.layer_view("blk.9.mlp.up", 4, 2), Error);
  EXPECT_THROW(e.layer_view("blk.1.mlp.up", 33, 2), Error);
  EXPECT_THROW(e.layer_view("blk.1.mlp.up", 4, 100000), Error);
  EXPECT_EQ(e.budget(), Budget{});
}

TEST(Ablation, HeadsAndNeuronBlocksForcedOffMatchTheirReferences) {
  torch::manual_seed(13);
  const auto c = config();
  Gpt model(c);
  torch::NoGradGuard no_grad;
  auto idx = torch::randint(0, c.vocab_size, {2, 12}, torch::kInt64);
  const auto full = model->forward(idx);
  // Heads: the same as knocking them out with the probe masks.
  Budget b;
  b.heads_off = {{0, 1}, {1, 0}};
  model->apply_budget(b);
  const auto ablated = model->forward(idx);
  EXPECT_GT((ablated - full).abs().max().item<double>(), 1e-4);
  model->apply_budget(Budget{});
  auto masks = torch::ones({2, c.n_layers, c.n_heads});
  masks.index_put_({torch::indexing::Slice(), 0, 1}, 0);
  masks.index_put_({torch::indexing::Slice(), 1, 0}, 0);
  model->set_hook(head_mask_hook(masks));
  EXPECT_LT((model->forward(idx) - ablated).abs().max().item<double>(), 1e-5);
  model->set_hook({});
  // Neuron block 2 of layer 1: the same as zeroing those neurons' up rows and bias.
  Budget nb;
  nb.blocks_off = {{1, 2}};
  model->apply_budget(nb);
  const auto off = model->forward(idx);
  Gpt copy(c);
  auto src = model->named_parameters();
  for (auto& p : copy->named_parameters()) p.value().copy_(src[p.key()]);
  auto up = copy->projections()[size_t(6 + 4)].second;  // blk.1.mlp.up (a copy: projections() returns a new vector)
  for (auto& p : up->named_parameters()) p.value().narrow(0, 32, 16).zero_();
  EXPECT_LT((copy->forward(idx) - off).abs().max().item<double>(), 1e-5);
  // Through the gate (oracle, every block kept) the ablation holds too.
  model->apply_budget(Budget{});
  calibrate_gate(model, mlp_samples(model, idx), 16);
  nb.gate.policy = GatePolicy::Oracle;
  nb.gate.active = 1.0;
  model->apply_budget(nb);
  EXPECT_LT((model->forward(idx) - off).abs().max().item<double>(), 1e-4);
  // Out of range: a clear error, nothing changed.
  Budget bad;
  bad.heads_off = {{0, c.n_heads}};
  EXPECT_THROW(model->apply_budget(bad), Error);
  bad = Budget{};
  bad.blocks_off = {{c.n_layers, 0}};
  EXPECT_THROW(model->apply_budget(bad), Error);
  EXPECT_EQ(budget_from_json(budget_to_json(b)).heads_off, b.heads_off);
  EXPECT_THROW(budget_from_json(R"({"heads_off": [[0]]})"), Error);
}

TEST(GateAwareTraining, KeepsTheOracleBlocksInTheLoopAndOnlyThen) {
  torch::manual_seed(17);
  const auto c = config();
  Gpt model(c);
  auto idx = torch::randint(0, c.vocab_size, {2, 12}, torch::kInt64);
  const auto full = model->forward(idx).detach();  // autograd on, support off: the plain model
  model->set_hook(gate_aware_hook(model, 0.5, 16));
  const auto masked = model->forward(idx);
  EXPECT_GT((masked.detach() - full).abs().max().item<double>(), 1e-4);
  masked.sum().backward();  // gradients flow through the kept blocks
  int64_t with_grad = 0;
  for (const auto& p : model->parameters()) with_grad += p.grad().defined();
  EXPECT_GT(with_grad, 0);
  // The same as the oracle gate at 50% in checkpoint order (no autograd).
  {
    torch::NoGradGuard no_grad;
    model->set_hook({});
    calibrate_gate(model, mlp_samples(model, idx), 16);
    Budget b;
    b.gate.policy = GatePolicy::Oracle;
    b.gate.active = 0.5;
    b.gate.block = 16;
    model->apply_budget(b);
    EXPECT_LT((model->forward(idx) - masked.detach()).abs().max().item<double>(), 1e-4);
  }
  EXPECT_THROW(gate_aware_hook(model, 0.5, 0), Error);
  TrainOptions o;
  o.mlp_block_active = 0;
  EXPECT_THROW(o.validate(), Error);
}

TEST(GateAwareTraining, SensingAwareKeepsTheSensingGatesBlocks) {
  torch::manual_seed(19);
  auto c = config();
  c.n_layers = 1;  // the MLP's input does not depend on the MLP's own support
  Gpt model(c);
  auto idx = torch::randint(0, c.vocab_size, {2, 24}, torch::kInt64);
  const int64_t m = 8;
  model->set_hook(gate_aware_hook(model, 0.5, 16, m));
  const auto sensed = model->forward(idx);
  sensed.sum().backward();  // gradients still flow through the kept blocks
  int64_t with_grad = 0;
  for (const auto& p : model->parameters()) with_grad += p.grad().defined();
  EXPECT_GT(with_grad, 0);
  model->set_hook(gate_aware_hook(model, 0.5, 16));
  const auto oracle = model->forward(idx).detach();
  EXPECT_GT((sensed.detach() - oracle).abs().max().item<double>(), 1e-4);  // m = 8 < C = 32: some misses
  torch::NoGradGuard no_grad;
  // The sensing gate (PCA + MMSE, m measurements) calibrated on the same rows picks the same blocks.
  model->set_hook({});
  calibrate_gate(model, mlp_samples(model, idx), 16);
  Budget b;
  b.gate.policy = GatePolicy::Sensing;
  b.gate.active = 0.5;
  b.gate.block = 16;
  b.gate.measurements = m;
  b.gate.measurement = MeasurementKind::Pca;
  b.gate.recovery = Recovery::Mmse;
  model->apply_budget(b);
  EXPECT_LT((model->forward(idx) - sensed.detach()).abs().max().item<double>(), 1e-4);
  // m ≥ C measurements recover the pre-activation exactly: the oracle's blocks.
  model->apply_budget(Budget{});
  {
    at::AutoGradMode grad(true);
    model->set_hook(gate_aware_hook(model, 0.5, 16, c.d_model));
    EXPECT_LT((model->forward(idx).detach() - oracle).abs().max().item<double>(), 1e-4);
  }
  EXPECT_THROW(gate_aware_hook(model, 0.5, 16, -1), Error);
  TrainOptions o;
  o.mlp_block_sensing = -2;
  EXPECT_THROW(o.validate(), Error);
  o.mlp_block_sensing = 32;  // with every block kept there is nothing to pick
  EXPECT_THROW(o.validate(), Error);
  o.mlp_block_active = 0.5;
  EXPECT_NO_THROW(o.validate());
}

TEST(HeadAwareTraining, EverySequenceRunsExactlyKRandomHeadsAndOnlyUnderAutograd) {
  torch::manual_seed(23);
  auto c = config();
  c.n_layers = 1;
  c.n_heads = 4;
  Gpt model(c);
  auto idx = torch::randint(0, c.vocab_size, {5, 12}, torch::kInt64);
  model->set_hook(random_heads_hook(0.5));  // 2 of 4 heads per sequence
  const auto trained = model->forward(idx).detach();
  torch::NoGradGuard no_grad;
  const auto full = model->forward(idx);  // no autograd: every head runs
  EXPECT_GT((trained - full).abs().max().item<double>(), 1e-4);
  // Each sequence equals the model with exactly one pair of heads knocked in.
  std::vector<std::vector<float>> pairs;
  for (int a = 0; a < 4; ++a)
    for (int b = a + 1; b < 4; ++b) {
      std::vector<float> m(4, 0.f);
      m[size_t(a)] = m[size_t(b)] = 1.f;
      pairs.push_back(m);
    }
  std::set<int> seen;
  for (int64_t s = 0; s < idx.size(0); ++s) {
    int matches = 0;
    for (size_t p = 0; p < pairs.size(); ++p) {
      model->set_hook(head_mask_hook(torch::tensor(pairs[p]).view({1, 1, 4})));
      if ((model->forward(idx.narrow(0, s, 1)) - trained.narrow(0, s, 1)).abs().max().item<double>() < 1e-4) {
        ++matches;
        seen.insert(int(p));
      }
    }
    model->set_hook({});
    EXPECT_EQ(matches, 1) << "sequence " << s;
  }
  EXPECT_GT(seen.size(), 1u);  // the draws differ between sequences
  model->set_hook({});
  EXPECT_THROW(random_heads_hook(0), Error);
  TrainOptions o;
  o.head_active = 1.5;
  EXPECT_THROW(o.validate(), Error);
}

TEST(HeadAwareTraining, ModelWideDrawsFollowTheImportanceWithOneHeadPerLayerAtLeast) {
  torch::manual_seed(29);
  // Layer 0's heads matter far more than layer 1's; heads 1 and 2 of layer 0 the most.
  const auto imp = torch::tensor({{1.0, 8.0, 6.0, 2.0}, {0.1, 0.3, 0.2, 0.05}}, torch::kFloat64);
  // No noise: every sequence keeps exactly the gate's model-wide support.
  const auto exact = sample_head_masks(imp, 0.5, 0.0, 3);
  ASSERT_EQ(exact.sizes(), (std::vector<int64_t>{3, 2, 4}));
  const auto want = torch::tensor({{0.f, 1.f, 1.f, 1.f}, {0.f, 1.f, 0.f, 0.f}});
  for (int64_t b = 0; b < 3; ++b) EXPECT_TRUE(torch::equal(exact[b], want)) << exact[b];
  // With noise: always 4 of 8 heads and at least one per layer; neighbours of that support come
  // up too, the important heads most often.
  const auto noisy = sample_head_masks(imp, 0.5, 1.0, 400);
  EXPECT_TRUE(torch::equal(noisy.sum({1, 2}), torch::full({400}, 4.f)));
  EXPECT_TRUE((noisy.sum(2) >= 1).all().item<bool>());
  const auto freq = noisy.mean(0);  // [2, 4]
  EXPECT_GT(freq[0][1].item<double>(), 0.9);
  EXPECT_GT(freq[0][1].item<double>(), freq[0][0].item<double>());
  EXPECT_GT(freq[0][0].item<double>(), 0.0);  // not one fixed set
  EXPECT_GT(freq[1][1].item<double>(), freq[1][3].item<double>());
  EXPECT_THROW(sample_head_masks(imp - 1.0, 0.5, 0.0, 1), Error);  // importance must be positive
  TrainOptions o;
  o.head_noise = -1;
  EXPECT_THROW(o.validate(), Error);
}

TEST(HeadAwareTraining, ModelWideTrainingRunsEndToEndAndLeavesEveryHeadOn) {
  std::string text;
  for (int i = 0; i < 60; ++i) text += "to be or not to be, that is the question.\n";
  const auto tok = CharTokenizer::from_corpus(text);
  auto c = config();
  c.vocab_size = tok.vocab_size();
  Gpt model(c);
  const Corpus corpus = make_corpus(tok, text);
  TrainOptions o;
  o.steps = 3;
  o.batch = 4;
  o.warmup = 1;
  o.head_active = 0.5;
  o.head_global = true;
  o.head_reprobe_every = 2;
  const auto r = train_model(model, corpus, o);
  EXPECT_TRUE(std::isfinite(r.validation.loss));
  torch::NoGradGuard no_grad;  // afterwards: no masks left, the full model runs
  auto idx = torch::randint(0, c.vocab_size, {1, 8}, torch::kInt64);
  EXPECT_NO_THROW(model->forward(idx));
  EXPECT_FALSE(model->hook());  // the training hooks are gone
}

TEST(Ablation, ForcedOnUnitsRunWhateverTheGateOrTheHeadSupportSays) {
  torch::manual_seed(19);
  const auto c = config();  // d_ff 64: 4 blocks of 16
  Gpt model(c);
  torch::NoGradGuard no_grad;
  auto idx = torch::randint(0, c.vocab_size, {1, 12}, torch::kInt64);
  calibrate_gate(model, mlp_samples(model, idx), 16);
  model->set_head_importance(torch::tensor({{4.0, 3.0}, {1.0, 2.0}}, torch::kFloat64));
  Budget b;
  b.gate.policy = GatePolicy::Random;
  b.gate.active = 0.25;  // one block of four per token
  b.gate.block = 16;
  b.gate.head_active = 0.5;  // one head per layer: head 0 in layer 0, head 1 in layer 1
  b.blocks_on = {{0, 3}};
  b.heads_on = {{1, 0}};
  model->apply_budget(b);
  EXPECT_EQ(model->active_heads(), (std::vector<std::vector<int64_t>>{{0}, {0, 1}}));
  std::vector<std::vector<MlpGateTrace>> sink;
  model->set_gate_trace(&sink);
  model->forward(idx);
  model->set_gate_trace(nullptr);
  for (const auto& t : sink[0]) {
    EXPECT_TRUE(std::binary_search(t.blocks.begin(), t.blocks.end(), 3));
    EXPECT_LE(t.blocks.size(), 2u);
  }
  for (const auto& t : sink[1]) EXPECT_EQ(t.blocks.size(), 1u);
  // Out of range, or blocks forced on with the gate off: clear errors.
  Budget bad = b;
  bad.blocks_on = {{0, 4}};
  EXPECT_THROW(model->apply_budget(bad), Error);
  bad = Budget{};
  bad.blocks_on = {{0, 1}};
  EXPECT_THROW(model->apply_budget(bad), Error);
  EXPECT_EQ(budget_from_json(budget_to_json(b)).blocks_on, b.blocks_on);
  EXPECT_EQ(budget_from_json(budget_to_json(b)).heads_on, b.heads_on);
}
