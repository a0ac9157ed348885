#include "core/engine/engine.h"

#include "core/engine/engine_impl.h"

#include <dlfcn.h>

#include <chrono>
#include <numeric>
#include <nlohmann/json.hpp>
#include <cstdlib>
#include <thread>

#include "core/cuda/dispatch.h"
#include "core/error.h"
#include "core/threads.h"
#include "core/layers/mpo_linear.h"
#include "core/layers/factory.h"
#include "core/gate/block_recovery.h"
#include "core/gate/head_probe.h"
#include "core/gate/mlp_gate.h"
#include "core/eval/metrics.h"
#include "core/eval/rank_allocation.h"
#include "core/model/budget_json.h"
#include "core/model/convert.h"
#include "core/train/nsn_objective.h"
#include "core/io/checkpoint.h"
#include "core/io/hf_model.h"
#include "core/text/utf8.h"
#include "core/io/default_model.h"
#include "core/model/sampler.h"
#include "core/text/char_tokenizer.h"
#include "core/train/trainer.h"

namespace nestscope {

namespace {
using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

torch::Device resolve_device(const std::string& name) {
  if (name == "cpu") return torch::kCPU;
  if (name == "cuda") {
    check(torch::cuda::is_available(), "device 'cuda' asked for, but this LibTorch sees no CUDA device");
    return torch::kCUDA;
  }
  check(name == "auto", "unknown device '" + name + "' (use auto, cpu or cuda)");
  return torch::cuda::is_available() ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU);
}
}  // namespace

void init_threads(int threads) {
  at::set_num_threads(threads > 0 ? threads : default_threads());
  // OpenBLAS's own thread pool fights LibTorch's: with both at 2 threads on 2 cores, training
  // took 1.42 s/step and a 64-token prefill 79 ms; with OpenBLAS at 1 thread, 1.07 s/step and
  // 1.4 ms (nestscope_bench). LibTorch parallelizes around BLAS calls itself. Looked up at run
  // time because the BLAS behind libblas.so.3 may not be OpenBLAS.
  using SetThreads = void (*)(int);
  if (auto f = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) f(1);
}

int current_threads() { return at::get_num_threads(); }

namespace {

// How a nested objective (NSN ranks or MPO bonds) is recorded in the checkpoint.
struct NestedRecord {
  const char* extras_key;  // where the learned log-variances are saved
  const char* objective;
  const char* section;     // training-record key holding the options and per-bucket logs
  const char* min_name;
};

// One frontier point: `model` at budget `b`, scored on `tokens` (agreement and KL against the
// model's full budget), with its MACs, active parameters and measured decode latency.
FrontierRow frontier_row(Gpt& model, const Budget& b, const std::vector<int64_t>& tokens, int64_t dense_macs,
                         int64_t context, int64_t max_windows, bool latency, const ProgressFn& cancel = {}) {
  const Budget full{};
  model->apply_budget(b);
  FrontierRow row;
  row.linear_macs = model->linear_macs_per_token();
  row.mac_fraction = double(row.linear_macs) / double(dense_macs);
  row.model_macs = model->macs_per_token(context);
  row.parameters = model->active_parameter_count();
  row.eval = evaluate_tokens(model, tokens, max_windows, 16, cancel, &full, &b);
  row.ms_per_token = latency ? measure_decode_ms(model) : 0;
  return row;
}

// The distillation teacher of `options` (its checkpoint or HF folder; empty = the embedded default
// model) on `device`, checked to share `student`'s tokenizer; nullopt without distillation.
std::optional<LoadedModel> load_teacher(const TrainOptions& options, const Tokenizer& student, torch::Device device) {
  if (options.distill <= 0) return std::nullopt;
  LoadedModel t = options.teacher.empty()    ? load_checkpoint_bytes(default_model_bytes(), kEmbeddedSource)
                  : is_hf_folder(options.teacher) ? import_hf_folder(options.teacher)
                                                  : load_checkpoint(options.teacher);
  check(t.tokenizer->to_json() == student.to_json(),
        "the teacher " + t.source + " has a different tokenizer from the model; distillation needs the same one");
  t.model->to(device);
  t.model->eval();
  return t;
}

// Runs the nested objective on `next` (a fork), stores s_k, returns the report; fills `rec`.
NsnFinetuneReport train_nested(LoadedModel& next, const Corpus& corpus, int64_t corpus_bytes,
                               const TrainOptions& options, const NsnTrainOptions& n, const NestedRecord& how,
                               const ProgressFn& progress, nlohmann::json& rec, Gpt* teacher) {
  auto prior = next.extras.find(how.extras_key);
  auto r = train_nsn_multirank(next.model, corpus, options, n, progress,
                               prior == next.extras.end() ? torch::Tensor() : prior->second, teacher);
  rec = nlohmann::json::parse(train_record_json(options, r.train, corpus_bytes));
  rec["objective"] = how.objective;
  rec[how.section] = {{how.min_name, n.min_rank}, {"max_sample", n.max_sample}, {"buckets", n.buckets}, {"curriculum", n.curriculum}};
  for (const auto& b : r.buckets)
    rec[how.section]["per_bucket"].push_back(
        {{"lo", b.lo}, {"hi", b.hi}, {"samples", b.samples}, {"mean_loss", b.mean_loss}, {"sigma", b.sigma}});
  next.extras[how.extras_key] = r.log_var;
  return {r.train, r.buckets};
}

}  // namespace

