#include "core/text/utf8.h"

#include <cstdio>

#include "core/error.h"

namespace nestscope {

std::vector<char32_t> utf8_decode(std::string_view s, const std::string& what) {
  std::vector<char32_t> out;
  out.reserve(s.size());
  size_t i = 0;
  auto fail = [&](size_t at) { throw Error(what + ": invalid UTF-8 at byte " + std::to_string(at)); };
  while (i < s.size()) {
    const auto b0 = static_cast<unsigned char>(s[i]);
    int len;
    char32_t cp;
    if (b0 < 0x80) { len = 1; cp = b0; }
    else if ((b0 & 0xE0) == 0xC0) { len = 2; cp = b0 & 0x1F; }
    else if ((b0 & 0xF0) == 0xE0) { len = 3; cp = b0 & 0x0F; }
    else if ((b0 & 0xF8) == 0xF0) { len = 4; cp = b0 & 0x07; }
    else fail(i);
    if (i + len > s.size()) fail(i);
    for (int j = 1; j < len; ++j) {
      const auto b = static_cast<unsigned char>(s[i + j]);
      if ((b & 0xC0) != 0x80) fail(i);
      cp = (cp << 6) | (b & 0x3F);
    }
    // Reject overlong forms, surrogates and values past U+10FFFF.
    static constexpr char32_t min_for_len[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min_for_len[len] || (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) fail(i);
    out.push_back(cp);
    i += len;
  }
  return out;
}

std::string utf8_encode(char32_t cp) {
  std::string out;
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xC0 | (cp >> 6));
    out += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += char(0xE0 | (cp >> 12));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  } else {
    out += char(0xF0 | (cp >> 18));
    out += char(0x80 | ((cp >> 12) & 0x3F));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  }
  return out;
}

std::string utf8_encode(const std::vector<char32_t>& cps) {
  std::string out;
  for (char32_t cp : cps) out += utf8_encode(cp);
  return out;
}

std::string describe_code_point(char32_t cp) {
  if (cp >= 0x21 && cp < 0x7F) return std::string("'") + char(cp) + "'";
  char buf[16];
  std::snprintf(buf, sizeof buf, "U+%04X", unsigned(cp));
  return buf;
}

namespace {

// Length of the valid character starting at s[i]: > 0 complete, 0 invalid, < 0 a valid start that
// runs past the end of s.
int utf8_char_at(std::string_view s, size_t i) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  int len;
  char32_t cp;
  if (b0 < 0x80) return 1;
  if ((b0 & 0xE0) == 0xC0) { len = 2; cp = b0 & 0x1F; }
  else if ((b0 & 0xF0) == 0xE0) { len = 3; cp = b0 & 0x0F; }
  else if ((b0 & 0xF8) == 0xF0) { len = 4; cp = b0 & 0x07; }
  else return 0;
  for (int j = 1; j < len; ++j) {
    if (i + size_t(j) >= s.size()) return -1;
    const auto b = static_cast<unsigned char>(s[i + size_t(j)]);
    if ((b & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (b & 0x3F);
  }
  static constexpr char32_t min_for_len[5] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < min_for_len[len] || (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) return 0;
  return len;
}

constexpr const char* kReplacement = "\xEF\xBF\xBD";  // U+FFFD

}  // namespace

std::string utf8_take_text(std::string& pending) {
  std::string out;
  size_t i = 0;
  while (i < pending.size()) {
    const int len = utf8_char_at(pending, i);
    if (len < 0) break;  // may still be completed by the next token's bytes
    if (len == 0) {
      out += kReplacement;
      ++i;
      continue;
    }
    out.append(pending, i, size_t(len));
    i += size_t(len);
  }
  pending.erase(0, i);
  return out;
}

std::string utf8_sanitize(std::string_view bytes) {
  std::string pending(bytes);
  std::string out = utf8_take_text(pending);
  if (!pending.empty()) out += kReplacement;
  return out;
}

size_t utf8_complete_prefix(std::string_view s) {
  const size_t n = s.size();
  for (size_t back = 1; back <= 4 && back <= n; ++back) {
    const auto c = static_cast<unsigned char>(s[n - back]);
    if ((c & 0xC0) == 0x80) continue;  // a continuation byte: look further back for the lead
    const size_t need = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 1;
    return need > back ? n - back : n;
  }
  return n;
}

}  // namespace nestscope
