// Comparing two result tables (docs/method.md §11): per-task means and RG, flags, missing tasks and
// splits, the sign-flip permutation test (exact and Monte-Carlo) and the paired bootstrap CI.
// Expected values are computed by hand in the comments.
#include <catch2/catch.hpp>

#include <cmath>
#include <sstream>
#include <stdexcept>

#include "common/error.h"
#include "metrics/compare.h"

using tlmoe::metrics::compare_runs;
using tlmoe::metrics::format_p;
using tlmoe::metrics::CompareOptions;
using tlmoe::metrics::Comparison;
using tlmoe::metrics::ScoreTable;

namespace {
// Method A (e.g. MoE) and base B (e.g. MTL):
//   t1: A .6 .8 (mean .7), B .5 .5 (mean .5): RG = .2/.5 = +40%
//   t2: A .3 .5 (+ split 42 only in A), B .4 .4 (+ split 87 only in B): means .4 and .4, RG = 0
//   t3: A .09 .11 (mean .1), B .02 .04 (mean .03 < .05: near-zero base): RG = .07/.03 = +233.33%
//   t4 only in A, t5 only in B, t6 in both but without a common split.
// ARG = (40 + 0 + 233.333) / 3 = 91.111%; excluding t3: (40 + 0) / 2 = 20%.
ScoreTable table_a() {
  return {{"t1", {{13, 0.6}, {21, 0.8}}},
          {"t2", {{13, 0.3}, {21, 0.5}, {42, 0.9}}},
          {"t3", {{13, 0.09}, {21, 0.11}}},
          {"t4", {{13, 0.5}}},
          {"t6", {{100, 0.5}}}};
}
ScoreTable table_b() {
  return {{"t1", {{13, 0.5}, {21, 0.5}}},
          {"t2", {{13, 0.4}, {21, 0.4}, {87, 0.1}}},
          {"t3", {{13, 0.02}, {21, 0.04}}},
          {"t5", {{13, 0.5}}},
          {"t6", {{13, 0.5}}}};
}

// 10 tasks x 5 splits where A beats B on every split by ~30%.
void planted(ScoreTable& a, ScoreTable& b) {
  for (int t = 0; t < 10; ++t) {
    for (int s = 0; s < 5; ++s) {
      const double base = 0.4 + 0.02 * ((7 * t + 3 * s) % 10);
      b["task" + std::to_string(t)][s] = base;
      a["task" + std::to_string(t)][s] = 1.3 * base + 0.01 * ((t + s) % 3);
    }
  }
}
}  // namespace

TEST_CASE("compare: per-task means, RG, flags and ARG of a hand-made table", "[eval][compare]") {
  const Comparison c = compare_runs(table_a(), table_b());
  REQUIRE(c.tasks.size() == 3);
  const auto& t1 = c.tasks[0];
  CHECK(t1.task == "t1");
  CHECK(t1.mean_a == Approx(0.7));
  CHECK(t1.mean_b == Approx(0.5));
  CHECK(t1.std_a == Approx(0.1));  // population std (ddof 0): sqrt(((.1)^2 + (.1)^2) / 2) = .1
  CHECK(t1.std_b == 0.0);
  CHECK(t1.rg_percent == Approx(40.0));
  CHECK_FALSE(t1.flagged());

  const auto& t2 = c.tasks[1];
  CHECK(t2.splits == std::vector<std::int64_t>{13, 21});
  CHECK(t2.splits_only_a == std::vector<std::int64_t>{42});
  CHECK(t2.splits_only_b == std::vector<std::int64_t>{87});
  CHECK(t2.mean_a == Approx(0.4));
  CHECK(t2.rg_percent == Approx(0.0).margin(1e-9));

  const auto& t3 = c.tasks[2];
  CHECK(t3.mean_b == Approx(0.03));
  CHECK(t3.rg_percent == Approx(700.0 / 3.0));
  CHECK(t3.near_zero_base);
  CHECK_FALSE(t3.negative_base);
  CHECK(t3.flagged());

  CHECK(c.only_in_a == std::vector<std::string>{"t4"});
  CHECK(c.only_in_b == std::vector<std::string>{"t5"});
  CHECK(c.no_common_splits == std::vector<std::string>{"t6"});
  CHECK(c.all.tasks == 3);
  CHECK(c.all.pairs == 6);
  CHECK(c.all.arg_percent == Approx(91.111111));
  CHECK(c.unflagged.tasks == 2);
  CHECK(c.unflagged.arg_percent == Approx(20.0));

  // a lower threshold (0.02) no longer flags t3 (|.03| >= .02): both ARGs agree
  CompareOptions lower;
  lower.near_zero_base = 0.02;
  const Comparison c2 = compare_runs(table_a(), table_b(), lower);
  CHECK(c2.unflagged.tasks == 3);
  CHECK(c2.unflagged.arg_percent == Approx(91.111111));
}

