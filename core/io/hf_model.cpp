#include "core/io/hf_model.h"

#include <sys/stat.h>

#include <cstring>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"
#include "core/io/atomic_file.h"
#include "core/io/safetensors.h"
#include "core/text/bpe_tokenizer.h"
#include "core/text/char_tokenizer.h"
#include "core/text/utf8.h"

namespace nestscope {

namespace {

using Json = nlohmann::json;
namespace fs = std::filesystem;

// How a checkpoint tensor is laid out relative to ours.
enum class Layout {
  Same,    // as ours ([out, in] for linear weights)
  Conv1D,  // GPT-2's Conv1D: [in, out], transposed on the way in and out
  Rows,    // a table whose first rows are ours (position embeddings longer than the kept context)
  HeadInterleaved,  // GPT-NeoX's fused q|k|v: rows grouped per head, [H, parts, hd, ...]
};

// One checkpoint tensor -> one or more of our parameters ("{l}" = layer). Several targets split the
// checkpoint tensor evenly along the output dimension (GPT-2's fused c_attn = q | k | v).
struct TensorRule {
  std::string hf;
  std::vector<std::string> ours;
  Layout layout = Layout::Same;
};

struct Architecture {
  std::string model_type;
  std::string prefix;  // optional prefix on every checkpoint name ("transformer." in some GPT-2 files)
  std::vector<TensorRule> global, layer;
  std::vector<std::string> ignored;  // name suffixes of non-parameters some files carry
  ModelConfig (*read_config)(const Json&, const HfImportOptions&);
  Json (*write_config)(const ModelConfig&);
  bool (*fits)(const ModelConfig&, std::string* why);
  // The dense config an export writes: the architecture's fixed choices made explicit (biases it
  // always has become zeros, sinusoids the table they equal).
  ModelConfig (*exported)(ModelConfig);
};

template <class T>
T get_or(const Json& j, const char* key, T fallback) {
  return j.contains(key) && !j[key].is_null() ? j[key].get<T>() : fallback;
}

Activation parse_hf_activation(const std::string& name) {
  if (name == "gelu_new" || name == "gelu_pytorch_tanh") return Activation::GeluTanh;
  if (name == "gelu") return Activation::Gelu;
  if (name == "relu") return Activation::Relu;
  if (name == "silu" || name == "swish") return Activation::Silu;
  throw Error("activation '" + name + "' is not supported (gelu_new, gelu_pytorch_tanh, gelu, relu, silu)");
}

const char* hf_activation_name(Activation a) {
  switch (a) {
    case Activation::GeluTanh: return "gelu_new";
    case Activation::Gelu: return "gelu";
    case Activation::Relu: return "relu";
    case Activation::Silu: return "silu";
  }
  return "gelu_new";
}

// --- GPT-2 -------------------------------------------------------------------------------------

ModelConfig gpt2_read(const Json& j, const HfImportOptions& o) {
  ModelConfig c;
  c.vocab_size = j.at("vocab_size").get<int64_t>();
  c.d_model = j.at("n_embd").get<int64_t>();
  c.n_heads = j.at("n_head").get<int64_t>();
  c.n_layers = j.at("n_layer").get<int64_t>();
  const int64_t positions = get_or<int64_t>(j, "n_positions", get_or<int64_t>(j, "n_ctx", 1024));
  c.context = std::min(positions, o.max_context);
  c.d_ff = get_or<int64_t>(j, "n_inner", 4 * c.d_model);
  c.position = PositionEncoding::Learned;
  c.activation = parse_hf_activation(get_or<std::string>(j, "activation_function", "gelu_new"));
  c.qkv_bias = c.out_bias = c.mlp_bias = true;
  c.tied_head = get_or<bool>(j, "tie_word_embeddings", true);
  c.ln_eps = get_or<double>(j, "layer_norm_epsilon", 1e-5);
  check(get_or<bool>(j, "scale_attn_weights", true), "scale_attn_weights = false is not supported");
  check(!get_or<bool>(j, "scale_attn_by_inverse_layer_idx", false), "scale_attn_by_inverse_layer_idx is not supported");
  return c;
}

Json gpt2_write(const ModelConfig& c) {
  return {{"model_type", "gpt2"}, {"architectures", {"GPT2LMHeadModel"}}, {"vocab_size", c.vocab_size},
          {"n_positions", c.context}, {"n_ctx", c.context}, {"n_embd", c.d_model}, {"n_layer", c.n_layers},
          {"n_head", c.n_heads}, {"n_inner", c.d_ff}, {"activation_function", hf_activation_name(c.activation)},
          {"layer_norm_epsilon", c.ln_eps}, {"tie_word_embeddings", c.tied_head}, {"resid_pdrop", 0.0},
          {"embd_pdrop", 0.0}, {"attn_pdrop", 0.0}, {"initializer_range", c.init_std}, {"torch_dtype", "float32"}};
}

bool gpt2_fits(const ModelConfig& c, std::string* why) {
  if (c.parallel_residual) *why = "GPT-2's residual is sequential";
  else if (c.norm != Norm::LayerNorm) *why = "GPT-2 uses LayerNorm";
  else if (c.position == PositionEncoding::Rope) *why = "GPT-2 has no rotary positions";
  else if (c.gated_mlp) *why = "GPT-2 has no gated MLP";
  else if (c.kv_heads() != c.n_heads) *why = "GPT-2 has no grouped-query attention";
  else if (c.lm_head_bias) *why = "GPT-2's LM head has no bias";
  else return true;
  return false;
}

// --- Llama -------------------------------------------------------------------------------------

ModelConfig llama_read(const Json& j, const HfImportOptions& o) {
  ModelConfig c;
  c.vocab_size = j.at("vocab_size").get<int64_t>();
  c.d_model = j.at("hidden_size").get<int64_t>();
  c.n_heads = j.at("num_attention_heads").get<int64_t>();
  c.n_kv_heads = get_or<int64_t>(j, "num_key_value_heads", c.n_heads);
  c.n_layers = j.at("num_hidden_layers").get<int64_t>();
  c.context = std::min(get_or<int64_t>(j, "max_position_embeddings", 2048), o.max_context);
  c.d_ff = j.at("intermediate_size").get<int64_t>();
  c.position = PositionEncoding::Rope;
  c.rope_theta = get_or<double>(j, "rope_theta", 10000.0);
  check(!j.contains("rope_scaling") || j["rope_scaling"].is_null(), "rope_scaling is not supported");
  check(c.n_heads > 0 && c.d_model % c.n_heads == 0 &&
            get_or<int64_t>(j, "head_dim", c.d_model / c.n_heads) == c.d_model / c.n_heads,
        "head_dim must equal hidden_size / num_attention_heads");
  c.activation = parse_hf_activation(get_or<std::string>(j, "hidden_act", "silu"));
  c.norm = Norm::RmsNorm;
  c.gated_mlp = true;
  c.qkv_bias = c.out_bias = get_or<bool>(j, "attention_bias", false);
  c.mlp_bias = get_or<bool>(j, "mlp_bias", false);
  c.tied_head = get_or<bool>(j, "tie_word_embeddings", false);
  c.ln_eps = get_or<double>(j, "rms_norm_eps", 1e-6);
  return c;
}

Json llama_write(const ModelConfig& c) {
  return {{"model_type", "llama"}, {"architectures", {"LlamaForCausalLM"}}, {"vocab_size", c.vocab_size},
          {"hidden_size", c.d_model}, {"intermediate_size", c.d_ff}, {"num_attention_heads", c.n_heads},
          {"num_key_value_heads", c.kv_heads()}, {"num_hidden_layers", c.n_layers},
          {"max_position_embeddings", c.context}, {"rope_theta", c.rope_theta}, {"rope_scaling", nullptr},
          {"hidden_act", hf_activation_name(c.activation)}, {"rms_norm_eps", c.ln_eps},
          {"attention_bias", c.qkv_bias}, {"mlp_bias", c.mlp_bias}, {"tie_word_embeddings", c.tied_head},
          {"initializer_range", c.init_std}, {"torch_dtype", "float32"}};
}

ModelConfig gpt2_exported(ModelConfig c) {
  c.position = PositionEncoding::Learned;
  c.qkv_bias = c.out_bias = c.mlp_bias = true;
  return c;
}

bool llama_fits(const ModelConfig& c, std::string* why) {
  if (c.parallel_residual) *why = "Llama's residual is sequential";
  else if (c.norm != Norm::RmsNorm) *why = "Llama uses RMSNorm";
  else if (c.position != PositionEncoding::Rope || c.rotary_fraction != 1.0) *why = "Llama rotates every channel";
  else if (!c.gated_mlp) *why = "Llama's MLP is gated";
  else if (c.qkv_bias != c.out_bias) *why = "Llama has one attention_bias for q, k, v and o";
  else if (c.lm_head_bias) *why = "Llama's LM head has no bias";
  else return true;
  return false;
}

ModelConfig llama_exported(ModelConfig c) { return c; }

// --- GPT-NeoX (Pythia) ---------------------------------------------------------------------------

ModelConfig neox_read(const Json& j, const HfImportOptions& o) {
  ModelConfig c;
  c.vocab_size = j.at("vocab_size").get<int64_t>();
  c.d_model = j.at("hidden_size").get<int64_t>();
  c.n_heads = j.at("num_attention_heads").get<int64_t>();
  c.n_layers = j.at("num_hidden_layers").get<int64_t>();
  c.d_ff = j.at("intermediate_size").get<int64_t>();
  c.context = std::min(get_or<int64_t>(j, "max_position_embeddings", 2048), o.max_context);
  c.position = PositionEncoding::Rope;
  c.rope_theta = get_or<double>(j, "rope_theta", get_or<double>(j, "rotary_emb_base", 10000.0));
  c.rotary_fraction = get_or<double>(j, "rotary_pct", 0.25);
  check(!j.contains("rope_scaling") || j["rope_scaling"].is_null(), "rope_scaling is not supported");
  c.activation = parse_hf_activation(get_or<std::string>(j, "hidden_act", "gelu"));
  c.ln_eps = get_or<double>(j, "layer_norm_eps", 1e-5);
  c.parallel_residual = get_or<bool>(j, "use_parallel_residual", true);
  c.qkv_bias = c.out_bias = get_or<bool>(j, "attention_bias", true);
  c.mlp_bias = true;
  c.tied_head = get_or<bool>(j, "tie_word_embeddings", false);
  return c;
}

Json neox_write(const ModelConfig& c) {
  return {{"model_type", "gpt_neox"}, {"architectures", {"GPTNeoXForCausalLM"}}, {"vocab_size", c.vocab_size},
          {"hidden_size", c.d_model}, {"num_attention_heads", c.n_heads}, {"num_hidden_layers", c.n_layers},
          {"intermediate_size", c.d_ff}, {"max_position_embeddings", c.context}, {"rotary_pct", c.rotary_fraction},
          {"rotary_emb_base", c.rope_theta}, {"rope_theta", c.rope_theta}, {"rope_scaling", nullptr},
          {"hidden_act", hf_activation_name(c.activation)}, {"layer_norm_eps", c.ln_eps},
          {"use_parallel_residual", c.parallel_residual}, {"attention_bias", c.qkv_bias},
          {"tie_word_embeddings", c.tied_head}, {"initializer_range", c.init_std}, {"torch_dtype", "float32"}};
}

bool neox_fits(const ModelConfig& c, std::string* why) {
  if (c.norm != Norm::LayerNorm) *why = "GPT-NeoX uses LayerNorm";
  else if (c.position != PositionEncoding::Rope) *why = "GPT-NeoX uses rotary positions";
  else if (c.gated_mlp) *why = "GPT-NeoX has no gated MLP";
  else if (c.kv_heads() != c.n_heads) *why = "GPT-NeoX has no grouped-query attention";
  else if (c.lm_head_bias) *why = "GPT-NeoX's output layer has no bias";
  else return true;
  return false;
}

ModelConfig neox_exported(ModelConfig c) {
  c.mlp_bias = true;
  if (c.qkv_bias != c.out_bias) c.qkv_bias = c.out_bias = true;
  return c;
}

const std::vector<Architecture>& architectures() {
  static const std::vector<Architecture> archs = {
      {"gpt2",
       "transformer.",
       {{"wte.weight", {"tok_emb.weight"}},
        {"wpe.weight", {"pos_emb"}, Layout::Rows},
        {"ln_f.weight", {"ln_f.weight"}},
        {"ln_f.bias", {"ln_f.bias"}},
        {"lm_head.weight", {"head.weight"}}},
       {{"h.{l}.ln_1.weight", {"blk.{l}.ln1.weight"}},
        {"h.{l}.ln_1.bias", {"blk.{l}.ln1.bias"}},
        {"h.{l}.attn.c_attn.weight", {"blk.{l}.attn.q.weight", "blk.{l}.attn.k.weight", "blk.{l}.attn.v.weight"}, Layout::Conv1D},
        {"h.{l}.attn.c_attn.bias", {"blk.{l}.attn.q.bias", "blk.{l}.attn.k.bias", "blk.{l}.attn.v.bias"}},
        {"h.{l}.attn.c_proj.weight", {"blk.{l}.attn.o.weight"}, Layout::Conv1D},
        {"h.{l}.attn.c_proj.bias", {"blk.{l}.attn.o.bias"}},
        {"h.{l}.ln_2.weight", {"blk.{l}.ln2.weight"}},
        {"h.{l}.ln_2.bias", {"blk.{l}.ln2.bias"}},
        {"h.{l}.mlp.c_fc.weight", {"blk.{l}.mlp.up.weight"}, Layout::Conv1D},
        {"h.{l}.mlp.c_fc.bias", {"blk.{l}.mlp.up.bias"}},
        {"h.{l}.mlp.c_proj.weight", {"blk.{l}.mlp.down.weight"}, Layout::Conv1D},
        {"h.{l}.mlp.c_proj.bias", {"blk.{l}.mlp.down.bias"}}},
       {".attn.bias", ".attn.masked_bias"},  // causal-mask buffers of older files
       gpt2_read,
       gpt2_write,
       gpt2_fits,
       gpt2_exported},
      {"llama",
       "",
       {{"model.embed_tokens.weight", {"tok_emb.weight"}},
        {"model.norm.weight", {"ln_f.weight"}},
        {"lm_head.weight", {"head.weight"}}},
       {{"model.layers.{l}.input_layernorm.weight", {"blk.{l}.ln1.weight"}},
        {"model.layers.{l}.self_attn.q_proj.weight", {"blk.{l}.attn.q.weight"}},
        {"model.layers.{l}.self_attn.q_proj.bias", {"blk.{l}.attn.q.bias"}},
        {"model.layers.{l}.self_attn.k_proj.weight", {"blk.{l}.attn.k.weight"}},
        {"model.layers.{l}.self_attn.k_proj.bias", {"blk.{l}.attn.k.bias"}},
        {"model.layers.{l}.self_attn.v_proj.weight", {"blk.{l}.attn.v.weight"}},
        {"model.layers.{l}.self_attn.v_proj.bias", {"blk.{l}.attn.v.bias"}},
        {"model.layers.{l}.self_attn.o_proj.weight", {"blk.{l}.attn.o.weight"}},
        {"model.layers.{l}.self_attn.o_proj.bias", {"blk.{l}.attn.o.bias"}},
        {"model.layers.{l}.post_attention_layernorm.weight", {"blk.{l}.ln2.weight"}},
        {"model.layers.{l}.mlp.gate_proj.weight", {"blk.{l}.mlp.gate.weight"}},
        {"model.layers.{l}.mlp.gate_proj.bias", {"blk.{l}.mlp.gate.bias"}},
        {"model.layers.{l}.mlp.up_proj.weight", {"blk.{l}.mlp.up.weight"}},
        {"model.layers.{l}.mlp.up_proj.bias", {"blk.{l}.mlp.up.bias"}},
        {"model.layers.{l}.mlp.down_proj.weight", {"blk.{l}.mlp.down.weight"}},
        {"model.layers.{l}.mlp.down_proj.bias", {"blk.{l}.mlp.down.bias"}}},
       {".rotary_emb.inv_freq"},  // a buffer some older files carry
       llama_read,
       llama_write,
       llama_fits,
       llama_exported},
      {"gpt_neox",
       "",
       {{"gpt_neox.embed_in.weight", {"tok_emb.weight"}},
        {"gpt_neox.final_layer_norm.weight", {"ln_f.weight"}},
        {"gpt_neox.final_layer_norm.bias", {"ln_f.bias"}},
        {"embed_out.weight", {"head.weight"}}},
       {{"gpt_neox.layers.{l}.input_layernorm.weight", {"blk.{l}.ln1.weight"}},
        {"gpt_neox.layers.{l}.input_layernorm.bias", {"blk.{l}.ln1.bias"}},
        {"gpt_neox.layers.{l}.attention.query_key_value.weight",
         {"blk.{l}.attn.q.weight", "blk.{l}.attn.k.weight", "blk.{l}.attn.v.weight"}, Layout::HeadInterleaved},
        {"gpt_neox.layers.{l}.attention.query_key_value.bias",
         {"blk.{l}.attn.q.bias", "blk.{l}.attn.k.bias", "blk.{l}.attn.v.bias"}, Layout::HeadInterleaved},
        {"gpt_neox.layers.{l}.attention.dense.weight", {"blk.{l}.attn.o.weight"}},
        {"gpt_neox.layers.{l}.attention.dense.bias", {"blk.{l}.attn.o.bias"}},
        {"gpt_neox.layers.{l}.post_attention_layernorm.weight", {"blk.{l}.ln2.weight"}},
        {"gpt_neox.layers.{l}.post_attention_layernorm.bias", {"blk.{l}.ln2.bias"}},
        {"gpt_neox.layers.{l}.mlp.dense_h_to_4h.weight", {"blk.{l}.mlp.up.weight"}},
        {"gpt_neox.layers.{l}.mlp.dense_h_to_4h.bias", {"blk.{l}.mlp.up.bias"}},
        {"gpt_neox.layers.{l}.mlp.dense_4h_to_h.weight", {"blk.{l}.mlp.down.weight"}},
        {"gpt_neox.layers.{l}.mlp.dense_4h_to_h.bias", {"blk.{l}.mlp.down.bias"}}},
       {".attention.bias", ".attention.masked_bias", ".rotary_emb.inv_freq"},  // buffers of older files
       neox_read,
       neox_write,
       neox_fits,
       neox_exported},
  };
  return archs;
}

std::string with_layer(std::string s, int64_t l) {
  const auto p = s.find("{l}");
  return p == std::string::npos ? s : s.replace(p, 3, std::to_string(l));
}

// Every rule with "{l}" expanded for each layer.
std::vector<TensorRule> expand(const Architecture& a, int64_t layers) {
  std::vector<TensorRule> out = a.global;
  for (int64_t l = 0; l < layers; ++l)
    for (const auto& r : a.layer) {
      TensorRule e{with_layer(r.hf, l), {}, r.layout};
      for (const auto& o : r.ours) e.ours.push_back(with_layer(o, l));
      out.push_back(std::move(e));
    }
  return out;
}

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
bool all_finite(const torch::Tensor& t) {
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
    for (auto it = out.begin(); it != out.end();)
      it = it->first.rfind(name + ".", 0) == 0 ? out.erase(it) : std::next(it);
    out[name + ".weight"] = layer->to_dense().detach();
    if (layer->bias().defined()) out[name + ".bias"] = layer->bias().detach();
  }
  return out;
}

}  // namespace

