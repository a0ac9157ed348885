#include "core/io/hf_model.h"

#include <sys/stat.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"
#include "core/io/atomic_file.h"
#include "core/io/hf_config.h"
#include "core/io/safetensors.h"
#include "core/json_guard.h"
#include "core/text/bpe_tokenizer.h"
#include "core/text/char_tokenizer.h"
#include "core/text/utf8.h"
#include "core/layers/weight_init.h"

namespace nestscope {

namespace {

using Json = nlohmann::json;
namespace fs = std::filesystem;


// A 64-bit FNV-1a over 8-byte words (8× faster than per byte; the key of per-checkpoint caches),
// in 64 MiB chunks whose pages are dropped after reading, so hashing does not hold the file in memory.
std::string file_hash(const SafetensorsFile& f) {
  uint64_t h = 1469598103934665603ull ^ uint64_t(f.size());
  const uint8_t* p = f.bytes();
  constexpr size_t kChunk = size_t(64) << 20;
  for (size_t at = 0; at < f.size(); at += kChunk) {
    const size_t n = std::min(kChunk, f.size() - at);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
      uint64_t w;
      std::memcpy(&w, p + at + i, 8);
      h = (h ^ w) * 1099511628211ull;
    }
    for (; i < n; ++i) h = (h ^ p[at + i]) * 1099511628211ull;
    f.release(at, at + n);
  }
  return content_hash(&h, sizeof h);
}

// A tensor of the file without copying it (a view of the mapped bytes, converted by whoever copies
// from it) when its bytes are aligned for its dtype; otherwise a float32 copy.
torch::Tensor file_view(const SafetensorsFile& f, const TensorRecord& r) {
  c10::ScalarType st = torch::kFloat32;
  switch (r.dtype) {
    case DType::F32: st = torch::kFloat32; break;
    case DType::F16: st = torch::kFloat16; break;
    case DType::BF16: st = torch::kBFloat16; break;
    case DType::F64: st = torch::kFloat64; break;
    default: return to_float_tensor(f, r);  // throws the dtype error
  }
  const auto* p = f.data(r);
  if (reinterpret_cast<uintptr_t>(p) % dtype_size(r.dtype) != 0) return to_float_tensor(f, r);
  return torch::from_blob(const_cast<uint8_t*>(p), r.shape, torch::TensorOptions().dtype(st));
}

// isfinite(t).all() in slices of 1M elements: the whole-tensor form allocates |t| (a float tensor
// as large as t), which for an embedding is hundreds of MB at the import's peak.
template <class Bits>
bool exponents_finite(const Bits* bits, int64_t n, Bits exponent) {
  std::atomic<bool> ok{true};
  at::parallel_for(0, n, int64_t(1) << 18, [&](int64_t begin, int64_t end) {
    uint32_t bad = 0;
    for (int64_t i = begin; i < end; ++i) bad |= uint32_t((bits[i] & exponent) == exponent);
    if (bad) ok = false;
  });
  return ok;
}

bool all_finite(const torch::Tensor& t) {
  // One pass over the bits (an exponent of all ones is Inf or NaN), split over the threads.
  if (t.scalar_type() == torch::kFloat32 && t.is_contiguous() && t.is_cpu())
    return exponents_finite(reinterpret_cast<const uint32_t*>(t.data_ptr<float>()), t.numel(), uint32_t(0x7f800000u));
  if (t.scalar_type() == torch::kBFloat16 && t.is_contiguous() && t.is_cpu())
    return exponents_finite(reinterpret_cast<const uint16_t*>(t.data_ptr<at::BFloat16>()), t.numel(), uint16_t(0x7f80));
  const auto flat = t.reshape({-1});
  constexpr int64_t kSlice = int64_t(1) << 20;
  for (int64_t at = 0; at < flat.numel(); at += kSlice)
    if (!torch::isfinite(flat.narrow(0, at, std::min(kSlice, flat.numel() - at))).all().item<bool>()) return false;
  return true;
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? "," : "") + std::to_string(s[i]);
  return out + "]";
}

// The tokens that end the text, as the folder says: generation_config.json's eos_token_id, else
// config.json's, else tokenizer_config.json's eos_token (by its text). A number or a list.
std::vector<int64_t> hf_stop_ids(const fs::path& dir, const Json& config, const BpeTokenizer& tok);

