#include "analysis/stats.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>
#include <random>
#include <stdexcept>
#include <utility>

namespace tlmoe::analysis {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

std::string size_text(std::size_t n) { return std::to_string(n); }

void require(bool ok, const std::string& msg) {
  if (!ok) throw std::invalid_argument(msg);
}

// log of the factor x^a e^-x / Γ(a) shared by the series and the continued fraction.
double log_gamma_prefactor(double a, double x) { return a * std::log(x) - x - std::lgamma(a); }

// P(a,x) by its power series; converges fast for x < a + 1.
double gamma_p_series(double a, double x) {
  double ap = a, term = 1.0 / a, sum = term;
  for (int i = 0; i < 100000; ++i) {
    ap += 1;
    term *= x / ap;
    sum += term;
    if (std::abs(term) < std::abs(sum) * 1e-16) break;
  }
  return sum * std::exp(log_gamma_prefactor(a, x));
}

// Q(a,x) by its continued fraction (modified Lentz); converges fast for x >= a + 1.
double gamma_q_continued_fraction(double a, double x) {
  constexpr double kTiny = 1e-300;
  double b = x + 1 - a, c = 1 / kTiny, d = 1 / b, h = d;
  for (int i = 1; i < 100000; ++i) {
    double an = -i * (i - a);
    b += 2;
    d = an * d + b;
    if (std::abs(d) < kTiny) d = kTiny;
    c = b + an / c;
    if (std::abs(c) < kTiny) c = kTiny;
    d = 1 / d;
    double delta = d * c;
    h *= delta;
    if (std::abs(delta - 1) < 1e-16) break;
  }
  return std::exp(log_gamma_prefactor(a, x)) * h;
}

void check_gamma_args(double a, double x) {
  require(a > 0 && std::isfinite(a), "incomplete gamma: a = " + std::to_string(a) + " (need a > 0)");
  require(x >= 0 && !std::isnan(x), "incomplete gamma: x = " + std::to_string(x) + " (need x >= 0)");
}

void check_labels(const std::vector<int>& a, const std::vector<int>& b, const char* what) {
  require(a.size() == b.size(), std::string(what) + ": labelings of " + size_text(a.size()) + " and " +
                                    size_text(b.size()) + " items");
}

// Contingency of two labelings: dense row/column ids and the [ra, rb] counts.
struct PairTable {
  std::vector<double> a_sums, b_sums;
  std::map<std::pair<int, int>, double> cells;
};
PairTable pair_table(const std::vector<int>& a, const std::vector<int>& b) {
  std::map<int, std::size_t> ia, ib;
  for (int v : a) ia.emplace(v, ia.size());
  for (int v : b) ib.emplace(v, ib.size());
  PairTable t;
  t.a_sums.assign(ia.size(), 0);
  t.b_sums.assign(ib.size(), 0);
  for (std::size_t i = 0; i < a.size(); ++i) {
    std::size_t x = ia[a[i]], y = ib[b[i]];
    t.a_sums[x] += 1;
    t.b_sums[y] += 1;
    t.cells[{static_cast<int>(x), static_cast<int>(y)}] += 1;
  }
  return t;
}

double entropy_of_counts(const std::vector<double>& counts, double n) {
  double h = 0;
  for (double c : counts)
    if (c > 0) h -= (c / n) * std::log(c / n);
  return h;
}

double euclidean(const std::vector<double>& x, const std::vector<double>& y) {
  double s = 0;
  for (std::size_t i = 0; i < x.size(); ++i) s += (x[i] - y[i]) * (x[i] - y[i]);
  return std::sqrt(s);
}

double cosine(const std::vector<double>& x, const std::vector<double>& y) {
  double xy = 0, xx = 0, yy = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    xy += x[i] * y[i];
    xx += x[i] * x[i];
    yy += y[i] * y[i];
  }
  if (xx == 0 || yy == 0) return 0;
  return xy / std::sqrt(xx * yy);
}

void check_points(const std::vector<std::vector<double>>& points, const char* what) {
  for (const auto& p : points)
    require(p.size() == points.front().size(), std::string(what) + ": points of dimension " +
                                                   size_text(points.front().size()) + " and " +
                                                   size_text(p.size()));
}

// Uniform in [0, m) from a 64-bit generator, by rejection (no modulo bias; same on every platform).
std::uint64_t bounded(std::mt19937_64& rng, std::uint64_t m) {
  const std::uint64_t threshold = (0 - m) % m;  // 2^64 mod m
  std::uint64_t x;
  do x = rng();
  while (x < threshold);
  return x % m;
}

