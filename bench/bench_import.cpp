// Hugging Face import: time and peak memory of importing a ~1 GB GPT-2-shaped checkpoint.
// Writes the folder (random weights, F32 or F16), then imports it in a fresh process of this
// binary so that the reported peak resident set (getrusage) is the import's alone.
// usage: nestscope_bench_import [--dir DIR] [--layers L] [--dtype f32|f16]
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>

#include "core/io/atomic_file.h"
#include "core/io/hf_model.h"
#include "core/io/safetensors.h"
#include "core/text/bpe_tokenizer.h"
#include "core/text/utf8.h"

using namespace nestscope;
using Json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

int64_t peak_rss_bytes() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return int64_t(u.ru_maxrss) * 1024;
}

void write_folder(const fs::path& dir, int64_t L, bool f16) {
  const int64_t V = 50257, C = 1024, N = 4096, ctx = 1024;
  fs::create_directories(dir);
  std::vector<std::pair<std::string, torch::Tensor>> ts = {{"wte.weight", torch::randn({V, C}) * 0.02},
                                                            {"wpe.weight", torch::randn({ctx, C}) * 0.01}};
  for (int64_t l = 0; l < L; ++l) {
    const std::string p = "h." + std::to_string(l) + ".";
    ts.insert(ts.end(), {{p + "ln_1.weight", torch::ones({C})}, {p + "ln_1.bias", torch::zeros({C})},
                         {p + "attn.c_attn.weight", torch::randn({C, 3 * C}) * 0.02},
                         {p + "attn.c_attn.bias", torch::zeros({3 * C})},
                         {p + "attn.c_proj.weight", torch::randn({C, C}) * 0.02}, {p + "attn.c_proj.bias", torch::zeros({C})},
                         {p + "ln_2.weight", torch::ones({C})}, {p + "ln_2.bias", torch::zeros({C})},
                         {p + "mlp.c_fc.weight", torch::randn({C, N}) * 0.02}, {p + "mlp.c_fc.bias", torch::zeros({N})},
                         {p + "mlp.c_proj.weight", torch::randn({N, C}) * 0.02}, {p + "mlp.c_proj.bias", torch::zeros({C})}});
  }
  ts.insert(ts.end(), {{"ln_f.weight", torch::ones({C})}, {"ln_f.bias", torch::zeros({C})}});
  std::vector<TensorToWrite> out;
  for (auto& [name, t] : ts) {
    if (f16) t = t.to(torch::kFloat16);
    t = t.contiguous();
    out.push_back({name, f16 ? DType::F16 : DType::F32, t.sizes().vec(), t.data_ptr()});
  }
  write_safetensors((dir / "model.safetensors").string(), out, {{"format", "pt"}});
  const Json cfg = {{"model_type", "gpt2"}, {"vocab_size", V}, {"n_embd", C}, {"n_head", 16}, {"n_layer", L},
                    {"n_positions", ctx}, {"n_inner", N}, {"activation_function", "gelu_new"}};
  write_file_atomic((dir / "config.json").string(), cfg.dump());
  // A byte-level tokenizer (the 256 byte tokens; the rest of the 50,257 embeddings are unused).
  BpeTokenizer::Spec s;
  s.style = BpeTokenizer::Style::ByteLevel;
  for (int b = 0; b < 256; ++b) s.vocab.push_back(utf8_encode(gpt2_byte_to_char(uint8_t(b))));
  write_file_atomic((dir / "tokenizer.json").string(), BpeTokenizer(std::move(s)).to_hf_json());
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir = (fs::temp_directory_path() / "nestscope-bench-import").string(), dtype = "f32";
  int64_t layers = 18;
  bool import_only = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--dir" && i + 1 < argc) dir = argv[++i];
    else if (a == "--layers" && i + 1 < argc) layers = std::stoll(argv[++i]);
    else if (a == "--dtype" && i + 1 < argc) dtype = argv[++i];
    else if (a == "--import-only") import_only = true;
    else {
      std::cerr << "usage: nestscope_bench_import [--dir DIR] [--layers L] [--dtype f32|f16]\n";
      return 2;
    }
  }
  if (import_only) {
    const int64_t before = peak_rss_bytes();
    const auto t0 = std::chrono::steady_clock::now();
    auto m = import_hf_folder(dir);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::ifstream proc("/proc/self/status");
    std::string status((std::istreambuf_iterator<char>(proc)), std::istreambuf_iterator<char>()), rss;
    for (const char* key : {"VmRSS", "RssAnon", "RssFile"}) {
      const auto at = status.find(key);
      if (at != std::string::npos) rss += status.substr(at, status.find('\n', at) - at) + "; ";
    }
    std::cout << Json{{"import_s", s},
                      {"rss_after", rss},
                      {"rss_before_bytes", before},
                      {"peak_rss_bytes", peak_rss_bytes()},
                      {"model_f32_bytes", m.model->parameter_count() * 4},
                      {"parameters", m.model->parameter_count()}}
                     .dump();
    return 0;
  }
  torch::manual_seed(0);
  const auto t0 = std::chrono::steady_clock::now();
  write_folder(dir, layers, dtype == "f16");
  const double write_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const auto file_bytes = int64_t(fs::file_size(fs::path(dir) / "model.safetensors"));
  std::string out;
  {
    FILE* p = popen((std::string("'") + argv[0] + "' --import-only --dir '" + dir + "'").c_str(), "r");
    char buf[4096];
    while (p && std::fgets(buf, sizeof buf, p)) out += buf;
    if (!p || pclose(p) != 0) {
      std::cerr << "import failed: " << out << "\n";
      return 1;
    }
  }
  auto r = Json::parse(out);
  r["dtype"] = dtype;
  r["layers"] = layers;
  r["file_bytes"] = file_bytes;
  r["write_s"] = write_s;
  r["peak_rss_over_model"] = double(r["peak_rss_bytes"].get<int64_t>()) / double(r["model_f32_bytes"].get<int64_t>());
  r["peak_rss_over_file_plus_model"] =
      double(r["peak_rss_bytes"].get<int64_t>()) / double(file_bytes + r["model_f32_bytes"].get<int64_t>());
  std::cout << r.dump(2) << "\n";
  fs::remove_all(dir);
  return 0;
}
