#include "core/model/linear_factory.h"

#include "core/layers/dense_linear.h"
#include "core/layers/mpo_linear.h"
#include "core/layers/nsn_linear.h"

namespace nestscope {

std::shared_ptr<ElasticLinear> make_linear(const ModelConfig& cfg, const std::string& family) {
  const auto [in, out] = cfg.family_shape(family);
  const bool bias = cfg.family_has_bias(family);
  switch (cfg.linear_spec(family).kind) {
    case LinearKind::Nsn:
      return std::make_shared<NsnLinear>(in, out, cfg.nsn_max_rank(family), bias, cfg.init_std);
    case LinearKind::Mpo: {
      auto [of, inf] = cfg.mpo_factors(family);
      return std::make_shared<MpoLinear>(in, out, std::move(of), std::move(inf), cfg.linear_spec(family).bond, bias,
                                         cfg.init_std);
    }
    case LinearKind::Dense:
      break;
  }
  return std::make_shared<DenseLinear>(in, out, bias, cfg.init_std);
}

}  // namespace nestscope
