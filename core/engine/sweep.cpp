// Engine::sweep: the one frontier engine — every mechanism, composition and preset is a grid of
// budgets scored here, one row type, MACs from the model's own count.
#include <chrono>
#include <cmath>
#include <filesystem>
#include <set>

#include "core/model/macs.h"
#include "core/engine/engine_impl.h"
#include "core/eval/metrics.h"
#include "core/io/atomic_file.h"
#include "core/io/hf_model.h"
#include "core/eval/rank_allocation.h"
#include "core/gate/block_recovery.h"
#include "core/eval/head_probe.h"
#include "core/gate/mlp_gate.h"
#include "core/model/sampler.h"
#include "core/train/corpus.h"

namespace nestscope {

namespace {

// `count` sequences of one context each, sampled (temperature 1) from the model at its current
// budget, concatenated, plus one token so every window has a next-token target.
std::vector<int64_t> sample_continuations(Gpt& model, int64_t count, uint64_t seed) {
  const auto& cfg = model->config();
  std::vector<int64_t> out;
  Sampler sampler({1.0, 0, seed});
  std::mt19937_64 rng(seed);
  for (int64_t s = 0; s <= count; ++s) {
    const int64_t id = int64_t(rng() % uint64_t(cfg.vocab_size));  // a random first token
    const auto seq = s == count ? std::vector<int64_t>{id} : extend_by_sampling(model, {id}, cfg.context, sampler);
    out.insert(out.end(), seq.begin(), seq.end());
  }
  return out;
}

}  // namespace

std::vector<int64_t> extend_by_sampling(Gpt& model, std::vector<int64_t> tokens, int64_t length, Sampler& sampler) {
  check(!tokens.empty() && length <= model->config().context + 1,
        "sampling: needs a first token and at most one context plus one");
  torch::NoGradGuard no_grad;
  const auto dev = model->tok_emb->weight.device();
  if (int64_t(tokens.size()) >= length) return tokens;
  auto cache = model->make_cache(1);
  auto feed = torch::tensor(tokens, torch::kInt64).view({1, -1}).to(dev);
  while (int64_t(tokens.size()) < length) {
    auto logits = model->forward(feed, &cache, /*last_only=*/true).select(1, -1).reshape({-1}).to(torch::kCPU, torch::kFloat32).contiguous();
    tokens.push_back(sampler.next(std::vector<float>(logits.data_ptr<float>(), logits.data_ptr<float>() + logits.numel())).id);
    feed = torch::full({1, 1}, tokens.back(), torch::kInt64).to(dev);
  }
  return tokens;
}

namespace {

// What every budget is scored on, and the gate calibrated on: the validation split of the text
// and its training split, or continuations of the full model (so a model without an evaluation
// text still gets a frontier); `fingerprint` names it in the resume keys.
struct SweepData {
  std::vector<int64_t> tokens, calibration;
  std::string evaluated_on, fingerprint;
  Gpt* reference = nullptr;  // SweepOptions::reference_model, loaded
};

SweepData sweep_data(Gpt& model, const Tokenizer& tokenizer, const SweepOptions& o) {
  SweepData d;
  if (!o.text.empty()) {
    if (o.validation_split) {
      auto corpus = make_corpus(tokenizer, o.text, kTrainFraction);
      d.tokens = std::move(corpus.validation);
      d.calibration = std::move(corpus.train);
    } else {
      d.tokens = tokenizer.encode(o.text);
      d.calibration = d.tokens;
    }
    d.evaluated_on = "text";
    d.fingerprint = "text:" + content_hash(o.text.data(), o.text.size()) + (o.validation_split ? ":val" : ":all");
  } else {
    check(o.continuations >= 1, "sweep: no evaluation text and no continuations asked");
    d.tokens = sample_continuations(model, o.continuations, o.seed);
    d.calibration = d.tokens;
    d.evaluated_on = "continuations";
    d.fingerprint = "continuations:" + std::to_string(o.continuations) + ":" + std::to_string(o.seed);
  }
  d.fingerprint += ":w" + std::to_string(o.max_windows) + ":c" + std::to_string(o.calibration_windows);
  return d;
}

// The gate's calibration for the rows of one ungated base budget, block and seed, and the head
// rankings a row may ask for (GateOptions::head_ranking), the oracle's computed once when asked.
struct GateCalibrationState {
  std::string signature;
  Budget base;                   // the ungated budget calibrated at
  torch::Tensor probed, oracle;  // [L, H]

