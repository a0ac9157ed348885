#include "core/error.h"

namespace nestscope {

void check(bool cond, const std::string& message) {
  if (!cond) throw Error(message);
}

}  // namespace nestscope
