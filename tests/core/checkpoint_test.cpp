#include <gtest/gtest.h>
#include <torch/torch.h>

#include <fstream>

#include "core/error.h"
#include "core/io/atomic_file.h"
#include "core/io/checkpoint.h"
#include "core/io/safetensors.h"
#include "core/text/char_tokenizer.h"
#include "tests/core/test_util.h"

using namespace nestscope;

namespace {

struct Saved {
  test::TempDir dir;
  std::string path;
  Gpt model{nullptr};
  CharTokenizer tok = CharTokenizer::from_corpus("abcdefghij\n");
  Saved() {
    torch::manual_seed(7);
    model = Gpt(test::tiny_config());
    path = dir.file("m.safetensors");
    save_checkpoint(path, model, tok, R"({"note":"test"})");
  }
};

// Rewrites the checkpoint at `path` with `edit` applied to a copy of its tensors.
void rewrite(const std::string& path, const std::function<void(std::map<std::string, torch::Tensor>&)>& edit) {
  auto f = SafetensorsFile::read(path);
  std::map<std::string, torch::Tensor> ts;
  for (const auto& r : f.tensors()) {
    auto t = torch::empty(r.shape, torch::kFloat32);
    std::memcpy(t.data_ptr(), f.data(r), r.end - r.begin);
    ts[r.name] = t;
  }
  edit(ts);
  std::vector<TensorToWrite> out;
  for (auto& [name, t] : ts) out.push_back({name, DType::F32, t.sizes().vec(), t.data_ptr()});
  write_safetensors(path, out, f.metadata());
}

void expect_load_error(const std::string& path, const std::string& needle) {
  try {
    load_checkpoint(path);
    FAIL() << "expected an error containing '" << needle << "'";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    EXPECT_NE(msg.find(needle), std::string::npos) << msg;
  }
}

}  // namespace

TEST(Checkpoint, ReloadGivesBitIdenticalLogits) {
  Saved s;
  auto m = load_checkpoint(s.path);
  EXPECT_EQ(m.config, test::tiny_config());
  EXPECT_EQ(m.tokenizer->vocab_size(), 11);
  EXPECT_EQ(m.training_json, R"({"note":"test"})");
  torch::NoGradGuard g;
  s.model->eval();
  auto x = torch::randint(0, 11, {2, 20}, torch::kInt64);
  EXPECT_TRUE(torch::equal(s.model->forward(x), m.model->forward(x)));
}

TEST(Checkpoint, NanWeightsAreRejectedNamingTheTensor) {
  Saved s;
  rewrite(s.path, [](auto& ts) { ts["blk.1.mlp.up.weight"][3][2] = NAN; });
  expect_load_error(s.path, "tensor 'blk.1.mlp.up.weight' contains NaN");
}

TEST(Checkpoint, WrongShapeIsRejectedWithBothShapes) {
  Saved s;
  rewrite(s.path, [](auto& ts) { ts["blk.0.attn.q.weight"] = torch::zeros({8, 16}); });
  expect_load_error(s.path, "tensor 'blk.0.attn.q.weight' has shape [8,16], expected [16,16]");
}

TEST(Checkpoint, MissingAndUnexpectedTensorsAreRejected) {
  Saved s;
  rewrite(s.path, [](auto& ts) { ts.erase("ln_f.bias"); });
  expect_load_error(s.path, "tensor 'ln_f.bias' is missing");
  Saved s2;
  rewrite(s2.path, [](auto& ts) { ts["blk.9.extra"] = torch::zeros({2}); });
  expect_load_error(s2.path, "unexpected tensor 'blk.9.extra'");
}

TEST(Checkpoint, ForeignSafetensorsFileIsNotMistakenForACheckpoint) {
  test::TempDir dir;
  std::vector<float> a = {1, 2};
  write_safetensors(dir.file("x.safetensors"), {{"w", DType::F32, {2}, a.data()}}, {});
  expect_load_error(dir.file("x.safetensors"), "not a NestScope checkpoint");
}

TEST(Checkpoint, TruncatedFileIsRejected) {
  Saved s;
  auto bytes = read_file_bytes(s.path);
  for (size_t keep : {size_t(5), size_t(300), bytes.size() - 1}) {
    std::ofstream(s.path, std::ios::binary | std::ios::trunc).write(reinterpret_cast<const char*>(bytes.data()),
                                                                    std::streamsize(keep));
    try {
      load_checkpoint(s.path);
      FAIL() << "a file cut to " << keep << " bytes loaded";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(s.path), std::string::npos) << e.what();
    }
  }
}
