// Comparing two methods' few-shot results on the same unseen tasks (docs/method.md §11): per-task means
// over the k-shot splits, the relative gain RG, the average relative gain ARG, a paired sign-flip
// permutation test and a paired bootstrap confidence interval. Pure C++ (no LibTorch).
//
// Definitions (method A against base B; S_X(t) = mean over t's compared splits of X's score):
//   RG_t = (S_A(t) - S_B(t)) / S_B(t)            ARG = 100 * mean over tasks of RG_t   (in %)
// A task is *flagged* when its RG is not a fair relative gain:
//   near-zero base  |S_B(t)| < CompareOptions::near_zero_base (RG blows up, e.g. MCC near 0)
//   negative base   S_B(t) < 0 (MCC, Pearson: the sign of RG is inverted)
//   non-finite      RG is NaN or +-inf (a NaN score, e.g. a NaN Pearson, or S_B(t) = 0)
// ARG is reported over all compared tasks (CrossFit's definition, which a NaN task makes NaN) and
// over the unflagged tasks only.
//
// Significance, per ARG variant, over the (task, split) pairs of its tasks:
//   - Sign-flip permutation test of H0 "A and B are exchangeable within each (task, split)":
//     a flip swaps A's and B's score of one pair; the statistic is the ARG recomputed from the
//     flipped scores; p = share of assignments with |ARG_flip| >= |ARG_obs| (relative tolerance
//     1e-12 for ties). All 2^pairs assignments are enumerated when 2^pairs <= permutations
//     (p = count / 2^pairs, the identity included); otherwise `permutations` random assignments
//     give p = (count + 1) / (permutations + 1). A NaN ARG_flip never counts as extreme.
//   - Paired bootstrap: each task's compared splits are resampled with replacement (A and B of a
//     split stay together), ARG is recomputed; the CI is the numpy-style (linear interpolation)
//     percentile interval at ci_level. NaN resampled ARGs are dropped and counted.
//   If ARG_obs is not finite, p and the CI are NaN.
// Randomness: std::mt19937_64 seeded with `seed` (permutations) and seed ^ 0x9E3779B97F4A7C15
// (bootstrap), fresh for each ARG variant; indices and flips are drawn from the raw 64-bit
// output (rejection sampling), so results are identical on every platform and standard library.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace tlmoe::metrics {

// task -> k-shot split seed -> the dev-selected test score of one method on that split.
using ScoreTable = std::map<std::string, std::map<std::int64_t, double>>;

struct CompareOptions {
  double near_zero_base = 0.05;      // flag a task when |S_B| is below this (scores in [0, 1])
  std::size_t permutations = 10000;  // random sign assignments (exact enumeration when 2^pairs <= this)
  std::size_t bootstrap_samples = 10000;
  double ci_level = 0.95;  // in (0, 1)
  std::uint64_t seed = 0;
};

struct TaskComparison {
  std::string task;
  std::vector<std::int64_t> splits;         // the split seeds in both tables (compared)
  std::vector<std::int64_t> splits_only_a;  // dropped: only A has them
  std::vector<std::int64_t> splits_only_b;  // dropped: only B has them
  double mean_a = 0.0, mean_b = 0.0;
  double std_a = 0.0, std_b = 0.0;  // population std (ddof 0) over the compared splits; 0 for one split
  double rg_percent = 0.0;          // 100 * (mean_a - mean_b) / mean_b
  bool near_zero_base = false;
  bool negative_base = false;
  bool non_finite = false;
  bool flagged() const { return near_zero_base || negative_base || non_finite; }
};

struct ArgStats {
  static constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
  std::size_t tasks = 0;  // tasks in this ARG
  std::size_t pairs = 0;  // their (task, split) pairs
  double arg_percent = kNaN;
  double p_value = kNaN;
  bool exact = false;            // p from enumerating all 2^pairs sign assignments
  std::size_t permutations = 0;  // assignments evaluated (2^pairs when exact; 0 when not run)
  double ci_low_percent = kNaN;  // bootstrap percentile interval of ARG at ci_level
  double ci_high_percent = kNaN;
  std::size_t bootstrap_samples = 0;  // resamples drawn (0 when not run)
  std::size_t bootstrap_nan = 0;      // of which had a NaN ARG (dropped from the interval)
};

struct Comparison {
  CompareOptions options;
  std::vector<TaskComparison> tasks;          // by name: tasks with at least one split in both tables
  std::vector<std::string> only_in_a;         // tasks missing from B
  std::vector<std::string> only_in_b;         // tasks missing from A
  std::vector<std::string> no_common_splits;  // in both tables, but no split seed in common
  ArgStats all;                               // over every compared task
  ArgStats unflagged;                         // over the tasks that are not flagged()
};

// Compares method A against base B on the tasks (and, per task, the split seeds) both tables hold.
// Throws std::invalid_argument on bad options (permutations or bootstrap_samples 0, ci_level
// outside (0, 1), negative near_zero_base) and tlmoe::InputError when no task can be compared.
Comparison compare_runs(const ScoreTable& a, const ScoreTable& b, const CompareOptions& options = {});

// A p-value as every report prints it: 4 significant digits, "n/a" when undefined (NaN).
std::string format_p(double p);

// A plain-text report: an aligned table (task | A mean ± std | B mean ± std | RG % | splits |
// flags), then the ARG lines with CI and p-value, missing tasks and dropped splits.
std::string format_comparison(const Comparison& c, std::string_view label_a = "A",
                              std::string_view label_b = "B");

// The same as JSON; NaN values are null. Keys: label_a, label_b, options, tasks[], arg,
// arg_unflagged, only_in_a, only_in_b, no_common_splits.
nlohmann::json comparison_to_json(const Comparison& c, std::string_view label_a = "A",
                                  std::string_view label_b = "B");

}  // namespace tlmoe::metrics
