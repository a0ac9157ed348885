// Engine::grid and Engine::sweep: one frontier engine for every mechanism and their compositions.
#include <chrono>
#include <cmath>
#include <set>

#include "core/engine/engine_impl.h"
#include "core/eval/metrics.h"
#include "core/eval/rank_allocation.h"
#include "core/gate/mlp_gate.h"
#include "core/model/sampler.h"
#include "core/train/corpus.h"

namespace nestscope {

namespace {

std::string fmt_pct(double f) { return std::to_string(int(std::lround(f * 100))) + "%"; }

// The sensing gate as the README measures it: PCA measurements, MMSE recovery, clustered blocks of
// 16, m = N/16 (calibrated on the evaluation text's training split).
GateOptions sensing_gate(double active) {
  GateOptions g;
  g.policy = GatePolicy::Sensing;
  g.active = active;
  g.block = 16;
  g.measurement = MeasurementKind::Pca;
  g.recovery = Recovery::Mmse;
  g.clustered = true;
  return g;
}

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
    auto logits = model->forward(feed, &cache).select(1, -1).reshape({-1}).to(torch::kCPU, torch::kFloat32).contiguous();
    tokens.push_back(sampler.next(std::vector<float>(logits.data_ptr<float>(), logits.data_ptr<float>() + logits.numel())).id);
    feed = torch::full({1, 1}, tokens.back(), torch::kInt64).to(dev);
  }
  return tokens;
}

std::vector<NamedBudget> Engine::grid(const std::string& name) const {
  check(name == "default", "unknown grid '" + name + "' (built in: default)");
  const auto& m = impl_->need();
  const auto& cfg = m.config;
  std::vector<NamedBudget> out;
  auto add = [&](std::string method, std::string label, Budget b) {
    out.push_back({std::move(method), std::move(label), std::move(b)});
  };
  const LinearKind attn = m.model->own_kind("attn.q"), mlp = m.model->own_kind("mlp.up");
  const bool nsn = attn == LinearKind::Nsn || mlp == LinearKind::Nsn;
  const bool mpo = attn == LinearKind::Mpo || mlp == LinearKind::Mpo;
  const int64_t full_rank = std::min(cfg.d_model, cfg.d_ff);  // the MLP's R; attention's is d_model
  std::vector<int64_t> ranks;
  for (int64_t r : {cfg.d_model / 16, cfg.d_model / 8, cfg.d_model / 4, 3 * cfg.d_model / 8, cfg.d_model / 2,
                    3 * cfg.d_model / 4})
    if (r >= 1 && r <= full_rank && (ranks.empty() || r > ranks.back())) ranks.push_back(r);
  const std::vector<int64_t> bonds = {4, 8, 16, 32, 64};
  const std::vector<double> actives = {0.25, 0.5, 0.75};
  using K = LinearKind;
  if (!nsn && !mpo) {
    add("dense", "dense", Budget{});
    for (int64_t r : ranks) add("svd", "r=" + std::to_string(r), Budget{.rank = r, .kind = {{"attn", K::Nsn}, {"mlp", K::Nsn}}});
    for (int64_t b : bonds)
      add("tt-svd", "χ=" + std::to_string(b), Budget{.bond = b, .kind = {{"attn", K::Mpo}, {"mlp", K::Mpo}, {"head", K::Mpo}}});
    for (double a : actives) add("gate", "sensing " + fmt_pct(a), Budget{.gate = sensing_gate(a)});
    for (double k : {0.5, 0.25, 0.1}) add("prompt", "keep " + fmt_pct(k), Budget{.prompt_keep = k});
    add("gate+prompt", "50% keep 50%", Budget{.gate = sensing_gate(0.5), .prompt_keep = 0.5});
    // One knob: the split between gate and prompt measured per target (core/eval/joint_split.h).
    for (double t : {0.9, 0.8, 0.7, 0.6})
      add("joint", "target " + fmt_pct(t), Budget{.gate = sensing_gate(0.5), .mac_target = t});
    for (auto [r, b] : {std::pair<int64_t, int64_t>{cfg.d_model / 4, 8}, {cfg.d_model / 2, 16}, {3 * cfg.d_model / 4, 32}})
      add("svd-mlp+tt-svd-attn", "r=" + std::to_string(r) + " χ=" + std::to_string(b),
          Budget{.rank = r, .bond = b, .kind = {{"mlp", K::Nsn}, {"attn", K::Mpo}}});
    for (int64_t r : {cfg.d_model / 4, cfg.d_model / 2})
      for (double a : {0.5, 0.75})
        add("svd-attn+gate", "r=" + std::to_string(r) + " " + fmt_pct(a),
            Budget{.rank = r, .gate = sensing_gate(a), .kind = {{"attn", K::Nsn}}});
  } else if (nsn) {
    for (int64_t r : ranks) add("nsn", "r=" + std::to_string(r), Budget{.rank = r});
    for (double k : {0.5, 0.25})
      add("nsn+prompt", "r=" + std::to_string(cfg.d_model / 2) + " keep " + fmt_pct(k),
          Budget{.rank = cfg.d_model / 2, .prompt_keep = k});
    for (int64_t r : {cfg.d_model / 4, cfg.d_model / 2})
      for (double a : {0.5, 0.75})
        add("nsn+gate", "r=" + std::to_string(r) + " " + fmt_pct(a), Budget{.rank = r, .gate = sensing_gate(a)});
    for (auto [r, b] : {std::pair<int64_t, int64_t>{cfg.d_model / 4, 8}, {cfg.d_model / 2, 16}, {3 * cfg.d_model / 4, 32}})
      add("nsn-mlp+tt-svd-attn", "r=" + std::to_string(r) + " χ=" + std::to_string(b),
          Budget{.rank = r, .bond = b, .kind = {{"attn", K::Mpo}}});
  } else {
    int64_t largest = 0;
    for (const auto& [n, p] : m.model->own_projections()) largest = std::max(largest, p->max_bond());
    for (int64_t b : bonds)
      if (b <= largest) add("mpo", "χ=" + std::to_string(b), Budget{.bond = b});
    for (int64_t b : {largest / 2, largest})
      for (double a : {0.5, 0.75})
        if (b >= 1) add("mpo+gate", "χ=" + std::to_string(b) + " " + fmt_pct(a), Budget{.bond = b, .gate = sensing_gate(a)});
  }
  return out;
}

