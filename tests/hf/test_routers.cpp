// The ten router types of the reference against PyTorch modules built as the reference describes
// them (tests/golden/check_routers.py): same parameters by name, same logits.
#include <torch/torch.h>

#include <catch2/catch.hpp>

#include <filesystem>
#include <map>

#include "hf_test_util.h"
#include "io/safetensors.h"
#include "model/router.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace tlmoe::model;

TEST_CASE("routers: the reference's ten types compute what torch.nn modules built as the reference's do", "[hf][routers]") {
  tlmoe::test::TempDir d;
  torch::manual_seed(5);
  std::string files;
  for (const auto& kind : router_kinds()) {
    RouterOptions o;
    o.kind = kind;
    o.d_in = 16;
    o.hidden = 8;
    o.layers = 4;
    o.experts = 3;
    auto r = make_router(o);
    for (auto& p : r->parameters()) p.data().normal_(0.0, 0.3);  // biases and norms away from their init too
    r->eval();
    torch::NoGradGuard ng;
    const auto z = torch::randn({5, o.d_in});
    std::vector<std::pair<std::string, torch::Tensor>> t;
    for (const auto& p : r->named_parameters()) t.emplace_back(p.key(), p.value().contiguous());
    t.emplace_back("input.z", z);
    t.emplace_back("output.logits", r->forward(z).contiguous());
    const fs::path f = d / (kind + ".safetensors");
    tlmoe::io::save_safetensors(f, t,
                                {{"kind", kind}, {"d_in", "16"}, {"hidden", "8"}, {"layers", "4"}, {"experts", "3"},
                                 {"heads", std::to_string(o.transformer_heads)}, {"ffn", std::to_string(o.transformer_ffn)}});
    files += " '" + f.string() + "'";
  }
  std::string out;
  const int rc = tlmoe::test::run_python(
      "'" + (fs::path(tlmoe::test::source_dir()) / "tests/golden/check_routers.py").string() + "'" + files, &out);
  INFO(out);
  WARN(out);
  CHECK(rc == 0);
}
