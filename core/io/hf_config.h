// Hugging Face model folders, the torch-free half: the architecture tables (checkpoint tensor
// names -> NestScope parameter names, with layouts), config.json <-> ModelConfig, and the shard
// index. Kept apart from the tensor moving (hf_model.cpp) so the parsers can be fuzzed on their own.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/model/config.h"

namespace nestscope {

// How a checkpoint tensor is laid out relative to ours.
enum class HfLayout {
  Same,             // as ours ([out, in] for linear weights)
  Conv1D,           // GPT-2's Conv1D: [in, out], transposed on the way in and out
  Rows,             // a table whose first rows are ours (position embeddings longer than the kept context)
  HeadInterleaved,  // GPT-NeoX's fused q|k|v: rows grouped per head, [H, parts, hd, ...]
};

// One checkpoint tensor -> one or more of our parameters ("{l}" = layer). Several targets split the
// checkpoint tensor along the output dimension (GPT-2's fused c_attn = q | k | v).
struct HfTensorRule {
  std::string hf;
  std::vector<std::string> ours;
  HfLayout layout = HfLayout::Same;
};

struct HfArchitecture {
  std::string model_type;
  std::string prefix;  // optional prefix on every checkpoint name ("transformer." in some GPT-2 files)
  std::vector<HfTensorRule> global, layer;
  std::vector<std::string> ignored;  // name suffixes of non-parameters some files carry
  // Every rule with "{l}" expanded for each layer.
  std::vector<HfTensorRule> expand(int64_t layers) const;
};

// The architectures there are, by config.json's model_type: "gpt2", "llama", "gpt_neox", "qwen2",
// "mistral".
const std::vector<HfArchitecture>& hf_architecture_table();
const std::vector<std::string>& hf_architectures();

struct HfModelConfig {
  const HfArchitecture* arch = nullptr;
  ModelConfig config;  // dense, validated
};
// config.json text -> the architecture and our config (context capped at max_context). Throws Error
// naming `source` for bad JSON, an unknown model_type, unsupported options or invalid sizes.
HfModelConfig parse_hf_config(const std::string& text, const std::string& source, int64_t max_context);

struct HfExportPlan {
  const HfArchitecture* arch = nullptr;
  ModelConfig config;       // what the folder holds: dense, the architecture's fixed choices explicit
  std::string config_json;  // config.json text
};
// The first architecture that can express `model`; throws Error listing why none can.
HfExportPlan plan_hf_export(const ModelConfig& model);

// model.safetensors.index.json text -> tensor name -> shard file name (plain names in the folder).
std::map<std::string, std::string> parse_hf_index(const std::string& text, const std::string& source);

}  // namespace nestscope
