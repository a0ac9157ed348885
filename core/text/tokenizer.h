// Tokenizer: text <-> token ids. Implementations are stored inside checkpoints as JSON.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace nestscope {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual std::string kind() const = 0;
  virtual int64_t vocab_size() const = 0;
  // Throws Error for invalid UTF-8 or text the vocabulary cannot express.
  virtual std::vector<int64_t> encode(std::string_view text) const = 0;
  // Throws Error for ids outside the vocabulary.
  virtual std::string decode(const std::vector<int64_t>& ids) const = 0;
  virtual std::string decode_one(int64_t id) const = 0;
  // Tokens that end the text (</s>, <|endoftext|>): generation stops when the model writes one.
  virtual const std::vector<int64_t>& stop_ids() const {
    static const std::vector<int64_t> none;
    return none;
  }
  // The beginning-of-text token encode() puts first (Llama's <s>) and its text, which encode()
  // also reads as that token inside a text; -1 and "" when there is none.
  virtual int64_t bos_id() const { return -1; }
  virtual std::string bos_text() const { return {}; }
  virtual std::string to_json() const = 0;
};

// Rebuilds a tokenizer from its to_json() text; throws Error naming what is wrong.
std::unique_ptr<Tokenizer> tokenizer_from_json(const std::string& json_text);

}  // namespace nestscope
