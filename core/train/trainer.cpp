#include "core/defaults.h"
#include "core/train/trainer.h"

#include "core/train/data_parallel.h"

#include <chrono>
#include <deque>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <thread>

#include "core/train/cpu_tensor_cache.h"
#include "core/error.h"
#include "core/gate/block_recovery.h"
#include "core/eval/head_probe.h"
#include "core/threads.h"
#include "core/eval/metrics.h"

namespace nestscope {

void TrainOptions::validate() const {
  check(steps > 0, "steps must be positive, got " + std::to_string(steps));
  check(batch > 0, "batch must be positive, got " + std::to_string(batch));
  check(context >= 0, "training context must be >= 0 (0 = the model's), got " + std::to_string(context));
  check(warmup >= 0 && warmup <= steps, "warmup must be in [0, steps], got " + std::to_string(warmup));
  check(lr > 0 && std::isfinite(lr), "learning rate must be positive");
  check(min_lr >= 0 && min_lr <= lr, "min_lr must be in [0, lr]");
  check(beta1 >= 0 && beta1 < 1 && beta2 >= 0 && beta2 < 1, "Adam betas must be in [0, 1)");
  check(weight_decay >= 0, "weight decay must be >= 0");
  check(grad_clip >= 0, "gradient clip must be >= 0");
  check(train_fraction > 0 && train_fraction < 1, "train fraction must be in (0, 1)");
  check(eval_every >= 0 && eval_windows >= 0, "eval_every and eval_windows must be >= 0");
  check(threads >= 0, "threads must be >= 0");
  check(mlp_block_active > 0 && mlp_block_active <= 1, "MLP block active fraction must be in (0, 1]");
  check(mlp_block >= 1, "MLP block size must be >= 1");
  check(mlp_block_sensing >= 0, "sensing-aware training needs m >= 0 measurements");
  check(mlp_block_sensing == 0 || mlp_block_active < 1,
        "sensing-aware training (--mlp-block-sensing) picks blocks only with an MLP block active fraction below 1");
  check(head_active > 0 && head_active <= 1, "head active fraction must be in (0, 1]");
  check(head_noise >= 0 && std::isfinite(head_noise), "head noise must be >= 0");
  check(head_reprobe_every >= 1, "head re-probe interval must be >= 1 step");
  check(distill >= 0 && distill <= 1, "distillation weight must be in [0, 1]");
  check(distill_temperature > 0 && std::isfinite(distill_temperature), "distillation temperature must be positive");
}

double learning_rate_at(const TrainOptions& o, int64_t step) {
  if (step < o.warmup) return o.lr * double(step + 1) / double(o.warmup);
  const double span = double(std::max<int64_t>(1, o.steps - o.warmup));
  const double progress = std::min(1.0, double(step - o.warmup) / span);
  return o.min_lr + 0.5 * (o.lr - o.min_lr) * (1.0 + std::cos(M_PI * progress));
}

void add_teacher(Batch& b, Gpt& teacher, double distill, double temperature) {
  torch::NoGradGuard no_grad;
  auto logits = teacher->forward(b.x);  // [B, T, V]
  auto logp = torch::log_softmax(temperature == 1.0 ? logits : logits / temperature, -1);
  b.teacher_p = logp.exp();
  b.teacher_plogp = (b.teacher_p * logp).sum(-1).mean().item<double>();
  b.distill = distill;
  b.temperature = temperature;
}

torch::Tensor next_token_loss(Gpt& model, const Batch& b) {
  auto logits = model->forward(b.x);  // [B, T, V]
  auto ce = [&] { return torch::nn::functional::cross_entropy(logits.view({-1, logits.size(-1)}), b.y.view({-1})); };
  if (!b.teacher_p.defined() || b.distill <= 0) return ce();
  const double tau = b.temperature;
  auto logq = torch::log_softmax(tau == 1.0 ? logits : logits / tau, -1);  // [B, T, V]
  // KL(p ‖ q) per token = Σ p log p − Σ p log q; the first term is the teacher's, computed once.
  auto kl = b.teacher_plogp - (b.teacher_p * logq).sum(-1).mean();
  return b.distill >= 1.0 ? tau * tau * kl : (1.0 - b.distill) * ce() + b.distill * tau * tau * kl;
}

ForwardHook chain_hooks(std::vector<ForwardHook> hooks) {
  return [hooks = std::move(hooks)](std::string_view name, int64_t layer, const torch::Tensor& t) {
    torch::Tensor out = t;
    for (const auto& h : hooks) out = h(name, layer, out);
    return out;
  };
}

ForwardHook gate_aware_hook(Gpt& model, double active, int64_t asked_block, int64_t sensing) {
  const int64_t N = model->config().d_ff;
  const int64_t block = gate_block(asked_block, N);
  check(sensing >= 0, "sensing-aware training needs m >= 0 measurements, got " + std::to_string(sensing));
  check(active > 0 && active <= 1, "MLP block active fraction must be in (0, 1]");
  check(active == 1 || (block >= 1 && N % block == 0),
        "MLP block size " + std::to_string(block) + " does not divide the MLP width " + std::to_string(N));
  if (active >= 1) return [](std::string_view, int64_t, const torch::Tensor& t) { return t; };
  // The MLP inputs of the forward in flight, per layer (the sensing estimate reads them).
  auto inputs = std::make_shared<std::vector<torch::Tensor>>(size_t(model->config().n_layers));
  return [&model, active, block, sensing, inputs](std::string_view name, int64_t layer, const torch::Tensor& h) {
    if (!at::GradMode::is_enabled()) return h;
    if (name == "mlp.in") {
      if (sensing > 0) (*inputs)[size_t(layer)] = h;
      return h;
    }
    if (name != "mlp.hidden") return h;
    // The oracle support in the loop: per token, the k blocks with the largest ‖act(z_b)‖² (or the
    // sensing estimate's).
    const auto sizes = h.sizes().vec();
    const int64_t nb = h.size(-1) / block;
    const int64_t k = std::clamp<int64_t>(std::llround(active * double(nb)), 1, nb);
    auto blocks = h.reshape({-1, nb, block});  // [BT, nb, blk]
    auto scored = sensing > 0 ? model->blocks()[size_t(layer)]->mlp->sensed_hidden((*inputs)[size_t(layer)], sensing)
                                    .reshape({-1, nb, block})
                              : blocks.detach();
    auto energy = scored.square().sum(-1);  // [BT, nb]
    auto keep = torch::zeros_like(energy).scatter_(1, std::get<1>(energy.topk(k, 1)), 1.0);  // [BT, nb]
    return (blocks * keep.unsqueeze(-1)).reshape(sizes);
  };
}

torch::Tensor sample_head_masks(const torch::Tensor& importance, double active, double noise, int64_t batch) {
  check(importance.dim() == 2 && (importance > 0).all().item<bool>(), "head masks: importance must be positive [L, H]");
  const int64_t L = importance.size(0), H = importance.size(1);
  const auto imp = importance.to(torch::kCPU, torch::kFloat64);
  auto masks = torch::zeros({batch, L, H});
  auto m = masks.accessor<float, 3>();
  for (int64_t b = 0; b < batch; ++b) {
    const auto kept = head_support(imp * torch::exp(noise * torch::randn({L, H}, torch::kFloat64)), active, true);
    for (int64_t l = 0; l < L; ++l)
      for (int64_t h : kept[size_t(l)]) m[b][l][h] = 1;
  }
  return masks;
}

namespace {

// The training's named-intermediate hook: gate-aware blocks, random heads per sequence, or the
// model-wide heads of the current step (`step_heads`); only the parts that change something (each
// factory checks its options first). Empty when none does.
ForwardHook training_hook(Gpt& model, const TrainOptions& o, const std::shared_ptr<ForwardHook>& step_heads) {
  const bool heads_global = o.head_active < 1 && o.head_global;
  std::vector<ForwardHook> hooks;
  auto blocks = gate_aware_hook(model, o.mlp_block_active, o.mlp_block, o.mlp_block_sensing);
  if (o.mlp_block_active < 1) hooks.push_back(std::move(blocks));
  if (o.head_active < 1 && !heads_global) hooks.push_back(random_heads_hook(o.head_active));
  if (heads_global)
    hooks.push_back([step_heads](std::string_view name, int64_t layer, const torch::Tensor& t) {
      return *step_heads ? (*step_heads)(name, layer, t) : t;
    });
  return hooks.empty() ? ForwardHook() : chain_hooks(std::move(hooks));
}

}  // namespace

TrainResult train_model(Gpt& model, const Corpus& corpus, const TrainOptions& o, const ProgressFn& progress,
                        const LossFn& loss_fn, const std::vector<torch::Tensor>& extra_params, Gpt* teacher) {
  o.validate();
  const CpuTensorCache reuse_activations;  // every step allocates the same shapes
  check(o.context <= model->config().context, "training context " + std::to_string(o.context) +
                                                 " is longer than the model's " + std::to_string(model->config().context));
  const int64_t T = o.context > 0 ? o.context : model->config().context;
  const bool distill = o.distill > 0;
  check(!distill || teacher != nullptr, "distillation needs a teacher model");
  if (distill) {
    const auto& tc = (*teacher)->config();
    check(tc.vocab_size == model->config().vocab_size,
          "the teacher's vocabulary has " + std::to_string(tc.vocab_size) + " tokens, the model's " +
              std::to_string(model->config().vocab_size));
    check(tc.context >= T, "the teacher's context " + std::to_string(tc.context) + " is shorter than the model's " +
                               std::to_string(T));
    (*teacher)->eval();
  }
  const int64_t n_train = int64_t(corpus.train.size());
  check(n_train > T + 1, "training split has " + std::to_string(n_train) + " tokens; it needs more than the context " +
                             std::to_string(T) + " + 1");
  // 0 = the default (NESTSCOPE_THREADS, else all cores): a capped background run stays capped.
  at::set_num_threads(o.threads > 0 ? o.threads : default_threads());

  // Decay matrices and embeddings only (nanoGPT's grouping); biases and LayerNorm gains are not.
  std::vector<torch::Tensor> trained;
  if (o.projections_only) {
    for (const auto& [name, p] : model->own_projections())
      if (model->own_kind(projection_family(name)) != LinearKind::Dense)
        for (auto& t : p->parameters()) trained.push_back(t);
    check(!trained.empty(), "--projections-only trains the NSN and MPO projections, and this model has none: convert it first");
  } else {
    trained = model->parameters();
  }
  // The rest is frozen for the run (no gradients computed), then given back its flag.
  std::vector<torch::Tensor> frozen;
  for (auto& p : model->parameters())
    if (p.requires_grad() &&
        std::none_of(trained.begin(), trained.end(), [&](const torch::Tensor& t) { return t.is_same(p); }))
      frozen.push_back(p);
  for (auto& p : frozen) p.requires_grad_(false);
  struct Unfreeze {
    std::vector<torch::Tensor>& f;
    ~Unfreeze() {
      for (auto& p : f) p.requires_grad_(true);
    }
  } unfreeze{frozen};
  std::vector<torch::Tensor> decay, no_decay;
  for (auto& p : trained) (p.dim() >= 2 ? decay : no_decay).push_back(p);
  no_decay.insert(no_decay.end(), extra_params.begin(), extra_params.end());
  auto opts = [&](double wd) {
    return std::make_unique<torch::optim::AdamWOptions>(
        torch::optim::AdamWOptions(o.lr).betas({o.beta1, o.beta2}).weight_decay(wd));
  };
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decay, opts(o.weight_decay));
  if (!no_decay.empty()) groups.emplace_back(no_decay, opts(0.0));
  torch::optim::AdamW optimizer(groups, torch::optim::AdamWOptions(o.lr));

