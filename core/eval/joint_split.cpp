#include "core/model/macs.h"
#include "core/eval/joint_split.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>

#include "core/error.h"
#include "core/eval/metrics.h"

namespace nestscope {

namespace {

// `base` without the MLP gate and prompt compression: what the knob's fractions are relative to.
Budget uncompressed(const Budget& base) {
  Budget b = base;
  b.gate.policy = GatePolicy::Off;
  b.gate.active = 1;
  b.prompt_keep = 1;
  b.mac_target = 0;
  return b;
}

// `base` at gate fraction `active` (1 = gate off: all blocks without measurement overhead).
Budget at_active(const Budget& base, double active) {
  Budget b = base;
  b.mac_target = 0;
  b.prompt_keep = 1;
  if (active >= 1) {
    b.gate.policy = GatePolicy::Off;
    b.gate.active = 1;
  } else {
    b.gate.active = active;
  }
  return b;
}

struct Restore {
  Gpt& model;
  const Budget& base;
  ~Restore() {
    try {
      Budget b = base;
      b.mac_target = 0;
      model->apply_budget(b);
    } catch (...) {
    }
  }
};

}  // namespace

std::vector<double> joint_active_grid() { return {1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25}; }
std::vector<double> joint_keep_grid() { return {1.0, 0.75, 0.5, 0.25, 0.1}; }

std::vector<JointCandidate> score_joint_candidates(Gpt& model, const std::vector<int64_t>& tokens, const Budget& base,
                                                   int64_t windows) {
  const int64_t T = model->config().context, P = T / 2;
  const int64_t n = int64_t(tokens.size());
  check(P >= 1 && n > T, "joint MAC knob: the calibration text has " + std::to_string(n) +
                             " tokens; scoring needs at least one context window plus one (" + std::to_string(T + 1) + ")");
  const int64_t W = std::clamp<int64_t>((n - 1) / T, 1, std::max<int64_t>(1, windows));
  torch::NoGradGuard no_grad;
  Restore restore{model, base};
  const auto device = model->tok_emb->weight.device();
  auto x = torch::from_blob(const_cast<int64_t*>(tokens.data()), {W * T}, torch::kInt64).view({W, T}).to(device);
  // The reference: every block, the whole prompt. Scored over each window's second half.
  model->apply_budget(uncompressed(base));
  auto ref = torch::log_softmax(model->forward(x).narrow(1, P, T - P), -1);  // [W, T-P, V]
  auto ref_top = ref.argmax(-1);
  const double positions = double(W * (T - P));
  std::vector<JointCandidate> out;
  const bool gated = base.gate.policy != GatePolicy::Off;
  for (double a : gated ? joint_active_grid() : std::vector<double>{1.0}) {
    model->apply_budget(at_active(base, a));
    for (double p : joint_keep_grid()) {
      model->set_prompt_keep(p);
      auto logp = torch::log_softmax(prompt_window_logits(model, x).narrow(1, P, T - P), -1);
      JointCandidate c;
      c.active = a;
      c.prompt_keep = p;
      c.kl = (ref.exp() * (ref - logp)).sum().item<double>() / positions;
      c.agreement = double(logp.argmax(-1).eq(ref_top).sum().item<int64_t>()) / positions;
      out.push_back(c);
    }
  }
  return out;
}

JointChoice choose_joint_split(Gpt& model, const std::vector<JointCandidate>& scored, const Budget& base, double target,
                               int64_t prompt_tokens, int64_t new_tokens) {
  check(target > 0 && target <= 1, "MAC target must be a fraction in (0, 1], got " + std::to_string(target));
  check(!scored.empty(), "joint MAC knob: no scored candidates (calibrate first)");
  check(prompt_tokens >= 1, "joint MAC knob: the prompt is empty");
  const int64_t ctx = model->config().context;
  const int64_t G = std::clamp<int64_t>(new_tokens, 1, std::max<int64_t>(1, ctx - prompt_tokens));
  Restore restore{model, base};
  // MACs per token are linear in the context length L (attention scores): m(L) = m(1) + (L−1)·s.
  // The mean over generated tokens 1..G after K cached prompt tokens is m(K + (G+1)/2).
  auto mean_macs = [&](double m1, double slope, int64_t kept) {
    return m1 + (double(kept) + double(G + 1) / 2.0 - 1.0) * slope;
  };
  auto line = [&](const Budget& b) {
    model->apply_budget(b);
    const double m1 = double(macs_per_token(*model, 1));
    return std::pair<double, double>{m1, double(macs_per_token(*model, 2)) - m1};
  };
  const auto [f1, fs] = line(uncompressed(base));
  const double full = mean_macs(f1, fs, prompt_tokens);
  std::map<double, std::pair<double, double>> lines;  // per active fraction
  JointChoice best, cheapest;
  double best_kl = std::numeric_limits<double>::infinity(), cheapest_macs = std::numeric_limits<double>::infinity();
  for (const auto& c : scored) {
    if (!lines.count(c.active)) lines[c.active] = line(at_active(base, c.active));
    const auto [m1, slope] = lines[c.active];
    const int64_t kept =
        c.prompt_keep >= 1 ? prompt_tokens
                           : std::clamp<int64_t>(int64_t(std::ceil(c.prompt_keep * double(prompt_tokens) - 1e-9)), 1,
                                                 prompt_tokens);
    const double frac = mean_macs(m1, slope, kept) / full;
    JointChoice j{c.active, c.prompt_keep, frac, c.kl, c.agreement, true};
    if (frac <= target + 1e-12 && (c.kl < best_kl || (c.kl == best_kl && frac < best.mac_fraction))) {
      best = j;
      best_kl = c.kl;
    }
    if (frac < cheapest_macs) {
      cheapest = j;
      cheapest_macs = frac;
    }
  }
  if (std::isfinite(best_kl)) return best;
  cheapest.fits = false;
  return cheapest;
}

Budget with_joint_choice(const Budget& base, const JointChoice& c) {
  Budget b = base;
  b.mac_target = 0;
  b.prompt_keep = c.prompt_keep;
  if (c.active >= 1) {
    b.gate.policy = GatePolicy::Off;
    b.gate.active = 1;
  } else {
    b.gate.active = c.active;
  }
  return b;
}

}  // namespace nestscope
