// LinearKind: the registry of ElasticLinear parameterizations (torch-free).
#pragma once
#include <string>

namespace nestscope {

enum class LinearKind { Dense, Nsn, Mpo };
const char* linear_kind_name(LinearKind kind);          // "dense", "nsn", "mpo"
LinearKind parse_linear_kind(const std::string& name);  // throws Error on an unknown name

}  // namespace nestscope
