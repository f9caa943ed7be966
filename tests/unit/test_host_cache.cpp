#include <torch/torch.h>

#include <c10/core/CPUAllocator.h>
#include <catch2/catch.hpp>

#include <random>
#include <thread>
#include <vector>

#include "common/host_cache.h"

using namespace tlmoe;

namespace {
constexpr size_t MiB = size_t{1} << 20;
torch::Tensor bytes(size_t n) { return torch::empty({static_cast<int64_t>(n)}, torch::kUInt8); }
}  // namespace

// One test case: the cache is process-wide once installed, so the checks run in a fixed order on
// stats deltas, starting from an empty cache.
TEST_CASE("host cache reuses freed CPU blocks, stays under its cap, passes small ones through", "[host_cache]") {
  install_host_cache(MiB);
  REQUIRE(host_cache_installed());
  REQUIRE(c10::GetCPUAllocator() != c10::GetDefaultCPUAllocator());
  host_cache_release_idle();
  const auto s0 = host_cache_stats();
  REQUIRE(s0.idle_bytes == 0);

  SECTION("a freed block comes back for a request of the same size, and for one it exceeds by at most 1/8") {
    void* first = nullptr;
    {
      auto t = bytes(8 * MiB);
      first = t.data_ptr();
      CHECK(host_cache_stats().live_bytes == s0.live_bytes + 8 * MiB);
    }
    auto s1 = host_cache_stats();
    CHECK(s1.idle_bytes == 8 * MiB);
    CHECK(s1.live_bytes == s0.live_bytes);
    {
      auto t = bytes(8 * MiB);
      CHECK(t.data_ptr() == first);
      CHECK(host_cache_stats().hits == s1.hits + 1);
    }
    {
      auto t = bytes(8 * MiB - MiB / 2);  // 7.5 MiB: 8 <= 7.5 + 7.5/8
      CHECK(t.data_ptr() == first);
    }
    {
      auto t = bytes(7 * MiB);  // 8 > 7 + 7/8: a new block
      CHECK(t.data_ptr() != first);
    }
    {
      auto t = bytes(4 * MiB);  // far smaller: a new block, not the 8 MiB one
      CHECK(t.data_ptr() != first);
      CHECK(host_cache_stats().misses == s1.misses + 2);
    }
  }

  SECTION("sizes are rounded: 64 KiB steps under 16 MiB, 2 MiB steps from there") {
    { auto t = bytes(MiB + 1); }
    CHECK(host_cache_stats().idle_bytes == MiB + 64 * 1024);
    host_cache_release_idle();
    { auto t = bytes(16 * MiB + 1); }
    CHECK(host_cache_stats().idle_bytes == 18 * MiB);
  }

  SECTION("a new block that would exceed the most ever live first frees idle blocks") {
    {
      auto a = bytes(8 * MiB);
      auto b = bytes(8 * MiB);
    }
    auto s1 = host_cache_stats();
    CHECK(s1.idle_bytes == 16 * MiB);
    const size_t cap = s1.cap_bytes;
    CHECK(cap == s1.high_water + s1.high_water / 8);
    // hold live bytes up to the cap with the idle blocks kept (no eviction yet), then ask for a
    // block no idle one fits
    std::vector<torch::Tensor> held;
    size_t live = s1.live_bytes;
    while (live + 16 * MiB + 24 * MiB <= cap) {
      held.push_back(bytes(24 * MiB));
      live += 24 * MiB;
    }
    const auto s2 = host_cache_stats();
    CHECK(s2.idle_bytes == 16 * MiB);
    CHECK(s2.evictions == s1.evictions);
    {
      auto big = bytes(32 * MiB);
      auto s3 = host_cache_stats();
      CHECK(s3.live_bytes + s3.idle_bytes <= std::max(s2.cap_bytes, s3.live_bytes));
      CHECK(s3.evictions > s2.evictions);
    }
  }

  SECTION("small blocks bypass the cache; the raw interface works") {
    const auto s1 = host_cache_stats();
    { auto t = bytes(1000); }
    { auto t = bytes(MiB - 1); }
    auto s2 = host_cache_stats();
    CHECK(s2.idle_bytes == s1.idle_bytes);
    CHECK(s2.misses == s1.misses);
    auto* alloc = c10::GetCPUAllocator();
    void* small = alloc->raw_allocate(100);
    void* large = alloc->raw_allocate(3 * MiB);
    REQUIRE(small);
    REQUIRE(large);
    static_cast<char*>(large)[3 * MiB - 1] = 1;
    alloc->raw_deallocate(small);
    alloc->raw_deallocate(large);
    CHECK(host_cache_stats().idle_bytes == s1.idle_bytes + 3 * MiB);
  }

  SECTION("tensors computed in cached blocks equal the same computation in fresh ones") {
    torch::manual_seed(3);
    auto a = torch::randn({512, 768}, torch::kDouble);
    auto w = torch::randn({768, 1024}, torch::kDouble);
    auto ref = torch::mm(a, w);  // first time: new blocks
    std::vector<void*> ptrs{ref.data_ptr()};
    ref = ref.clone();
    for (int i = 0; i < 3; ++i) {
      auto y = torch::mm(a, w);  // reuses the freed block of the same size
      CHECK(torch::equal(y, ref));
    }
    // a naive loop for one entry, independent of the GEMM
    double acc = 0;
    auto A = a.accessor<double, 2>();
    auto W = w.accessor<double, 2>();
    for (int64_t k = 0; k < 768; ++k) acc += A[7][k] * W[k][11];
    CHECK(ref[7][11].item<double>() == Approx(acc).epsilon(1e-12));
  }

  SECTION("threads allocating and freeing concurrently leave consistent counts") {
    const auto s1 = host_cache_stats();
    std::vector<std::thread> ts;
    for (int t = 0; t < 4; ++t)
      ts.emplace_back([t] {
        std::mt19937 rng(static_cast<unsigned>(t));
        std::vector<torch::Tensor> keep;
        for (int i = 0; i < 200; ++i) {
          keep.push_back(bytes((1 + rng() % 6) * MiB + rng() % 4096));
          if (keep.size() > 3) keep.erase(keep.begin() + static_cast<long>(rng() % keep.size()));
        }
      });
    for (auto& th : ts) th.join();
    auto s2 = host_cache_stats();
    CHECK(s2.live_bytes == s1.live_bytes);
    CHECK(s2.live_bytes + s2.idle_bytes <= s2.cap_bytes);
    CHECK(s2.hits + s2.misses == s1.hits + s1.misses + 800);
  }
}
