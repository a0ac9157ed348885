#include "core/text/bpe_tokenizer.h"

#include <algorithm>
#include <array>
#include <nlohmann/json.hpp>
#include <queue>

#include "core/error.h"
#include "core/json_guard.h"
#include "core/text/utf8.h"

namespace nestscope {

namespace {

using Json = nlohmann::json;

struct CodeRange {
  char32_t lo, hi;
};
#include "core/text/unicode_tables.inc"

template <size_t N>
bool in_table(const CodeRange (&table)[N], char32_t c) {
  auto it = std::upper_bound(std::begin(table), std::end(table), c,
                             [](char32_t v, const CodeRange& r) { return v < r.lo; });
  return it != std::begin(table) && c <= (it - 1)->hi;
}
bool is_letter(char32_t c) { return c < 0x80 ? ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') : in_table(kLetter, c); }
bool is_number(char32_t c) { return c < 0x80 ? (c >= '0' && c <= '9') : in_table(kNumber, c); }
bool is_space(char32_t c) { return in_table(kWhiteSpace, c); }

const std::string kSpaceMark = "\xE2\x96\x81";  // "▁" (U+2581), SentencePiece's space

std::string byte_token_text(int b) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "<0x%02X>", b);
  return buf;
}

// GPT-2's bytes_to_unicode: printable Latin-1 bytes map to themselves, the other 68 to 256 + n.
const std::array<char32_t, 256>& byte_map() {
  static const std::array<char32_t, 256> map = [] {
    std::array<char32_t, 256> m{};
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      m[size_t(b)] = printable ? char32_t(b) : next++;
    }
    return m;
  }();
  return map;
}

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (size_t p = s.find(from); p != std::string::npos; p = s.find(from, p + to.size())) s.replace(p, from.size(), to);
  return s;
}

}  // namespace

char32_t gpt2_byte_to_char(uint8_t b) { return byte_map()[b]; }

int gpt2_char_to_byte(char32_t c) {
  static const std::unordered_map<char32_t, int> inverse = [] {
    std::unordered_map<char32_t, int> m;
    for (int b = 0; b < 256; ++b) m[byte_map()[size_t(b)]] = b;
    return m;
  }();
  auto it = inverse.find(c);
  return it == inverse.end() ? -1 : it->second;
}

std::vector<std::pair<size_t, size_t>> gpt2_pretokenize(const std::vector<char32_t>& s) {
  std::vector<std::pair<size_t, size_t>> out;
  const size_t n = s.size();
  auto other = [&](char32_t c) { return !is_space(c) && !is_letter(c) && !is_number(c); };
  size_t i = 0;
  while (i < n) {
    // 's|'t|'re|'ve|'m|'ll|'d
    if (s[i] == '\'' && i + 1 < n) {
      const char32_t a = s[i + 1], b = i + 2 < n ? s[i + 2] : 0;
      size_t len = 0;
      if (a == 's' || a == 't' || a == 'm' || a == 'd') len = 2;
      else if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) len = 3;
      if (len) {
        out.emplace_back(i, i + len);
        i += len;
        continue;
      }
    }
    // ' ?\p{L}+', ' ?\p{N}+', ' ?[^\s\p{L}\p{N}]+'
    const size_t j = s[i] == ' ' && i + 1 < n ? i + 1 : i;
    bool (*cls)(char32_t) = nullptr;
    if (is_letter(s[j])) cls = is_letter;
    else if (is_number(s[j])) cls = is_number;
    if (cls || other(s[j])) {
      size_t k = j + 1;
      while (k < n && (cls ? cls(s[k]) : other(s[k]))) ++k;
      out.emplace_back(i, k);
      i = k;
      continue;
    }
    // '\s+(?!\S)' leaves the last space of a run for the word after it; '\s+' takes a lone one.
    size_t k = i;
    while (k < n && is_space(s[k])) ++k;
    if (k < n && k - i >= 2) --k;
    out.emplace_back(i, k);
    i = k;
  }
  return out;
}

