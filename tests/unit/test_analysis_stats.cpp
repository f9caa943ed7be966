// Routing-analysis statistics (lib/analysis): route tables, chi-square and its special
// function, expert-category association, clustering, NMI/ARI, the permutation test, Hungarian
// alignment, PCA, entropy and route dynamics. Expected values are computed by hand (arithmetic in
// the comments) or by an independent formula, never by the code under test.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "analysis/route_table.h"
#include "analysis/stats.h"
#include "common/error.h"
#include "test_util.h"

using namespace tlmoe::analysis;

namespace {

// A table of `n` tasks "t0".."t{n-1}" whose rows are given as [n][L][E].
RouteTable table(const std::vector<std::vector<std::vector<double>>>& rows,
                 std::vector<std::string> names = {}) {
  RouteTable t;
  t.experts = static_cast<std::int64_t>(rows.at(0).at(0).size());
  for (std::size_t l = 0; l < rows[0].size(); ++l) t.layer_names.push_back("L" + std::to_string(l + 1));
  for (std::size_t i = 0; i < rows.size(); ++i) {
    t.tasks.push_back(names.empty() ? "t" + std::to_string(i) : names[i]);
    for (const auto& layer : rows[i]) t.probs.insert(t.probs.end(), layer.begin(), layer.end());
  }
  return t;
}

// A random table with rows normalised to 1.
RouteTable random_table(std::size_t n, std::size_t L, std::size_t E, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0.05, 1.0);
  std::vector<std::vector<std::vector<double>>> rows(
      n, std::vector<std::vector<double>>(L, std::vector<double>(E)));
  for (auto& task : rows)
    for (auto& layer : task) {
      for (double& v : layer) v = u(rng);
      double s = std::accumulate(layer.begin(), layer.end(), 0.0);
      for (double& v : layer) v /= s;
    }
  return table(rows);
}

double log_factorial(int k) { return std::lgamma(k + 1.0); }

// Q(n, x) for integer n through the Poisson identity Q(n, x) = P[Poisson(x) <= n-1].
double poisson_cdf(int n_minus_1, double x) {
  double s = 0;
  for (int k = 0; k <= n_minus_1; ++k) s += std::exp(-x + k * std::log(x) - log_factorial(k));
  return s;
}

}  // namespace

// ---- route tables ------------------------------------------------------------------------------

TEST_CASE("Route table: layer names, element access, hard choice, task vectors", "[analysis]") {
  CHECK(layer_names(2, 4) == std::vector<std::string>{"enc1", "enc2", "dec1", "dec2"});
  CHECK(layer_names(0, 1) == std::vector<std::string>{"dec1"});
  CHECK_THROWS_AS(layer_names(3, 2), std::invalid_argument);

  RouteTable t = table({{{0.2, 0.8}, {0.5, 0.5}}, {{1.0, 0.0}, {0.3, 0.7}}});
  t.validate();
  CHECK(t.num_tasks() == 2);
  CHECK(t.num_layers() == 2);
  CHECK(t.at(1, 1, 1) == 0.7);
  CHECK(t.hard(0, 0) == 1);
  CHECK(t.hard(0, 1) == 0);  // a tie goes to the first expert
  CHECK(t.task_vector(1) == std::vector<double>{1.0, 0.0, 0.3, 0.7});
  CHECK(t.index_of("t1") == 1);
  CHECK(t.index_of("nope") == -1);
}

