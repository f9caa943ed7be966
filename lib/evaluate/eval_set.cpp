#include "evaluate/eval_set.h"

#include <algorithm>

#include "common/error.h"
#include "data/token_cache.h"
#include "data/tsv.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace tlmoe::evaluate {

EvalSet load_eval_set(const fs::path& cache_dir, const json& file, const std::string& task, int64_t task_id,
                      const std::string& metric, int64_t vocab_size, int64_t max_examples, int64_t first) {
  EvalSet s;
  s.task = task;
  s.metric = metric;
  s.source = file.at("source").get<std::string>();
  const fs::path cache = cache_dir / file.at("cache").get<std::string>();
  data::TokenCache c = data::read_token_cache(cache, vocab_size);
  std::vector<data::TsvExample> rows = data::read_tsv(s.source);
  if (rows.size() != c.examples.size())
    throw DataError(cache.string(), 0,
                    "token cache has " + std::to_string(c.examples.size()) + " examples but " + s.source + " has " +
                        std::to_string(rows.size()) + "; run `tlmoe preprocess` to rebuild it");
  const size_t begin = std::min(rows.size(), static_cast<size_t>(std::max<int64_t>(first, 0)));
  size_t n = rows.size();
  if (max_examples > 0) n = std::min(n, begin + static_cast<size_t>(max_examples));
  for (size_t i = begin; i < n; ++i) {
    data::Example x;
    x.task_id = task_id;
    x.input = std::move(c.examples[i].input_ids);
    x.outputs = std::move(c.examples[i].output_ids);
    s.examples.push_back(std::move(x));
    s.golds.push_back(std::move(rows[i].outputs));
  }
  return s;
}

}  // namespace tlmoe::evaluate
