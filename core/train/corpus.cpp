#include "core/train/corpus.h"

#include <string>

#include "core/error.h"

namespace nestscope {

Corpus make_corpus(const Tokenizer& tokenizer, std::string_view text, double train_fraction) {
  check(train_fraction > 0 && train_fraction < 1, "train fraction must be in (0, 1)");
  auto ids = tokenizer.encode(text);
  const auto n = int64_t(ids.size());
  const auto split = int64_t(double(n) * train_fraction);  // as the paper: int(0.9 * len(data))
  check(split > 0 && split < n, "corpus of " + std::to_string(n) + " tokens is too short to split");
  Corpus c;
  c.train.assign(ids.begin(), ids.begin() + split);
  c.validation.assign(ids.begin() + split, ids.end());
  return c;
}

}  // namespace nestscope
