#include "core/io/checkpoint.h"

#include <cstdio>
#include <cstring>
#include <set>

#include "core/error.h"
#include "core/io/atomic_file.h"
#include "core/io/safetensors.h"
#include "core/layers/weight_init.h"

namespace nestscope {

namespace {

constexpr const char* kFormat = "nestscope.checkpoint.v1";
constexpr const char* kExtraPrefix = "train.";

std::string shape_str(c10::IntArrayRef s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? "," : "") + std::to_string(s[i]);
  return out + "]";
}

}  // namespace

torch::Tensor to_float_tensor(const SafetensorsFile& f, const TensorRecord& r) {
  auto st = [&]() -> c10::ScalarType {
    switch (r.dtype) {
      case DType::F32: return torch::kFloat32;
      case DType::F64: return torch::kFloat64;
      case DType::F16: return torch::kFloat16;
      case DType::BF16: return torch::kBFloat16;
      default:
        throw Error(f.source() + ": tensor '" + r.name + "' has dtype " + dtype_name(r.dtype) +
                    ", expected a floating-point type (F32, F16, BF16 or F64)");
    }
  }();
  auto t = torch::empty(r.shape, torch::TensorOptions().dtype(st));
  std::memcpy(t.data_ptr(), f.data(r), r.end - r.begin);  // copy: file data may be unaligned
  return t.to(torch::kFloat32);
}

void save_checkpoint(const std::string& path, Gpt& model, const Tokenizer& tokenizer,
                     const std::string& training_json, const std::map<std::string, torch::Tensor>& extras) {
  std::vector<torch::Tensor> keep;  // owns the CPU copies while serializing
  std::vector<TensorToWrite> out;
  auto add = [&](const std::string& name, const torch::Tensor& value) {
    auto t = value.detach().to(torch::kCPU, torch::kFloat32).contiguous();
    keep.push_back(t);
    out.push_back({name, DType::F32, t.sizes().vec(), t.data_ptr()});
  };
  for (const auto& item : model->named_parameters()) add(item.key(), item.value());
  for (const auto& [name, t] : extras) {
    check(name.rfind(kExtraPrefix, 0) == 0, "checkpoint extra '" + name + "' must start with 'train.'");
    add(name, t);
  }
  std::map<std::string, std::string> meta = {
      {"format", kFormat},
      {"config", model->config().to_json()},
      {"tokenizer", tokenizer.to_json()},
      {"training", training_json.empty() ? "{}" : training_json},
  };
  write_safetensors(path, out, meta);
}

std::string content_hash(const void* data, size_t size) {
  uint64_t h = 1469598103934665603ull;
  const auto* p = static_cast<const uint8_t*>(data);
  for (size_t i = 0; i < size; ++i) h = (h ^ p[i]) * 1099511628211ull;
  char out[17];
  std::snprintf(out, sizeof out, "%016llx", static_cast<unsigned long long>(h));
  return out;
}

LoadedModel load_checkpoint(const std::string& path) { return load_checkpoint_bytes(read_file_bytes(path), path); }

LoadedModel load_checkpoint_bytes(std::vector<uint8_t> bytes, const std::string& source) {
  const std::string hash = content_hash(bytes.data(), bytes.size());
  const auto file = SafetensorsFile::parse(std::move(bytes), source);
  auto fail = [&](const std::string& why) { throw Error(source + ": " + why); };
  const auto& meta = file.metadata();
  auto get = [&](const char* key) -> const std::string& {
    auto it = meta.find(key);
    if (it == meta.end()) fail(std::string("not a NestScope checkpoint (no '") + key + "' in __metadata__)");
    return it->second;
  };
  if (get("format") != kFormat) fail("unsupported checkpoint format '" + get("format") + "', expected " + kFormat);

  LoadedModel m;
  m.source = source;
  m.hash = hash;
  try {
    m.config = ModelConfig::from_json(get("config"));
    m.tokenizer = tokenizer_from_json(get("tokenizer"));
  } catch (const Cancelled&) {
    throw;
  } catch (const Error& e) {
    fail(e.what());
  }
  // Equal for trained models; imported ones may pad the embedding past the tokenizer.
  if (m.tokenizer->vocab_size() > m.config.vocab_size)
    fail("tokenizer has " + std::to_string(m.tokenizer->vocab_size()) + " tokens but the config says vocab_size " +
         std::to_string(m.config.vocab_size));
  auto training = meta.find("training");
  m.training_json = training == meta.end() ? "{}" : training->second;

  {
    SkipWeightInit filled_next;  // every parameter is copied from the file below
    m.model = Gpt(m.config);
  }
  torch::NoGradGuard no_grad;
  std::set<std::string> expected;
  for (auto& item : m.model->named_parameters()) {
    const std::string& name = item.key();
    expected.insert(name);
    const TensorRecord* r = file.find(name);
    if (!r) fail("tensor '" + name + "' is missing");
    auto& param = item.value();
    if (c10::IntArrayRef(r->shape) != param.sizes())
      fail("tensor '" + name + "' has shape " + shape_str(r->shape) + ", expected " + shape_str(param.sizes()));
    auto t = to_float_tensor(file, *r);
    if (!torch::isfinite(t).all().item<bool>()) fail("tensor '" + name + "' contains NaN or Inf values");
    param.copy_(t);
  }
  for (const auto& r : file.tensors()) {
    if (expected.count(r.name)) continue;
    if (r.name.rfind(kExtraPrefix, 0) != 0) fail("unexpected tensor '" + r.name + "' (not part of this architecture)");
    auto t = to_float_tensor(file, r);
    if (!torch::isfinite(t).all().item<bool>()) fail("tensor '" + r.name + "' contains NaN or Inf values");
    m.extras[r.name] = t;
  }
  m.model->eval();
  return m;
}

}  // namespace nestscope