BpeTokenizer::BpeTokenizer(Spec spec) : spec_(std::move(spec)) {
  const int64_t V = int64_t(spec_.vocab.size());
  check(V > 0, "tokenizer: empty vocabulary");
  index_.reserve(size_t(V));
  for (int64_t id = 0; id < V; ++id) index_.emplace(spec_.vocab[size_t(id)], id);  // first id wins on repeats
  for (const auto& a : spec_.added) {
    check(a.id >= 0 && a.id < V, "tokenizer: added token '" + a.content + "' has id " + std::to_string(a.id) +
                                     " outside the vocabulary of " + std::to_string(V));
    check(!a.content.empty(), "tokenizer: added token " + std::to_string(a.id) + " is empty");
  }
  for (int64_t id : {spec_.unk_id, spec_.bos_id})
    check(id >= -1 && id < V, "tokenizer: special token id " + std::to_string(id) + " is outside the vocabulary");
  for (int64_t id : spec_.stop_ids)
    check(id >= 0 && id < V, "tokenizer: end-of-text token id " + std::to_string(id) + " is outside the vocabulary");
  merge_.reserve(spec_.merges.size());
  for (size_t r = 0; r < spec_.merges.size(); ++r) {
    const auto& [a, b] = spec_.merges[r];
    auto ia = index_.find(a), ib = index_.find(b), im = index_.find(a + b);
    check(ia != index_.end() && ib != index_.end() && im != index_.end(),
          "tokenizer: merge " + std::to_string(r) + " ('" + a + "' '" + b + "') uses a token missing from the vocabulary");
    merge_.emplace(uint64_t(ia->second) << 32 | uint64_t(ib->second), std::make_pair(int64_t(r), im->second));
  }
  token_byte_.assign(size_t(V), -1);
  if (spec_.style == Style::SentencePiece) {
    byte_token_.assign(256, -1);
    for (int b = 0; b < 256; ++b)
      if (auto it = index_.find(byte_token_text(b)); it != index_.end()) {
        byte_token_[size_t(b)] = it->second;
        token_byte_[size_t(it->second)] = int16_t(b);
      }
    if (spec_.byte_fallback)
      for (int b = 0; b < 256; ++b)
        check(byte_token_[size_t(b)] >= 0, "tokenizer: byte fallback needs the token " + byte_token_text(b));
  } else {
    for (int b = 0; b < 256; ++b)
      check(index_.count(utf8_encode(gpt2_byte_to_char(uint8_t(b)))),
            "tokenizer: byte-level vocabulary lacks the token for byte " + std::to_string(b));
  }
}

void BpeTokenizer::merge_word(std::vector<int64_t>& sym) const {
  // Lowest merge priority first, leftmost on ties (as GPT-2's encoder and HF tokenizers do),
  // over a linked list with a heap of candidate pairs: O(n log n) even for a whole unsplit text.
  const int n = int(sym.size());
  if (n < 2) return;
  std::vector<int> next(static_cast<size_t>(n)), prev(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    next[size_t(i)] = i + 1 < n ? i + 1 : -1;
    prev[size_t(i)] = i - 1;
  }
  struct Cand {
    int64_t rank;
    int left;
    int64_t a, b;
    bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : left > o.left; }
  };
  std::priority_queue<Cand, std::vector<Cand>, std::greater<>> heap;
  auto push = [&](int l) {
    if (l < 0 || next[size_t(l)] < 0) return;
    const int64_t a = sym[size_t(l)], b = sym[size_t(next[size_t(l)])];
    if (a < 0 || b < 0) return;
    if (auto it = merge_.find(uint64_t(a) << 32 | uint64_t(b)); it != merge_.end()) heap.push({it->second.first, l, a, b});
  };
  for (int i = 0; i + 1 < n; ++i) push(i);
  std::vector<char> dead(size_t(n), 0);
  while (!heap.empty()) {
    const Cand c = heap.top();
    heap.pop();
    const int r = next[size_t(c.left)];
    if (dead[size_t(c.left)] || r < 0 || sym[size_t(c.left)] != c.a || sym[size_t(r)] != c.b) continue;  // stale
    sym[size_t(c.left)] = merge_.at(uint64_t(c.a) << 32 | uint64_t(c.b)).second;
    dead[size_t(r)] = 1;
    next[size_t(c.left)] = next[size_t(r)];
    if (next[size_t(r)] >= 0) prev[size_t(next[size_t(r)])] = c.left;
    push(prev[size_t(c.left)]);
    push(c.left);
  }
  size_t w = 0;
  for (int i = 0; i < n; ++i)
    if (!dead[size_t(i)]) sym[w++] = sym[size_t(i)];
  sym.resize(w);
}

