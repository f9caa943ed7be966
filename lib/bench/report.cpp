// The bench reports as aligned tables (bench.h).
#include <cstdio>
#include <sstream>

#include "bench/bench.h"

namespace tlmoe::bench {

std::string format_bench_table(const nlohmann::json& rep) {
  std::ostringstream s;
  char line[320];
  const bool gen = rep.value("unit", "") == "examples/s";
  if (rep.value("unit", "") == "GB/s") {
    std::snprintf(line, sizeof line, "%-26s %-9s %9s %9s %7s %9s | %9s %9s %7s %9s\n", "B,S,D,m,K", "dtype",
                  "copy", "gather", "/copy", "idx_sel", "copy", "scatter", "/copy", "idx_add");
    s << line;
    for (const auto& r : rep["rows"]) {
      char shape[64];
      std::snprintf(shape, sizeof shape, "%lld,%lld,%lld,%lld,%lld", static_cast<long long>(r["B"].get<int64_t>()),
                    static_cast<long long>(r["S"].get<int64_t>()), static_cast<long long>(r["D"].get<int64_t>()),
                    static_cast<long long>(r["m"].get<int64_t>()), static_cast<long long>(r["K"].get<int64_t>()));
      std::snprintf(line, sizeof line, "%-26s %-9s %9.1f %9.1f %6.2fx %9.1f | %9.1f %9.1f %6.2fx %9.1f\n", shape,
                    r["dtype"].get<std::string>().c_str(), r["copy_gbps_gather_size"].get<double>(),
                    r["gather_gbps"].get<double>(), r["gather_vs_copy"].get<double>(),
                    r["index_select_gbps"].get<double>(), r["copy_gbps_scatter_size"].get<double>(),
                    r["scatter_gbps"].get<double>(), r["scatter_vs_copy"].get<double>(),
                    r["index_add_gbps"].get<double>());
      s << line;
    }
    s << "GB/s = (bytes read + written) / s on " << rep.value("device", "?")
      << "; copy = clone() of the same bytes (allocating, like the ops); idx_sel = index_select, idx_add = "
         "zeros().index_add_(ys*w)\n";
    return s.str();
  }
  if (gen) {
    std::snprintf(line, sizeof line, "%-44s %14s %10s %12s\n", "variant", "examples/s", "ratio", "params");
    s << line;
    for (const auto& v : rep["variants"]) {
      std::snprintf(line, sizeof line, "%-44s %14.1f %9.2fx %12lld\n", v["name"].get<std::string>().c_str(),
                    v["examples_per_s"].get<double>(), v["ratio_to_vanilla"].get<double>(),
                    static_cast<long long>(v["params"].get<int64_t>()));
      s << line;
    }
    return s.str();
  }
  std::snprintf(line, sizeof line, "%-44s %12s %7s %12s %7s %9s %24s %10s\n", "variant", "train tok/s", "ratio",
                "fwd tok/s", "ratio", "fwd 1task", "step ms (fwd/bwd/opt)", "params");
  s << line;
  for (const auto& v : rep["variants"]) {
    const auto& ph = v["step_seconds"];
    char phases[64];
    std::snprintf(phases, sizeof phases, "%.1f/%.1f/%.1f", 1e3 * ph["forward"].get<double>(),
                  1e3 * ph["backward"].get<double>(), 1e3 * ph["optimizer"].get<double>());
    std::snprintf(line, sizeof line, "%-44s %12.0f %6.2fx %12.0f %6.2fx %8.2fx %24s %10lld\n",
                  v["name"].get<std::string>().c_str(), v["tokens_per_s"].get<double>(),
                  v["ratio_to_vanilla"].get<double>(), v["forward_tokens_per_s"].get<double>(),
                  v["forward_ratio_to_vanilla"].get<double>(), v["forward_single_task_ratio_to_vanilla"].get<double>(),
                  phases,
                  static_cast<long long>(v["params"].get<int64_t>()));
    s << line;
  }
  if (rep.contains("precision")) {
    const auto& b = rep["batch"];
    s << "batch " << b.value("batch_size", 0) << " x " << b.value("grad_accum", 1) << " micro-batches x (" << b.value("src_len", 0)
      << " + " << b.value("tgt_len", 0) << ") tokens per step; ";
    s << "device " << rep.value("device", "?") << ", " << rep["precision"].get<std::string>() << "; model TFLOP/s:";
    for (const auto& v : rep["variants"]) {
      char buf[96];
      std::snprintf(buf, sizeof buf, " %.3g", v["model_tflops_per_s"].get<double>());
      s << buf;
      if (v.contains("mfu")) {
        std::snprintf(buf, sizeof buf, " (MFU %.1f%%)", 100.0 * v["mfu"].get<double>());
        s << buf;
      }
    }
    s << "\n";
  }
  return s.str();
}

}  // namespace tlmoe::bench
