// The user's cache: variants built from a checkpoint and frontier rows swept on it live here,
// never next to the checkpoint (a source tree, a read-only mount, a shared model folder).
// Files are keyed by the checkpoint's content hash, so a moved or copied model finds its cache.
#pragma once
#include <cstdint>
#include <string>

namespace nestscope {

// $NESTSCOPE_CACHE_DIR, else $XDG_CACHE_HOME/nestscope, else ~/.cache/nestscope; empty when none
// of them is set (then nothing is cached).
std::string cache_dir();
// "<cache>/variants/<hash>.safetensors" and "<cache>/frontier/<hash>.jsonl"; empty without a hash
// or a cache folder.
std::string variant_cache_path(const std::string& hash);
std::string frontier_cache_path(const std::string& hash);

// The cap on the cache's size: $NESTSCOPE_CACHE_MAX_MB, else 2048 MiB.
int64_t cache_cap_bytes();
// Bytes the cache holds now.
int64_t cache_size_bytes();
// Deletes the least recently used files until the cache fits in `cap_bytes` (keeping `keep`, the
// file just written). Returns the bytes freed. Never throws.
int64_t trim_cache(int64_t cap_bytes, const std::string& keep = "");
// Marks a cache file as just used (its modification time), so trimming keeps it longer.
void touch_cache_file(const std::string& path);
// Deletes every cached file; returns the bytes freed. Never throws.
int64_t clear_cache();

}  // namespace nestscope