// Indices into `b` of the tasks of `a` that `b` has, as (index in a, index in b), in a's order.
std::vector<std::pair<std::size_t, std::size_t>> common_tasks(const RouteTable& a, const RouteTable& b) {
  std::map<std::string, std::size_t> in_b;
  for (std::size_t i = 0; i < b.num_tasks(); ++i) in_b.emplace(b.tasks[i], i);
  std::vector<std::pair<std::size_t, std::size_t>> out;
  for (std::size_t i = 0; i < a.num_tasks(); ++i) {
    auto it = in_b.find(a.tasks[i]);
    if (it != in_b.end()) out.emplace_back(i, it->second);
  }
  return out;
}

void check_same_shape(const RouteTable& a, const RouteTable& b, const char* what) {
  require(a.num_layers() == b.num_layers() && a.experts == b.experts,
          std::string(what) + ": tables of " + size_text(a.num_layers()) + " layers x " +
              std::to_string(a.experts) + " experts and " + size_text(b.num_layers()) + " layers x " +
              std::to_string(b.experts) + " experts");
}

void check_permutation(const std::vector<std::size_t>& p, std::size_t n, const std::string& what) {
  require(p.size() == n,
          what + ": permutation of " + size_text(p.size()) + " entries for " + size_text(n) + " experts");
  std::vector<bool> seen(n, false);
  for (std::size_t v : p) {
    require(v < n && !seen[v], what + ": not a permutation of 0.." + size_text(n - 1));
    seen[v] = true;
  }
}

// Orthonormal vector to every one of `basis` (unit, orthogonal), from the standard basis.
std::vector<double> orthogonal_complement_vector(const std::vector<std::vector<double>>& basis,
                                                 std::size_t d) {
  for (std::size_t i = 0; i < d; ++i) {
    std::vector<double> v(d, 0.0);
    v[i] = 1;
    for (const auto& u : basis) {
      double dot = std::inner_product(v.begin(), v.end(), u.begin(), 0.0);
      for (std::size_t k = 0; k < d; ++k) v[k] -= dot * u[k];
    }
    double norm = std::sqrt(std::inner_product(v.begin(), v.end(), v.begin(), 0.0));
    if (norm > 1e-6) {
      for (double& x : v) x /= norm;
      return v;
    }
  }
  return std::vector<double>(d, 0.0);  // unreachable while basis.size() < d
}

}  // namespace

// ---- special functions ---------------------------------------------------------------------

double regularized_gamma_p(double a, double x) {
  check_gamma_args(a, x);
  if (x == 0) return 0;
  if (std::isinf(x)) return 1;
  return x < a + 1 ? gamma_p_series(a, x) : 1 - gamma_q_continued_fraction(a, x);
}

double regularized_gamma_q(double a, double x) {
  check_gamma_args(a, x);
  if (x == 0) return 1;
  if (std::isinf(x)) return 0;
  return x < a + 1 ? 1 - gamma_p_series(a, x) : gamma_q_continued_fraction(a, x);
}

double chi_square_sf(double x, double dof) {
  require(dof > 0, "chi_square_sf: dof = " + std::to_string(dof) + " (need > 0)");
  if (std::isnan(x)) return kNaN;
  if (x <= 0) return 1;
  return regularized_gamma_q(dof / 2, x / 2);
}

// ---- contingency tables ----------------------------------------------------------------------

ChiSquareTest chi_square_independence(const std::vector<double>& counts, std::size_t rows, std::size_t cols) {
  require(counts.size() == rows * cols, "chi_square_independence: " + size_text(counts.size()) +
                                            " counts for a " + size_text(rows) + " x " + size_text(cols) +
                                            " table");
  std::vector<double> r(rows, 0), c(cols, 0);
  double n = 0;
  for (std::size_t i = 0; i < rows; ++i)
    for (std::size_t j = 0; j < cols; ++j) {
      double v = counts[i * cols + j];
      require(std::isfinite(v) && v >= 0, "chi_square_independence: count " + std::to_string(v) + " at (" +
                                              size_text(i) + ", " + size_text(j) + ")");
      r[i] += v;
      c[j] += v;
      n += v;
    }
  ChiSquareTest t;
  t.total = n;
  const auto live_rows =
      static_cast<std::int64_t>(std::count_if(r.begin(), r.end(), [](double v) { return v > 0; }));
  const auto live_cols =
      static_cast<std::int64_t>(std::count_if(c.begin(), c.end(), [](double v) { return v > 0; }));
  if (live_rows < 2 || live_cols < 2) return t;
  t.dof = (live_rows - 1) * (live_cols - 1);
  t.min_expected = kInf;
  for (std::size_t i = 0; i < rows; ++i)
    for (std::size_t j = 0; j < cols; ++j) {
      if (r[i] == 0 || c[j] == 0) continue;
      double expected = r[i] * c[j] / n, d = counts[i * cols + j] - expected;
      t.statistic += d * d / expected;
      t.min_expected = std::min(t.min_expected, expected);
    }
  t.p_value = chi_square_sf(t.statistic, static_cast<double>(t.dof));
  t.cramers_v = std::sqrt(t.statistic / (n * static_cast<double>(std::min(live_rows, live_cols) - 1)));
  return t;
}

