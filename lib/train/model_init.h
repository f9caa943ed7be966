// The initial weights of a model before training or adaptation, per the config.
#pragma once

#include <nlohmann/json.hpp>
#include <ostream>

#include "config/config.h"
#include "model/tlmoe_model.h"
#include "train/upstream_data.h"

namespace tlmoe::train {

// Initial weights per the config, before training:
//   model.init_from     a tlmoe checkpoint directory: loaded as is when it has the same shape;
//                       a dense (m = 1) checkpoint into a routed model: experts = copies + noise
//   routing.init_from   a tlmoe checkpoint: router.* and task_table.weight (rows matched by task name)
//   task_rep.kind       textemb | fisher: the task table is filled from the representation file
//   routing.freeze      the router's parameters get requires_grad = false
void initialise_model(model::TLMoEModelImpl& m, const Config& cfg, const UpstreamData& data);

// What the model a run starts from brings to its config, before anything else reads it
// (model/hf_defaults.h): model.init_from = hf:DIR fills the architecture, tokenizer and decoding
// keys the config does not set; a tlmoe checkpoint trained from a Hugging Face model passes on
// its decoding settings. Returns the Hugging Face source ({"dir", "config", "generation"}) that
// checkpoints record as meta.json's hf_source, or null.
nlohmann::json adopt_start_model(Config& cfg, std::ostream& log);

}  // namespace tlmoe::train
