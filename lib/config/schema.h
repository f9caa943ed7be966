// The field declarations behind Config: one FieldSpec per key. Internal to lib/config.
#pragma once

#include <yaml-cpp/yaml.h>

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "config/config.h"

namespace tlmoe::config_detail {

struct FieldSpec {
  std::string key;      // "model.d_model"
  std::string type;     // "int", "float", "bool", "string", "list of float", ...
  std::string help;
  std::string default_text;
  std::vector<std::string> choices;          // enum values, when the field is an enum
  std::optional<double> min, max;            // inclusive bounds for numbers (and list items)
  std::string used_by;                       // commands that read the field
  // Parses `node` into the field of `cfg`; throws ConfigError(where, key, ...).
  std::function<void(Config& cfg, const YAML::Node& node, const std::string& where)> parse;
  std::function<void(const Config& cfg, YAML::Emitter& out)> emit;
  std::function<void(Config& cfg)> set_default;
};

struct SectionSpec {
  std::string name;
  std::string help;
};

// Every field, in declaration order (the order of `config show` and docs/config.md).
const std::vector<FieldSpec>& fields();
const std::vector<SectionSpec>& sections();
const FieldSpec* find_field(const std::string& key);

}  // namespace tlmoe::config_detail