  // Data-parallel: every rank starts from rank 0's weights and draws the whole step's sequences
  // from the same seeded generator, then keeps its own share.
  DataParallel* dp = o.data_parallel.get();
  const int64_t world = dp ? dp->world() : 1, rank = dp ? dp->rank() : 0;
  std::vector<torch::Tensor> synced = trained;
  synced.insert(synced.end(), extra_params.begin(), extra_params.end());
  if (dp) dp->broadcast_from_root(synced);

  const auto device = model->tok_emb->weight.device();
  auto data = torch::from_blob(const_cast<int64_t*>(corpus.train.data()), {n_train}, torch::kInt64);  // [n]
  auto offsets = torch::arange(T, torch::kInt64);                                                     // [T]
  std::mt19937_64 rng(o.seed);
  std::uniform_int_distribution<int64_t> pick(0, n_train - T - 1);

  TrainResult result;
  std::deque<double> recent;
  const bool heads_global = o.head_active < 1 && o.head_global;
  // The model-wide heads of this step (set per step) reach the model through the training hook.
  auto step_heads = std::make_shared<ForwardHook>();
  ScopedHook hook(model, training_hook(model, o, step_heads));
  if (o.head_active < 1) torch::manual_seed(int64_t(o.seed ^ 0x5EEDull));  // the head draws, reproducibly
  torch::Tensor importance;  // [L, H] from the probes (head_global)
  model->train();
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t step = 0; step < o.steps; ++step) {
    const double lr = learning_rate_at(o, step);
    for (auto& g : optimizer.param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);

    std::vector<int64_t> starts(size_t(o.batch * world));
    for (auto& s : starts) s = pick(rng);
    if (world > 1) starts = std::vector<int64_t>(starts.begin() + rank * o.batch, starts.begin() + (rank + 1) * o.batch);
    auto idx = torch::tensor(starts, torch::kInt64).unsqueeze(1) + offsets;  // [B, T]
    auto x = data.index({idx}).to(device);                                     // [B, T]
    auto y = data.index({idx + 1}).to(device);                                 // [B, T]
    if (heads_global) {
      if (step % o.head_reprobe_every == 0) {
        *step_heads = {};
        torch::NoGradGuard no_grad;
        auto window = data.narrow(0, pick(rng), T).unsqueeze(0).to(device);
        const auto& c = model->config();
        importance = probe_heads(model, window, 2 * c.n_layers * c.n_heads, o.seed + uint64_t(step)).to(torch::kCPU);
        importance = importance.clamp_min(1e-4 * std::max(1e-12, importance.max().item<double>()));
      }
      auto masks = sample_head_masks(importance, o.head_active, o.head_noise, o.batch * world).narrow(0, rank * o.batch, o.batch);
      *step_heads = head_mask_hook(masks.to(device));
    }
    Batch batch{x, y};
    if (distill) add_teacher(batch, *teacher, o.distill, o.distill_temperature);

    auto loss = loss_fn ? loss_fn(batch, step) : next_token_loss(model, batch);
    if (heads_global) *step_heads = {};  // validation and the caller run every head
    optimizer.zero_grad();
    loss.backward();
    if (dp) dp->average_gradients(synced);
    if (o.grad_clip > 0) torch::nn::utils::clip_grad_norm_(trained, o.grad_clip);
    optimizer.step();

    const double loss_v = dp ? dp->average(loss.item<double>()) : loss.item<double>();
    check(std::isfinite(loss_v), "training diverged at step " + std::to_string(step) + " (loss is not finite)");
    recent.push_back(loss_v);
    if (recent.size() > 50) recent.pop_front();
    TrainLogRow row{step + 1, loss_v, lr};
    if (o.eval_every > 0 && (step + 1) % o.eval_every == 0 && step + 1 < o.steps) {
      auto ev = evaluate_tokens(model, corpus.validation, o.eval_windows);
      row.val_loss = ev.loss;
      row.val_token_accuracy = ev.token_accuracy;
    }
    result.log.push_back(row);
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    Progress p{"train", step + 1, o.steps, loss_v, double((step + 1) * o.batch * world * T) / elapsed};
    report(progress, p);
  }
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  result.steps = o.steps;
  result.tokens_per_s = double(o.steps * o.batch * world * T) / result.seconds;  // the group's
  if (dp) result.communication_seconds = dp->communication_seconds();
  result.final_train_loss = std::accumulate(recent.begin(), recent.end(), 0.0) / double(recent.size());
  result.validation = evaluate_tokens(model, corpus.validation, 0, kEvalBatch, progress);
  result.log.back().val_loss = result.validation.loss;
  result.log.back().val_token_accuracy = result.validation.token_accuracy;
  model->eval();
  return result;
}

