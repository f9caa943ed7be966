#include "config/config.h"

#include <cstdio>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <set>
#include <sstream>

#include "common/error.h"
#include "common/strings.h"
#include "config/schema.h"
#include "io/atomic_file.h"

namespace fs = std::filesystem;

namespace tlmoe {

using config_detail::FieldSpec;
using config_detail::fields;
using config_detail::find_field;
using config_detail::sections;

namespace {

bool is_section(const std::string& name) {
  for (const auto& s : sections())
    if (s.name == name) return true;
  return false;
}

// The nearest valid key to an unknown one: compared on the full path and on the last
// component (so "model.dmodel" suggests "model.d_model", "train.learning_rate" -> "train.lr"
// is too far and suggests nothing misleading).
std::string suggestion(const std::string& key) {
  std::vector<std::string> candidates;
  for (const auto& f : fields()) candidates.push_back(f.key);
  for (const auto& s : sections()) candidates.push_back(s.name);
  std::string best;
  std::size_t best_d = std::string::npos;
  std::string leaf = key.substr(key.rfind('.') == std::string::npos ? 0 : key.rfind('.') + 1);
  for (const auto& c : candidates) {
    std::size_t d = edit_distance(key, c);
    std::string c_leaf = c.substr(c.rfind('.') == std::string::npos ? 0 : c.rfind('.') + 1);
    d = std::min(d, edit_distance(leaf, c_leaf) + (key.substr(0, key.size() - leaf.size()) ==
                                                           c.substr(0, c.size() - c_leaf.size())
                                                       ? 0
                                                       : 2));
    if (d < best_d) best_d = d, best = c;
  }
  std::size_t limit = std::max<std::size_t>(2, leaf.size() / 3);
  return best_d <= limit ? best : "";
}

// Keys renamed since a release: the old name still sets the new key (checkpoints keep their
// resolved config, which names every key of its day).
const std::map<std::string, std::string>& renamed_keys() {
  static const std::map<std::string, std::string> m = {{"eval.beam_search", "eval.semantics"}};
  return m;
}

std::string current_name(const std::string& key) {
  auto it = renamed_keys().find(key);
  return it == renamed_keys().end() ? key : it->second;
}

[[noreturn]] void unknown_key(const std::string& where, const std::string& key) {
  std::string msg = "unknown key";
  std::string s = suggestion(key);
  if (!s.empty()) msg += " (did you mean '" + s + "'?)";
  msg += "; `tlmoe config show` lists every key";
  throw ConfigError(where, key, msg);
}

std::string mark_of(const std::string& file, const YAML::Node& node) {
  const YAML::Mark m = node.Mark();
  if (m.line < 0) return file;
  return file + ":" + std::to_string(m.line + 1);
}

YAML::Node load_yaml_file(const std::string& file) {
  std::error_code ec;
  if (!fs::exists(file, ec)) throw ConfigError(file, "", ec ? "cannot read the config file: " + ec.message() : "config file not found");
  if (const std::string why = io::file_kind_problem(file); !why.empty()) throw ConfigError(file, "", "config file " + why);
  try {
    return YAML::LoadFile(file);
  } catch (const YAML::ParserException& e) {
    throw ConfigError(file + ":" + std::to_string(e.mark.line + 1), "", "YAML syntax error: " + e.msg);
  } catch (const YAML::BadFile&) {
    throw ConfigError(file, "", "cannot read config file");
  }
}

// Applies every (key, value) of a YAML mapping to cfg, recursing into sections.
void apply_mapping(Config& cfg, const YAML::Node& map, const std::string& prefix,
                   const std::string& file) {
  std::map<std::string, std::string> seen;  // name -> where it was first given
  for (auto it = map.begin(); it != map.end(); ++it) {
    if (!it->first.IsScalar()) throw ConfigError(mark_of(file, it->first), prefix, "a key must be a plain name");
    const std::string name = it->first.Scalar();
    const std::string key = current_name(prefix.empty() ? name : prefix + "." + name);
    const YAML::Node value = it->second;  // a copy: the iterator's pair is a temporary proxy
    const std::string where = mark_of(file, it->first);
    if (auto [first, fresh] = seen.emplace(name, where); !fresh)
      throw ConfigError(where, prefix.empty() ? name : prefix + "." + name,
                        "is given twice in one mapping (first at " + first->second + "): remove one");
    if (prefix.empty() && name == "base") continue;  // handled by load_chain
    if (const FieldSpec* f = find_field(key)) {
      if (value.IsNull()) throw ConfigError(where, key, "has no value");
      f->parse(cfg, value, where);
      cfg.explicit_keys.insert(key);
      cfg.key_origin[key] = where;
    } else if (prefix.empty() && is_section(name)) {
      if (value.IsNull()) continue;  // an empty section is harmless
      if (!value.IsMap()) throw ConfigError(where, key, "is a section: expected a mapping of keys");
      apply_mapping(cfg, value, key, file);
    } else {
      unknown_key(where, key);
    }
  }
}

// Applies `file` after the chain of its `base:` files, deepest first.
void load_chain(Config& cfg, const std::string& file, std::vector<std::string>& stack) {
  std::error_code ec;
  const fs::path canonical = fs::weakly_canonical(file, ec);  // a name too long, say: load_yaml_file says why
  const std::string canon = ec ? file : canonical.string();
  if (std::find(stack.begin(), stack.end(), canon) != stack.end()) {
    std::string chain;
    for (const auto& s : stack) chain += s + " -> ";
    throw ConfigError(file, "base", "circular base chain: " + chain + canon);
  }
  stack.push_back(canon);
  YAML::Node root = load_yaml_file(file);
  if (root.IsNull()) {
    stack.pop_back();
    return;  // an empty file sets nothing
  }
  if (!root.IsMap()) throw ConfigError(file, "", "the top level must be a mapping of sections");
  if (YAML::Node base = root["base"]) {
    if (!base.IsScalar() || base.Scalar().empty())
      throw ConfigError(mark_of(file, base), "base", "expected the path of another config file");
    fs::path bp = base.Scalar();
    if (bp.is_relative()) bp = fs::path(file).parent_path() / bp;
    if (!fs::exists(bp, ec))
      throw ConfigError(mark_of(file, base), "base",
                        (ec ? "cannot read the base file (" + ec.message() + "): " : "base file not found: ") + bp.string());
    load_chain(cfg, bp.string(), stack);
  }
  apply_mapping(cfg, root, "", file);
  stack.pop_back();
}

void apply_override(Config& cfg, const std::string& assignment) {
  const std::string where = "--set " + assignment;
  auto eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0)
    throw ConfigError(where, "", "expected section.key=value");
  const std::string key = current_name(assignment.substr(0, eq));
  const std::string text = assignment.substr(eq + 1);
  const FieldSpec* f = find_field(key);
  if (!f) {
    if (is_section(key)) throw ConfigError(where, key, "is a section; set one of its keys, e.g. " + key + ".<key>=value");
    unknown_key(where, key);
  }
  YAML::Node value;
  try {
    value = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    throw ConfigError(where, key, "cannot parse value: " + e.msg);
  }
  if (value.IsNull()) {
    // "key=" means the empty string for string fields.
    value = YAML::Node(std::string());
  }
  f->parse(cfg, value, where);
  cfg.explicit_keys.insert(key);
  cfg.key_origin[key] = where;
}

// A cross-field check: the error names where `key` was set (file and line, or the --set), when it was.
// A cross-field check: the error names where `key` was set (file and line, or the --set), or else
// where the first of the `related` keys it is checked against was set.
template <class T>
void check(const Config& c, bool ok, const std::string& key, const T& msg, std::initializer_list<const char*> related = {}) {
  if (ok) return;
  std::string where = c.origin(key);
  for (const char* r : related)
    if (where.empty()) where = c.origin(r);
  throw ConfigError(where, key, msg);
}

std::string resolve_under_dir(const Config& cfg, const std::string& value, const std::string& name) {
  if (!value.empty()) return value;
  return (fs::path(cfg.data.dir) / name).string();
}

}  // namespace

