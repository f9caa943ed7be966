// Hugging Face interoperability end to end: a Hugging Face BART directory goes in
// (model.init_from: hf:DIR, tokenizer.kind: bart-bpe), trains as a TL-MoE, and `tlmoe export`
// writes a per-task dense BART that transformers loads with the logits of tlmoe's routed model
// (checked by tests/golden/check_export.py in the real library).
#include <torch/torch.h>

#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "io/safetensors.h"
#include "model/hf_bart.h"
#include "model/tlmoe_model.h"
#include "test_util.h"
#include "text/bart_bpe_tokenizer.h"
#include "tiny_data.h"
#include "io/checkpoint.h"
#include "evaluate/predict.h"
#include "model/load_model.h"

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace tlmoe;

namespace {

const fs::path kGolden = test::path_setting("TLMOE_TEST_GOLDEN_DIR", TLMOE_GOLDEN_DIR);

// The tiny data set with the architecture and tokenizer of the golden tiny_a BART.
Config hf_config(const test::Tiny& t) {
  Config c = t.config();
  c.tokenizer.kind = "bart-bpe";
  c.model.init_from = "hf:" + (kGolden / "tiny_a").string();
  c.model.d_model = 16;
  c.model.heads = 2;
  c.model.ffn_dim = 32;
  c.model.encoder_layers = 1;
  c.model.decoder_layers = 1;
  c.model.max_positions = 64;
  c.model.scale_embedding = false;
  c.model.experts = 2;
  c.train.steps = 4;
  c.train.eval_every = 4;
  c.train.select_by = "loss";  // no dev decoding: these tests are about weights, not scores
  return c;
}

int run_python(const std::string& args, std::string* output) {
  const std::string cmd = std::string("'") + test::path_setting("TLMOE_TEST_PYTHON", TLMOE_PYTHON) + "' " + args + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return -1;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) output->append(buf, n);
  const int st = ::pclose(p);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

}  // namespace

TEST_CASE("hf import: experts start as the BART layer plus noise (docs/method.md §1.6)", "[hf]") {
  auto hf = model::load_hf_bart(kGolden / "tiny_a");
  auto o = hf.options;
  o.experts = 3;
  o.vanilla_decoder_layers = {0};
  model::RouterOptions ro;
  ro.d_in = 8;
  ro.hidden = 8;
  ro.layers = o.encoder_layers + o.decoder_layers;
  ro.experts = o.experts;
  model::TLMoEModel m(o, ro, model::RoutingPolicy{}, 2);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(7);
  m->init_from_dense(hf.state, 1e-3, &gen);
  torch::NoGradGuard g;
  auto p = m->named_parameters(true);
  CHECK(torch::equal(p["model.shared.weight"], hf.state.at("model.shared.weight")));
  CHECK(torch::equal(p["model.encoder.embed_positions.weight"], hf.state.at("model.encoder.embed_positions.weight")));
  CHECK(torch::equal(p["model.decoder.layers.0.fc1.weight"], hf.state.at("model.decoder.layers.0.fc1.weight")));  // vanilla
  CHECK(torch::equal(m->final_logits_bias, hf.state.at("final_logits_bias")));
  const auto& want = hf.state.at("model.encoder.layers.0.fc1.weight");
  for (int e = 0; e < 3; ++e) {
    auto d = p["model.encoder.layers.0.experts." + std::to_string(e) + ".fc1.weight"] - want;
    CHECK(d.abs().max().item<double>() > 0);       // noise was added
    CHECK(d.std().item<double>() == Approx(1e-3).epsilon(0.3));
  }
}