LayerAssociation expert_category_association(const RouteTable& routes, std::size_t layer,
                                             const Labeling& categories, Counting counting) {
  require(categories.ids.size() == routes.num_tasks(),
          "expert_category_association: " + size_text(categories.ids.size()) + " category labels for " +
              size_text(routes.num_tasks()) + " tasks");
  require(layer < routes.num_layers(),
          "expert_category_association: layer " + size_text(layer) + " of " + size_text(routes.num_layers()));
  require(routes.num_tasks() > 0, "expert_category_association: no task");
  const std::size_t C = categories.num_classes(), E = routes.num_experts();
  LayerAssociation a;
  a.layer = routes.layer_names[layer];
  a.categories = categories.names;
  a.experts = E;
  a.counts.assign(C * E, 0);
  for (std::size_t t = 0; t < routes.num_tasks(); ++t) {
    int c = categories.ids[t];
    require(c >= 0 && static_cast<std::size_t>(c) < C,
            "expert_category_association: category id " + std::to_string(c) + " of " + size_text(C));
    if (counting == Counting::kHard) {
      a.counts[static_cast<std::size_t>(c) * E + routes.hard(t, layer)] += 1;
    } else {
      for (std::size_t e = 0; e < E; ++e)
        a.counts[static_cast<std::size_t>(c) * E + e] += routes.at(t, layer, e);
    }
  }
  std::vector<double> row(C, 0);
  a.p_expert.assign(E, 0);
  double n = 0;
  for (std::size_t c = 0; c < C; ++c)
    for (std::size_t e = 0; e < E; ++e) {
      row[c] += a.counts[c * E + e];
      a.p_expert[e] += a.counts[c * E + e];
      n += a.counts[c * E + e];
    }
  for (double& p : a.p_expert) p = n > 0 ? p / n : 0;
  a.p_expert_given_category.assign(C * E, 0);
  a.lift.assign(C * E, kNaN);
  a.pmi.assign(C * E, kNaN);
  for (std::size_t c = 0; c < C; ++c)
    for (std::size_t e = 0; e < E; ++e) {
      if (row[c] <= 0) continue;
      double p = a.counts[c * E + e] / row[c];
      a.p_expert_given_category[c * E + e] = p;
      if (a.p_expert[e] > 0) {
        a.lift[c * E + e] = p / a.p_expert[e];
        a.pmi[c * E + e] = std::log2(a.lift[c * E + e]);  // -inf for an empty cell
      }
    }
  a.chi2 = chi_square_independence(a.counts, C, E);
  return a;
}

std::vector<LayerAssociation> expert_category_associations(const RouteTable& routes,
                                                           const Labeling& categories, Counting counting) {
  std::vector<LayerAssociation> out;
  for (std::size_t l = 0; l < routes.num_layers(); ++l)
    out.push_back(expert_category_association(routes, l, categories, counting));
  return out;
}

// ---- distances and clustering ------------------------------------------------------------------

std::vector<double> pairwise_distances(const std::vector<std::vector<double>>& points, Metric metric) {
  const std::size_t n = points.size();
  if (n > 0) check_points(points, "pairwise_distances");
  std::vector<double> d(n * n, 0.0);
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t j = i + 1; j < n; ++j) {
      double v =
          metric == Metric::kEuclidean ? euclidean(points[i], points[j]) : 1 - cosine(points[i], points[j]);
      d[i * n + j] = d[j * n + i] = v;
    }
  return d;
}

