#include "core/eval/calibrate.h"

#include <torch/torch.h>

#include <string_view>

#include "core/error.h"
#include "core/eval/head_probe.h"

namespace nestscope {

std::vector<MlpSample> mlp_samples(Gpt& model, const torch::Tensor& idx) {
  const auto& cfg = model->config();
  check(idx.dim() == 2 && idx.size(1) > 0 && idx.size(1) <= cfg.context,
        "calibration input must be [B, T] with T in [1, context]");
  torch::NoGradGuard no_grad;
  std::vector<MlpSample> out(size_t(cfg.n_layers));
  {
    ScopedHook hook(model, [&](std::string_view name, int64_t layer, const torch::Tensor& t) {
      auto& s = out[size_t(layer)];
      if (name == "mlp.in") s.inputs = t.reshape({-1, cfg.d_model}).to(torch::kCPU, torch::kFloat32);
      if (name == "mlp.hidden") s.acts = t.reshape({-1, cfg.d_ff}).to(torch::kCPU, torch::kFloat32);
      return t;
    });
    model->forward(idx);
  }
  for (const auto& s : out)
    check(s.inputs.defined() && s.acts.defined(), "calibration needs the MLPs ungated (turn the gate off first)");
  return out;
}

void calibrate_gate(Gpt& model, const std::vector<MlpSample>& samples, int64_t block, uint64_t seed,
                    int64_t support_rows) {
  const auto& cfg = model->config();
  check(int64_t(samples.size()) == cfg.n_layers, "gate calibration: one sample per layer expected");
  GateCalibration calib = model->gate_calibration();
  calibrate_mlp(calib, samples, cfg.d_model, cfg.d_ff, block, seed, support_rows);
  model->set_gate_calibration(std::move(calib));
}

void calibrate_on_tokens(Gpt& model, const std::vector<int64_t>& tokens, int64_t context, int64_t block, uint64_t seed,
                         int64_t max_windows, int64_t head_probes, int64_t own_tokens) {
  check(!tokens.empty(), "gate calibration: no tokens");
  torch::NoGradGuard no_grad;
  const int64_t T = std::min<int64_t>(context, int64_t(tokens.size()));
  // At most kCalibrationRows token rows per layer: the samples are rows × (d_model + d_ff) floats
  // per layer (a GPT-2-124M window of 1024 rows holds 190 MB over its 12 layers).
  const int64_t W = std::max<int64_t>(
      1, std::min({max_windows, int64_t(tokens.size()) / T, std::max<int64_t>(1, kCalibrationRows / T)}));
  std::vector<std::vector<torch::Tensor>> ins, acts;
  for (int64_t w = 0; w < W; ++w) {
    auto idx = torch::tensor(std::vector<int64_t>(tokens.begin() + w * T, tokens.begin() + (w + 1) * T), torch::kInt64)
                   .unsqueeze(0)
                   .to(model->tok_emb->weight.device());
    auto samples = mlp_samples(model, idx);
    ins.resize(samples.size());
    acts.resize(samples.size());
    for (size_t l = 0; l < samples.size(); ++l) {
      ins[l].push_back(samples[l].inputs);
      acts[l].push_back(samples[l].acts);
    }
  }
  {
    std::vector<MlpSample> all;
    for (size_t l = 0; l < ins.size(); ++l) {
      all.push_back({torch::cat(ins[l], 0), torch::cat(acts[l], 0)});
      ins[l].clear();  // the per-window pieces go as soon as they are joined
      acts[l].clear();
    }
    calibrate_gate(model, all, block, seed, own_tokens);
  }  // the samples go before the probes run
  const auto& c = model->config();
  // The probes score the first window's first kProbeTokens tokens (each probe is a forward).
  const int64_t probed = std::min(kProbeTokens, own_tokens > 0 ? std::min(T, own_tokens) : T);
  auto first = torch::tensor(std::vector<int64_t>(tokens.begin(), tokens.begin() + probed), torch::kInt64)
                   .unsqueeze(0)
                   .to(model->tok_emb->weight.device());
  model->set_head_importance(probe_heads(model, first, head_probes > 0 ? head_probes : 2 * c.n_layers * c.n_heads, seed));
}

}  // namespace nestscope
