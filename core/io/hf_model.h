// Hugging Face model folders: import (config.json, model.safetensors or a sharded
// model.safetensors.index.json, tokenizer.json) and export. Architectures are data: each is a
// table from checkpoint tensor names to NestScope's parameter names plus a layout (llama.cpp's
// habit), so another family is one more table in hf_model.cpp.
#pragma once
#include <string>
#include <vector>

#include "core/io/checkpoint.h"
#include "core/io/hf_config.h"

namespace nestscope {

struct HfImportOptions {
  // Longest context kept: the KV cache is allocated for it, and Llama configs often claim 4k–128k.
  int64_t max_context = 4096;
  // Auto keeps a bfloat16 checkpoint in bfloat16 (read in place by the bf16 kernels).
  WeightStorage weights = WeightStorage::Auto;
};

// True when `path` is a folder holding a config.json.
bool is_hf_folder(const std::string& path);

// Validates every file, name, shape, dtype (F32, F16, BF16, F64; converted to float32) and value
// before building the model; throws Error naming the file and the tensor at fault. Weights are
// read through a memory map, one tensor at a time, into float32 or bfloat16 (options.weights).
LoadedModel import_hf_folder(const std::string& dir, const HfImportOptions& options = {});

// Writes config.json, model.safetensors (F32) and tokenizer.json to `dir` (created if needed;
// each file atomically), as "gpt2" (LayerNorm models; sinusoidal positions are written as the
// learned table they equal, absent biases as zeros), "llama" (RMSNorm + rotary + gated MLP) or
// "gpt_neox" (LayerNorm + rotary, e.g. partial, parallel or sequential residual).
// Projections go out as their dense matrices at the model's current budget (NSN rank, MPO χ).
// Throws Error when no architecture can express the model. Returns the architecture written.
std::string export_hf_folder(const std::string& dir, Gpt& model, const Tokenizer& tokenizer);

}  // namespace nestscope