Config Config::defaults() {
  Config c;
  for (const auto& f : fields()) f.set_default(c);
  return c;
}

Config load_config(const ConfigSources& sources) {
  Config cfg = Config::defaults();
  if (!sources.file.empty()) {
    std::vector<std::string> stack;
    load_chain(cfg, sources.file, stack);
  }
  for (const auto& s : sources.overrides) apply_override(cfg, s);
  validate(cfg);
  return cfg;
}

Config config_from_yaml_text(const std::string& yaml, const std::string& source) {
  Config cfg = Config::defaults();
  YAML::Node root;
  try {
    root = YAML::Load(yaml);
  } catch (const YAML::ParserException& e) {
    throw ConfigError(source + ":" + std::to_string(e.mark.line + 1), "", "YAML syntax error: " + e.msg);
  }
  if (!root.IsNull()) {
    if (!root.IsMap()) throw ConfigError(source, "", "the top level must be a mapping of sections");
    apply_mapping(cfg, root, "", source);
  }
  validate(cfg);
  return cfg;
}

void validate(const Config& c) {
  if (c.routing.router == "transformer" || c.routing.router == "transformer_layer_specific") {
    const bool shared = c.routing.router == "transformer";
    const int64_t width = shared ? c.task_rep.dim : c.routing.hidden;
    check(c, width % c.routing.transformer_heads == 0, "routing.transformer_heads",
          "routing.transformer_heads (" + std::to_string(c.routing.transformer_heads) + ") must divide the " +
              c.routing.router + " router's width, " + (shared ? "task_rep.dim" : "routing.hidden") + " (" +
              std::to_string(width) + ")",
          {shared ? "task_rep.dim" : "routing.hidden"});
  }
  check(c, c.model.d_model % c.model.heads == 0, "model.heads",
        "model.heads (" + std::to_string(c.model.heads) + ") must divide model.d_model (" +
            std::to_string(c.model.d_model) + ")", {"model.d_model"});
  check(c, c.routing.top_k <= c.model.experts, "routing.top_k",
        "routing.top_k (" + std::to_string(c.routing.top_k) + ") must be <= model.experts (" +
            std::to_string(c.model.experts) + ")", {"model.experts"});
  check(c, c.routing.tau_min <= c.routing.tau0, "routing.tau_min", "routing.tau_min must be <= routing.tau0", {"routing.tau0"});
  if (c.routing.baseline == "task_random")
    check(c, c.routing.random_n <= c.model.experts, "routing.random_n",
          "routing.random_n (" + std::to_string(c.routing.random_n) + ") must be <= model.experts (" +
              std::to_string(c.model.experts) + ")", {"model.experts"});
  for (auto [list, n, key] : {std::tuple{&c.model.vanilla_encoder_layers, c.model.encoder_layers, "model.vanilla_encoder_layers"},
                              std::tuple{&c.model.vanilla_decoder_layers, c.model.decoder_layers, "model.vanilla_decoder_layers"}}) {
    std::set<std::int64_t> seen;
    for (auto l : *list) {
      check(c, l < n, key, "layer index " + std::to_string(l) + " is out of range (the stack has " + std::to_string(n) + " layers)");
      check(c, seen.insert(l).second, key, "layer index " + std::to_string(l) + " is listed twice");
    }
  }
  check(c, c.data.max_input_len <= c.model.max_positions, "data.max_input_len",
        "data.max_input_len must be <= model.max_positions", {"model.max_positions"});
  check(c, c.eval.max_len + 1 <= c.model.max_positions, "eval.max_len", "eval.max_len must be < model.max_positions", {"model.max_positions"});
  check(c, !c.adapt.lrs.empty(), "adapt.lrs", "the learning-rate grid is empty");
  check(c, !c.adapt.batch_sizes.empty(), "adapt.batch_sizes", "the batch-size grid is empty");
  if (c.eval.tau != "checkpoint" && c.eval.tau != "min") {
    std::size_t pos = 0;
    double v = 0;
    try {
      v = std::stod(c.eval.tau, &pos);
    } catch (...) {
      pos = 0;
    }
    check(c, pos == c.eval.tau.size() && pos > 0 && v > 0 && std::isfinite(v), "eval.tau",
          "expected 'checkpoint', 'min' or a positive number, got '" + c.eval.tau + "'");
  }
  if (c.eval.pearson_fallback != "nan") {
    try {
      std::size_t pos = 0;
      std::stod(c.eval.pearson_fallback, &pos);
      check(c, pos == c.eval.pearson_fallback.size(), "eval.pearson_fallback", "expected 'nan' or a number");
    } catch (const ConfigError&) {
      throw;
    } catch (...) {
      throw ConfigError(c.origin("eval.pearson_fallback"), "eval.pearson_fallback", "expected 'nan' or a number, got '" + c.eval.pearson_fallback + "'");
    }
  }
  check(c, !c.data.dir.empty(), "data.dir", "must not be empty");
}

