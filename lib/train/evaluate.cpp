#include "train/evaluate.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "common/error.h"
#include "data/task_meta.h"
#include "data/token_cache.h"
#include "data/tsv.h"
#include "model/selection.h"
#include "text/bart_bpe_tokenizer.h"
#include "text/sentencepiece_tokenizer.h"
#include "train/checkpoint.h"
#include "train/task_data.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace tlmoe::train {

torch::Device pick_device(const std::string& d) {
  if (d == "cpu") return torch::kCPU;
  if (d == "cuda") {
    if (!torch::cuda::is_available()) throw UsageError("device: cuda was requested but no CUDA device is available");
    return torch::kCUDA;
  }
  return torch::cuda::is_available() ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU);
}

EvalSet load_eval_set(const fs::path& cache_dir, const json& file, const std::string& task, int64_t task_id,
                      const std::string& metric, int64_t max_examples) {
  EvalSet s;
  s.task = task;
  s.metric = metric;
  s.source = file.at("source").get<std::string>();
  const fs::path cache = cache_dir / file.at("cache").get<std::string>();
  data::TokenCache c = data::read_token_cache(cache);
  std::vector<data::TsvExample> rows = data::read_tsv(s.source);
  if (rows.size() != c.examples.size())
    throw DataError(cache.string(), 0,
                    "token cache has " + std::to_string(c.examples.size()) + " examples but " + s.source + " has " +
                        std::to_string(rows.size()) + "; run `tlmoe preprocess` to rebuild it");
  size_t n = rows.size();
  if (max_examples > 0) n = std::min(n, static_cast<size_t>(max_examples));
  for (size_t i = 0; i < n; ++i) {
    Example x;
    x.task_id = task_id;
    x.input = std::move(c.examples[i].input_ids);
    x.outputs = std::move(c.examples[i].output_ids);
    s.examples.push_back(std::move(x));
    s.golds.push_back(std::move(rows[i].outputs));
  }
  return s;
}

std::map<std::string, std::string> task_metrics(const fs::path& tasks_file) {
  const data::TaskTable table = data::load_tasks(tasks_file);
  std::map<std::string, std::string> m;
  for (const auto& name : table.names()) m[name] = table.info(name).metric;
  return m;
}

model::GenerationOptions generation_options(const Config& cfg, int64_t bos, int64_t eos, int64_t pad) {
  model::GenerationOptions g;
  g.num_beams = cfg.eval.num_beams;
  g.max_len = cfg.eval.max_len;
  g.min_len = cfg.eval.min_len;
  g.length_penalty = cfg.eval.length_penalty;
  g.no_repeat_ngram = cfg.eval.no_repeat_ngram;
  g.early_stopping = cfg.eval.early_stopping;
  g.current_beam_search = cfg.eval.beam_search == "current";
  g.decoder_start_id = cfg.model.decoder_start == "eos" ? eos : bos;
  g.forced_bos_id = cfg.eval.forced_bos ? bos : -1;
  g.forced_eos_id = cfg.eval.forced_eos ? eos : -1;
  g.eos_id = eos;
  g.pad_id = pad;
  return g;
}

eval::MetricOptions metric_options(const Config& cfg) {
  eval::MetricOptions mo;
  if (cfg.eval.pearson_fallback != "nan") mo.pearson_fallback = std::stod(cfg.eval.pearson_fallback);
  mo.rouge_version = eval::parse_rouge_version(cfg.eval.rouge_variant);
  return mo;
}

RouteFn model_routes(model::TLMoEModel m, double tau, uint64_t seed) {
  auto gen = std::make_shared<at::Generator>(at::make_generator<at::CPUGeneratorImpl>(seed));
  return [m, tau, gen](const torch::Tensor& task_ids) mutable {
    model::RouteContext ctx;
    ctx.training = false;
    ctx.tau = tau;
    ctx.gen = *gen;
    return m->routes(task_ids, ctx);
  };
}