std::vector<Merge> average_linkage(const std::vector<double>& distances, std::size_t n) {
  require(distances.size() == n * n,
          "average_linkage: " + size_text(distances.size()) + " distances for " + size_text(n) + " points");
  std::vector<double> d = distances;
  std::vector<std::size_t> size(n, 1), id(n);
  std::iota(id.begin(), id.end(), std::size_t{0});
  std::vector<bool> active(n, true);
  std::vector<Merge> merges;
  for (std::size_t step = 0; step + 1 < n; ++step) {
    std::size_t bi = 0, bj = 0;
    double best = kInf;
    for (std::size_t i = 0; i < n; ++i) {
      if (!active[i]) continue;
      for (std::size_t j = i + 1; j < n; ++j)
        if (active[j] && d[i * n + j] < best) {
          best = d[i * n + j];
          bi = i;
          bj = j;
        }
    }
    require(std::isfinite(best), "average_linkage: distances must be finite");
    const double si = static_cast<double>(size[bi]), sj = static_cast<double>(size[bj]);
    for (std::size_t k = 0; k < n; ++k) {
      if (!active[k] || k == bi || k == bj) continue;
      double v = (si * d[bi * n + k] + sj * d[bj * n + k]) / (si + sj);
      d[bi * n + k] = d[k * n + bi] = v;
    }
    merges.push_back({std::min(id[bi], id[bj]), std::max(id[bi], id[bj]), best, size[bi] + size[bj]});
    active[bj] = false;
    size[bi] += size[bj];
    id[bi] = n + step;
  }
  return merges;
}

std::vector<int> cut_tree(const std::vector<Merge>& merges, std::size_t n, std::size_t k) {
  require(k >= 1 && k <= n, "cut_tree: k = " + size_text(k) + " clusters of " + size_text(n) + " points");
  require(merges.size() + 1 >= n,
          "cut_tree: " + size_text(merges.size()) + " merges for " + size_text(n) + " points");
  std::vector<std::size_t> parent(n), member(n + merges.size());  // member: a point of each cluster id
  std::iota(parent.begin(), parent.end(), std::size_t{0});
  std::iota(member.begin(), member.begin() + static_cast<std::ptrdiff_t>(n), std::size_t{0});
  auto find = [&](std::size_t x) {
    while (parent[x] != x) x = parent[x] = parent[parent[x]];
    return x;
  };
  for (std::size_t m = 0; m < n - k; ++m) {
    require(merges[m].a < n + m && merges[m].b < n + m,
            "cut_tree: merge " + size_text(m) + " names a later cluster");
    std::size_t ra = find(member[merges[m].a]), rb = find(member[merges[m].b]);
    parent[std::max(ra, rb)] = std::min(ra, rb);
    member[n + m] = std::min(ra, rb);
  }
  std::map<std::size_t, int> label;
  std::vector<int> out(n);
  for (std::size_t i = 0; i < n; ++i)
    out[i] = label.emplace(find(i), static_cast<int>(label.size())).first->second;
  return out;
}

std::vector<int> cluster_average_linkage(const std::vector<std::vector<double>>& points, std::size_t k,
                                         Metric metric) {
  return cut_tree(average_linkage(pairwise_distances(points, metric), points.size()), points.size(), k);
}

double normalized_mutual_info(const std::vector<int>& a, const std::vector<int>& b) {
  check_labels(a, b, "normalized_mutual_info");
  PairTable t = pair_table(a, b);
  if (t.a_sums.size() == t.b_sums.size() && t.a_sums.size() <= 1) return 1.0;  // nothing is split
  const double n = static_cast<double>(a.size());
  double mi = 0;
  for (const auto& [cell, c] : t.cells)
    mi += (c / n) * std::log(n * c /
                             (t.a_sums[static_cast<std::size_t>(cell.first)] *
                              t.b_sums[static_cast<std::size_t>(cell.second)]));
  if (mi <= 1e-15) return 0.0;
  double mean_h = (entropy_of_counts(t.a_sums, n) + entropy_of_counts(t.b_sums, n)) / 2;
  return mi / std::max(mean_h, std::numeric_limits<double>::epsilon());
}

double adjusted_rand_index(const std::vector<int>& a, const std::vector<int>& b) {
  check_labels(a, b, "adjusted_rand_index");
  PairTable t = pair_table(a, b);
  auto pairs = [](double c) { return c * (c - 1) / 2; };
  // Unordered pairs: together in both (tp), only in a (fn), only in b (fp), apart in both (tn).
  double tp = 0, in_a = 0, in_b = 0;
  for (const auto& [cell, c] : t.cells) tp += pairs(c);
  for (double c : t.a_sums) in_a += pairs(c);
  for (double c : t.b_sums) in_b += pairs(c);
  const double fn = in_a - tp, fp = in_b - tp, tn = pairs(static_cast<double>(a.size())) - tp - fn - fp;
  if (fn == 0 && fp == 0) return 1.0;
  return 2.0 * (tp * tn - fn * fp) / ((tp + fn) * (fn + tn) + (tp + fp) * (fp + tn));
}

