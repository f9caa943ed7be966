// Hugging Face directories exactly as transformers saves them, through the command line with no
// restated settings: `tlmoe eval --checkpoint hf:DIR` predicts, string for string, what
// transformers' own generate() + decode() give (tests/golden/hf_generate.py, run here with
// transformers 5.x for eval.semantics current and 4.x for legacy); adapt starts from hf:DIR; a
// run trained from one keeps its decoding settings; analyze-routes refuses it. The directories
// (tests/golden/make_golden.py, e2e_*) differ from each other in tokenizer layout (tokenizer.json
// only, vocab.json + merges.txt), layer counts, head sizes, scale_embedding and decoding settings.
#include <catch2/catch.hpp>

#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>

#include "hf_test_util.h"
#include "test_util.h"

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace tlmoe;

namespace {

const fs::path kGolden = test::path_setting("TLMOE_TEST_GOLDEN_DIR", TLMOE_GOLDEN_DIR);

// Inputs with spaces before punctuation, non-ASCII text, <mask> and contractions.
const std::vector<std::string> kInputs = {
    "Hello , world ! don 't stop",  "Zürich, naïve café — 日本語 😀", "a <mask> b",
    "it's 3.14 isn't it?",          "we 're here . ok",              "x",
    "I 'm fine , thanks .",         "Привет , мир !"};

// A CrossFit-layout data set: unseen task "probe" (k-shot files of seed 13, test = kInputs) and
// upstream task "up" (full train/dev files), and a config that names only the data.
fs::path write_data(const fs::path& root) {
  test::write_text(root / "data/splits.json", R"({"all": ["probe", "up"], "train": ["up"], "dev": [], "test": ["probe"]})");
  test::write_text(root / "data/tasks.json", R"({"probe": {"metric": "EM"}, "up": {"metric": "EM"}})");
  std::string test_lines, up_lines;
  for (const auto& in : kInputs) test_lines += in + "\tok\n";
  for (int i = 0; i < 12; ++i) up_lines += "word " + std::to_string(i) + " , more .\tw" + std::to_string(i % 3) + "\n";
  for (const char* sp : {"train", "dev"}) test::write_text(root / ("data/probe/probe_4_13_" + std::string(sp) + ".tsv"), "a b\tok\nc d\tok\n");
  test::write_text(root / "data/probe/probe_4_13_test.tsv", test_lines);
  test::write_text(root / "data/up/up_full_train.tsv", up_lines);
  test::write_text(root / "data/up/up_full_dev.tsv", up_lines.substr(0, up_lines.find('\n', 40) + 1));
  const fs::path cfg = root / "c.yaml";
  test::write_text(cfg, "device: cpu\ndata:\n  dir: " + (root / "data").string() + "\n  upstream_source: full\n");
  return cfg;
}

std::vector<std::string> read_predictions(const fs::path& file) {
  std::vector<std::string> out;
  std::istringstream in(test::read_text(file));
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) out.push_back(json::parse(line).at("prediction").get<std::string>());
  return out;
}

// transformers' predictions for the probe inputs, under `semantics`.
json transformers_predictions(const fs::path& model, const std::string& semantics, const fs::path& work) {
  json req = {{"semantics", semantics}, {"texts", json::array()}};
  for (const auto& in : kInputs) req["texts"].push_back(" [probe] " + in);
  test::write_text(work / "request.json", req.dump());
  std::string py;
  const int rc = tlmoe::test::run_python("'" + (fs::path(test::source_dir()) / "tests/golden/hf_generate.py").string() + "' '" +
                                model.string() + "' '" + (work / "request.json").string() + "' '" +
                                (work / "expected.json").string() + "'",
                            &py);
  INFO(py);
  REQUIRE(rc == 0);
  return json::parse(test::read_text(work / "expected.json"));
}

}  // namespace

