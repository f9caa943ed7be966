#include "metrics/compare.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <sstream>
#include <stdexcept>

#include "common/error.h"

namespace tlmoe::metrics {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr std::uint64_t kBootstrapSeedMix = 0x9E3779B97F4A7C15ULL;

// One task's scores on its compared splits, in split-seed order.
struct PairedTask {
  std::vector<double> a, b;
};

double mean(const std::vector<double>& v) {
  double sum = 0.0;
  for (double x : v) sum += x;
  return sum / static_cast<double>(v.size());
}

// Population standard deviation (ddof 0, numpy's default), the convention of every tlmoe report
// (adapt's summary.json, CrossFit's result collection); 0 for one value, NaN for none.
double population_std(const std::vector<double>& v) {
  if (v.empty()) return kNaN;
  const double m = mean(v);
  double ss = 0.0;
  for (double x : v) ss += (x - m) * (x - m);
  return std::sqrt(ss / static_cast<double>(v.size()));
}

// ARG in % over `tasks`, where the flattened pair index p (task-major, split order) has A and B
// swapped when flipped(p).
template <class Flipped>
double arg_percent(const std::vector<PairedTask>& tasks, const Flipped& flipped) {
  double sum_rg = 0.0;
  std::size_t p = 0;
  for (const auto& t : tasks) {
    double sa = 0.0, sb = 0.0;
    for (std::size_t i = 0; i < t.a.size(); ++i, ++p) {
      const bool f = flipped(p);
      sa += f ? t.b[i] : t.a[i];
      sb += f ? t.a[i] : t.b[i];
    }
    const double k = static_cast<double>(t.a.size());
    sa /= k;
    sb /= k;
    sum_rg += (sa - sb) / sb;
  }
  return 100.0 * sum_rg / static_cast<double>(tasks.size());
}

// Uniform in [0, n) from the raw 64-bit output (rejection sampling; the same on every platform).
std::uint64_t uniform_index(std::mt19937_64& rng, std::uint64_t n) {
  const std::uint64_t max = std::numeric_limits<std::uint64_t>::max();
  const std::uint64_t limit = max - max % n;  // a multiple of n; accept x < limit
  std::uint64_t x = rng();
  while (x >= limit) x = rng();
  return x % n;
}

bool at_least_as_extreme(double t, double observed) {
  const double tol = 1e-12 * std::max(1.0, std::abs(observed));
  return std::abs(t) >= std::abs(observed) - tol;  // false for NaN t
}

// numpy.percentile(sorted, q * 100) with linear interpolation; sorted is non-empty.
double percentile(const std::vector<double>& sorted, double q) {
  const double pos = q * static_cast<double>(sorted.size() - 1);
  const auto lo = static_cast<std::size_t>(std::floor(pos));
  const std::size_t hi = std::min(lo + 1, sorted.size() - 1);
  const double frac = pos - static_cast<double>(lo);
  if (frac == 0.0) return sorted[lo];
  return sorted[lo] + (sorted[hi] - sorted[lo]) * frac;
}

ArgStats arg_stats(const std::vector<PairedTask>& tasks, const CompareOptions& options) {
  ArgStats s;
  s.tasks = tasks.size();
  for (const auto& t : tasks) s.pairs += t.a.size();
  if (tasks.empty()) return s;
  s.arg_percent = arg_percent(tasks, [](std::size_t) { return false; });
  if (!std::isfinite(s.arg_percent)) return s;

  // Sign-flip permutation test.
  std::size_t count = 0;
  if (s.pairs < 64 && (std::uint64_t{1} << s.pairs) <= options.permutations) {
    s.exact = true;
    const std::uint64_t total = std::uint64_t{1} << s.pairs;
    for (std::uint64_t mask = 0; mask < total; ++mask) {
      const double t = arg_percent(tasks, [&](std::size_t p) { return (mask >> p) & 1U; });
      if (at_least_as_extreme(t, s.arg_percent)) ++count;
    }
    s.permutations = static_cast<std::size_t>(total);
    s.p_value = static_cast<double>(count) / static_cast<double>(total);
  } else {
    std::mt19937_64 rng(options.seed);
    std::vector<std::uint64_t> bits((s.pairs + 63) / 64);
    for (std::size_t r = 0; r < options.permutations; ++r) {
      for (auto& w : bits) w = rng();
      const double t = arg_percent(tasks, [&](std::size_t p) { return (bits[p / 64] >> (p % 64)) & 1U; });
      if (at_least_as_extreme(t, s.arg_percent)) ++count;
    }
    s.permutations = options.permutations;
    s.p_value = static_cast<double>(count + 1) / static_cast<double>(options.permutations + 1);
  }

  // Paired bootstrap over each task's splits.
  std::mt19937_64 rng(options.seed ^ kBootstrapSeedMix);
  std::vector<double> stats;
  stats.reserve(options.bootstrap_samples);
  std::vector<PairedTask> resampled(tasks.size());
  for (std::size_t r = 0; r < options.bootstrap_samples; ++r) {
    for (std::size_t t = 0; t < tasks.size(); ++t) {
      const std::size_t k = tasks[t].a.size();
      resampled[t].a.resize(k);
      resampled[t].b.resize(k);
      for (std::size_t i = 0; i < k; ++i) {
        const auto j = static_cast<std::size_t>(uniform_index(rng, k));
        resampled[t].a[i] = tasks[t].a[j];
        resampled[t].b[i] = tasks[t].b[j];
      }
    }
    const double v = arg_percent(resampled, [](std::size_t) { return false; });
    if (std::isnan(v)) {
      ++s.bootstrap_nan;
    } else {
      stats.push_back(v);
    }
  }
  s.bootstrap_samples = options.bootstrap_samples;
  if (!stats.empty()) {
    std::sort(stats.begin(), stats.end());
    const double alpha = 1.0 - options.ci_level;
    s.ci_low_percent = percentile(stats, alpha / 2.0);
    s.ci_high_percent = percentile(stats, 1.0 - alpha / 2.0);
  }
  return s;
}

std::string fixed(double v, int decimals, bool plus = false) {
  if (std::isnan(v)) return "n/a";
  if (std::isinf(v)) return v > 0 ? (plus ? "+inf" : "inf") : "-inf";
  char buf[64];
  std::snprintf(buf, sizeof buf, plus ? "%+.*f" : "%.*f", decimals, v);
  return buf;
}

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : ", ") + s;
  return out;
}

