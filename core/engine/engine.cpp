#include "core/engine/engine.h"

#include "core/engine/engine_impl.h"

#include <dlfcn.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include <chrono>
#include <numeric>
#include <nlohmann/json.hpp>
#include <cstdlib>
#include <thread>

#include "core/cuda/dispatch.h"
#include "core/error.h"
#include "core/io/cache.h"
#include "core/model/macs.h"
#include "core/threads.h"
#include "core/layers/mpo_linear.h"
#include "core/model/linear_factory.h"
#include "core/gate/block_recovery.h"
#include "core/eval/head_probe.h"
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
#ifdef __GLIBC__
  // Tensors of a megabyte or more come from their own mappings and go back to the system when
  // freed. glibc otherwise raises that threshold to 32 MB after the first such free, and the
  // large, short-lived tensors of a real-size sweep (a window's logits, a probe's activations)
  // then stay as heap the process keeps.
  mallopt(M_MMAP_THRESHOLD, 1 << 20);
#endif
  at::set_num_threads(threads > 0 ? threads : default_threads());
  // OpenBLAS's own thread pool fights LibTorch's: with both at 2 threads on 2 cores, training
  // took 1.42 s/step and a 64-token prefill 79 ms; with OpenBLAS at 1 thread, 1.07 s/step and
  // 1.4 ms (nestscope_bench). LibTorch parallelizes around BLAS calls itself. Looked up at run
  // time because the BLAS behind libblas.so.3 may not be OpenBLAS.
  using SetThreads = void (*)(int);
  if (auto f = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) f(1);
}

int current_threads() { return at::get_num_threads(); }

ModelScope::~ModelScope() {
  // A destructor must not throw; re-applying a budget that applied before cannot fail in practice.
  try {
    restore();
  } catch (...) {
  }
}

void ModelScope::restore() {
  if (restored_ || !impl_.loaded) return;
  restored_ = true;
  auto& model = impl_.loaded->model;
  model->set_gate_stats(nullptr);
  model->set_gate_trace(nullptr);
  if (importance_.defined()) model->set_head_importance(importance_);
  if (budget_) {
    model->apply_budget(impl_.budget);
  } else if (importance_.defined()) {
    model->apply_head_support();
  }
}

void ModelScope::keep_head_importance() {
  const auto& imp = impl_.need().model->head_importance();
  if (imp.defined()) importance_ = imp.clone();
}

VariantReport Engine::Impl::prepare_variants(const std::vector<LinearKind>& kinds, const ProgressFn& progress) {
  return prepare_variants(variant_needs(*need().model, kinds), progress);
}

VariantReport Engine::Impl::prepare_variants(const VariantNeeds& needs, const ProgressFn& progress) {
  auto& m = need();
  bool missing = false;
  for (const auto& [name, k] : needs) missing |= !m.model->variants().has(name, k);
  if (!missing) return {};
  const std::string cache = variant_cache ? variant_cache_path(m.hash) : "";
  ModelScope scope(*this);
  m.model->apply_budget(Budget{});
  return build_variants(m.model, needs, cache, m.hash, progress);
}

LoadedModel Engine::Impl::converted(const ModelConfig& target, const std::string& suffix, nlohmann::json record,
                                    const ProgressFn& progress) {
  auto& m = need();
  LoadedModel next;
  next.config = target;
  {
    ModelScope scope(*this);
    m.model->apply_budget(Budget{});  // convert the whole model, not the current budget's view
    next.model = convert_model(m.model, target, progress);
  }
  next.tokenizer = tokenizer_from_json(m.tokenizer->to_json());
  next.source = m.source + " (" + suffix + ")";
  record["converted_from"] = m.source;
  record["source_training"] = nlohmann::json::parse(m.training_json, nullptr, false);
  next.training_json = record.dump();
  return next;
}

Engine::Engine() : impl_(std::make_unique<Impl>()) { init_threads(); }
Engine::~Engine() = default;

