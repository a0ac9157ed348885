// config.json and model.safetensors.index.json readers on arbitrary text (first byte picks which).
// An accepted config must validate and export back to a config.json that reads to the same model.
#include "core/io/hf_config.h"
#include "tests/fuzz/fuzz_util.h"

using namespace nestscope;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string text(reinterpret_cast<const char*>(data) + 1, size - 1);
  try {
    if (data[0] & 1) {
      const auto map = parse_hf_index(text, "index.json");
      for (const auto& [name, shard] : map)
        if (shard.empty() || shard.find('/') != std::string::npos || shard == "..") fuzz::fail("shard escapes the folder");
      return 0;
    }
    const auto parsed = parse_hf_config(text, "config.json", 4096);
    parsed.config.validate();
    if (parsed.config.parameter_count() <= 0) fuzz::fail("non-positive parameter count");
    const auto plan = plan_hf_export(parsed.config);
    const auto back = parse_hf_config(plan.config_json, "exported", 4096);
    if (back.config != plan.config) fuzz::fail("export -> import changed the config");
  } catch (const Error&) {
  }
  return 0;
}