// ---- permutation test ------------------------------------------------------------------------

PermutationTestResult same_category_permutation_test(const std::vector<std::vector<double>>& points,
                                                     const std::vector<int>& labels,
                                                     const PermutationTestOptions& options) {
  const std::size_t n = points.size();
  require(labels.size() == n, "same_category_permutation_test: " + size_text(labels.size()) + " labels for " +
                                  size_text(n) + " points");
  require(options.permutations >= 0, "same_category_permutation_test: negative number of permutations");
  std::vector<double> sim = pairwise_distances(points, options.metric);
  for (double& v : sim) v = options.metric == Metric::kEuclidean ? -v : 1 - v;

  // The statistic of a labeling, and its two terms.
  auto statistic = [&](const std::vector<int>& lab, double* same_mean, double* diff_mean) {
    double same = 0, diff = 0;
    std::size_t n_same = 0, n_diff = 0;
    for (std::size_t i = 0; i < n; ++i)
      for (std::size_t j = i + 1; j < n; ++j) {
        if (lab[i] == lab[j]) {
          same += sim[i * n + j];
          ++n_same;
        } else {
          diff += sim[i * n + j];
          ++n_diff;
        }
      }
    require(n_same > 0 && n_diff > 0,
            "same_category_permutation_test: needs a same-category pair and a different-category pair");
    if (same_mean) *same_mean = same / static_cast<double>(n_same);
    if (diff_mean) *diff_mean = diff / static_cast<double>(n_diff);
    return same / static_cast<double>(n_same) - diff / static_cast<double>(n_diff);
  };

  PermutationTestResult r;
  r.observed = statistic(labels, &r.mean_same, &r.mean_different);
  r.permutations = options.permutations;
  const double threshold = r.observed - 1e-12 * std::max(1.0, std::abs(r.observed));  // rounding ties count
  std::mt19937_64 rng(options.seed);
  std::vector<int> shuffled = labels;
  for (std::int64_t p = 0; p < options.permutations; ++p) {
    for (std::size_t i = n; i > 1; --i) std::swap(shuffled[i - 1], shuffled[bounded(rng, i)]);
    if (statistic(shuffled, nullptr, nullptr) >= threshold) ++r.at_least_as_large;
  }
  r.p_value = static_cast<double>(1 + r.at_least_as_large) / static_cast<double>(1 + options.permutations);
  return r;
}

// ---- assignment and expert alignment ---------------------------------------------------------

std::vector<std::size_t> hungarian_min_cost(const std::vector<double>& cost, std::size_t rows,
                                            std::size_t cols) {
  require(cost.size() == rows * cols, "hungarian_min_cost: " + size_text(cost.size()) + " costs for a " +
                                          size_text(rows) + " x " + size_text(cols) + " matrix");
  require(rows <= cols,
          "hungarian_min_cost: more rows (" + size_text(rows) + ") than columns (" + size_text(cols) + ")");
  for (double c : cost) require(std::isfinite(c), "hungarian_min_cost: costs must be finite");
  // Potentials u (rows), v (columns); p[j] = row matched to column j (1-based, 0 = none);
  // column 0 is a virtual start. Each row is added by a shortest augmenting path (Dijkstra on
  // reduced costs), so the invariant u[i] + v[j] <= cost[i][j] holds throughout.
  std::vector<double> u(rows + 1, 0), v(cols + 1, 0);
  std::vector<std::size_t> p(cols + 1, 0), way(cols + 1, 0);
  for (std::size_t i = 1; i <= rows; ++i) {
    p[0] = i;
    std::size_t j0 = 0;
    std::vector<double> minv(cols + 1, kInf);
    std::vector<bool> used(cols + 1, false);
    do {
      used[j0] = true;
      const std::size_t i0 = p[j0];
      double delta = kInf;
      std::size_t j1 = 0;
      for (std::size_t j = 1; j <= cols; ++j) {
        if (used[j]) continue;
        double cur = cost[(i0 - 1) * cols + (j - 1)] - u[i0] - v[j];
        if (cur < minv[j]) {
          minv[j] = cur;
          way[j] = j0;
        }
        if (minv[j] < delta) {
          delta = minv[j];
          j1 = j;
        }
      }
      for (std::size_t j = 0; j <= cols; ++j) {
        if (used[j]) {
          u[p[j]] += delta;
          v[j] -= delta;
        } else {
          minv[j] -= delta;
        }
      }
      j0 = j1;
    } while (p[j0] != 0);
    do {
      std::size_t j1 = way[j0];
      p[j0] = p[j1];
      j0 = j1;
    } while (j0 != 0);
  }
  std::vector<std::size_t> assignment(rows, 0);
  for (std::size_t j = 1; j <= cols; ++j)
    if (p[j] != 0) assignment[p[j] - 1] = j - 1;
  return assignment;
}

