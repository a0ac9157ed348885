// Budget JSON (one budget, a budget file) and the model config JSON on arbitrary text (first byte
// picks). What loads must serialize and load back equal.
#include "core/model/budget_json.h"
#include "core/model/config.h"
#include "tests/fuzz/fuzz_util.h"

using namespace nestscope;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string text(reinterpret_cast<const char*>(data) + 1, size - 1);
  try {
    switch (data[0] % 3) {
      case 0: {
        const Budget b = budget_from_json(text);
        if (!(budget_from_json(budget_to_json(b)) == b)) fuzz::fail("budget JSON does not round-trip");
        break;
      }
      case 1: {
        for (const auto& nb : parse_budget_list(text, "budgets.json"))
          if (!(budget_from_json(budget_to_json(nb.budget)) == nb.budget)) fuzz::fail("budget list entry does not round-trip");
        break;
      }
      default: {
        const ModelConfig c = ModelConfig::from_json(text);
        if (!(ModelConfig::from_json(c.to_json()) == c)) fuzz::fail("model config does not round-trip");
        (void)c.parameter_count();
      }
    }
  } catch (const Error&) {
  }
  return 0;
}
