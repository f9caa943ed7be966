// A model restored from a tlmoe checkpoint directory (io/checkpoint.h): the config it was
// trained with, its task table's rows, and the routing temperature at its step.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "config/config.h"
#include "model/tlmoe_model.h"

namespace tlmoe::model {

// A model restored from a checkpoint directory with the config it was trained with.
struct LoadedModel {
  Config cfg;                           // the checkpoint's resolved config
  TLMoEModel model{nullptr};
  std::vector<std::string> tasks;       // rows of the task table
  std::string tokenizer_fingerprint;
  int64_t step = 0;
  double tau = 1.0;                     // routing temperature at that step
};

// Reads meta.json's config, builds the model and loads the weights. DataError naming the file
// for a missing or damaged checkpoint, or tensors that do not fit its config.
LoadedModel load_model(const std::filesystem::path& checkpoint);

}  // namespace tlmoe::model
