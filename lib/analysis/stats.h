// Statistics of learned routes against a task ontology (docs/method.md §12): expert–category
// association per layer, clustering of route vectors against the categories, a permutation
// test, alignment of the experts of two runs, PCA, route entropy and route dynamics.
//
// Conventions: logarithms are natural (nats) except PMI (bits, log2). Label vectors are
// arbitrary non-negative ints (encode_labels() makes them from strings). Functions throw
// std::invalid_argument, naming the sizes, on inputs that do not fit together; they never abort.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "analysis/route_table.h"

namespace tlmoe::analysis {

// ---- special functions ---------------------------------------------------------------------
// Regularized incomplete gamma functions, a > 0, x >= 0:
//   P(a,x) = γ(a,x)/Γ(a) = 1/Γ(a) ∫_0^x t^(a-1) e^(-t) dt,   Q(a,x) = 1 - P(a,x).
// Series for x < a+1, Lentz continued fraction for Q otherwise (so the upper tail keeps its
// relative accuracy down to ~1e-300). Relative error <= 1e-10 (tests: closed forms, Poisson sums).
double regularized_gamma_p(double a, double x);
double regularized_gamma_q(double a, double x);
// Survival function of the chi-square distribution with `dof` > 0 degrees of freedom:
// P[X > x] = Q(dof/2, x/2); 1 for x <= 0.
double chi_square_sf(double x, double dof);

// ---- contingency tables ----------------------------------------------------------------------
// Pearson's chi-square test of independence on an r x c table of counts [r,c] (non-negative,
// may be fractional). Rows and columns whose total is 0 carry no information and are dropped
// first (they would make expected counts 0): dof = (r'-1)(c'-1) over the r' rows and c'
// columns left. With dof = 0 the statistic is 0 and p = 1.
struct ChiSquareTest {
  double statistic = 0;  // Σ (O - E)^2 / E, E = row total * column total / N
  std::int64_t dof = 0;
  double p_value = 1;       // chi_square_sf(statistic, dof)
  double cramers_v = 0;     // sqrt(statistic / (N * (min(r',c') - 1))), effect size in [0,1]; 0 when dof = 0
  double total = 0;         // N
  double min_expected = 0;  // the smallest expected count (the test is unreliable below ~5)
};
ChiSquareTest chi_square_independence(const std::vector<double>& counts, std::size_t rows, std::size_t cols);

// How a task's route in one layer counts towards the expert–category table.
enum class Counting {
  kHard,  // 1 for its argmax expert (RouteTable::hard)
  kSoft,  // its weight for every expert (the table then holds probability mass; the chi-square
          // test treats mass as counts, which is descriptive only: report the hard test)
};

// Expert–category association in one layer: C categories (rows) x E experts (columns).
struct LayerAssociation {
  std::string layer;
  std::vector<std::string> categories;          // C, the Labeling's names
  std::size_t experts = 0;                      // E
  std::vector<double> counts;                   // [C,E] tasks (kHard) or weight mass (kSoft)
  std::vector<double> p_expert_given_category;  // [C,E] counts / row total (0 for an empty row)
  std::vector<double> p_expert;                 // [E] column total / N
  std::vector<double> lift;                     // [C,E] P(e|c) / P(e); NaN where P(e) = 0 or the row is empty
  std::vector<double> pmi;  // [C,E] log2(lift) in bits; -inf where the cell is 0; NaN as lift
  ChiSquareTest chi2;
};
// `categories.ids` has one entry per task of `routes`. Throws std::invalid_argument on a size
// mismatch or a layer index out of range.
LayerAssociation expert_category_association(const RouteTable& routes, std::size_t layer,
                                             const Labeling& categories, Counting counting);
// Every layer, in table order.
std::vector<LayerAssociation> expert_category_associations(const RouteTable& routes,
                                                           const Labeling& categories, Counting counting);

// ---- distances and clustering ------------------------------------------------------------------
enum class Metric {
  kEuclidean,  // distance ||x - y||, similarity -||x - y||
  kCosine,     // distance 1 - cos(x, y), similarity cos(x, y); a zero vector has cos 0 with anything
};
// [n,n] symmetric, zero diagonal. Every point must have the same dimension.
std::vector<double> pairwise_distances(const std::vector<std::vector<double>>& points, Metric metric);

// One step of agglomerative clustering, numbered as scipy's linkage matrix: ids < n are the
// points, id n+i is the cluster made by merge i. a < b.
struct Merge {
  std::size_t a = 0, b = 0;
  double height = 0;     // the linkage distance between a and b
  std::size_t size = 0;  // points in the new cluster
};
// Average linkage (UPGMA) on an [n,n] distance matrix: the distance between clusters is the mean
// of the distances between their points. O(n^3). Ties go to the pair (i, j) that comes first in
// point order (cluster i is represented by its smallest point), so the result is deterministic.
std::vector<Merge> average_linkage(const std::vector<double>& distances, std::size_t n);
// Cluster labels after the first n-k merges (average linkage has no inversions, so this is the
// cut of the tree into k clusters); labels numbered 0..k-1 by first appearance in point order.
// 1 <= k <= n.
std::vector<int> cut_tree(const std::vector<Merge>& merges, std::size_t n, std::size_t k);
// pairwise_distances + average_linkage + cut_tree.
std::vector<int> cluster_average_linkage(const std::vector<std::vector<double>>& points, std::size_t k,
                                         Metric metric);

// Agreement of two labelings of the same items.
// NMI with the arithmetic-mean normalisation, MI / ((H(a) + H(b)) / 2) (scikit-learn's default):
// 1 when both labelings have a single class; 0 when the mutual information is 0.
double normalized_mutual_info(const std::vector<int>& a, const std::vector<int>& b);
// Adjusted Rand index (Hubert & Arabie; scikit-learn's adjusted_rand_score): 1 for identical
// partitions, ~0 for independent ones, may be negative; 1 when no pair can disagree.
double adjusted_rand_index(const std::vector<int>& a, const std::vector<int>& b);

// ---- permutation test ------------------------------------------------------------------------
// Do tasks of the same category have more similar routes than chance?
//   statistic = mean similarity over same-category pairs - mean over different-category pairs
//   p = (1 + #{shuffles with statistic >= observed}) / (1 + permutations)
// Shuffles permute the labels (Fisher–Yates driven by std::mt19937_64(seed), with rejection-
// sampled bounded draws, so the result is the same on every platform). One-sided.
struct PermutationTestOptions {
  Metric metric = Metric::kEuclidean;  // similarity: -euclidean distance or cosine similarity
  std::int64_t permutations = 9999;
  std::uint64_t seed = 0;
};
struct PermutationTestResult {
  double observed = 0;   // the statistic on the true labels
  double mean_same = 0;  // its two terms
  double mean_different = 0;
  double p_value = 1;
  std::int64_t permutations = 0;
  std::int64_t at_least_as_large = 0;  // shuffles whose statistic >= observed
};
// Needs at least one same-category pair and one different-category pair.
PermutationTestResult same_category_permutation_test(const std::vector<std::vector<double>>& points,
                                                     const std::vector<int>& labels,
                                                     const PermutationTestOptions& options);

// ---- assignment and expert alignment ---------------------------------------------------------
// Minimum-cost assignment (Hungarian algorithm with potentials, O(rows^2 * cols)): cost is
// [rows,cols], rows <= cols, finite; returns the column of each row, all distinct.
std::vector<std::size_t> hungarian_min_cost(const std::vector<double>& cost, std::size_t rows,
                                            std::size_t cols);
// The permutation that maximizes Σ_a similarity[a, perm[a]] over an [E,E] similarity between the
// experts of run A (rows) and run B (columns) in one layer: perm[a] is B's expert for A's a.
std::vector<std::size_t> align_experts(const std::vector<double>& similarity, std::size_t experts);
// A similarity between experts from the routes alone, for when expert weights are not at hand:
// [E,E] cosine similarity between A's expert-a column and B's expert-b column of `layer` over
// the tasks both tables have (matched by name).
std::vector<double> expert_usage_similarity(const RouteTable& a, const RouteTable& b, std::size_t layer);

// Agreement of two runs' routes in one layer once B's experts are renamed by `permutation`.
struct LayerAgreement {
  std::string layer;
  std::vector<std::size_t> permutation;  // perm[a] = B's expert matched to A's expert a
  double argmax_agreement = 0;           // fraction of tasks with perm[hard_A] == hard_B
  double mean_total_variation = 0;       // mean over tasks of 1/2 Σ_a |A[a] - B[perm[a]]|
  std::size_t tasks = 0;                 // tasks compared (those in both tables)
};
// Tables must have the same layers and experts; tasks are matched by name (A's order).
// `permutations` has one permutation per layer, or is empty (identity: no alignment).
std::vector<LayerAgreement> route_agreement(const RouteTable& a, const RouteTable& b,
                                            const std::vector<std::vector<std::size_t>>& permutations);

// ---- PCA ---------------------------------------------------------------------------------------
// Principal components of n points in d dimensions (covariance with divisor n-1, as
// scikit-learn's explained_variance_). Eigen-decomposition by cyclic Jacobi on the d x d
// covariance, or on the n x n Gram matrix when n < d. Sign convention: in each component the
// coefficient of largest magnitude (the first such on ties) is positive.
struct PcaResult {
  std::vector<double> mean;                      // [d]
  std::vector<std::vector<double>> components;   // [k][d], unit length, orthogonal
  std::vector<double> explained_variance;        // [k], decreasing
  std::vector<double> explained_variance_ratio;  // [k], of the total variance (0 if none)
  std::vector<std::vector<double>> scores;       // [n][k], (x - mean) · component
};
// Needs n >= 2 and 1 <= k <= min(n, d).
PcaResult pca(const std::vector<std::vector<double>>& points, std::size_t k = 2);

// Eigen-decomposition of a symmetric [n,n] matrix by cyclic Jacobi rotations: eigenvalues in
// decreasing order, vectors[i] the unit eigenvector of values[i] (signs as returned).
struct SymmetricEigen {
  std::vector<double> values;
  std::vector<std::vector<double>> vectors;
};
SymmetricEigen symmetric_eigen(std::vector<double> matrix, std::size_t n);

// ---- entropy and route dynamics --------------------------------------------------------------
// Shannon entropy in nats of weights p (0 log 0 = 0); max log(E).
double entropy(const double* p, std::size_t n);
// [n,L] entropy of every (task, layer) route.
std::vector<double> route_entropy(const RouteTable& routes);
// [n] the mean over layers of route_entropy.
std::vector<double> mean_route_entropy(const RouteTable& routes);
// For each task of `after`, the number of layers whose hard choice differs in `before`
// (matched by task name). Throws std::invalid_argument when a task of `after` is missing from
// `before` or the layers / experts differ.
std::vector<std::int64_t> route_changes(const RouteTable& before, const RouteTable& after);

// Routes saved at successive evaluations (RUN/routes/step_*.json), summarised for the
// dynamics figure: S snapshots, the n tasks of the first one (every snapshot must have them).
struct RouteDynamics {
  std::vector<std::int64_t> steps;           // [S]
  std::vector<std::string> tasks;            // [n]
  std::vector<std::vector<double>> entropy;  // [S][n] mean_route_entropy
  std::vector<std::vector<std::int64_t>>
      changes;                              // [S][n] route_changes from the previous snapshot (0 at s = 0)
  std::vector<std::int64_t> total_changes;  // [S] Σ over tasks of changes[s]
};
RouteDynamics route_dynamics(const std::vector<RouteTable>& snapshots,
                             const std::vector<std::int64_t>& steps);

}  // namespace tlmoe::analysis