std::string join_seeds(const std::vector<std::int64_t>& v) {
  std::string out;
  for (auto s : v) out += (out.empty() ? "" : " ") + std::to_string(s);
  return out;
}

std::vector<std::string> flag_names(const TaskComparison& t) {
  std::vector<std::string> f;
  if (t.near_zero_base) f.emplace_back("near-zero base");
  if (t.negative_base) f.emplace_back("negative base");
  if (t.non_finite) f.emplace_back("non-finite");
  return f;
}

std::string arg_line(const ArgStats& s, double ci_level) {
  std::string line = fixed(s.arg_percent, 2, true) + "%";
  if (s.bootstrap_samples > 0)
    line += "   " + fixed(100.0 * ci_level, 0) + "% CI [" + fixed(s.ci_low_percent, 2, true) + "%, " +
            fixed(s.ci_high_percent, 2, true) + "%]";
  if (s.permutations > 0) {
    line += "   p = " + format_p(s.p_value) +
            (s.exact ? " (exact sign-flip test, 2^" + std::to_string(s.pairs) + " assignments)"
                     : " (sign-flip test, " + std::to_string(s.permutations) + " random assignments)");
  }
  return line;
}

nlohmann::json number(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); }

nlohmann::json stats_json(const ArgStats& s) {
  return {{"tasks", s.tasks},
          {"pairs", s.pairs},
          {"arg_percent", number(s.arg_percent)},
          {"p_value", number(s.p_value)},
          {"exact", s.exact},
          {"permutations", s.permutations},
          {"ci_low_percent", number(s.ci_low_percent)},
          {"ci_high_percent", number(s.ci_high_percent)},
          {"bootstrap_samples", s.bootstrap_samples},
          {"bootstrap_nan", s.bootstrap_nan}};
}

}  // namespace

