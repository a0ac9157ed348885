// Checkpoint: model weights as safetensors, config/tokenizer/training facts as JSON metadata.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/model/config.h"
#include "core/model/transformer.h"
#include "core/text/tokenizer.h"

namespace nestscope {

struct LoadedModel {
  std::string source;  // path, or "<embedded default model>"
  ModelConfig config;
  std::unique_ptr<Tokenizer> tokenizer;
  Gpt model{nullptr};
  std::string training_json;  // "{}" when the checkpoint has no training record
  // Tensors that are not model parameters (e.g. "train.nsn.log_var"): names start with "train.".
  std::map<std::string, torch::Tensor> extras;
  // FNV-1a 64 of the checkpoint's bytes (16 hex digits); empty for a model made in this session.
  std::string hash;
};

class SafetensorsFile;
struct TensorRecord;
// A floating-point tensor of a safetensors file as float32 (F32, F16, BF16, F64); throws Error
// naming the tensor for any other dtype.
torch::Tensor to_float_tensor(const SafetensorsFile& file, const TensorRecord& record);

// FNV-1a 64 of `size` bytes as 16 hex digits: the key of everything cached per checkpoint.
std::string content_hash(const void* data, size_t size);

// Writes atomically; the model's parameters go out as F32 under their module names.
void save_checkpoint(const std::string& path, Gpt& model, const Tokenizer& tokenizer,
                     const std::string& training_json, const std::map<std::string, torch::Tensor>& extras = {});
// Validates everything (format, config, every tensor's name, dtype, shape and finiteness)
// before returning; throws Error naming the file and the tensor at fault.
LoadedModel load_checkpoint(const std::string& path);
LoadedModel load_checkpoint_bytes(std::vector<uint8_t> bytes, const std::string& source);

}  // namespace nestscope
