#include "core/text/char_tokenizer.h"
#include "core/text/bpe_tokenizer.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"
#include "core/json_guard.h"
#include "core/text/utf8.h"

namespace nestscope {

CharTokenizer::CharTokenizer(std::vector<char32_t> vocab) : vocab_(std::move(vocab)) {
  check(!vocab_.empty(), "char tokenizer: empty vocabulary");
  check(std::is_sorted(vocab_.begin(), vocab_.end()) &&
            std::adjacent_find(vocab_.begin(), vocab_.end()) == vocab_.end(),
        "char tokenizer: vocabulary must be sorted and unique");
  for (size_t i = 0; i < vocab_.size(); ++i) index_[vocab_[i]] = int64_t(i);
}

CharTokenizer CharTokenizer::from_corpus(std::string_view corpus) {
  auto cps = utf8_decode(corpus, "corpus");
  check(!cps.empty(), "corpus is empty");
  std::set<char32_t> seen(cps.begin(), cps.end());
  return CharTokenizer(std::vector<char32_t>(seen.begin(), seen.end()));
}

std::vector<int64_t> CharTokenizer::encode(std::string_view text) const {
  const auto cps = utf8_decode(text, "text");
  std::vector<int64_t> ids;
  ids.reserve(cps.size());
  for (size_t i = 0; i < cps.size(); ++i) {
    auto it = index_.find(cps[i]);
    if (it == index_.end())
      throw Error("character " + describe_code_point(cps[i]) + " at position " + std::to_string(i) +
                  " is not in the model's vocabulary of " + std::to_string(vocab_.size()) + " characters");
    ids.push_back(it->second);
  }
  return ids;
}

std::string CharTokenizer::decode_one(int64_t id) const {
  check(id >= 0 && id < vocab_size(), "token id " + std::to_string(id) + " is outside the vocabulary [0, " +
                                          std::to_string(vocab_size()) + ")");
  return utf8_encode(vocab_[id]);
}

std::string CharTokenizer::decode(const std::vector<int64_t>& ids) const {
  std::string out;
  for (int64_t id : ids) out += decode_one(id);
  return out;
}

std::string CharTokenizer::to_json() const {
  nlohmann::json j = {{"kind", "char"}, {"vocab", utf8_encode(vocab_)}};
  return j.dump();
}

std::unique_ptr<Tokenizer> tokenizer_from_json(const std::string& json_text) {
  auto j = parse_json(json_text, "tokenizer");
  check(j.is_object() && j.contains("kind") && j["kind"].is_string(), "tokenizer: not a tokenizer JSON object");
  const auto kind = j["kind"].get<std::string>();
  if (kind == "char") {
    check(j.contains("vocab") && j["vocab"].is_string(), "tokenizer: char tokenizer without a 'vocab' string");
    return std::make_unique<CharTokenizer>(utf8_decode(j["vocab"].get<std::string>(), "tokenizer vocab"));
  }
  if (kind == "bpe") return std::make_unique<BpeTokenizer>(BpeTokenizer::from_nestscope_json(json_text));
  throw Error("tokenizer: unknown kind '" + kind + "'");
}

}  // namespace nestscope
