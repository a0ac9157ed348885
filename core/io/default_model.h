// The default model (PicoGPT trained by NestScope's own trainer), embedded in the binary.
#pragma once
#include <cstdint>
#include <vector>

namespace nestscope {

// True when the build found resources/models/picogpt.safetensors and embedded it.
bool has_default_model();
// The embedded checkpoint bytes; throws Error when the build had none.
std::vector<uint8_t> default_model_bytes();

}  // namespace nestscope
