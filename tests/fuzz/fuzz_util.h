// Shared by the fuzz targets: the tiny tokenizers, and input helpers.
#pragma once
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/text/bpe_tokenizer.h"
#include "core/text/utf8.h"
#include "tests/core/tiny_tokenizers.h"

namespace nestscope::fuzz {

using test::tiny_byte_level;
using test::tiny_sentencepiece;

// A finding: libFuzzer reports the abort with the input that caused it.
[[noreturn]] inline void fail(const char* what) {
  std::fprintf(stderr, "fuzz finding: %s\n", what);
  std::abort();
}

}  // namespace nestscope::fuzz
