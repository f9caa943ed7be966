#include "metrics/health.h"

#include <cmath>
#include <fstream>
#include <iterator>
#include <iomanip>
#include <map>
#include <sstream>

#include "common/error.h"
#include "io/atomic_file.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace tlmoe::metrics {

namespace {

bool finite_number(const json& j, const char* key) {
  return j.contains(key) && j.at(key).is_number() && std::isfinite(j.at(key).get<double>());
}

std::string fixed(double v, int digits = 4) {
  std::ostringstream s;
  s << std::fixed << std::setprecision(digits) << v;
  return s.str();
}

std::vector<std::string> collapsed_of(const json& line) {
  std::vector<std::string> out;
  if (line.contains("collapsed_tasks") && line.at("collapsed_tasks").is_array())
    for (const auto& t : line.at("collapsed_tasks")) out.push_back(t.get<std::string>());
  return out;
}

// Best value (and its step) over the evaluations with from < step <= to.
struct Best {
  double value = NAN;
  int64_t step = -1;
};

Best best_between(const std::vector<json>& evals, const char* key, bool higher, int64_t from, int64_t to) {
  Best b;
  for (const auto& e : evals) {
    const int64_t s = e.at("step").get<int64_t>();
    if (s <= from || s > to || !finite_number(e, key)) continue;
    const double v = e.at(key).get<double>();
    if (b.step < 0 || (higher ? v > b.value : v < b.value)) b.value = v, b.step = s;
  }
  return b;
}

std::string task_list(const std::vector<std::string>& tasks, size_t show = 6) {
  std::string s;
  for (size_t i = 0; i < tasks.size() && i < show; ++i) s += (i ? ", " : "") + tasks[i];
  if (tasks.size() > show) s += ", … (" + std::to_string(tasks.size() - show) + " more)";
  return s;
}

void assess_trend(const std::vector<json>& evals, const HealthOptions& o, json& h) {
  const bool by_score = h.at("metric") == "dev score";
  const char* key = by_score ? "dev_score" : "dev_loss";
  const int64_t last = evals.back().at("step").get<int64_t>();
  const int64_t end = std::max(o.final_step, last), half = end / 2;
  const Best early = best_between(evals, key, by_score, -1, half), late = best_between(evals, key, by_score, half, end);
  const Best all = best_between(evals, key, by_score, -1, end);
  h["best_step"] = all.step >= 0 ? json(all.step) : json(nullptr);
  if (evals.size() < 3 || early.step < 0 || late.step < 0) {
    h["converged"] = nullptr;
    h["messages"].push_back("convergence unknown: " + std::to_string(evals.size()) +
                            " dev evaluation(s), at least 3 with one in each half of training are needed "
                            "(set train.eval_every to a quarter of train.steps or less)");
    return;
  }
  // improvement of the last half over the first, relative to the first half's best
  const double gain = by_score ? late.value - early.value : early.value - late.value;
  const double change = gain / std::max(std::abs(early.value), 1e-12);
  h["trend"] = {{"first_half_best", early.value}, {"first_half_step", early.step}, {"last_half_best", late.value},
                {"last_half_step", late.step}, {"change", change}};
  h["converged"] = change < o.plateau_tolerance;
  std::string line = std::string(by_score ? "dev score " : "dev loss ") + fixed(early.value) + " (best of the first half, step " +
                     std::to_string(early.step) + ") -> " + fixed(late.value) + " (last half, step " +
                     std::to_string(late.step) + "): " + (change >= 0 ? "+" : "") + fixed(100 * change, 1) + "% ";
  if (change < o.plateau_tolerance)
    line += "- a plateau (under " + fixed(100 * o.plateau_tolerance, 1) + "%): converged";
  else
    line += "- still improving: NOT converged (train longer, or raise train.lr / lower warm-up)";
  h["messages"].push_back(line);
}

}  // namespace

std::vector<json> read_dev_evaluations(const fs::path& metrics_jsonl) {
  std::ifstream in(metrics_jsonl);
  if (!in) return {};
  std::map<int64_t, json> by_step;
  std::string text;
  for (size_t line = 1; std::getline(in, text); ++line) {
    if (text.empty()) continue;
    json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object())
      throw DataError(metrics_jsonl.string(), line, "not a JSON object");
    if (!j.contains("dev_loss") || !j.contains("step") || !j.at("step").is_number_integer()) continue;
    const int64_t step = j.at("step").get<int64_t>();
    by_step[step] = std::move(j);
  }
  std::vector<json> out;
  for (auto& [s, j] : by_step) out.push_back(std::move(j));
  return out;
}

