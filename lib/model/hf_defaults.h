// What a Hugging Face BART brings to a tlmoe config (docs/method.md §1.6): its architecture, its
// tokenizer and its decoding settings fill every key the user did not set (Config::explicit_keys),
// so a transformers-saved directory trains, adapts, evaluates and exports with no restated
// settings. An explicit key is never overwritten: an architecture key that differs from the
// model's is refused (ConfigError naming the key and config.json's value); an explicit decoding
// or dropout key simply wins over the model's.
#pragma once

#include <ostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "config/config.h"
#include "model/hf_bart.h"

namespace tlmoe::model {

// model.* (sizes, positions, scale_embedding, dropouts, init_std; experts is tlmoe's own) from
// config.json, tokenizer.kind bart-bpe; data.max_input_len / max_output_len capped at the model's
// positions with a line in `log`. Throws ConfigError for an explicit key that contradicts it.
void adopt_hf_architecture(Config& cfg, const HfBart& hf, std::ostream& log);

// eval.* decoding settings from generation_config.json (falling back to config.json, then to
// transformers' defaults) and eval.semantics current, for every key not set explicitly.
// `source` ({"dir", "config", "generation"}, as LoadedModel::hf_source) names the files in errors.
// Returns the keys it set.
std::vector<std::string> adopt_hf_generation(Config& cfg, const nlohmann::json& source);

// {"dir", "config", "generation"} of a Hugging Face directory read by read_hf_bart_config.
nlohmann::json hf_source_of(const HfBart& hf);

// meta.json's hf_source of a tlmoe checkpoint directory; null when it has none (or no meta.json).
nlohmann::json checkpoint_hf_source(const std::string& checkpoint);

// For a command given a checkpoint (eval, adapt): a checkpoint written as "hf:DIR" brings its
// architecture, tokenizer (tokenizer.kind bart-bpe, tokenizer.model DIR) and decoding settings; a
// tlmoe checkpoint trained from one (meta.json's hf_source) brings its decoding settings and its
// BART tokenizer (meta.json's tokenizer_model). Logs what it adopted. No effect for other
// checkpoints.
void adopt_checkpoint_defaults(Config& cfg, const std::string& checkpoint, std::ostream& log);

// The decoding settings in effect, one line ("beams 4, max_len 20, ..., semantics current"), for logs.
std::string describe_generation(const Config& cfg);

// The first decoder token of generation, "eos" or "bos" (eval.decoder_start; "train" = the token
// training shifts with, model.decoder_start; with reference_compat and the key unset, "bos").
std::string generation_start(const Config& cfg);

}  // namespace tlmoe::model
