#include "core/io/cache.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <system_error>
#include <vector>

namespace nestscope {

namespace fs = std::filesystem;

namespace {

const char* env(const char* name) {
  const char* v = std::getenv(name);
  return v && *v ? v : nullptr;
}

// Every regular file under the cache's own subfolders (nothing else in the folder is touched).
std::vector<fs::directory_entry> cached_files() {
  std::vector<fs::directory_entry> out;
  const std::string dir = cache_dir();
  if (dir.empty()) return out;
  for (const char* sub : {"variants", "frontier"}) {
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(fs::path(dir) / sub, ec))
      if (std::error_code fe; e.is_regular_file(fe)) out.push_back(e);
  }
  return out;
}

}  // namespace

std::string cache_dir() {
  if (const char* d = env("NESTSCOPE_CACHE_DIR")) return d;
  if (const char* x = env("XDG_CACHE_HOME")) return std::string(x) + "/nestscope";
  if (const char* h = env("HOME")) return std::string(h) + "/.cache/nestscope";
  return {};
}

std::string variant_cache_path(const std::string& hash) {
  const std::string dir = cache_dir();
  return hash.empty() || dir.empty() ? std::string() : dir + "/variants/" + hash + ".safetensors";
}

std::string frontier_cache_path(const std::string& hash) {
  const std::string dir = cache_dir();
  return hash.empty() || dir.empty() ? std::string() : dir + "/frontier/" + hash + ".jsonl";
}

int64_t cache_cap_bytes() {
  if (const char* v = env("NESTSCOPE_CACHE_MAX_MB")) {
    char* end = nullptr;
    const long long mb = std::strtoll(v, &end, 10);
    if (end && *end == '\0' && mb >= 0) return int64_t(mb) << 20;
  }
  return int64_t(2048) << 20;
}

int64_t cache_size_bytes() {
  int64_t total = 0;
  for (const auto& e : cached_files()) {
    std::error_code ec;
    const auto b = e.file_size(ec);
    if (!ec) total += int64_t(b);
  }
  return total;
}

int64_t trim_cache(int64_t cap_bytes, const std::string& keep) {
  auto files = cached_files();
  struct Item {
    fs::path path;
    fs::file_time_type time;
    int64_t bytes;
  };
  std::vector<Item> items;
  int64_t total = 0;
  for (const auto& e : files) {
    std::error_code ec1, ec2;
    const auto t = e.last_write_time(ec1);
    const auto b = e.file_size(ec2);
    if (ec1 || ec2) continue;
    items.push_back({e.path(), t, int64_t(b)});
    total += int64_t(b);
  }
  std::sort(items.begin(), items.end(), [](const Item& a, const Item& b) { return a.time < b.time; });
  int64_t freed = 0;
  std::error_code same_ec;
  for (const auto& it : items) {
    if (total - freed <= cap_bytes) break;
    if (!keep.empty() && fs::equivalent(it.path, keep, same_ec)) continue;
    if (std::error_code ec; fs::remove(it.path, ec)) freed += it.bytes;
  }
  return freed;
}

void touch_cache_file(const std::string& path) {
  std::error_code ec;
  if (!path.empty()) fs::last_write_time(path, fs::file_time_type::clock::now(), ec);
}

int64_t clear_cache() { return trim_cache(-1); }

}  // namespace nestscope
