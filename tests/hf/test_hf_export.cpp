// Hugging Face interoperability end to end: a Hugging Face BART directory goes in
// (model.init_from: hf:DIR, tokenizer.kind: bart-bpe), trains as a TL-MoE, and `tlmoe export`
// writes a per-task dense BART that transformers loads with the logits of tlmoe's routed model
// (checked by tests/golden/check_export.py in the real library), that keeps the source model's
// settings and tokenizer, and that CTranslate2 converts and decodes as tlmoe does
// (tests/golden/check_ct2.py).
#include <torch/torch.h>

#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "common/error.h"
#include "evaluate/predict.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "model/generate.h"
#include "model/hf_bart.h"
#include "model/load_model.h"
#include "model/tlmoe_model.h"
#include "hf_test_util.h"
#include "test_util.h"
#include "text/bart_bpe_tokenizer.h"
#include "tiny_data.h"

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace tlmoe;

namespace {

const fs::path kGolden = test::path_setting("TLMOE_TEST_GOLDEN_DIR", TLMOE_GOLDEN_DIR);

// The decoding settings of the source model built by make_hf_source (BART's kind: beams, forced
// BOS and EOS, no-repeat n-grams).
const json kSourceGeneration = {{"bos_token_id", 0},     {"eos_token_id", 2},        {"pad_token_id", 1},
                                {"decoder_start_token_id", 2}, {"num_beams", 3},   {"max_length", 14},
                                {"min_length", 2},       {"length_penalty", 1.3},    {"no_repeat_ngram_size", 2},
                                {"early_stopping", true}, {"forced_bos_token_id", 0}, {"forced_eos_token_id", 2},
                                {"transformers_version", "5.24.0"}};

// A Hugging Face BART directory made from the golden tiny_a: its weights with </s>'s
// final_logits_bias raised by eos_bias, its config.json with values of its own in fields tlmoe does
// not define (dropouts, init_std, labels, task_specific_params, a key transformers does not know,
// a decoding key), kSourceGeneration as generation_config.json, and tok_mask's tokenizer, whose
// <mask> absorbs the space before it (lstrip, as facebook/bart-base's).
fs::path make_hf_source(const fs::path& dir, double eos_bias) {
  fs::create_directories(dir);
  auto w = io::load_safetensors(kGolden / "tiny_a" / "model.safetensors");
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (const auto& n : w.names) {
    auto v = w.tensors.at(n).clone();
    if (n == "final_logits_bias") v[0][2] += eos_bias;
    tensors.emplace_back(n, v);
  }
  io::save_safetensors(dir / "model.safetensors", tensors, w.metadata);
  json c = json::parse(test::read_text(kGolden / "tiny_a" / "config.json"));
  c["dropout"] = 0.05;
  c["attention_dropout"] = 0.02;
  c["activation_dropout"] = 0.01;
  c["init_std"] = 0.03;
  c["id2label"] = {{"0", "negative"}, {"1", "positive"}};
  c["label2id"] = {{"negative", 0}, {"positive", 1}};
  c["task_specific_params"] = {{"summarization", {{"num_beams", 2}, {"prefix", "summarize: "}}}};
  c["a_key_of_its_own"] = {1, "two"};
  c["num_beams"] = 5;  // generation_config.json's 3 wins (transformers reads that file)
  test::write_text(dir / "config.json", c.dump(2));
  test::write_text(dir / "generation_config.json", kSourceGeneration.dump(2));
  for (const auto& f : fs::directory_iterator(kGolden / "tok_mask"))
    fs::copy_file(f.path(), dir / f.path().filename(), fs::copy_options::overwrite_existing);
  return dir;
}

// Texts whose tokenisation depends on the added tokens' lstrip/rstrip.
const std::vector<std::string> kMaskTexts = {" a <mask> b", "a  <mask>b", " <mask>", "x\n<mask>", " the <mask>."};

// The tiny data set with the architecture and tokenizer of the golden tiny_a BART (or of `src`).
Config hf_config(const test::Tiny& t, const fs::path& src = kGolden / "tiny_a") {
  Config c = t.config();
  c.tokenizer.kind = "bart-bpe";
  c.model.init_from = "hf:" + src.string();
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
  const fs::path src = make_hf_source(t.dir / "src", 0.0);
  Config c = hf_config(t, src);
  const fs::path run = t.dir / "run";
  auto res = test::run(c, run);
  REQUIRE(fs::exists(run / "last/model.safetensors"));

  // the run's tokenizer is the HF directory's BPE
  auto lm = model::load_model((run / "last").string());
  CHECK(lm.model->options().experts == 2);
  CHECK(lm.model->options().vocab_size == 520);

  // export the task "first": gumbel_st routes are hard at eval (argmax), so the export is exact
  const fs::path out = t.dir / "export_first";
  auto r = test::run_tlmoe("export --checkpoint " + (run / "last").string() + " --task first --out " + out.string());
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.output, Catch::Contains("(exact)"));
  for (const char* f : {"model.safetensors", "config.json", "generation_config.json", "vocab.json", "merges.txt",
                        "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"})
    CHECK(fs::exists(out / f));

