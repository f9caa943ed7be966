#include "export/hf_model_files.h"

#include "io/atomic_file.h"
#include "io/safetensors.h"

namespace tlmoe::hf_export {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

bool dense_name_ok(const std::string& n) { return n.rfind("model.", 0) == 0 || n == "final_logits_bias"; }

json id_or_null(int64_t id) { return id >= 0 ? json(id) : json(nullptr); }

// The decoding settings of `g` under their generation_config.json names.
json decoding_keys(const model::GenerationOptions& g) {
  return {
      {"num_beams", g.num_beams},
      {"max_length", g.max_len},
      {"min_length", g.min_len},
      {"length_penalty", g.length_penalty},
      {"no_repeat_ngram_size", g.no_repeat_ngram},
      {"early_stopping", g.early_stopping},
      {"forced_bos_token_id", id_or_null(g.forced_bos_id)},
      {"forced_eos_token_id", id_or_null(g.forced_eos_id)},
  };
}

}  // namespace

json hf_config_json(const model::ModelOptions& o, const model::GenerationOptions& g, const json& source_config) {
  const bool has_source = source_config.is_object() && !source_config.empty();
  json c = has_source ? source_config : json::object();
  if (!has_source) {  // settings a source model would carry; tlmoe's own otherwise
    c["dropout"] = o.layer.dropout;
    c["attention_dropout"] = o.layer.attention_dropout;
    c["activation_dropout"] = o.layer.activation_dropout;
    c["init_std"] = o.layer.init_std;
    c["encoder_layerdrop"] = 0.0;
    c["decoder_layerdrop"] = 0.0;
  }
  // Decoding keys some config.json files carry (bart-large-cnn's num_beams, ...): the checkpoint's.
  const json decoding = decoding_keys(g);
  for (const auto& [k, v] : decoding.items())
    if (c.contains(k)) c[k] = v;
  const json mine = {
      {"architectures", {"BartForConditionalGeneration"}},
      {"model_type", "bart"},
      {"vocab_size", o.vocab_size},
      {"d_model", o.layer.d_model},
      {"encoder_layers", o.encoder_layers},
      {"decoder_layers", o.decoder_layers},
      {"encoder_attention_heads", o.layer.heads},
      {"decoder_attention_heads", o.layer.heads},
      {"encoder_ffn_dim", o.layer.ffn_dim},
      {"decoder_ffn_dim", o.layer.ffn_dim},
      {"max_position_embeddings", o.max_positions},
      {"scale_embedding", o.scale_embedding},
      // tlmoe's BART layer: gelu, post-LayerNorm, layernorm_embedding, no extra final LayerNorm
      // (CTranslate2's converter reads normalize_before, which transformers' BartConfig omits).
      {"activation_function", "gelu"},
      {"normalize_before", false},
      {"add_final_layer_norm", false},
      {"normalize_embedding", true},
      {"add_bias_logits", false},
      {"is_encoder_decoder", true},
      {"tie_word_embeddings", true},
      {"pad_token_id", 1},
      {"bos_token_id", 0},
      {"eos_token_id", 2},
      {"decoder_start_token_id", g.decoder_start_id},
      {"forced_eos_token_id", id_or_null(g.forced_eos_id)},
      {"dtype", "float32"},  // the weights are written in float32 whatever the source's were
  };
  for (const auto& [k, v] : mine.items()) c[k] = v;
  if (c.contains("torch_dtype")) c["torch_dtype"] = "float32";  // transformers 4.x's name of dtype
  return c;
}

json hf_generation_config_json(const model::GenerationOptions& g, const json& source_generation) {
  json gen = source_generation.is_object() ? source_generation : json::object();
  gen["bos_token_id"] = 0;
  gen["eos_token_id"] = g.eos_id;
  gen["pad_token_id"] = g.pad_id;
  gen["decoder_start_token_id"] = g.decoder_start_id;
  const json decoding = decoding_keys(g);
  for (const auto& [k, v] : decoding.items()) {
    if (v.is_null()) gen.erase(k);
    else gen[k] = v;
  }
  // tlmoe decodes with greedy or beam search; a source that sampled would decode differently.
  if (gen.contains("do_sample")) gen["do_sample"] = false;
  return gen;
}

void save_hf_bart(const fs::path& dir, const model::ModelOptions& o, const std::map<std::string, torch::Tensor>& dense,
                  const model::GenerationOptions& g, const json& extra_config, const json& source) {
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (auto& [n, t] : dense) {
    if (!dense_name_ok(n)) continue;
    if (n.find(".experts.") != std::string::npos)
      throw std::logic_error("save_hf_bart: '" + n + "' is an expert tensor (pass a dense state)");
    tensors.emplace_back(n, t.detach().to(torch::kCPU, torch::kFloat).contiguous());
  }
  fs::create_directories(dir);
  io::save_safetensors(dir / "model.safetensors", tensors, {{"format", "pt"}});
  const json none = json::object();
  const bool has_source = source.is_object();
  json c = hf_config_json(o, g, has_source ? source.value("config", none) : none);
  for (auto& [k, v] : extra_config.items()) c[k] = v;
  io::write_file_atomic(dir / "config.json", c.dump(2) + "\n");
  const json gen = hf_generation_config_json(g, has_source ? source.value("generation", none) : none);
  io::write_file_atomic(dir / "generation_config.json", gen.dump(2) + "\n");
}

}  // namespace tlmoe::hf_export
