#include <gtest/gtest.h>

#include "core/error.h"
#include "core/text/char_tokenizer.h"
#include "core/text/utf8.h"

using namespace nestscope;

TEST(CharTokenizer, VocabularyIsTheSortedCharactersOfTheCorpus) {
  auto t = CharTokenizer::from_corpus("hello world\n");
  EXPECT_EQ(t.vocab_size(), 9);
  EXPECT_EQ(t.vocab(), std::vector<char32_t>(U"\n dehlorw", U"\n dehlorw" + 9));
  EXPECT_EQ(t.encode("hello"), (std::vector<int64_t>{4, 3, 5, 5, 6}));
}

TEST(CharTokenizer, RoundTripsTextIncludingMultiByteCharacters) {
  const std::string corpus = "Grüße, 世界! naïve café\n";
  auto t = CharTokenizer::from_corpus(corpus);
  EXPECT_EQ(t.decode(t.encode(corpus)), corpus);
  EXPECT_EQ(t.decode(t.encode("café")), "café");
}

TEST(CharTokenizer, UnknownCharacterIsAClearError) {
  auto t = CharTokenizer::from_corpus("abc");
  try {
    t.encode("abz");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'z' at position 2"), std::string::npos) << e.what();
  }
}

TEST(CharTokenizer, InvalidUtf8IsAClearError) {
  auto t = CharTokenizer::from_corpus("abc");
  for (const std::string bad : {std::string("a\xff"), std::string("\xc3"), std::string("\xc0\xaf"),
                                std::string("\xed\xa0\x80")}) {
    try {
      t.encode(bad);
      FAIL() << "expected an error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("invalid UTF-8"), std::string::npos) << e.what();
    }
  }
}

TEST(CharTokenizer, JsonRoundTripAndBadIds) {
  auto t = CharTokenizer::from_corpus("The quick brown fox\n");
  auto back = tokenizer_from_json(t.to_json());
  EXPECT_EQ(back->kind(), "char");
  EXPECT_EQ(back->vocab_size(), t.vocab_size());
  EXPECT_EQ(back->encode("he fox"), t.encode("he fox"));
  EXPECT_THROW(t.decode({0, 99}), Error);
  EXPECT_THROW(tokenizer_from_json("{\"kind\":\"bpe\"}"), Error);
  EXPECT_THROW(tokenizer_from_json("not json"), Error);
}
