// VariantReport: what building a model's variants did (torch-free, for the Engine's callers).
#pragma once
#include <cstdint>
#include <string>

namespace nestscope {

struct VariantReport {
  int64_t built = 0;        // layers decomposed now
  int64_t from_cache = 0;   // layers read from the cache file
  std::string cache_path;   // empty: no cache asked
  std::string cache_note;   // why the cache was not used or written ("" when it was)
  double seconds = 0;
};

}  // namespace nestscope
