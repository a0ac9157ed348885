#include "core/io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/io/atomic_file.h"

namespace nestscope {

using nlohmann::json;

namespace {

struct DTypeInfo {
  DType dtype;
  const char* name;
  size_t size;
};
constexpr DTypeInfo kDTypes[] = {
    {DType::F64, "F64", 8}, {DType::F32, "F32", 4}, {DType::F16, "F16", 2}, {DType::BF16, "BF16", 2},
    {DType::I64, "I64", 8}, {DType::I32, "I32", 4}, {DType::I16, "I16", 2}, {DType::I8, "I8", 1},
    {DType::U8, "U8", 1},   {DType::Bool, "BOOL", 1},
};

// Headers above this are refused before any allocation: real ones are kilobytes.
constexpr uint64_t kMaxHeaderBytes = 100u << 20;

}  // namespace

const char* dtype_name(DType d) {
  for (const auto& i : kDTypes) if (i.dtype == d) return i.name;
  return "?";
}

size_t dtype_size(DType d) {
  for (const auto& i : kDTypes) if (i.dtype == d) return i.size;
  return 0;
}

int64_t TensorRecord::numel() const {
  int64_t n = 1;
  for (auto s : shape) n *= s;
  return n;
}

SafetensorsFile SafetensorsFile::read(const std::string& path) { return parse(read_file_bytes(path), path); }

SafetensorsFile SafetensorsFile::parse(std::vector<uint8_t> bytes, const std::string& source) {
  auto owner = std::make_shared<std::vector<uint8_t>>(std::move(bytes));
  return parse_span(owner, owner->data(), owner->size(), source);
}

SafetensorsFile SafetensorsFile::map(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  check(fd >= 0, path + ": cannot open (" + std::strerror(errno) + ")");
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(path + ": not a regular file");
  }
  const size_t size = size_t(st.st_size);
  void* p = size > 0 ? ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0) : nullptr;
  ::close(fd);  // the mapping stays valid
  check(size == 0 || p != MAP_FAILED, path + ": cannot map (" + std::strerror(errno) + ")");
  if (size == 0) return parse(std::vector<uint8_t>(), path);  // reports the truncation
  std::shared_ptr<const void> owner(p, [size](const void* q) { ::munmap(const_cast<void*>(q), size); });
  auto f = parse_span(owner, static_cast<const uint8_t*>(p), size, path);
  f.mapped_ = true;
  return f;
}

void SafetensorsFile::release(uint64_t begin, uint64_t end) const {
  if (!mapped_ || end > size_ || begin >= end) return;
  const uint64_t page = uint64_t(::sysconf(_SC_PAGESIZE));
  const uint64_t a = (begin + page - 1) / page * page, b = end / page * page;  // whole pages inside
  if (a < b) ::madvise(const_cast<uint8_t*>(base_) + a, b - a, MADV_DONTNEED);
}

