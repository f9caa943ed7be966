// How varied a model's predictions are, next to how varied the gold answers are (docs/train.md,
// "Training health"): a model that gives one answer to most inputs of a task whose gold answers
// differ has collapsed, whatever its metric says.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "metrics/metrics.h"

namespace tlmoe::metrics {

struct Spread {
  std::size_t examples = 0;
  std::size_t distinct = 0;        // distinct predictions (after Python's strip())
  double top_share = 0;            // share of the examples that got the most frequent prediction
  std::string top_prediction;      // that prediction (the lexicographically first one on a tie)
  double gold_top_share = 0;       // the same share for the first gold answer of each example
  bool collapsed = false;          // see prediction_spread
};

// Predictions against the golds of the same examples. collapsed is true when top_share exceeds
// `threshold` while gold_top_share does not, and there are at least `min_examples` examples (a
// task whose gold answers are one answer for most inputs cannot collapse). Throws
// std::invalid_argument when the sizes differ.
Spread prediction_spread(const std::vector<std::string>& predictions, const Golds& golds, double threshold,
                         std::size_t min_examples = 5);

}  // namespace tlmoe::metrics
