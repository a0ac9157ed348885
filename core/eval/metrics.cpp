#include "core/eval/metrics.h"

#include <algorithm>
#include <chrono>

namespace nestscope {

// At keep = 1 both ways give the same logits.
torch::Tensor prompt_window_logits(Gpt& model, const torch::Tensor& x) {
  const double keep = model->prompt_keep();
  const int64_t B = x.size(0), T = x.size(1), P = T / 2;
  if (keep >= 1 || P < 1) return model->forward(x);
  auto cache = model->make_cache(B);
  cache.key_mass = torch::zeros({B, model->config().context}, torch::TensorOptions().device(x.device()));
  auto first = model->forward(x.narrow(1, 0, P), &cache);       // [B, P, V]
  model->compress_cache(cache, keep);
  auto second = model->forward(x.narrow(1, P, T - P), &cache);  // [B, T-P, V]
  return torch::cat({first, second}, 1);
}

EvalResult evaluate_tokens(Gpt& model, const std::vector<int64_t>& tokens, int64_t max_windows, int64_t batch,
                           const ProgressFn& progress, const Budget* reference_budget, const Budget* budget,
                           Gpt* reference_model) {
  check(!reference_budget || budget, "evaluate_tokens: a reference budget needs the budget under test too");
  check(!reference_model || (*reference_model)->config().vocab_size == model->config().vocab_size,
        "the reference model has a different vocabulary from the model under test");
  check(!reference_model || (*reference_model)->config().context >= model->config().context,
        "the reference model's context is shorter than the model's");
  const bool reference = reference_budget || reference_model;
  const int64_t T = model->config().context;
  const int64_t n = int64_t(tokens.size());
  int64_t windows = n > 1 ? (n - 1) / T : 0;
  if (max_windows > 0) windows = std::min(windows, max_windows);
  check(windows > 0, "evaluation text has " + std::to_string(n) + " tokens; at least " + std::to_string(T + 1) +
                         " (one context window plus one) are needed");
  const auto t0 = std::chrono::steady_clock::now();
  const bool was_training = model->is_training();
  model->eval();
  torch::NoGradGuard no_grad;
  const auto device = model->tok_emb->weight.device();
  auto all = torch::from_blob(const_cast<int64_t*>(tokens.data()), {n}, torch::kInt64);  // [n]
  double loss_sum = 0, kl_sum = 0;
  int64_t correct = 0, agree = 0;
  std::vector<double> window_hits;  // correct predictions per window, for the interval
  // Memory: logits are [windows, T, V] floats (GPT-2: 206 MB a window of 1024 tokens). Windows go
  // through together only while their logits stay within kEvalLogitBytes, and the statistics run
  // over slices of rows, so a large vocabulary and context cost a few copies of one window.
  const int64_t V = model->config().vocab_size;
  constexpr int64_t kEvalLogitBytes = int64_t(256) << 20, kSliceBytes = int64_t(32) << 20;
  batch = std::clamp<int64_t>(kEvalLogitBytes / std::max<int64_t>(1, T * V * 4), 1, std::max<int64_t>(1, batch));
  const int64_t slice = std::max<int64_t>(1, kSliceBytes / (V * 4));
  for (int64_t w0 = 0; w0 < windows; w0 += batch) {
    const int64_t b = std::min(batch, windows - w0);
    auto seq = all.narrow(0, w0 * T, b * T + 1);                         // [bT+1]
    auto x = seq.narrow(0, 0, b * T).view({b, T}).to(device);            // [B, T]
    auto y = seq.narrow(0, 1, b * T).view({-1}).to(device);              // [BT]
    torch::Tensor ref_flat;
    if (reference_model) {
      ref_flat = (*reference_model)->forward(x).view({b * T, -1});      // [BT, V]
    } else if (reference_budget) {
      model->apply_budget(*reference_budget);
      ref_flat = model->forward(x).view({b * T, -1});                    // [BT, V]
      model->apply_budget(*budget);
    }
    const auto flat = prompt_window_logits(model, x).view({b * T, -1});  // [BT, V]
    auto row_hits = torch::empty({b * T}, torch::TensorOptions().dtype(torch::kInt64).device(device));
    for (int64_t r0 = 0; r0 < b * T; r0 += slice) {
      const int64_t rn = std::min(slice, b * T - r0);
      const auto f = flat.narrow(0, r0, rn), target = y.narrow(0, r0, rn);
      const auto top = f.argmax(-1);
      if (reference) {
        const auto rf = ref_flat.narrow(0, r0, rn);
        auto ref_logp = torch::log_softmax(rf, -1), logp = torch::log_softmax(f, -1);
        kl_sum += (ref_logp.exp() * (ref_logp - logp)).sum().item<double>();
        agree += rf.argmax(-1).eq(top).sum().item<int64_t>();
      }
      loss_sum += torch::nn::functional::cross_entropy(
                      f, target, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
                      .item<double>();
      row_hits.narrow(0, r0, rn).copy_(top.eq(target));
    }
    auto hits = row_hits.view({b, T}).sum(1).to(torch::kCPU);  // [B]
    for (int64_t i = 0; i < b; ++i) window_hits.push_back(double(hits[i].item<int64_t>()));
    correct += hits.sum().item<int64_t>();
    report(progress, {"eval", w0 + b, windows});
  }
  if (was_training) model->train();
  EvalResult r;
  r.windows = windows;
  r.tokens = windows * T;
  r.loss = loss_sum / double(r.tokens);
  r.perplexity = std::exp(r.loss);
  r.token_accuracy = double(correct) / double(r.tokens);
  if (windows > 1) {
    double ss = 0;
    for (double h : window_hits) ss += (h / double(T) - r.token_accuracy) * (h / double(T) - r.token_accuracy);
    r.accuracy_ci95 = 1.96 * std::sqrt(ss / double(windows - 1)) / std::sqrt(double(windows));
  }
  if (reference) {
    r.top1_agreement = double(agree) / double(r.tokens);
    r.kl = kl_sum / double(r.tokens);
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

}  // namespace nestscope

namespace nestscope {

double measure_decode_ms(Gpt& model, int64_t prompt, int64_t tokens) {
  torch::NoGradGuard no_grad;
  const auto& cfg = model->config();
  prompt = std::clamp<int64_t>(prompt, 1, cfg.context - 1);
  tokens = std::clamp<int64_t>(tokens, 1, cfg.context - prompt);
  const auto device = model->tok_emb->weight.device();
  auto cache = model->make_cache(1);
  model->forward(torch::zeros({1, prompt}, torch::kInt64).to(device), &cache, /*last_only=*/true);
  auto x = torch::ones({1, 1}, torch::kInt64).to(device);
  std::vector<double> ms;
  for (int64_t i = 0; i < tokens; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    auto logits = model->forward(x, &cache);
    x = logits.argmax(-1);  // [1, 1]
    (void)x.item<int64_t>();  // include the device sync, as a real decode loop pays it
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::nth_element(ms.begin(), ms.begin() + ms.size() / 2, ms.end());
  return ms[ms.size() / 2];
}

}  // namespace nestscope