void BpeTokenizer::encode_piece(std::string_view piece, std::vector<int64_t>& out) const {
  std::vector<int64_t> sym;
  if (spec_.style == Style::ByteLevel) {
    for (unsigned char b : piece) sym.push_back(index_.at(utf8_encode(gpt2_byte_to_char(b))));
    merge_word(sym);
    out.insert(out.end(), sym.begin(), sym.end());
    return;
  }
  // SentencePiece: code points are the symbols; unknown ones (-1) keep their bytes for the fallback.
  std::vector<std::string_view> text;
  for (size_t i = 0; i < piece.size();) {
    const unsigned char c = static_cast<unsigned char>(piece[i]);
    const size_t len = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;  // already validated UTF-8
    const auto ch = piece.substr(i, len);
    auto it = index_.find(std::string(ch));
    sym.push_back(it == index_.end() ? -1 : it->second);
    text.push_back(ch);
    i += len;
  }
  std::vector<std::string_view> unknown;  // the bytes of each -1 symbol, in order
  for (size_t i = 0; i < sym.size(); ++i)
    if (sym[i] < 0) unknown.push_back(text[i]);
  merge_word(sym);
  size_t u = 0;
  bool last_unk = false;
  for (int64_t id : sym) {
    if (id >= 0) {
      out.push_back(id);
      last_unk = false;
      continue;
    }
    const auto ch = unknown[u++];
    if (spec_.byte_fallback) {
      for (unsigned char b : ch) out.push_back(byte_token_[b]);
    } else {
      check(spec_.unk_id >= 0, "tokenizer: the character " + describe_code_point(utf8_decode(ch).front()) +
                                   " is not in the vocabulary and there is no unknown token");
      if (!last_unk) out.push_back(spec_.unk_id);  // consecutive unknowns fuse into one
      last_unk = true;
    }
  }
}

void BpeTokenizer::encode_plain(std::string_view text, std::vector<int64_t>& out) const {
  if (text.empty()) return;
  if (spec_.style == Style::ByteLevel) {
    const auto cps = utf8_decode(text, "prompt");
    std::vector<size_t> offset(cps.size() + 1, 0);  // code point -> byte offset
    for (size_t i = 0; i < cps.size(); ++i) offset[i + 1] = offset[i] + utf8_encode(cps[i]).size();
    for (const auto& [b, e] : gpt2_pretokenize(cps)) encode_piece(text.substr(offset[b], offset[e] - offset[b]), out);
    return;
  }
  utf8_decode(text, "prompt");  // validates
  std::string norm = spec_.space_mark ? replace_all(std::string(text), " ", kSpaceMark) : std::string(text);
  if (spec_.prepend_space) norm = kSpaceMark + norm;
  encode_piece(norm, out);
}

std::vector<int64_t> BpeTokenizer::encode(std::string_view text) const {
  utf8_decode(text, "prompt");  // invalid UTF-8 is an error before anything else
  std::vector<int64_t> out;
  if (spec_.bos_id >= 0) out.push_back(spec_.bos_id);
  // Added tokens are cut out of the raw text first (leftmost, then longest), as HF does.
  size_t start = 0, i = 0;
  while (i < text.size()) {
    const AddedToken* best = nullptr;
    for (const auto& a : spec_.added)
      if (text.compare(i, a.content.size(), a.content) == 0 && (!best || a.content.size() > best->content.size()))
        best = &a;
    if (!best) {
      ++i;
      continue;
    }
    encode_plain(text.substr(start, i - start), out);
    out.push_back(best->id);
    i += best->content.size();
    start = i;
  }
  encode_plain(text.substr(start), out);
  return out;
}

