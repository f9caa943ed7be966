#include "metrics/spread.h"

#include <map>
#include <stdexcept>

namespace tlmoe::metrics {

namespace {

struct Top {
  std::size_t distinct = 0, count = 0;
  std::string value;
};

Top most_frequent(const std::vector<std::string>& values) {
  std::map<std::string, std::size_t> counts;
  for (const auto& v : values) ++counts[v];
  Top t;
  t.distinct = counts.size();
  for (const auto& [v, c] : counts)  // map order: the first of equal counts wins
    if (c > t.count) t.count = c, t.value = v;
  return t;
}

}  // namespace

Spread prediction_spread(const std::vector<std::string>& predictions, const Golds& golds, double threshold,
                         std::size_t min_examples) {
  if (predictions.size() != golds.size())
    throw std::invalid_argument("prediction_spread: " + std::to_string(predictions.size()) + " predictions for " +
                                std::to_string(golds.size()) + " examples");
  Spread s;
  s.examples = predictions.size();
  if (s.examples == 0) return s;
  std::vector<std::string> preds, first_golds;
  for (const auto& p : predictions) preds.push_back(py_strip(p));
  for (const auto& g : golds) first_golds.push_back(g.empty() ? std::string() : py_strip(g.front()));
  const Top p = most_frequent(preds), g = most_frequent(first_golds);
  const auto n = static_cast<double>(s.examples);
  s.distinct = p.distinct;
  s.top_share = static_cast<double>(p.count) / n;
  s.top_prediction = p.value;
  s.gold_top_share = static_cast<double>(g.count) / n;
  s.collapsed = s.examples >= min_examples && s.top_share > threshold && s.gold_top_share <= threshold;
  return s;
}

}  // namespace tlmoe::metrics
