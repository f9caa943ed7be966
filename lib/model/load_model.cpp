#include "model/load_model.h"

#include <sstream>

#include "common/error.h"
#include "io/checkpoint.h"
#include "model/hf_bart.h"
#include "model/hf_defaults.h"
#include "model/router.h"
#include "model/selection.h"
#include "text/bart_bpe_tokenizer.h"

namespace fs = std::filesystem;

namespace tlmoe::model {

namespace {

// A Hugging Face BART directory as a vanilla model (docs/method.md §1.6): the architecture of its
// config.json, its weights as they are, no task table, the tokenizer of the directory.
LoadedModel load_hf_model(const std::string& dir) {
  HfBart hf = load_hf_bart(dir);
  LoadedModel lm;
  lm.cfg = Config::defaults();
  lm.cfg.model.experts = 1;
  std::ostringstream quiet;
  adopt_hf_architecture(lm.cfg, hf, quiet);
  lm.cfg.tokenizer.model = dir;
  adopt_hf_generation(lm.cfg, hf_source_of(hf));
  lm.tokenizer_fingerprint = text::BartBpeTokenizer::load(dir)->fingerprint();
  lm.hf_source = hf_source_of(hf);
  lm.model = TLMoEModel(model_options(lm.cfg, hf.options.vocab_size, hf.options.pad_id), router_options(lm.cfg),
                        routing_policy(lm.cfg), 1);
  lm.model->init_from_dense(hf.state, 0.0, nullptr);
  lm.model->eval();
  return lm;
}

}  // namespace

// A checkpoint of tlmoe before the reference's router names: its "gru", "lstm" or "transformer" is
// the *_layer_specific type (told by its layer_specific_proj), with the transformer's feed-forward
// width = routing.hidden and its heads the largest divisor of it up to 4, as tlmoe built it then.
void apply_legacy_router(Config& cfg, const std::map<std::string, torch::Tensor>& weights) {
  const std::string kind = legacy_router_kind(cfg.routing.router, weights.count("router.layer_specific_proj.weight") > 0);
  if (kind == cfg.routing.router) return;
  if (cfg.routing.router == "transformer") {
    cfg.routing.transformer_ffn = cfg.routing.hidden;
    cfg.routing.transformer_heads = legacy_transformer_router_heads(cfg.routing.hidden);
  }
  cfg.routing.router = kind;
}

double evaluation_tau(const LoadedModel& lm, const Config& cfg) {
  const std::string setting = cfg.reference_compat && !cfg.is_explicit("eval.tau") ? "min" : cfg.eval.tau;
  if (setting == "checkpoint") return lm.tau;
  if (setting == "min") return lm.cfg.routing.tau_min;
  return std::stod(setting);  // validate() checked it is a positive number
}

void use_evaluation_tau(LoadedModel& lm, const Config& cfg) { lm.tau = evaluation_tau(lm, cfg); }

namespace {

// The weights against the model meta.json describes, before that model is allocated: the embedding
// matrix is [vocab, d_model], and the file holds at least as many values as the smallest model of
// that config (one expert per layer) has parameters.
void check_config_fits_weights(const Config& cfg, const std::map<std::string, torch::Tensor>& w, const std::string& file,
                               const std::string& meta) {
  auto it = w.find("model.shared.weight");
  if (it == w.end()) throw DataError(file, 0, "no tensor model.shared.weight");
  if (it->second.dim() != 2)
    throw DataError(file, 0, "model.shared.weight has " + std::to_string(it->second.dim()) + " dimensions, expected 2 [vocab, d_model]");
  const int64_t V = it->second.size(0), d = it->second.size(1);
  const auto& mo = cfg.model;
  if (d != mo.d_model)
    throw DataError(meta, 0, "its config has d_model " + std::to_string(mo.d_model) + " but model.shared.weight in " + file +
                                 " is [" + std::to_string(V) + ", " + std::to_string(d) + "]: the config and the weights do not belong together");
  double held = 0;
  for (const auto& [name, t] : w) held += static_cast<double>(t.numel());
  const double dd = static_cast<double>(d), f = static_cast<double>(mo.ffn_dim);
  const double least = static_cast<double>(V) * dd + static_cast<double>(mo.encoder_layers) * (4 * dd * dd + 2 * dd * f) +
                       static_cast<double>(mo.decoder_layers) * (8 * dd * dd + 2 * dd * f);
  if (least > held)
    throw DataError(meta, 0, "its config describes a model of at least " + std::to_string(static_cast<int64_t>(least)) +
                                 " parameters but " + file + " holds " + std::to_string(static_cast<int64_t>(held)) +
                                 " values: the config and the weights do not belong together");
}

}  // namespace

LoadedModel load_model(const std::string& checkpoint) {
  if (const std::string dir = hf_dir_of(checkpoint); !dir.empty()) return load_hf_model(dir);
  io::LoadedCheckpoint ck = io::load_checkpoint(checkpoint, /*with_optimizer=*/false);
  const std::string meta = (fs::path(checkpoint) / "meta.json").string();
  LoadedModel lm;
  if (!ck.meta.contains("config") || !ck.meta["config"].is_string())
    throw DataError(meta, 0, "checkpoint has no config (not written by tlmoe train?)");
  lm.cfg = config_from_yaml_text(ck.meta["config"].get<std::string>(), meta + " (config)");
  lm.tasks = ck.meta.value("tasks", std::vector<std::string>{});
  lm.tokenizer_fingerprint = ck.meta.value("tokenizer_fingerprint", "");
  lm.step = ck.meta.value("step", int64_t{0});
  lm.tau = temperature_at(lm.step, lm.cfg.routing.tau0, lm.cfg.routing.tau_min, lm.cfg.routing.anneal_rate);
  if (ck.meta.contains("hf_source")) lm.hf_source = ck.meta["hf_source"];
  check_config_fits_weights(lm.cfg, ck.model, (fs::path(checkpoint) / "model.safetensors").string(), meta);
  const int64_t vocab = ck.model.at("model.shared.weight").size(0);
  const int64_t pad = 1;  // BART's <pad>: every tlmoe tokenizer uses it (text/tokenizer.h)
  if (lm.tasks.empty()) throw DataError(meta, 0, "checkpoint lists no tasks");
  apply_legacy_router(lm.cfg, ck.model);
  lm.model = TLMoEModel(model_options(lm.cfg, vocab, pad), router_options(lm.cfg), routing_policy(lm.cfg),
                          static_cast<int64_t>(lm.tasks.size()));
  io::load_into(*lm.model, ck.model, (fs::path(checkpoint) / "model.safetensors").string());
  for (const auto& [name, t] : ck.model)
    if (t.is_floating_point() && !torch::isfinite(t).all().item<bool>()) lm.non_finite.push_back(name);
  lm.model->eval();
  return lm;
}

std::string non_finite_warning(const LoadedModel& lm, const std::string& checkpoint) {
  if (lm.non_finite.empty()) return "";
  std::string names;
  for (size_t i = 0; i < std::min<size_t>(lm.non_finite.size(), 3); ++i) names += (i ? ", " : "") + lm.non_finite[i];
  if (lm.non_finite.size() > 3) names += ", ...";
  return std::to_string(lm.non_finite.size()) + " tensor(s) of " + checkpoint + " hold NaN or Inf values (" + names +
         "): the model is broken (a diverged run?) and every score below is meaningless";
}

}  // namespace tlmoe::model