std::string BpeTokenizer::decode_one(int64_t id) const {
  check(id >= 0 && id < vocab_size(), "token id " + std::to_string(id) + " is outside the vocabulary of " +
                                          std::to_string(vocab_size()));
  for (const auto& a : spec_.added)
    if (a.id == id) return a.special ? std::string() : a.content;
  const std::string& t = spec_.vocab[size_t(id)];
  if (spec_.style == Style::SentencePiece) {
    if (token_byte_[size_t(id)] >= 0) return std::string(1, char(token_byte_[size_t(id)]));
    return spec_.space_mark ? replace_all(t, kSpaceMark, " ") : t;
  }
  std::string out;
  for (char32_t c : utf8_decode(t, "token")) {
    const int b = gpt2_char_to_byte(c);
    out += b >= 0 ? std::string(1, char(b)) : utf8_encode(c);
  }
  return out;
}

std::string BpeTokenizer::bos_text() const {
  for (const auto& a : spec_.added)
    if (a.id == spec_.bos_id) return a.content;
  return {};
}

void BpeTokenizer::set_stop_ids(std::vector<int64_t> ids) {
  for (int64_t id : ids)
    check(id >= 0 && id < vocab_size(), "tokenizer: end-of-text token id " + std::to_string(id) +
                                            " is outside the vocabulary of " + std::to_string(vocab_size()));
  spec_.stop_ids = std::move(ids);
}

int64_t BpeTokenizer::added_id(const std::string& content) const {
  for (const auto& a : spec_.added)
    if (a.content == content) return a.id;
  return -1;
}

std::string BpeTokenizer::decode(const std::vector<int64_t>& ids) const {
  std::string out;
  for (int64_t id : ids) out += decode_one(id);  // special tokens (e.g. the BOS encode adds) are not text
  if (spec_.style == Style::SentencePiece && spec_.prepend_space && !out.empty() && out[0] == ' ') out.erase(0, 1);
  return out;
}

std::string BpeTokenizer::to_json() const {
  Json merges = Json::array();
  for (const auto& [a, b] : spec_.merges) merges.push_back({a, b});
  Json added = Json::array();
  for (const auto& a : spec_.added) added.push_back({{"id", a.id}, {"content", a.content}, {"special", a.special}});
  Json j = {{"kind", "bpe"},
              {"style", spec_.style == Style::ByteLevel ? "byte_level" : "sentencepiece"},
              {"vocab", spec_.vocab},
              {"merges", merges},
              {"added", added},
              {"byte_fallback", spec_.byte_fallback},
              {"unk_id", spec_.unk_id},
              {"bos_id", spec_.bos_id},
              {"prepend_space", spec_.prepend_space},
              {"space_mark", spec_.space_mark}};
  if (!spec_.stop_ids.empty()) j["stop_ids"] = spec_.stop_ids;  // absent in older checkpoints
  return j.dump();
}

BpeTokenizer BpeTokenizer::from_nestscope_json(const std::string& text) {
  auto j = parse_json(text, "tokenizer");
  check(j.is_object(), "tokenizer: BPE tokenizer JSON is not an object");
  try {
    Spec s;
    const auto style = j.at("style").get<std::string>();
    check(style == "byte_level" || style == "sentencepiece", "tokenizer: unknown BPE style '" + style + "'");
    s.style = style == "byte_level" ? Style::ByteLevel : Style::SentencePiece;
    s.vocab = j.at("vocab").get<std::vector<std::string>>();
    for (const auto& m : j.at("merges")) s.merges.emplace_back(m.at(0).get<std::string>(), m.at(1).get<std::string>());
    for (const auto& a : j.at("added"))
      s.added.push_back({a.at("id").get<int64_t>(), a.at("content").get<std::string>(), a.at("special").get<bool>()});
    s.byte_fallback = j.at("byte_fallback").get<bool>();
    s.unk_id = j.at("unk_id").get<int64_t>();
    s.bos_id = j.at("bos_id").get<int64_t>();
    s.stop_ids = j.value("stop_ids", std::vector<int64_t>{});
    s.prepend_space = j.at("prepend_space").get<bool>();
    s.space_mark = j.value("space_mark", true);
    return BpeTokenizer(std::move(s));
  } catch (const Json::exception& e) {
    throw Error(std::string("tokenizer: ") + e.what());
  }
}

