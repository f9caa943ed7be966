#include "model/hf_defaults.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/error.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace tlmoe::model {

namespace {

std::string text_of(int64_t v) { return std::to_string(v); }
std::string text_of(bool v) { return v ? "true" : "false"; }
std::string text_of(double v) {
  std::ostringstream s;
  s << v;
  return s.str();
}
std::string text_of(const std::string& v) { return v; }

// Sets `field` to the model's value unless the key is explicit; an explicit architecture key
// (`must_match`) that differs is refused.
template <class T>
void adopt(Config& cfg, const std::string& key, T& field, const T& value, bool must_match, const std::string& hf_key,
           const std::string& file) {
  if (!cfg.is_explicit(key)) {
    field = value;
  } else if (must_match && field != value) {
    throw ConfigError("", key, text_of(field) + " but the Hugging Face model (" + file + ") has " + hf_key + " = " +
                                   text_of(value) + "; leave " + key + " out to take the model's value");
  }
}

void cap_length(Config& cfg, const char* key, int64_t& len, int64_t positions, std::ostream& log) {
  if (len <= positions) return;
  log << key << ": " << len << " capped at " << positions << " (the model's max_position_embeddings)\n";
  len = positions;
}

json read_json_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) throw DataError(p.string(), 0, "cannot read");
  try {
    return json::parse(in);
  } catch (const json::exception& e) {
    throw DataError(p.string(), 0, std::string("not valid JSON: ") + e.what());
  }
}

// A token id setting of generation_config.json that tlmoe expresses as "off or this token".
bool forced_flag(const GenerationOptions& g, int64_t id, int64_t want, const char* key, const std::string& file) {
  if (id < 0) return false;
  if (id != want)
    throw DataError(file, 0, std::string(key) + " = " + std::to_string(id) + ": tlmoe can force only token " +
                                 std::to_string(want) + " there (eval." + (want == g.eos_id ? "forced_eos" : "forced_bos") + ")");
  return true;
}

}  // namespace

json hf_source_of(const HfBart& hf) {
  return {{"dir", fs::absolute(hf.dir).lexically_normal().string()}, {"config", hf.config}, {"generation", hf.generation}};
}

void adopt_hf_architecture(Config& cfg, const HfBart& hf, std::ostream& log) {
  const ModelOptions& o = hf.options;
  const std::string f = (hf.dir / "config.json").string();
  ModelConfig& m = cfg.model;
  adopt(cfg, "model.d_model", m.d_model, o.layer.d_model, true, "d_model", f);
  adopt(cfg, "model.heads", m.heads, o.layer.heads, true, "encoder_attention_heads", f);
  adopt(cfg, "model.ffn_dim", m.ffn_dim, o.layer.ffn_dim, true, "encoder_ffn_dim", f);
  adopt(cfg, "model.encoder_layers", m.encoder_layers, o.encoder_layers, true, "encoder_layers", f);
  adopt(cfg, "model.decoder_layers", m.decoder_layers, o.decoder_layers, true, "decoder_layers", f);
  adopt(cfg, "model.max_positions", m.max_positions, o.max_positions, true, "max_position_embeddings", f);
  adopt(cfg, "model.scale_embedding", m.scale_embedding, o.scale_embedding, true, "scale_embedding", f);
  adopt(cfg, "model.dropout", m.dropout, o.layer.dropout, false, "dropout", f);
  adopt(cfg, "model.attention_dropout", m.attention_dropout, o.layer.attention_dropout, false, "attention_dropout", f);
  adopt(cfg, "model.activation_dropout", m.activation_dropout, o.layer.activation_dropout, false, "activation_dropout", f);
  adopt(cfg, "model.init_std", m.init_std, o.layer.init_std, false, "init_std", f);
  const int64_t start = hf.config.value("decoder_start_token_id", int64_t{2});
  if (start != 0 && start != 2)
    throw DataError(f, 0, "decoder_start_token_id = " + std::to_string(start) + ": tlmoe starts the decoder with </s> (2) or <s> (0)");
  adopt(cfg, "model.decoder_start", m.decoder_start, std::string(start == 2 ? "eos" : "bos"), true,
        "decoder_start_token_id", f);
  if (cfg.is_explicit("tokenizer.kind") && cfg.tokenizer.kind != "bart-bpe")
    throw ConfigError("", "tokenizer.kind", cfg.tokenizer.kind + ", but the token ids of the Hugging Face model (" + f +
                                                ") are those of its own tokenizer: set tokenizer.kind: bart-bpe, or leave it out");
  cfg.tokenizer.kind = "bart-bpe";
  cap_length(cfg, "data.max_input_len", cfg.data.max_input_len, o.max_positions, log);
  cap_length(cfg, "data.max_output_len", cfg.data.max_output_len, o.max_positions, log);
}

