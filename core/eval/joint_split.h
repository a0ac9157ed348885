// Joint prompt + model compression under one MAC knob (Budget::mac_target; issue 5, part 5).
//
// Two ways to spend fewer MACs per generated token: run fewer MLP blocks (the gate's active
// fraction a) or attend to fewer prompt keys (the prompt keep fraction p: the least-attended
// prompt tokens leave the KV cache after prefill). Which is cheaper in accuracy depends on the
// model, the text and the prompt's length, so the split is measured, not assumed:
//   1. score_joint_candidates: on calibration windows, every (a, p) of a small grid is run the way
//      generation runs — each window's first half read as the prompt and compressed at p, the
//      second half predicted with the gate at a — and compared with the same model without gate
//      and compression: KL and top-1 agreement over the second half (what follows a prompt).
//   2. choose_joint_split: for an actual prompt of P tokens and G new ones, each candidate's mean
//      MACs per generated token is counted (the model's analytic count at the kept cache length),
//      and the least-KL candidate within target × (MACs without gate and compression) wins; when
//      none fits, the cheapest one (fits = false).
#pragma once
#include <cstdint>
#include <vector>

#include "core/model/budget.h"
#include "core/model/transformer.h"

namespace nestscope {

struct JointCandidate {
  double active = 1;       // gate active fraction (1 = every block; the gate stays as `base` has it)
  double prompt_keep = 1;  // prompt keep fraction
  double kl = 0;           // mean KL(uncompressed ‖ candidate) per scored position (nats)
  double agreement = 1;    // top-1 agreement with the uncompressed model
};

struct JointChoice {
  double active = 1, prompt_keep = 1;
  double mac_fraction = 1;  // the candidate's mean MACs per generated token / the uncompressed ones
  double kl = 0, agreement = 1;
  bool fits = true;         // false: no candidate reached the target; the cheapest was taken
};

// The grids the knob chooses from. Active fractions apply only when `base` has the gate on.
std::vector<double> joint_active_grid();  // 1, 0.875, …, 0.25
std::vector<double> joint_keep_grid();    // 1, 0.75, 0.5, 0.25, 0.1

// Scores the grid on up to `windows` context windows of `tokens` (at least one window plus one
// token). Leaves the model at `base` with the gate and compression as `base` has them.
std::vector<JointCandidate> score_joint_candidates(Gpt& model, const std::vector<int64_t>& tokens, const Budget& base,
                                                   int64_t windows = 2);

// Chooses for a prompt of `prompt_tokens` and `new_tokens` generated ones (see above). target in
// (0, 1]. Leaves the model at `base`.
JointChoice choose_joint_split(Gpt& model, const std::vector<JointCandidate>& scored, const Budget& base, double target,
                               int64_t prompt_tokens, int64_t new_tokens);

// `base` with the choice applied (gate active, prompt keep) and mac_target cleared.
Budget with_joint_choice(const Budget& base, const JointChoice& c);

}  // namespace nestscope
