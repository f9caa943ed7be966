// Generation-based evaluation shared by train (dev score), adapt and eval: evaluation sets read
// from the preprocess manifest (token caches for the model, TSV gold answers for the metric),
// batched prediction through model::generate, scoring with the task's CrossFit metric, and
// loading a model from a tlmoe checkpoint.
#pragma once

#include <torch/torch.h>

#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "config/config.h"
#include "eval/metrics.h"
#include "model/generate.h"
#include "model/tlmoe_model.h"
#include "text/tokenizer.h"
#include "train/batching.h"

namespace tlmoe::train {

// "cpu", "cuda" or "auto" (CUDA when available). UsageError for cuda without a device.
torch::Device pick_device(const std::string& name);

// One file of one task, ready to be decoded and scored.
struct EvalSet {
  std::string task;
  std::string metric;
  std::string source;                            // the TSV file
  std::vector<Example> examples;                 // token ids (task_id set by the caller)
  std::vector<std::vector<std::string>> golds;   // every gold answer, from the TSV
};

// The preprocess manifest's entry `file` (kind, split, cache, source) of `task`: tokens from its
// cache, golds from its TSV. max_examples > 0 keeps the first N. DataError when the cache and
// the TSV disagree on the number of examples (the cache is stale: run preprocess).
EvalSet load_eval_set(const std::filesystem::path& cache_dir, const nlohmann::json& file, const std::string& task,
                      int64_t task_id, const std::string& metric, int64_t max_examples = 0);

// task -> CrossFit metric name, from tasks.json (either of its two formats, data/task_meta.h).
std::map<std::string, std::string> task_metrics(const std::filesystem::path& tasks_file);

// Generation settings of the eval section with the model's special tokens. decoder_start per
// model.decoder_start; forced BOS/EOS per eval.forced_bos / eval.forced_eos.
model::GenerationOptions generation_options(const Config& cfg, int64_t bos, int64_t eos, int64_t pad);
eval::MetricOptions metric_options(const Config& cfg);

// Routes for a batch of task ids [B] (one entry per layer; empty for a model without experts).
using RouteFn = std::function<std::vector<model::LayerRoute>(const torch::Tensor& task_ids)>;

// Eval-mode routes of the model's own router or baseline at temperature tau (deterministic:
// argmax for gumbel selections, SPEC §11.3; a seeded generator for random baselines).
RouteFn model_routes(model::TLMoEModel m, double tau, uint64_t seed);

// Decodes every example (batches of similar input length), returns the decoded texts in input
// order: special tokens skipped, surrounding whitespace stripped. The model is put in eval mode
// and left in it.
std::vector<std::string> predict(model::Seq2SeqImpl& m, const std::vector<Example>& examples, const RouteFn& routes,
                                 const text::Tokenizer& tok, const model::GenerationOptions& g, int64_t batch_size,
                                 const torch::Device& dev);

struct TaskScore {
  std::string task, metric;
  double score = 0;          // NaN possible (Pearson on constant or unparsable predictions)
  std::size_t examples = 0;
  std::size_t unparsable = 0;
};

TaskScore score_predictions(const EvalSet& set, const std::vector<std::string>& predictions,
                            const eval::MetricOptions& mo);

// A model restored from a checkpoint directory with the config it was trained with.
struct LoadedModel {
  Config cfg;                           // the checkpoint's resolved config
  model::TLMoEModel model{nullptr};
  std::vector<std::string> tasks;       // rows of the task table
  std::string tokenizer_fingerprint;
  int64_t step = 0;
  double tau = 1.0;                     // routing temperature at that step
};

// Reads meta.json's config, builds the model and loads the weights. DataError naming the file
// for a missing or damaged checkpoint, or tensors that do not fit its config.
LoadedModel load_model(const std::filesystem::path& checkpoint);

// The tokenizer recorded in the preprocess manifest of cfg's cache.
std::unique_ptr<text::Tokenizer> load_tokenizer(const Config& cfg);

}  // namespace tlmoe::train