  // config.json: the source's fields tlmoe does not define, as they were; generation_config.json:
  // the source's fields with the checkpoint's decoding settings
  const json src_config = json::parse(test::read_text(src / "config.json"));
  const json config = json::parse(test::read_text(out / "config.json"));
  for (const char* k : {"dropout", "attention_dropout", "activation_dropout", "init_std", "id2label", "label2id",
                        "task_specific_params", "a_key_of_its_own", "transformers_version"}) {
    INFO(k);
    CHECK(config.at(k) == src_config.at(k));
  }
  CHECK(config.at("tlmoe").at("task") == "first");
  const json gen = json::parse(test::read_text(out / "generation_config.json"));
  const auto g = evaluate::generation_options(lm.cfg, 0, 2, 1);
  CHECK(gen.at("num_beams") == g.num_beams);
  CHECK(gen.at("max_length") == g.max_len);
  CHECK(gen.at("length_penalty") == g.length_penalty);
  CHECK(gen.at("early_stopping") == g.early_stopping);
  CHECK(config.at("num_beams") == g.num_beams);  // the decoding key of the source's config.json agrees
  CHECK(gen.at("transformers_version") == kSourceGeneration.at("transformers_version"));

  // tlmoe's routed logits of task "first" on a batch with padding; the texts' ids by the source's
  // tokenizer (check_export.py tokenises them with transformers on the export: <mask>'s lstrip kept)
  auto src_tok = text::BartBpeTokenizer::load(src);
  auto tok = text::BartBpeTokenizer::load(out);
  std::vector<std::string> texts = {" [first] amber birch cedar delta", " [first] kelp lotus",
                                    "Zürich, naïve café — 日本語 😀", " it's 3.14 isn't it?  yes"};
  texts.insert(texts.end(), kMaskTexts.begin(), kMaskTexts.end());
  for (const auto& s : kMaskTexts) {
    INFO(s);
    CHECK(tok->encode(s) == src_tok->encode(s));
  }
  const int64_t B = static_cast<int64_t>(texts.size());
  std::vector<std::vector<int32_t>> ids;
  int64_t S = 0;
  for (const auto& s : texts) {
    auto v = src_tok->encode(s);
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
  const int rc = tlmoe::test::run_python("'" + (fs::path(test::source_dir()) / "tests/golden/check_export.py").string() + "' '" +
                                out.string() + "' '" + (out / "expected.safetensors").string() + "'",
                            &py);
  INFO(py);
  WARN(py);
  CHECK(rc == 0);
}

TEST_CASE("hf export: hf:DIR exports without --task and keeps the source's files field for field", "[hf]") {
  test::TempDir d;
  const fs::path src = make_hf_source(d / "src", 0.0);
  const json src_config = json::parse(test::read_text(src / "config.json"));
  auto src_tok = text::BartBpeTokenizer::load(src);
  const auto src_w = model::load_hf_bart(src);
  for (const std::string task : {"", " --task anything"}) {
    INFO("task option: '" << task << "'");
    const fs::path out = d / ("out" + std::to_string(task.size()));
    auto r = test::run_tlmoe("export --checkpoint hf:" + src.string() + task + " --out " + out.string());
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    CHECK_THAT(r.output, Catch::Contains("exported the model") && Catch::Contains("(exact)"));
    // config.json: every field of the source's; the decoding keys it has follow generation_config.json
    const json config = json::parse(test::read_text(out / "config.json"));
    for (const auto& [k, v] : src_config.items()) {
      INFO(k);
      REQUIRE(config.contains(k));
      CHECK(config.at(k) == (kSourceGeneration.contains(k) ? kSourceGeneration.at(k) : v));
    }
    CHECK(config.at("normalize_before") == false);  // CTranslate2's converter reads it
    CHECK(config.at("tlmoe").at("task") == (task.empty() ? json(nullptr) : json("anything")));
    // generation_config.json: the source's, unchanged
    CHECK(json::parse(test::read_text(out / "generation_config.json")) == kSourceGeneration);
    // the weights, bit for bit
    const auto w = model::load_hf_bart(out);
    REQUIRE(w.state.size() == src_w.state.size());
    for (const auto& [n, v] : src_w.state) {
      INFO(n);
      CHECK(torch::equal(w.state.at(n), v));
    }
    // the tokenizer encodes as the source's (<mask> lstrip kept)
    auto tok = text::BartBpeTokenizer::load(out);
    for (const auto& s : kMaskTexts) {
      INFO(s);
      CHECK(tok->encode(s) == src_tok->encode(s));
    }
  }
}

TEST_CASE("hf export: a vanilla checkpoint exports without --task, the same model for every task", "[hf]") {
  test::Tiny t;
  test::train_dense_source(t);  // experts = 1, SentencePiece tokenizer
  const fs::path ck = t.dir / "dense" / "last";
  for (const std::string task : {"", " --task nosuch"}) {
    INFO("task option: '" << task << "'");
    const fs::path out = t.dir / ("out" + std::to_string(task.size()));
    auto r = test::run_tlmoe("export --checkpoint " + ck.string() + task + " --out " + out.string());
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    CHECK_THAT(r.output, Catch::Contains("exported the model") && Catch::Contains("(exact)") &&
                             Catch::Contains("tokenizer: not written"));
    // the checkpoint's tensors under their Hugging Face names, bit for bit
    auto lm = model::load_model(ck.string());
    const auto w = model::load_hf_bart(out);
    int64_t n = 0;
    for (const auto& p : lm.model->named_parameters(true)) {
      if (p.key().rfind("model.", 0) != 0) continue;
      INFO(p.key());
      CHECK(torch::equal(w.state.at(p.key()), p.value()));
      ++n;
    }
    CHECK(n > 0);
    CHECK(torch::equal(w.state.at("final_logits_bias"), lm.model->final_logits_bias));
    // no source model: tlmoe's own settings
    const json config = json::parse(test::read_text(out / "config.json"));
    CHECK(config.at("dropout") == lm.cfg.model.dropout);
    CHECK(config.at("normalize_before") == false);
  }
}

namespace {

// Decoding settings under generation_config.json's names (every key given, so that none falls back
// to the model's): greedy; beam search with early stopping at several beam sizes and length
// penalties (0 included); without early stopping at length penalty 0; a length limit the beams
// reach; BART's forced <s> with the minimum length that keeps </s> from following it (see
// docs/export.md for why these are the settings CTranslate2 decodes exactly alike).
std::vector<json> ct2_settings() {
  auto s = [](const std::string& name, int64_t beams, double lp, bool early, int64_t max_len, int64_t min_len = 0,
              int64_t ngram = 0, bool bos = false) {
    return json{{"name", name},          {"num_beams", beams},      {"length_penalty", lp},
                {"early_stopping", early}, {"max_length", max_len},   {"min_length", min_len},
                {"no_repeat_ngram_size", ngram}, {"forced_bos_token_id", bos ? json(0) : json(nullptr)},
                {"forced_eos_token_id", nullptr}};
  };
  std::vector<json> v = {s("greedy", 1, 1.0, false, 12), s("greedy, length limit", 1, 1.0, false, 4),
                         s("greedy, forced <s>, min length, no-repeat 2-grams", 1, 1.0, false, 12, 4, 2, true)};
  for (int64_t beams : {2, 3, 5})
    for (double lp : {1.0, 2.0, 0.0, -0.5})
      v.push_back(s("beams " + std::to_string(beams) + ", length penalty " + json(lp).dump() + ", early stopping",
                    beams, lp, true, 12));
  for (int64_t beams : {3, 4})
    v.push_back(s("beams " + std::to_string(beams) + ", length penalty 0, no early stopping", beams, 0.0, false, 12));
  v.push_back(s("beams 4, length limit", 4, 1.0, true, 5));
  v.push_back(s("beams 4, forced <s>, min length 3, length penalty 0", 4, 0.0, true, 12, 3, 0, true));
  return v;
}

}  // namespace

TEST_CASE("hf export: CTranslate2 converts the export and decodes it as tlmoe does, greedy and beam", "[hf]") {
  test::Tiny t;
  // a likelier </s> (as in the golden models): hypotheses end at different lengths, so beam
  // search's finished-hypothesis bookkeeping, length penalty and stopping rule all matter
  const fs::path src = make_hf_source(t.dir / "src", 1.2);
  Config c = hf_config(t, src);
  const fs::path run = t.dir / "run";
  test::run(c, run);
  const fs::path out = t.dir / "export";
  auto r = test::run_tlmoe("export --checkpoint " + (run / "last").string() + " --task first --out " + out.string());
  INFO(r.output);
  REQUIRE(r.exit_code == 0);

  // inputs of several lengths, padded into one batch for tlmoe
  auto tok = text::BartBpeTokenizer::load(out);
  tok->set_semantics(text::HfSemantics::current);
  const std::vector<std::string> texts = {" [first] amber birch cedar delta", " [first] kelp",
                                          " [first] grove heron iris jade ember fjord lotus", "Zürich, naïve café",
                                          " a <mask> b", " [first] lotus iris"};
  const int64_t B = static_cast<int64_t>(texts.size());
  json inputs = json::array();
  int64_t S = 0;
  for (const auto& s : texts) {
    auto v = tok->encode(s);
    v.insert(v.begin(), 0);
    v.push_back(2);
    S = std::max<int64_t>(S, static_cast<int64_t>(v.size()));
    inputs.push_back(v);
  }
  auto input = torch::full({B, S}, 1, torch::kLong), mask = torch::zeros({B, S}, torch::kLong);
  for (int64_t b = 0; b < B; ++b)
    for (size_t j = 0; j < inputs[b].size(); ++j) {
      input[b][static_cast<int64_t>(j)] = inputs[b][j].get<int64_t>();
      mask[b][static_cast<int64_t>(j)] = 1;
    }

  // tlmoe decodes the export with each setting as it decodes a Hugging Face model with that
  // generation_config.json
  auto hf = model::load_hf_bart(out);
  model::Seq2Seq dense(hf.options);
  io::load_into(*dense, hf.state, "export");
  dense->eval();
  hf.config = json::object();  // settings left out would fall back to config.json; every one is given
  const auto settings = ct2_settings();
  std::vector<std::vector<std::vector<int64_t>>> ours;
  {
    torch::NoGradGuard ng;
    for (const auto& s : settings) {
      hf.generation = s;
      ours.push_back(model::generate(*dense, input, mask, {}, model::hf_generation_options(hf)));
    }
  }
  test::write_text(out / "cases.json", json{{"inputs", inputs}, {"settings", settings}}.dump());
  std::string py;
  const int rc = tlmoe::test::run_python("'" + (fs::path(test::source_dir()) / "tests/golden/check_ct2.py").string() + "' '" +
                                out.string() + "' '" + (out / "cases.json").string() + "' '" +
                                (out / "ct2.json").string() + "'",
                            &py);
  INFO(py);
  REQUIRE(rc == 0);
  const json got = json::parse(test::read_text(out / "ct2.json"));
  CHECK(got.at("ct2_config").at("decoder_start_token") == "</s>");
  const auto& results = got.at("results");
  REQUIRE(results.size() == settings.size());
  std::set<size_t> ended_lengths;  // lengths of the outputs that end with </s> before the limit
  bool beams_differ_from_greedy = false;
  for (size_t i = 0; i < settings.size(); ++i) {
    const json& res = results[i];
    INFO(res.at("name") << ": CTranslate2 options " << res.at("options").dump());
    CHECK(res.at("inexact").empty());
    for (int64_t b = 0; b < B; ++b) {
      INFO("input " << b << ": " << texts[b]);
      const auto ct2 = res.at("ids")[b].get<std::vector<int64_t>>();
      CHECK(ours[i][b] == ct2);
      CHECK(res.at("hf_ids")[b].get<std::vector<int64_t>>() == ct2);  // and transformers with the same settings
      const std::vector<int32_t> ids32(ours[i][b].begin(), ours[i][b].end());
      CHECK(tok->decode(ids32, true) == res.at("texts")[b].get<std::string>());
      if (!ct2.empty() && ct2.back() == 2 && static_cast<int64_t>(ct2.size()) < settings[i].at("max_length").get<int64_t>() - 1)
        ended_lengths.insert(ct2.size());
      if (settings[i].at("num_beams").get<int64_t>() > 1 && ours[i][b] != ours[0][b]) beams_differ_from_greedy = true;
    }
  }
  WARN(py);
  std::ostringstream lengths;
  for (size_t n : ended_lengths) lengths << " " << n;
  WARN("lengths of the outputs that end with </s> before the limit:" << lengths.str());
  // the comparison means something: outputs end at several lengths, and beam search is not greedy
  CHECK(ended_lengths.size() >= 3);
  CHECK(beams_differ_from_greedy);
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
  r = test::run_tlmoe("export --checkpoint " + ck + " --out " + (t.dir / "x").string());  // routed: --task needed
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.output, Catch::Contains("--task is required") && Catch::Contains("first"));
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
  c.explicit_keys.insert("model.ffn_dim");  // as set in a YAML file or by --set (unset keys adopt the model's)
  CHECK_THROWS_AS(test::run(c, t.dir / "run"), ConfigError);
  CHECK_THROWS_WITH(test::run(c, t.dir / "run2"), Catch::Contains("model.ffn_dim") && Catch::Contains("encoder_ffn_dim = 32"));
  c = hf_config(t);
  c.tokenizer.kind = "sentencepiece";  // ids that mean nothing to the checkpoint
  c.explicit_keys.insert("tokenizer.kind");
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