std::string format_p(double p) {
  if (!std::isfinite(p)) return "n/a";
  char b[32];
  std::snprintf(b, sizeof b, "%.4g", p);
  return b;
}

Comparison compare_runs(const ScoreTable& a, const ScoreTable& b, const CompareOptions& options) {
  if (options.permutations == 0) throw std::invalid_argument("compare: permutations must be at least 1");
  if (options.bootstrap_samples == 0)
    throw std::invalid_argument("compare: bootstrap_samples must be at least 1");
  if (!(options.ci_level > 0.0 && options.ci_level < 1.0))
    throw std::invalid_argument("compare: ci_level must be in (0, 1), got " +
                                std::to_string(options.ci_level));
  if (!(options.near_zero_base >= 0.0))
    throw std::invalid_argument("compare: near_zero_base must be >= 0, got " +
                                std::to_string(options.near_zero_base));

  Comparison c;
  c.options = options;
  std::vector<PairedTask> all, unflagged;
  for (const auto& [task, splits_a] : a) {
    const auto it = b.find(task);
    if (it == b.end()) {
      c.only_in_a.push_back(task);
      continue;
    }
    const auto& splits_b = it->second;
    TaskComparison t;
    t.task = task;
    PairedTask paired;
    for (const auto& [seed, score] : splits_a) {
      const auto jt = splits_b.find(seed);
      if (jt == splits_b.end()) {
        t.splits_only_a.push_back(seed);
        continue;
      }
      t.splits.push_back(seed);
      paired.a.push_back(score);
      paired.b.push_back(jt->second);
    }
    for (const auto& [seed, score] : splits_b)
      if (!splits_a.count(seed)) t.splits_only_b.push_back(seed);
    if (t.splits.empty()) {
      c.no_common_splits.push_back(task);
      continue;
    }
    t.mean_a = mean(paired.a);
    t.mean_b = mean(paired.b);
    t.std_a = population_std(paired.a);
    t.std_b = population_std(paired.b);
    t.rg_percent = 100.0 * (t.mean_a - t.mean_b) / t.mean_b;
    t.near_zero_base = std::abs(t.mean_b) < options.near_zero_base;
    t.negative_base = t.mean_b < 0.0;
    t.non_finite = !std::isfinite(t.rg_percent);
    if (!t.flagged()) unflagged.push_back(paired);
    all.push_back(std::move(paired));
    c.tasks.push_back(std::move(t));
  }
  for (const auto& [task, splits] : b)
    if (!a.count(task)) c.only_in_b.push_back(task);
  if (c.tasks.empty())
    throw InputError("compare: no task has a split seed with scores in both tables (only in A: " +
                     std::to_string(c.only_in_a.size()) +
                     ", only in B: " + std::to_string(c.only_in_b.size()) +
                     ", no common split: " + std::to_string(c.no_common_splits.size()) + ")");
  c.all = arg_stats(all, options);
  c.unflagged = arg_stats(unflagged, options);
  return c;
}

