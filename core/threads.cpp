#include "core/threads.h"

#include <algorithm>
#include <cstdlib>
#include <thread>

namespace nestscope {

int default_threads() {
  if (const char* env = std::getenv("NESTSCOPE_THREADS")) {
    const int n = std::atoi(env);
    if (n > 0) return n;
  }
  return int(std::max(1u, std::thread::hardware_concurrency()));
}

}  // namespace nestscope
