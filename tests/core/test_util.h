// Helpers shared by the core tests: a tiny model config, temp folders, the reference corpus.
#pragma once
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "core/model/config.h"

namespace nestscope::test {

inline ModelConfig tiny_config() {
  ModelConfig c;
  c.vocab_size = 11;
  c.d_model = 16;
  c.n_heads = 2;
  c.n_layers = 2;
  c.context = 32;
  c.d_ff = 32;
  return c;
}

// A small repetitive training text (60 lines of Hamlet), for models trained for a few steps.
inline std::string hamlet_text() {
  std::string s;
  for (int i = 0; i < 60; ++i) s += "To be, or not to be: that is the question.\n";
  return s;
}

// A fresh folder under the system temp dir, removed when the object dies.
struct TempDir {
  std::filesystem::path path;
  TempDir() {
    path = std::filesystem::temp_directory_path() /
           ("nestscope-test-" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

inline bool have_corpus() { return std::filesystem::exists(NESTSCOPE_CORPUS); }
#define NESTSCOPE_NEED_CORPUS()                                                                  \
  if (!::nestscope::test::have_corpus())                                                          \
  GTEST_SKIP() << "reference corpus " NESTSCOPE_CORPUS " is absent (../shared/data/tinyshakespeare.txt); " \
                  "skipping the test that needs it"

// Runs a shell command; returns its exit status and fills `out` with stdout (+stderr if merged).
int run_command(const std::string& cmd, std::string* out);

}  // namespace nestscope::test
