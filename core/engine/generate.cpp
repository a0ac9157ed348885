// Engine::generate: the decode loop, its per-token traces and MACs, and token-adaptive heads.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>

#include "core/model/macs.h"
#include "core/engine/engine_impl.h"
#include "core/eval/head_probe.h"
#include "core/eval/rank_allocation.h"
#include "core/gate/mlp_gate.h"
#include "core/text/utf8.h"

namespace nestscope {

namespace {

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

// Token-adaptive heads: re-estimates the head support on `context` (the latest ids, at most one
// context length) with fresh knockout probes, as calibration does on the prompt, and applies it.
// Probes run every head and no trace (the caller re-installs its trace). Returns the MACs the
// probes spent: the unmasked pass plus one per probe, each T tokens at the current budget with
// all heads.
int64_t reprobe_heads(Gpt& model, const std::vector<int64_t>& context, int64_t probes, uint64_t seed, torch::Device dev) {
  const auto& c = model->config();
  if (probes <= 0) probes = 2 * c.n_layers * c.n_heads;
  auto idx = torch::tensor(context, torch::kInt64).view({1, -1}).to(dev);
  const int64_t T = idx.size(1);
  model->set_gate_trace(nullptr);
  model->clear_head_support();
  const int64_t macs = (probes + 1) * T * macs_per_token(*model, (T + 1) / 2);  // linear in the context length
  model->set_head_importance(probe_heads(model, idx, probes, seed));
  model->apply_head_support();
  return macs;
}

// When to re-probe the heads (GateOptions::head_reprobe): at a normalised entropy h ≥ θ, then not
// again until h has fallen below θ·(1 − hysteresis) and the cooldown has passed.
struct ReprobeTrigger {
  bool armed = true;
  int64_t last = 0;  // the step of the last re-estimate (the prefill's counts as 0)
  bool fire(const GateOptions& g, double h, int64_t step) {
    if (!armed && h < g.head_reprobe * (1 - g.hysteresis)) armed = true;
    if (!armed || h < g.head_reprobe || step - last < g.head_reprobe_cooldown) return false;
    armed = false;
    last = step;
    return true;
  }
};

// The 5 likeliest tokens at temperature 1 and their probabilities.
std::vector<std::pair<std::string, double>> top_alternatives(const std::vector<float>& logits, const Tokenizer& tok) {
  std::vector<int64_t> order(logits.size());
  std::iota(order.begin(), order.end(), 0);
  const size_t k = std::min<size_t>(5, order.size());
  std::partial_sort(order.begin(), order.begin() + k, order.end(),
                    [&](int64_t a, int64_t b) { return logits[size_t(a)] > logits[size_t(b)]; });
  const float top_logit = logits[size_t(order[0])];
  double z = 0;
  for (float l : logits) z += std::exp(double(l - top_logit));
  std::vector<std::pair<std::string, double>> out;
  for (size_t j = 0; j < k; ++j)
    out.emplace_back(utf8_sanitize(tok.decode_one(order[j])), std::exp(double(logits[size_t(order[j])] - top_logit)) / z);
  return out;
}

}  // namespace

Budget Engine::Impl::resolve(const Budget& b, int64_t prompt, int64_t fresh, JointChoice* choice) {
  if (b.mac_target <= 0) return b;
  auto& m = need();
  check(!calibration_tokens.empty(),
        "the MAC target knob splits compute between prompt and model by measurement: give a calibration text first "
        "(gate calibration)");
  Budget key = b;
  key.mac_target = 0;
  key.prompt_keep = 1;
  key.gate.active = 1;
  const std::string k = budget_to_json(key);
  if (k != joint_key || joint_scores.empty()) {
    // Scoring needs a context window plus one token. A shorter calibration text was continued by
    // calibrate_gate already; one of exactly a context is continued here the same way.
    std::vector<int64_t> tokens = calibration_tokens;
    const int64_t ctx = m.config.context;
    if (int64_t(tokens.size()) <= ctx) {
      Budget plain = key;
      plain.gate.policy = GatePolicy::Off;
      m.model->apply_budget(plain);
      if (int64_t(tokens.size()) >= ctx) tokens.resize(size_t(ctx - 1));
      Sampler sampler({1.0, 0, 0});
      tokens = extend_by_sampling(m.model, std::move(tokens), ctx + 1, sampler);
    }
    joint_scores = score_joint_candidates(m.model, tokens, b);
    joint_key = k;
  }
  const JointChoice c = choose_joint_split(m.model, joint_scores, b, b.mac_target, prompt, fresh);
  if (choice) *choice = c;
  return with_joint_choice(b, c);
}

GenerateResult Engine::generate(const std::string& prompt, const GenerateOptions& options, const TokenFn& on_token) {
  auto& m = impl_->need();
  check(!prompt.empty(), "the prompt is empty: type at least one character");
  check(options.max_new_tokens >= 0, "the number of tokens to generate must be >= 0");
  Sampler sampler({options.temperature, options.top_k, options.seed});
  std::vector<int64_t> ids = m.tokenizer->encode(prompt);
  const int64_t ctx = m.config.context;
  check(int64_t(ids.size()) < ctx, "the prompt has " + std::to_string(ids.size()) +
                                       " tokens; this model's context holds " + std::to_string(ctx) +
                                       ", so the prompt must be at most " + std::to_string(ctx - 1));
  torch::NoGradGuard no_grad;
  auto& model = m.model;
  const auto dev = impl_->device;
  // The joint MAC knob: this prompt's split between prompt keep and gate fraction, for this
  // generation only (the engine's budget keeps the target). Re-probing replaces the head
  // importance during decoding; both come back when the generation ends, and the trace goes off.
  const bool joint_on = impl_->budget.mac_target > 0;
  ModelScope scope(*impl_, joint_on);
  const GateOptions& g = model->gate_options();
  const bool reprobe_on = g.head_active < 1 && g.head_reprobe > 0 && model->gate_calibration().heads_ready();
  if (reprobe_on) scope.keep_head_importance();
  JointChoice joint;
  if (joint_on) model->apply_budget(impl_->resolve(impl_->budget, int64_t(ids.size()), options.max_new_tokens, &joint));
  auto cache = model->make_cache(1);
  // With the gate on, every step's per-layer trace rides along with its token.
  const bool gated = model->gate_options().policy != GatePolicy::Off;
  std::vector<std::vector<MlpGateTrace>> sink;
  if (gated) model->set_gate_trace(&sink, options.trace_oracle);
  std::vector<MlpGateTrace> last_trace;  // of the step whose logits we hold
  // One step's MACs: the analytic count, with each gated MLP at what its trace says it spent.
  auto step_macs_at = [&](int64_t context_len) {
    if (!gated) return macs_per_token(*model, context_len);
    int64_t macs = macs_without_gated_mlp(*model, context_len);
    for (const auto& t : last_trace) macs += t.macs;
    return macs;
  };
  // The dense model on the same step: its linear MACs, and scores over every token in context
  // (the prompt's dropped tokens included: the dense model would have kept them).
  const int64_t dense_linear = dense_linear_macs(model);
  auto dense_step_macs_at = [&](int64_t positions) {
    return dense_linear + m.config.n_layers * 2 * positions * m.config.d_model;
  };
  auto run = [&](const std::vector<int64_t>& chunk) {  // -> last position's logits as floats
    auto x = torch::tensor(chunk, torch::kInt64).view({1, -1}).to(dev);  // [1, T]
    for (auto& l : sink) l.clear();
    auto logits = model->forward(x, &cache, /*last_only=*/true).select(1, -1).squeeze(0);  // [V]
    last_trace.clear();
    for (auto& l : sink)
      if (!l.empty()) last_trace.push_back(l.back());
    // Embedding rows past the tokenizer's vocabulary (padded imports) are never sampled.
    logits = logits.narrow(0, 0, m.tokenizer->vocab_size()).to(torch::kCPU, torch::kFloat32).contiguous();
    return std::vector<float>(logits.data_ptr<float>(), logits.data_ptr<float>() + logits.numel());
  };

  auto heads = model->active_heads();  // what runs; re-probing may replace it
  ReprobeTrigger trigger;
  int64_t pending_probe_macs = 0;  // charged to the next token, whose step runs the new heads
  GenerateResult r;
  r.prompt_tokens = int64_t(ids.size());
  if (joint_on) r.joint = {true, joint.active, joint.prompt_keep, joint.mac_fraction, joint.kl, joint.agreement, joint.fits};
  auto t0 = Clock::now();
  const double keep = model->prompt_keep();
  if (keep < 1) cache.key_mass = torch::zeros({1, ctx}, torch::TensorOptions().dtype(torch::kFloat32).device(dev));
  auto logits = run(ids);
  if (keep < 1) r.kept_prompt_tokens = model->compress_cache(cache, keep)[0];  // later tokens see fewer keys
  int64_t step_macs = step_macs_at(cache.length);
  r.prefill_ms = ms_since(t0);
  t0 = Clock::now();
  std::string pending;  // bytes of a character that byte-level tokens have not completed yet
  for (int64_t i = 0; i < options.max_new_tokens; ++i) {
    const Sample s = sampler.next(logits);
    const auto& stops = m.tokenizer->stop_ids();
    if (std::find(stops.begin(), stops.end(), s.id) != stops.end()) {
      r.ended = true;  // the model ended the text; its end token is not text
      break;
    }
    ids.push_back(s.id);
    const std::string bytes = m.tokenizer->decode_one(s.id);
    pending += bytes;
    GeneratedToken tok{i, s.id, utf8_take_text(pending), s.prob, s.entropy, step_macs + pending_probe_macs,
                       last_trace, heads, top_alternatives(logits, *m.tokenizer)};
    tok.bytes = bytes;
    tok.dense_macs = dense_step_macs_at(cache.position);
    tok.probe_macs = pending_probe_macs;
    tok.heads_reprobed = pending_probe_macs > 0;
    pending_probe_macs = 0;
    r.text += tok.text;
    ++r.generated_tokens;
    if (on_token && !on_token(tok)) {
      r.stopped = true;
      break;
    }
    if (i + 1 == options.max_new_tokens) break;
    const double h = s.entropy / std::log(double(m.config.vocab_size));
    if (gated) model->set_gate_uncertainty(h);
    if (reprobe_on && trigger.fire(g, h, i + 1)) {
      const size_t n = std::min<size_t>(ids.size(), size_t(ctx));
      pending_probe_macs = reprobe_heads(model, std::vector<int64_t>(ids.end() - int64_t(n), ids.end()), g.head_probes,
                                         g.seed + uint64_t(i) + 1, dev);
      if (gated) model->set_gate_trace(&sink, options.trace_oracle);
      heads = model->active_heads();
    }
    if (cache.position == ctx) {
      // Context full: keep the latest half and re-read it (absolute positions restart at 0).
      std::vector<int64_t> latest(ids.end() - ctx / 2, ids.end());
      cache.length = cache.position = 0;
      logits = run(latest);
    } else {
      logits = run({s.id});
    }
    step_macs = step_macs_at(cache.length);
  }
  if (!pending.empty()) r.text += "\xEF\xBF\xBD";  // a character the generation stopped inside of: U+FFFD
  r.decode_ms = ms_since(t0);
  r.tokens_per_s = r.decode_ms > 0 ? double(r.generated_tokens) / (r.decode_ms / 1000.0) : 0;
  return r;
}

}  // namespace nestscope
