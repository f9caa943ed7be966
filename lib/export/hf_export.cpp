#include "export/hf_export.h"
#include "export/hf_model_files.h"

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <map>
#include <nlohmann/json.hpp>
#include <ostream>
#include <sstream>

#include "common/device.h"
#include "common/error.h"
#include "data/batching.h"
#include "evaluate/predict.h"
#include "io/checkpoint.h"
#include "model/hf_bart.h"
#include "model/load_model.h"
#include "text/bart_bpe_tokenizer.h"
#include "train/loss.h"
#include "train/upstream_data.h"

namespace tlmoe::hf_export {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// model.encoder.layers.3.experts.1.fc1.weight -> {"model.encoder.layers.3.fc1.weight", 1}
bool split_expert(const std::string& name, std::string& dense, int64_t& expert) {
  const auto pos = name.find(".experts.");
  if (pos == std::string::npos) return false;
  const auto after = name.find('.', pos + 9);
  expert = std::stoll(name.substr(pos + 9, after - pos - 9));
  dense = name.substr(0, pos) + name.substr(after);
  return true;
}

// "model.encoder.layers.3.…" -> the route index (encoder layers first).
int64_t route_index(const std::string& name, int64_t encoder_layers) {
  const bool dec = name.rfind("model.decoder.layers.", 0) == 0;
  const std::string prefix = dec ? "model.decoder.layers." : "model.encoder.layers.";
  const int64_t i = std::stoll(name.substr(prefix.size()));
  return dec ? encoder_layers + i : i;
}

// Mean log p(target) per non-pad target token over the batches.
std::pair<double, int64_t> dev_loglik(model::Seq2SeqImpl& m, const std::vector<data::Batch>& batches, const evaluate::RouteFn* routes,
                                      int64_t pad, const torch::Device& dev) {
  torch::NoGradGuard g;
  m.eval();
  double nll = 0;
  int64_t tokens = 0;
  train::LossOptions lo;
  lo.epsilon = 0.0;
  lo.pad_id = pad;
  for (const auto& b : batches) {
    std::vector<model::LayerRoute> r;
    if (routes) r = (*routes)(b.task_ids.to(dev));
    auto logits = m.forward(b.input_ids.to(dev), b.input_mask.to(dev), b.decoder_input_ids.to(dev), r);
    auto res = train::label_smoothed_nll(logits, b.target_ids.to(dev), lo);
    nll += res.nll_sum.item<double>();
    tokens += res.tokens;
  }
  return {tokens ? -nll / static_cast<double>(tokens) : 0.0, tokens};
}

// Some of the checkpoint's tasks, for messages: "a, b, ... (N tasks)".
std::string some_tasks(const model::LoadedModel& lm) {
  std::string list;
  for (size_t i = 0; i < lm.tasks.size() && i < 8; ++i) list += (i ? ", " : "") + lm.tasks[i];
  if (lm.tasks.size() > 8) list += ", ... (" + std::to_string(lm.tasks.size()) + " tasks)";
  return list;
}

// The task's row in the checkpoint's task table; UsageError when the task is not named or the
// checkpoint has no such task.
int64_t task_row(const model::LoadedModel& lm, const std::string& task) {
  if (task.empty())
    throw UsageError("--task is required: the checkpoint routes each task through its own experts, so the export is "
                     "one task's model (its tasks: " + some_tasks(lm) + ")");
  auto it = std::find(lm.tasks.begin(), lm.tasks.end(), task);
  if (it != lm.tasks.end()) return it - lm.tasks.begin();
  throw UsageError("--task " + task + ": the checkpoint has no such task (its tasks: " + some_tasks(lm) + ")");
}

// The expert weights of every routed layer (route index -> weights; a hard route exactly one-hot),
// described per layer in rep.layer_routes; rep.exact when every route is hard. A soft route is
// refused unless approximate.
std::map<int64_t, std::vector<double>> layer_weights(model::TLMoEModelImpl& m, const std::vector<model::LayerRoute>& r,
                                                     const ExportOptions& o, ExportReport& rep) {
  const auto mo = m.options();
  std::map<int64_t, std::vector<double>> weights;
  std::vector<std::string> soft;
  const int64_t L = mo.encoder_layers + mo.decoder_layers;
  for (int64_t i = 0; i < L; ++i) {
    const bool dec = i >= mo.encoder_layers;
    const int64_t li = dec ? i - mo.encoder_layers : i;
    const bool routed = dec ? m.model->decoder->is_routed(li) : m.model->encoder->is_routed(li);
    if (!routed) continue;
    auto w = r.at(i).weights.to(torch::kCPU, torch::kDouble)[0].contiguous();
    std::vector<double> ws(w.data_ptr<double>(), w.data_ptr<double>() + w.numel());
    int64_t nonzero = 0, arg = 0;
    for (size_t e = 0; e < ws.size(); ++e)
      if (ws[e] != 0.0) ++nonzero, arg = static_cast<int64_t>(e);
    const bool hard = nonzero == 1 && std::abs(ws[arg] - 1.0) < 1e-6;
    std::ostringstream d;
    d << (dec ? "decoder " : "encoder ") << li << ": ";
    if (hard) {
      d << "expert " << arg;
      ws.assign(ws.size(), 0.0);
      ws[arg] = 1.0;
    } else {
      for (size_t e = 0; e < ws.size(); ++e) d << (e ? " + " : "") << std::setprecision(4) << ws[e] << "*e" << e;
      soft.push_back(d.str());
    }
    rep.layer_routes.push_back(d.str());
    weights[i] = ws;
  }
  rep.exact = soft.empty();
  if (!rep.exact && !o.approximate) {
    std::string which;
    for (size_t i = 0; i < soft.size() && i < 3; ++i) which += (i ? "; " : "") + soft[i];
    if (soft.size() > 3) which += "; ... (" + std::to_string(soft.size()) + " soft layers)";
    throw UsageError("task " + o.task + " has a soft route (" + which +
                     "): no dense BART computes a mixture of layer outputs. Pass --approximate to export the "
                     "route-weighted average of the experts' parameters (the dev log-likelihood change is reported)");
  }
  return weights;
}

// The dense BART state: shared tensors as they are, each routed layer the route-weighted sum of
// its experts (a hard route: the chosen expert, bit for bit).
std::map<std::string, torch::Tensor> dense_state(model::TLMoEModelImpl& m,
                                                 const std::map<int64_t, std::vector<double>>& weights) {
  torch::NoGradGuard g;
  std::map<std::string, torch::Tensor> dense;
  const int64_t encoder_layers = m.options().encoder_layers;
  auto add = [&](const std::string& name, const torch::Tensor& v) {
    if (name.rfind("model.", 0) != 0 && name != "final_logits_bias") return;  // router, task table
    std::string dn;
    int64_t e = 0;
    if (!split_expert(name, dn, e)) {
      dense[name] = v.detach().to(torch::kCPU, torch::kFloat);
      return;
    }
    const double w = weights.at(route_index(name, encoder_layers)).at(e);
    if (w == 0.0) return;
    auto c = v.detach().to(torch::kCPU, torch::kFloat);
    if (w == 1.0) dense[dn] = c.clone();   // hard: the expert itself, bit for bit
    else dense[dn] = dense.count(dn) ? dense[dn] + c * w : c * w;
  };
  for (const auto& p : m.named_parameters(true)) add(p.key(), p.value());
  for (const auto& b : m.named_buffers(true)) add(b.key(), b.value());
  return dense;
}

// The checkpoint's BART tokenizer as Hugging Face tokenizer files (text::BartBpeTokenizer::
// save_hf_files: tokenizer.json keeps the added tokens' lstrip/rstrip), read from the directory its
// config names (tokenizer.model, else model.init_from: hf:DIR), as preprocess reads it. A
// SentencePiece model is not a BART tokenizer: nothing is written and the log says why.
void write_tokenizer_files(const model::LoadedModel& lm, const ExportOptions& o, ExportReport& rep, std::ostream& log) {
  const auto& tc = lm.cfg.tokenizer;
  if (tc.kind != "bart-bpe") {
    log << "tokenizer: not written (" << tc.kind << " is not a BART tokenizer; transformers cannot load it as one)\n";
    return;
  }
  const fs::path src = tc.model.empty() ? fs::path(model::hf_dir_of(lm.cfg.model.init_from)) : fs::path(tc.model);
  try {
    if (src.empty()) throw DataError("", 0, "the config names no tokenizer directory (tokenizer.model)");
    auto tok = text::BartBpeTokenizer::load(src);
    if (!lm.tokenizer_fingerprint.empty() && tok->fingerprint() != lm.tokenizer_fingerprint) {
      log << "tokenizer: not written (" << src.string() << " holds another tokenizer than the checkpoint's)\n";
      return;
    }
    tok->save_hf_files(o.out, lm.model->options().max_positions);
    rep.tokenizer_written = true;
    log << "tokenizer: " << src.string() << " as vocab.json, merges.txt, tokenizer.json, tokenizer_config.json, "
        << "special_tokens_map.json\n";
  } catch (const InputError& e) {
    log << "tokenizer: not written (" << e.what() << ")\n";
  }
}

// Approximate exports: the task's dev log-likelihood per token, routed vs exported.
void measure_dev_change(model::LoadedModel& lm, int64_t t, const evaluate::RouteFn& routes,
                        const model::ModelOptions& dense_opts, const std::map<std::string, torch::Tensor>& dense,
                        int64_t decoder_start, const ExportOptions& o, const torch::Device& dev, ExportReport& rep,
                        std::ostream& log) {
  const int64_t pad = 1;
  try {
    std::ostringstream quiet;
    train::UpstreamData data = train::load_upstream_data(lm.cfg, quiet);
    auto tn = std::find(data.task_names.begin(), data.task_names.end(), o.task);
    if (tn == data.task_names.end()) throw DataError("", 0, "the task is not in the data's task list");
    const int64_t dt = tn - data.task_names.begin();
    std::vector<data::Example> ex;
    for (const auto& e : data.dev)
      if (e.task_id == dt) ex.push_back(e), ex.back().task_id = t;
    if (ex.empty()) throw DataError("", 0, "the task has no dev examples (it is not an upstream task?)");
    auto batches = data::eval_batches(ex, lm.cfg.eval.batch_size, pad, decoder_start);
    auto [ll_routed, tokens] = dev_loglik(*lm.model, batches, &routes, pad, dev);
    model::Seq2Seq dm(dense_opts);
    io::load_into(*dm, dense, (o.out / "model.safetensors").string());
    dm->to(dev);
    auto [ll_dense, tokens2] = dev_loglik(*dm, batches, nullptr, pad, dev);
    rep.dev_measured = true;
    rep.dev_examples = static_cast<int64_t>(ex.size());
    rep.dev_tokens = tokens;
    rep.dev_loglik_routed = ll_routed;
    rep.dev_loglik_export = ll_dense;
    log << std::fixed << std::setprecision(4) << "dev log-likelihood per token (" << ex.size() << " examples, "
        << tokens << " tokens): routed " << ll_routed << ", exported " << ll_dense << ", change "
        << (ll_dense - ll_routed) << "\n";
    log.unsetf(std::ios::fixed);
  } catch (const InputError& e) {
    rep.dev_note = e.what();
    log << "dev log-likelihood: not measured (" << e.what() << ")\n";
  }
}

}  // namespace