TEST_CASE("hf round trip: HF BART in, TL-MoE training, tlmoe export out, transformers reproduces the logits", "[hf]") {
  test::Tiny t;
  Config c = hf_config(t);
  const fs::path run = t.dir / "run";
  auto res = test::run(c, run);
  REQUIRE(fs::exists(run / "last/model.safetensors"));

  // the run's tokenizer is the HF directory's BPE
  auto lm = model::load_model(run / "last");
  CHECK(lm.model->options().experts == 2);
  CHECK(lm.model->options().vocab_size == 520);

  // export the task "first": gumbel_st routes are hard at eval (argmax), so the export is exact
  const fs::path out = t.dir / "export_first";
  auto r = test::run_tlmoe("export --checkpoint " + (run / "last").string() + " --task first --out " + out.string());
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.output, Catch::Contains("(exact)"));
  for (const char* f : {"model.safetensors", "config.json", "generation_config.json", "vocab.json", "merges.txt",
                        "tokenizer_config.json"})
    CHECK(fs::exists(out / f));

  // tlmoe's routed logits of task "first" on a batch with padding
  auto tok = text::BartBpeTokenizer::load(out);
  const std::vector<std::string> texts = {" [first] amber birch cedar delta", " [first] kelp lotus",
                                          "Zürich, naïve café — 日本語 😀", " it's 3.14 isn't it?  yes"};
  const int64_t B = static_cast<int64_t>(texts.size());
  std::vector<std::vector<int32_t>> ids;
  int64_t S = 0;
  for (const auto& s : texts) {
    auto v = tok->encode(s);
    v.insert(v.begin(), 0);
    v.push_back(2);
    S = std::max<int64_t>(S, static_cast<int64_t>(v.size()));
    ids.push_back(v);
  }
  auto input = torch::full({B, S}, 1, torch::kLong), mask = torch::zeros({B, S}, torch::kLong);
  auto text_ids = torch::full({B, S}, -1, torch::kLong);
  for (int64_t b = 0; b < B; ++b)
    for (size_t j = 0; j < ids[b].size(); ++j) {
      input[b][static_cast<int64_t>(j)] = ids[b][j];
      mask[b][static_cast<int64_t>(j)] = 1;
      if (j > 0 && j + 1 < ids[b].size()) text_ids[b][static_cast<int64_t>(j) - 1] = ids[b][j];
    }
  auto dec = torch::tensor({2, 0, 44, 73, 80}, torch::kLong).repeat({B, 1});
  torch::NoGradGuard ng;
  const int64_t first = std::find(lm.tasks.begin(), lm.tasks.end(), "first") - lm.tasks.begin();
  auto routes = evaluate::model_routes(lm.model, lm.tau, 42)(torch::full({B}, first, torch::kLong));
  auto routed = lm.model->forward(input, mask, dec, routes);

  // the export, read back by tlmoe as a dense model: identical logits
  auto hf = model::load_hf_bart(out);
  model::Seq2Seq dense(hf.options);
  io::load_into(*dense, hf.state, "export");
  dense->eval();
  const double d_tlmoe = (dense->forward(input, mask, dec, {}) - routed).abs().max().item<double>();
  WARN("max |logit diff| exported (read by tlmoe) vs routed: " << d_tlmoe);
  CHECK(d_tlmoe < 1e-6);

  // ... and by transformers (plus its tokenizer on the same texts)
  io::save_safetensors(out / "expected.safetensors", {{"input_ids", input},
                                                      {"attention_mask", mask},
                                                      {"decoder_input_ids", dec},
                                                      {"logits", routed.contiguous()},
                                                      {"text_ids", text_ids}});
  test::write_text(out / "texts.json", json(texts).dump());
  std::string py;
  const int rc = run_python("'" + (fs::path(test::source_dir()) / "tests/golden/check_export.py").string() + "' '" +
                                out.string() + "' '" + (out / "expected.safetensors").string() + "'",
                            &py);
  INFO(py);
  WARN(py);
  CHECK(rc == 0);
}

