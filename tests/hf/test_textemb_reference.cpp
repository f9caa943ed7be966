// task_rep.textemb_variant: reference against the reference's recipe run in transformers
// (tests/golden/check_textemb.py): the decoder's states on the shifted input, averaged over every
// position of batches of 8 (pads included), then over the examples.
#include <torch/torch.h>

#include <catch2/catch.hpp>

#include <filesystem>

#include "hf_test_util.h"
#include "io/safetensors.h"
#include "model/load_model.h"
#include "test_util.h"
#include "train/task_rep_compute.h"

namespace fs = std::filesystem;
using namespace tlmoe;

TEST_CASE("textemb reference variant: transformers' BartModel gives the same vector", "[hf][taskrep]") {
  const fs::path golden = test::path_setting("TLMOE_TEST_GOLDEN_DIR", TLMOE_GOLDEN_DIR);
  const fs::path src = golden / "tiny_a";
  auto lm = model::load_model("hf:" + src.string());
  // 19 examples (batches of 8, 8, 3) of different lengths: every batch has pads in some rows
  torch::manual_seed(9);
  std::vector<data::Example> ex;
  int64_t longest = 0;
  for (int i = 0; i < 19; ++i) {
    data::Example e;
    const int64_t len = 3 + (i * 7) % 11;
    e.input.push_back(0);
    for (int64_t j = 0; j < len; ++j) e.input.push_back(static_cast<int32_t>(torch::randint(3, 520, {1}).item<int64_t>()));
    e.input.push_back(2);
    e.outputs = {{0, 5, 2}};
    longest = std::max<int64_t>(longest, static_cast<int64_t>(e.input.size()));
    ex.push_back(e);
  }
  const auto v = train::textemb_reference(lm.model, ex, /*pad=*/1, /*start=*/2);
  auto ids = torch::full({19, longest}, 1, torch::kLong);
  for (int64_t i = 0; i < 19; ++i)
    for (size_t j = 0; j < ex[i].input.size(); ++j) ids[i][static_cast<int64_t>(j)] = ex[i].input[j];
  test::TempDir d;
  io::save_safetensors(d / "t.safetensors", {{"ids", ids}, {"expected", v.contiguous()}});
  std::string out;
  const int rc = test::run_python("'" + (fs::path(test::source_dir()) / "tests/golden/check_textemb.py").string() + "' '" +
                                      src.string() + "' '" + (d / "t.safetensors").string() + "'",
                                  &out);
  INFO(out);
  WARN(out);
  CHECK(rc == 0);
}