ExportReport export_task(const ExportOptions& o, std::ostream& log) {
  ExportReport rep;
  model::LoadedModel lm = model::load_model(o.checkpoint.string());
  {
    Config c = lm.cfg;  // the checkpoint's settings, --tau over its eval.tau
    if (!o.tau.empty()) {
      c.eval.tau = o.tau;
      c.explicit_keys.insert("eval.tau");
      validate(c);
    }
    model::use_evaluation_tau(lm, c);
  }
  rep.routed = lm.model->routed_layers() > 0;
  const int64_t t = rep.routed ? task_row(lm, o.task) : -1;
  const torch::Device dev = pick_device(o.device);
  lm.model->to(dev);
  lm.model->eval();
  auto& m = *lm.model;

  // A model without routed layers (experts = 1, hf:DIR) is the same for every task: no route.
  evaluate::RouteFn routes = evaluate::model_routes(lm.model, lm.tau, static_cast<uint64_t>(lm.cfg.train.seed));
  std::vector<model::LayerRoute> r;
  if (rep.routed) {
    torch::NoGradGuard g;
    r = routes(torch::tensor({t}, torch::kLong).to(dev));
  }
  const auto weights = layer_weights(m, r, o, rep);
  const auto dense = dense_state(m, weights);
  auto dense_opts = m.options();
  dense_opts.experts = 1;
  dense_opts.vanilla_encoder_layers.clear();
  dense_opts.vanilla_decoder_layers.clear();

  const int64_t bos = 0, eos = 2, pad = 1;
  const auto gen = evaluate::generation_options(lm.cfg, bos, eos, pad);
  const std::string ck = o.checkpoint.string();
  const std::string hf_dir = model::hf_dir_of(ck);
  json extra = {{"tlmoe", {{"checkpoint", hf_dir.empty() ? fs::absolute(o.checkpoint).string()
                                                           : "hf:" + fs::absolute(hf_dir).string()},
                            {"task", o.task.empty() ? json(nullptr) : json(o.task)},
                            {"exact", rep.exact},
                            {"routes", rep.layer_routes}}}};
  fs::create_directories(o.out);
  save_hf_bart(o.out, dense_opts, dense, gen, extra, lm.hf_source);
  log << "export: " << o.out.string() << " ("
      << (!rep.routed ? "exact: no routed layer, the same model for every task"
                      : rep.exact ? "exact: hard routes" : "approximate: averaged experts")
      << ")\n";
  for (const auto& s : rep.layer_routes) log << "  " << s << "\n";
  if (!lm.hf_source.is_null())
    log << "config.json, generation_config.json: from " << lm.hf_source.value("dir", std::string("the source model"))
        << "'s, with tlmoe's architecture, token ids and decoding settings\n";
  write_tokenizer_files(lm, o, rep, log);
  if (!rep.exact) measure_dev_change(lm, t, routes, dense_opts, dense, gen.decoder_start_id, o, dev, rep, log);
  return rep;
}

}  // namespace tlmoe::hf_export