namespace {

// GPT-2's pattern as tokenizer.json spells it (HF's ByteLevel pre-tokenizer uses it implicitly).
const char* kGpt2Pattern = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

// The token ids and contents of an HF vocabulary plus added tokens, as one dense table.
std::vector<std::string> dense_vocab(const Json& vocab, const std::vector<BpeTokenizer::AddedToken>& added,
                                     const std::string& source) {
  check(vocab.is_object(), source + ": model.vocab must be an object of token -> id");
  int64_t V = 0;
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    check(it.value().is_number_integer() && it.value().get<int64_t>() >= 0 && it.value().get<int64_t>() < (1 << 24),
          source + ": token '" + it.key() + "' has an invalid id");
    V = std::max(V, it.value().get<int64_t>() + 1);
  }
  for (const auto& a : added) {
    check(a.id >= 0 && a.id < (1 << 24), source + ": added token '" + a.content + "' has an invalid id");
    V = std::max(V, a.id + 1);
  }
  // Ids must be 0..V-1 without gaps, so V cannot exceed the entries given: checked before allocating
  // (a file claiming id 16,000,000 for its one token would otherwise cost 16 M empty strings).
  check(size_t(V) <= vocab.size() + added.size(), source + ": token ids reach " + std::to_string(V - 1) + " but only " +
                                                      std::to_string(vocab.size() + added.size()) +
                                                      " tokens are given (ids must be 0.." +
                                                      std::to_string(vocab.size() + added.size() - 1) + " without gaps)");
  std::vector<std::string> out(static_cast<size_t>(V));
  std::vector<char> seen(size_t(V), 0);
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    out[size_t(it.value().get<int64_t>())] = it.key();
    seen[size_t(it.value().get<int64_t>())] = 1;
  }
  for (const auto& a : added)
    if (!seen[size_t(a.id)]) {
      out[size_t(a.id)] = a.content;
      seen[size_t(a.id)] = 1;
    }
  for (int64_t id = 0; id < V; ++id)
    check(seen[size_t(id)], source + ": token id " + std::to_string(id) + " has no token (ids must be 0.." +
                                std::to_string(V - 1) + " without gaps)");
  return out;
}

std::pair<std::string, std::string> split_merge(const Json& m, const std::string& source) {
  if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string())
    return {m[0].get<std::string>(), m[1].get<std::string>()};
  check(m.is_string(), source + ": a merge must be \"a b\" or [\"a\", \"b\"]");
  const auto s = m.get<std::string>();
  const size_t sp = s.find(' ', 1);
  check(sp != std::string::npos && sp + 1 < s.size() && s.find(' ', sp + 1) == std::string::npos,
        source + ": merge \"" + s + "\" is not two tokens separated by one space");
  return {s.substr(0, sp), s.substr(sp + 1)};
}

std::string type_of(const Json& j) { return j.is_object() && j.contains("type") && j["type"].is_string() ? j["type"].get<std::string>() : ""; }

}  // namespace

