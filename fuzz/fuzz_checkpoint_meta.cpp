// Fuzz target: a checkpoint's meta.json (lib/io/checkpoint.cpp, load_checkpoint). A checkpoint
// directory is made once, with a tiny valid model.safetensors; each input becomes its meta.json.
// With the format fields right, the loader goes on to read the tensors; the config that
// load_model would read from "config" is fuzzed as YAML by fuzz_config (config_from_yaml_text).
#include "fuzz_util.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"

using namespace tlmoe;

namespace {
std::filesystem::path checkpoint_dir;
}

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  checkpoint_dir = fuzz::scratch() / "checkpoint";
  std::filesystem::create_directories(checkpoint_dir);
  io::save_safetensors(checkpoint_dir / "model.safetensors",
                       {{"task_table.weight", torch::arange(6, torch::kFloat32).reshape({2, 3})},
                        {"router.step", torch::tensor(std::int64_t{7})}},
                       {{"format", "pt"}});
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fuzz::write_bytes(checkpoint_dir / "meta.json", fuzz::as_text(data, size));
  fuzz::expect_input_error("load_checkpoint", [&] {
    io::LoadedCheckpoint c = io::load_checkpoint(checkpoint_dir, true);
    fuzz::check(c.model.size() == 2 && c.optimizer.empty(), "load_checkpoint", "unexpected tensors");
    fuzz::check(c.meta.is_object(), "load_checkpoint", "meta is not an object");
  });
  return 0;
}
