#include "core/layers/linear_kind.h"

#include "core/error.h"

namespace nestscope {

const char* linear_kind_name(LinearKind kind) {
  return kind == LinearKind::Nsn ? "nsn" : kind == LinearKind::Mpo ? "mpo" : "dense";
}

LinearKind parse_linear_kind(const std::string& name) {
  for (auto k : {LinearKind::Dense, LinearKind::Nsn, LinearKind::Mpo})
    if (name == linear_kind_name(k)) return k;
  throw Error("unknown parameterization '" + name + "' (use dense, nsn or mpo)");
}

}  // namespace nestscope
