// Route tables: for each task and each routed layer, the distribution over the experts (docs/method.md §12),
// and the category labels the routing analysis relates them to. Plain C++ (no LibTorch): the
// statistics (stats.h) and figures (plot.h) work on these, so they are testable without a model.
//
// Layout: probs[(t * L + l) * E + e] is the weight of expert e in layer l for task t    [n,L,E]
// (n tasks, L routed layers, E experts). The "route vector" of a task is its [L*E] slice.
#pragma once

#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace tlmoe::analysis {

struct RouteTable {
  std::vector<std::string> tasks;        // n, unique
  std::vector<std::string> layer_names;  // L, e.g. "enc1".."enc6","dec1".."dec6" (layer_names())
  std::int64_t experts = 0;              // E
  std::vector<double> probs;             // [n,L,E] row-major

  std::size_t num_tasks() const { return tasks.size(); }
  std::size_t num_layers() const { return layer_names.size(); }
  std::size_t num_experts() const { return static_cast<std::size_t>(experts); }

  // Unchecked element access and the E weights of (task, layer).
  double at(std::size_t task, std::size_t layer, std::size_t expert) const {
    return probs[(task * num_layers() + layer) * num_experts() + expert];
  }
  double& at(std::size_t task, std::size_t layer, std::size_t expert) {
    return probs[(task * num_layers() + layer) * num_experts() + expert];
  }
  const double* row(std::size_t task, std::size_t layer) const {
    return probs.data() + (task * num_layers() + layer) * num_experts();
  }

  // The hard choice: the expert with the largest weight (the first one on ties, like argmax).
  std::size_t hard(std::size_t task, std::size_t layer) const;

  // The route vector of a task, [L*E], and all of them, [n][L*E].
  std::vector<double> task_vector(std::size_t task) const;
  std::vector<std::vector<double>> task_vectors() const;

  // The index of a task, or -1.
  std::ptrdiff_t index_of(std::string_view task) const;

  // Throws std::invalid_argument naming the first problem: E < 1, no layer, probs.size() != n*L*E,
  // a duplicate task, a weight that is not finite or outside [0, 1] (1e-9 slack), a (task, layer)
  // row whose sum differs from 1 by more than `sum_tolerance`.
  void validate(double sum_tolerance = 1e-3) const;
};

// "enc1".."enc{encoder_layers}", then "dec1".."dec{layers - encoder_layers}" (the order of the
// router's L axis). Throws std::invalid_argument unless 0 <= encoder_layers <= layers.
std::vector<std::string> layer_names(std::int64_t encoder_layers, std::int64_t layers);

// Reads the route data tlmoe train writes at every evaluation (RUN/routes/step_NNNNNNN.json):
//   { "tasks": [n], "layers": L, "encoder_layers": M, "experts": E,
//     "routes": [n][L][E], "routes_t1": [n][L][E] (router models only), "hard": [n][L], ... }
// or what route_table_to_json writes ("layer_names" instead of "layers"/"encoder_layers").
// `key` chooses the array ("routes" at the run's temperature, "routes_t1" at tau = 1). Every
// problem (missing key, wrong shape, invalid table) is DataError(source, 0, ...).
RouteTable route_table_from_json(const nlohmann::ordered_json& j, std::string_view key,
                                 const std::string& source);
RouteTable read_route_table(const std::filesystem::path& path, std::string_view key = "routes");

// { "tasks", "layer_names", "experts", "routes": [n][L][E], "hard": [n][L] }: readable back by
// route_table_from_json.
nlohmann::ordered_json route_table_to_json(const RouteTable& t);

// One line per (task, layer): "task,layer,hard,e1,...,eE" with a header line; weights in the
// shortest form that reads back exactly; fields quoted as RFC 4180 when needed.
std::string route_table_csv(const RouteTable& t);

// The tasks `order[i]` of `t`, in that order (a permutation or a subset). Throws
// std::out_of_range for an index >= n.
RouteTable select_tasks(const RouteTable& t, const std::vector<std::size_t>& order);

// Categorical labels as dense ids: names in order of first appearance, ids[i] indexes names.
struct Labeling {
  std::vector<std::string> names;
  std::vector<int> ids;
  std::size_t num_classes() const { return names.size(); }
};
Labeling encode_labels(const std::vector<std::string>& labels);

// The task order of the figures (docs/method.md §12): by top category, then sub-category, then task name,
// all compared as strings; tasks with an empty top category come last. top and sub are per task
// (sub may be empty: no sub-category). Returns indices into `tasks` (for select_tasks). With the
// reference ontology, whose categories are in alphabetical order in the file, this is the
// reference's order.
std::vector<std::size_t> ontology_order(const std::vector<std::string>& tasks,
                                        const std::vector<std::string>& top,
                                        const std::vector<std::string>& sub);

}  // namespace tlmoe::analysis