TEST_CASE("Route table: validate names the problem", "[analysis]") {
  RouteTable t = table({{{0.2, 0.8}}, {{0.6, 0.4}}});
  auto message = [](const RouteTable& r) {
    try {
      r.validate();
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  CHECK(message(t).empty());
  RouteTable bad = t;
  bad.probs[1] = 0.7;
  CHECK_THAT(message(bad), Catch::Contains("task 't0', layer L1: weights sum to 0.9"));
  bad = t;
  bad.probs[2] = -0.5;
  bad.probs[3] = 1.5;
  CHECK_THAT(message(bad), Catch::Contains("not in [0, 1]"));
  bad = t;
  bad.probs.pop_back();
  CHECK_THAT(message(bad), Catch::Contains("3 weights for 2 tasks x 1 layers x 2 experts"));
  bad = t;
  bad.tasks[1] = "t0";
  CHECK_THAT(message(bad), Catch::Contains("task 't0' appears twice"));
}

TEST_CASE("Route table: reads the trainer's route files and writes JSON and CSV", "[analysis]") {
  // The layout tlmoe train writes to RUN/routes/step_NNNNNNN.json.
  auto j = nlohmann::ordered_json::parse(R"({"step": 10, "tau": 0.5, "tasks": ["a", "b,c"],
      "layers": 2, "encoder_layers": 1, "experts": 2, "kind": "router",
      "routes":    [[[0.9, 0.1], [0.2, 0.8]], [[0.5, 0.5], [0.0, 1.0]]],
      "routes_t1": [[[0.7, 0.3], [0.4, 0.6]], [[0.5, 0.5], [0.25, 0.75]]],
      "hard": [[0, 1], [0, 1]]})");
  RouteTable t = route_table_from_json(j, "routes", "step.json");
  CHECK(t.tasks == std::vector<std::string>{"a", "b,c"});
  CHECK(t.layer_names == std::vector<std::string>{"enc1", "dec1"});
  CHECK(t.experts == 2);
  CHECK(t.probs == std::vector<double>{0.9, 0.1, 0.2, 0.8, 0.5, 0.5, 0.0, 1.0});
  CHECK(route_table_from_json(j, "routes_t1", "step.json").at(1, 1, 0) == 0.25);

  // JSON round trip, with the hard choices.
  auto out = route_table_to_json(t);
  CHECK(out["hard"] == nlohmann::ordered_json::parse("[[0, 1], [0, 1]]"));
  RouteTable back = route_table_from_json(out, "routes", "out.json");
  CHECK(back.tasks == t.tasks);
  CHECK(back.layer_names == t.layer_names);
  CHECK(back.probs == t.probs);

  // CSV: one line per (task, layer), hard choice 1-based, a task name with a comma quoted.
  CHECK(route_table_csv(t) ==
        "task,layer,hard,e1,e2\n"
        "a,enc1,1,0.9,0.1\n"
        "a,dec1,2,0.2,0.8\n"
        "\"b,c\",enc1,1,0.5,0.5\n"
        "\"b,c\",dec1,2,0,1\n");

  // Files: read_route_table, errors as DataError naming the file.
  tlmoe::test::TempDir d;
  tlmoe::test::write_text(d / "r.json", j.dump());
  CHECK(read_route_table(d / "r.json", "routes_t1").probs ==
        route_table_from_json(j, "routes_t1", "x").probs);
  auto error = [&](const nlohmann::ordered_json& doc, const std::string& key = "routes") {
    try {
      route_table_from_json(doc, key, "f.json");
    } catch (const tlmoe::DataError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  CHECK(error(j, "routes_t2") == "data error: f.json: missing key 'routes_t2' (this run has no such routes)");
  auto k = j;
  k["routes"][1].erase(1);
  CHECK(error(k) == "data error: f.json: 'routes' of task 'b,c' must list 2 layers");
  k = j;
  k["routes"][0][0] = {0.9, 0.3};
  CHECK_THAT(error(k),
             Catch::StartsWith("data error: f.json: route table: task 'a', layer enc1: weights sum to 1.2"));
  k = j;
  k.erase("encoder_layers");
  CHECK(error(k) == "data error: f.json: missing key 'layer_names' (or 'layers' and 'encoder_layers')");
}

TEST_CASE("Route table: select tasks, encode labels, ontology order", "[analysis]") {
  RouteTable t = table({{{1.0, 0.0}}, {{0.0, 1.0}}, {{0.5, 0.5}}});
  RouteTable s = select_tasks(t, {2, 0});
  CHECK(s.tasks == std::vector<std::string>{"t2", "t0"});
  CHECK(s.probs == std::vector<double>{0.5, 0.5, 1.0, 0.0});
  CHECK_THROWS_AS(select_tasks(t, {3}), std::out_of_range);

  Labeling lab = encode_labels({"qa", "cls", "qa", "other"});
  CHECK(lab.names == std::vector<std::string>{"qa", "cls", "other"});
  CHECK(lab.ids == std::vector<int>{0, 1, 0, 2});

  // By top category, then sub-category, then name; an uncategorised task last.
  std::vector<std::string> tasks = {"squad", "imdb", "zzz", "glue-sst2", "nq", "ag_news"};
  std::vector<std::string> top = {"qa", "classification", "", "classification", "qa", "classification"};
  std::vector<std::string> sub = {"mrc", "sentiment", "", "sentiment", "closed-book", "topic"};
  auto order = ontology_order(tasks, top, sub);
  std::vector<std::string> got;
  for (auto i : order) got.push_back(tasks[i]);
  CHECK(got == std::vector<std::string>{"glue-sst2", "imdb", "ag_news", "nq", "squad", "zzz"});
}

// ---- chi-square ------------------------------------------------------------------------------

TEST_CASE("Chi-square survival function: reference values and closed forms", "[analysis]") {
  // scipy.stats.chi2.sf values quoted in the issue.
  CHECK(chi_square_sf(3.84, 1) == Approx(0.05004).margin(5e-6));
  CHECK(chi_square_sf(10, 4) == Approx(0.04043).margin(5e-6));
  CHECK(chi_square_sf(0.5, 2) == Approx(0.7788).margin(5e-5));
  // Closed forms. dof 1: erfc(sqrt(x/2)); dof 3: erfc(sqrt(x/2)) + sqrt(2x/pi) e^(-x/2);
  // even dof 2m: e^(-x/2) * sum_{k<m} (x/2)^k / k!.
  for (double x : {0.01, 0.3, 1.0, 3.84, 7.5, 20.0, 60.0}) {
    CHECK(chi_square_sf(x, 1) == Approx(std::erfc(std::sqrt(x / 2))).epsilon(1e-10));
    CHECK(chi_square_sf(x, 3) ==
          Approx(std::erfc(std::sqrt(x / 2)) + std::sqrt(2 * x / M_PI) * std::exp(-x / 2)).epsilon(1e-10));
    CHECK(chi_square_sf(x, 2) == Approx(std::exp(-x / 2)).epsilon(1e-12));
  }
  CHECK(chi_square_sf(10, 4) == Approx(6 * std::exp(-5.0)).epsilon(1e-12));  // e^-5 (1 + 5)
  // dof 10, x 20: e^-10 (1 + 10 + 100/2 + 1000/6 + 10000/24)
  CHECK(chi_square_sf(20, 10) ==
        Approx(std::exp(-10.0) * (1 + 10 + 50 + 1000.0 / 6 + 10000.0 / 24)).epsilon(1e-12));
  // The far tail keeps its relative accuracy: dof 2, x 600 -> e^-300.
  CHECK(chi_square_sf(600, 2) == Approx(std::exp(-300.0)).epsilon(1e-10));
  CHECK(chi_square_sf(0, 3) == 1.0);
  CHECK(chi_square_sf(-1, 3) == 1.0);
  CHECK_THROWS_AS(chi_square_sf(1, 0), std::invalid_argument);
}

TEST_CASE("Regularized incomplete gamma: Poisson identity, erf, P plus Q", "[analysis]") {
  // Q(n, x) = P[Poisson(x) <= n - 1] for integer n, on both sides of x = a + 1 (series and
  // continued fraction).
  for (auto [n, x] : std::vector<std::pair<int, double>>{
           {1, 0.5}, {5, 3.0}, {5, 9.0}, {30, 20.0}, {30, 45.0}, {100, 100.0}, {100, 80.0}}) {
    INFO("n = " << n << ", x = " << x);
    CHECK(regularized_gamma_q(n, x) == Approx(poisson_cdf(n - 1, x)).epsilon(1e-10));
    CHECK(regularized_gamma_p(n, x) + regularized_gamma_q(n, x) == Approx(1.0).epsilon(1e-13));
  }
  // P(1/2, x) = erf(sqrt(x)).
  for (double x : {0.1, 1.0, 2.0, 5.0})
    CHECK(regularized_gamma_p(0.5, x) == Approx(std::erf(std::sqrt(x))).epsilon(1e-12));
  CHECK(regularized_gamma_p(2, 0) == 0.0);
  CHECK(regularized_gamma_q(2, INFINITY) == 0.0);
  CHECK_THROWS_AS(regularized_gamma_p(-1, 1), std::invalid_argument);
}

TEST_CASE("Chi-square test of independence: a 2x2 table by hand, empty margins dropped", "[analysis]") {
  // [[2, 1], [0, 3]]: rows 3, 3; columns 2, 4; N = 6.
  // Expected [[1, 2], [1, 2]]; chi2 = 1/1 + 1/2 + 1/1 + 1/2 = 3, dof 1, p = erfc(sqrt(1.5)).
  // Cramer's V = sqrt(3 / (6 * 1)).
  ChiSquareTest t = chi_square_independence({2, 1, 0, 3}, 2, 2);
  CHECK(t.statistic == Approx(3.0));
  CHECK(t.dof == 1);
  CHECK(t.p_value == Approx(std::erfc(std::sqrt(1.5))));
  CHECK(t.p_value == Approx(0.0832645).margin(1e-7));
  CHECK(t.cramers_v == Approx(std::sqrt(0.5)));
  CHECK(t.total == 6);
  CHECK(t.min_expected == Approx(1.0));
  // An expert nobody uses and an empty category change nothing.
  ChiSquareTest padded = chi_square_independence({2, 0, 1, 0, 0, 0, 0, 0, 3}, 3, 3);
  CHECK(padded.statistic == Approx(3.0));
  CHECK(padded.dof == 1);
  // A single used column: no test.
  ChiSquareTest none = chi_square_independence({2, 0, 3, 0}, 2, 2);
  CHECK(none.dof == 0);
  CHECK(none.statistic == 0);
  CHECK(none.p_value == 1);
  // Independence exactly: [[1, 2], [2, 4]] -> 0, p = 1.
  ChiSquareTest ind = chi_square_independence({1, 2, 2, 4}, 2, 2);
  CHECK(ind.statistic == Approx(0.0).margin(1e-12));
  CHECK(ind.p_value == Approx(1.0));
  CHECK_THROWS_AS(chi_square_independence({1, 2, 3}, 2, 2), std::invalid_argument);
  CHECK_THROWS_AS(chi_square_independence({1, -2, 3, 4}, 2, 2), std::invalid_argument);
}

TEST_CASE("Expert-category association: hard and soft counts, P(e|c), lift, PMI", "[analysis]") {
  // Three tasks of category A, three of B, one layer, two experts.
  RouteTable t = table({{{0.9, 0.1}},
                        {{0.6, 0.4}},
                        {{0.2, 0.8}},  // A: argmax e1, e1, e2
                        {{0.3, 0.7}},
                        {{0.1, 0.9}},
                        {{0.0, 1.0}}});  // B: argmax e2, e2, e2
  Labeling cats = encode_labels({"A", "A", "A", "B", "B", "B"});

  // Hard: [[2, 1], [0, 3]] (chi-square by hand in the test above: 3, p = 0.08326).
  LayerAssociation h = expert_category_association(t, 0, cats, Counting::kHard);
  CHECK(h.layer == "L1");
  CHECK(h.categories == std::vector<std::string>{"A", "B"});
  CHECK(h.counts == std::vector<double>{2, 1, 0, 3});
  // P(e|A) = 2/3, 1/3; P(e|B) = 0, 1; P(e) = 2/6, 4/6.
  CHECK(h.p_expert_given_category[0] == Approx(2.0 / 3));
  CHECK(h.p_expert_given_category[1] == Approx(1.0 / 3));
  CHECK(h.p_expert_given_category[2] == 0);
  CHECK(h.p_expert_given_category[3] == Approx(1.0));
  CHECK(h.p_expert[0] == Approx(1.0 / 3));
  CHECK(h.p_expert[1] == Approx(2.0 / 3));
  // lift = P(e|c)/P(e): A,e1 = (2/3)/(1/3) = 2; A,e2 = (1/3)/(2/3) = 0.5; B,e1 = 0; B,e2 = 1.5.
  CHECK(h.lift[0] == Approx(2.0));
  CHECK(h.lift[1] == Approx(0.5));
  CHECK(h.lift[2] == 0);
  CHECK(h.lift[3] == Approx(1.5));
  // PMI = log2 lift: 1, -1, -inf, log2 1.5.
  CHECK(h.pmi[0] == Approx(1.0));
  CHECK(h.pmi[1] == Approx(-1.0));
  CHECK(std::isinf(h.pmi[2]));
  CHECK(h.pmi[2] < 0);
  CHECK(h.pmi[3] == Approx(0.5849625007));
  CHECK(h.chi2.statistic == Approx(3.0));
  CHECK(h.chi2.dof == 1);

  // Soft: A = [0.9+0.6+0.2, 0.1+0.4+0.8] = [1.7, 1.3]; B = [0.4, 2.6]. Rows 3, 3; columns 2.1,
  // 3.9; expected [[1.05, 1.95], [1.05, 1.95]]; every |O - E| = 0.65;
  // chi2 = 0.4225 * (2/1.05 + 2/1.95) = 26/21.
  LayerAssociation s = expert_category_association(t, 0, cats, Counting::kSoft);
  CHECK(s.counts[0] == Approx(1.7));
  CHECK(s.counts[1] == Approx(1.3));
  CHECK(s.counts[2] == Approx(0.4));
  CHECK(s.counts[3] == Approx(2.6));
  CHECK(s.chi2.statistic == Approx(26.0 / 21));
  CHECK(s.chi2.dof == 1);
  CHECK(s.p_expert_given_category[2] == Approx(0.4 / 3));
  CHECK(s.lift[2] == Approx((0.4 / 3) / (2.1 / 6)));

  // An expert no task uses: lift and PMI undefined (NaN) in its column, the test unchanged.
  RouteTable three = table({{{0.9, 0.1, 0.0}},
                            {{0.6, 0.4, 0.0}},
                            {{0.2, 0.8, 0.0}},
                            {{0.3, 0.7, 0.0}},
                            {{0.1, 0.9, 0.0}},
                            {{0.0, 1.0, 0.0}}});
  auto all = expert_category_associations(three, cats, Counting::kHard);
  REQUIRE(all.size() == 1);
  CHECK(std::isnan(all[0].lift[2]));
  CHECK(std::isnan(all[0].pmi[5]));
  CHECK(all[0].chi2.statistic == Approx(3.0));
  CHECK_THROWS_AS(expert_category_association(t, 1, cats, Counting::kHard), std::invalid_argument);
  CHECK_THROWS_AS(expert_category_association(t, 0, encode_labels({"A", "B"}), Counting::kHard),
                  std::invalid_argument);
}

// ---- clustering and partition scores -----------------------------------------------------------

TEST_CASE("Average linkage: merge heights by hand and cuts at k clusters", "[analysis]") {
  // Points 0, 1, 5, 11 on a line. d(0,1) = 1 -> merge {0,1} (id 4) at 1.
  // d({0,1},5) = (5+4)/2 = 4.5, d({0,1},11) = (11+10)/2 = 10.5, d(5,11) = 6 -> merge {2, 4} at 4.5.
  // d({0,1,5},11) = (2*10.5 + 6)/3 = 9 -> merge {3, 5} at 9 (scipy's linkage gives the same).
  std::vector<std::vector<double>> pts = {{0}, {1}, {5}, {11}};
  auto merges = average_linkage(pairwise_distances(pts, Metric::kEuclidean), 4);
  REQUIRE(merges.size() == 3);
  CHECK((merges[0].a == 0 && merges[0].b == 1 && merges[0].size == 2));
  CHECK(merges[0].height == Approx(1.0));
  CHECK((merges[1].a == 2 && merges[1].b == 4 && merges[1].size == 3));
  CHECK(merges[1].height == Approx(4.5));
  CHECK((merges[2].a == 3 && merges[2].b == 5 && merges[2].size == 4));
  CHECK(merges[2].height == Approx(9.0));
  CHECK(cut_tree(merges, 4, 1) == std::vector<int>{0, 0, 0, 0});
  CHECK(cut_tree(merges, 4, 2) == std::vector<int>{0, 0, 0, 1});
  CHECK(cut_tree(merges, 4, 3) == std::vector<int>{0, 0, 1, 2});
  CHECK(cut_tree(merges, 4, 4) == std::vector<int>{0, 1, 2, 3});
  CHECK_THROWS_AS(cut_tree(merges, 4, 0), std::invalid_argument);

  // Cosine: direction matters, length does not.
  std::vector<std::vector<double>> dirs = {{1, 0}, {0, 1}, {2, 0.1}, {0.1, 3}, {5, 0}};
  CHECK(cluster_average_linkage(dirs, 2, Metric::kCosine) == std::vector<int>{0, 1, 0, 1, 0});
  auto d = pairwise_distances({{1, 0}, {0, 2}, {3, 0}}, Metric::kCosine);
  CHECK(d[0 * 3 + 1] == Approx(1.0));
  CHECK(d[0 * 3 + 2] == Approx(0.0).margin(1e-15));
  CHECK(pairwise_distances({{0, 0}, {3, 4}}, Metric::kEuclidean)[1] == Approx(5.0));
}

TEST_CASE("NMI and ARI: identical, renamed, independent and hand-computed labelings", "[analysis]") {
  std::vector<int> a = {0, 0, 0, 1, 1, 1};
  CHECK(normalized_mutual_info(a, a) == Approx(1.0));
  CHECK(adjusted_rand_index(a, a) == Approx(1.0));
  CHECK(normalized_mutual_info(a, {5, 5, 5, 2, 2, 2}) == Approx(1.0));  // names do not matter
  CHECK(adjusted_rand_index(a, {5, 5, 5, 2, 2, 2}) == Approx(1.0));

  // a vs b = [0,0,1,1,2,2]: cells (0,0)=2, (0,1)=1, (1,1)=1, (1,2)=2, N = 6.
  // MI = 2/6 ln(6*2/(3*2)) + 2 * 1/6 ln(6*1/(3*2)) + 2/6 ln 2 = (2/3) ln 2;
  // H(a) = ln 2, H(b) = ln 3; NMI = (2/3) ln 2 / ((ln 2 + ln 3)/2) = 4 ln 2 / (3 ln 6) = 0.5158.
  std::vector<int> b = {0, 0, 1, 1, 2, 2};
  CHECK(normalized_mutual_info(a, b) == Approx(4 * std::log(2.0) / (3 * std::log(6.0))));
  // Pairs: together in both = C(2,2) + C(2,2) = 2; in a: 2 C(3,2) = 6; in b: 3 C(2,2) = 3;
  // C(6,2) = 15; expected = 6*3/15 = 1.2; max = (6+3)/2 = 4.5; ARI = (2 - 1.2)/(4.5 - 1.2) = 8/33.
  CHECK(adjusted_rand_index(a, b) == Approx(8.0 / 33));
  CHECK(adjusted_rand_index(b, a) == Approx(8.0 / 33));

  // scikit-learn's documented examples: ARI([0,0,1,2], [0,0,1,1]) = 4/7 (together in both 1; in a 1;
  // in b 2; expected 2/6; max 1.5 -> (1 - 1/3)/(1.5 - 1/3)), and NMI of the same pair by hand:
  // MI = 1/2 ln 2 + 2 * 1/4 ln 2 = ln 2, H = 1.5 ln 2 and ln 2 -> NMI = 1/1.25 = 0.8.
  CHECK(adjusted_rand_index({0, 0, 1, 2}, {0, 0, 1, 1}) == Approx(4.0 / 7));
  CHECK(normalized_mutual_info({0, 0, 1, 2}, {0, 0, 1, 1}) == Approx(0.8));
  CHECK(adjusted_rand_index({0, 0, 1, 1}, {1, 1, 0, 0}) == Approx(1.0));
  CHECK(adjusted_rand_index({0, 0, 0, 0}, {0, 1, 2, 3}) == Approx(0.0).margin(1e-15));
  CHECK(normalized_mutual_info({0, 0, 0, 0}, {0, 1, 2, 3}) == Approx(0.0).margin(1e-15));

  // Independent: [0,0,1,1] vs [0,1,0,1]: MI = 0; pairs together in both 0, in a 2, in b 2;
  // expected 2*2/6 = 2/3, max 2 -> ARI = (0 - 2/3)/(2 - 2/3) = -1/2.
  CHECK(normalized_mutual_info({0, 0, 1, 1}, {0, 1, 0, 1}) == Approx(0.0).margin(1e-15));
  CHECK(adjusted_rand_index({0, 0, 1, 1}, {0, 1, 0, 1}) == Approx(-0.5));
  // Nothing split on either side: both scores 1 (scikit-learn's convention).
  CHECK(normalized_mutual_info({3, 3, 3}, {1, 1, 1}) == 1.0);
  CHECK(adjusted_rand_index({3, 3, 3}, {1, 1, 1}) == 1.0);
  CHECK_THROWS_AS(adjusted_rand_index({0, 1}, {0}), std::invalid_argument);
}

TEST_CASE("Clustering route vectors recovers planted categories", "[analysis]") {
  // Three categories, each routed mostly to its own expert in both layers, plus noise.
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<double> noise(0.0, 0.15);
  std::vector<std::vector<double>> pts;
  std::vector<int> truth;
  for (int c = 0; c < 3; ++c)
    for (int i = 0; i < 5; ++i) {
      std::vector<double> v(6);
      for (int l = 0; l < 2; ++l)
        for (int e = 0; e < 3; ++e) v[l * 3 + e] = (e == c ? 0.8 : 0.1) + noise(rng);
      pts.push_back(v);
      truth.push_back(c);
    }
  for (Metric m : {Metric::kEuclidean, Metric::kCosine}) {
    auto labels = cluster_average_linkage(pts, 3, m);
    CHECK(normalized_mutual_info(truth, labels) == Approx(1.0));
    CHECK(adjusted_rand_index(truth, labels) == Approx(1.0));
  }
}

// ---- permutation test ------------------------------------------------------------------------

TEST_CASE("Permutation test: statistic by hand and the p-value of a 2+2 example", "[analysis]") {
  // 1-D points 0, 1 (A) and 10, 12 (B); similarity -|x - y|.
  // Same pairs: -1, -2 -> mean -1.5. Different: -10, -12, -9, -11 -> mean -10.5. Observed 9.
  // Of the 6 equally likely label arrangements, 2 give back this partition (statistic 9); the
  // other partitions give -4.5. So p -> 1/3 as the number of shuffles grows.
  std::vector<std::vector<double>> pts = {{0}, {1}, {10}, {12}};
  PermutationTestOptions o;
  o.permutations = 3000;
  o.seed = 11;
  auto r = same_category_permutation_test(pts, {0, 0, 1, 1}, o);
  CHECK(r.observed == Approx(9.0));
  CHECK(r.mean_same == Approx(-1.5));
  CHECK(r.mean_different == Approx(-10.5));
  CHECK(r.permutations == 3000);
  CHECK(r.p_value == Approx((1.0 + static_cast<double>(r.at_least_as_large)) / 3001));
  CHECK(r.p_value > 0.30);
  CHECK(r.p_value < 0.37);
  // Seeded: the same seed gives the same answer.
  CHECK(same_category_permutation_test(pts, {0, 0, 1, 1}, o).at_least_as_large == r.at_least_as_large);
  // No shuffles: p = 1/1.
  o.permutations = 0;
  CHECK(same_category_permutation_test(pts, {0, 0, 1, 1}, o).p_value == 1.0);
  // Every task in its own category: no same pair.
  CHECK_THROWS_AS(same_category_permutation_test(pts, {0, 1, 2, 3}, o), std::invalid_argument);
}

TEST_CASE("Permutation test: small p on planted structure, large p on uninformative labels", "[analysis]") {
  // 3 clusters of 6 route vectors; true labels = clusters.
  std::mt19937_64 rng(3);
  std::uniform_real_distribution<double> noise(0.0, 0.3);
  std::vector<std::vector<double>> pts;
  std::vector<int> labels;
  for (int c = 0; c < 3; ++c)
    for (int i = 0; i < 6; ++i) {
      std::vector<double> v(6);
      for (int k = 0; k < 6; ++k) v[k] = (k / 2 == c ? 1.0 : 0.0) + noise(rng);
      pts.push_back(v);
      labels.push_back(c);
    }
  PermutationTestOptions o;
  o.permutations = 999;
  o.seed = 5;
  for (Metric m : {Metric::kEuclidean, Metric::kCosine}) {
    o.metric = m;
    auto r = same_category_permutation_test(pts, labels, o);
    CHECK(r.observed > 0);
    CHECK(r.p_value == Approx(1.0 / 1000));  // no shuffle reaches the planted statistic
  }
  // Labels that cut across the clusters (each label holds 2 tasks of every cluster): only 3 of a
  // label's 15 pairs share a cluster (1/5) against 45 of all 153 pairs (0.29) -> the statistic
  // is below what shuffles give, p large.
  std::vector<int> across;
  for (int c = 0; c < 3; ++c)
    for (int i = 0; i < 6; ++i) across.push_back(i / 2);
  o.metric = Metric::kEuclidean;
  auto r = same_category_permutation_test(pts, across, o);
  CHECK(r.observed < 0);
  CHECK(r.p_value > 0.5);
  // Labels shuffled at random.
  std::vector<int> shuffled = labels;
  std::shuffle(shuffled.begin(), shuffled.end(), std::mt19937_64(2024));
  auto rs = same_category_permutation_test(pts, shuffled, o);
  INFO("p on shuffled labels = " << rs.p_value);
  CHECK(rs.p_value > 0.05);
}

// ---- Hungarian and alignment -----------------------------------------------------------------

TEST_CASE("Hungarian: recovers a planted permutation and matches brute force", "[analysis]") {
  // cost 0 on the planted permutation, >= 1 elsewhere.
  const std::vector<std::size_t> perm = {2, 0, 3, 1};
  std::vector<double> cost(16);
  for (std::size_t i = 0; i < 4; ++i)
    for (std::size_t j = 0; j < 4; ++j)
      cost[i * 4 + j] = j == perm[i] ? 0.0 : 1.0 + static_cast<double>(i + j);
  CHECK(hungarian_min_cost(cost, 4, 4) == perm);

  // Random 6x6 (and 4x6) against every assignment.
  std::mt19937_64 rng(99);
  std::uniform_real_distribution<double> u(-5, 5);
  for (int trial = 0; trial < 20; ++trial) {
    const std::size_t rows = trial % 2 == 0 ? 6 : 4, cols = 6;
    std::vector<double> c(rows * cols);
    for (double& v : c) v = u(rng);
    auto a = hungarian_min_cost(c, rows, cols);
    double got = 0;
    for (std::size_t i = 0; i < rows; ++i) got += c[i * cols + a[i]];
    std::vector<std::size_t> cols_used(a);
    std::sort(cols_used.begin(), cols_used.end());
    CHECK(std::adjacent_find(cols_used.begin(), cols_used.end()) == cols_used.end());
    std::vector<std::size_t> p(cols);
    std::iota(p.begin(), p.end(), std::size_t{0});
    double best = INFINITY;
    do {
      double s = 0;
      for (std::size_t i = 0; i < rows; ++i) s += c[i * cols + p[i]];
      best = std::min(best, s);
    } while (std::next_permutation(p.begin(), p.end()));
    CHECK(got == Approx(best).epsilon(1e-12));
  }
  CHECK_THROWS_AS(hungarian_min_cost({1, 2, 3, 4, 5, 6}, 3, 2), std::invalid_argument);
  CHECK_THROWS_AS(hungarian_min_cost({1, NAN, 3, 4}, 2, 2), std::invalid_argument);
}

TEST_CASE("Expert alignment: two runs that differ by renamed experts agree fully", "[analysis]") {
  // Similarity 0.9 on the planted matching, 0.1..0.4 elsewhere.
  const std::vector<std::size_t> perm = {1, 2, 0};
  std::vector<double> sim(9);
  for (std::size_t a = 0; a < 3; ++a)
    for (std::size_t b = 0; b < 3; ++b)
      sim[a * 3 + b] = b == perm[a] ? 0.9 : 0.1 + 0.1 * static_cast<double>(a + b);
  CHECK(align_experts(sim, 3) == perm);

  // Run B = run A with the experts of layer l renamed by perms[l] (B[perm[e]] = A[e]) and the
  // tasks listed in reverse order.
  RouteTable a = random_table(8, 2, 3, 1);
  const std::vector<std::vector<std::size_t>> perms = {{1, 2, 0}, {2, 1, 0}};
  RouteTable b = a;
  for (std::size_t t = 0; t < 8; ++t) {
    b.tasks[t] = a.tasks[7 - t];
    for (std::size_t l = 0; l < 2; ++l)
      for (std::size_t e = 0; e < 3; ++e) b.at(t, l, perms[l][e]) = a.at(7 - t, l, e);
  }
  // Aligning on route usage recovers the renaming.
  for (std::size_t l = 0; l < 2; ++l) CHECK(align_experts(expert_usage_similarity(a, b, l), 3) == perms[l]);
  auto aligned = route_agreement(a, b, perms);
  REQUIRE(aligned.size() == 2);
  for (const auto& g : aligned) {
    CHECK(g.argmax_agreement == 1.0);
    CHECK(g.mean_total_variation == Approx(0.0).margin(1e-15));
    CHECK(g.tasks == 8);
  }
  CHECK(aligned[1].layer == "L2");
  // Without alignment the routes disagree.
  auto raw = route_agreement(a, b, {});
  CHECK(raw[0].mean_total_variation > 0.05);
  CHECK(raw[0].permutation == std::vector<std::size_t>{0, 1, 2});

  // By hand: one task, A = [0.7, 0.2, 0.1], B = [0.1, 0.6, 0.3], identity: argmax 0 vs 1 ->
  // agreement 0; TV = (0.6 + 0.4 + 0.2)/2 = 0.6. With perm {1, 2, 0}: A[a] vs B[perm[a]] =
  // (0.7, 0.6), (0.2, 0.3), (0.1, 0.1) -> TV = (0.1 + 0.1 + 0)/2 = 0.1, argmax perm[0] = 1 = B's.
  RouteTable x = table({{{0.7, 0.2, 0.1}}}), y = table({{{0.1, 0.6, 0.3}}});
  auto id = route_agreement(x, y, {});
  CHECK(id[0].argmax_agreement == 0.0);
  CHECK(id[0].mean_total_variation == Approx(0.6));
  auto pm = route_agreement(x, y, {{1, 2, 0}});
  CHECK(pm[0].argmax_agreement == 1.0);
  CHECK(pm[0].mean_total_variation == Approx(0.1));
  CHECK_THROWS_AS(route_agreement(x, y, {{1, 1, 0}}), std::invalid_argument);
  CHECK_THROWS_AS(route_agreement(x, table({{{0.5, 0.5}}}), {}), std::invalid_argument);
}

// ---- PCA -------------------------------------------------------------------------------------

TEST_CASE("PCA: points on a line give its direction, axis-aligned variances", "[analysis]") {
  // x = c + t u, u = (1, 2, 2)/3, t = -2, -1, 0, 1, 3 (mean 0.2).
  // Variance of t with n-1: (2.2^2 + 1.2^2 + 0.2^2 + 0.8^2 + 2.8^2)/4 = 14.8/4 = 3.7.
  const std::vector<double> u = {1.0 / 3, 2.0 / 3, 2.0 / 3}, c = {1, -1, 0.5};
  const std::vector<double> ts = {-2, -1, 0, 1, 3};
  std::vector<std::vector<double>> pts;
  for (double t : ts) pts.push_back({c[0] + t * u[0], c[1] + t * u[1], c[2] + t * u[2]});
  PcaResult p = pca(pts, 2);
  // Sign convention: the largest coefficient (2/3, first at index 1) is positive -> +u.
  for (std::size_t j = 0; j < 3; ++j) CHECK(p.components[0][j] == Approx(u[j]).margin(1e-12));
  CHECK(p.explained_variance[0] == Approx(3.7));
  CHECK(p.explained_variance[1] == Approx(0.0).margin(1e-12));
  CHECK(p.explained_variance_ratio[0] == Approx(1.0));
  for (std::size_t i = 0; i < ts.size(); ++i) {
    CHECK(p.scores[i][0] == Approx(ts[i] - 0.2).margin(1e-12));
    CHECK(p.scores[i][1] == Approx(0.0).margin(1e-9));
  }
  double dot = 0, norm = 0;
  for (std::size_t j = 0; j < 3; ++j)
    dot += p.components[0][j] * p.components[1][j], norm += p.components[1][j] * p.components[1][j];
  CHECK(dot == Approx(0.0).margin(1e-9));
  CHECK(norm == Approx(1.0));

  // (+-2, 0), (0, +-1): variances 8/3 and 2/3 (n-1 = 3), ratios 0.8 and 0.2, axes as components.
  PcaResult q = pca({{2, 0}, {-2, 0}, {0, 1}, {0, -1}}, 2);
  CHECK(q.explained_variance[0] == Approx(8.0 / 3));
  CHECK(q.explained_variance[1] == Approx(2.0 / 3));
  CHECK(q.explained_variance_ratio[0] == Approx(0.8));
  CHECK(q.explained_variance_ratio[1] == Approx(0.2));
  CHECK(q.components[0][0] == Approx(1.0));
  CHECK(q.components[1][1] == Approx(1.0));
  CHECK(q.scores[0][0] == Approx(2.0));
  CHECK(q.scores[3][1] == Approx(-1.0));

  // Fewer points than dimensions (Gram-matrix path): a line in 5-D through 3 points.
  const double r3 = 1 / std::sqrt(3.0);
  const std::vector<double> w = {r3, 0, -r3, 0, r3};
  std::vector<std::vector<double>> few;
  for (double t : {-1.0, 0.5, 2.0}) {
    std::vector<double> v(5);
    for (std::size_t j = 0; j < 5; ++j) v[j] = 0.1 * static_cast<double>(j) + t * w[j];
    few.push_back(v);
  }
  PcaResult g = pca(few, 2);
  for (std::size_t j = 0; j < 5; ++j) CHECK(g.components[0][j] == Approx(w[j]).margin(1e-12));
  CHECK(g.scores[0][0] == Approx(-1.5));  // t - mean(t) = -1 - 0.5
  CHECK(g.explained_variance[0] == Approx((2.25 + 0 + 2.25) / 2));
  CHECK(g.explained_variance[1] == Approx(0.0).margin(1e-12));
  double gdot = 0;
  for (std::size_t j = 0; j < 5; ++j) gdot += g.components[0][j] * g.components[1][j];
  CHECK(gdot == Approx(0.0).margin(1e-9));

  CHECK_THROWS_AS(pca({{1, 2}}, 1), std::invalid_argument);
  CHECK_THROWS_AS(pca({{1, 2}, {3, 4}}, 3), std::invalid_argument);
}

TEST_CASE("Symmetric eigen-decomposition: 2x2 by hand and a random matrix", "[analysis]") {
  // [[2, 1], [1, 2]]: eigenvalues 3 and 1, eigenvectors (1, 1)/sqrt2 and (1, -1)/sqrt2.
  SymmetricEigen e = symmetric_eigen({2, 1, 1, 2}, 2);
  CHECK(e.values[0] == Approx(3.0));
  CHECK(e.values[1] == Approx(1.0));
  CHECK(std::abs(e.vectors[0][0] + e.vectors[0][1]) / std::sqrt(2.0) == Approx(1.0));
  // Random symmetric 6x6: A v = lambda v, orthonormal vectors, decreasing values.
  std::mt19937_64 rng(4);
  std::uniform_real_distribution<double> u(-1, 1);
  const std::size_t n = 6;
  std::vector<double> a(n * n);
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t j = i; j < n; ++j) a[i * n + j] = a[j * n + i] = u(rng);
  SymmetricEigen r = symmetric_eigen(a, n);
  for (std::size_t k = 0; k < n; ++k) {
    if (k > 0) CHECK(r.values[k] <= r.values[k - 1]);
    for (std::size_t i = 0; i < n; ++i) {
      double av = 0;
      for (std::size_t j = 0; j < n; ++j) av += a[i * n + j] * r.vectors[k][j];
      CHECK(av == Approx(r.values[k] * r.vectors[k][i]).margin(1e-10));
    }
    for (std::size_t m = 0; m < n; ++m) {
      double d = 0;
      for (std::size_t i = 0; i < n; ++i) d += r.vectors[k][i] * r.vectors[m][i];
      CHECK(d == Approx(k == m ? 1.0 : 0.0).margin(1e-10));
    }
  }
}

// ---- entropy and dynamics --------------------------------------------------------------------

TEST_CASE("Route entropy and route changes between snapshots", "[analysis]") {
  const double uniform[3] = {1.0 / 3, 1.0 / 3, 1.0 / 3}, onehot[3] = {0, 1, 0}, half[3] = {0.5, 0.5, 0};
  CHECK(entropy(uniform, 3) == Approx(std::log(3.0)));
  CHECK(entropy(onehot, 3) == 0.0);
  CHECK(entropy(half, 3) == Approx(std::log(2.0)));

  // Task t0: uniform in L1, one-hot in L2 -> mean ln3 / 2; t1: [0.5, 0.5, 0] in both -> ln 2.
  RouteTable s0 = table({{{1.0 / 3, 1.0 / 3, 1.0 / 3}, {0, 1, 0}}, {{0.5, 0.5, 0}, {0.5, 0.5, 0}}});
  auto h = route_entropy(s0);
  REQUIRE(h.size() == 4);
  CHECK(h[0] == Approx(std::log(3.0)));
  CHECK(h[1] == 0.0);
  auto mh = mean_route_entropy(s0);
  CHECK(mh[0] == Approx(std::log(3.0) / 2));
  CHECK(mh[1] == Approx(std::log(2.0)));

  // Later snapshot, tasks listed in the other order: t0 hard (0, 1) -> (2, 1): 1 change;
  // t1 hard (0, 0) -> (1, 1): 2 changes.
  RouteTable s1 =
      table({{{0.1, 0.8, 0.1}, {0.2, 0.7, 0.1}}, {{0.1, 0.1, 0.8}, {0.0, 1.0, 0.0}}}, {"t1", "t0"});
  CHECK(route_changes(s0, s1) == std::vector<std::int64_t>{2, 1});  // s1's order: t1, t0
  CHECK(route_changes(s0, s0) == std::vector<std::int64_t>{0, 0});
  CHECK_THROWS_AS(route_changes(s0, table({{{1.0, 0.0, 0.0}, {1.0, 0.0, 0.0}}}, {"t9"})),
                  std::invalid_argument);

  RouteDynamics d = route_dynamics({s0, s1, s1}, {100, 200, 300});
  CHECK(d.steps == std::vector<std::int64_t>{100, 200, 300});
  CHECK(d.tasks == std::vector<std::string>{"t0", "t1"});
  CHECK(d.changes[0] == std::vector<std::int64_t>{0, 0});
  CHECK(d.changes[1] == std::vector<std::int64_t>{1, 2});  // in the first snapshot's task order
  CHECK(d.changes[2] == std::vector<std::int64_t>{0, 0});
  CHECK(d.total_changes == std::vector<std::int64_t>{0, 3, 0});
  CHECK(d.entropy[0][1] == Approx(std::log(2.0)));
  // t1 at step 300: layer 1 [0.1, 0.8, 0.1] -> 0.2 ln 10 + 0.8 ln 1.25;
  // layer 2 [0.2, 0.7, 0.1] -> 0.2 ln 5 + 0.7 ln(10/7) + 0.1 ln 10.
  CHECK(d.entropy[2][1] == Approx((0.2 * std::log(10.0) + 0.8 * std::log(1.25) + 0.2 * std::log(5.0) +
                                   0.7 * std::log(10.0 / 7) + 0.1 * std::log(10.0)) /
                                  2));
  CHECK_THROWS_AS(route_dynamics({s0}, {1, 2}), std::invalid_argument);
}