BpeTokenizer BpeTokenizer::from_hf_json(const std::string& text, const std::string& source) {
  auto j = parse_json(text, source);
  check(j.is_object(), source + ": not a JSON object (is this a tokenizer.json?)");
  try {
    const auto& model = j.at("model");
    const auto mtype = type_of(model);
    check(mtype == "BPE", source + ": tokenizer model type '" + mtype + "' is not supported (BPE only)");
    Spec s;
    if (j.contains("added_tokens") && j["added_tokens"].is_array())
      for (const auto& a : j["added_tokens"])
        s.added.push_back({a.at("id").get<int64_t>(), a.at("content").get<std::string>(), a.value("special", false)});
    s.vocab = dense_vocab(model.at("vocab"), s.added, source);
    for (const auto& m : model.at("merges")) s.merges.push_back(split_merge(m, source));
    s.byte_fallback = model.value("byte_fallback", false);
    auto id_of = [&](const std::string& t) -> int64_t {
      for (size_t i = 0; i < s.vocab.size(); ++i)
        if (s.vocab[i] == t) return int64_t(i);
      throw Error(source + ": special token '" + t + "' is not in the vocabulary");
    };
    if (model.contains("unk_token") && model["unk_token"].is_string()) s.unk_id = id_of(model["unk_token"].get<std::string>());
    const Json none;
    const auto& pre = j.contains("pre_tokenizer") ? j["pre_tokenizer"] : none;
    const auto& norm = j.contains("normalizer") ? j["normalizer"] : none;
    // Byte-level: a ByteLevel pre-tokenizer (GPT-2's pattern, implicitly or as a Split before it).
    auto byte_level_ok = [&](const Json& p) {
      if (type_of(p) == "ByteLevel") {
        check(!p.value("add_prefix_space", false), source + ": ByteLevel add_prefix_space is not supported");
        check(p.value("use_regex", true), source + ": ByteLevel without its pattern is not supported");
        return true;
      }
      return false;
    };
    bool byte_level = byte_level_ok(pre);
    if (type_of(pre) == "Sequence") {
      bool split = false;
      for (const auto& p : pre.at("pretokenizers")) {
        if (type_of(p) == "Split") {
          const auto pat = p.at("pattern").value("Regex", p.at("pattern").value("String", std::string()));
          check(pat == kGpt2Pattern, source + ": pre-tokenizer pattern '" + pat +
                                         "' is not supported (GPT-2's byte-level pattern only)");
          split = true;
        } else if (type_of(p) == "ByteLevel") {
          check(split || p.value("use_regex", true), source + ": ByteLevel without a pattern is not supported");
          byte_level = true;
        } else {
          throw Error(source + ": pre-tokenizer '" + type_of(p) + "' is not supported");
        }
      }
    }
    if (byte_level) {
      check(norm.is_null(), source + ": a normalizer with a byte-level tokenizer is not supported");
      s.style = Style::ByteLevel;
    } else {
      // SentencePiece-style: Prepend("▁") + Replace(" " -> "▁") normalizers, or a Metaspace pre-tokenizer.
      s.style = Style::SentencePiece;
      s.prepend_space = s.space_mark = false;
      auto normalizer = [&](const Json& n) {
        const auto t = type_of(n);
        if (t == "Prepend" && n.at("prepend").get<std::string>() == kSpaceMark) s.prepend_space = true;
        else if (t == "Replace" && n.at("pattern").value("String", std::string()) == " " &&
                 n.at("content").get<std::string>() == kSpaceMark)
          s.space_mark = true;
        else
          throw Error(source + ": normalizer '" + t + "' is not supported (SentencePiece's Prepend/Replace only)");
      };
      if (type_of(norm) == "Sequence") {
        for (const auto& n : norm.at("normalizers")) normalizer(n);
      } else if (!norm.is_null()) {
        normalizer(norm);
      }
      if (type_of(pre) == "Metaspace") {
        check(pre.value("replacement", kSpaceMark) == kSpaceMark, source + ": Metaspace replacement must be ▁");
        check(!pre.value("split", false), source + ": a splitting Metaspace pre-tokenizer is not supported");
        s.prepend_space = pre.value("prepend_scheme", std::string("always")) != "never" && pre.value("add_prefix_space", true);
        s.space_mark = true;
      } else {
        // No normalizer and no pre-tokenizer: plain BPE over code points (e.g. a character vocabulary).
        check(pre.is_null(), source + ": pre-tokenizer '" + type_of(pre) + "' is not supported");
      }
    }
    // BOS from a TemplateProcessing post-processor whose single-sequence template starts with a special token.
    if (j.contains("post_processor") && type_of(j["post_processor"]) == "TemplateProcessing") {
      const auto& single = j["post_processor"].at("single");
      if (single.is_array() && !single.empty() && single[0].contains("SpecialToken"))
        s.bos_id = id_of(single[0]["SpecialToken"].at("id").get<std::string>());
    }
    return BpeTokenizer(std::move(s));
  } catch (const Json::exception& e) {
    throw Error(source + ": " + e.what());
  } catch (const Error& e) {
    const std::string what = e.what();
    if (what.rfind(source, 0) == 0) throw;
    throw Error(source + ": " + what);
  }
}

