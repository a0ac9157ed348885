// Seed corpora for the fuzz targets, made by the project's own writers: a folder per target under
// the given directory. usage: fuzz_seeds DIR
#include <filesystem>
#include <fstream>

#include "core/io/hf_config.h"
#include "core/io/safetensors.h"
#include "core/model/budget_json.h"
#include "core/model/config.h"
#include "core/text/char_tokenizer.h"
#include "tests/fuzz/fuzz_util.h"

using namespace nestscope;
namespace fs = std::filesystem;

namespace {

void put(const fs::path& dir, const std::string& name, const std::string& bytes) {
  fs::create_directories(dir);
  std::ofstream(dir / name, std::ios::binary) << bytes;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: fuzz_seeds DIR\n");
    return 2;
  }
  const fs::path root = argv[1];
  // safetensors: a few dtypes and shapes, with metadata.
  const std::vector<float> f = {1.f, -2.f, 3.5f, 0.f, 5.f, 6.f};
  const std::vector<uint16_t> h = {0x3C00, 0xC000};
  put(root / "safetensors", "two.safetensors",
      serialize_safetensors({{"a.weight", DType::F32, {2, 3}, f.data()}, {"b", DType::F16, {2}, h.data()}},
                            {{"format", "pt"}, {"config", "{}"}}));
  put(root / "safetensors", "empty.safetensors", serialize_safetensors({}, {}));
  put(root / "safetensors", "scalar.safetensors", serialize_safetensors({{"s", DType::F32, {}, f.data()}}, {}));
  // HF configs of each architecture (via the exporter) and a shard index.
  ModelConfig gpt2 = ModelConfig::pico_gpt();
  ModelConfig llama = gpt2;
  llama.norm = Norm::RmsNorm;
  llama.position = PositionEncoding::Rope;
  llama.gated_mlp = true;
  llama.activation = Activation::Silu;
  llama.n_kv_heads = 2;
  llama.out_bias = llama.mlp_bias = false;
  ModelConfig neox = gpt2;
  neox.position = PositionEncoding::Rope;
  neox.rotary_fraction = 0.25;
  neox.parallel_residual = true;
  int i = 0;
  for (const auto& c : {gpt2, llama, neox}) {
    put(root / "hf_config", "config" + std::to_string(i++) + ".json", std::string(1, '\0') + plan_hf_export(c).config_json);
  }
  put(root / "hf_config", "index.json",
      "\x01{\"metadata\": {\"total_size\": 10}, \"weight_map\": {\"wte.weight\": \"model-00001-of-00002.safetensors\", "
      "\"h.0.ln_1.weight\": \"model-00002-of-00002.safetensors\"}}");
  // tokenizer.json (HF) and the stored forms.
  put(root / "tokenizer_json", "byte_level.json", "\x01" + fuzz::tiny_byte_level().to_hf_json());
  put(root / "tokenizer_json", "sentencepiece.json", "\x01" + fuzz::tiny_sentencepiece().to_hf_json());
  put(root / "tokenizer_json", "stored_bpe.json", std::string(1, '\0') + fuzz::tiny_sentencepiece().to_json());
  put(root / "tokenizer_json", "stored_char.json", std::string(1, '\0') + CharTokenizer::from_corpus("abc xyz\n").to_json());
  // Text for BPE.
  put(root / "bpe", "english.txt", "The thin ant sat in the theatre; it's 2026.\n");
  put(root / "bpe", "mixed.txt", "ünïcode ✓ 日本語 😀👍🏽 \t\n  spaces <s> <|endoftext|> \xE2\x96\x81");
  // Budgets and model configs.
  Budget b;
  b.rank = 16;
  b.bond = 8;
  b.gate.policy = GatePolicy::Sensing;
  b.gate.active = 0.5;
  b.kind["mlp"] = LinearKind::Nsn;
  b.heads_off = {{0, 1}};
  put(root / "budget_json", "budget.json", std::string(1, '\0') + budget_to_json(b));
  put(root / "budget_json", "list.json",
      "\x01[{\"method\": \"nsn\", \"label\": \"r=16\", \"budget\": " + budget_to_json(b) + "}, {\"method\": \"dense\", \"budget\": {}}]");
  put(root / "budget_json", "config.json", "\x02" + llama.to_json());
  std::printf("seeds written to %s\n", root.c_str());
  return 0;
}
