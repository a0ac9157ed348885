// JSON from strangers: parsed without exceptions, then numbers a reader might take as integers
// are bounded (nlohmann converts a float to an integer with a plain cast, undefined beyond the
// integer's range) and nesting is capped. Header-only and torch-free, for every reader and fuzzer.
#pragma once
#include <cmath>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "core/error.h"

namespace nestscope {

namespace detail {
inline void check_json_tree(const nlohmann::json& j, const std::string& source, int depth) {
  if (depth > 64) throw Error(source + ": JSON nested deeper than 64 levels");
  if (j.is_number_float() && !(std::fabs(j.get<double>()) < 9.2e18))
    throw Error(source + ": number " + j.dump() + " is out of range");
  if (j.is_structured())
    for (const auto& v : j) check_json_tree(v, source, depth + 1);
}
}  // namespace detail

// The parsed value (discarded when `text` is not JSON: callers report that in their own words);
// throws Error naming `source` for out-of-range numbers or excessive nesting.
inline nlohmann::json parse_json(std::string_view text, const std::string& source) {
  auto j = nlohmann::json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (!j.is_discarded()) detail::check_json_tree(j, source, 0);
  return j;
}

}  // namespace nestscope
