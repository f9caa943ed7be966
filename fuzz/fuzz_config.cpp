// Fuzz target: the YAML config loader (lib/config): load_config on the input written as a config
// file, config_from_yaml_text on the input (a checkpoint's saved config), and the input's lines
// as --set overrides. A config that loads must survive the trip through to_yaml (what a
// checkpoint's meta.json keeps) and load back to the same YAML.
//
// The input file lies in a copy of the repository's configs/ (configs/paper/fuzz.yaml), so that
// `base:` chains of the seed configs resolve.
#include <filesystem>
#include <string>
#include <vector>

#include "config/config.h"
#include "fuzz_util.h"

using namespace tlmoe;
namespace fs = std::filesystem;

namespace {

fs::path config_file;

void check_round_trip(const Config& cfg, const char* where) {
  const std::string yaml = to_yaml(cfg);
  fuzz::expect_input_error(where, [&] {
    try {
      Config again = config_from_yaml_text(yaml, "to_yaml");
      fuzz::check(to_yaml(again) == yaml, where, "to_yaml -> config_from_yaml_text -> to_yaml changes the YAML:\n" + yaml);
    } catch (const InputError& e) {
      fuzz::finding(where, std::string("to_yaml output does not load back: ") + e.what() + "\n" + yaml);
    }
  });
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const fs::path configs = fuzz::scratch() / "configs";
  fs::copy(fs::path(TLMOE_SOURCE_DIR) / "configs", configs, fs::copy_options::recursive);
  config_file = configs / "paper" / "fuzz.yaml";
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(fuzz::as_text(data, size));
  fuzz::write_bytes(config_file, text);

  fuzz::expect_input_error("load_config", [&] {
    Config cfg = load_config(ConfigSources{config_file.string(), {}});
    check_round_trip(cfg, "load_config round trip");
  });
  fuzz::expect_input_error("config_from_yaml_text", [&] {
    Config cfg = config_from_yaml_text(text, "meta.json config");
    check_round_trip(cfg, "config_from_yaml_text round trip");
  });

  // Each line an override (`--set section.key=value`), at most 16 of them, on the defaults.
  std::vector<std::string> overrides;
  for (std::size_t pos = 0; pos <= text.size() && overrides.size() < 16;) {
    std::size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) nl = text.size();
    if (nl > pos) overrides.push_back(text.substr(pos, nl - pos));
    pos = nl + 1;
  }
  if (!overrides.empty())
    fuzz::expect_input_error("--set overrides", [&] {
      Config cfg = load_config(ConfigSources{"", overrides});
      check_round_trip(cfg, "--set round trip");
    });
  return 0;
}
