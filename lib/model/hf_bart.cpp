#include "model/hf_bart.h"

#include <fstream>
#include <set>
#include <sstream>

#include "common/error.h"
#include "io/atomic_file.h"
#include "io/safetensors.h"

namespace tlmoe::model {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

json read_json(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) throw DataError(p.string(), 0, "cannot read (a Hugging Face BART directory needs config.json and model.safetensors)");
  std::ostringstream s;
  s << in.rdbuf();
  try {
    return json::parse(s.str());
  } catch (const json::exception& e) {
    throw DataError(p.string(), 0, std::string("not valid JSON: ") + e.what());
  }
}

int64_t get_int(const json& j, const fs::path& file, const std::string& key) {
  if (!j.contains(key) || !j[key].is_number_integer())
    throw DataError(file.string(), 0, "key '" + key + "' is missing or not an integer");
  return j[key].get<int64_t>();
}

template <class T>
T value_or(const json& j, const std::string& key, T dflt) {
  if (!j.contains(key) || j[key].is_null()) return dflt;
  return j[key].get<T>();
}

bool dense_name_ok(const std::string& n) { return n.rfind("model.", 0) == 0 || n == "final_logits_bias"; }

}  // namespace

std::string hf_dir_of(const std::string& init_from) {
  return init_from.rfind("hf:", 0) == 0 ? init_from.substr(3) : std::string();
}

HfBart read_hf_bart_config(const fs::path& dir) {
  HfBart hf;
  hf.dir = dir;
  const fs::path cfile = dir / "config.json";
  if (!fs::is_directory(dir)) throw DataError(dir.string(), 0, "not a directory (hf:DIR, in model.init_from or --checkpoint, names a Hugging Face model directory)");
  hf.config = read_json(cfile);
  const json& c = hf.config;
  const std::string type = value_or<std::string>(c, "model_type", "");
  if (type != "bart")
    throw DataError(cfile.string(), 0, "model_type is '" + type + "': tlmoe imports BART (model_type 'bart') only");
  if (c.contains("architectures") && c["architectures"].is_array())
    for (const auto& a : c["architectures"]) {
      const auto s = a.get<std::string>();
      if (s != "BartForConditionalGeneration" && s != "BartModel")
        throw DataError(cfile.string(), 0, "architecture '" + s + "' is not supported (BartForConditionalGeneration or BartModel)");
    }
  const std::string act = value_or<std::string>(c, "activation_function", "gelu");
  if (act != "gelu") throw DataError(cfile.string(), 0, "activation_function is '" + act + "'; tlmoe's BART layers use gelu");
  for (const char* k : {"normalize_before", "add_final_layer_norm", "add_bias_logits"})
    if (value_or<bool>(c, k, false)) throw DataError(cfile.string(), 0, std::string("key '") + k + "' is true: only post-LayerNorm BART (bart-base/large) is supported");
  if (!value_or<bool>(c, "tie_word_embeddings", true))
    throw DataError(cfile.string(), 0, "tie_word_embeddings is false: tlmoe ties the LM head to model.shared");
  ModelOptions& o = hf.options;
  o.vocab_size = get_int(c, cfile, "vocab_size");
  o.pad_id = value_or<int64_t>(c, "pad_token_id", 1);
  if (o.pad_id != 1) throw DataError(cfile.string(), 0, "pad_token_id is " + std::to_string(o.pad_id) + "; tlmoe needs BART's <pad> = 1");
  o.layer.d_model = get_int(c, cfile, "d_model");
  o.layer.heads = get_int(c, cfile, "encoder_attention_heads");
  if (value_or<int64_t>(c, "decoder_attention_heads", o.layer.heads) != o.layer.heads)
    throw DataError(cfile.string(), 0, "encoder_attention_heads and decoder_attention_heads differ (tlmoe needs one value)");
  o.layer.ffn_dim = get_int(c, cfile, "encoder_ffn_dim");
  if (value_or<int64_t>(c, "decoder_ffn_dim", o.layer.ffn_dim) != o.layer.ffn_dim)
    throw DataError(cfile.string(), 0, "encoder_ffn_dim and decoder_ffn_dim differ (tlmoe needs one value)");
  o.layer.dropout = value_or<double>(c, "dropout", 0.1);
  o.layer.attention_dropout = value_or<double>(c, "attention_dropout", 0.0);
  o.layer.activation_dropout = value_or<double>(c, "activation_dropout", 0.0);
  o.layer.init_std = value_or<double>(c, "init_std", 0.02);
  o.encoder_layers = get_int(c, cfile, "encoder_layers");
  o.decoder_layers = get_int(c, cfile, "decoder_layers");
  o.max_positions = get_int(c, cfile, "max_position_embeddings");
  o.scale_embedding = value_or<bool>(c, "scale_embedding", false);
  o.experts = 1;
  const fs::path g = dir / "generation_config.json";
  hf.generation = fs::exists(g) ? read_json(g) : json::object();
  return hf;
}

