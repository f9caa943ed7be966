#include "analysis/route_table.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <map>
#include <numeric>
#include <set>
#include <stdexcept>
#include <tuple>

#include "common/error.h"
#include "common/strings.h"
#include "data/task_meta.h"

namespace tlmoe::analysis {

namespace {

using ojson = nlohmann::ordered_json;

// The shortest text that reads back as exactly `v`.
std::string number_text(double v) {
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

// Six significant digits, for messages.
std::string short_number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

}  // namespace

std::size_t RouteTable::hard(std::size_t task, std::size_t layer) const {
  const double* p = row(task, layer);
  return static_cast<std::size_t>(std::max_element(p, p + num_experts()) - p);
}

std::vector<double> RouteTable::task_vector(std::size_t task) const {
  const std::size_t d = num_layers() * num_experts();
  return std::vector<double>(probs.begin() + static_cast<std::ptrdiff_t>(task * d),
                             probs.begin() + static_cast<std::ptrdiff_t>((task + 1) * d));
}

std::vector<std::vector<double>> RouteTable::task_vectors() const {
  std::vector<std::vector<double>> v;
  v.reserve(num_tasks());
  for (std::size_t t = 0; t < num_tasks(); ++t) v.push_back(task_vector(t));
  return v;
}

std::ptrdiff_t RouteTable::index_of(std::string_view task) const {
  auto it = std::find(tasks.begin(), tasks.end(), task);
  return it == tasks.end() ? -1 : it - tasks.begin();
}

void RouteTable::validate(double sum_tolerance) const {
  if (experts < 1)
    throw std::invalid_argument("route table: experts = " + std::to_string(experts) + " (need >= 1)");
  if (layer_names.empty()) throw std::invalid_argument("route table: no routed layer");
  const std::size_t want = num_tasks() * num_layers() * num_experts();
  if (probs.size() != want)
    throw std::invalid_argument("route table: " + std::to_string(probs.size()) + " weights for " +
                                std::to_string(num_tasks()) + " tasks x " + std::to_string(num_layers()) +
                                " layers x " + std::to_string(experts) + " experts (want " +
                                std::to_string(want) + ")");
  std::set<std::string> seen;
  for (const auto& t : tasks)
    if (!seen.insert(t).second) throw std::invalid_argument("route table: task '" + t + "' appears twice");
  for (std::size_t t = 0; t < num_tasks(); ++t)
    for (std::size_t l = 0; l < num_layers(); ++l) {
      double sum = 0;
      for (std::size_t e = 0; e < num_experts(); ++e) {
        double v = at(t, l, e);
        if (!std::isfinite(v) || v < -1e-9 || v > 1 + 1e-9)
          throw std::invalid_argument("route table: task '" + tasks[t] + "', layer " + layer_names[l] +
                                      ", expert " + std::to_string(e) + ": weight " + short_number(v) +
                                      " is not in [0, 1]");
        sum += v;
      }
      if (std::abs(sum - 1) > sum_tolerance)
        throw std::invalid_argument("route table: task '" + tasks[t] + "', layer " + layer_names[l] +
                                    ": weights sum to " + short_number(sum) + ", not 1");
    }
}

std::vector<std::string> layer_names(std::int64_t encoder_layers, std::int64_t layers) {
  if (encoder_layers < 0 || encoder_layers > layers)
    throw std::invalid_argument("layer_names: encoder_layers = " + std::to_string(encoder_layers) +
                                " not in [0, layers = " + std::to_string(layers) + "]");
  std::vector<std::string> names;
  for (std::int64_t l = 0; l < encoder_layers; ++l) names.push_back("enc" + std::to_string(l + 1));
  for (std::int64_t l = 0; l < layers - encoder_layers; ++l) names.push_back("dec" + std::to_string(l + 1));
  return names;
}

RouteTable route_table_from_json(const ojson& j, std::string_view key, const std::string& source) {
  auto fail = [&](const std::string& msg) -> DataError { return DataError(source, 0, msg); };
  if (!j.is_object()) throw fail("route data must be a JSON object, found " + std::string(j.type_name()));
  const std::string k(key);
  for (const char* need : {"tasks", "experts"})
    if (!j.contains(need)) throw fail(std::string("missing key '") + need + "'");
  if (!j.contains(k)) throw fail("missing key '" + k + "' (this run has no such routes)");
  RouteTable t;
  try {
    t.tasks = j.at("tasks").get<std::vector<std::string>>();
    t.experts = j.at("experts").get<std::int64_t>();
    if (j.contains("layer_names")) {
      t.layer_names = j.at("layer_names").get<std::vector<std::string>>();
    } else {
      if (!j.contains("layers") || !j.contains("encoder_layers"))
        throw fail("missing key 'layer_names' (or 'layers' and 'encoder_layers')");
      t.layer_names =
          layer_names(j.at("encoder_layers").get<std::int64_t>(), j.at("layers").get<std::int64_t>());
    }
  } catch (const nlohmann::json::exception& e) {
    throw fail(std::string("bad header field: ") + e.what());
  } catch (const std::invalid_argument& e) {
    throw fail(e.what());
  }
  const ojson& r = j.at(k);
  const std::size_t n = t.num_tasks(), L = t.num_layers();
  if (!r.is_array() || r.size() != n)
    throw fail("'" + k + "' must be a list of " + std::to_string(n) + " tasks, found " +
               (r.is_array() ? std::to_string(r.size()) + " entries" : std::string(r.type_name())));
  t.probs.reserve(n * L * t.num_experts());
  for (std::size_t ti = 0; ti < n; ++ti) {
    const ojson& layers = r[ti];
    if (!layers.is_array() || layers.size() != L)
      throw fail("'" + k + "' of task '" + t.tasks[ti] + "' must list " + std::to_string(L) + " layers");
    for (std::size_t l = 0; l < L; ++l) {
      const ojson& w = layers[l];
      if (!w.is_array() || w.size() != t.num_experts())
        throw fail("'" + k + "' of task '" + t.tasks[ti] + "', layer " + t.layer_names[l] + " must list " +
                   std::to_string(t.experts) + " expert weights");
      for (const auto& v : w) {
        if (!v.is_number()) throw fail("'" + k + "' of task '" + t.tasks[ti] + "': non-numeric weight");
        t.probs.push_back(v.get<double>());
      }
    }
  }
  try {
    t.validate();
  } catch (const std::invalid_argument& e) {
    throw fail(e.what());
  }
  return t;
}

RouteTable read_route_table(const std::filesystem::path& path, std::string_view key) {
  return route_table_from_json(data::read_json_file(path), key, path.string());
}

ojson route_table_to_json(const RouteTable& t) {
  ojson j;
  j["tasks"] = t.tasks;
  j["layer_names"] = t.layer_names;
  j["experts"] = t.experts;
  ojson routes = ojson::array(), hard = ojson::array();
  for (std::size_t ti = 0; ti < t.num_tasks(); ++ti) {
    ojson layers = ojson::array(), h = ojson::array();
    for (std::size_t l = 0; l < t.num_layers(); ++l) {
      layers.push_back(std::vector<double>(t.row(ti, l), t.row(ti, l) + t.num_experts()));
      h.push_back(t.hard(ti, l));
    }
    routes.push_back(std::move(layers));
    hard.push_back(std::move(h));
  }
  j["routes"] = std::move(routes);
  j["hard"] = std::move(hard);
  return j;
}

std::string route_table_csv(const RouteTable& t) {
  std::string out = "task,layer,hard";
  for (std::size_t e = 0; e < t.num_experts(); ++e) out.append(",e").append(std::to_string(e + 1));
  out += "\n";
  for (std::size_t ti = 0; ti < t.num_tasks(); ++ti)
    for (std::size_t l = 0; l < t.num_layers(); ++l) {
      out.append(csv_field(t.tasks[ti])).append(",").append(csv_field(t.layer_names[l])).append(",");
      out.append(std::to_string(t.hard(ti, l) + 1));
      for (std::size_t e = 0; e < t.num_experts(); ++e) out.append(",").append(number_text(t.at(ti, l, e)));
      out += '\n';
    }
  return out;
}

RouteTable select_tasks(const RouteTable& t, const std::vector<std::size_t>& order) {
  RouteTable s;
  s.layer_names = t.layer_names;
  s.experts = t.experts;
  const std::size_t d = t.num_layers() * t.num_experts();
  s.probs.reserve(order.size() * d);
  for (std::size_t i : order) {
    if (i >= t.num_tasks())
      throw std::out_of_range("select_tasks: index " + std::to_string(i) +
                              " >= " + std::to_string(t.num_tasks()) + " tasks");
    s.tasks.push_back(t.tasks[i]);
    s.probs.insert(s.probs.end(), t.probs.begin() + static_cast<std::ptrdiff_t>(i * d),
                   t.probs.begin() + static_cast<std::ptrdiff_t>((i + 1) * d));
  }
  return s;
}

Labeling encode_labels(const std::vector<std::string>& labels) {
  Labeling out;
  std::map<std::string, int> id;
  out.ids.reserve(labels.size());
  for (const auto& s : labels) {
    auto [it, fresh] = id.emplace(s, static_cast<int>(out.names.size()));
    if (fresh) out.names.push_back(s);
    out.ids.push_back(it->second);
  }
  return out;
}

std::vector<std::size_t> ontology_order(const std::vector<std::string>& tasks,
                                        const std::vector<std::string>& top,
                                        const std::vector<std::string>& sub) {
  if (top.size() != tasks.size() || (!sub.empty() && sub.size() != tasks.size()))
    throw std::invalid_argument("ontology_order: " + std::to_string(tasks.size()) + " tasks but " +
                                std::to_string(top.size()) + " top and " + std::to_string(sub.size()) +
                                " sub categories");
  std::vector<std::size_t> order(tasks.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  static const std::string kNone;
  auto key = [&](std::size_t i) {
    return std::tuple<bool, const std::string&, const std::string&, const std::string&>(
        top[i].empty(), top[i], sub.empty() ? kNone : sub[i], tasks[i]);
  };
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return key(a) < key(b); });
  return order;
}

}  // namespace tlmoe::analysis