BpeTokenizer BpeTokenizer::from_gpt2_files(const std::string& encoder_json, const std::string& vocab_bpe,
                                           const std::string& source) {
  auto enc = parse_json(encoder_json, source + " (encoder.json)");
  check(enc.is_object(), source + ": encoder.json is not a JSON object");
  Spec s;
  s.style = Style::ByteLevel;
  s.vocab = dense_vocab(enc, {}, source + " (encoder.json)");
  size_t pos = 0, line_no = 0;
  while (pos < vocab_bpe.size()) {
    size_t end = vocab_bpe.find('\n', pos);
    if (end == std::string::npos) end = vocab_bpe.size();
    std::string line = vocab_bpe.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || line.rfind("#version", 0) == 0) continue;
    s.merges.push_back(split_merge(Json(line), source + " (vocab.bpe line " + std::to_string(line_no) + ")"));
  }
  for (size_t i = 0; i < s.vocab.size(); ++i)
    if (s.vocab[i] == "<|endoftext|>") s.added.push_back({int64_t(i), s.vocab[i], true});
  return BpeTokenizer(std::move(s));
}

std::string BpeTokenizer::to_hf_json() const {
  Json vocab = Json::object();
  for (size_t i = 0; i < spec_.vocab.size(); ++i)
    if (!vocab.contains(spec_.vocab[i])) vocab[spec_.vocab[i]] = int64_t(i);
  Json merges = Json::array();
  for (const auto& [a, b] : spec_.merges) merges.push_back({a, b});
  Json added = Json::array();
  for (const auto& a : spec_.added)
    added.push_back({{"id", a.id}, {"content", a.content}, {"single_word", false}, {"lstrip", false},
                     {"rstrip", false}, {"normalized", false}, {"special", a.special}});
  Json model = {{"type", "BPE"}, {"dropout", nullptr}, {"continuing_subword_prefix", nullptr},
                {"end_of_word_suffix", nullptr}, {"fuse_unk", spec_.style == Style::SentencePiece},
                {"byte_fallback", spec_.byte_fallback}, {"vocab", vocab}, {"merges", merges},
                {"unk_token", spec_.unk_id >= 0 ? Json(spec_.vocab[size_t(spec_.unk_id)]) : Json(nullptr)}};
  Json j = {{"version", "1.0"}, {"truncation", nullptr}, {"padding", nullptr}, {"added_tokens", added}, {"model", model}};
  if (spec_.style == Style::ByteLevel) {
    const Json bl = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}};
    j["normalizer"] = nullptr;
    j["pre_tokenizer"] = bl;
    j["post_processor"] = bl;
    j["decoder"] = bl;
  } else {
    Json norms = Json::array();
    if (spec_.prepend_space) norms.push_back({{"type", "Prepend"}, {"prepend", kSpaceMark}});
    if (spec_.space_mark) norms.push_back({{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", kSpaceMark}});
    j["normalizer"] = norms.empty() ? Json(nullptr) : Json{{"type", "Sequence"}, {"normalizers", norms}};
    j["pre_tokenizer"] = nullptr;
    Json decoders = Json::array();
    if (spec_.space_mark) decoders.push_back({{"type", "Replace"}, {"pattern", {{"String", kSpaceMark}}}, {"content", " "}});
    decoders.push_back({{"type", "ByteFallback"}});
    decoders.push_back({{"type", "Fuse"}});
    if (spec_.prepend_space) decoders.push_back({{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}});
    j["decoder"] = {{"type", "Sequence"}, {"decoders", decoders}};
    if (spec_.bos_id >= 0) {
      const std::string bos = spec_.vocab[size_t(spec_.bos_id)];
      j["post_processor"] = {
          {"type", "TemplateProcessing"},
          {"single", Json::array({{{"SpecialToken", {{"id", bos}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
          {"pair", Json::array({{{"SpecialToken", {{"id", bos}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
                                {{"SpecialToken", {{"id", bos}, {"type_id", 1}}}}, {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}})},
          {"special_tokens", {{bos, {{"id", bos}, {"ids", {spec_.bos_id}}, {"tokens", {bos}}}}}}};
    } else {
      j["post_processor"] = nullptr;
    }
  }
  return j.dump(1);
}

}  // namespace nestscope
