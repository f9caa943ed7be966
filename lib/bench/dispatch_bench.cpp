// `tlmoe bench dispatch` (bench.h).
#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <thread>

#include "bench/bench.h"
#include "bench/common.h"
#include "common/device.h"
#include "common/error.h"
#include "common/strings.h"
#include "kernels/dispatch.h"

namespace tlmoe::bench {

namespace {

struct DispatchShape {
  int64_t B, S, D, m, K;
};

std::vector<DispatchShape> parse_shapes(const std::string& spec) {
  if (spec.empty())
    return {{8, 64, 256, 3, 1},   {32, 128, 512, 3, 1}, {32, 512, 768, 3, 1},
            {32, 512, 768, 3, 3}, {64, 512, 1024, 8, 2}};
  std::vector<DispatchShape> out;
  for (const auto& item : split_list(spec, ';')) {
    auto f = split_list(item, ',');
    if (f.size() != 5) throw UsageError("--shapes: '" + item + "' is not B,S,D,m,K");
    std::array<int64_t, 5> v{};
    for (size_t i = 0; i < 5; ++i) {
      try {
        size_t used = 0;
        v[i] = std::stoll(f[i], &used);
        if (used != f[i].size() || v[i] <= 0) throw std::invalid_argument(f[i]);
      } catch (const std::exception&) {
        throw UsageError("--shapes: '" + f[i] + "' in '" + item + "' is not a positive integer");
      }
    }
    if (v[4] > v[3]) throw UsageError("--shapes: K = " + f[4] + " exceeds m = " + f[3] + " in '" + item + "'");
    out.push_back({v[0], v[1], v[2], v[3], v[4]});
  }
  return out;
}

// Best seconds per call of fn over `rounds` rounds of at least min_seconds each.
template <class Fn>
double time_op(const torch::Device& dev, double min_seconds, int64_t rounds, Fn&& fn) {
  using Clock = std::chrono::steady_clock;
  fn();  // warm-up (allocator, caches)
  sync(dev);
  double best = INFINITY;
  for (int64_t r = 0; r < rounds; ++r) {
    int64_t n = 0;
    const auto t0 = Clock::now();
    double secs = 0;
    do {
      fn();
      ++n;
      if (n % 4 == 0 || dev.is_cpu()) sync(dev);
      secs = std::chrono::duration<double>(Clock::now() - t0).count();
    } while (secs < min_seconds / static_cast<double>(rounds) || n < 3);
    sync(dev);
    secs = std::chrono::duration<double>(Clock::now() - t0).count();
    best = std::min(best, secs / static_cast<double>(n));
  }
  return best;
}

}  // namespace

nlohmann::json bench_dispatch(const Config& cfg, const BenchDispatchOptions& o, std::ostream& log) {
  const torch::Device dev = pick_device(cfg.device);
  std::vector<torch::ScalarType> dtypes = {torch::kFloat};
  if (dev.is_cuda()) dtypes.push_back(torch::kBFloat16);
  nlohmann::json rep;
  rep["what"] =
      "dispatch bandwidth, GB/s = (bytes read + bytes written) / s; copy = a device copy of the same bytes into a new "
      "tensor (x.clone(): allocation included, as the ops allocate their outputs)";
  rep["device"] = dev.str();
  rep["threads"] = torch::get_num_threads();
  rep["hardware_threads"] = std::thread::hardware_concurrency();
  rep["unit"] = "GB/s";
  auto gen = torch::Generator(at::detail::createCPUGenerator(5));
  for (const auto& sh : parse_shapes(o.shapes)) {
    // K distinct experts per example, uniformly at random (uneven counts, as real routes give)
    std::vector<torch::Tensor> picks;
    for (int64_t b = 0; b < sh.B; ++b) picks.push_back(torch::randperm(sh.m, gen, torch::kLong).slice(0, 0, sh.K));
    auto idx = torch::stack(picks).to(dev);
    auto plan = kernels::make_plan(idx, sh.m);
    for (auto dt : dtypes) {
      torch::NoGradGuard ng;
      auto opts = torch::TensorOptions().dtype(dt).device(dev);
      auto x = torch::randn({sh.B, sh.S, sh.D}, opts);
      auto ys = torch::randn({sh.B * sh.K, sh.S, sh.D}, opts);
      auto w = torch::rand({sh.B, sh.K}, opts.dtype(torch::kFloat));
      auto w_slot = torch::empty({sh.B * sh.K}, w.options()).index_put_({plan.slot_of.reshape({-1})}, w.reshape({-1}));
      const double row = static_cast<double>(sh.S * sh.D * x.element_size());
      const double gather_bytes = 2.0 * static_cast<double>(sh.B * sh.K) * row;          // read + write
      const double scatter_bytes = static_cast<double>(sh.B * sh.K + sh.B) * row;          // read BK rows, write B
      auto copy_src = torch::randn({sh.B * sh.K, sh.S, sh.D}, opts), copy_dst = torch::empty_like(copy_src);
      const int64_t half_rows = (sh.B * sh.K + sh.B + 1) / 2;  // a copy moving scatter_bytes
      auto copy2_src = torch::randn({half_rows, sh.S, sh.D}, opts), copy2_dst = torch::empty_like(copy2_src);
      // The ceiling: a device copy of the same bytes into a fresh tensor (allocation included,
      // as the ops allocate their outputs); the copy into a preallocated buffer is reported too.
      const double t_copy = time_op(dev, o.min_seconds, o.rounds, [&] { copy_src.clone(); });
      const double t_copy2 = time_op(dev, o.min_seconds, o.rounds, [&] { copy2_src.clone(); });
      const double t_copy_pre = time_op(dev, o.min_seconds, o.rounds, [&] { copy_dst.copy_(copy_src); });
      const double t_gather = time_op(dev, o.min_seconds, o.rounds, [&] { kernels::gather_rows(x, plan); });
      const double t_isel = time_op(dev, o.min_seconds, o.rounds, [&] { x.index_select(0, plan.rows); });
      const double t_comb = time_op(dev, o.min_seconds, o.rounds, [&] { kernels::combine_rows(ys, w, plan); });
      const double t_iadd = time_op(dev, o.min_seconds, o.rounds, [&] {
        torch::zeros({sh.B, sh.S, sh.D}, opts).index_add_(0, plan.rows, ys * w_slot.to(dt).view({-1, 1, 1}));
      });
      const double copy_g = gather_bytes / t_copy / 1e9, copy_s = 2.0 * half_rows * row / t_copy2 / 1e9;
      nlohmann::json j = {{"B", sh.B},
                          {"S", sh.S},
                          {"D", sh.D},
                          {"m", sh.m},
                          {"K", sh.K},
                          {"dtype", std::string(c10::toString(dt))},
                          {"gather_mb", gather_bytes / 1e6},
                          {"copy_gbps_gather_size", copy_g},
                          {"copy_into_preallocated_gbps", gather_bytes / t_copy_pre / 1e9},
                          {"gather_gbps", gather_bytes / t_gather / 1e9},
                          {"index_select_gbps", gather_bytes / t_isel / 1e9},
                          {"scatter_mb", scatter_bytes / 1e6},
                          {"copy_gbps_scatter_size", copy_s},
                          {"scatter_gbps", scatter_bytes / t_comb / 1e9},
                          {"index_add_gbps", scatter_bytes / t_iadd / 1e9}};
      j["gather_vs_copy"] = j["gather_gbps"].get<double>() / copy_g;
      j["scatter_vs_copy"] = j["scatter_gbps"].get<double>() / copy_s;
      log << "B=" << sh.B << " S=" << sh.S << " D=" << sh.D << " m=" << sh.m << " K=" << sh.K << " " << dt
          << ": gather " << j["gather_gbps"].get<double>() << " GB/s, scatter " << j["scatter_gbps"].get<double>()
          << " GB/s\n";
      rep["rows"].push_back(j);
    }
  }
  return rep;
}

}  // namespace tlmoe::bench
