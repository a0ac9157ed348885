#include "core/io/hf_config.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/json_guard.h"

namespace nestscope {

namespace {

using Json = nlohmann::json;

// What each architecture does with config.json, by model_type (the tables below are the data).
struct ConfigIo {
  const char* model_type;
  ModelConfig (*read)(const Json&, int64_t max_context);
  Json (*write)(const ModelConfig&);
  bool (*fits)(const ModelConfig&, std::string* why);
  ModelConfig (*exported)(ModelConfig);
};

// How a checkpoint tensor is laid out relative to ours.
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

ModelConfig gpt2_read(const Json& j, int64_t max_context) {
  ModelConfig c;
  c.vocab_size = j.at("vocab_size").get<int64_t>();
  c.d_model = j.at("n_embd").get<int64_t>();
  c.n_heads = j.at("n_head").get<int64_t>();
  c.n_layers = j.at("n_layer").get<int64_t>();
  const int64_t positions = get_or<int64_t>(j, "n_positions", get_or<int64_t>(j, "n_ctx", 1024));
  c.context = std::min(positions, max_context);
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

ModelConfig llama_read(const Json& j, int64_t max_context) {
  ModelConfig c;
  c.vocab_size = j.at("vocab_size").get<int64_t>();
  c.d_model = j.at("hidden_size").get<int64_t>();
  c.n_heads = j.at("num_attention_heads").get<int64_t>();
  c.n_kv_heads = get_or<int64_t>(j, "num_key_value_heads", c.n_heads);
  c.n_layers = j.at("num_hidden_layers").get<int64_t>();
  c.context = std::min(get_or<int64_t>(j, "max_position_embeddings", 2048), max_context);
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

// A sliding window caps the context at the window: within it, sliding and full causal attention
// are the same computation (a longer sequence is refused by the model, naming the window).
void cap_at_window(ModelConfig& c, int64_t window) {
  check(window >= 0, "sliding_window must be positive or null");
  if (window > 0 && window <= c.context) c.context = c.sliding_window = window;
}

// Llama's config.json as another model_type that names no attention or MLP bias flags.
Json llama_like_write(const ModelConfig& c, const char* model_type, const char* architecture) {
  Json j = llama_write(c);
  j["model_type"] = model_type;
  j["architectures"] = {architecture};
  j.erase("attention_bias");
  j.erase("mlp_bias");
  return j;
}

// Qwen2: Llama's layout with biases on q, k and v (none on o), and an optional sliding window.
ModelConfig qwen2_read(const Json& j, int64_t max_context) {
  ModelConfig c = llama_read(j, max_context);
  c.qkv_bias = true;
  c.out_bias = false;
  if (get_or<bool>(j, "use_sliding_window", false)) {
    const int64_t window = get_or<int64_t>(j, "sliding_window", 0);
    check(get_or<int64_t>(j, "max_window_layers", 0) == 0 || window >= c.context,
          "use_sliding_window with max_window_layers (a window on some layers only) is not supported");
    cap_at_window(c, window);
  }
  return c;
}

Json qwen2_write(const ModelConfig& c) {
  Json j = llama_like_write(c, "qwen2", "Qwen2ForCausalLM");
  j["use_sliding_window"] = c.sliding_window > 0;
  j["sliding_window"] = c.sliding_window > 0 ? c.sliding_window : c.context;
  j["max_window_layers"] = 0;
  return j;
}

// Mistral: Llama's layout with sliding-window attention (null or absent = none).
ModelConfig mistral_read(const Json& j, int64_t max_context) {
  ModelConfig c = llama_read(j, max_context);
  cap_at_window(c, get_or<int64_t>(j, "sliding_window", 0));
  return c;
}

Json mistral_write(const ModelConfig& c) {
  Json j = llama_like_write(c, "mistral", "MistralForCausalLM");
  j["sliding_window"] = c.sliding_window > 0 ? Json(c.sliding_window) : Json(nullptr);
  return j;
}

ModelConfig gpt2_exported(ModelConfig c) {
  c.position = PositionEncoding::Learned;
  c.qkv_bias = c.out_bias = c.mlp_bias = true;
  return c;
}

bool llama_fits(const ModelConfig& c, std::string* why) {
  if (c.sliding_window > 0) *why = "Llama has no sliding window";
  else if (c.parallel_residual) *why = "Llama's residual is sequential";
  else if (c.norm != Norm::RmsNorm) *why = "Llama uses RMSNorm";
  else if (c.position != PositionEncoding::Rope || c.rotary_fraction != 1.0) *why = "Llama rotates every channel";
  else if (!c.gated_mlp) *why = "Llama's MLP is gated";
  else if (c.qkv_bias != c.out_bias) *why = "Llama has one attention_bias for q, k, v and o";
  else if (c.lm_head_bias) *why = "Llama's LM head has no bias";
  else return true;
  return false;
}

ModelConfig llama_exported(ModelConfig c) { return c; }

// A Llama-like model that Llama's config cannot say: q/k/v bias without o (Qwen2).
bool qwen2_fits(const ModelConfig& c, std::string* why) {
  std::string base;
  ModelConfig plain = c;
  plain.sliding_window = 0;
  plain.out_bias = plain.qkv_bias;
  if (!llama_fits(plain, &base)) *why = "Qwen2: " + base;
  else if (!c.qkv_bias || c.out_bias || c.mlp_bias) *why = "Qwen2 has biases on q, k, v only";
  else return true;
  return false;
}

bool mistral_fits(const ModelConfig& c, std::string* why) {
  std::string base;
  ModelConfig plain = c;
  plain.sliding_window = 0;
  if (!llama_fits(plain, &base)) *why = "Mistral: " + base;
  else if (c.qkv_bias || c.out_bias || c.mlp_bias) *why = "Mistral has no biases";
  else return true;
  return false;
}

// --- GPT-NeoX (Pythia) ---------------------------------------------------------------------------

ModelConfig neox_read(const Json& j, int64_t max_context) {
  ModelConfig c;
  c.vocab_size = j.at("vocab_size").get<int64_t>();
  c.d_model = j.at("hidden_size").get<int64_t>();
  c.n_heads = j.at("num_attention_heads").get<int64_t>();
  c.n_layers = j.at("num_hidden_layers").get<int64_t>();
  c.d_ff = j.at("intermediate_size").get<int64_t>();
  c.context = std::min(get_or<int64_t>(j, "max_position_embeddings", 2048), max_context);
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

}  // namespace

const std::vector<HfArchitecture>& hf_architecture_table() {
  static const std::vector<HfArchitecture> archs = [] {
    std::vector<HfArchitecture> a = {
        {"gpt2",
         "transformer.",
         {{"wte.weight", {"tok_emb.weight"}},
          {"wpe.weight", {"pos_emb"}, HfLayout::Rows},
          {"ln_f.weight", {"ln_f.weight"}},
          {"ln_f.bias", {"ln_f.bias"}},
          {"lm_head.weight", {"head.weight"}}},
         {{"h.{l}.ln_1.weight", {"blk.{l}.ln1.weight"}},
          {"h.{l}.ln_1.bias", {"blk.{l}.ln1.bias"}},
          {"h.{l}.attn.c_attn.weight", {"blk.{l}.attn.q.weight", "blk.{l}.attn.k.weight", "blk.{l}.attn.v.weight"}, HfLayout::Conv1D},
          {"h.{l}.attn.c_attn.bias", {"blk.{l}.attn.q.bias", "blk.{l}.attn.k.bias", "blk.{l}.attn.v.bias"}},
          {"h.{l}.attn.c_proj.weight", {"blk.{l}.attn.o.weight"}, HfLayout::Conv1D},
          {"h.{l}.attn.c_proj.bias", {"blk.{l}.attn.o.bias"}},
          {"h.{l}.ln_2.weight", {"blk.{l}.ln2.weight"}},
          {"h.{l}.ln_2.bias", {"blk.{l}.ln2.bias"}},
          {"h.{l}.mlp.c_fc.weight", {"blk.{l}.mlp.up.weight"}, HfLayout::Conv1D},
          {"h.{l}.mlp.c_fc.bias", {"blk.{l}.mlp.up.bias"}},
          {"h.{l}.mlp.c_proj.weight", {"blk.{l}.mlp.down.weight"}, HfLayout::Conv1D},
          {"h.{l}.mlp.c_proj.bias", {"blk.{l}.mlp.down.bias"}}},
         {".attn.bias", ".attn.masked_bias"},  // causal-mask buffers of older files
        },
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
        },
        {"gpt_neox",
         "",
         {{"gpt_neox.embed_in.weight", {"tok_emb.weight"}},
          {"gpt_neox.final_layer_norm.weight", {"ln_f.weight"}},
          {"gpt_neox.final_layer_norm.bias", {"ln_f.bias"}},
          {"embed_out.weight", {"head.weight"}}},
         {{"gpt_neox.layers.{l}.input_layernorm.weight", {"blk.{l}.ln1.weight"}},
          {"gpt_neox.layers.{l}.input_layernorm.bias", {"blk.{l}.ln1.bias"}},
          {"gpt_neox.layers.{l}.attention.query_key_value.weight",
           {"blk.{l}.attn.q.weight", "blk.{l}.attn.k.weight", "blk.{l}.attn.v.weight"}, HfLayout::HeadInterleaved},
          {"gpt_neox.layers.{l}.attention.query_key_value.bias",
           {"blk.{l}.attn.q.bias", "blk.{l}.attn.k.bias", "blk.{l}.attn.v.bias"}, HfLayout::HeadInterleaved},
          {"gpt_neox.layers.{l}.attention.dense.weight", {"blk.{l}.attn.o.weight"}},
          {"gpt_neox.layers.{l}.attention.dense.bias", {"blk.{l}.attn.o.bias"}},
          {"gpt_neox.layers.{l}.post_attention_layernorm.weight", {"blk.{l}.ln2.weight"}},
          {"gpt_neox.layers.{l}.post_attention_layernorm.bias", {"blk.{l}.ln2.bias"}},
          {"gpt_neox.layers.{l}.mlp.dense_h_to_4h.weight", {"blk.{l}.mlp.up.weight"}},
          {"gpt_neox.layers.{l}.mlp.dense_h_to_4h.bias", {"blk.{l}.mlp.up.bias"}},
          {"gpt_neox.layers.{l}.mlp.dense_4h_to_h.weight", {"blk.{l}.mlp.down.weight"}},
          {"gpt_neox.layers.{l}.mlp.dense_4h_to_h.bias", {"blk.{l}.mlp.down.bias"}}},
         {".attention.bias", ".attention.masked_bias", ".rotary_emb.inv_freq"},  // buffers of older files
        },
    };
    // Qwen2 and Mistral name their tensors exactly as Llama does; only config.json differs.
    for (const char* name : {"qwen2", "mistral"}) {
      HfArchitecture same = a[1];
      same.model_type = name;
      a.push_back(same);
    }
    return a;
  }();
  return archs;
}

namespace {

std::string with_layer(std::string s, int64_t l) {
  const auto p = s.find("{l}");
  return p == std::string::npos ? s : s.replace(p, 3, std::to_string(l));
}

const ConfigIo kConfigIo[] = {
    {"gpt2", gpt2_read, gpt2_write, gpt2_fits, gpt2_exported},
    {"llama", llama_read, llama_write, llama_fits, llama_exported},
    {"qwen2", qwen2_read, qwen2_write, qwen2_fits, llama_exported},
    {"mistral", mistral_read, mistral_write, mistral_fits, llama_exported},
    {"gpt_neox", neox_read, neox_write, neox_fits, neox_exported},
};

const ConfigIo& io_of(const HfArchitecture& a) {
  for (const auto& io : kConfigIo)
    if (a.model_type == io.model_type) return io;
  throw Error("no config.json reader for model_type '" + a.model_type + "'");
}

}  // namespace

std::vector<HfTensorRule> HfArchitecture::expand(int64_t layers) const {
  std::vector<HfTensorRule> out = global;
  for (int64_t l = 0; l < layers; ++l)
    for (const auto& r : layer) {
      HfTensorRule e{with_layer(r.hf, l), {}, r.layout};
      for (const auto& o : r.ours) e.ours.push_back(with_layer(o, l));
      out.push_back(std::move(e));
    }
  return out;
}

const std::vector<std::string>& hf_architectures() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> n;
    for (const auto& a : hf_architecture_table()) n.push_back(a.model_type);
    return n;
  }();
  return names;
}

HfModelConfig parse_hf_config(const std::string& text, const std::string& source, int64_t max_context) {
  check(max_context >= 1, "import: max_context must be at least 1");
  const Json hf = parse_json(text, source);
  check(hf.is_object(), source + ": not a JSON object");
  const std::string model_type =
      hf.contains("model_type") && hf["model_type"].is_string() ? hf["model_type"].get<std::string>() : "";
  HfModelConfig out;
  for (const auto& a : hf_architecture_table())
    if (a.model_type == model_type) out.arch = &a;
  if (!out.arch) {
    std::string known;
    for (const auto& n : hf_architectures()) known += (known.empty() ? "" : ", ") + n;
    throw Error(source + ": model_type '" + model_type + "' is not supported (" + known + ")");
  }
  try {
    out.config = io_of(*out.arch).read(hf, max_context);
    out.config.validate();
  } catch (const Json::exception& e) {
    throw Error(source + ": " + e.what());
  } catch (const Error& e) {
    throw Error(source + ": " + e.what());
  }
  return out;
}

HfExportPlan plan_hf_export(const ModelConfig& model) {
  std::string reasons;
  for (const auto& a : hf_architecture_table()) {
    const auto& io = io_of(a);
    std::string why;
    if (!io.fits(model, &why)) {
      reasons += (reasons.empty() ? "" : "; ") + why;
      continue;
    }
    HfExportPlan plan;
    plan.arch = &a;
    plan.config = io.exported(model);
    plan.config.linear.clear();  // dense
    plan.config_json = io.write(plan.config).dump(2) + "\n";
    return plan;
  }
  throw Error("export: no Hugging Face architecture can express this model (" + reasons + ")");
}

std::map<std::string, std::string> parse_hf_index(const std::string& text, const std::string& source) {
  const Json idx = parse_json(text, source);
  check(idx.is_object() && idx.contains("weight_map") && idx["weight_map"].is_object(),
        source + ": no 'weight_map' object");
  std::map<std::string, std::string> out;
  for (auto it = idx["weight_map"].begin(); it != idx["weight_map"].end(); ++it) {
    check(it.value().is_string(), source + ": the shard of '" + it.key() + "' is not a file name");
    const auto shard = it.value().get<std::string>();
    check(!shard.empty() && shard.find('/') == std::string::npos && shard.find('\\') == std::string::npos &&
              shard.find('\0') == std::string::npos && shard != "." && shard != "..",
          source + ": shard name '" + shard + "' must be a plain file name in the folder");
    out[it.key()] = shard;
  }
  check(!out.empty(), source + ": the shard index lists no tensors");
  return out;
}

}  // namespace nestscope