std::string read_small_file(const fs::path& p, const std::string& what) {
  std::error_code ec;
  check(fs::is_regular_file(p, ec), p.string() + ": " + what + " is missing");
  const auto size = fs::file_size(p, ec);
  check(!ec && size <= (uint64_t(256) << 20), p.string() + ": " + what + " is larger than 256 MiB");
  return read_text_file(p.string());
}

// Our checkpoint-named tensors of `model` at its current budget: projections as dense matrices.
std::map<std::string, torch::Tensor> state_for_export(Gpt& model) {
  std::map<std::string, torch::Tensor> out;
  for (const auto& item : model->named_parameters()) out[item.key()] = item.value().detach();
  for (const auto& item : model->named_buffers())
    if (item.key() == "pos_sin") out["pos_emb"] = item.value().detach();  // the table sinusoids equal
  for (const auto& [name, layer] : model->projections()) {
    if (name == "head" && model->config().tied_head) continue;  // a tied head is written as the embedding
    for (auto it = out.begin(); it != out.end();)
      it = it->first.rfind(name + ".", 0) == 0 ? out.erase(it) : std::next(it);
    out[name + ".weight"] = layer->to_dense().detach();
    if (layer->bias().defined()) out[name + ".bias"] = layer->bias().detach();
  }
  return out;
}

// The weight files of a folder, memory-mapped: one model.safetensors, or the shards an index
// names (every listed tensor in its shard, every shard tensor listed), and where each tensor is.
struct WeightFiles {
  std::vector<SafetensorsFile> files;
  std::map<std::string, std::pair<size_t, const TensorRecord*>> found;  // checkpoint name -> (file, record)
};

WeightFiles map_weight_files(const fs::path& dir) {
  WeightFiles w;
  auto& files = w.files;
  auto& found = w.found;
  const std::string dir_path = dir.string();
  std::error_code ec;
  const fs::path single = dir / "model.safetensors", index = dir / "model.safetensors.index.json";
  if (fs::exists(single, ec)) {
    files.push_back(SafetensorsFile::map(single.string()));
  } else {
    check(fs::exists(index, ec), dir_path + ": neither model.safetensors nor model.safetensors.index.json is present");
    std::map<std::string, size_t> shard_of_file;
    for (const auto& [name, shard] : parse_hf_index(read_small_file(index, "the shard index"), index.string())) {
      if (!shard_of_file.count(shard)) {
        shard_of_file[shard] = files.size();
        files.push_back(SafetensorsFile::map((dir / shard).string()));
      }
      const auto& f = files[shard_of_file[shard]];
      const TensorRecord* r = f.find(name);
      check(r != nullptr, f.source() + ": tensor '" + name + "' is listed in the index but not in this shard");
      found[name] = {shard_of_file[shard], r};
    }
    for (size_t i = 0; i < files.size(); ++i)
      for (const auto& r : files[i].tensors())
        check(found.count(r.name) && found[r.name].first == i,
              files[i].source() + ": tensor '" + r.name + "' is not listed in the shard index");
  }
  if (found.empty())
    for (const auto& r : files[0].tensors()) found[r.name] = {0, &r};
  return w;

}

