#include "evaluate/predict.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
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
  g.reference_sparse_positions = cfg.reference_compat;
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

namespace {

// The drawn route of one task as the reference's generation runs it: soft gumbel weights become
// their argmax expert alone, weight 1, hard (the reference decodes gumbel modes sparsely).
std::vector<model::LayerRoute> argmax_routes(const std::vector<model::LayerRoute>& routes) {
  std::vector<model::LayerRoute> out;
  for (const auto& r : routes) {
    auto idx = r.weights.argmax(-1, /*keepdim=*/true);                         // [1,1]
    out.push_back({torch::zeros_like(r.weights).scatter_(1, idx, 1.0), idx, true});
  }
  return out;
}

// reference_compat with Gumbel noise at evaluation: one draw per task for the RouteFn's lifetime
// (one evaluation), shared by all of the task's examples and beams, as the reference draws one
// route per task and prediction call.
RouteFn per_task_draws(model::TLMoEModel m, double tau, std::shared_ptr<at::Generator> gen) {
  auto drawn = std::make_shared<std::map<int64_t, std::vector<model::LayerRoute>>>();
  const bool soft = m->policy().selection == "gumbel";
  return [m, tau, gen, drawn, soft](const torch::Tensor& task_ids) mutable {
    const auto ids = task_ids.to(torch::kCPU).contiguous();
    const int64_t B = ids.size(0);
    std::vector<const std::vector<model::LayerRoute>*> rows;
    for (int64_t b = 0; b < B; ++b) {
      const int64_t t = ids.data_ptr<int64_t>()[b];
      auto it = drawn->find(t);
      if (it == drawn->end()) {
        model::RouteContext ctx;
        ctx.training = false;
        ctx.tau = tau;
        ctx.gen = *gen;
        auto r = m->routes(task_ids.narrow(0, b, 1), ctx);
        it = drawn->emplace(t, soft ? argmax_routes(r) : r).first;
      }
      rows.push_back(&it->second);
    }
    std::vector<model::LayerRoute> out;
    const size_t L = rows.empty() ? 0 : rows[0]->size();
    for (size_t l = 0; l < L; ++l) {
      std::vector<torch::Tensor> w, idx;
      for (const auto* r : rows) {
        w.push_back((*r)[l].weights);
        if ((*r)[l].indices.defined()) idx.push_back((*r)[l].indices);
      }
      out.push_back({torch::cat(w, 0), idx.size() == rows.size() ? torch::cat(idx, 0) : torch::Tensor(), (*rows[0])[l].sparse});
    }
    return out;
  };
}

}  // namespace

RouteFn model_routes(model::TLMoEModel m, double tau, uint64_t seed) {
  auto gen = std::make_shared<at::Generator>(at::make_generator<at::CPUGeneratorImpl>(seed));
  const auto& p = m->policy();
  if (p.reference_compat && p.sample_at_eval && p.baseline == "none" && (p.selection == "gumbel" || p.selection == "gumbel_st"))
    return per_task_draws(m, tau, gen);
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
