// A caching allocator for LibTorch's CPU tensors.
//
// LibTorch allocates every CPU tensor with malloc; glibc serves blocks above its mmap threshold
// (at most 32 MiB) with a fresh mmap and unmaps them on free, so each step's large activations
// are page-faulted and zeroed by the kernel again. On a BART-base-sized model (16 x 256 tokens)
// that was a fifth of the CPU time (106 of 502 CPU seconds), spent in the kernel, and made a
// vanilla training step 1.6x slower (docs/benchmarks.md). The cache keeps freed blocks of at
// least `min_block` bytes and hands them out again:
//   - sizes are rounded up (64 KiB under 16 MiB, 2 MiB from there); a request takes the smallest
//     idle block that is at least its rounded size and at most 1/8 larger;
//   - it never holds more than 1/8 above the most that tensors ever used at once: when a new
//     block would push live + idle bytes over that cap, idle blocks are freed first, largest
//     first. So the process's peak memory is at most 1/8 (plus rounding) above what it is without
//     the cache, and a training loop whose steps repeat the same sizes stops allocating after its
//     first steps;
//   - smaller blocks go to LibTorch's default CPU allocator unchanged.
// Thread-safe. `tlmoe` installs it at start unless TLMOE_MALLOC=system.
#pragma once

#include <cstddef>
#include <cstdint>

namespace tlmoe {

struct HostCacheStats {
  size_t live_bytes = 0;       // cached-size blocks in use by tensors
  size_t idle_bytes = 0;       // freed blocks kept for reuse
  size_t high_water = 0;       // the most live bytes ever
  size_t cap_bytes = 0;        // high_water + high_water / 8: the most live + idle bytes held
  uint64_t hits = 0;           // requests served by an idle block
  uint64_t misses = 0;         // requests that allocated a new block
  uint64_t evictions = 0;      // idle blocks freed to stay under the cap
};

// Makes the cache LibTorch's CPU allocator (idempotent; the first call's min_block stays).
void install_host_cache(size_t min_block = size_t{1} << 20);
bool host_cache_installed();
HostCacheStats host_cache_stats();
// Frees every idle block (live ones are untouched).
void host_cache_release_idle();

}  // namespace tlmoe
