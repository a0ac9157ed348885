// BpeTokenizer: byte-pair encoding (Sennrich et al. 2016) as Hugging Face tokenizer.json files
// describe it — GPT-2's byte-level BPE (Radford et al. 2019: bytes mapped to printable characters,
// words split by GPT-2's pattern) and SentencePiece-style BPE as Llama uses it (spaces become "▁",
// characters outside the vocabulary fall back to <0xXX> byte tokens). Torch-free, so it can be
// fuzzed on its own.
#pragma once
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/text/tokenizer.h"

namespace nestscope {

class BpeTokenizer : public Tokenizer {
 public:
  enum class Style { ByteLevel, SentencePiece };
  struct AddedToken {
    int64_t id = 0;
    std::string content;
    bool special = false;
  };
  struct Spec {
    Style style = Style::ByteLevel;
    std::vector<std::string> vocab;  // token text by id (byte-level tokens in GPT-2's byte alphabet)
    std::vector<std::pair<std::string, std::string>> merges;  // by priority, highest first
    std::vector<AddedToken> added;   // matched in the raw text before BPE (e.g. <|endoftext|>, <s>)
    bool byte_fallback = false;      // SentencePiece: unknown characters as <0xXX> tokens
    int64_t unk_id = -1;             // used for unknown characters without byte fallback (-1 = error)
    int64_t bos_id = -1;             // prepended by encode when >= 0 (Llama's post-processor)
    std::vector<int64_t> stop_ids;   // end of text (the folder's generation_config.json / tokenizer_config.json)
    bool prepend_space = true;       // SentencePiece: "▁" before the text
    bool space_mark = true;          // SentencePiece: spaces become "▁" (false: plain BPE over code points)
  };

  // Validates the spec (every merge's parts and result in the vocabulary, ids in range).
  explicit BpeTokenizer(Spec spec);
  // A Hugging Face tokenizer.json; `source` names the file in errors. Throws Error on anything
  // unsupported (another model type, normalizer or pre-tokenizer pattern) rather than guessing.
  static BpeTokenizer from_hf_json(const std::string& text, const std::string& source);
  // GPT-2's original files: encoder.json (token -> id) and vocab.bpe (merges).
  static BpeTokenizer from_gpt2_files(const std::string& encoder_json, const std::string& vocab_bpe,
                                      const std::string& source);

  std::string kind() const override { return "bpe"; }
  int64_t vocab_size() const override { return int64_t(spec_.vocab.size()); }
  std::vector<int64_t> encode(std::string_view text) const override;
  std::string decode(const std::vector<int64_t>& ids) const override;
  // One token's bytes; may be part of a UTF-8 sequence that the next tokens complete. A special
  // token (<s>, </s>, <|endoftext|>) is not text: empty.
  std::string decode_one(int64_t id) const override;
  const std::vector<int64_t>& stop_ids() const override { return spec_.stop_ids; }
  // Throws Error on an id outside the vocabulary; the tokenizer is unchanged then.
  void set_stop_ids(std::vector<int64_t> ids);
  // The id of an added token by its text ("</s>"), or -1.
  int64_t added_id(const std::string& content) const;
  int64_t bos_id() const override { return spec_.bos_id; }
  std::string bos_text() const override;
  std::string to_json() const override;  // NestScope's own compact form (stored in checkpoints)
  // A tokenizer.json that Hugging Face tokenizers (and from_hf_json) read back to the same ids.
  std::string to_hf_json() const;

  const Spec& spec() const { return spec_; }
  // From to_json()'s object text.
  static BpeTokenizer from_nestscope_json(const std::string& text);

 private:
  // BPE over one pre-tokenized piece, given as symbol ids (-1 = not in the vocabulary).
  void merge_word(std::vector<int64_t>& symbols) const;
  void encode_piece(std::string_view piece, std::vector<int64_t>& out) const;
  void encode_plain(std::string_view text, std::vector<int64_t>& out) const;  // no added tokens inside

  Spec spec_;
  std::unordered_map<std::string, int64_t> index_;  // token text -> id
  std::unordered_map<uint64_t, std::pair<int64_t, int64_t>> merge_;  // (a << 32 | b) -> (priority, merged id)
  std::vector<int64_t> byte_token_;  // SentencePiece byte fallback: byte -> <0xXX> id (or -1)
  std::vector<int16_t> token_byte_;  // id -> byte of a <0xXX> token, or -1
};

// GPT-2's reversible byte <-> printable character map (bytes_to_unicode in GPT-2's encoder.py).
char32_t gpt2_byte_to_char(uint8_t b);
int gpt2_char_to_byte(char32_t c);  // -1 when c is not in the map
// GPT-2's pre-tokenizer: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// over code points; returns [begin, end) code-point index pairs.
std::vector<std::pair<size_t, size_t>> gpt2_pretokenize(const std::vector<char32_t>& cps);

}  // namespace nestscope