std::vector<std::size_t> align_experts(const std::vector<double>& similarity, std::size_t experts) {
  require(similarity.size() == experts * experts, "align_experts: " + size_text(similarity.size()) +
                                                      " similarities for " + size_text(experts) + " experts");
  std::vector<double> cost(similarity.size());
  std::transform(similarity.begin(), similarity.end(), cost.begin(), [](double s) { return -s; });
  return hungarian_min_cost(cost, experts, experts);
}

std::vector<double> expert_usage_similarity(const RouteTable& a, const RouteTable& b, std::size_t layer) {
  check_same_shape(a, b, "expert_usage_similarity");
  require(layer < a.num_layers(),
          "expert_usage_similarity: layer " + size_text(layer) + " of " + size_text(a.num_layers()));
  auto common = common_tasks(a, b);
  require(!common.empty(), "expert_usage_similarity: the tables have no task in common");
  const std::size_t E = a.num_experts();
  std::vector<double> out(E * E);
  for (std::size_t ea = 0; ea < E; ++ea)
    for (std::size_t eb = 0; eb < E; ++eb) {
      std::vector<double> x, y;
      for (auto [ia, ib] : common) {
        x.push_back(a.at(ia, layer, ea));
        y.push_back(b.at(ib, layer, eb));
      }
      out[ea * E + eb] = cosine(x, y);
    }
  return out;
}

std::vector<LayerAgreement> route_agreement(const RouteTable& a, const RouteTable& b,
                                            const std::vector<std::vector<std::size_t>>& permutations) {
  check_same_shape(a, b, "route_agreement");
  require(permutations.empty() || permutations.size() == a.num_layers(),
          "route_agreement: " + size_text(permutations.size()) + " permutations for " +
              size_text(a.num_layers()) + " layers");
  auto common = common_tasks(a, b);
  require(!common.empty(), "route_agreement: the tables have no task in common");
  const std::size_t E = a.num_experts();
  std::vector<LayerAgreement> out;
  for (std::size_t l = 0; l < a.num_layers(); ++l) {
    LayerAgreement g;
    g.layer = a.layer_names[l];
    if (permutations.empty()) {
      g.permutation.resize(E);
      std::iota(g.permutation.begin(), g.permutation.end(), std::size_t{0});
    } else {
      g.permutation = permutations[l];
      check_permutation(g.permutation, E, "route_agreement, layer " + g.layer);
    }
    g.tasks = common.size();
    double agree = 0, tv = 0;
    for (auto [ia, ib] : common) {
      if (g.permutation[a.hard(ia, l)] == b.hard(ib, l)) agree += 1;
      double d = 0;
      for (std::size_t e = 0; e < E; ++e) d += std::abs(a.at(ia, l, e) - b.at(ib, l, g.permutation[e]));
      tv += d / 2;
    }
    g.argmax_agreement = agree / static_cast<double>(common.size());
    g.mean_total_variation = tv / static_cast<double>(common.size());
    out.push_back(std::move(g));
  }
  return out;
}

// ---- PCA ---------------------------------------------------------------------------------------