std::vector<std::string> adopt_hf_generation(Config& cfg, const json& source) {
  HfBart hf;
  hf.dir = source.value("dir", std::string());
  hf.config = source.value("config", json::object());
  hf.generation = source.value("generation", json::object());
  const GenerationOptions g = hf_generation_options(hf);
  const std::string gfile = (hf.dir / "generation_config.json").string();
  std::vector<std::string> set;
  auto put = [&](const std::string& key, auto& field, auto value) {
    if (cfg.is_explicit(key)) return;
    field = value;
    set.push_back(key);
  };
  EvalConfig& e = cfg.eval;
  put("eval.num_beams", e.num_beams, g.num_beams);
  put("eval.max_len", e.max_len, g.max_len);
  put("eval.min_len", e.min_len, g.min_len);
  put("eval.length_penalty", e.length_penalty, g.length_penalty);
  put("eval.no_repeat_ngram", e.no_repeat_ngram, g.no_repeat_ngram);
  put("eval.early_stopping", e.early_stopping, g.early_stopping);
  put("eval.forced_bos", e.forced_bos, forced_flag(g, g.forced_bos_id, 0, "forced_bos_token_id", gfile));
  put("eval.forced_eos", e.forced_eos, forced_flag(g, g.forced_eos_id, 2, "forced_eos_token_id", gfile));
  put("eval.semantics", e.semantics, std::string("current"));
  if (g.eos_id != 2 || g.pad_id != 1)
    throw DataError(gfile, 0, "eos_token_id / pad_token_id are " + std::to_string(g.eos_id) + " / " +
                                  std::to_string(g.pad_id) + ": tlmoe needs BART's </s> = 2 and <pad> = 1");
  return set;
}

json checkpoint_hf_source(const std::string& checkpoint) {
  const fs::path meta = fs::path(checkpoint) / "meta.json";
  if (!fs::exists(meta)) return nullptr;  // load_model reports a missing checkpoint
  const json m = read_json_file(meta);
  return m.contains("hf_source") ? m["hf_source"] : json(nullptr);
}

void adopt_checkpoint_defaults(Config& cfg, const std::string& checkpoint, std::ostream& log) {
  json source;
  if (const std::string dir = hf_dir_of(checkpoint); !dir.empty()) {
    const HfBart hf = read_hf_bart_config(dir);
    adopt_hf_architecture(cfg, hf, log);
    if (!cfg.is_explicit("tokenizer.model")) cfg.tokenizer.model = dir;
    source = hf_source_of(hf);
  } else {
    const fs::path meta = fs::path(checkpoint) / "meta.json";
    if (!fs::exists(meta)) return;  // load_model reports a missing checkpoint
    const json m = read_json_file(meta);
    if (!m.contains("hf_source") || m["hf_source"].is_null()) return;
    source = m["hf_source"];
    // the run's own BART tokenizer, unless the config names one
    const std::string tok_dir = m.value("tokenizer_model", std::string());
    if (!cfg.is_explicit("tokenizer.kind") && !cfg.is_explicit("tokenizer.model") && !tok_dir.empty() &&
        m.value("tokenizer_fingerprint", std::string()).rfind("bart-bpe:", 0) == 0) {
      cfg.tokenizer.kind = "bart-bpe";
      cfg.tokenizer.model = tok_dir;
      log << "tokenizer: " << tok_dir << " (the checkpoint's)\n";
    }
  }
  const auto keys = adopt_hf_generation(cfg, source);
  if (!keys.empty())
    log << "decoding settings from " << (fs::path(source.value("dir", std::string())) / "generation_config.json").string()
        << " (keys not set in the config)\n";
  validate(cfg);
}

std::string generation_start(const Config& cfg) {
  if (cfg.eval.decoder_start != "train") return cfg.eval.decoder_start;
  if (cfg.reference_compat && !cfg.is_explicit("eval.decoder_start")) return "bos";
  return cfg.model.decoder_start;
}

std::string describe_generation(const Config& cfg) {
  const EvalConfig& e = cfg.eval;
  std::ostringstream s;
  s << (e.num_beams == 1 ? std::string("greedy") : "beams " + std::to_string(e.num_beams)) << ", max_len " << e.max_len
    << ", min_len " << e.min_len << ", length_penalty " << e.length_penalty << ", no_repeat_ngram " << e.no_repeat_ngram
    << ", early_stopping " << text_of(e.early_stopping) << ", forced_bos " << text_of(e.forced_bos) << ", forced_eos "
    << text_of(e.forced_eos) << ", decoder start " << (generation_start(cfg) == "eos" ? "</s>" : "<s>")
    << ", semantics " << e.semantics << " (transformers " << (e.semantics == "current" ? "5.x" : "4.x") << ")";
  return s.str();
}

}  // namespace tlmoe::model
