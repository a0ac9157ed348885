// Atomic whole-file writes (temp file in the same folder + fsync + rename) and whole-file reads.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace nestscope {

// Either the new contents are at `path` or the old file is untouched. Throws Error on failure.
void write_file_atomic(const std::string& path, std::string_view bytes);
// Throws Error("<path>: <reason>") when the file cannot be read.
std::vector<uint8_t> read_file_bytes(const std::string& path);
std::string read_text_file(const std::string& path);

}  // namespace nestscope