SymmetricEigen symmetric_eigen(std::vector<double> m, std::size_t n) {
  require(m.size() == n * n,
          "symmetric_eigen: " + size_text(m.size()) + " entries for " + size_text(n) + " x " + size_text(n));
  std::vector<double> vec(n * n, 0.0);  // columns are the eigenvectors
  for (std::size_t i = 0; i < n; ++i) vec[i * n + i] = 1;
  for (int sweep = 0; sweep < 100; ++sweep) {
    double off = 0, diag = 0;
    for (std::size_t p = 0; p < n; ++p) {
      diag += m[p * n + p] * m[p * n + p];
      for (std::size_t q = p + 1; q < n; ++q) off += m[p * n + q] * m[p * n + q];
    }
    if (off <= 1e-30 * (diag + off) || off == 0) break;
    for (std::size_t p = 0; p < n; ++p)
      for (std::size_t q = p + 1; q < n; ++q) {
        const double apq = m[p * n + q];
        if (std::abs(apq) < 1e-300) continue;
        // Rotation J (J_pp = J_qq = c, J_pq = s, J_qp = -s) with (J^T M J)_pq = 0:
        // t = s/c is the smaller root of t^2 + 2 theta t - 1 = 0.
        const double theta = (m[q * n + q] - m[p * n + p]) / (2 * apq);
        const double t = std::abs(theta) > 1e150
                             ? 1 / (2 * theta)
                             : (theta >= 0 ? 1.0 : -1.0) / (std::abs(theta) + std::sqrt(theta * theta + 1));
        const double c = 1 / std::sqrt(t * t + 1), s = t * c;
        for (std::size_t k = 0; k < n; ++k) {
          const double mkp = m[k * n + p], mkq = m[k * n + q];
          m[k * n + p] = c * mkp - s * mkq;
          m[k * n + q] = s * mkp + c * mkq;
        }
        for (std::size_t k = 0; k < n; ++k) {
          const double mpk = m[p * n + k], mqk = m[q * n + k];
          m[p * n + k] = c * mpk - s * mqk;
          m[q * n + k] = s * mpk + c * mqk;
        }
        for (std::size_t k = 0; k < n; ++k) {
          const double vkp = vec[k * n + p], vkq = vec[k * n + q];
          vec[k * n + p] = c * vkp - s * vkq;
          vec[k * n + q] = s * vkp + c * vkq;
        }
      }
  }
  std::vector<std::size_t> order(n);
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](std::size_t x, std::size_t y) { return m[x * n + x] > m[y * n + y]; });
  SymmetricEigen r;
  for (std::size_t i : order) {
    r.values.push_back(m[i * n + i]);
    std::vector<double> v(n);
    for (std::size_t k = 0; k < n; ++k) v[k] = vec[k * n + i];
    r.vectors.push_back(std::move(v));
  }
  return r;
}

PcaResult pca(const std::vector<std::vector<double>>& points, std::size_t k) {
  const std::size_t n = points.size();
  require(n >= 2, "pca: needs at least 2 points, got " + size_text(n));
  check_points(points, "pca");
  const std::size_t d = points.front().size();
  require(k >= 1 && k <= std::min(n, d), "pca: " + size_text(k) + " components of " + size_text(n) +
                                             " points in " + size_text(d) + " dimensions");
  PcaResult r;
  r.mean.assign(d, 0);
  for (const auto& p : points)
    for (std::size_t j = 0; j < d; ++j) r.mean[j] += p[j] / static_cast<double>(n);
  std::vector<double> x(n * d);  // centred [n,d]
  double total = 0;
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t j = 0; j < d; ++j) {
      x[i * d + j] = points[i][j] - r.mean[j];
      total += x[i * d + j] * x[i * d + j];
    }
  const double denom = static_cast<double>(n - 1);
  total /= denom;

  if (n >= d) {  // covariance [d,d]
    std::vector<double> cov(d * d, 0);
    for (std::size_t a = 0; a < d; ++a)
      for (std::size_t b = a; b < d; ++b) {
        double s = 0;
        for (std::size_t i = 0; i < n; ++i) s += x[i * d + a] * x[i * d + b];
        cov[a * d + b] = cov[b * d + a] = s / denom;
      }
    SymmetricEigen e = symmetric_eigen(std::move(cov), d);
    for (std::size_t c = 0; c < k; ++c) {
      r.explained_variance.push_back(std::max(0.0, e.values[c]));
      r.components.push_back(e.vectors[c]);
    }
  } else {  // Gram [n,n]: X^T u / |X^T u| is the covariance eigenvector of the same eigenvalue
    std::vector<double> gram(n * n, 0);
    for (std::size_t a = 0; a < n; ++a)
      for (std::size_t b = a; b < n; ++b) {
        double s = 0;
        for (std::size_t j = 0; j < d; ++j) s += x[a * d + j] * x[b * d + j];
        gram[a * n + b] = gram[b * n + a] = s / denom;
      }
    SymmetricEigen e = symmetric_eigen(std::move(gram), n);
    for (std::size_t c = 0; c < k; ++c) {
      std::vector<double> v(d, 0);
      for (std::size_t i = 0; i < n; ++i)
        for (std::size_t j = 0; j < d; ++j) v[j] += x[i * d + j] * e.vectors[c][i];
      double norm = std::sqrt(std::inner_product(v.begin(), v.end(), v.begin(), 0.0));
      const bool degenerate = e.values[c] <= 1e-12 * std::max(total, 1e-300) || norm == 0;
      if (degenerate) {
        v = orthogonal_complement_vector(r.components, d);
      } else {
        for (double& t : v) t /= norm;
      }
      r.explained_variance.push_back(degenerate ? 0.0 : std::max(0.0, e.values[c]));
      r.components.push_back(std::move(v));
    }
  }
  for (auto& comp : r.components) {  // sign: the largest-magnitude coefficient is positive
    std::size_t big = 0;
    for (std::size_t j = 1; j < d; ++j)
      if (std::abs(comp[j]) > std::abs(comp[big]) + 1e-12) big = j;
    if (comp[big] < 0)
      for (double& t : comp) t = -t;
  }
  for (double v : r.explained_variance) r.explained_variance_ratio.push_back(total > 0 ? v / total : 0.0);
  r.scores.assign(n, std::vector<double>(k, 0));
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t c = 0; c < k; ++c)
      for (std::size_t j = 0; j < d; ++j) r.scores[i][c] += x[i * d + j] * r.components[c][j];
  return r;
}