HfBart load_hf_bart(const fs::path& dir) {
  HfBart hf = read_hf_bart_config(dir);
  const fs::path wfile = dir / "model.safetensors";
  if (!fs::exists(wfile)) {
    std::string why = "missing";
    if (fs::exists(dir / "model.safetensors.index.json")) why = "missing (sharded checkpoints are not supported: save with a larger max_shard_size)";
    else if (fs::exists(dir / "pytorch_model.bin")) why = "missing (only pytorch_model.bin is there: convert it with save_pretrained(safe_serialization=True))";
    throw DataError(wfile.string(), 0, why);
  }
  auto file = io::load_safetensors(wfile);
  const bool prefixed = file.tensors.count("model.shared.weight") || file.tensors.count("model.encoder.embed_tokens.weight");
  std::map<std::string, torch::Tensor> s;
  for (auto& [name, t] : file.tensors) {
    std::string n = name;
    if (!prefixed && n != "final_logits_bias" && n != "lm_head.weight") n = "model." + n;  // saved from BartModel
    if (!t.is_floating_point()) throw DataError(wfile.string(), 0, "tensor '" + name + "' is not floating point");
    s[n] = t.to(torch::kFloat);
  }
  // tied aliases of the shared embedding
  for (const char* alias : {"model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight", "lm_head.weight"}) {
    auto it = s.find(alias);
    if (it == s.end()) continue;
    auto sh = s.find("model.shared.weight");
    if (sh == s.end()) {
      s["model.shared.weight"] = it->second;
    } else if (it->second.sizes() != sh->second.sizes() || !torch::equal(it->second, sh->second)) {
      throw DataError(wfile.string(), 0, std::string("tensor '") + alias + "' differs from model.shared.weight (an untied embedding or LM head is not supported)");
    }
    s.erase(std::string(alias));
  }
  if (!s.count("final_logits_bias")) s["final_logits_bias"] = torch::zeros({1, hf.options.vocab_size});
  for (auto& [n, t] : s)
    if (!dense_name_ok(n)) throw DataError(wfile.string(), 0, "unexpected tensor '" + n + "' (not part of a BART model)");
  // Names and shapes against the dense model of the architecture (without allocating it: the
  // encoder/decoder layer names are fixed).
  const auto& o = hf.options;
  const int64_t D = o.layer.d_model, F = o.layer.ffn_dim;
  std::map<std::string, std::vector<int64_t>> want;
  want["model.shared.weight"] = {o.vocab_size, D};
  want["final_logits_bias"] = {1, o.vocab_size};
  auto attn = [&](const std::string& p) {
    for (const char* m : {"q_proj", "k_proj", "v_proj", "out_proj"}) {
      want[p + "." + m + ".weight"] = {D, D};
      want[p + "." + m + ".bias"] = {D};
    }
    want[p + "_layer_norm.weight"] = {D};
    want[p + "_layer_norm.bias"] = {D};
  };
  for (const char* stack : {"encoder", "decoder"}) {
    const std::string st = std::string("model.") + stack;
    want[st + ".embed_positions.weight"] = {o.max_positions + 2, D};
    want[st + ".layernorm_embedding.weight"] = {D};
    want[st + ".layernorm_embedding.bias"] = {D};
    const int64_t L = std::string(stack) == "encoder" ? o.encoder_layers : o.decoder_layers;
    for (int64_t i = 0; i < L; ++i) {
      const std::string p = st + ".layers." + std::to_string(i);
      attn(p + ".self_attn");
      if (std::string(stack) == "decoder") attn(p + ".encoder_attn");
      want[p + ".fc1.weight"] = {F, D};
      want[p + ".fc1.bias"] = {F};
      want[p + ".fc2.weight"] = {D, F};
      want[p + ".fc2.bias"] = {D};
      want[p + ".final_layer_norm.weight"] = {D};
      want[p + ".final_layer_norm.bias"] = {D};
    }
  }
  for (auto& [n, shape] : want) {
    auto it = s.find(n);
    if (it == s.end()) throw DataError(wfile.string(), 0, "missing tensor '" + n + "' (config.json describes a model that has it)");
    if (it->second.sizes() != c10::IntArrayRef(shape)) {
      std::ostringstream m;
      m << "tensor '" << n << "' has shape " << it->second.sizes() << " but config.json implies " << c10::IntArrayRef(shape);
      throw DataError(wfile.string(), 0, m.str());
    }
  }
  for (auto& [n, t] : s)
    if (!want.count(n)) throw DataError(wfile.string(), 0, "unexpected tensor '" + n + "' (config.json describes no such parameter)");
  hf.state = std::move(s);
  return hf;
}

