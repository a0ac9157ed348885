// Corpus: a tokenized text split into a training head and a validation tail.
#pragma once
#include <cstdint>
#include <string_view>
#include <vector>

#include "core/defaults.h"
#include "core/text/tokenizer.h"

namespace nestscope {

struct Corpus {
  std::vector<int64_t> train;       // first train_fraction of the tokens
  std::vector<int64_t> validation;  // the rest
};

// Throws Error when the text does not encode or a split would be empty.
Corpus make_corpus(const Tokenizer& tokenizer, std::string_view text, double train_fraction = kTrainFraction);

}  // namespace nestscope
