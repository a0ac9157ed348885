// tokenizer.json (Hugging Face form; first byte odd) and NestScope's stored form on arbitrary text.
// A tokenizer that loads must encode and decode a fixed multilingual text without crashing, and
// survive its own round trip through both JSON forms.
#include "tests/fuzz/fuzz_util.h"

using namespace nestscope;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string text(reinterpret_cast<const char*>(data) + 1, size - 1);
  try {
    std::unique_ptr<Tokenizer> tok;
    if (data[0] & 1) tok = std::make_unique<BpeTokenizer>(BpeTokenizer::from_hf_json(text, "tokenizer.json"));
    else tok = tokenizer_from_json(text);
    const std::string sample = "The thin ant, 2026 — ünïcode ✓ 日本 😀\n\t  x";
    std::vector<int64_t> ids;
    try {
      ids = tok->encode(sample);
    } catch (const Error&) {  // e.g. a character vocabulary without these characters
    }
    for (int64_t id : ids)
      if (id < 0 || id >= tok->vocab_size()) fuzz::fail("encode produced an id outside the vocabulary");
    tok->decode(ids);
    if (const auto* bpe = dynamic_cast<const BpeTokenizer*>(tok.get())) {
      const auto again = BpeTokenizer::from_hf_json(bpe->to_hf_json(), "again");
      const auto stored = BpeTokenizer::from_nestscope_json(bpe->to_json());
      if (stored.to_json() != bpe->to_json()) fuzz::fail("stored form does not round-trip");
      (void)again;
    }
  } catch (const Error&) {
  }
  return 0;
}
