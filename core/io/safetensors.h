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

// A parsed file: header validated against the data section. Owns its bytes (a buffer or a
// read-only memory map; copies share them).
class SafetensorsFile {
 public:
  // `source` names the file in error messages.
  static SafetensorsFile parse(std::vector<uint8_t> bytes, const std::string& source);
  static SafetensorsFile read(const std::string& path);
  // Memory-maps the file read-only: tensors are paged in as they are read, so converting a 1 GB
  // checkpoint does not hold a second copy of it. The file must not change while this is alive.
  static SafetensorsFile map(const std::string& path);

  const std::string& source() const { return source_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::vector<TensorRecord>& tensors() const { return tensors_; }
  const TensorRecord* find(const std::string& name) const;
  const uint8_t* data(const TensorRecord& t) const { return base_ + data_start_ + t.begin; }
  const uint8_t* bytes() const { return base_; }  // the whole file
  size_t size() const { return size_; }
  // Mapped files: drops the pages of file bytes [begin, end) from this process (read-once data
  // stops counting toward its resident memory; reading them again pages them back in). No-op for
  // buffers.
  void release(uint64_t begin, uint64_t end) const;  // file offsets
  void release(const TensorRecord& t) const { release(data_start_ + t.begin, data_start_ + t.end); }
  uint64_t data_start() const { return data_start_; }  // file offset of the data section

 private:
  static SafetensorsFile parse_span(std::shared_ptr<const void> owner, const uint8_t* base, size_t size,
                                    const std::string& source);
  std::string source_;
  std::shared_ptr<const void> owner_;  // keeps base_ alive
  const uint8_t* base_ = nullptr;
  size_t size_ = 0;
  bool mapped_ = false;
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
