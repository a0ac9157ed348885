// VariantSet: other parameterizations of a model's projections holding the same weights (SVD
// factors, a TT-SVD chain, a dense matrix), by projection name and kind. A budget that asks for a
// kind swaps the variant into the projection's slot; only the model's own projections are
// registered modules, so checkpoints and training never see variants. Built by core/variants/.
#pragma once
#include <cstdint>
#include <iterator>
#include <map>
#include <memory>
#include <string>
#include <utility>

#include "core/layers/elastic_linear.h"
#include "core/layers/linear_kind.h"

namespace nestscope {

class VariantSet {
 public:
  void set(const std::string& name, LinearKind kind, std::shared_ptr<ElasticLinear> layer) {
    layers_[name][kind] = std::move(layer);
  }
  bool has(const std::string& name, LinearKind kind) const { return get(name, kind) != nullptr; }
  std::shared_ptr<ElasticLinear> get(const std::string& name, LinearKind kind) const {
    auto it = layers_.find(name);
    if (it == layers_.end()) return nullptr;
    auto k = it->second.find(kind);
    return k == it->second.end() ? nullptr : k->second;
  }
  void clear() { layers_.clear(); }
  // Drops every variant `keep(name, kind)` says no to (frees its memory once no budget uses it).
  template <class Keep>
  void release_unless(const Keep& keep) {
    for (auto it = layers_.begin(); it != layers_.end();) {
      for (auto k = it->second.begin(); k != it->second.end();)
        k = keep(it->first, k->first) ? std::next(k) : it->second.erase(k);
      it = it->second.empty() ? layers_.erase(it) : std::next(it);
    }
  }
  // The largest NSN rank and MPO χ any variant offers (0 = none).
  std::pair<int64_t, int64_t> limits() const {
    int64_t rank = 0, bond = 0;
    for (const auto& [name, kinds] : layers_)
      for (const auto& [kind, p] : kinds) {
        rank = std::max(rank, p->max_rank());
        bond = std::max(bond, p->reach_bond());
      }
    return {rank, bond};
  }

 private:
  std::map<std::string, std::map<LinearKind, std::shared_ptr<ElasticLinear>>> layers_;
};

}  // namespace nestscope