namespace {

// A NestScope checkpoint is float32; bfloat16 only when asked for (Auto keeps float32).
LoadedModel stored(LoadedModel m, WeightStorage weights) {
  if (weights == WeightStorage::BF16) m.model->set_weight_storage(torch::kBFloat16);
  return m;
}

}  // namespace

void Engine::load(const std::string& path, WeightStorage weights) {
  impl_->adopt(is_hf_folder(path) ? import_hf_folder(path, {.weights = weights}) : stored(load_checkpoint(path), weights));
}

std::string Engine::export_hf(const std::string& dir) const {
  auto& m = impl_->need();
  return export_hf_folder(dir, m.model, *m.tokenizer);
}

void Engine::load_default(WeightStorage weights) {
  impl_->adopt(stored(load_checkpoint_bytes(default_model_bytes(), kEmbeddedSource), weights));
}

bool Engine::has_model() const { return impl_->loaded != nullptr; }

bool Engine::cuda_available() { return torch::cuda::is_available(); }

std::string Engine::cuda_kernels() { return cuda_kernels_status(); }

void Engine::set_device(const std::string& device) {
  impl_->device = resolve_device(device);
  if (!impl_->loaded) return;
  auto& model = impl_->loaded->model;
  model->apply_budget(Budget{});
  model->variants().clear();  // built on the old device; rebuilt (from the cache) on demand
  model->to(impl_->device);
  impl_->prepare_variants(impl_->needs_of(impl_->budget));
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
  torch::Tensor w, b;
  {
    ModelScope scope(*impl_);
    m.model->apply_budget(Budget{});  // the whole weight, whatever the sliders say
    w = own->to_dense().to(torch::kCPU, torch::kFloat64);  // [out, in]
    b = own->bias();
  }
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
  auto chain = make_linear(mpo_config(m.config, {family}, kUncappedBond), family);
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
  return nestscope::mac_breakdown(*impl_->need().model, context_len);
}

ModelInfo Engine::info() const {
  auto& m = impl_->need();
  ModelInfo i;
  i.source = m.source;
  i.hash = m.hash;
  i.config = m.config;
  i.tokenizer_kind = m.tokenizer->kind();
  i.parameters = m.model->parameter_count();
  i.macs_per_token = macs_per_token(*m.model, m.config.context);
  i.device = impl_->device.is_cuda() ? "cuda" : "cpu";
  i.weights = m.model->weight_storage() == torch::kBFloat16 ? "bf16" : "f32";
  i.training_json = m.training_json;
  for (const auto& [name, p] : m.model->projections()) {
    i.max_rank = std::max(i.max_rank, p->max_rank());
    i.max_bond = std::max(i.max_bond, p->max_bond());
  }
  i.active_parameters = active_parameter_count(*m.model);
  i.linear_macs = linear_macs_per_token(*m.model);
  i.dense_linear_macs = dense_linear_macs(m.model);
  // Dense projections (a tied head's product included), scores over the full context in every layer.
  i.dense_macs_per_token = i.dense_linear_macs + m.config.n_layers * 2 * m.config.context * m.config.d_model;
  std::tie(i.rank_limit, i.bond_limit) = m.model->variants().limits();
  for (const auto& [name, p] : m.model->own_projections()) {
    i.rank_limit = std::max(i.rank_limit, p->max_rank());
    i.bond_limit = std::max(i.bond_limit, p->reach_bond());
  }
  return i;
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
  return evaluate_tokens(m.model, tokens, max_windows, kEvalBatch, progress);
}

void Engine::save(const std::string& path) const {
  auto& m = impl_->need();
  save_checkpoint(path, m.model, *m.tokenizer, m.training_json, m.extras);
}

void Engine::set_budget(const Budget& budget) {
  if (!budget.kind.empty()) impl_->prepare_variants(impl_->needs_of(budget));
  impl_->need().model->apply_budget(budget);
  impl_->budget = budget;
}

Budget Engine::budget() const { return impl_->budget; }

}  // namespace nestscope
