// Hugging Face BART directories in and out (import: docs/method.md §1.6; the export of a routed task is export/hf_export.h).
//
// A directory in Hugging Face layout holds
//   config.json              BartConfig (model_type "bart")
//   model.safetensors        the weights, named as BartForConditionalGeneration names them
//   generation_config.json   the decoding settings (optional)
//   vocab.json, merges.txt   the byte-level BPE tokenizer (text/bart_bpe_tokenizer.h)
// tlmoe's dense (m = 1) model uses exactly HF's parameter names (seq2seq.h), so import is a
// renaming of aliases only: model.{encoder,decoder}.embed_tokens.weight and lm_head.weight are
// tied to model.shared.weight; a missing final_logits_bias is zero. What tlmoe cannot represent
// is refused with a DataError naming the file and the key or tensor (another architecture, an
// activation other than gelu, pre-LayerNorm variants, an untied LM head, unknown tensors).
#pragma once

#include <torch/torch.h>

#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "model/generate.h"
#include "model/seq2seq.h"

namespace tlmoe::model {

// "hf:/path" -> "/path"; "" for any other string.
std::string hf_dir_of(const std::string& init_from);

struct HfBart {
  std::filesystem::path dir;
  nlohmann::json config;                         // config.json
  nlohmann::json generation;                     // generation_config.json ({} when absent)
  ModelOptions options;                          // the architecture, experts = 1
  std::map<std::string, torch::Tensor> state;    // tlmoe names of the dense model, float32
};

// Reads config.json (and generation_config.json) only: the architecture.
HfBart read_hf_bart_config(const std::filesystem::path& dir);
// Reads config + weights.
HfBart load_hf_bart(const std::filesystem::path& dir);

// Checks that `mine` (built from tlmoe's config) has the architecture of `hf`; throws ConfigError
// naming the tlmoe key and the config.json value that differ.
void check_hf_architecture(const HfBart& hf, const ModelOptions& mine);

// The decoding settings of generation_config.json (falling back to config.json, then to BART's
// defaults) as tlmoe generation options, with the beam search semantics of current transformers
// (current_beam_search = true).
GenerationOptions hf_generation_options(const HfBart& hf);

}  // namespace tlmoe::model