// Copies checkpoint tensor `t` (already transposed / cut to `rule`'s layout) into our parameters
// `rule.ours`: one matrix in 32 MiB slices (dropping each slice's file pages once copied), heads
// interleaved per head, or row blocks one after another.
void copy_rule(torch::OrderedDict<std::string, torch::Tensor>& params, const HfTensorRule& rule, const torch::Tensor& t,
               const SafetensorsFile& file, const TensorRecord& rec, int64_t n_heads) {
  if (rule.ours.size() == 1 && rule.layout != HfLayout::Conv1D && t.dim() == 2 && t.is_contiguous()) {
    // One matrix stored as ours (embeddings, Llama projections): 32 MiB of rows at a time, each
    // slice's file pages dropped once copied.
    auto& p = params[rule.ours[0]];
    const int64_t row_bytes = t.size(1) * int64_t(dtype_size(rec.dtype));
    const int64_t step = std::max<int64_t>(1, (int64_t(32) << 20) / std::max<int64_t>(1, row_bytes));
    for (int64_t r = 0; r < p.size(0); r += step) {
      const int64_t n = std::min(step, p.size(0) - r);
      p.narrow(0, r, n).copy_(t.narrow(0, r, n));
      const uint64_t at = file.data_start() + rec.begin;
      file.release(at + uint64_t(r * row_bytes), at + uint64_t((r + n) * row_bytes));
    }
  } else if (rule.layout == HfLayout::HeadInterleaved) {
    std::vector<int64_t> grouped = {n_heads, int64_t(rule.ours.size()), -1};  // [H, parts, hd, ...]
    for (int64_t d = 1; d < t.dim(); ++d) grouped.push_back(t.size(d));
    const auto g = t.reshape(grouped);
    for (size_t i = 0; i < rule.ours.size(); ++i) {
      auto& p = params[rule.ours[i]];
      p.copy_(g.select(1, int64_t(i)).reshape(p.sizes()));
    }
  } else {
    int64_t row = 0;
    for (const auto& o : rule.ours) {
      auto& p = params[o];
      p.copy_(t.narrow(0, row, p.size(0)));
      row += p.size(0);
    }
  }
}

std::vector<int64_t> hf_stop_ids(const fs::path& dir, const Json& config, const BpeTokenizer& tok) {
  auto ids_of = [&](const Json& v, const std::string& source) {
    std::vector<int64_t> ids;
    for (const auto& x : v.is_array() ? v : Json::array({v})) {
      check(x.is_number_integer(), source + ": eos_token_id must be a token id or a list of them");
      const auto id = x.get<int64_t>();
      check(id >= 0 && id < tok.vocab_size(), source + ": eos_token_id " + std::to_string(id) +
                                                  " is outside the tokenizer's " + std::to_string(tok.vocab_size()) +
                                                  " tokens");
      ids.push_back(id);
    }
    return ids;
  };
  if (const auto gen = dir / "generation_config.json"; fs::exists(gen)) {
    const Json j = parse_json(read_small_file(gen, "generation_config.json"), gen.string());
    check(!j.is_discarded(), gen.string() + ": not valid JSON");
    if (j.is_object() && j.contains("eos_token_id") && !j["eos_token_id"].is_null())
      return ids_of(j["eos_token_id"], gen.string());
  }
  if (config.is_object() && config.contains("eos_token_id") && !config["eos_token_id"].is_null())
    return ids_of(config["eos_token_id"], (dir / "config.json").string());
  if (const auto tc = dir / "tokenizer_config.json"; fs::exists(tc)) {
    const Json j = parse_json(read_small_file(tc, "tokenizer_config.json"), tc.string());
    check(!j.is_discarded(), tc.string() + ": not valid JSON");
    if (j.is_object() && j.contains("eos_token")) {
      const Json& e = j["eos_token"];
      const std::string text = e.is_string() ? e.get<std::string>()
                               : e.is_object() && e.contains("content") && e["content"].is_string()
                                   ? e["content"].get<std::string>()
                                   : std::string();
      if (const int64_t id = tok.added_id(text); id >= 0) return {id};
    }
  }
  return {};
}

}  // namespace

bool is_hf_folder(const std::string& path) {
  std::error_code ec;
  return fs::is_directory(path, ec) && fs::is_regular_file(fs::path(path) / "config.json", ec);
}

namespace {

// Auto: bfloat16 when every weight matrix of the files is bfloat16.
WeightStorage storage_of(WeightStorage asked, const std::map<std::string, std::pair<size_t, const TensorRecord*>>& found) {
  if (asked != WeightStorage::Auto) return asked;
  bool any = false;
  for (const auto& [name, where] : found) {
    if (where.second->shape.size() != 2) continue;
    if (where.second->dtype != DType::BF16) return WeightStorage::F32;
    any = true;
  }
  return any ? WeightStorage::BF16 : WeightStorage::F32;
}

}  // namespace