TEST_CASE("compare: exact sign-flip enumeration matches a hand count", "[eval][compare]") {
  // X: A .6, B .4 -> RG .5 (flipped: (.4-.6)/.6 = -1/3).
  // Y: A .5 .7, B .5 .5 -> RG .2 (flipping split 1 swaps equal scores, a no-op;
  //    flipping split 2: A' mean .5, B' mean .6 -> -1/6).
  // ARG_obs = (.5 + .2)/2 = 35%. The 8 assignments (X flip, Y split-2 flip; x2 for Y split 1):
  //   none: 35% (counts)   X: (-1/3 + .2)/2 = -6.67%   Y2: (.5 - 1/6)/2 = 16.67%   both: -25%
  // -> 2 of 8 have |ARG| >= 35%: p = 0.25.
  const ScoreTable a = {{"X", {{1, 0.6}}}, {"Y", {{1, 0.5}, {2, 0.7}}}};
  const ScoreTable b = {{"X", {{1, 0.4}}}, {"Y", {{1, 0.5}, {2, 0.5}}}};
  CompareOptions opt;
  opt.permutations = 8;  // 2^3 <= 8: exact
  const Comparison c = compare_runs(a, b, opt);
  CHECK(c.all.arg_percent == Approx(35.0));
  CHECK(c.all.exact);
  CHECK(c.all.permutations == 8);
  CHECK(c.all.p_value == Approx(0.25));

  // One task, two splits: A .6 .5, B .4 .5: obs (.55 - .45)/.45 = 22.2%; flipping split 1 gives
  // (.45 - .55)/.55 = -18.2%; flipping split 2 is a no-op -> 2 of 4: p = 0.5.
  const Comparison c1 = compare_runs({{"T", {{1, 0.6}, {2, 0.5}}}}, {{"T", {{1, 0.4}, {2, 0.5}}}}, opt);
  CHECK(c1.all.exact);
  CHECK(c1.all.permutations == 4);
  CHECK(c1.all.p_value == Approx(0.5));

  // 2^3 > 7: Monte-Carlo with the (count + 1) / (N + 1) correction; p is a multiple of 1/8
  opt.permutations = 7;
  const Comparison mc = compare_runs(a, b, opt);
  CHECK_FALSE(mc.all.exact);
  CHECK(mc.all.permutations == 7);
  const double k = mc.all.p_value * 8.0;
  CHECK(k == Approx(std::round(k)));
  CHECK(mc.all.p_value >= 1.0 / 8.0);
}

TEST_CASE("compare: a planted large effect is significant and A equal to B is not", "[eval][compare]") {
  ScoreTable a, b;
  planted(a, b);
  CompareOptions opt;
  opt.permutations = 2000;
  opt.bootstrap_samples = 2000;
  opt.seed = 7;
  const Comparison c = compare_runs(a, b, opt);
  CHECK(c.all.pairs == 50);
  CHECK_FALSE(c.all.exact);
  CHECK(c.all.arg_percent > 30.0);
  // A > B on every pair, so any flip lowers that task's RG and no random assignment (other than
  // the identity, probability 2^-50) is as extreme: p = (0 + 1) / (2000 + 1).
  CHECK(c.all.p_value == Approx(1.0 / 2001.0));
  CHECK(c.all.ci_low_percent <= c.all.arg_percent);
  CHECK(c.all.arg_percent <= c.all.ci_high_percent);
  CHECK(c.all.ci_low_percent > 0.0);

  // A == B: every assignment gives ARG 0 = |ARG_obs|: p = 1, CI [0, 0]
  const Comparison same = compare_runs(b, b, opt);
  CHECK(same.all.arg_percent == 0.0);
  CHECK(same.all.p_value == 1.0);
  CHECK(same.all.ci_low_percent == 0.0);
  CHECK(same.all.ci_high_percent == 0.0);
}

