#include "model/load_model.h"

#include "common/error.h"
#include "io/checkpoint.h"
#include "model/selection.h"

namespace fs = std::filesystem;

namespace tlmoe::model {

LoadedModel load_model(const fs::path& checkpoint) {
  io::LoadedCheckpoint ck = io::load_checkpoint(checkpoint, /*with_optimizer=*/false);
  const std::string meta = (checkpoint / "meta.json").string();
  LoadedModel lm;
  if (!ck.meta.contains("config") || !ck.meta["config"].is_string())
    throw DataError(meta, 0, "checkpoint has no config (not written by tlmoe train?)");
  lm.cfg = config_from_yaml_text(ck.meta["config"].get<std::string>(), meta + " (config)");
  lm.tasks = ck.meta.value("tasks", std::vector<std::string>{});
  lm.tokenizer_fingerprint = ck.meta.value("tokenizer_fingerprint", "");
  lm.step = ck.meta.value("step", int64_t{0});
  lm.tau = temperature_at(lm.step, lm.cfg.routing.tau0, lm.cfg.routing.tau_min, lm.cfg.routing.anneal_rate);
  auto it = ck.model.find("model.shared.weight");
  if (it == ck.model.end()) throw DataError((checkpoint / "model.safetensors").string(), 0, "no model.shared.weight");
  const int64_t vocab = it->second.size(0);
  const int64_t pad = 1;  // BART's <pad>: every tlmoe tokenizer uses it (text/tokenizer.h)
  if (lm.tasks.empty()) throw DataError(meta, 0, "checkpoint lists no tasks");
  lm.model = TLMoEModel(model_options(lm.cfg, vocab, pad), router_options(lm.cfg), routing_policy(lm.cfg),
                          static_cast<int64_t>(lm.tasks.size()));
  io::load_into(*lm.model, ck.model, (checkpoint / "model.safetensors").string());
  lm.model->eval();
  return lm;
}

}  // namespace tlmoe::model