// ---- entropy and route dynamics --------------------------------------------------------------

double entropy(const double* p, std::size_t n) {
  double h = 0;
  for (std::size_t i = 0; i < n; ++i)
    if (p[i] > 0) h -= p[i] * std::log(p[i]);
  return h;
}

std::vector<double> route_entropy(const RouteTable& routes) {
  std::vector<double> h;
  h.reserve(routes.num_tasks() * routes.num_layers());
  for (std::size_t t = 0; t < routes.num_tasks(); ++t)
    for (std::size_t l = 0; l < routes.num_layers(); ++l)
      h.push_back(entropy(routes.row(t, l), routes.num_experts()));
  return h;
}

std::vector<double> mean_route_entropy(const RouteTable& routes) {
  std::vector<double> h = route_entropy(routes), out(routes.num_tasks(), 0);
  const std::size_t L = routes.num_layers();
  for (std::size_t t = 0; t < routes.num_tasks(); ++t) {
    for (std::size_t l = 0; l < L; ++l) out[t] += h[t * L + l];
    out[t] /= static_cast<double>(std::max<std::size_t>(L, 1));
  }
  return out;
}

std::vector<std::int64_t> route_changes(const RouteTable& before, const RouteTable& after) {
  check_same_shape(before, after, "route_changes");
  std::vector<std::int64_t> out;
  out.reserve(after.num_tasks());
  for (std::size_t t = 0; t < after.num_tasks(); ++t) {
    std::ptrdiff_t b = before.index_of(after.tasks[t]);
    require(b >= 0, "route_changes: task '" + after.tasks[t] + "' is not in the earlier table");
    std::int64_t changed = 0;
    for (std::size_t l = 0; l < after.num_layers(); ++l)
      if (before.hard(static_cast<std::size_t>(b), l) != after.hard(t, l)) ++changed;
    out.push_back(changed);
  }
  return out;
}

RouteDynamics route_dynamics(const std::vector<RouteTable>& snapshots,
                             const std::vector<std::int64_t>& steps) {
  require(snapshots.size() == steps.size(), "route_dynamics: " + size_text(snapshots.size()) +
                                                " snapshots and " + size_text(steps.size()) + " steps");
  RouteDynamics r;
  r.steps = steps;
  if (snapshots.empty()) return r;
  r.tasks = snapshots.front().tasks;
  const RouteTable* previous = nullptr;
  for (std::size_t s = 0; s < snapshots.size(); ++s) {
    const RouteTable& cur = snapshots[s];
    std::vector<std::size_t> order;
    for (const auto& name : r.tasks) {
      std::ptrdiff_t i = cur.index_of(name);
      require(i >= 0, "route_dynamics: task '" + name + "' is missing at step " + std::to_string(steps[s]));
      order.push_back(static_cast<std::size_t>(i));
    }
    r.entropy.push_back(mean_route_entropy(select_tasks(cur, order)));
    std::vector<std::int64_t> changes = previous ? route_changes(*previous, select_tasks(cur, order))
                                                 : std::vector<std::int64_t>(r.tasks.size(), 0);
    r.total_changes.push_back(std::accumulate(changes.begin(), changes.end(), std::int64_t{0}));
    r.changes.push_back(std::move(changes));
    previous = &cur;
  }
  return r;
}

}  // namespace tlmoe::analysis