TEST_CASE("compare: bootstrap percentile CI by hand and deterministic for a seed", "[eval][compare]") {
  // One task, A .6 .8, B .5 .5. A resample of the two splits gives mean A .6 (prob 1/4, RG 20%),
  // .7 (1/2, RG 40%) or .8 (1/4, RG 60%). With 10000 resamples the 2.5th and 97.5th percentiles
  // fall deep inside the 20% and 60% blocks: CI = [20%, 60%].
  const ScoreTable a = {{"T", {{1, 0.6}, {2, 0.8}}}};
  const ScoreTable b = {{"T", {{1, 0.5}, {2, 0.5}}}};
  const Comparison c = compare_runs(a, b);
  CHECK(c.all.arg_percent == Approx(40.0));
  CHECK(c.all.ci_low_percent == Approx(20.0));
  CHECK(c.all.ci_high_percent == Approx(60.0));
  CHECK(c.all.bootstrap_samples == 10000);
  CHECK(c.all.bootstrap_nan == 0);

  // a task with one split cannot vary: CI = [ARG, ARG]
  const Comparison one = compare_runs({{"T", {{1, 0.6}}}}, {{"T", {{1, 0.5}}}});
  CHECK(one.all.ci_low_percent == Approx(20.0));
  CHECK(one.all.ci_high_percent == Approx(20.0));
  CHECK(one.tasks[0].std_a == 0.0);  // population std of one split, as numpy's np.std

  ScoreTable pa, pb;
  planted(pa, pb);
  CompareOptions opt;
  opt.permutations = 500;
  opt.bootstrap_samples = 500;
  opt.seed = 11;
  const Comparison r1 = compare_runs(pa, pb, opt);
  const Comparison r2 = compare_runs(pa, pb, opt);
  CHECK(r1.all.ci_low_percent == r2.all.ci_low_percent);
  CHECK(r1.all.ci_high_percent == r2.all.ci_high_percent);
  CHECK(r1.all.p_value == r2.all.p_value);
  CHECK(r1.all.ci_low_percent <= r1.all.arg_percent);
  CHECK(r1.all.arg_percent <= r1.all.ci_high_percent);
  CHECK(r1.all.ci_low_percent < r1.all.ci_high_percent);
  opt.seed = 12;
  const Comparison r3 = compare_runs(pa, pb, opt);
  CHECK((r3.all.ci_low_percent != r1.all.ci_low_percent || r3.all.ci_high_percent != r1.all.ci_high_percent));
}

TEST_CASE("compare: NaN scores, negative base, bad options and nothing in common", "[eval][compare]") {
  // u: a NaN Pearson score in A -> RG NaN, flagged non-finite; ARG over all tasks is NaN (and so
  // p and CI), while the unflagged ARG covers v only: (.6 - .5)/.5 = 20%.
  // w: B mean -0.2 (an MCC): negative base.
  const ScoreTable a = {{"u", {{1, std::nan("")}, {2, 0.5}}}, {"v", {{1, 0.6}}}, {"w", {{1, 0.1}}}};
  const ScoreTable b = {{"u", {{1, 0.5}, {2, 0.5}}}, {"v", {{1, 0.5}}}, {"w", {{1, -0.2}}}};
  const Comparison c = compare_runs(a, b);
  CHECK(c.tasks[0].non_finite);
  CHECK(c.tasks[2].negative_base);
  CHECK_FALSE(c.tasks[2].near_zero_base);
  CHECK(std::isnan(c.all.arg_percent));
  CHECK(std::isnan(c.all.p_value));
  CHECK(std::isnan(c.all.ci_low_percent));
  CHECK(format_p(c.all.p_value) == "n/a");  // undefined values print as n/a everywhere
  CHECK(format_p(0.012345678) == "0.01235");
  CHECK(format_comparison(c).find("nan") == std::string::npos);
  CHECK(c.unflagged.tasks == 1);
  CHECK(c.unflagged.arg_percent == Approx(20.0));

  CompareOptions bad;
  bad.permutations = 0;
  CHECK_THROWS_AS(compare_runs(a, b, bad), std::invalid_argument);
  bad = {};
  bad.ci_level = 1.0;
  CHECK_THROWS_AS(compare_runs(a, b, bad), std::invalid_argument);
  CHECK_THROWS_AS(compare_runs({{"x", {{1, 0.5}}}}, {{"y", {{1, 0.5}}}}), tlmoe::InputError);
}

