#include "core/model/config.h"

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace nestscope {

using nlohmann::json;

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
  check(ln_eps > 0 && std::isfinite(ln_eps), "model config: ln_eps must be positive");
  check(init_std > 0 && std::isfinite(init_std), "model config: init_std must be positive");
  check(!(tied_head && lm_head_bias), "model config: a tied LM head has no bias");
  check(vocab_size <= (int64_t(1) << 24) && d_model <= 65536 && d_ff <= (1 << 20) &&
            n_layers <= 1024 && context <= (1 << 20),
        "model config: sizes are implausibly large");
}

int64_t ModelConfig::parameter_count() const {
  const int64_t C = d_model, N = d_ff, V = vocab_size;
  int64_t per_block = 2 * (2 * C)                    // two LayerNorms
                      + 3 * (C * C + (qkv_bias ? C : 0))  // q, k, v
                      + C * C + (out_bias ? C : 0)        // o
                      + C * N + (mlp_bias ? N : 0)        // up
                      + N * C + (mlp_bias ? C : 0);       // down
  int64_t total = V * C + n_layers * per_block + 2 * C;
  if (position == PositionEncoding::Learned) total += context * C;
  if (!tied_head) total += V * C + (lm_head_bias ? V : 0);
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
      {"position", position == PositionEncoding::Sinusoidal ? "sinusoidal" : "learned"},
      {"activation", activation == Activation::Relu ? "relu" : "gelu"},
      {"qkv_bias", qkv_bias},
      {"out_bias", out_bias},
      {"mlp_bias", mlp_bias},
      {"lm_head_bias", lm_head_bias},
      {"tied_head", tied_head},
      {"ln_eps", ln_eps},
      {"init_std", init_std},
  };
  return j.dump();
}

ModelConfig ModelConfig::from_json(const std::string& text) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
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
    check(pos == "sinusoidal" || pos == "learned", "model config: unknown position encoding '" + pos + "'");
    c.position = pos == "sinusoidal" ? PositionEncoding::Sinusoidal : PositionEncoding::Learned;
    const auto act = j.at("activation").get<std::string>();
    check(act == "relu" || act == "gelu", "model config: unknown activation '" + act + "'");
    c.activation = act == "relu" ? Activation::Relu : Activation::Gelu;
    c.qkv_bias = j.at("qkv_bias").get<bool>();
    c.out_bias = j.at("out_bias").get<bool>();
    c.mlp_bias = j.at("mlp_bias").get<bool>();
    c.lm_head_bias = j.at("lm_head_bias").get<bool>();
    c.tied_head = j.at("tied_head").get<bool>();
    c.ln_eps = j.at("ln_eps").get<double>();
    c.init_std = j.at("init_std").get<double>();
  } catch (const json::exception& e) {
    throw Error(std::string("model config: ") + e.what());
  }
  c.validate();
  return c;
}

ModelConfig ModelConfig::pico_gpt() { return ModelConfig{}; }

}  // namespace nestscope
