#include "evaluate/predict.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "common/strings.h"
#include "model/hf_defaults.h"

namespace tlmoe::evaluate {

model::GenerationOptions generation_options(const Config& cfg, int64_t bos, int64_t eos, int64_t pad) {
  model::GenerationOptions g;
  g.num_beams = cfg.eval.num_beams;
  g.max_len = cfg.eval.max_len;
  g.min_len = cfg.eval.min_len;
  g.length_penalty = cfg.eval.length_penalty;
  g.no_repeat_ngram = cfg.eval.no_repeat_ngram;
  g.early_stopping = cfg.eval.early_stopping;
  g.current_beam_search = cfg.eval.semantics == "current";
  g.decoder_start_id = model::generation_start(cfg) == "eos" ? eos : bos;
  g.forced_bos_id = cfg.eval.forced_bos ? bos : -1;
  g.forced_eos_id = cfg.eval.forced_eos ? eos : -1;
  g.eos_id = eos;
  g.pad_id = pad;
  return g;
}

metrics::MetricOptions metric_options(const Config& cfg) {
  metrics::MetricOptions mo;
  if (cfg.eval.pearson_fallback != "nan") mo.pearson_fallback = std::stod(cfg.eval.pearson_fallback);
  mo.rouge_version = metrics::parse_rouge_version(cfg.eval.rouge_variant);
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

std::vector<std::string> predict(model::Seq2SeqImpl& m, const std::vector<data::Example>& examples, const RouteFn& routes,
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
    std::vector<const data::Example*> ex;
    for (size_t i = from; i < to; ++i) ex.push_back(&examples[order[i]]);
    data::Batch b = data::collate(ex, std::vector<size_t>(ex.size(), 0), g.pad_id, g.decoder_start_id);
    auto ids = b.input_ids.to(dev), mask = b.input_mask.to(dev), task_ids = b.task_ids.to(dev);
    auto gen = model::generate(m, ids, mask, routes(task_ids), g);
    for (size_t i = 0; i < gen.size(); ++i) {
      std::vector<int32_t> t;
      for (int64_t id : gen[i])
        if (id != g.pad_id && id != g.eos_id && id != g.decoder_start_id && !tok.is_special(static_cast<int32_t>(id)))
          t.push_back(static_cast<int32_t>(id));
      out[order[from + i]] = python_strip(tok.decode(t, /*skip_special=*/true));
    }
  }
  return out;
}

TaskScore score_predictions(const EvalSet& set, const std::vector<std::string>& predictions,
                            const metrics::MetricOptions& mo) {
  TaskScore s;
  s.task = set.task;
  s.metric = set.metric;
  s.examples = predictions.size();
  auto r = metrics::compute_metric(set.metric, predictions, set.golds, mo);
  s.score = r.value;
  s.unparsable = r.unparsable;
  return s;
}

}  // namespace tlmoe::evaluate
