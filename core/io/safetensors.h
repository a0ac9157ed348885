// Safetensors read/write (https://github.com/huggingface/safetensors format), bounds-checked.
// Torch-free: tensors are typed byte ranges, so the parser can be fuzzed on its own.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace nestscope {

enum class DType { F64, F32, F16, BF16, I64, I32, I16, I8, U8, Bool };
const char* dtype_name(DType d);
size_t dtype_size(DType d);

struct TensorRecord {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // offsets into the data section
  uint64_t end = 0;
  int64_t numel() const;
};

// A parsed file: header validated against the data section. Owns its bytes.
class SafetensorsFile {
 public:
  // `source` names the file in error messages.
  static SafetensorsFile parse(std::vector<uint8_t> bytes, const std::string& source);
  static SafetensorsFile read(const std::string& path);

  const std::string& source() const { return source_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::vector<TensorRecord>& tensors() const { return tensors_; }
  const TensorRecord* find(const std::string& name) const;
  const uint8_t* data(const TensorRecord& t) const { return bytes_->data() + data_start_ + t.begin; }

 private:
  std::string source_;
  std::shared_ptr<std::vector<uint8_t>> bytes_;
  size_t data_start_ = 0;
  std::map<std::string, std::string> metadata_;
  std::vector<TensorRecord> tensors_;  // in file order
};

struct TensorToWrite {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const void* data = nullptr;  // numel * dtype_size bytes
};

// The file contents; header padded to 8 bytes, tensors laid out in the given order.
std::string serialize_safetensors(const std::vector<TensorToWrite>& tensors,
                                  const std::map<std::string, std::string>& metadata);
// Atomic: a failed write leaves any existing file at `path` intact.
void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata);

}  // namespace nestscope