std::vector<std::string> predict(model::Seq2SeqImpl& m, const std::vector<Example>& examples, const RouteFn& routes,
                                 const text::Tokenizer& tok, const model::GenerationOptions& g, int64_t batch_size,
                                 const torch::Device& dev) {
  m.eval();
  std::vector<std::string> out(examples.size());
  // Longest inputs first: batches of similar length waste little on padding.
  std::vector<size_t> order(examples.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return examples[a].input.size() > examples[b].input.size(); });
  for (size_t from = 0; from < order.size(); from += static_cast<size_t>(batch_size)) {
    const size_t to = std::min(order.size(), from + static_cast<size_t>(batch_size));
    std::vector<const Example*> ex;
    for (size_t i = from; i < to; ++i) ex.push_back(&examples[order[i]]);
    Batch b = collate(ex, std::vector<size_t>(ex.size(), 0), g.pad_id, g.decoder_start_id);
    auto ids = b.input_ids.to(dev), mask = b.input_mask.to(dev), task_ids = b.task_ids.to(dev);
    auto gen = model::generate(m, ids, mask, routes(task_ids), g);
    for (size_t i = 0; i < gen.size(); ++i) {
      std::vector<int32_t> t;
      for (int64_t id : gen[i])
        if (id != g.pad_id && id != g.eos_id && id != g.decoder_start_id && !tok.is_special(static_cast<int32_t>(id)))
          t.push_back(static_cast<int32_t>(id));
      std::string s = tok.decode(t, /*skip_special=*/true);
      const auto b0 = s.find_first_not_of(" \t\n\r\f\v");
      const auto e0 = s.find_last_not_of(" \t\n\r\f\v");
      out[order[from + i]] = b0 == std::string::npos ? std::string() : s.substr(b0, e0 - b0 + 1);
    }
  }
  return out;
}

TaskScore score_predictions(const EvalSet& set, const std::vector<std::string>& predictions,
                            const eval::MetricOptions& mo) {
  TaskScore s;
  s.task = set.task;
  s.metric = set.metric;
  s.examples = predictions.size();
  auto r = eval::compute_metric(set.metric, predictions, set.golds, mo);
  s.score = r.value;
  s.unparsable = r.unparsable;
  return s;
}

LoadedModel load_model(const fs::path& checkpoint) {
  LoadedCheckpoint ck = load_checkpoint(checkpoint, /*with_optimizer=*/false);
  const std::string meta = (checkpoint / "meta.json").string();
  LoadedModel lm;
  if (!ck.meta.contains("config") || !ck.meta["config"].is_string())
    throw DataError(meta, 0, "checkpoint has no config (not written by tlmoe train?)");
  lm.cfg = config_from_yaml_text(ck.meta["config"].get<std::string>(), meta + " (config)");
  lm.tasks = ck.meta.value("tasks", std::vector<std::string>{});
  lm.tokenizer_fingerprint = ck.meta.value("tokenizer_fingerprint", "");
  lm.step = ck.meta.value("step", int64_t{0});
  lm.tau = model::temperature_at(lm.step, lm.cfg.routing.tau0, lm.cfg.routing.tau_min, lm.cfg.routing.anneal_rate);
  auto it = ck.model.find("model.shared.weight");
  if (it == ck.model.end()) throw DataError((checkpoint / "model.safetensors").string(), 0, "no model.shared.weight");
  const int64_t vocab = it->second.size(0);
  const int64_t pad = 1;  // BART's <pad>: every tlmoe tokenizer uses it (text/tokenizer.h)
  if (lm.tasks.empty()) throw DataError(meta, 0, "checkpoint lists no tasks");
  lm.model = model::TLMoEModel(model::model_options(lm.cfg, vocab, pad), model::router_options(lm.cfg),
                               model::routing_policy(lm.cfg), static_cast<int64_t>(lm.tasks.size()));
  load_into(*lm.model, ck.model, (checkpoint / "model.safetensors").string());
  lm.model->eval();
  return lm;
}

std::unique_ptr<text::Tokenizer> load_tokenizer(const Config& cfg) {
  const json man = read_preprocess_manifest(cfg);
  const fs::path path = man.at("tokenizer").at("path").get<std::string>();
  if (man.at("tokenizer").value("kind", std::string("sentencepiece")) == "bart-bpe") return text::BartBpeTokenizer::load(path);
  return text::SentencePieceTokenizer::load(path);
}

}  // namespace tlmoe::train
