// CharTokenizer: one token per Unicode code point, vocabulary = sorted characters of a corpus.
#pragma once
#include <unordered_map>

#include "core/text/tokenizer.h"

namespace nestscope {

class CharTokenizer : public Tokenizer {
 public:
  explicit CharTokenizer(std::vector<char32_t> vocab);  // sorted, unique
  static CharTokenizer from_corpus(std::string_view corpus);

  std::string kind() const override { return "char"; }
  int64_t vocab_size() const override { return int64_t(vocab_.size()); }
  std::vector<int64_t> encode(std::string_view text) const override;
  std::string decode(const std::vector<int64_t>& ids) const override;
  std::string decode_one(int64_t id) const override;
  std::string to_json() const override;

  const std::vector<char32_t>& vocab() const { return vocab_; }

 private:
  std::vector<char32_t> vocab_;
  std::unordered_map<char32_t, int64_t> index_;
};

}  // namespace nestscope