LoadedModel import_hf_folder(const std::string& dir_path, const HfImportOptions& options) {
  const fs::path dir(dir_path);
  std::error_code ec;
  check(fs::is_directory(dir, ec), dir_path + ": not a folder");
  check(options.max_context >= 1, "import: max_context must be at least 1");
  const std::string config_text = read_small_file(dir / "config.json", "config.json");
  const auto parsed = parse_hf_config(config_text, (dir / "config.json").string(), options.max_context);
  const HfArchitecture* arch = parsed.arch;
  const ModelConfig& cfg = parsed.config;

  // The weight files: one model.safetensors, or the shards an index names.
  WeightFiles w = map_weight_files(dir);
  auto& files = w.files;
  auto& found = w.found;
  std::string hashes = content_hash(config_text.data(), config_text.size());
  for (const auto& f : files) hashes += file_hash(f);

  // Build everything aside; the model is assembled only once every tensor checked out.
  Gpt model = [&] {
    SkipWeightInit filled_next;  // every parameter is filled from the files below (checked)
    return Gpt(cfg);
  }();
  if (storage_of(options.weights, found) == WeightStorage::BF16)
    model->set_weight_storage(torch::kBFloat16, /*keep_values=*/false);
  auto params = model->named_parameters();
  std::set<std::string> filled, used;
  torch::NoGradGuard no_grad;
  for (const auto& rule : arch->expand(cfg.n_layers)) {
    bool wanted = true;
    for (const auto& o : rule.ours) wanted &= params.contains(o);
    std::string name = rule.hf;
    if (!found.count(name) && !arch->prefix.empty() && found.count(arch->prefix + name)) name = arch->prefix + name;
    if (!wanted) {
      if (found.count(name) && rule.ours[0] == "head.weight" && cfg.tied_head) used.insert(name);  // a tied copy
      continue;
    }
    check(found.count(name), dir_path + ": tensor '" + rule.hf + "' is missing (needed for " + rule.ours[0] + ")");
    used.insert(name);
    const auto& [fi, rec] = found.at(name);
    const auto& file = files[fi];
    // The shape the checkpoint must have, from ours.
    std::vector<int64_t> want = params[rule.ours[0]].sizes().vec();
    int64_t out_total = 0;
    for (const auto& o : rule.ours) out_total += params[o].size(0);
    want[0] = out_total;
    if (rule.layout == HfLayout::Conv1D) std::swap(want[0], want[1]);
    const bool rows_ok = rule.layout == HfLayout::Rows && rec->shape.size() == 2 && rec->shape[0] >= want[0] &&
                         rec->shape[1] == want[1];
    check(rec->shape == want || rows_ok, file.source() + ": tensor '" + name + "' has shape " + shape_str(rec->shape) +
                                             ", expected " + shape_str(want));
    // Straight from the mapped file into the parameters (dtype conversion and transposition inside
    // copy_), then the file's pages are dropped: peak memory stays near the model's own size.
    auto t = file_view(file, *rec);
    if (rule.layout == HfLayout::Conv1D) t = t.t();
    if (rule.layout == HfLayout::Rows) t = t.narrow(0, 0, want[0]);
    copy_rule(params, rule, t, file, *rec, cfg.n_heads);
    t = torch::Tensor();
    file.release(*rec);
    for (const auto& o : rule.ours) {
      check(all_finite(params[o]), file.source() + ": tensor '" + name + "' contains NaN or Inf values");
      filled.insert(o);
    }
  }
  for (const auto& item : params)
    check(filled.count(item.key()), dir_path + ": no checkpoint tensor fills '" + item.key() + "' (" +
                                        arch->model_type + " table incomplete)");
  for (const auto& [name, where] : found) {
    if (used.count(name)) continue;
    bool ignored = false;
    for (const auto& suffix : arch->ignored)
      ignored |= name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
    check(ignored, files[where.first].source() + ": unexpected tensor '" + name + "' (not part of a " +
                       arch->model_type + " model with this config.json)");
  }

  const auto tok_path = dir / "tokenizer.json";
  const std::string tok_text = read_small_file(tok_path, "tokenizer.json");
  auto tokenizer = std::make_unique<BpeTokenizer>(BpeTokenizer::from_hf_json(tok_text, tok_path.string()));
  check(tokenizer->vocab_size() <= cfg.vocab_size,
        tok_path.string() + ": the tokenizer has " + std::to_string(tokenizer->vocab_size()) +
            " tokens but the model only " + std::to_string(cfg.vocab_size) + " embeddings");
  tokenizer->set_stop_ids(hf_stop_ids(dir, parse_json(config_text, "config.json"), *tokenizer));
  hashes += content_hash(tok_text.data(), tok_text.size());

  LoadedModel m;
  m.source = dir_path;
  m.config = cfg;
  m.tokenizer = std::move(tokenizer);
  m.model = model;
  m.model->eval();
  m.training_json = Json{{"imported", {{"format", "huggingface"}, {"model_type", arch->model_type}}}}.dump();
  m.hash = content_hash(hashes.data(), hashes.size());
  return m;
}

