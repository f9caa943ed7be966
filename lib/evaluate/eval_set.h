// Evaluation sets: one file of one task, read from the preprocess manifest, with token ids for
// the model (its token cache) and every gold answer for the metric (its TSV).
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "data/batching.h"

namespace tlmoe::evaluate {

// One file of one task, ready to be decoded and scored.
struct EvalSet {
  std::string task;
  std::string metric;
  std::string source;                            // the TSV file
  std::vector<data::Example> examples;           // token ids (task_id set by the caller)
  std::vector<std::vector<std::string>> golds;   // every gold answer, from the TSV
};

// The preprocess manifest's entry `file` (kind, split, cache, source) of `task`: tokens from its
// cache, golds from its TSV. max_examples > 0 keeps the first N. DataError when the cache and
// the TSV disagree on the number of examples (the cache is stale: run preprocess). first > 0 skips
// the file's first examples (a held-out tail of a training file). Token ids must be below
// vocab_size (the manifest's tokenizer vocab_size), else DataError naming the cache.
EvalSet load_eval_set(const std::filesystem::path& cache_dir, const nlohmann::json& file, const std::string& task,
                      int64_t task_id, const std::string& metric, int64_t vocab_size, int64_t max_examples = 0,
                      int64_t first = 0);

}  // namespace tlmoe::evaluate
