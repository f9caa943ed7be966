// `tlmoe preprocess`: the tokenizer and the token caches of a dataset, rebuilding only what
// changed. Output under cache_dir(cfg):
//   tokenizer/spm.model      trained SentencePiece model (when tokenizer.model is empty)
//   tokenizer/spm.json       what it was trained from (options, hash of the training files)
//   tokens/{task}/{stem}.tok one token cache per TSV file (token_cache.h)
//   manifest.json            tokenizer, options, and every cache with its counts
// What is rebuilt when, and every format: docs/data.md.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <ostream>
#include <string>
#include <vector>

#include "config/config.h"
#include "data/token_cache.h"
#include "text/tokenizer.h"

namespace tlmoe::data {

inline constexpr int kPreprocessManifestVersion = 1;

// One row of the per-task summary table.
struct TaskSummary {
  std::string task;
  std::string partition;  // train | dev | test | "" (only in "all")
  std::int64_t files = 0;
  TokenStats stats;  // over all of the task's files
};

struct PreprocessReport {
  std::filesystem::path cache_dir;
  std::filesystem::path tokenizer_model;
  std::string tokenizer_fingerprint;
  std::int32_t vocab_size = 0;
  bool tokenizer_trained = false;  // trained in this run
  std::int64_t files_built = 0;    // token caches (re)written in this run
  std::int64_t files_reused = 0;   // token caches found up to date
  std::vector<std::string> built;  // caches written, relative to cache_dir, in build order
  std::vector<TaskSummary> tasks;  // sorted by task name
};

// Loads splits and task metadata, checks the dataset layout, trains / reuses / loads the
// tokenizer, brings every token cache up to date and writes manifest.json. Progress and the
// per-task table go to `log`. Throws DataError / ConfigError for bad input; nothing is ever
// half-written (each file is written atomically; manifest.json is removed before the first
// cache changes and written again at the end, so it only exists for a complete cache).
PreprocessReport preprocess(const Config& cfg, std::ostream& log);

// The per-task table, aligned columns, one line per task plus a total.
std::string format_task_table(const std::vector<TaskSummary>& tasks);

// manifest.json of cfg's cache. DataError when it is missing (preprocess has not run) or damaged.
nlohmann::json read_preprocess_manifest(const Config& cfg);

// The tokenizer recorded in the preprocess manifest of cfg's cache, decoding with the semantics
// of eval.semantics (text::HfSemantics).
std::unique_ptr<text::Tokenizer> load_tokenizer(const Config& cfg);

}  // namespace tlmoe::data

namespace tlmoe {
using data::preprocess;  // the command's entry point (apps/tlmoe/cmd_preprocess.cpp)
}  // namespace tlmoe