  void ensure(Gpt& model, const NamedBudget& nb, const SweepData& d, const SweepOptions& o) {
    const auto& g = nb.budget.gate;
    Budget base = nb.budget;
    base.gate = GateOptions{};
    const int64_t block = gate_block(g.block, model->config().d_ff);
    const std::string sig = budget_to_json(base) + "|" + std::to_string(block) + "|" + std::to_string(g.seed);
    if (sig == signature) return;
    this->base = base;
    model->apply_budget(base);
    calibrate_on_tokens(model, d.calibration, model->config().context, g.block, g.seed, o.calibration_windows,
                        g.head_probes);
    probed = model->head_importance().clone();
    oracle = torch::Tensor();
    signature = sig;
  }
  const torch::Tensor& oracle_importance(Gpt& model, const SweepData& d) {
    if (oracle.defined()) return oracle;
    const int64_t T = model->config().context;
    check(int64_t(d.tokens.size()) >= T, "sweep: the oracle head ranking needs one whole scored window");
    auto first = torch::tensor(std::vector<int64_t>(d.tokens.begin(), d.tokens.begin() + T), torch::kInt64)
                     .unsqueeze(0)
                     .to(model->tok_emb->weight.device());
    model->apply_budget(base);  // every head, the MLP ungated
    oracle = knockout_heads(model, first);
    return oracle;
  }
  // Sets the model's head importance for `g` (before its budget is applied).
  void rank_heads(Gpt& model, const GateOptions& g, const SweepData& d) {
    if (g.head_active >= 1 || !probed.defined()) return;
    if (g.head_ranking == HeadRanking::Probed) {
      model->set_head_importance(probed);
    } else if (g.head_ranking == HeadRanking::Oracle) {
      model->set_head_importance(oracle_importance(model, d));
    } else {
      torch::manual_seed(int64_t(g.seed));
      model->set_head_importance(torch::rand({probed.size(0), probed.size(1)}, torch::kFloat64));
    }
  }
  // Per-layer head-support F1 of the row's heads against the oracle's at the same fraction.
  double head_f1(Gpt& model, const GateOptions& g, const SweepData& d) {
    const auto kept = head_support(model->head_importance(), g.head_active, g.head_global);
    const auto best = head_support(oracle_importance(model, d), g.head_active, g.head_global);
    double f1 = 0;
    for (size_t l = 0; l < kept.size(); ++l) f1 += support_f1(kept[l], best[l]);
    return f1 / double(kept.size());
  }
};

// Attention projection MACs per token (q, k, v, o of every layer) at the model's current budget,
// from the model's own count (grouped-query and gathered heads included).
int64_t attention_projection_macs(Gpt& model, int64_t context) {
  int64_t macs = 0;
  for (const auto& [part, n] : mac_breakdown(*model, context)) {
    const auto dot = part.rfind('.');
    const std::string tail = dot == std::string::npos ? part : part.substr(dot + 1);
    if (part.find(".attn.") != std::string::npos && (tail == "q" || tail == "k" || tail == "v" || tail == "o"))
      macs += n;
  }
  return macs;
}

// The first decode step's keys at full context: under prompt compression the last token of a
// window attends to the kept half plus the rest.
int64_t keys_at(const Budget& b, int64_t T) {
  const int64_t P = T / 2;
  return b.prompt_keep < 1 ? std::clamp<int64_t>(int64_t(std::ceil(b.prompt_keep * double(P) - 1e-9)), 1, P) + (T - P) : T;
}

// One row of a sweep: calibrates the gate when the budget needs it, applies the budget and scores
// it. Fills everything but the dense reference and the latency; throws Error on a budget this model
// cannot run.
void evaluate_row(Gpt& model, SweepRow& row, const NamedBudget& nb, GateCalibrationState& calib, const SweepData& data,
                  const SweepOptions& o, const ProgressFn& progress) {
  const int64_t T = model->config().context;
  const bool gated = nb.budget.gate.policy != GatePolicy::Off || nb.budget.gate.head_active < 1;
  if (gated || nb.budget.mac_target > 0) calib.ensure(model, nb, data, o);
  // The joint MAC knob: the split for a window's shape (first half prompt, second half new).
  Budget eff = nb.budget;
  if (nb.budget.mac_target > 0) {
    const auto scored = score_joint_candidates(model, data.calibration, nb.budget);
    eff = with_joint_choice(nb.budget, choose_joint_split(model, scored, nb.budget, nb.budget.mac_target, T / 2, T - T / 2));
    row.resolved_json = budget_to_json(eff);
  }
  const auto& g = eff.gate;
  if (o.gate_details && g.head_active < 1) calib.oracle_importance(model, data);  // before the row's budget
  calib.rank_heads(model, g, data);
  model->apply_budget(eff);
  row.evaluated_on = data.evaluated_on;
  row.linear_macs = linear_macs_per_token(*model);
  row.parameters = active_parameter_count(*model);
  GateStats stats;
  if (g.policy != GatePolicy::Off) model->set_gate_stats(&stats);
  const Budget full{};
  row.eval = evaluate_tokens(model, data.tokens, o.max_windows, kEvalBatch, progress, &full, &eff, data.reference);
  model->set_gate_stats(nullptr);
  // MACs at full context; a gated MLP counts what it really spent per token on this text.
  const int64_t keys = keys_at(eff, T);
  int64_t macs = g.policy == GatePolicy::Off ? macs_per_token(*model, keys) : macs_without_gated_mlp(*model, keys);
  if (g.policy != GatePolicy::Off && stats.rows > 0) {
    macs += int64_t(std::llround(double(model->config().n_layers) * stats.macs / double(stats.rows)));
    row.mlp_mac_fraction = stats.macs / stats.dense_macs;
  }
  row.macs = macs;
  if (o.gate_details) {
    row.support_f1 = stats.f1_rows > 0 ? stats.f1 / double(stats.f1_rows) : -1;
    row.overhead_fraction = stats.rows > 0 ? stats.overhead_macs / stats.dense_macs : 0;
    row.head_f1 = g.head_active < 1 ? calib.head_f1(model, g, data) : -1;
  }
}

}  // namespace

std::vector<SweepRow> Engine::sweep(const std::vector<NamedBudget>& grid, const SweepOptions& o,
                                    const ProgressFn& progress, std::string* note) {
  auto& m = impl_->need();
  check(!grid.empty(), "sweep: no budgets to evaluate");
  // This run's share of the grid (all of it unless sharded), each budget with its grid position.
  std::vector<NamedBudget> budgets;
  std::vector<int64_t> grid_index;
  for (size_t i = 0; i < grid.size(); ++i)
    if (in_shard(o.shard, grid[i].method, grid[i].label, budget_to_json(grid[i].budget))) {
      budgets.push_back(grid[i]);
      grid_index.push_back(int64_t(i));
    }
  if (budgets.empty()) {
    // An empty results file all the same: a merge can tell this shard from one that never ran.
    if (!o.results.empty() && !std::filesystem::exists(o.results)) write_file_atomic(o.results, "");
    if (note)
      *note = "shard " + std::to_string(o.shard.index) + "/" + std::to_string(o.shard.count) + " holds none of the " +
              std::to_string(grid.size()) + " budgets";
    return {};
  }
  auto& model = m.model;
  const int64_t T = m.config.context;
  ModelScope scope(*impl_);
  scope.keep_head_importance();

  // Variants are built when a row needs them and freed after the last row that does (the
  // engine's own budget keeps its own), so a sweep holds at most what one stretch of rows uses.
  // A budget that cannot run becomes a row with its error; the others still run.
  std::vector<VariantNeeds> needs(budgets.size());
  for (size_t i = 0; i < budgets.size(); ++i) needs[i] = impl_->needs_of(budgets[i].budget);
  const VariantNeeds engine_needs = impl_->needs_of(impl_->budget);
  auto release_after = [&](size_t i) {
    VariantNeeds keep = engine_needs;
    for (size_t j = i + 1; j < budgets.size(); ++j) keep.insert(keep.end(), needs[j].begin(), needs[j].end());
    release_variants(model, keep);
  };
  model->apply_budget(Budget{});

  SweepData data = sweep_data(model, *m.tokenizer, o);
  std::optional<LoadedModel> reference;
  if (!o.reference_model.empty()) {
    reference = is_hf_folder(o.reference_model) ? import_hf_folder(o.reference_model) : load_checkpoint(o.reference_model);
    check(reference->tokenizer->to_json() == m.tokenizer->to_json(),
          "the reference " + o.reference_model + " has a different tokenizer from the model");
    reference->model->to(model->tok_emb->weight.device());
    reference->model->eval();
    data.reference = &reference->model;
    data.fingerprint += "|reference=" + (reference->hash.empty() ? reference->source : reference->hash);
  }
  const std::string model_id = m.hash.empty() ? m.source : m.hash;
  const int64_t dense_macs = macs_per_token(*model, T) - linear_macs_per_token(*model) + dense_linear_macs(model);
  const int64_t dense_attn = attention_projection_macs(model, T);

  std::map<std::string, SweepRow> done;
  if (!o.results.empty())
    for (auto& r : read_sweep_rows(o.results, note))
      if (r.error.empty()) done[r.key] = r;  // a failed row is tried again

  std::vector<SweepRow> rows;
  GateCalibrationState calib;
  for (size_t i = 0; i < budgets.size(); ++i) {
    const auto& nb = budgets[i];
    const std::string budget_json = budget_to_json(nb.budget);
    const std::string id = model_id + "|" + data.fingerprint + "|" + nb.method + "|" + nb.label + "|" + budget_json;
    const std::string key = content_hash(id.data(), id.size());
    if (auto it = done.find(key); it != done.end()) {
      rows.push_back(it->second);
      rows.back().evaluation = data.fingerprint;
      rows.back().grid_index = grid_index[i];
      if (o.on_row) o.on_row(rows.back());
      report(progress, {"sweep", int64_t(i + 1), int64_t(budgets.size())});
      continue;
    }
    SweepRow row;
    row.key = key;
    row.model = m.source;
    row.model_hash = m.hash;
    row.method = nb.method;
    row.label = nb.label;
    row.budget_json = budget_json;
    row.evaluation = data.fingerprint;
    row.grid_index = grid_index[i];
    try {
      const auto slot = within(progress, {"sweep", int64_t(i), int64_t(budgets.size())});
      impl_->prepare_variants(needs[i], slot);
      evaluate_row(model, row, nb, calib, data, o, slot);
      row.dense_macs = dense_macs;
      row.mac_fraction = double(row.macs) / double(dense_macs);
      if (o.gate_details) row.attn_mac_fraction = double(attention_projection_macs(model, T)) / double(dense_attn);
      row.ms_per_token = o.measure_latency ? measure_decode_ms(model) : 0;
    } catch (const Cancelled&) {
      throw;
    } catch (const std::exception& e) {  // Error, or an allocation the machine could not give
      model->set_gate_stats(nullptr);
      row = SweepRow{row.key, row.model, row.model_hash, row.method, row.label, row.budget_json};
      row.evaluation = data.fingerprint;
      row.grid_index = grid_index[i];
      row.error = e.what();
    }
    release_after(i);
    if (!o.results.empty()) append_sweep_row(o.results, row);
    rows.push_back(row);
    if (o.on_row) o.on_row(row);
    report(progress, {"sweep", int64_t(i + 1), int64_t(budgets.size())});
  }
  if (calib.probed.defined()) model->set_head_importance(calib.probed);  // the probes', not a ranking's
  return rows;
}

}  // namespace nestscope
