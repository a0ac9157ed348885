#include "core/train/nsn_objective.h"

#include <random>

#include "core/error.h"

namespace nestscope {

void NsnTrainOptions::validate(int64_t max_rank) const {
  const bool bond = axis == NestedAxis::Bond;
  check(max_rank > 0, bond ? "the model has no MPO layers: convert it first (nestscope-cli mpo convert)"
                           : "the model has no NSN layers: convert it first (nestscope-cli nsn convert)");
  check(min_rank >= 1 && min_rank <= max_rank, std::string(bond ? "min bond " : "min rank ") +
                                                   std::to_string(min_rank) + " is outside [1, " +
                                                   std::to_string(max_rank) + "]");
  check(buckets >= 1 && buckets <= max_rank - min_rank + 1,
        "rank buckets must be in [1, " + std::to_string(max_rank - min_rank + 1) + "], got " + std::to_string(buckets));
  check(curriculum >= 0 && curriculum <= 1, "curriculum must be a fraction in [0, 1]");
  check(max_sample == 0 || (max_sample >= min_rank && max_sample <= max_rank),
        std::string(bond ? "max sampled bond " : "max sampled rank ") + std::to_string(max_sample) +
            " is outside [" + std::to_string(min_rank) + ", " + std::to_string(max_rank) + "] (0 = no cap)");
}

int64_t nsn_bucket(int64_t r, int64_t min_rank, int64_t max_rank, int64_t buckets) {
  const int64_t span = max_rank - min_rank + 1;
  return std::clamp((r - min_rank) * buckets / span, int64_t(0), buckets - 1);
}

int64_t nsn_curriculum_floor(const NsnTrainOptions& n, int64_t max_rank, int64_t step, int64_t steps) {
  if (n.curriculum <= 0) return n.min_rank;
  const double t = std::min(1.0, double(step + 1) / (n.curriculum * double(steps)));
  return std::max(n.min_rank, int64_t(std::llround(double(max_rank) - t * double(max_rank - n.min_rank))));
}

NsnTrainResult train_nsn_multirank(Gpt& model, const Corpus& corpus, const TrainOptions& options,
                                   const NsnTrainOptions& nsn, const ProgressFn& progress, torch::Tensor log_var,
                                   Gpt* teacher) {
  const bool bond = nsn.axis == NestedAxis::Bond;
  int64_t R = 0;
  // The largest χ any chain really has (a conversion asked for more is capped by the shapes).
  for (const auto& [name, p] : model->projections()) R = std::max(R, bond ? p->reach_bond() : p->max_rank());
  auto budget_at = [bond](int64_t level) { return bond ? Budget{.bond = level} : Budget{.rank = level}; };
  nsn.validate(R);
  const int64_t K = nsn.buckets;
  if (!log_var.defined() || log_var.numel() != K) log_var = torch::zeros({K});
  log_var = log_var.detach().clone().to(model->tok_emb->weight.device()).set_requires_grad(true);  // [K]

  std::mt19937_64 rng(options.seed ^ 0x9E3779B97F4A7C15ull);
  std::vector<double> loss_sum(K, 0.0);
  std::vector<int64_t> count(K, 0);
  const int64_t top = nsn_bucket(R, nsn.min_rank, R, K);

  auto loss_fn = [&](const Batch& batch, int64_t step) {
    const int64_t hi = nsn.max_sample > 0 ? nsn.max_sample : R;
    const int64_t lo = std::min(hi, nsn_curriculum_floor(nsn, R, step, options.steps));
    const int64_t r = std::uniform_int_distribution<int64_t>(lo, hi)(rng);
    const int64_t k = nsn_bucket(r, nsn.min_rank, R, K);
    model->apply_budget(budget_at(r));
    auto ce_r = next_token_loss(model, batch);
    model->apply_budget(Budget{});  // the anchor: full rank, and the budget left after training
    auto ce_full = next_token_loss(model, batch);
    loss_sum[k] += ce_r.item<double>();
    ++count[k];
    loss_sum[top] += ce_full.item<double>();
    ++count[top];
    auto s_k = log_var[k], s_top = log_var[top];
    return torch::exp(-s_top) * ce_full + s_top + torch::exp(-s_k) * ce_r + s_k;
  };

  NsnTrainResult result;
  result.train = train_model(model, corpus, options, progress, loss_fn, {log_var}, teacher);
  result.log_var = log_var.detach().cpu();
  const int64_t span = R - nsn.min_rank + 1;
  for (int64_t k = 0; k < K; ++k) {
    NsnBucketLog b;
    b.lo = nsn.min_rank + (k * span + K - 1) / K;
    b.hi = nsn.min_rank + ((k + 1) * span + K - 1) / K - 1;
    b.samples = count[k];
    b.mean_loss = count[k] ? loss_sum[k] / double(count[k]) : 0;
    b.sigma = std::exp(0.5 * result.log_var[k].item<double>());
    result.buckets.push_back(b);
  }
  return result;
}

}  // namespace nestscope