std::size_t truncate_metrics_log(const fs::path& metrics_jsonl, std::int64_t step) {
  std::ifstream in(metrics_jsonl, std::ios::binary);
  if (!in) return 0;
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::string kept;
  std::size_t dropped = 0;
  for (std::size_t pos = 0; pos < text.size();) {
    const std::size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) {  // a torn last line: the process died while writing it
      ++dropped;
      break;
    }
    const std::string line = text.substr(pos, nl - pos);
    pos = nl + 1;
    if (line.empty()) continue;
    const json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
    const bool keep = !j.is_discarded() && j.is_object() && j.contains("step") && j.at("step").is_number_integer() &&
                      j.at("step").get<std::int64_t>() <= step;
    if (keep) kept += line + "\n";
    else ++dropped;
  }
  if (dropped > 0) io::write_file_atomic(metrics_jsonl, kept);
  return dropped;
}

json assess_health(const std::vector<json>& evals, const HealthOptions& o) {
  json h = {{"evaluations", evals.size()}, {"messages", json::array()}, {"plateau_tolerance", o.plateau_tolerance}};
  bool any_score = false, any_loss = false;
  for (const auto& e : evals) any_score |= finite_number(e, "dev_score"), any_loss |= finite_number(e, "dev_loss");
  h["metric"] = (o.by_loss && any_loss) || (!any_score && any_loss) ? "dev loss" : "dev score";
  h["collapsed_last"] = evals.empty() ? std::vector<std::string>{} : collapsed_of(evals.back());
  h["collapsed_best"] = h["collapsed_last"];
  if (evals.empty() || (!any_score && !any_loss)) {
    h["converged"] = nullptr;
    h["best_step"] = nullptr;
    h["messages"].push_back(evals.empty() ? "no dev evaluation was run"
                                          : "no finite dev score or dev loss: the dev sets are empty");
  } else {
    assess_trend(evals, o, h);
    for (const auto& e : evals)
      if (h["best_step"].is_number() && e.at("step") == h["best_step"]) h["collapsed_best"] = collapsed_of(e);
  }
  const auto& cb = h["collapsed_best"];
  if (!cb.empty()) {
    const auto tasks = cb.get<std::vector<std::string>>();
    h["messages"].push_back("predictions collapsed at the best step on " + std::to_string(tasks.size()) +
                            " dev task(s): " + task_list(tasks) +
                            " (one answer for most inputs where the gold answers differ)");
  }
  if (!cb.empty()) h["verdict"] = "collapsed";
  else if (h["converged"].is_null()) h["verdict"] = "unknown";
  else h["verdict"] = h["converged"].get<bool>() ? "ok" : "not converged";
  return h;
}

json checkpoint_health(const fs::path& given) {
  const fs::path checkpoint_dir = given.has_filename() ? given : given.parent_path();  // "run/best/" too
  json meta_health;
  std::ifstream m(checkpoint_dir / "meta.json");
  if (m) {
    json meta = json::parse(m, nullptr, /*allow_exceptions=*/false);
    if (meta.is_object() && meta.contains("health") && meta["health"].is_object()) meta_health = meta["health"];
  }
  json run;
  std::ifstream r(checkpoint_dir.parent_path() / "health.json");
  if (r) run = json::parse(r, nullptr, /*allow_exceptions=*/false);
  if (!run.is_object()) run = nullptr;
  if (run.is_null() && meta_health.is_null()) return nullptr;
  json h = run.is_null() ? meta_health : run;
  // collapse is a property of these weights: the evaluation the checkpoint was saved after
  h["collapsed"] = !meta_health.is_null() ? meta_health.value("collapsed_last", json::array())
                                          : run.value("collapsed_best", json::array());
  h["source"] = run.is_null() ? (checkpoint_dir / "meta.json").string() : (checkpoint_dir.parent_path() / "health.json").string();
  return h;
}

std::vector<std::string> health_warnings(const json& health) {
  std::vector<std::string> out;
  if (!health.is_object()) return out;
  if (health.value("converged", json(nullptr)) == json(false)) {
    std::string why;
    if (health.contains("trend")) {
      const json& t = health["trend"];
      why = ": its " + health.value("metric", std::string("dev score")) + " still changed by " +
            fixed(100 * t.value("change", 0.0), 1) + "% in the last half of training";
    }
    out.push_back("upstream model not converged" + why);
  }
  if (health.contains("collapsed") && health["collapsed"].is_array() && !health["collapsed"].empty()) {
    const auto tasks = health["collapsed"].get<std::vector<std::string>>();
    out.push_back("upstream model collapsed on " + std::to_string(tasks.size()) +
                  " dev task(s) (one answer for most inputs): " + task_list(tasks));
  }
  return out;
}

json report_upstream_health(const std::string& checkpoint, std::ostream& log) {
  if (checkpoint.empty() || checkpoint.rfind("hf:", 0) == 0) return nullptr;
  const json h = checkpoint_health(checkpoint);
  if (h.is_null()) return nullptr;
  const auto warnings = health_warnings(h);
  for (const auto& w : warnings) log << "warning: " << w << " (" << h.value("source", std::string()) << ")\n";
  return {{"verdict", h.value("verdict", json(nullptr))}, {"converged", h.value("converged", json(nullptr))},
          {"collapsed", h.value("collapsed", json::array())}, {"warnings", warnings},
          {"source", h.value("source", json(nullptr))}};
}

}  // namespace tlmoe::metrics
