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
  auto it = ck.model.find("model.shared.weight");
  if (it == ck.model.end()) throw DataError((fs::path(checkpoint) / "model.safetensors").string(), 0, "no model.shared.weight");
  const int64_t vocab = it->second.size(0);
  const int64_t pad = 1;  // BART's <pad>: every tlmoe tokenizer uses it (text/tokenizer.h)
  if (lm.tasks.empty()) throw DataError(meta, 0, "checkpoint lists no tasks");
  apply_legacy_router(lm.cfg, ck.model);
  lm.model = TLMoEModel(model_options(lm.cfg, vocab, pad), router_options(lm.cfg), routing_policy(lm.cfg),
                          static_cast<int64_t>(lm.tasks.size()));
  io::load_into(*lm.model, ck.model, (fs::path(checkpoint) / "model.safetensors").string());
  lm.model->eval();
  return lm;
}

}  // namespace tlmoe::model