SafetensorsFile SafetensorsFile::parse_span(std::shared_ptr<const void> owner, const uint8_t* bytes, size_t size,
                                            const std::string& source) {
  auto fail = [&](const std::string& why) -> void { throw Error(source + ": " + why); };
  if (size < 8)
    fail("file is truncated (" + std::to_string(size) +
         " bytes; a safetensors file starts with an 8-byte header length)");
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | bytes[i];  // little-endian u64
  if (header_len > kMaxHeaderBytes) fail("header claims " + std::to_string(header_len) + " bytes, more than the 100 MiB allowed");
  if (header_len > size - 8)
    fail("file is truncated: header claims " + std::to_string(header_len) + " bytes but only " +
         std::to_string(size - 8) + " follow");

  SafetensorsFile f;
  f.source_ = source;
  f.data_start_ = 8 + header_len;
  const uint64_t data_size = size - f.data_start_;
  json header = json::parse(bytes + 8, bytes + 8 + header_len, nullptr, /*allow_exceptions=*/false);
  if (!header.is_object()) fail("header is not a JSON object");

  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) fail("__metadata__ is not an object");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string()) fail("__metadata__ entry '" + m.key() + "' is not a string");
        f.metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string where = "tensor '" + name + "'";
    if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets"))
      fail(where + " needs dtype, shape and data_offsets");
    TensorRecord t;
    t.name = name;
    const json& dt = v["dtype"];
    if (!dt.is_string()) fail(where + " has a non-string dtype");
    const auto* info = std::find_if(std::begin(kDTypes), std::end(kDTypes),
                                    [&](const DTypeInfo& i) { return dt.get<std::string>() == i.name; });
    if (info == std::end(kDTypes)) fail(where + " has unsupported dtype '" + dt.get<std::string>() + "'");
    t.dtype = info->dtype;
    const json& shape = v["shape"];
    if (!shape.is_array()) fail(where + " has a shape that is not a list");
    uint64_t numel = 1;
    for (const auto& s : shape) {
      if (!s.is_number_unsigned()) fail(where + " has a shape entry that is not a non-negative integer");
      const uint64_t d = s.get<uint64_t>();
      // Bound the element count by the bytes actually present, before multiplying further.
      if (d != 0 && numel > data_size / d) {
        numel = data_size + 1;
      } else {
        numel *= d;
      }
      t.shape.push_back(int64_t(std::min<uint64_t>(d, uint64_t(INT64_MAX))));
    }
    const json& off = v["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
      fail(where + " has data_offsets that are not two non-negative integers");
    t.begin = off[0].get<uint64_t>();
    t.end = off[1].get<uint64_t>();
    if (t.begin > t.end || t.end > data_size)
      fail(where + " has data_offsets [" + std::to_string(t.begin) + ", " + std::to_string(t.end) +
           "] outside the " + std::to_string(data_size) + "-byte data section (file truncated?)");
    if (numel > data_size || numel * info->size != t.end - t.begin) {
      std::string dims;
      for (auto s : t.shape) dims += (dims.empty() ? "" : ",") + std::to_string(s);
      fail(where + " has shape [" + dims + "] of " + info->name + " which does not match its " +
           std::to_string(t.end - t.begin) + " data bytes");
    }
    f.tensors_.push_back(std::move(t));
  }
  // Byte ranges must not overlap (the format requires a dense, ordered layout).
  std::vector<const TensorRecord*> order;
  for (const auto& t : f.tensors_) order.push_back(&t);
  std::sort(order.begin(), order.end(), [](auto* a, auto* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < order.size(); ++i)
    if (order[i]->begin < order[i - 1]->end)
      fail("tensors '" + order[i - 1]->name + "' and '" + order[i]->name + "' overlap");
  std::sort(f.tensors_.begin(), f.tensors_.end(), [](const auto& a, const auto& b) { return a.begin < b.begin; });
  f.owner_ = std::move(owner);
  f.base_ = bytes;
  f.size_ = size;
  return f;
}

const TensorRecord* SafetensorsFile::find(const std::string& name) const {
  for (const auto& t : tensors_) if (t.name == name) return &t;
  return nullptr;
}

std::string serialize_safetensors(const std::vector<TensorToWrite>& tensors,
                                  const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  std::vector<uint64_t> sizes;
  for (const auto& t : tensors) {
    check(t.name != "__metadata__" && !header.contains(t.name), "safetensors: duplicate tensor name '" + t.name + "'");
    uint64_t n = dtype_size(t.dtype);
    for (auto s : t.shape) {
      check(s >= 0, "safetensors: negative dimension in '" + t.name + "'");
      n *= uint64_t(s);
    }
    header[t.name] = {{"dtype", dtype_name(t.dtype)}, {"shape", t.shape}, {"data_offsets", {offset, offset + n}}};
    sizes.push_back(n);
    offset += n;
  }
  std::string head = header.dump();
  head.append((8 - head.size() % 8) % 8, ' ');  // align the data section to 8 bytes
  std::string out;
  out.reserve(8 + head.size() + offset);
  const uint64_t len = head.size();
  for (int i = 0; i < 8; ++i) out += char((len >> (8 * i)) & 0xFF);
  out += head;
  for (size_t i = 0; i < tensors.size(); ++i) out.append(static_cast<const char*>(tensors[i].data), sizes[i]);
  return out;
}

void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  write_file_atomic(path, serialize_safetensors(tensors, metadata));
}

}  // namespace nestscope
