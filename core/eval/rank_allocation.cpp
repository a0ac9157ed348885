#include "core/eval/rank_allocation.h"

#include <queue>

#include "core/error.h"
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
  return macs;
}

int64_t linear_macs_at(Gpt& model, const Budget& budget) {
  RankGuard guard(model);
  model->apply_budget(budget);
  return model->linear_macs_per_token();
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

}  // namespace nestscope