std::string train_record_json(const TrainOptions& o, const TrainResult& r, int64_t corpus_bytes) {
  nlohmann::json log = nlohmann::json::array();
  for (const auto& row : r.log) {
    if (row.step % 100 != 0 && row.val_loss < 0 && row.step != r.steps) continue;  // keep it small
    nlohmann::json j = {{"step", row.step}, {"loss", row.loss}, {"lr", row.lr}};
    if (row.val_loss >= 0) {
      j["val_loss"] = row.val_loss;
      j["val_token_accuracy"] = row.val_token_accuracy;
    }
    log.push_back(j);
  }
  nlohmann::json j = {
      {"options",
       {{"steps", o.steps}, {"batch", o.batch}, {"context", o.context}, {"warmup", o.warmup}, {"lr", o.lr}, {"min_lr", o.min_lr},
        {"betas", {o.beta1, o.beta2}}, {"weight_decay", o.weight_decay}, {"grad_clip", o.grad_clip},
        {"train_fraction", o.train_fraction}, {"seed", o.seed}, {"mlp_block_active", o.mlp_block_active}, {"mlp_block_sensing", o.mlp_block_sensing}, {"head_active", o.head_active}, {"head_global", o.head_global}, {"head_noise", o.head_noise},
        {"mlp_block", o.mlp_block}, {"distill", o.distill}, {"distill_temperature", o.distill_temperature}, {"projections_only", o.projections_only},
        {"teacher", o.distill > 0 ? (o.teacher.empty() ? "<embedded default model>" : o.teacher) : ""}}},
      {"corpus_bytes", corpus_bytes},
      {"seconds", r.seconds},
      {"tokens_per_s", r.tokens_per_s},
      {"final_train_loss", r.final_train_loss},
      {"validation",
       {{"loss", r.validation.loss}, {"perplexity", r.validation.perplexity},
        {"token_accuracy", r.validation.token_accuracy}, {"tokens", r.validation.tokens}}},
      {"log", log},
  };
  return j.dump();
}

}  // namespace nestscope
