// Tiny BPE tokenizers of both styles for tests and fuzzers (torch-free): GPT-2's byte alphabet with a
// few merges and <|endoftext|>; SentencePiece-style with byte fallback and BOS.
#pragma once
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "core/text/bpe_tokenizer.h"
#include "core/text/utf8.h"

namespace nestscope::test {

// GPT-2's byte alphabet plus a few merges and <|endoftext|>.
inline BpeTokenizer tiny_byte_level() {
  BpeTokenizer::Spec s;
  s.style = BpeTokenizer::Style::ByteLevel;
  for (int b = 0; b < 256; ++b) s.vocab.push_back(utf8_encode(gpt2_byte_to_char(uint8_t(b))));
  for (auto [a, b] : std::vector<std::pair<std::string, std::string>>{
           {"\xC4\xA0", "t"}, {"h", "e"}, {"\xC4\xA0t", "he"}, {"i", "n"}, {"\xC4\xA0", "a"}, {"o", "r"}}) {
    s.merges.emplace_back(a, b);
    s.vocab.push_back(a + b);
  }
  s.vocab.push_back("<|endoftext|>");
  s.added.push_back({int64_t(s.vocab.size()) - 1, "<|endoftext|>", true});
  return BpeTokenizer(std::move(s));
}

// SentencePiece-style with byte fallback and BOS.
inline BpeTokenizer tiny_sentencepiece() {
  BpeTokenizer::Spec s;
  s.style = BpeTokenizer::Style::SentencePiece;
  s.vocab = {"<unk>", "<s>", "</s>"};
  for (int b = 0; b < 256; ++b) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "<0x%02X>", b);
    s.vocab.push_back(buf);
  }
  const std::string mark = "\xE2\x96\x81";
  s.vocab.push_back(mark);
  for (char c = 'a'; c <= 'z'; ++c) s.vocab.push_back(std::string(1, c));
  for (auto [a, b] : std::vector<std::pair<std::string, std::string>>{
           {mark, "t"}, {"h", "e"}, {mark + "t", "he"}, {"i", "n"}, {mark, "a"}}) {
    s.merges.emplace_back(a, b);
    s.vocab.push_back(a + b);
  }
  s.added = {{0, "<unk>", true}, {1, "<s>", true}, {2, "</s>", true}};
  s.byte_fallback = true;
  s.unk_id = 0;
  s.bos_id = 1;
  return BpeTokenizer(std::move(s));
}

}  // namespace nestscope::test