void check_hf_architecture(const HfBart& hf, const ModelOptions& mine) {
  const auto& h = hf.options;
  const std::string src = (hf.dir / "config.json").string();
  auto need = [&](const char* key, const char* hf_key, int64_t a, int64_t b) {
    if (a != b)
      throw ConfigError("", key, std::to_string(a) + " but the Hugging Face model (" + src + ") has " + hf_key + " = " +
                                     std::to_string(b) + "; set " + key + ": " + std::to_string(b));
  };
  need("model.d_model", "d_model", mine.layer.d_model, h.layer.d_model);
  need("model.heads", "encoder_attention_heads", mine.layer.heads, h.layer.heads);
  need("model.ffn_dim", "encoder_ffn_dim", mine.layer.ffn_dim, h.layer.ffn_dim);
  need("model.encoder_layers", "encoder_layers", mine.encoder_layers, h.encoder_layers);
  need("model.decoder_layers", "decoder_layers", mine.decoder_layers, h.decoder_layers);
  need("model.max_positions", "max_position_embeddings", mine.max_positions, h.max_positions);
  need("model.scale_embedding", "scale_embedding", mine.scale_embedding, h.scale_embedding);
  if (mine.vocab_size != h.vocab_size)
    throw ConfigError("", "tokenizer.kind", "the tokenizer has " + std::to_string(mine.vocab_size) +
                                                " tokens but the Hugging Face model (" + src + ") has vocab_size = " +
                                                std::to_string(h.vocab_size) + " (use tokenizer.kind: bart-bpe with the model's vocab.json)");
}

GenerationOptions hf_generation_options(const HfBart& hf) {
  GenerationOptions g;
  auto pick = [&](const char* key, auto dflt) -> decltype(dflt) {
    using T = decltype(dflt);
    if (hf.generation.contains(key) && !hf.generation[key].is_null()) return hf.generation[key].get<T>();
    if (hf.config.contains(key) && !hf.config[key].is_null()) return hf.config[key].get<T>();
    return dflt;
  };
  g.num_beams = pick("num_beams", int64_t{1});
  g.max_len = pick("max_length", int64_t{20});
  g.min_len = pick("min_length", int64_t{0});
  g.length_penalty = pick("length_penalty", 1.0);
  g.no_repeat_ngram = pick("no_repeat_ngram_size", int64_t{0});
  g.early_stopping = false;
  const std::string es_key = "early_stopping";
  const json& src = hf.generation.contains(es_key) ? hf.generation : hf.config;
  if (src.contains(es_key) && src[es_key].is_boolean()) g.early_stopping = src[es_key].get<bool>();
  else if (src.contains(es_key) && !src[es_key].is_null())
    throw DataError((hf.dir / (&src == &hf.generation ? "generation_config.json" : "config.json")).string(), 0,
                    "early_stopping = " + src[es_key].dump() + " is not supported (true or false)");
  if (hf.generation.value("do_sample", false))
    throw DataError((hf.dir / "generation_config.json").string(), 0, "do_sample = true is not supported (tlmoe decodes with greedy or beam search)");
  g.current_beam_search = true;  // what transformers' generate does with this file today (5.x)
  g.decoder_start_id = pick("decoder_start_token_id", int64_t{2});
  g.forced_bos_id = pick("forced_bos_token_id", int64_t{-1});
  g.forced_eos_id = pick("forced_eos_token_id", int64_t{-1});
  g.eos_id = pick("eos_token_id", int64_t{2});
  g.pad_id = pick("pad_token_id", int64_t{1});
  return g;
}

}  // namespace tlmoe::model
