// The initial weights of a model before training or adaptation, per the config.
#pragma once

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

}  // namespace tlmoe::train
