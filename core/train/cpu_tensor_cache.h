// A caching CPU tensor allocator: large buffers freed by one step are reused by the next.
#pragma once
#include <cstdint>

namespace nestscope {

// While a CpuTensorCache scope is alive, CPU tensors of ≥ 256 KiB freed by LibTorch are kept, keyed
// by size (at most 4 GiB), and handed to the next allocation of that size. A training step
// allocates the same few hundred activation shapes every step, and the C library maps each large
// one afresh and returns it to the kernel on free (init_threads keeps glibc's mmap threshold at
// 1 MB so real-size sweeps stay bounded), so every step faulted its activations in again: as much
// kernel time as arithmetic on stories260K. Outside a scope nothing is cached. The allocator is
// installed on first use; it is a pass-through under AddressSanitizer, which must see every free.
class CpuTensorCache {
 public:
  CpuTensorCache();
  ~CpuTensorCache();  // the last scope frees every cached buffer
  CpuTensorCache(const CpuTensorCache&) = delete;
  CpuTensorCache& operator=(const CpuTensorCache&) = delete;
};

struct CpuCacheStats {
  int64_t cached_bytes = 0;  // freed buffers held for reuse
  int64_t hits = 0;          // allocations served from the cache
  int64_t misses = 0;        // large allocations that went to the C library
  bool installed = false;
};
CpuCacheStats cpu_cache_stats();

}  // namespace nestscope
