// ModelConfig: every architectural choice of the decoder-only transformer, as data.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/activation.h"
#include "core/layers/linear_kind.h"

namespace nestscope {

enum class PositionEncoding { Sinusoidal, Learned, Rope };  // Rope: rotary (Su et al. 2021), as Llama
enum class Norm { LayerNorm, RmsNorm };                        // RmsNorm: Zhang & Sennrich 2019, as Llama

// How a loaded model keeps its weights in memory (GptImpl::set_weight_storage). Auto: bfloat16
// when the checkpoint's weights are bfloat16 (a Hugging Face folder saved so), else float32 —
// float16 checkpoints load as float32, since bfloat16 would drop three bits of their mantissa.
enum class WeightStorage { Auto, F32, BF16 };
// "auto", "f32" or "bf16"; throws Error otherwise.
WeightStorage parse_weight_storage(const std::string& s);


struct LinearSpec {
  LinearKind kind = LinearKind::Dense;
  int64_t max_rank = 0;  // NSN: the largest rank R kept (0 = min(d_in, d_out))
  int64_t bond = 0;      // MPO: the largest bond dimension χ kept (≥ 1)
  std::vector<int64_t> out_factors, in_factors;  // MPO: per-site factors (empty = balanced default)
  bool operator==(const LinearSpec&) const = default;
};

// Every projection family there is, named as in checkpoints ("blk.3.attn.q", "head"); a model has
// the subset ModelConfig::families() lists ("mlp.gate" only with a gated MLP).
const std::vector<std::string>& projection_families();
// The family of a projection name: "blk.3.attn.q" -> "attn.q", "head" -> "head".
std::string projection_family(const std::string& name);

struct ModelConfig {
  int64_t vocab_size = 65;
  int64_t d_model = 128;  // C
  int64_t n_heads = 4;    // H
  int64_t n_kv_heads = 0; // key/value heads (grouped-query attention); 0 = n_heads
  int64_t n_layers = 4;
  int64_t context = 256;  // longest sequence T the model accepts
  // Mistral-style sliding-window attention: a key further back than this is never attended. The
  // context is capped at the window (so full causal attention is exact); 0 = no window.
  int64_t sliding_window = 0;
  int64_t d_ff = 512;     // N, MLP width
  PositionEncoding position = PositionEncoding::Sinusoidal;
  Activation activation = Activation::Relu;
  Norm norm = Norm::LayerNorm;
  bool gated_mlp = false;       // SwiGLU-style MLP: down(act(gate(x)) ⊙ up(x)) (Shazeer 2020), as Llama
  double rope_theta = 10000.0;  // rotary base (PositionEncoding::Rope)
  double rotary_fraction = 1.0; // rotary on the first fraction of each head's channels (GPT-NeoX: 0.25)
  bool parallel_residual = false;  // x + attn(ln1(x)) + mlp(ln2(x)) (GPT-J / GPT-NeoX) instead of sequential
  bool qkv_bias = false;      // bias on the q/k/v projections
  bool out_bias = true;       // bias on the attention output projection
  bool mlp_bias = true;       // biases on the MLP up/down projections
  bool lm_head_bias = false;  // bias on the LM head (untied only)
  bool tied_head = false;     // LM head shares the token embedding
  double ln_eps = 1e-5;
  double init_std = 0.02;
  // Family ("attn.q", ..., "mlp.down", "head") -> parameterization; absent families are dense.
  std::map<std::string, LinearSpec> linear;

  // The projection families this model has, in projections() order within a block, then "head".
  std::vector<std::string> families() const;
  LinearSpec linear_spec(const std::string& family) const;
  // (d_in, d_out) of a family's projections.
  std::pair<int64_t, int64_t> family_shape(const std::string& family) const;
  bool family_has_bias(const std::string& family) const;
  // R actually used for an NSN family: max_rank, or min(d_in, d_out) when 0.
  int64_t nsn_max_rank(const std::string& family) const;
  // (out factors, in factors) of an MPO family: the spec's, or balanced_factors with
  // default_mpo_sites when the spec leaves them empty.
  std::pair<std::vector<int64_t>, std::vector<int64_t>> mpo_factors(const std::string& family) const;

  int64_t head_dim() const { return d_model / n_heads; }
  int64_t kv_heads() const { return n_kv_heads > 0 ? n_kv_heads : n_heads; }
  int64_t rotary_dims() const { return int64_t(double(head_dim()) * rotary_fraction); }  // as HF truncates

  // Throws Error naming the first field that makes no sense.
  void validate() const;
  // Exact count of trainable parameters implied by the shapes.
  int64_t parameter_count() const;

  std::string to_json() const;
  static ModelConfig from_json(const std::string& text);  // throws Error on bad JSON or values

  // The MPO paper's PicoGPT: 808,448 parameters.
  static ModelConfig pico_gpt();

  bool operator==(const ModelConfig&) const = default;
};

}  // namespace nestscope
