#include "core/train/cpu_tensor_cache.h"

#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>

#include <cstring>
#include <map>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace nestscope {

namespace {

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kSanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif
#else
constexpr bool kSanitized = false;
#endif

constexpr size_t kMinCached = size_t(256) << 10;        // smaller buffers: the C library's bins do well
constexpr int64_t kCachedBytesMax = int64_t(4) << 30;  // beyond this a freed buffer goes back at once

struct Cache {
  std::mutex mutex;
  std::unordered_map<void*, size_t> live;           // large buffers handed out → their rounded size
  std::multimap<size_t, void*> free_by_size;        // cached buffers
  int64_t cached_bytes = 0, hits = 0, misses = 0;
  int scopes = 0;  // live CpuTensorCache objects
  bool installed = false;
};

Cache& cache() {
  static Cache* c = new Cache;  // never destroyed: tensors may be freed during static destruction
  return *c;
}

bool caching() {
  std::lock_guard<std::mutex> lock(cache().mutex);
  return cache().scopes > 0;
}

size_t rounded(size_t n) { return (n + 4095) & ~size_t(4095); }

void release(void* p) {
  if (!p) return;
  Cache& c = cache();
  {
    std::lock_guard<std::mutex> lock(c.mutex);
    auto it = c.live.find(p);
    if (it != c.live.end()) {
      const size_t size = it->second;
      c.live.erase(it);
      if (c.scopes > 0 && c.cached_bytes + int64_t(size) <= kCachedBytesMax) {
        c.free_by_size.emplace(size, p);
        c.cached_bytes += int64_t(size);
        return;
      }
    }
  }
  c10::free_cpu(p);
}

class CachingCpuAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t nbytes) const override {
    const c10::Device cpu(c10::DeviceType::CPU);
    if (nbytes < kMinCached || !caching()) {
      void* p = nbytes ? c10::alloc_cpu(nbytes) : nullptr;
      return {p, p, &release_small, cpu};  // no lock on the small tensors' free
    }
    const size_t size = rounded(nbytes);
    Cache& c = cache();
    void* p = nullptr;
    {
      std::lock_guard<std::mutex> lock(c.mutex);
      // Exact sizes only: a step's shapes repeat, and a larger buffer would strand its tail.
      auto it = c.free_by_size.find(size);
      if (it != c.free_by_size.end()) {
        p = it->second;
        c.free_by_size.erase(it);
        c.cached_bytes -= int64_t(size);
        ++c.hits;
      } else {
        ++c.misses;
      }
    }
    if (!p) p = c10::alloc_cpu(size);
    {
      std::lock_guard<std::mutex> lock(c.mutex);
      c.live.emplace(p, size);
    }
    return {p, p, &release, cpu};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &release; }
  // LibTorch 2.x asks allocators to copy; 1.13 has no such hook (then this is a plain method).
  void copy_data(void* dest, const void* src, std::size_t count) const { std::memcpy(dest, src, count); }

 private:
  static void release_small(void* p) { c10::free_cpu(p); }
};

void install() {
  if (kSanitized) return;
  static std::once_flag once;
  std::call_once(once, [] {
    static CachingCpuAllocator* allocator = new CachingCpuAllocator;  // outlives every tensor
    c10::SetCPUAllocator(allocator, /*priority=*/1);
    std::lock_guard<std::mutex> lock(cache().mutex);
    cache().installed = true;
  });
}

int64_t release_all() {
  Cache& c = cache();
  std::vector<void*> drop;
  int64_t bytes = 0;
  {
    std::lock_guard<std::mutex> lock(c.mutex);
    for (auto& [size, p] : c.free_by_size) drop.push_back(p);
    c.free_by_size.clear();
    bytes = c.cached_bytes;
    c.cached_bytes = 0;
  }
  for (void* p : drop) c10::free_cpu(p);
  return bytes;
}

}  // namespace

CpuTensorCache::CpuTensorCache() {
  install();
  std::lock_guard<std::mutex> lock(cache().mutex);
  ++cache().scopes;
}

CpuTensorCache::~CpuTensorCache() {
  bool last = false;
  {
    std::lock_guard<std::mutex> lock(cache().mutex);
    last = --cache().scopes == 0;
  }
  if (last) release_all();
}

CpuCacheStats cpu_cache_stats() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mutex);
  return {c.cached_bytes, c.hits, c.misses, c.installed};
}

}  // namespace nestscope
