// UTF-8 decoding and encoding with errors that name the byte offset.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace nestscope {

// Decodes UTF-8 into code points; throws Error("<what>: invalid UTF-8 at byte N") on bad input.
std::vector<char32_t> utf8_decode(std::string_view text, const std::string& what = "text");
std::string utf8_encode(char32_t cp);
std::string utf8_encode(const std::vector<char32_t>& cps);
// Length of the longest prefix of `bytes` that does not end inside a multi-byte character (what a
// stream of byte-level tokens can show so far); invalid bytes count as complete.
size_t utf8_complete_prefix(std::string_view bytes);
// Takes the displayable text off the front of a byte stream: every complete, valid character,
// each invalid byte (a stray continuation, an overlong or surrogate form, a lead byte cut off by
// another lead) as U+FFFD, as Python's errors="replace" would. What stays in `pending` is the
// start of a character that later bytes may still complete. The result is always valid UTF-8.
std::string utf8_take_text(std::string& pending);
// The whole of `bytes` as valid UTF-8 (invalid or unfinished sequences as U+FFFD).
std::string utf8_sanitize(std::string_view bytes);
// A printable description of one code point for error messages: 'x' or U+00E9.
std::string describe_code_point(char32_t cp);

}  // namespace nestscope