TEST_CASE("hf cli: eval --checkpoint hf:DIR equals transformers' generate + decode, string for string, in both semantics", "[hf]") {
  int compared = 0, nonascii = 0;
  for (const char* name : {"e2e_json", "e2e_vocab"}) {
    const fs::path model = kGolden / name;
    REQUIRE(fs::exists(model / "config.json"));  // made by the ctest fixture "hf: make golden files"
    for (const std::string semantics : {"current", "legacy"}) {
      INFO("model " << name << ", semantics " << semantics);
      test::TempDir t;
      const fs::path cfg = write_data(t.path());
      const std::string set = semantics == "legacy" ? " --set eval.semantics=legacy" : "";
      auto r = test::run_tlmoe("eval --config " + cfg.string() + " --checkpoint hf:" + model.string() +
                               " --tasks probe --out " + (t / "out").string() + set);
      INFO(r.output);
      REQUIRE(r.exit_code == 0);
      // the directory's generation_config.json, without restating it
      CHECK_THAT(r.output, Catch::Contains(std::string(name) == "e2e_json" ? "beams 4, max_len 20, min_len 3" : "beams 3, max_len 16"));
      CHECK_THAT(r.output, Catch::Contains("semantics " + semantics));
      const auto got = read_predictions(t / "out/predictions/probe.jsonl");
      const json want = transformers_predictions(model, semantics, t.path());
      INFO("transformers " << want.at("transformers").get<std::string>());
      REQUIRE(got.size() == kInputs.size());
      for (size_t i = 0; i < got.size(); ++i) {
        const std::string w = want.at("predictions").at(i).get<std::string>();
        INFO("input '" << kInputs[i] << "'");
        CHECK(got[i] == w);
        ++compared;
        for (unsigned char c : w) nonascii += c >= 0x80;
      }
      const json summary = json::parse(test::read_text(t / "out/summary.json"));
      CHECK(summary.at("complete").get<bool>());
    }
  }
  CHECK(compared == 32);
  CHECK(nonascii > 0);  // U+FFFD of invalid byte sequences, at least
}

TEST_CASE("hf cli: an architecture the config contradicts is refused, lengths beyond the model's positions are capped", "[hf]") {
  test::TempDir t;
  const fs::path cfg = write_data(t.path());
  const fs::path model = kGolden / "e2e_vocab";
  auto r = test::run_tlmoe("eval --config " + cfg.string() + " --checkpoint hf:" + model.string() +
                           " --tasks probe --set model.d_model=48");
  INFO(r.output);
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.output, Catch::Contains("model.d_model") && Catch::Contains("d_model = 24"));
  // data.max_input_len defaults to 512; the model has 80 positions
  r = test::run_tlmoe("eval --config " + cfg.string() + " --checkpoint hf:" + model.string() + " --tasks probe");
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.output, Catch::Contains("data.max_input_len: 512 capped at 80"));
  // an unknown task among known ones: refused before anything is decoded or written
  r = test::run_tlmoe("eval --config " + cfg.string() + " --checkpoint hf:" + model.string() + " --tasks probe,nosuch --out " +
                      (t / "bad").string());
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.output, Catch::Contains("'nosuch'"));
  CHECK_FALSE(fs::exists(t / "bad"));
  // explicit decoding keys win over generation_config.json
  r = test::run_tlmoe("eval --config " + cfg.string() + " --checkpoint hf:" + model.string() +
                      " --tasks probe --set eval.num_beams=1 --set eval.max_len=9");
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.output, Catch::Contains("greedy, max_len 9"));
}

TEST_CASE("hf cli: adapt from hf:DIR, train from it, and the run's checkpoint keeps the directory's decoding settings", "[hf]") {
  test::TempDir t;
  const fs::path cfg = write_data(t.path());
  const fs::path model = kGolden / "e2e_json";
  const std::string sets = " --set adapt.lrs=[1e-4] --set adapt.batch_sizes=[2] --set adapt.steps=2 --set adapt.eval_every=2";
  auto r = test::run_tlmoe("adapt --plain --config " + cfg.string() + " --checkpoint hf:" + model.string() +
                           " --tasks probe --out " + (t / "adapt").string() + sets);
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.output, Catch::Contains("beams 4, max_len 20"));
  CHECK(fs::exists(t / "adapt/summary.json"));
  // a TL-MoE trained from the directory, no model keys restated but experts
  r = test::run_tlmoe("train --plain --config " + cfg.string() + " --set model.init_from=hf:" + model.string() +
                      " --set model.experts=2 --set train.steps=2 --set train.batch_size=4 --set train.select_by=loss"
                      " --set task_rep.dim=8 --set routing.hidden=8 --run-dir " + (t / "run").string());
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  const json meta = json::parse(test::read_text(t / "run/last/meta.json"));
  CHECK(meta.at("hf_source").at("generation").at("num_beams").get<int>() == 4);
  // ... evaluated with the data config alone: the run's tokenizer and the directory's decoding settings
  r = test::run_tlmoe("eval --config " + cfg.string() + " --checkpoint " + (t / "run/last").string() + " --tasks probe");
  INFO(r.output);
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.output, Catch::Contains("beams 4, max_len 20, min_len 3"));
  // analyze-routes has nothing to analyze in a dense Hugging Face model
  r = test::run_tlmoe("analyze-routes --checkpoint hf:" + model.string() + " --out " + (t / "an").string());
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.output, Catch::Contains("no routes"));
}