std::vector<SweepRow> Engine::sweep(const std::vector<NamedBudget>& budgets, const SweepOptions& o,
                                    const ProgressFn& progress, std::string* note) {
  auto& m = impl_->need();
  check(!budgets.empty(), "sweep: no budgets to evaluate");
  auto& model = m.model;
  const int64_t T = m.config.context;
  const Budget saved = impl_->budget;

  // Budgets first: a bad one is reported before any work.
  std::vector<LinearKind> kinds;
  for (const auto& nb : budgets)
    for (LinearKind k : Impl::kinds_of(nb.budget))
      if (std::find(kinds.begin(), kinds.end(), k) == kinds.end()) kinds.push_back(k);
  impl_->prepare_variants(kinds, within(progress, {"sweep", 0, int64_t(budgets.size())}));
  for (const auto& nb : budgets) {
    try {
      Budget b = nb.budget;
      b.gate = GateOptions{};  // a gate is checked once it is calibrated
      model->apply_budget(b);
      if (nb.budget.gate.policy != GatePolicy::Off) {
        const auto& g = nb.budget.gate;
        check(g.block >= 1 && m.config.d_ff % g.block == 0, "gate: block size " + std::to_string(g.block) +
                                                                " does not divide the MLP width " + std::to_string(m.config.d_ff));
        check(g.active > 0 && g.active <= 1, "gate: active fraction must be in (0, 1]");
      }
    } catch (const Error& e) {
      model->apply_budget(saved);
      throw Error("budget '" + nb.method + " " + nb.label + "': " + e.what());
    }
  }
  model->apply_budget(Budget{});

  // What every budget is scored on: the validation split of the text, or continuations of the
  // full model (so a model without an evaluation text still gets a frontier).
  std::vector<int64_t> tokens, calibration;
  std::string evaluated_on, fingerprint;
  if (!o.text.empty()) {
    if (o.validation_split) {
      auto corpus = make_corpus(*m.tokenizer, o.text, 0.9);
      tokens = std::move(corpus.validation);
      calibration = std::move(corpus.train);
    } else {
      tokens = m.tokenizer->encode(o.text);
      calibration = tokens;
    }
    evaluated_on = "text";
    fingerprint = "text:" + content_hash(o.text.data(), o.text.size()) + (o.validation_split ? ":val" : ":all");
  } else {
    check(o.continuations >= 1, "sweep: no evaluation text and no continuations asked");
    tokens = sample_continuations(model, o.continuations, o.seed);
    calibration = tokens;
    evaluated_on = "continuations";
    fingerprint = "continuations:" + std::to_string(o.continuations) + ":" + std::to_string(o.seed);
  }
  fingerprint += ":w" + std::to_string(o.max_windows) + ":c" + std::to_string(o.calibration_windows);
  const std::string model_id = m.hash.empty() ? m.source : m.hash;
  const int64_t dense_macs = model->macs_per_token(T) - model->linear_macs_per_token() + dense_linear_macs(model);
  const int64_t dense_mlp = 2 * m.config.d_model * m.config.d_ff;

  std::map<std::string, SweepRow> done;
  if (!o.results.empty())
    for (auto& r : read_sweep_rows(o.results, note)) done[r.key] = r;

  std::vector<SweepRow> rows;
  std::string calibrated_for;  // the ungated budget + block the gate statistics belong to
  const Budget full{};
  try {
    for (size_t i = 0; i < budgets.size(); ++i) {
      const auto& nb = budgets[i];
      const std::string budget_json = budget_to_json(nb.budget);
      const std::string id = model_id + "|" + fingerprint + "|" + nb.method + "|" + nb.label + "|" + budget_json;
      const std::string key = content_hash(id.data(), id.size());
      if (auto it = done.find(key); it != done.end()) {
        rows.push_back(it->second);
        report(progress, {"sweep", int64_t(i + 1), int64_t(budgets.size())});
        continue;
      }
      const bool gated = nb.budget.gate.policy != GatePolicy::Off || nb.budget.gate.head_active < 1;
      if (gated || nb.budget.mac_target > 0) {
        const auto& g = nb.budget.gate;
        Budget base = nb.budget;
        base.gate = GateOptions{};
        const std::string sig = budget_to_json(base) + "|" + std::to_string(g.block) + "|" + std::to_string(g.seed);
        if (sig != calibrated_for) {
          model->apply_budget(base);
          calibrate_on_tokens(model, calibration, T, g.block, g.seed, o.calibration_windows);
          calibrated_for = sig;
        }
      }
      // The joint MAC knob: the split for a window's shape (first half prompt, second half new).
      Budget eff = nb.budget;
      std::string resolved;
      if (nb.budget.mac_target > 0) {
        const auto scored = score_joint_candidates(model, calibration, nb.budget);
        eff = with_joint_choice(nb.budget, choose_joint_split(model, scored, nb.budget, nb.budget.mac_target, T / 2, T - T / 2));
        resolved = budget_to_json(eff);
      }
      const auto& g = eff.gate;
      model->apply_budget(eff);
      SweepRow row;
      row.key = key;
      row.model = m.source;
      row.model_hash = m.hash;
      row.method = nb.method;
      row.label = nb.label;
      row.budget_json = budget_json;
      row.resolved_json = resolved;
      row.evaluated_on = evaluated_on;
      row.linear_macs = model->linear_macs_per_token();
      row.parameters = model->active_parameter_count();
      GateStats stats;
      if (g.policy != GatePolicy::Off) model->set_gate_stats(&stats);
      try {
        row.eval = evaluate_tokens(model, tokens, o.max_windows, 16,
                                   within(progress, {"sweep", int64_t(i), int64_t(budgets.size())}), &full, &eff);
      } catch (...) {
        model->set_gate_stats(nullptr);
        throw;
      }
      model->set_gate_stats(nullptr);
      // MACs at full context; a gated MLP counts what it really spent per token on this text.
      // Under prompt compression the last token of a window attends to the kept half plus the rest.
      const int64_t P = T / 2;
      const int64_t keys = eff.prompt_keep < 1
                               ? std::clamp<int64_t>(int64_t(std::ceil(eff.prompt_keep * double(P) - 1e-9)), 1, P) + (T - P)
                               : T;
      int64_t macs = g.policy == GatePolicy::Off ? model->macs_per_token(keys) : model->macs_without_gated_mlp(keys);
      if (g.policy != GatePolicy::Off && stats.rows > 0) {
        macs += int64_t(std::llround(double(m.config.n_layers) * stats.macs / double(stats.rows)));
        row.mlp_mac_fraction = stats.macs / (double(stats.rows) * double(dense_mlp));
      }
      row.macs = macs;
      row.dense_macs = dense_macs;
      row.mac_fraction = double(macs) / double(dense_macs);
      row.ms_per_token = o.measure_latency ? measure_decode_ms(model) : 0;
      if (!o.results.empty()) append_sweep_row(o.results, row);
      rows.push_back(row);
      report(progress, {"sweep", int64_t(i + 1), int64_t(budgets.size())});
    }
  } catch (...) {
    model->apply_budget(saved);
    throw;
  }
  model->apply_budget(saved);
  return rows;
}

}  // namespace nestscope