const std::vector<std::string>& hf_architectures() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> n;
    for (const auto& a : architectures()) n.push_back(a.model_type);
    return n;
  }();
  return names;
}

bool is_hf_folder(const std::string& path) {
  std::error_code ec;
  return fs::is_directory(path, ec) && fs::is_regular_file(fs::path(path) / "config.json", ec);
}

LoadedModel import_hf_folder(const std::string& dir_path, const HfImportOptions& options) {
  const fs::path dir(dir_path);
  std::error_code ec;
  check(fs::is_directory(dir, ec), dir_path + ": not a folder");
  check(options.max_context >= 1, "import: max_context must be at least 1");
  const auto config_path = (dir / "config.json").string();
  const std::string config_text = read_small_file(dir / "config.json", "config.json");
  const Json hf = Json::parse(config_text, nullptr, /*allow_exceptions=*/false);
  check(hf.is_object(), config_path + ": not a JSON object");
  const std::string model_type = hf.contains("model_type") && hf["model_type"].is_string() ? hf["model_type"].get<std::string>() : "";
  const Architecture* arch = nullptr;
  for (const auto& a : architectures())
    if (a.model_type == model_type) arch = &a;
  if (!arch) {
    std::string known;
    for (const auto& n : hf_architectures()) known += (known.empty() ? "" : ", ") + n;
    throw Error(config_path + ": model_type '" + model_type + "' is not supported (" + known + ")");
  }
  ModelConfig cfg;
  try {
    cfg = arch->read_config(hf, options);
    cfg.validate();
  } catch (const Json::exception& e) {
    throw Error(config_path + ": " + e.what());
  } catch (const Error& e) {
    throw Error(config_path + ": " + e.what());
  }

  // The weight files: one model.safetensors, or the shards an index names.
  std::vector<SafetensorsFile> files;
  std::map<std::string, std::pair<size_t, const TensorRecord*>> found;  // checkpoint name -> (file, record)
  std::string hashes = content_hash(config_text.data(), config_text.size());
  const fs::path single = dir / "model.safetensors", index = dir / "model.safetensors.index.json";
  if (fs::exists(single, ec)) {
    files.push_back(SafetensorsFile::map(single.string()));
  } else {
    check(fs::exists(index, ec), dir_path + ": neither model.safetensors nor model.safetensors.index.json is present");
    const Json idx = Json::parse(read_small_file(index, "the shard index"), nullptr, false);
    check(idx.is_object() && idx.contains("weight_map") && idx["weight_map"].is_object(),
          index.string() + ": no 'weight_map' object");
    std::map<std::string, size_t> shard_of_file;
    for (auto it = idx["weight_map"].begin(); it != idx["weight_map"].end(); ++it) {
      check(it.value().is_string(), index.string() + ": the shard of '" + it.key() + "' is not a file name");
      const auto shard = it.value().get<std::string>();
      check(!shard.empty() && shard.find('/') == std::string::npos && shard.find('\\') == std::string::npos &&
                shard != "." && shard != "..",
            index.string() + ": shard name '" + shard + "' must be a plain file name in the folder");
      if (!shard_of_file.count(shard)) {
        shard_of_file[shard] = files.size();
        files.push_back(SafetensorsFile::map((dir / shard).string()));
      }
      const auto& f = files[shard_of_file[shard]];
      const TensorRecord* r = f.find(it.key());
      check(r != nullptr, f.source() + ": tensor '" + it.key() + "' is listed in the index but not in this shard");
      found[it.key()] = {shard_of_file[shard], r};
    }
    for (size_t i = 0; i < files.size(); ++i)
      for (const auto& r : files[i].tensors())
        check(found.count(r.name) && found[r.name].first == i,
              files[i].source() + ": tensor '" + r.name + "' is not listed in the shard index");
  }
  check(!files.empty(), index.string() + ": the shard index lists no tensors");
  if (found.empty())
    for (const auto& r : files[0].tensors()) found[r.name] = {0, &r};
  for (const auto& f : files) hashes += file_hash(f);

  // Build everything aside; the model is assembled only once every tensor checked out.
  Gpt model(cfg);
  auto params = model->named_parameters();
  std::set<std::string> filled, used;
  torch::NoGradGuard no_grad;
  for (const auto& rule : expand(*arch, cfg.n_layers)) {
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
    if (rule.layout == Layout::Conv1D) std::swap(want[0], want[1]);
    const bool rows_ok = rule.layout == Layout::Rows && rec->shape.size() == 2 && rec->shape[0] >= want[0] &&
                         rec->shape[1] == want[1];
    check(rec->shape == want || rows_ok, file.source() + ": tensor '" + name + "' has shape " + shape_str(rec->shape) +
                                             ", expected " + shape_str(want));
    // Straight from the mapped file into the parameters (dtype conversion and transposition inside
    // copy_), then the file's pages are dropped: peak memory stays near the model's own size.
    auto t = file_view(file, *rec);
    if (rule.layout == Layout::Conv1D) t = t.t();
    if (rule.layout == Layout::Rows) t = t.narrow(0, 0, want[0]);
    if (rule.ours.size() == 1 && rule.layout != Layout::Conv1D && t.dim() == 2 && t.is_contiguous()) {
      // One matrix stored as ours (embeddings, Llama projections): 32 MiB of rows at a time, each
      // slice's file pages dropped once copied.
      auto& p = params[rule.ours[0]];
      const int64_t row_bytes = t.size(1) * int64_t(dtype_size(rec->dtype));
      const int64_t step = std::max<int64_t>(1, (int64_t(32) << 20) / std::max<int64_t>(1, row_bytes));
      for (int64_t r = 0; r < p.size(0); r += step) {
        const int64_t n = std::min(step, p.size(0) - r);
        p.narrow(0, r, n).copy_(t.narrow(0, r, n));
        const uint64_t at = file.data_start() + rec->begin;
        file.release(at + uint64_t(r * row_bytes), at + uint64_t((r + n) * row_bytes));
      }
    } else if (rule.layout == Layout::HeadInterleaved) {
      std::vector<int64_t> grouped = {cfg.n_heads, int64_t(rule.ours.size()), -1};  // [H, parts, hd, ...]
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
  const ModelConfig& own = model->config();
  const Architecture* arch = nullptr;
  std::string reasons;
  for (const auto& a : architectures()) {
    std::string why;
    if (a.fits(own, &why)) {
      arch = &a;
      break;
    }
    reasons += (reasons.empty() ? "" : "; ") + why;
  }
  check(arch != nullptr, "export: no Hugging Face architecture can express this model (" + reasons + ")");
  ModelConfig out = arch->exported(own);
  out.linear.clear();  // dense
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
  for (const auto& rule : expand(*arch, out.n_layers)) {
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
    if (rule.layout == Layout::HeadInterleaved) {  // per head: its rows of each part, in turn
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
    if (rule.layout == Layout::Conv1D) t = t.t();
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
  write_file_atomic((dir / "config.json").string(), arch->write_config(out).dump(2) + "\n");
  write_file_atomic((dir / "tokenizer.json").string(), tok_json);
  return arch->model_type;
}

}  // namespace nestscope
