// The model files of a Hugging Face BART directory written by `tlmoe export`: weights,
// config.json and generation_config.json (the tokenizer's files are text/bart_bpe_tokenizer.h's).
//
// A checkpoint that comes from a Hugging Face model (LoadedModel::hf_source) keeps that model's
// settings: config.json starts from the source's config.json and generation_config.json from the
// source's generation_config.json, and only what tlmoe defines is written over them (the
// architecture, the token ids, the decoding settings of the checkpoint). Without a source the
// files hold tlmoe's own values.
#pragma once

#include <torch/torch.h>

#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "model/generate.h"
#include "model/seq2seq.h"

namespace tlmoe::hf_export {

// config.json of a dense BART of options `o` (experts ignored) decoded with `g`: `source_config`
// (the source model's config.json; an empty object for none) with, written over it, the
// architecture (sizes, vocabulary, scale_embedding, gelu, post-LayerNorm, tied LM head,
// "architectures"), the token ids, dtype float32, and the decoding keys the source already has
// (num_beams, max_length, ...: the checkpoint's values, so that the two files agree). Without a
// source it also holds tlmoe's dropouts and init_std.
nlohmann::json hf_config_json(const model::ModelOptions& o, const model::GenerationOptions& g,
                              const nlohmann::json& source_config);

// generation_config.json: `source_generation` (an empty object for none) with the token ids and
// the decoding settings of `g` written over it; a forced BOS/EOS that `g` does not force is removed.
nlohmann::json hf_generation_config_json(const model::GenerationOptions& g, const nlohmann::json& source_generation);

// Writes a plain BartForConditionalGeneration directory: model.safetensors (the dense state in
// HF names), config.json and generation_config.json as above. `dense` must hold every tensor of a
// dense Seq2Seq of options `o` (experts = 1). `source` is LoadedModel::hf_source ({"config",
// "generation"}; null for a model of tlmoe's own); `extra_config` entries are added to config.json.
void save_hf_bart(const std::filesystem::path& dir, const model::ModelOptions& o,
                  const std::map<std::string, torch::Tensor>& dense, const model::GenerationOptions& g,
                  const nlohmann::json& extra_config = nlohmann::json::object(),
                  const nlohmann::json& source = nullptr);

}  // namespace tlmoe::hf_export
