// A model restored from a tlmoe checkpoint directory (io/checkpoint.h): the config it was
// trained with, its task table's rows, and the routing temperature at its step.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
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
  // The Hugging Face BART the model comes from: a checkpoint given as hf:DIR, or a run trained
  // with model.init_from: hf:DIR. {"dir": DIR, "config": config.json, "generation":
  // generation_config.json ({} when the directory has none)}; null for a model of tlmoe's own.
  nlohmann::json hf_source;
  // Tensors of the file holding NaN or Inf values (a diverged run): reports warn and record them.
  std::vector<std::string> non_finite;
};

// "" for finite weights, else the warning line a report prints (without "warning: ").
std::string non_finite_warning(const LoadedModel& lm, const std::string& checkpoint);

// Reads meta.json's config, builds the model and loads the weights. DataError naming the file
// for a missing or damaged checkpoint, or tensors that do not fit its config.
// "hf:DIR" loads a Hugging Face BART directory as a vanilla (experts = 1) model with no task
// table (`tasks` empty: any task may be decoded), its config built from config.json, tokenizer
// bart-bpe from DIR, and hf_source set.
LoadedModel load_model(const std::string& checkpoint);

// A checkpoint of tlmoe before the reference's router names keeps its meaning: its "gru", "lstm"
// or "transformer" (with a layer_specific_proj among `weights`) becomes the *_layer_specific type
// and the transformer's heads and feed-forward width those tlmoe used then. load_model applies it.
void apply_legacy_router(Config& cfg, const std::map<std::string, torch::Tensor>& weights);

// The routing temperature a saved checkpoint is evaluated at (docs/method.md §3.3), by the command's
// eval.tau: "checkpoint" = lm.tau (tau at its step), "min" = its routing.tau_min, or a number;
// with reference_compat and eval.tau not set explicitly, "min" (the reference's best/ evaluation).
double evaluation_tau(const LoadedModel& lm, const Config& cfg);
// Sets lm.tau to evaluation_tau (eval, adapt, analyze-routes and export call it after load_model).
void use_evaluation_tau(LoadedModel& lm, const Config& cfg);

}  // namespace tlmoe::model