std::string to_yaml(const Config& cfg) {
  YAML::Emitter e;
  e << YAML::BeginMap;
  std::string open_section;
  for (const auto& f : fields()) {
    auto dot = f.key.find('.');
    std::string section = dot == std::string::npos ? "" : f.key.substr(0, dot);
    std::string leaf = dot == std::string::npos ? f.key : f.key.substr(dot + 1);
    if (section != open_section) {
      if (!open_section.empty()) e << YAML::EndMap;
      if (!section.empty()) e << YAML::Key << section << YAML::Value << YAML::BeginMap;
      open_section = section;
    }
    e << YAML::Key << leaf << YAML::Value;
    f.emit(cfg, e);
  }
  if (!open_section.empty()) e << YAML::EndMap;
  e << YAML::EndMap;
  return std::string(e.c_str()) + "\n";
}

std::vector<std::string> config_keys() {
  std::vector<std::string> keys;
  for (const auto& f : fields()) keys.push_back(f.key);
  return keys;
}

std::string config_reference_markdown() {
  std::ostringstream md;
  md << "# Configuration reference\n\n"
     << "<!-- Generated by `tlmoe config docs` (make docs) from lib/config/schema.cpp. Do not edit by hand;\n"
     << "     a test fails when this file and the declarations disagree. -->\n\n"
     << "Every tlmoe command that takes `--config FILE` reads one YAML file of sections. Precedence, lowest\n"
     << "first: the defaults below, the `base:` file(s) (a `base:` key names another config file, relative\n"
     << "to the file that names it; bases may chain), the `--config` file itself, then each\n"
     << "`--set section.key=value` in order (the value is YAML: `--set adapt.lrs=[1e-4,3e-4]`).\n"
     << "Unknown keys, wrong types and out-of-range values are refused with the file, line and key\n"
     << "(exit code 2), with the nearest valid key suggested. Every run writes the resolved config to\n"
     << "`config.resolved.yaml` in its run directory; `tlmoe config show FILE` prints it.\n\n";
  for (const auto& [from, to] : renamed_keys()) md << "`" << from << "` is the former name of `" << to << "` and still sets it.\n";
  if (!renamed_keys().empty()) md << "\n";
  auto row = [&](const FieldSpec& f, const std::string& leaf) {
    std::string type = f.type;
    if (!f.choices.empty()) {
      type = "";
      for (std::size_t i = 0; i < f.choices.size(); ++i) type += (i ? " \\| " : "") + f.choices[i];
    }
    std::string range;
    auto num = [](double x) {
      std::ostringstream s;
      s << x;
      return s.str();
    };
    if (f.min && f.max) range = " [" + num(*f.min) + ", " + num(*f.max) + "]";
    else if (f.min) range = " ≥ " + num(*f.min);
    md << "| `" << leaf << "` | " << type << range << " | `" << f.default_text << "` | " << f.help
       << " | " << f.used_by << " |\n";
  };
  md << "## Top level\n\n| key | type | default | meaning | used by |\n|---|---|---|---|---|\n";
  for (const auto& f : fields())
    if (f.key.find('.') == std::string::npos) row(f, f.key);
  for (const auto& s : sections()) {
    md << "\n## `" << s.name << "`\n\n" << s.help << "\n\n"
       << "| key | type | default | meaning | used by |\n|---|---|---|---|---|\n";
    for (const auto& f : fields())
      if (f.key.rfind(s.name + ".", 0) == 0) row(f, f.key);
  }
  return md.str();
}

