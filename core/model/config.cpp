#include "core/model/config.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/json_guard.h"
#include "core/layers/mpo_shape.h"

namespace nestscope {

using nlohmann::json;

std::string projection_family(const std::string& name) {
  if (name.rfind("blk.", 0) != 0) return name;
  const size_t dot = name.find('.', 4);
  return dot == std::string::npos ? name : name.substr(dot + 1);
}

const std::vector<std::string>& projection_families() {
  static const std::vector<std::string> f = {"attn.q", "attn.k",   "attn.v",   "attn.o",
                                             "mlp.gate", "mlp.up", "mlp.down", "head"};
  return f;
}

std::vector<std::string> ModelConfig::families() const {
  std::vector<std::string> out;
  for (const auto& f : projection_families())
    if (f != "mlp.gate" || gated_mlp) out.push_back(f);
  return out;
}

namespace {

const char* activation_name(Activation a) {
  switch (a) {
    case Activation::Relu: return "relu";
    case Activation::Gelu: return "gelu";
    case Activation::GeluTanh: return "gelu_tanh";
    case Activation::Silu: return "silu";
  }
  return "relu";
}

const char* position_name(PositionEncoding p) {
  switch (p) {
    case PositionEncoding::Sinusoidal: return "sinusoidal";
    case PositionEncoding::Learned: return "learned";
    case PositionEncoding::Rope: return "rope";
  }
  return "sinusoidal";
}

}  // namespace

LinearSpec ModelConfig::linear_spec(const std::string& family) const {
  auto it = linear.find(family);
  return it == linear.end() ? LinearSpec{} : it->second;
}

std::pair<int64_t, int64_t> ModelConfig::family_shape(const std::string& family) const {
  if (family == "mlp.up" || family == "mlp.gate") return {d_model, d_ff};
  if (family == "mlp.down") return {d_ff, d_model};
  if (family == "head") return {d_model, vocab_size};
  check(family.rfind("attn.", 0) == 0, "unknown projection family '" + family + "'");
  if (family == "attn.k" || family == "attn.v") return {d_model, kv_heads() * head_dim()};
  return {d_model, d_model};
}

bool ModelConfig::family_has_bias(const std::string& family) const {
  if (family == "attn.o") return out_bias;
  if (family == "mlp.up" || family == "mlp.down" || family == "mlp.gate") return mlp_bias;
  if (family == "head") return lm_head_bias;
  return qkv_bias;
}

int64_t ModelConfig::nsn_max_rank(const std::string& family) const {
  const auto [in, out] = family_shape(family);
  const auto spec = linear_spec(family);
  return spec.max_rank > 0 ? spec.max_rank : std::min(in, out);
}

std::pair<std::vector<int64_t>, std::vector<int64_t>> ModelConfig::mpo_factors(const std::string& family) const {
  const auto [in, out] = family_shape(family);
  const auto spec = linear_spec(family);
  if (!spec.out_factors.empty() || !spec.in_factors.empty()) return {spec.out_factors, spec.in_factors};
  const int64_t sites = default_mpo_sites(in, out);
  return {balanced_factors(out, sites), balanced_factors(in, sites)};
}

void ModelConfig::validate() const {
  auto positive = [](int64_t v, const char* name) {
    check(v > 0, std::string("model config: ") + name + " must be positive, got " + std::to_string(v));
  };
  positive(vocab_size, "vocab_size");
  positive(d_model, "d_model");
  positive(n_heads, "n_heads");
  positive(n_layers, "n_layers");
  positive(context, "context");
  positive(d_ff, "d_ff");
  check(d_model % n_heads == 0, "model config: d_model " + std::to_string(d_model) +
                                    " is not divisible by n_heads " + std::to_string(n_heads));
  check(position != PositionEncoding::Sinusoidal || d_model % 2 == 0,
        "model config: sinusoidal positions need an even d_model");
  check(n_kv_heads >= 0 && n_heads % kv_heads() == 0,
        "model config: n_heads " + std::to_string(n_heads) + " is not a multiple of n_kv_heads " +
            std::to_string(kv_heads()));
  check(sliding_window == 0 || (sliding_window > 0 && context <= sliding_window),
        "model config: the context (" + std::to_string(context) + ") must not exceed the sliding window (" +
            std::to_string(sliding_window) + ")");
  check(position != PositionEncoding::Rope || (rope_theta > 0 && std::isfinite(rope_theta) && rotary_fraction > 0 &&
                                                rotary_fraction <= 1 && rotary_dims() >= 2 && rotary_dims() % 2 == 0),
        "model config: rotary positions need a positive rope_theta and an even number (≥ 2) of rotary channels "
        "per head (head size × rotary fraction)");
  check(ln_eps > 0 && std::isfinite(ln_eps), "model config: ln_eps must be positive");
  check(init_std > 0 && std::isfinite(init_std), "model config: init_std must be positive");
  check(!(tied_head && lm_head_bias), "model config: a tied LM head has no bias");
  for (const auto& [family, spec] : linear) {
    const auto fams = families();
    check(std::find(fams.begin(), fams.end(), family) != fams.end(),
          "model config: unknown projection family '" + family + "'");
    check(!(family == "head" && tied_head), "model config: a tied LM head cannot be re-parameterized");
    const auto [in, out] = family_shape(family);
    check(spec.max_rank >= 0 && spec.max_rank <= std::min(in, out),
          "model config: max rank " + std::to_string(spec.max_rank) + " of '" + family + "' is outside [1, " +
              std::to_string(std::min(in, out)) + "]");
    if (spec.kind == LinearKind::Mpo) {
      check(spec.bond >= 1 && spec.bond <= 65536,
            "model config: bond dimension " + std::to_string(spec.bond) + " of '" + family + "' is outside [1, 65536]");
      const auto [of, inf] = mpo_factors(family);
      auto product = [](const std::vector<int64_t>& v) {
        int64_t p = 1;
        for (int64_t x : v) p = x >= 1 && p <= (int64_t(1) << 40) ? p * x : -1;
        return p;
      };
      check(!of.empty() && of.size() == inf.size(),
            "model config: '" + family + "' needs the same number (≥ 1) of out and in factors");
      check(product(of) == out && product(inf) == in,
            "model config: the MPO factors of '" + family + "' do not multiply to its shape " + std::to_string(out) +
                "×" + std::to_string(in));
    }
  }
  check(vocab_size <= (int64_t(1) << 24) && d_model <= 65536 && d_ff <= (1 << 20) &&
            n_layers <= 1024 && context <= (1 << 20),
        "model config: sizes are implausibly large");
}

int64_t ModelConfig::parameter_count() const {
  auto projection = [&](const std::string& family) {
    const auto [in, out] = family_shape(family);
    const auto spec = linear_spec(family);
    int64_t weights = in * out;
    if (spec.kind == LinearKind::Nsn) weights = nsn_max_rank(family) * (in + out);
    if (spec.kind == LinearKind::Mpo) {
      const auto [of, inf] = mpo_factors(family);
      weights = mpo_core_params(of, inf, spec.bond);
    }
    return weights + (family_has_bias(family) ? out : 0);
  };
  const int64_t norm_params = norm == Norm::LayerNorm ? 2 * d_model : d_model;
  int64_t per_block = 2 * norm_params;
  for (const auto& f : families())
    if (f != "head") per_block += projection(f);
  int64_t total = vocab_size * d_model + n_layers * per_block + norm_params;
  if (position == PositionEncoding::Learned) total += context * d_model;
  if (!tied_head) total += projection("head");
  return total;
}

std::string ModelConfig::to_json() const {
  json j = {
      {"vocab_size", vocab_size},
      {"d_model", d_model},
      {"n_heads", n_heads},
      {"n_layers", n_layers},
      {"context", context},
      {"d_ff", d_ff},
      {"position", position_name(position)},
      {"activation", activation_name(activation)},
      {"qkv_bias", qkv_bias},
      {"out_bias", out_bias},
      {"mlp_bias", mlp_bias},
      {"lm_head_bias", lm_head_bias},
      {"tied_head", tied_head},
      {"ln_eps", ln_eps},
      {"init_std", init_std},
  };
  // Llama-style fields only when they differ from the defaults, so older files stay byte-identical.
  if (n_kv_heads != 0) j["n_kv_heads"] = n_kv_heads;
  if (norm != Norm::LayerNorm) j["norm"] = "rms";
  if (gated_mlp) j["gated_mlp"] = true;
  if (position == PositionEncoding::Rope) j["rope_theta"] = rope_theta;
  if (rotary_fraction != 1.0) j["rotary_fraction"] = rotary_fraction;
  if (parallel_residual) j["parallel_residual"] = true;
  if (sliding_window != 0) j["sliding_window"] = sliding_window;
  for (const auto& [family, spec] : linear) {
    if (spec.kind == LinearKind::Nsn) j["linear"][family] = {{"kind", "nsn"}, {"max_rank", spec.max_rank}};
    if (spec.kind == LinearKind::Mpo) {
      const auto [of, inf] = mpo_factors(family);
      j["linear"][family] = {{"kind", "mpo"}, {"bond", spec.bond}, {"out_factors", of}, {"in_factors", inf}};
    }
  }
  return j.dump();
}

ModelConfig ModelConfig::from_json(const std::string& text) {
  json j = parse_json(text, "model config");
  check(j.is_object(), "model config: not a JSON object");
  ModelConfig c;
  try {
    c.vocab_size = j.at("vocab_size").get<int64_t>();
    c.d_model = j.at("d_model").get<int64_t>();
    c.n_heads = j.at("n_heads").get<int64_t>();
    c.n_layers = j.at("n_layers").get<int64_t>();
    c.context = j.at("context").get<int64_t>();
    c.d_ff = j.at("d_ff").get<int64_t>();
    const auto pos = j.at("position").get<std::string>();
    bool found = false;
    for (auto p : {PositionEncoding::Sinusoidal, PositionEncoding::Learned, PositionEncoding::Rope})
      if (pos == position_name(p)) c.position = p, found = true;
    check(found, "model config: unknown position encoding '" + pos + "' (sinusoidal, learned or rope)");
    const auto act = j.at("activation").get<std::string>();
    found = false;
    for (auto a : {Activation::Relu, Activation::Gelu, Activation::GeluTanh, Activation::Silu})
      if (act == activation_name(a)) c.activation = a, found = true;
    check(found, "model config: unknown activation '" + act + "' (relu, gelu, gelu_tanh or silu)");
    c.n_kv_heads = j.value("n_kv_heads", int64_t(0));
    const auto norm = j.value("norm", std::string("layer"));
    check(norm == "layer" || norm == "rms", "model config: unknown norm '" + norm + "' (layer or rms)");
    c.norm = norm == "rms" ? Norm::RmsNorm : Norm::LayerNorm;
    c.gated_mlp = j.value("gated_mlp", false);
    c.rope_theta = j.value("rope_theta", 10000.0);
    c.rotary_fraction = j.value("rotary_fraction", 1.0);
    c.parallel_residual = j.value("parallel_residual", false);
    c.sliding_window = j.value("sliding_window", int64_t(0));
    c.qkv_bias = j.at("qkv_bias").get<bool>();
    c.out_bias = j.at("out_bias").get<bool>();
    c.mlp_bias = j.at("mlp_bias").get<bool>();
    c.lm_head_bias = j.at("lm_head_bias").get<bool>();
    c.tied_head = j.at("tied_head").get<bool>();
    c.ln_eps = j.at("ln_eps").get<double>();
    c.init_std = j.at("init_std").get<double>();
    if (j.contains("linear")) {
      check(j["linear"].is_object(), "model config: 'linear' must be an object");
      for (auto it = j["linear"].begin(); it != j["linear"].end(); ++it) {
        const auto kind = it.value().at("kind").get<std::string>();
        LinearSpec spec;
        spec.kind = parse_linear_kind(kind);
        spec.max_rank = it.value().value("max_rank", int64_t(0));
        spec.bond = it.value().value("bond", int64_t(0));
        spec.out_factors = it.value().value("out_factors", std::vector<int64_t>{});
        spec.in_factors = it.value().value("in_factors", std::vector<int64_t>{});
        c.linear[it.key()] = spec;
      }
    }
  } catch (const json::exception& e) {
    throw Error(std::string("model config: ") + e.what());
  }
  c.validate();
  return c;
}

ModelConfig ModelConfig::pico_gpt() { return ModelConfig{}; }

WeightStorage parse_weight_storage(const std::string& s) {
  if (s == "auto") return WeightStorage::Auto;
  if (s == "f32") return WeightStorage::F32;
  if (s == "bf16") return WeightStorage::BF16;
  throw Error("weights must be auto, f32 or bf16, got '" + s + "'");
}

}  // namespace nestscope
