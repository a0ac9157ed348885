// Engine: gate calibration on a text (the energies, neuron order, prior and head importance the
// sensing gate's budgets read).
#include "core/engine/engine_impl.h"
#include "core/eval/head_probe.h"
#include "core/model/sampler.h"

namespace nestscope {

void Engine::calibrate_gate(const std::string& text, int64_t block, uint64_t seed, int64_t max_windows) {
  auto& m = impl_->need();
  check(!text.empty(), "the calibration text is empty");
  const auto& running = impl_->budget.gate;
  const int64_t d_ff = m.config.d_ff;
  check(running.policy == GatePolicy::Off || gate_block(running.block, d_ff) == gate_block(block, d_ff),
        "the gate runs blocks of " + std::to_string(running.block) + " neurons: calibrate at that block size (" +
            std::to_string(block) + " asked), or turn the gate off first");
  auto tokens = m.tokenizer->encode(text);
  Budget ungated = impl_->budget;
  ungated.gate = GateOptions{};
  {
    ModelScope scope(*impl_);  // puts the engine's budget back however the calibration ends
    m.model->apply_budget(ungated);
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
    scope.restore();  // the gates rebuilt with the new calibration; a failure is reported
  }
  impl_->calibration_tokens = tokens;
  impl_->joint_scores.clear();
}

}  // namespace nestscope
