// The safetensors reader on arbitrary bytes: every accepted header must describe byte ranges
// inside the file, and what it accepted must serialize and parse back to the same records.
#include "core/io/safetensors.h"
#include "tests/fuzz/fuzz_util.h"

using namespace nestscope;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto f = SafetensorsFile::parse(std::vector<uint8_t>(data, data + size), "fuzz.safetensors");
    std::vector<TensorToWrite> out;
    uint64_t checksum = 0;
    for (const auto& t : f.tensors()) {
      if (t.end < t.begin || f.data(t) + (t.end - t.begin) > f.bytes() + f.size()) fuzz::fail("tensor outside the file");
      if (uint64_t(t.numel()) * dtype_size(t.dtype) != t.end - t.begin) fuzz::fail("shape does not match bytes");
      for (uint64_t i = 0; i < t.end - t.begin; ++i) checksum += f.data(t)[i];  // every byte readable
      out.push_back({t.name, t.dtype, t.shape, f.data(t)});
    }
    const std::string again = serialize_safetensors(out, f.metadata());
    const auto g = SafetensorsFile::parse(std::vector<uint8_t>(again.begin(), again.end()), "again");
    if (g.tensors().size() != f.tensors().size() || g.metadata() != f.metadata()) fuzz::fail("round trip differs");
    (void)checksum;
  } catch (const Error&) {
  }
  return 0;
}