void calibrate_on_tokens(Gpt& model, const std::vector<int64_t>& tokens, int64_t context, int64_t block, uint64_t seed,
                         int64_t max_windows, int64_t head_probes, int64_t own_tokens) {
  check(!tokens.empty(), "gate calibration: no tokens");
  torch::NoGradGuard no_grad;
  const int64_t T = std::min<int64_t>(context, int64_t(tokens.size()));
  const int64_t W = std::max<int64_t>(1, std::min<int64_t>(max_windows, int64_t(tokens.size()) / T));
  std::vector<std::vector<torch::Tensor>> ins, acts;
  for (int64_t w = 0; w < W; ++w) {
    auto idx = torch::tensor(std::vector<int64_t>(tokens.begin() + w * T, tokens.begin() + (w + 1) * T), torch::kInt64)
                   .unsqueeze(0)
                   .to(model->tok_emb->weight.device());
    auto samples = model->mlp_samples(idx);
    ins.resize(samples.size());
    acts.resize(samples.size());
    for (size_t l = 0; l < samples.size(); ++l) {
      ins[l].push_back(samples[l].inputs);
      acts[l].push_back(samples[l].acts);
    }
  }
  std::vector<MlpSample> all;
  for (size_t l = 0; l < ins.size(); ++l) all.push_back({torch::cat(ins[l], 0), torch::cat(acts[l], 0)});
  model->calibrate_gate(all, block, seed, own_tokens);
  const auto& c = model->config();
  const int64_t probed = own_tokens > 0 ? std::min(T, own_tokens) : T;
  auto first = torch::tensor(std::vector<int64_t>(tokens.begin(), tokens.begin() + probed), torch::kInt64)
                   .unsqueeze(0)
                   .to(model->tok_emb->weight.device());
  model->set_head_importance(probe_heads(model, first, head_probes > 0 ? head_probes : 2 * c.n_layers * c.n_heads, seed));
}