std::string export_hf_folder(const std::string& dir_path, Gpt& model, const Tokenizer& tokenizer) {
  const auto plan = plan_hf_export(model->config());
  const HfArchitecture* arch = plan.arch;
  const ModelConfig& out = plan.config;
  // Tokenizer: BPE as it came; a character tokenizer as a merge-free BPE over its characters.
  std::string tok_json;
  if (const auto* bpe = dynamic_cast<const BpeTokenizer*>(&tokenizer)) {
    tok_json = bpe->to_hf_json();
  } else if (const auto* chars = dynamic_cast<const CharTokenizer*>(&tokenizer)) {
    BpeTokenizer::Spec s;
    s.style = BpeTokenizer::Style::SentencePiece;
    s.prepend_space = false;
    s.space_mark = false;
    for (char32_t c : chars->vocab()) s.vocab.push_back(utf8_encode(c));
    tok_json = BpeTokenizer(std::move(s)).to_hf_json();
  } else {
    throw Error("export: tokenizer kind '" + tokenizer.kind() + "' has no tokenizer.json form");
  }

  // Our tensors at the current budget, then each rule gathers (and splits back) its checkpoint tensor.
  auto state = state_for_export(model);
  Gpt shape_model(out);  // names and shapes the exported config implies
  auto shapes = shape_model->named_parameters();
  std::vector<torch::Tensor> keep;
  std::vector<TensorToWrite> tensors;
  for (const auto& rule : arch->expand(out.n_layers)) {
    bool wanted = true;
    for (const auto& o : rule.ours) wanted &= shapes.contains(o);
    if (!wanted) continue;
    std::vector<torch::Tensor> parts;
    for (const auto& o : rule.ours) {
      auto it = state.find(o);
      // A bias GPT-2 always has but this model does not: zeros, which change nothing.
      parts.push_back(it != state.end() ? it->second.to(torch::kCPU, torch::kFloat32)
                                        : torch::zeros(shapes[o].sizes(), torch::kFloat32));
    }
    torch::Tensor t;
    if (rule.layout == HfLayout::HeadInterleaved) {  // per head: its rows of each part, in turn
      for (auto& p : parts) {
        std::vector<int64_t> per_head = {out.n_heads, 1, -1};
        for (int64_t d = 1; d < p.dim(); ++d) per_head.push_back(p.size(d));
        p = p.reshape(per_head);
      }
      t = torch::cat(parts, 1);
      std::vector<int64_t> flat = {-1};
      for (int64_t d = 3; d < t.dim(); ++d) flat.push_back(t.size(d));
      t = t.reshape(flat);
    } else {
      t = torch::cat(parts, 0);
    }
    if (rule.layout == HfLayout::Conv1D) t = t.t();
    t = t.contiguous();
    check(torch::isfinite(t).all().item<bool>(), "export: tensor '" + rule.hf + "' contains NaN or Inf values");
    keep.push_back(t);
    tensors.push_back({rule.hf, DType::F32, t.sizes().vec(), t.data_ptr()});
  }
  std::error_code ec;
  fs::create_directories(dir_path, ec);
  check(fs::is_directory(dir_path, ec), "export: cannot create the folder " + dir_path);
  const fs::path dir(dir_path);
  write_safetensors((dir / "model.safetensors").string(), tensors, {{"format", "pt"}});
  write_file_atomic((dir / "config.json").string(), plan.config_json);
  write_file_atomic((dir / "tokenizer.json").string(), tok_json);
  if (const auto& stops = tokenizer.stop_ids(); !stops.empty())
    write_file_atomic((dir / "generation_config.json").string(),
                      Json{{"eos_token_id", stops.size() == 1 ? Json(stops[0]) : Json(stops)}}.dump(2) + "\n");
  return arch->model_type;
}

}  // namespace nestscope
