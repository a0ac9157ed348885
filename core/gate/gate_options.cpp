#include "core/gate/gate_options.h"

#include <algorithm>

#include <string>

#include "core/error.h"

namespace nestscope {

int64_t gate_block(int64_t requested, int64_t width) {
  if (requested < 1 || width < 1) return requested;
  for (int64_t b = std::min(requested, width); b > 1; --b)
    if (width % b == 0) return b;
  return 1;
}

const char* gate_policy_name(GatePolicy p) {
  switch (p) {
    case GatePolicy::Off: return "off";
    case GatePolicy::Sensing: return "sensing";
    case GatePolicy::Oracle: return "oracle";
    case GatePolicy::Static: return "static";
    case GatePolicy::Random: return "random";
  }
  return "?";
}

const char* measurement_name(MeasurementKind k) {
  return k == MeasurementKind::Rademacher ? "rademacher" : k == MeasurementKind::Gaussian ? "gaussian" : "pca";
}
const char* recovery_name(Recovery r) { return r == Recovery::Iht ? "iht" : "mmse"; }

MeasurementKind parse_measurement(const char* name) {
  for (auto k : {MeasurementKind::Rademacher, MeasurementKind::Gaussian, MeasurementKind::Pca})
    if (std::string(name) == measurement_name(k)) return k;
  throw Error(std::string("unknown measurement operator '") + name + "' (rademacher, gaussian, pca)");
}

Recovery parse_recovery(const char* name) {
  for (auto r : {Recovery::Iht, Recovery::Mmse})
    if (std::string(name) == recovery_name(r)) return r;
  throw Error(std::string("unknown recovery '") + name + "' (iht, mmse)");
}

const char* head_ranking_name(HeadRanking r) {
  return r == HeadRanking::Probed ? "probed" : r == HeadRanking::Oracle ? "oracle" : "random";
}

HeadRanking parse_head_ranking(const char* name) {
  for (auto r : {HeadRanking::Probed, HeadRanking::Oracle, HeadRanking::Random})
    if (std::string(name) == head_ranking_name(r)) return r;
  throw Error(std::string("unknown head ranking '") + name + "' (probed, oracle, random)");
}

GatePolicy parse_gate_policy(const char* name) {
  for (GatePolicy p : {GatePolicy::Off, GatePolicy::Sensing, GatePolicy::Oracle, GatePolicy::Static, GatePolicy::Random})
    if (std::string(name) == gate_policy_name(p)) return p;
  throw Error(std::string("unknown gate policy '") + name + "' (off, sensing, oracle, static, random)");
}

}  // namespace nestscope
