// tlmoe: the command-line entry point. Wires the subcommands and maps exceptions to exit codes:
// 0 success; 2 bad usage, bad config or bad input data; 1 a failure while running.
#include <filesystem>
#include <cstdlib>
#include <iostream>

#include "commands.h"
#include "common/error.h"
#include "common/host_cache.h"
#include "common/version.h"
#include "io/atomic_file.h"

namespace tlmoe::app {

void add_config_options(CLI::App* cmd, ConfigOptions& opts, bool required) {
  auto* c = cmd->add_option("--config,-c", opts.file, "YAML config file (a `base:` key inherits another file)");
  if (required) c->required();
  cmd->add_option("--set", opts.overrides, "Override one key: --set section.key=value (repeatable; YAML value)")
      ->allow_extra_args(false);
}

void write_resolved_config(const Config& cfg, const std::string& run_dir) {
  io::write_file_atomic(std::filesystem::path(run_dir) / "config.resolved.yaml", to_yaml(cfg));
}

}  // namespace tlmoe::app

int main(int argc, char** argv) {
  using namespace tlmoe;
  // Activations and dispatch buffers of tens of MB are allocated and freed every step; with
  // LibTorch's transparent-huge-page allocation (THP_MEM_ALLOC_ENABLE, read at the first
  // allocation) they are faulted in 2 MiB at a time instead of 4 KiB, which made a 50 MB gather
  // about 3.7x faster on the development machine (docs/benchmarks.md). A value the user set wins.
  setenv("THP_MEM_ALLOC_ENABLE", "1", /*overwrite=*/0);
  // Large CPU tensors reuse freed blocks instead of a fresh mmap each (common/host_cache.h);
  // TLMOE_MALLOC=system keeps LibTorch's allocator as it is.
  const char* malloc_env = std::getenv("TLMOE_MALLOC");
  const std::string malloc_choice = malloc_env ? malloc_env : "";
  if (!malloc_choice.empty() && malloc_choice != "cache" && malloc_choice != "system") {
    std::cerr << "error: environment variable TLMOE_MALLOC='" << malloc_choice
              << "': expected 'cache' (the default) or 'system'\n";
    return 2;
  }
  if (malloc_choice != "system") install_host_cache();
  CLI::App app{
      "tlmoe: task-level mixture-of-experts seq2seq models — train, adapt, evaluate, and analyse routes.\n"
      "Docs: docs/ in the source tree (one page per command)."};
  app.require_subcommand(1);
  app.fallthrough(false);
  bool show_version = false;
  app.add_flag("--version", show_version, "Print the version, git SHA, LibTorch version and CUDA status");
  app.set_help_all_flag("--help-all", "Help for every subcommand");
  app::setup_gym(app);
  app::setup_preprocess(app);
  app::setup_train(app);
  app::setup_adapt(app);
  app::setup_eval(app);
  app::setup_analyze_routes(app);
  app::setup_bench(app);
  app::setup_export(app);
  app::setup_config(app);

  // --version must work without a subcommand.
  for (int i = 1; i < argc; ++i)
    if (std::string(argv[i]) == "--version") {
      std::cout << version_banner() << "CPU block cache: " << (host_cache_installed() ? "on" : "off")
                << " (TLMOE_MALLOC)\n";
      return 0;
    }

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "error: " << e.what() << "\nRun with --help for usage.\n";
    return 2;
  } catch (const InputError& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 2;
  } catch (const std::filesystem::filesystem_error& e) {
    // An output path that cannot be written (a file where a folder must go, no permission, a
    // read-only file system) is the user's to fix, like bad input: exit 2, naming the path.
    const auto c = e.code();
    const bool users = c == std::errc::permission_denied || c == std::errc::not_a_directory ||
                       c == std::errc::is_a_directory || c == std::errc::read_only_file_system ||
                       c == std::errc::file_exists;
    std::cerr << "error: cannot write " << (e.path1().empty() ? std::string("an output") : e.path1().string())
              << ": " << c.message() << "\n";
    return users ? 2 : 1;
  } catch (const std::exception& e) {
    std::cerr << "error: " << tlmoe::without_stack_frames(e.what()) << "\n";
    return 1;
  }
  return 0;
}