TEST_CASE("compare: text report is aligned and names missing tasks and dropped splits", "[eval][compare]") {
  CompareOptions opt;
  opt.permutations = 64;  // 2^6 pairs: exact
  const Comparison c = compare_runs(table_a(), table_b(), opt);
  const std::string text = format_comparison(c, "MoE", "MTL");
  INFO(text);
  std::istringstream in(text);
  std::string header, rule, row1;
  std::getline(in, header);
  std::getline(in, rule);
  std::getline(in, row1);
  CHECK(header.rfind("task", 0) == 0);
  CHECK(header.find("MoE mean ± std") != std::string::npos);
  CHECK(rule.find_first_not_of('-') == std::string::npos);
  // the RG column is right-aligned: "RG %" and "+40.00" end at the same byte (row 1 has one "±"
  // per mean column, 2 bytes each, like the header)
  CHECK(row1.rfind("t1", 0) == 0);
  CHECK(header.find("RG %") + 4 == row1.find("+40.00") + 6);
  CHECK(text.find("near-zero base") != std::string::npos);
  CHECK(text.find("ARG of MoE over MTL, all 3 tasks (6 task-split pairs): +91.11%") != std::string::npos);
  CHECK(text.find("ARG excluding 1 flagged task (2 tasks): +20.00%") != std::string::npos);
  CHECK(text.find("exact sign-flip test, 2^6 assignments") != std::string::npos);
  CHECK(text.find("Only in MoE (not compared): t4\n") != std::string::npos);
  CHECK(text.find("Only in MTL (not compared): t5\n") != std::string::npos);
  CHECK(text.find("No split seed in common (not compared): t6\n") != std::string::npos);
  CHECK(text.find("t2: compared on the common splits 13 21 only; only MoE has 42; only MTL has 87\n") !=
        std::string::npos);
}

TEST_CASE("compare: JSON report with null for NaN", "[eval][compare]") {
  const ScoreTable a = {{"t1", {{13, 0.6}}}, {"t3", {{13, 0.1}}}};
  const ScoreTable b = {{"t1", {{13, 0.5}}}, {"t3", {{13, 0.03}}}};
  const auto j = comparison_to_json(compare_runs(a, b), "MoE", "MTL");
  CHECK(j["label_a"] == "MoE");
  CHECK(j["tasks"].size() == 2);
  CHECK(j["tasks"][0]["task"] == "t1");
  CHECK(j["tasks"][0]["rg_percent"].get<double>() == Approx(20.0));
  CHECK(j["tasks"][0]["std_a"].get<double>() == 0.0);  // one split: ddof 0 gives 0
  CHECK(j["tasks"][0]["mean_a"].get<double>() == Approx(0.6));
  CHECK(j["tasks"][1]["flags"] == nlohmann::json::array({"near-zero base"}));
  // (20 + 233.33) / 2 = 126.67
  CHECK(j["arg"]["arg_percent"].get<double>() == Approx(380.0 / 3.0));
  CHECK(j["arg_unflagged"]["arg_percent"].get<double>() == Approx(20.0));
  CHECK(j["options"]["near_zero_base"].get<double>() == 0.05);
  CHECK(j["only_in_a"].empty());
  CHECK(nlohmann::json::parse(j.dump()) == j);
}