std::string splits_path(const Config& cfg) { return resolve_under_dir(cfg, cfg.data.splits, "splits.json"); }
std::string tasks_path(const Config& cfg) { return resolve_under_dir(cfg, cfg.data.tasks, "tasks.json"); }
std::string ontology_path(const Config& cfg) { return resolve_under_dir(cfg, cfg.data.ontology, "ontology.json"); }
namespace {

std::string short_hash(const std::string& s) {  // FNV-1a 64, first 6 hex digits: names, not security
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ULL;
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return std::string(buf, 6);
}

}  // namespace

std::string cache_variant(const Config& cfg) {
  const auto& t = cfg.tokenizer;
  if (t.kind == "bart-bpe") return "bpe-" + short_hash(t.model.empty() ? cfg.model.init_from : t.model);
  if (!t.model.empty()) return "spm-given-" + short_hash(t.model);
  std::ostringstream opts;
  opts << t.model_type << "|" << t.character_coverage << "|" << t.max_train_lines << "|" << cfg.data.task_prefix;
  if (cfg.data.instruction) opts << "|instruction";  // absent when off: older caches keep their folder
  return "spm-" + cfg.data.upstream_source + "-" + std::to_string(t.vocab_size) + "-" + short_hash(opts.str());
}

std::string cache_dir(const Config& cfg) {
  if (!cfg.data.cache_dir.empty()) return resolve_under_dir(cfg, cfg.data.cache_dir, ".tlmoe-cache");
  return (std::filesystem::path(resolve_under_dir(cfg, "", ".tlmoe-cache")) / cache_variant(cfg)).string();
}

}  // namespace tlmoe
