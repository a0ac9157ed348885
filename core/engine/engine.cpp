#include "core/engine/engine.h"

#include <chrono>
#include <thread>

#include "core/error.h"
#include "core/eval/metrics.h"
#include "core/io/checkpoint.h"
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
  at::set_num_threads(threads > 0 ? threads : int(std::max(1u, std::thread::hardware_concurrency())));
}

struct Engine::Impl {
  std::unique_ptr<LoadedModel> loaded;
  torch::Device device = torch::kCPU;

  LoadedModel& need() const {
    check(loaded != nullptr, "no model is loaded");
    return *loaded;
  }
  void adopt(LoadedModel m) {
    m.model->to(device);
    m.model->eval();
    loaded = std::make_unique<LoadedModel>(std::move(m));
  }
};

Engine::Engine() : impl_(std::make_unique<Impl>()) { init_threads(); }
Engine::~Engine() = default;

void Engine::load(const std::string& path) { impl_->adopt(load_checkpoint(path)); }

void Engine::load_default() { impl_->adopt(load_checkpoint_bytes(default_model_bytes(), "<embedded default model>")); }

bool Engine::has_model() const { return impl_->loaded != nullptr; }

void Engine::set_device(const std::string& device) {
  impl_->device = resolve_device(device);
  if (impl_->loaded) impl_->loaded->model->to(impl_->device);
}

ModelInfo Engine::info() const {
  auto& m = impl_->need();
  ModelInfo i;
  i.source = m.source;
  i.config = m.config;
  i.tokenizer_kind = m.tokenizer->kind();
  i.parameters = m.model->parameter_count();
  i.macs_per_token = m.model->macs_per_token(m.config.context);
  i.device = impl_->device.is_cuda() ? "cuda" : "cpu";
  i.training_json = m.training_json;
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
  auto cache = model->make_cache(1);
  auto run = [&](const std::vector<int64_t>& chunk) {  // -> last position's logits as floats
    auto x = torch::tensor(chunk, torch::kInt64).view({1, -1}).to(dev);  // [1, T]
    auto logits = model->forward(x, &cache).select(1, -1).squeeze(0);     // [V]
    logits = logits.to(torch::kCPU, torch::kFloat32).contiguous();
    return std::vector<float>(logits.data_ptr<float>(), logits.data_ptr<float>() + logits.numel());
  };

  GenerateResult r;
  r.prompt_tokens = int64_t(ids.size());
  auto t0 = Clock::now();
  auto logits = run(ids);
  r.prefill_ms = ms_since(t0);
  t0 = Clock::now();
  for (int64_t i = 0; i < options.max_new_tokens; ++i) {
    const Sample s = sampler.next(logits);
    ids.push_back(s.id);
    GeneratedToken tok{i, s.id, m.tokenizer->decode_one(s.id), s.prob, s.entropy};
    r.text += tok.text;
    ++r.generated_tokens;
    if (on_token && !on_token(tok)) {
      r.stopped = true;
      break;
    }
    if (i + 1 == options.max_new_tokens) break;
    if (cache.length == ctx) {
      // Context full: keep the latest half and re-read it (absolute positions restart at 0).
      std::vector<int64_t> keep(ids.end() - ctx / 2, ids.end());
      cache.length = 0;
      logits = run(keep);
    } else {
      logits = run({s.id});
    }
  }
  r.decode_ms = ms_since(t0);
  r.tokens_per_s = r.decode_ms > 0 ? double(r.generated_tokens) / (r.decode_ms / 1000.0) : 0;
  return r;
}

EvalResult Engine::evaluate(const std::string& text, bool validation_split, double train_fraction,
                            const ProgressFn& progress) {
  auto& m = impl_->need();
  std::vector<int64_t> tokens;
  if (validation_split) {
    tokens = make_corpus(*m.tokenizer, text, train_fraction).validation;
  } else {
    tokens = m.tokenizer->encode(text);
  }
  return evaluate_tokens(m.model, tokens, 0, 16, progress);
}

TrainResult Engine::train(const std::string& corpus_text, const ModelConfig& config, const TrainOptions& options,
                          bool continue_current, const ProgressFn& progress) {
  options.validate();
  LoadedModel next;
  if (continue_current) {
    auto& cur = impl_->need();
    next.config = cur.config;
    next.tokenizer = tokenizer_from_json(cur.tokenizer->to_json());
    next.model = Gpt(cur.config);
    torch::NoGradGuard no_grad;
    auto src = cur.model->named_parameters();
    for (auto& p : next.model->named_parameters()) p.value().copy_(src[p.key()]);
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
  TrainResult result = train_model(next.model, corpus, options, progress);
  next.source = "<trained in this session>";
  next.training_json = train_record_json(options, result, int64_t(corpus_text.size()));
  impl_->adopt(std::move(next));
  return result;
}

void Engine::save(const std::string& path) const {
  auto& m = impl_->need();
  save_checkpoint(path, m.model, *m.tokenizer, m.training_json);
}

}  // namespace nestscope
