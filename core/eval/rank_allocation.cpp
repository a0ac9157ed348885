#include "core/model/macs.h"
#include "core/eval/rank_allocation.h"

#include <queue>

#include "core/error.h"
#include "core/eval/metrics.h"
#include "core/layers/nsn_linear.h"

namespace nestscope {

namespace {

void check_fraction(double f) {
  check(f > 0 && f <= 1 && std::isfinite(f), "MAC fraction must be in (0, 1], got " + std::to_string(f));
}

// Restores the model's ranks when it goes out of scope.
struct RankGuard {
  Gpt& model;
  std::vector<int64_t> ranks;
  explicit RankGuard(Gpt& m) : model(m) {
    for (const auto& [n, p] : m->projections()) ranks.push_back(p->rank());
  }
  ~RankGuard() {
    const auto layers = model->projections();
    for (size_t i = 0; i < layers.size(); ++i)
      if (ranks[i] > 0) layers[i].second->set_rank(ranks[i]);
  }
};

}  // namespace

int64_t dense_linear_macs(Gpt& model) {
  int64_t macs = 0;
  for (const auto& [name, p] : model->projections()) macs += p->in_features() * p->out_features();
  if (!model->head) macs += model->config().d_model * model->config().vocab_size;  // a tied head
  return macs;
}

int64_t linear_macs_at(Gpt& model, const Budget& budget) {
  RankGuard guard(model);
  model->apply_budget(budget);
  return linear_macs_per_token(*model);
}

Budget uniform_rank_budget(Gpt& model, double fraction) {
  check_fraction(fraction);
  int64_t largest = 0;
  for (const auto& [name, p] : model->projections()) largest = std::max(largest, p->max_rank());
  check(largest > 0, "this model has no NSN layers: convert it first");
  const double target = fraction * double(dense_linear_macs(model));
  Budget best{1};
  double best_gap = 1e300;
  for (int64_t r = 1; r <= largest; ++r) {
    const double gap = std::abs(double(linear_macs_at(model, Budget{r})) - target);
    if (gap < best_gap) best_gap = gap, best = Budget{r};
  }
  return best;
}

Budget energy_rank_budget(Gpt& model, double fraction) {
  check_fraction(fraction);
  torch::NoGradGuard no_grad;
  struct Layer {
    std::string name;
    int64_t cost;                // MACs per rank component
    std::vector<double> share;   // energy share of each component, made non-increasing
  };
  std::vector<Layer> layers;
  int64_t fixed = 0;  // MACs of the non-elastic projections
  for (const auto& [name, p] : model->projections()) {
    auto* nsn = dynamic_cast<NsnLinear*>(p.get());
    if (!nsn) {
      fixed += p->macs();
      continue;
    }
    auto energy = (nsn->B().norm(2, {0}) * nsn->A().norm(2, {1})).to(torch::kFloat64).cpu();  // [R]
    const double total = energy.sum().item<double>();
    Layer l{name, p->in_features() + p->out_features(), {}};
    double prev = 1e300;
    for (int64_t i = 0; i < energy.numel(); ++i) {
      prev = std::min(prev, energy[i].item<double>() / total);
      l.share.push_back(prev);
    }
    layers.push_back(std::move(l));
  }
  check(!layers.empty(), "this model has no NSN layers: convert it first");
  const double target = fraction * double(dense_linear_macs(model));
  // Every layer keeps rank 1; then take the best energy-per-MAC next component anywhere.
  std::vector<int64_t> rank(layers.size(), 1);
  double macs = double(fixed);
  for (const auto& l : layers) macs += double(l.cost);
  using Item = std::pair<double, size_t>;  // (share per MAC of the layer's next component, layer)
  std::priority_queue<Item> heap;
  for (size_t i = 0; i < layers.size(); ++i)
    if (layers[i].share.size() > 1) heap.push({layers[i].share[1] / double(layers[i].cost), i});
  while (!heap.empty()) {
    const auto [score, i] = heap.top();
    heap.pop();
    if (std::abs(macs + double(layers[i].cost) - target) >= std::abs(macs - target)) break;
    macs += double(layers[i].cost);
    ++rank[i];
    if (rank[i] < int64_t(layers[i].share.size())) heap.push({layers[i].share[rank[i]] / double(layers[i].cost), i});
  }
  Budget b;
  for (size_t i = 0; i < layers.size(); ++i) b.layer_rank[layers[i].name] = rank[i];
  return b;
}

RankSensitivity measure_rank_sensitivity(Gpt& model, const std::vector<int64_t>& tokens, int64_t windows,
                                         int64_t step, const ProgressFn& progress) {
  check(step >= 1, "the sensitivity rank step must be at least 1");
  check(windows >= 1, "sensitivity needs at least one calibration window");
  check(int64_t(tokens.size()) > model->config().context,
        "the calibration text is shorter than one context window (" + std::to_string(model->config().context + 1) +
            " tokens)");
  RankGuard guard(model);
  int64_t R = 0, layers = 0;
  for (const auto& [name, p] : model->projections())
    if (p->max_rank() > 0) ++layers, R = std::max(R, p->max_rank());
  check(layers > 0, "this model has no NSN layers: convert it first");

  RankSensitivity s;
  for (int64_t r = step; r < R; r += step) s.grid.push_back(r);
  s.grid.push_back(R);
  const int64_t total = layers * int64_t(s.grid.size()) + 1;
  int64_t done = 0;
  auto loss_at = [&](const Budget& b) {
    model->apply_budget(b);
    const double loss = evaluate_tokens(model, tokens, windows).loss;
    report(progress, {"sensitivity", ++done, total});
    return loss;
  };
  s.full_loss = loss_at(Budget{});
  for (const auto& [name, p] : model->projections()) {
    if (p->max_rank() == 0) continue;
    auto& curve = s.loss[name];
    for (int64_t r : s.grid)
      curve.push_back(r >= p->max_rank() ? s.full_loss : loss_at(Budget{0, {{name, r}}}));
  }
  report(progress, {"sensitivity", total, total});
  return s;
}

Budget sensitivity_rank_budget(Gpt& model, const RankSensitivity& s, double fraction) {
  check_fraction(fraction);
  check(!s.grid.empty() && !s.loss.empty(), "no rank sensitivity was measured");
  struct Layer {
    std::string name;
    int64_t cost;               // MACs per rank component
    int64_t max_rank;
    const std::vector<double>* loss;
    size_t at = 0;              // index into the grid
  };
  std::vector<Layer> layers;
  double macs = 0;
  for (const auto& [name, p] : model->projections()) {
    const auto it = s.loss.find(name);
    if (p->max_rank() == 0 || it == s.loss.end()) {
      check(p->max_rank() == 0, "no sensitivity was measured for " + name);
      macs += double(p->in_features() * p->out_features());
      continue;
    }
    check(it->second.size() == s.grid.size(), "the sensitivity of " + name + " does not match its grid");
    layers.push_back({name, p->in_features() + p->out_features(), p->max_rank(), &it->second});
    macs += double(layers.back().cost * std::min(s.grid[0], p->max_rank()));
  }
  const double target = fraction * double(dense_linear_macs(model));
  while (true) {
    // The best upgrade anywhere: a jump from a layer's grid point to any higher one.
    double best_ratio = -1e300, best_cost = 0;
    size_t best_layer = 0, best_to = 0;
    for (size_t i = 0; i < layers.size(); ++i) {
      const auto& l = layers[i];
      for (size_t j = l.at + 1; j < s.grid.size(); ++j) {
        const double cost = double(l.cost * (std::min(s.grid[j], l.max_rank) - std::min(s.grid[l.at], l.max_rank)));
        if (cost <= 0 || std::abs(macs + cost - target) >= std::abs(macs - target)) continue;  // overshoots
        const double ratio = ((*l.loss)[l.at] - (*l.loss)[j]) / cost;
        if (ratio > best_ratio) best_ratio = ratio, best_cost = cost, best_layer = i, best_to = j;
      }
    }
    if (best_cost == 0) break;
    macs += best_cost;
    layers[best_layer].at = best_to;
  }
  Budget b;
  for (const auto& l : layers) b.layer_rank[l.name] = std::min(s.grid[l.at], l.max_rank);
  return b;
}

}  // namespace nestscope