TEST_CASE("hf export: soft routes are refused unless --approximate, which reports the dev log-likelihood", "[hf]") {
  test::Tiny t;
  Config c = hf_config(t);
  c.routing.selection = "softmax";
  c.train.steps = 2;
  c.train.eval_every = 2;
  const fs::path run = t.dir / "run";
  test::run(c, run);
  const std::string ck = (run / "last").string();
  auto r = test::run_tlmoe("export --checkpoint " + ck + " --task last --out " + (t.dir / "x").string());
  INFO(r.output);
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.output, Catch::Contains("soft route") && Catch::Contains("--approximate"));
  r = test::run_tlmoe("export --checkpoint " + ck + " --task nosuch --out " + (t.dir / "x").string());
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.output, Catch::Contains("no such task"));
  r = test::run_tlmoe("export --approximate --checkpoint " + ck + " --task last --out " + (t.dir / "x").string());
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.output, Catch::Contains("(approximate)") && Catch::Contains("dev log-likelihood per token"));
  WARN(r.output);
  auto hf = model::load_hf_bart(t.dir / "x");  // a valid dense BART
  CHECK(hf.options.experts == 1);
}

TEST_CASE("hf import: train refuses a model section that differs from the Hugging Face config", "[hf]") {
  test::Tiny t;
  Config c = hf_config(t);
  c.model.ffn_dim = 64;
  CHECK_THROWS_AS(test::run(c, t.dir / "run"), ConfigError);
  CHECK_THROWS_WITH(test::run(c, t.dir / "run2"), Catch::Contains("model.ffn_dim") && Catch::Contains("encoder_ffn_dim = 32"));
  c = hf_config(t);
  c.tokenizer.kind = "sentencepiece";  // ids that mean nothing to the checkpoint
  CHECK_THROWS_WITH(test::run(c, t.dir / "run3"), Catch::Contains("tokenizer.kind: bart-bpe"));
  // a BPE with another vocabulary size than the checkpoint's
  test::TempDir other;
  test::write_text(other / "vocab.json", R"({"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "a": 4, "b": 5})");
  test::write_text(other / "merges.txt", "#version: 0.2\n");
  c = hf_config(t);
  c.tokenizer.model = other.path().string();
  CHECK_THROWS_WITH(test::run(c, t.dir / "run4"), Catch::Contains("vocab_size = 520"));
}

TEST_CASE("hf import: the command line refuses a bad Hugging Face directory with exit code 2", "[hf]") {
  test::Tiny t;
  const std::string sets = " --set data.dir=" + (t.dir / "data").string() + " --set data.upstream_source=full" +
                           " --set tokenizer.kind=bart-bpe";
  test::write_text(t.dir / "c.yaml",
                   "data:\n  max_input_len: 24\n  max_output_len: 8\n"
                   "model:\n  d_model: 16\n  heads: 2\n  ffn_dim: 32\n  encoder_layers: 1\n  decoder_layers: 1\n"
                   "  max_positions: 64\n  experts: 2\n"
                   "task_rep:\n  dim: 8\nrouting:\n  hidden: 8\ntrain:\n  steps: 1\n  batch_size: 4\neval:\n  max_len: 16\n");
  // no such directory: the tokenizer files are missing (preprocess)
  auto r = test::run_tlmoe("preprocess --config " + (t.dir / "c.yaml").string() + sets + " --set model.init_from=hf:" +
                           (t.dir / "nowhere").string());
  INFO(r.output);
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.output, Catch::Contains("vocab.json"));
  // bart-bpe without a directory to read it from
  r = test::run_tlmoe("preprocess --config " + (t.dir / "c.yaml").string() + sets);
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.output, Catch::Contains("tokenizer.model"));
  // another architecture: refused when train initialises the model
  const fs::path d = t.dir / "t5";
  fs::create_directories(d);
  for (const char* f : {"config.json", "model.safetensors", "vocab.json", "merges.txt"})
    fs::copy_file(kGolden / "tiny_a" / f, d / f);
  json cj = json::parse(test::read_text(d / "config.json"));
  cj["model_type"] = "t5";
  test::write_text(d / "config.json", cj.dump());
  r = test::run_tlmoe("train --plain --config " + (t.dir / "c.yaml").string() + sets + " --set model.init_from=hf:" +
                      d.string() + " --run-dir " +
                      (t.dir / "run").string());
  INFO(r.output);
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.output, Catch::Contains("model_type is 't5'"));
}