namespace {

// Token-adaptive heads: re-estimates the head support on `context` (the latest ids, at most one
// context length) with fresh knockout probes, as calibration does on the prompt, and applies it.
// Probes run every head and no trace; both are restored. Returns the MACs the probes spent: the
// unmasked pass plus one per probe, each T tokens at the current budget with all heads.
int64_t reprobe_heads(Gpt& model, const std::vector<int64_t>& context, int64_t probes, uint64_t seed,
                      std::vector<std::vector<MlpGateTrace>>* sink, bool trace_oracle, torch::Device dev) {
  const auto& c = model->config();
  if (probes <= 0) probes = 2 * c.n_layers * c.n_heads;
  auto idx = torch::tensor(context, torch::kInt64).view({1, -1}).to(dev);
  const int64_t T = idx.size(1);
  model->set_gate_trace(nullptr);
  model->clear_head_support();
  struct Restore {
    Gpt& model;
    std::vector<std::vector<MlpGateTrace>>* sink;
    bool oracle;
    ~Restore() {
      model->apply_head_support();
      model->set_gate_trace(sink, oracle);
    }
  } restore{model, sink, trace_oracle};
  const int64_t macs = (probes + 1) * T * model->macs_per_token((T + 1) / 2);  // linear in the context length
  model->set_head_importance(probe_heads(model, idx, probes, seed));
  return macs;
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

Engine::Engine() : impl_(std::make_unique<Impl>()) { init_threads(); }
Engine::~Engine() = default;

void Engine::load(const std::string& path) {
  impl_->adopt(is_hf_folder(path) ? import_hf_folder(path) : load_checkpoint(path));
}

std::string Engine::export_hf(const std::string& dir) const {
  auto& m = impl_->need();
  return export_hf_folder(dir, m.model, *m.tokenizer);
}

void Engine::load_default() { impl_->adopt(load_checkpoint_bytes(default_model_bytes(), kEmbeddedSource)); }

bool Engine::has_model() const { return impl_->loaded != nullptr; }

bool Engine::cuda_available() { return torch::cuda::is_available(); }

std::string Engine::cuda_kernels() { return cuda_kernels_status(); }

void Engine::set_device(const std::string& device) {
  impl_->device = resolve_device(device);
  if (!impl_->loaded) return;
  auto& model = impl_->loaded->model;
  model->apply_budget(Budget{});
  model->clear_variants();  // built on the old device; rebuilt (from the cache) on demand
  model->to(impl_->device);
  impl_->prepare_variants(Impl::kinds_of(impl_->budget));
  model->apply_budget(impl_->budget);
}

std::vector<std::string> Engine::projection_names() const {
  std::vector<std::string> out;
  for (const auto& [name, p] : impl_->need().model->own_projections()) out.push_back(name);
  return out;
}

LayerView Engine::layer_view(const std::string& name, int64_t rank, int64_t bond) {
  auto& m = impl_->need();
  std::shared_ptr<ElasticLinear> own;
  for (const auto& [n, p] : m.model->own_projections())
    if (n == name) own = p;
  check(own != nullptr, "no projection named '" + name + "'");
  torch::NoGradGuard no_grad;
  m.model->apply_budget(Budget{});  // the whole weight, whatever the sliders say
  torch::Tensor w, b;
  try {
    w = own->to_dense().to(torch::kCPU, torch::kFloat64);  // [out, in]
    b = own->bias();
  } catch (...) {
    m.model->apply_budget(impl_->budget);
    throw;
  }
  m.model->apply_budget(impl_->budget);
  LayerView v;
  v.name = name;
  v.rows = w.size(0);
  v.cols = w.size(1);
  const int64_t full = std::min(v.rows, v.cols);
  check(rank >= 0 && rank <= full, "rank " + std::to_string(rank) + " is outside [1, " + std::to_string(full) + "]");
  v.rank = rank == 0 ? full : rank;
  auto [U, S, Vh] = torch::linalg::svd(w, /*full_matrices=*/false, c10::nullopt);  // W = U diag(S) Vᵀ
  v.singular_values.assign(S.data_ptr<double>(), S.data_ptr<double>() + S.numel());
  const double total = S.square().sum().item<double>();
  v.energy_retained = total > 0 ? S.narrow(0, 0, v.rank).square().sum().item<double>() / total : 1.0;
  auto wr = U.narrow(1, 0, v.rank).mm(torch::diag(S.narrow(0, 0, v.rank))).mm(Vh.narrow(0, 0, v.rank));
  const double norm = std::max(1e-300, w.norm().item<double>());
  v.rank_error = (w - wr).norm().item<double>() / norm;
  auto flat = [](const torch::Tensor& t) {
    auto f = t.to(torch::kFloat32).contiguous();
    return std::vector<float>(f.data_ptr<float>(), f.data_ptr<float>() + f.numel());
  };
  v.weight = flat(w);
  v.reconstruction = flat(wr);
  // The chain: TT-SVD of W at full χ, then the slider's truncation (as MpoLinear does it).
  const std::string family = projection_family(name);
  auto chain = make_linear(mpo_config(m.config, {family}, int64_t(1) << 16), family);
  chain->load_from_dense(w.to(torch::kFloat32), b.defined() ? b.to(torch::kCPU) : torch::Tensor());
  auto* mpo = dynamic_cast<MpoLinear*>(chain.get());
  check(mpo != nullptr, "internal: the MPO factory did not make an MPO layer");
  check(bond >= 0 && bond <= mpo->max_bond(),
        "bond dimension " + std::to_string(bond) + " is outside [1, " + std::to_string(mpo->max_bond()) + "]");
  v.bond = bond == 0 ? mpo->max_bond() : bond;
  mpo->set_bond(v.bond);
  v.out_factors = mpo->out_factors();
  v.in_factors = mpo->in_factors();
  v.bond_dims = mpo->bond_dims();
  v.bond_error = (w - mpo->to_dense().to(torch::kFloat64)).norm().item<double>() / norm;
  v.mpo_params = mpo->params() - (b.defined() ? b.numel() : 0);
  return v;
}

VariantReport Engine::prepare_variants(const std::vector<LinearKind>& kinds, const ProgressFn& progress) {
  return impl_->prepare_variants(kinds, progress);
}

void Engine::set_variant_cache(bool on) { impl_->variant_cache = on; }

std::vector<std::pair<std::string, int64_t>> Engine::mac_breakdown(int64_t context_len) const {
  return impl_->need().model->mac_breakdown(context_len);
}

ModelInfo Engine::info() const {
  auto& m = impl_->need();
  ModelInfo i;
  i.source = m.source;
  i.hash = m.hash;
  i.config = m.config;
  i.tokenizer_kind = m.tokenizer->kind();
  i.parameters = m.model->parameter_count();
  i.macs_per_token = m.model->macs_per_token(m.config.context);
  i.device = impl_->device.is_cuda() ? "cuda" : "cpu";
  i.training_json = m.training_json;
  for (const auto& [name, p] : m.model->projections()) {
    i.max_rank = std::max(i.max_rank, p->max_rank());
    i.max_bond = std::max(i.max_bond, p->max_bond());
  }
  i.active_parameters = m.model->active_parameter_count();
  i.linear_macs = m.model->linear_macs_per_token();
  i.dense_linear_macs = dense_linear_macs(m.model);
  // Dense projections, scores over the full context in every layer, a tied head's matmul.
  i.dense_macs_per_token = i.dense_linear_macs + m.config.n_layers * 2 * m.config.context * m.config.d_model +
                           (m.model->head ? 0 : m.config.d_model * m.config.vocab_size);
  std::tie(i.rank_limit, i.bond_limit) = m.model->elastic_limits();
  return i;
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
  // generation only (the engine's budget keeps the target).
  JointChoice joint;
  struct BudgetRestore {
    Impl& impl;
    bool on;
    ~BudgetRestore() {
      if (!on) return;
      try {
        impl.need().model->apply_budget(impl.budget);  // it applied before: cannot fail in practice
      } catch (...) {
      }
    }
  } budget_restore{*impl_, impl_->budget.mac_target > 0};
  if (budget_restore.on)
    model->apply_budget(impl_->resolve(impl_->budget, int64_t(ids.size()), options.max_new_tokens, &joint));
  auto cache = model->make_cache(1);
  // With the gate on, every step's per-layer trace rides along with its token.
  const bool gated = model->gate_options().policy != GatePolicy::Off;
  std::vector<std::vector<MlpGateTrace>> sink;
  struct TraceOff {
    Gpt& model;
    ~TraceOff() { model->set_gate_trace(nullptr); }
  } trace_off{model};
  if (gated) model->set_gate_trace(&sink, options.trace_oracle);
  std::vector<MlpGateTrace> last_trace;  // of the step whose logits we hold
  // One step's MACs: the analytic count, with each gated MLP at what its trace says it spent.
  auto step_macs_at = [&](int64_t context_len) {
    if (!gated) return model->macs_per_token(context_len);
    int64_t macs = model->macs_without_gated_mlp(context_len);
    for (const auto& t : last_trace) macs += t.macs;
    return macs;
  };
  auto run = [&](const std::vector<int64_t>& chunk) {  // -> last position's logits as floats
    auto x = torch::tensor(chunk, torch::kInt64).view({1, -1}).to(dev);  // [1, T]
    for (auto& l : sink) l.clear();
    auto logits = model->forward(x, &cache).select(1, -1).squeeze(0);     // [V]
    last_trace.clear();
    for (auto& l : sink)
      if (!l.empty()) last_trace.push_back(l.back());
    // Embedding rows past the tokenizer's vocabulary (padded imports) are never sampled.
    logits = logits.narrow(0, 0, m.tokenizer->vocab_size()).to(torch::kCPU, torch::kFloat32).contiguous();
    return std::vector<float>(logits.data_ptr<float>(), logits.data_ptr<float>() + logits.numel());
  };

  // The heads the budget runs; token-adaptive re-probing (GateOptions::head_reprobe) may replace
  // them during decoding, restoring the calibrated importance when the generation ends.
  auto heads = model->active_heads();
  const GateOptions& g = model->gate_options();
  const bool reprobe_on = g.head_active < 1 && g.head_reprobe > 0 && model->heads_calibrated();
  struct ImportanceRestore {
    Gpt& model;
    torch::Tensor saved;
    ~ImportanceRestore() {
      if (!saved.defined()) return;
      model->set_head_importance(saved);
      model->apply_head_support();
    }
  } importance_restore{model, reprobe_on ? model->head_importance().clone() : torch::Tensor()};
  bool armed = true;               // hysteresis: re-armed once h falls below θ·(1 − hysteresis)
  int64_t last_probe = 0;          // the step of the last re-estimate (the prefill's counts as 0)
  int64_t pending_probe_macs = 0;  // charged to the next token, whose step runs the new heads
  GenerateResult r;
  r.prompt_tokens = int64_t(ids.size());
  if (budget_restore.on)
    r.joint = {true, joint.active, joint.prompt_keep, joint.mac_fraction, joint.kl, joint.agreement, joint.fits};
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
    ids.push_back(s.id);
    pending += m.tokenizer->decode_one(s.id);
    const size_t complete = utf8_complete_prefix(pending);
    GeneratedToken tok{i, s.id, pending.substr(0, complete), s.prob, s.entropy, step_macs + pending_probe_macs,
                       last_trace, heads, {}};
    pending.erase(0, complete);
    tok.probe_macs = pending_probe_macs;
    tok.heads_reprobed = pending_probe_macs > 0;
    pending_probe_macs = 0;
    {  // the alternatives the model weighed, at temperature 1
      std::vector<int64_t> order(logits.size());
      std::iota(order.begin(), order.end(), 0);
      const size_t k = std::min<size_t>(5, order.size());
      std::partial_sort(order.begin(), order.begin() + k, order.end(),
                        [&](int64_t a, int64_t b) { return logits[size_t(a)] > logits[size_t(b)]; });
      const float top_logit = logits[size_t(order[0])];
      double z = 0;
      for (float l : logits) z += std::exp(double(l - top_logit));
      for (size_t j = 0; j < k; ++j)
        tok.top.emplace_back(m.tokenizer->decode_one(order[j]), std::exp(double(logits[size_t(order[j])] - top_logit)) / z);
    }
    r.text += tok.text;
    ++r.generated_tokens;
    if (on_token && !on_token(tok)) {
      r.stopped = true;
      break;
    }
    if (i + 1 == options.max_new_tokens) break;
    const double h = s.entropy / std::log(double(m.config.vocab_size));
    if (gated) model->set_gate_uncertainty(h);
    if (reprobe_on) {
      if (!armed && h < g.head_reprobe * (1 - g.hysteresis)) armed = true;
      if (armed && h >= g.head_reprobe && i + 1 - last_probe >= g.head_reprobe_cooldown) {
        const size_t n = std::min<size_t>(ids.size(), size_t(ctx));
        pending_probe_macs = reprobe_heads(model, std::vector<int64_t>(ids.end() - int64_t(n), ids.end()),
                                           g.head_probes, g.seed + uint64_t(i) + 1, gated ? &sink : nullptr,
                                           options.trace_oracle, dev);
        heads = model->active_heads();
        armed = false;
        last_probe = i + 1;
      }
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

EvalResult Engine::evaluate(const std::string& text, bool validation_split, double train_fraction,
                            const ProgressFn& progress, int64_t max_windows) {
  auto& m = impl_->need();
  std::vector<int64_t> tokens;
  if (validation_split) {
    tokens = make_corpus(*m.tokenizer, text, train_fraction).validation;
  } else {
    tokens = m.tokenizer->encode(text);
  }
  return evaluate_tokens(m.model, tokens, max_windows, 16, progress);
}

TrainResult Engine::train(const std::string& corpus_text, const ModelConfig& config, const TrainOptions& options,
                          bool continue_current, const ProgressFn& progress) {
  options.validate();
  LoadedModel next;
  if (continue_current) {
    next = impl_->fork();
  } else {
    auto tok = std::make_unique<CharTokenizer>(CharTokenizer::from_corpus(corpus_text));
    next.config = config;
    next.config.vocab_size = tok->vocab_size();
    next.config.validate();
    next.tokenizer = std::move(tok);
    torch::manual_seed(options.seed);
    next.model = Gpt(next.config);
  }
  next.model->to(impl_->device);
  const Corpus corpus = make_corpus(*next.tokenizer, corpus_text, options.train_fraction);
  auto teacher = load_teacher(options, *next.tokenizer, impl_->device);
  TrainResult result = train_model(next.model, corpus, options, progress, {}, {}, teacher ? &teacher->model : nullptr);
  next.source = "<trained in this session>";
  next.training_json = train_record_json(options, result, int64_t(corpus_text.size()));
  impl_->adopt(std::move(next));
  return result;
}

void Engine::save(const std::string& path) const {
  auto& m = impl_->need();
  save_checkpoint(path, m.model, *m.tokenizer, m.training_json, m.extras);
}

void Engine::set_budget(const Budget& budget) {
  if (!budget.kind.empty()) impl_->prepare_variants(Impl::kinds_of(budget));
  impl_->need().model->apply_budget(budget);
  impl_->budget = budget;
}

Budget Engine::budget() const { return impl_->budget; }

void Engine::convert_nsn(const std::vector<std::string>& families, int64_t max_rank, const ProgressFn& progress) {
  const auto& m = impl_->need();
  impl_->adopt(impl_->converted(nsn_config(m.config, families, max_rank), "NSN",
                                {{"conversion", "nsn-svd"}, {"max_rank", max_rank}, {"families", families}}, progress));
}

NsnFinetuneReport Engine::finetune_nsn(const std::string& corpus_text, const TrainOptions& options,
                                       const NsnTrainOptions& nsn, const ProgressFn& progress) {
  options.validate();
  LoadedModel next = impl_->fork();
  const Corpus corpus = make_corpus(*next.tokenizer, corpus_text, options.train_fraction);
  auto teacher = load_teacher(options, *next.tokenizer, impl_->device);
  NsnTrainOptions n = nsn;
  n.axis = NestedAxis::Rank;
  nlohmann::json rec;
  auto report = train_nested(next, corpus, int64_t(corpus_text.size()), options, n,
                             {"train.nsn.log_var", "nsn-multirank", "nsn", "min_rank"}, progress, rec,
                             teacher ? &teacher->model : nullptr);
  impl_->adopt_trained(std::move(next), rec);
  return report;
}

std::vector<FrontierRow> Engine::nsn_frontier(const std::string& text, bool validation_split,
                                              const NsnFrontierOptions& o, const ProgressFn& progress) {
  auto& m = impl_->need();
  Corpus corpus;
  if (validation_split)
    corpus = make_corpus(*m.tokenizer, text, 0.9);
  else
    corpus.validation = corpus.train = m.tokenizer->encode(text);
  const std::vector<int64_t>& tokens = corpus.validation;
  // A dense model is swept as plain SVD truncation of a full-rank conversion.
  const bool is_nsn = info().max_rank > 0;
  Gpt model = is_nsn ? m.model : convert_model(m.model, nsn_config(m.config, {}, 0), within(progress, {"frontier", 0, 0}));
  const std::string method = is_nsn ? "nsn" : "svd";
  const Budget saved = impl_->budget;
  const int64_t dense_macs = dense_linear_macs(model);

  std::vector<std::pair<std::string, Budget>> budgets;  // (allocation, budget)
  for (int64_t r : o.ranks) {
    model->apply_budget(Budget{r});  // validates the rank before any work
    budgets.emplace_back("uniform", Budget{r});
  }
  RankSensitivity sensitivity;
  if (o.sensitivity_allocation && !o.mac_fractions.empty())  // the model's ranks are restored after
    sensitivity = measure_rank_sensitivity(model, corpus.train, o.calibration_windows, 8, progress);
  for (double f : o.mac_fractions) {
    budgets.emplace_back("uniform", uniform_rank_budget(model, f));
    if (o.energy_allocation) budgets.emplace_back("energy", energy_rank_budget(model, f));
    if (o.sensitivity_allocation) budgets.emplace_back("sensitivity", sensitivity_rank_budget(model, sensitivity, f));
  }
  std::vector<FrontierRow> rows;
  int64_t done = 0;
  try {
    for (const auto& [allocation, b] : budgets) {
      FrontierRow row = frontier_row(model, b, tokens, dense_macs, m.config.context, o.max_windows, o.measure_latency,
                                     within(progress, {"frontier", done, int64_t(budgets.size())}));
      row.method = method;
      row.allocation = allocation;
      if (b.layer_rank.empty()) {
        row.rank = b.rank;
      } else {
        double sum = 0;
        for (const auto& [n, r] : b.layer_rank) sum += double(r);
        row.rank = int64_t(std::llround(sum / double(b.layer_rank.size())));
      }
      rows.push_back(row);
      report(progress, {"frontier", ++done, int64_t(budgets.size())});
    }
  } catch (...) {
    m.model->apply_budget(saved);
    throw;
  }
  m.model->apply_budget(saved);
  return rows;
}

void Engine::convert_mpo(const std::vector<std::string>& families, int64_t bond, const ProgressFn& progress) {
  const auto& m = impl_->need();
  impl_->adopt(impl_->converted(mpo_config(m.config, families, bond), "MPO",
                                {{"conversion", "mpo-tt-svd"}, {"bond", bond}, {"families", families}}, progress));
}

NsnFinetuneReport Engine::finetune_mpo(const std::string& corpus_text, const TrainOptions& options,
                                       const std::optional<NsnTrainOptions>& nested, const ProgressFn& progress) {
  options.validate();
  check(info().max_bond > 0, "the model has no MPO layers: convert it first (nestscope-cli mpo convert)");
  LoadedModel next = impl_->fork();
  const Corpus corpus = make_corpus(*next.tokenizer, corpus_text, options.train_fraction);
  auto teacher = load_teacher(options, *next.tokenizer, impl_->device);
  Gpt* t = teacher ? &teacher->model : nullptr;
  NsnFinetuneReport report;
  nlohmann::json rec;
  if (nested) {
    NsnTrainOptions n = *nested;
    n.axis = NestedAxis::Bond;
    report = train_nested(next, corpus, int64_t(corpus_text.size()), options, n,
                          {"train.mpo.log_var", "mpo-nested-bond", "nested", "min_bond"}, progress, rec, t);
  } else {
    report.train = train_model(next.model, corpus, options, progress, {}, {}, t);
    rec = nlohmann::json::parse(train_record_json(options, report.train, int64_t(corpus_text.size())));
    rec["objective"] = "mpo-full-bond";
  }
  impl_->adopt_trained(std::move(next), rec);
  return report;
}

std::vector<FrontierRow> Engine::mpo_frontier(const std::string& text, bool validation_split,
                                              const MpoFrontierOptions& o, const ProgressFn& progress) {
  auto& m = impl_->need();
  check(!o.bonds.empty(), "MPO frontier: give at least one bond dimension");
  const std::vector<int64_t> tokens = validation_split ? make_corpus(*m.tokenizer, text, 0.9).validation
                                                       : m.tokenizer->encode(text);
  const bool is_mpo = info().max_bond > 0;
  // A dense model: one lossless TT-SVD (χ capped only by the shapes), then live truncations.
  Gpt model = is_mpo ? m.model
                      : convert_model(m.model, mpo_config(m.config, {}, int64_t(1) << 16), within(progress, {"frontier", 0, 0}));
  int64_t largest = 0;
  for (const auto& [name, p] : model->projections()) largest = std::max(largest, p->max_bond());
  for (int64_t b : o.bonds)
    check(b >= 1 && b <= largest, "bond dimension " + std::to_string(b) + " is outside [1, " + std::to_string(largest) + "]");
  const Budget saved = impl_->budget;
  const int64_t dense_macs = dense_linear_macs(model);
  std::vector<FrontierRow> rows;
  int64_t done = 0;
  try {
    for (int64_t bond : o.bonds) {
      FrontierRow row = frontier_row(model, Budget{.bond = bond}, tokens, dense_macs, m.config.context,
                                     o.max_windows, o.measure_latency,
                                     within(progress, {"frontier", done, int64_t(o.bonds.size())}));
      row.method = is_mpo ? "mpo" : "tt-svd";
      row.allocation = "uniform";
      row.bond = bond;
      rows.push_back(row);
      report(progress, {"frontier", ++done, int64_t(o.bonds.size())});
    }
  } catch (...) {
    m.model->apply_budget(saved);
    throw;
  }
  m.model->apply_budget(saved);
  return rows;
}

void Engine::calibrate_gate(const std::string& text, int64_t block, uint64_t seed, int64_t max_windows) {
  auto& m = impl_->need();
  check(!text.empty(), "the calibration text is empty");
  auto tokens = m.tokenizer->encode(text);
  Budget ungated = impl_->budget;
  ungated.gate = GateOptions{};
  m.model->apply_budget(ungated);
  try {
    // A prompt is too few rows for a prior: "ROMEO:" gives 6, a covariance of rank ≤ 5, and a PCA +
    // MMSE gate blind outside that subspace (its text turns to noise). A text shorter than one
    // context window is continued by the model itself (ungated, uncompressed, temperature 1 with
    // `seed`) for the prior; the support (head probes, static energies, neuron order) still comes
    // from the text alone. The joint MAC knob scores the same tokens.
    const int64_t own = int64_t(tokens.size());
    if (const int64_t ctx = m.config.context; own < ctx) {
      Budget plain = ungated;
      plain.mac_target = 0;
      plain.prompt_keep = 1;
      m.model->apply_budget(plain);
      Sampler sampler({1.0, 0, seed});
      tokens = extend_by_sampling(m.model, std::move(tokens), ctx + 1, sampler);
      m.model->apply_budget(ungated);
    }
    calibrate_on_tokens(m.model, tokens, m.config.context, block, seed, max_windows, 0,
                        own < int64_t(tokens.size()) ? own : 0);
  } catch (...) {
    m.model->apply_budget(impl_->budget);
    throw;
  }
  m.model->apply_budget(impl_->budget);  // rebuilt with the new calibration
  impl_->calibration_tokens = tokens;
  impl_->joint_scores.clear();
}

std::vector<GateFrontierRow> Engine::gate_frontier(const std::string& text, bool validation_split,
                                                   const GateFrontierOptions& o, const ProgressFn& progress) {
  auto& m = impl_->need();
  check(!o.policies.empty() && !o.actives.empty() && !o.measurements.empty(),
        "gate frontier: give at least one policy, active fraction and m");
  Corpus corpus;
  if (validation_split)
    corpus = make_corpus(*m.tokenizer, text, 0.9);
  else
    corpus.validation = corpus.train = m.tokenizer->encode(text);
  const Budget saved = impl_->budget;
  Budget base = saved;
  base.gate = GateOptions{};
  // Every point, validated before any work (apply_budget throws on bad sizes and changes nothing).
  std::vector<GateOptions> points;
  for (GatePolicy p : o.policies) {
    check(p != GatePolicy::Off, "gate frontier: the ungated row comes first anyway; do not list 'off'");
    for (double a : o.actives)
      for (size_t i = 0; i < (p == GatePolicy::Sensing ? o.measurements.size() : 1); ++i)
        points.push_back({.policy = p, .active = a, .block = o.block,
                          .measurements = p == GatePolicy::Sensing ? o.measurements[i] : 0, .iters = o.iters,
                          .measurement = o.measurement, .recovery = o.recovery, .seed = o.seed,
                          .clustered = o.clustered});
  }
  Gpt& model = m.model;
  torch::NoGradGuard no_grad;
  for (const auto& g : points) {
    Budget b = base;
    b.gate = g;
    // Sizes only; calibration comes below.
    if (g.policy == GatePolicy::Static) b.gate.policy = GatePolicy::Oracle;
    b.gate.clustered = false;
    b.gate.recovery = Recovery::Iht;
    b.gate.measurement = MeasurementKind::Rademacher;
    model->apply_budget(b);
  }
  model->apply_budget(base);
  const bool calibrate = o.clustered || !o.head_actives.empty() || o.recovery == Recovery::Mmse || o.measurement == MeasurementKind::Pca ||
                         std::any_of(points.begin(), points.end(),
                                     [](const GateOptions& g) { return g.policy == GatePolicy::Static; });
  if (calibrate)
    calibrate_on_tokens(model, corpus.train, m.config.context, o.block, o.seed, o.calibration_windows, o.head_probes);
  for (double f : o.head_actives)
    check(f > 0 && f <= 1, "gate frontier: head active fraction must be in (0, 1], got " + std::to_string(f));
  const int64_t total = int64_t(points.size()) + 1 + 3 * int64_t(o.head_actives.size());
  std::vector<GateFrontierRow> rows;
  try {
    for (int64_t i = 0; i <= int64_t(points.size()); ++i) {
      Budget b = base;
      if (i > 0) b.gate = points[size_t(i - 1)];
      model->apply_budget(b);
      GateStats stats;
      model->set_gate_stats(&stats);
      GateFrontierRow row;
      row.eval = evaluate_tokens(model, corpus.validation, o.max_windows, 16,
                                 within(progress, {"gate frontier", i, total}), &base, &b);
      model->set_gate_stats(nullptr);
      row.gate = b.gate;
      const int64_t n = m.config.d_ff / o.block;
      row.blocks = n;
      row.active_blocks = i == 0 ? n : std::clamp<int64_t>(std::llround(b.gate.active * double(n)), 1, n);
      if (i > 0 && b.gate.measurements == 0) row.gate.measurements = b.gate.policy == GatePolicy::Sensing ? default_measurements(m.config.d_ff) : 0;
      if (stats.rows > 0) {
        row.mlp_mac_fraction = stats.macs / stats.dense_macs;
        row.overhead_fraction = stats.overhead_macs / stats.dense_macs;
        row.support_f1 = stats.f1_rows > 0 ? stats.f1 / double(stats.f1_rows) : -1;
      } else {
        row.support_f1 = -1;
      }
      row.ms_per_token = o.measure_latency ? measure_decode_ms(model) : 0;
      rows.push_back(row);
      report(progress, {"gate frontier", i + 1, total});
    }
    if (!o.head_actives.empty()) {
      const int64_t T = m.config.context, L = m.config.n_layers, H = m.config.n_heads;
      check(int64_t(corpus.validation.size()) >= T, "gate frontier: the validation split is shorter than one window");
      auto first = torch::tensor(std::vector<int64_t>(corpus.validation.begin(), corpus.validation.begin() + T),
                                 torch::kInt64)
                       .unsqueeze(0)
                       .to(model->tok_emb->weight.device());
      model->apply_budget(base);
      const torch::Tensor probed = model->head_importance();
      const torch::Tensor oracle = knockout_heads(model, first);
      torch::manual_seed(int64_t(o.seed));
      const torch::Tensor random = torch::rand({L, H}, torch::kFloat64);
      int64_t done = int64_t(points.size()) + 1;
      for (double f : o.head_actives) {
        for (const auto& [name, imp] : {std::pair{"sensing", probed}, {"oracle", oracle}, {"random", random}}) {
          model->set_head_importance(imp);
          Budget b = base;
          b.gate.head_active = f;
          b.gate.head_global = o.head_global;
          model->apply_budget(b);
          GateFrontierRow row;
          row.gate = b.gate;
          row.head_policy = name;
          row.eval = evaluate_tokens(model, corpus.validation, o.max_windows, 16,
                                     within(progress, {"gate frontier", done, total}), &base, &b);
          const auto kept = head_support(imp, f, o.head_global), best = head_support(oracle, f, o.head_global);
          double f1 = 0, heads = 0;
          for (int64_t l = 0; l < L; ++l) {
            f1 += support_f1(kept[size_t(l)], best[size_t(l)]);
            heads += double(kept[size_t(l)].size());
          }
          row.head_f1 = f1 / double(L);
          // q and o run for the kept heads only, k and v for all: (2 + 2·kept/(L·H)) / 4 of attention's MACs.
          row.attn_mac_fraction = (2.0 + 2.0 * heads / double(L * H)) / 4.0;
          row.ms_per_token = o.measure_latency ? measure_decode_ms(model) : 0;
          rows.push_back(row);
          report(progress, {"gate frontier", ++done, total});
        }
      }
      model->set_head_importance(probed);
    }
  } catch (...) {
    model->set_gate_stats(nullptr);
    model->apply_budget(saved);
    throw;
  }
  model->apply_budget(saved);
  return rows;
}

}  // namespace nestscope