std::string format_comparison(const Comparison& c, std::string_view label_a, std::string_view label_b) {
  const std::vector<std::string> header = {
      "task", std::string(label_a) + " mean ± std", std::string(label_b) + " mean ± std", "RG %", "splits",
      "flags"};
  std::vector<std::vector<std::string>> rows;
  for (const auto& t : c.tasks) {
    auto mean_std = [](double m, double s) {
      return fixed(m, 4) + " ± " + (std::isnan(s) ? std::string("n/a") : fixed(s, 4));
    };
    rows.push_back({t.task, mean_std(t.mean_a, t.std_a), mean_std(t.mean_b, t.std_b),
                    fixed(t.rg_percent, 2, true), std::to_string(t.splits.size()), join(flag_names(t))});
  }
  // Column widths in code points ("±" is two bytes, one column).
  auto width = [](const std::string& s) {
    std::size_t w = 0;
    for (unsigned char ch : s) w += (ch & 0xC0) != 0x80;
    return w;
  };
  std::vector<std::size_t> widths(header.size());
  for (std::size_t k = 0; k < header.size(); ++k) {
    widths[k] = width(header[k]);
    for (const auto& r : rows) widths[k] = std::max(widths[k], width(r[k]));
  }
  std::ostringstream out;
  auto print_row = [&](const std::vector<std::string>& r) {
    std::string line;
    for (std::size_t k = 0; k < r.size(); ++k) {
      const bool right = k >= 1 && k <= 4;  // numbers right-aligned
      const std::string pad(widths[k] - width(r[k]), ' ');
      if (k > 0) line += "  ";
      line += right ? pad + r[k] : r[k] + (k + 1 < r.size() ? pad : "");
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out << line << '\n';
  };
  print_row(header);
  std::size_t total = 0;
  for (auto w : widths) total += w;
  out << std::string(total + 2 * (widths.size() - 1), '-') << '\n';
  for (const auto& r : rows) print_row(r);
  out << '\n';

  out << "ARG of " << label_a << " over " << label_b << ", all " << c.all.tasks << " tasks (" << c.all.pairs
      << " task-split pairs): " << arg_line(c.all, c.options.ci_level) << '\n';
  const std::size_t flagged = c.all.tasks - c.unflagged.tasks;
  out << "ARG excluding " << flagged << " flagged task" << (flagged == 1 ? "" : "s") << " ("
      << c.unflagged.tasks << " tasks): "
      << (c.unflagged.tasks == 0 ? std::string("n/a (every task is flagged)")
                                 : arg_line(c.unflagged, c.options.ci_level))
      << '\n';
  out << "Flags: near-zero base = |" << label_b << " mean| < " << c.options.near_zero_base
      << "; negative base = " << label_b << " mean < 0; non-finite = RG is NaN or infinite.\n";
  if (!c.only_in_a.empty()) out << "Only in " << label_a << " (not compared): " << join(c.only_in_a) << '\n';
  if (!c.only_in_b.empty()) out << "Only in " << label_b << " (not compared): " << join(c.only_in_b) << '\n';
  if (!c.no_common_splits.empty())
    out << "No split seed in common (not compared): " << join(c.no_common_splits) << '\n';
  for (const auto& t : c.tasks) {
    if (t.splits_only_a.empty() && t.splits_only_b.empty()) continue;
    out << t.task << ": compared on the common splits " << join_seeds(t.splits) << " only";
    if (!t.splits_only_a.empty()) out << "; only " << label_a << " has " << join_seeds(t.splits_only_a);
    if (!t.splits_only_b.empty()) out << "; only " << label_b << " has " << join_seeds(t.splits_only_b);
    out << '\n';
  }
  return out.str();
}

nlohmann::json comparison_to_json(const Comparison& c, std::string_view label_a, std::string_view label_b) {
  nlohmann::json tasks = nlohmann::json::array();
  for (const auto& t : c.tasks) {
    tasks.push_back({{"task", t.task},
                     {"splits", t.splits},
                     {"splits_only_a", t.splits_only_a},
                     {"splits_only_b", t.splits_only_b},
                     {"mean_a", number(t.mean_a)},
                     {"std_a", number(t.std_a)},
                     {"mean_b", number(t.mean_b)},
                     {"std_b", number(t.std_b)},
                     {"rg_percent", number(t.rg_percent)},
                     {"flags", flag_names(t)}});
  }
  return {{"label_a", std::string(label_a)},
          {"label_b", std::string(label_b)},
          {"options",
           {{"near_zero_base", c.options.near_zero_base},
            {"permutations", c.options.permutations},
            {"bootstrap_samples", c.options.bootstrap_samples},
            {"ci_level", c.options.ci_level},
            {"seed", c.options.seed}}},
          {"tasks", tasks},
          {"arg", stats_json(c.all)},
          {"arg_unflagged", stats_json(c.unflagged)},
          {"only_in_a", c.only_in_a},
          {"only_in_b", c.only_in_b},
          {"no_common_splits", c.no_common_splits}};
}

}  // namespace tlmoe::metrics
