#include "common/host_cache.h"

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>

#include <algorithm>
#include <iterator>
#include <map>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace tlmoe {

namespace {

constexpr size_t kKiB = 1024, kMiB = 1024 * kKiB;

size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

// Live + idle bytes stay under the most ever live plus 1/8: the slack lets a loop whose steps
// need blocks in a slightly different order than the idle set offers settle without evicting.
size_t cap_of(size_t high_water) { return high_water + high_water / 8; }

size_t rounded(size_t n) { return n < 16 * kMiB ? round_up(n, 64 * kKiB) : round_up(n, 2 * kMiB); }

class HostCache final : public c10::Allocator {
 public:
  HostCache(c10::Allocator* base, size_t min_block) : base_(base), min_block_(min_block) {}

  c10::DataPtr allocate(size_t n) override {
    void* p = n >= min_block_ ? take(n) : base_->raw_allocate(n);
    return {p, p, &HostCache::release, c10::Device(c10::DeviceType::CPU)};
  }

  c10::DeleterFnPtr raw_deleter() const override { return &HostCache::release; }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }

  HostCacheStats stats() {
    std::lock_guard<std::mutex> g(mu_);
    HostCacheStats s = st_;
    s.cap_bytes = cap_of(s.high_water);
    return s;
  }

  void release_idle() {
    std::vector<void*> freed;
    {
      std::lock_guard<std::mutex> g(mu_);
      for (auto& [size, p] : idle_) {
        freed.push_back(p);
        sizes_.erase(p);
        st_.idle_bytes -= size;
      }
      idle_.clear();
    }
    for (void* p : freed) base_->raw_deallocate(p);
  }

  static HostCache* instance;

 private:
  static void release(void* p) {
    if (p) instance->give_back(p);
  }

  void* take(size_t n) {
    const size_t want = rounded(n);
    std::vector<void*> evicted;
    void* p = nullptr;
    {
      std::lock_guard<std::mutex> g(mu_);
      auto it = idle_.lower_bound(want);
      if (it != idle_.end() && it->first <= want + want / 8) {
        p = it->second;
        st_.idle_bytes -= it->first;
        st_.live_bytes += it->first;
        idle_.erase(it);
        ++st_.hits;
        return p;
      }
      // A new block: stay under the cap (or live + want, if higher).
      const size_t cap = std::max(cap_of(st_.high_water), st_.live_bytes + want);
      while (!idle_.empty() && st_.live_bytes + st_.idle_bytes + want > cap) {
        auto largest = std::prev(idle_.end());
        evicted.push_back(largest->second);
        sizes_.erase(largest->second);
        st_.idle_bytes -= largest->first;
        idle_.erase(largest);
        ++st_.evictions;
      }
      ++st_.misses;
      st_.live_bytes += want;  // reserved before the allocation, so concurrent requests see it
      st_.high_water = std::max(st_.high_water, st_.live_bytes);
    }
    for (void* e : evicted) base_->raw_deallocate(e);
    try {
      p = base_->raw_allocate(want);
    } catch (...) {
      std::lock_guard<std::mutex> g(mu_);
      st_.live_bytes -= want;
      throw;
    }
    std::lock_guard<std::mutex> g(mu_);
    sizes_[p] = want;
    return p;
  }

  void give_back(void* p) {
    {
      std::lock_guard<std::mutex> g(mu_);
      auto it = sizes_.find(p);
      if (it != sizes_.end()) {
        st_.live_bytes -= it->second;
        st_.idle_bytes += it->second;
        idle_.emplace(it->second, p);
        return;
      }
    }
    base_->raw_deallocate(p);  // a small block
  }

  c10::Allocator* base_;
  const size_t min_block_;
  std::mutex mu_;
  std::unordered_map<void*, size_t> sizes_;  // every cached-size block, live or idle
  std::multimap<size_t, void*> idle_;        // size -> block
  HostCacheStats st_;
};

HostCache* HostCache::instance = nullptr;
std::once_flag install_once;

}  // namespace

void install_host_cache(size_t min_block) {
  std::call_once(install_once, [&] {
    // Leaked on purpose: tensors may be freed during static destruction.
    HostCache::instance = new HostCache(c10::GetDefaultCPUAllocator(), min_block);
    c10::SetCPUAllocator(HostCache::instance, /*priority=*/1);
  });
}

bool host_cache_installed() { return HostCache::instance != nullptr; }

HostCacheStats host_cache_stats() { return HostCache::instance ? HostCache::instance->stats() : HostCacheStats{}; }

void host_cache_release_idle() {
  if (HostCache::instance) HostCache::instance->release_idle();
}

}  // namespace tlmoe
