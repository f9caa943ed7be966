// Hugging Face interoperability, import side: tokenizer, weights, logits and generation
// against golden files that tests/golden/make_golden.py makes with the real transformers at test
// time (ctest fixture "hf: make golden files").
#include <torch/torch.h>

#include <catch2/catch.hpp>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "io/safetensors.h"
#include "model/generate.h"
#include "model/hf_bart.h"
#include "model/seq2seq.h"
#include "test_util.h"
#include "text/bart_bpe_tokenizer.h"
#include "io/checkpoint.h"

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace tlmoe;

namespace {

const fs::path kGolden = test::path_setting("TLMOE_TEST_GOLDEN_DIR", TLMOE_GOLDEN_DIR);

json golden_index() {
  const auto p = kGolden / "golden.json";
  REQUIRE(fs::exists(p));  // made by the ctest fixture "hf: make golden files"
  return json::parse(test::read_text(p));
}

model::Seq2Seq load_dense(const model::HfBart& hf) {
  model::Seq2Seq m(hf.options);
  io::load_into(*m, hf.state, (hf.dir / "model.safetensors").string());
  m->eval();
  return m;
}

double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  REQUIRE(a.sizes() == b.sizes());
  return (a.to(torch::kDouble) - b.to(torch::kDouble)).abs().max().item<double>();
}

}  // namespace

TEST_CASE("hf tokenizer: ids and decoding equal BartTokenizer on a multilingual sample", "[hf]") {
  const json idx = golden_index();
  auto tok = text::BartBpeTokenizer::load(kGolden / idx["tokenizer"]["dir"].get<std::string>());
  CHECK(tok->kind() == "bart-bpe");
  CHECK(tok->bos_id() == 0);
  CHECK(tok->pad_id() == 1);
  CHECK(tok->eos_id() == 2);
  CHECK(tok->unk_id() == 3);
  int n = 0;
  for (const auto& c : idx["tokenizer"]["cases"]) {
    const std::string text = c["text"].get<std::string>();
    INFO("text: '" << text << "'");
    const auto want = c["ids"].get<std::vector<int32_t>>();
    const auto got = tok->encode(text);
    CHECK(got == want);
    // decode: raw bytes back, and with clean_up_tokenization_spaces as BartTokenizer (v4) did
    tok->set_clean_up_spaces(false);
    CHECK(tok->decode(want, /*skip_special=*/false) == c["decoded_raw"].get<std::string>());
    tok->set_clean_up_spaces(true);
    CHECK(tok->decode(want, /*skip_special=*/false) == c["decoded_clean"].get<std::string>());
    ++n;
  }
  CHECK(n >= 15);
  // <s> text </s> is what tlmoe's preprocess builds (callers add the specials)
  const auto& c0 = idx["tokenizer"]["cases"][0];
  auto ids = tok->encode(c0["text"].get<std::string>());
  ids.insert(ids.begin(), tok->bos_id());
  ids.push_back(tok->eos_id());
  CHECK(ids == c0["with_specials"].get<std::vector<int32_t>>());
  // skip_special drops <s> </s> <pad>
  CHECK(tok->decode({0, 44, 2, 1}) == tok->decode({44}));
}

TEST_CASE("hf tokenizer: special tokens in the text, with tokenizer.json's lstrip as bart-base's <mask>", "[hf]") {
  const json idx = golden_index();
  auto tok = text::BartBpeTokenizer::load(kGolden / idx["tokenizer"]["mask_dir"].get<std::string>());
  auto plain = text::BartBpeTokenizer::load(kGolden / idx["tokenizer"]["dir"].get<std::string>());
  CHECK(tok->fingerprint() != plain->fingerprint());
  int n = 0;
  for (const auto& c : idx["tokenizer"]["mask_cases"]) {
    const std::string text = c["text"].get<std::string>();
    INFO("text: '" << text << "'");
    CHECK(tok->encode(text) == c["ids"].get<std::vector<int32_t>>());
    ++n;
  }
  CHECK(n == 8);
}

TEST_CASE("hf tokenizer: pre-tokenisation follows the GPT-2 regex", "[hf]") {
  using V = std::vector<std::string>;
  auto p = text::BartBpeTokenizer::pretokenize;
  CHECK(p("Hello world") == V{"Hello", " world"});
  CHECK(p("it's") == V{"it", "'s"});
  CHECK(p("a  b") == V{"a", " ", " b"});            // \s+(?!\S) leaves the last space to " b"
  CHECK(p("a\nb") == V{"a", "\n", "b"});            // a lone non-space whitespace: \s+
  CHECK(p("x   ") == V{"x", "   "});                // trailing run: whole
  CHECK(p("12ab!?") == V{"12", "ab", "!?"});
  CHECK(p(" 3.5") == V{" 3", ".", "5"});
  CHECK(p("Zürich") == V{"Zürich"});                 // letters beyond ASCII
  CHECK(p("٣٤٥ x") == V{"٣٤٥", " x"});               // Arabic-Indic digits are \p{N}
}

TEST_CASE("hf tokenizer: a directory without merges.txt or with foreign special ids is refused", "[hf]") {
  test::TempDir t;
  fs::copy_file(kGolden / "tok/vocab.json", t / "vocab.json");
  CHECK_THROWS_WITH(text::BartBpeTokenizer::load(t.path()), Catch::Contains("merges.txt"));
  CHECK_THROWS_AS(text::BartBpeTokenizer::load(t.path()), DataError);
  test::write_text(t / "merges.txt", "#version: 0.2\n");
  test::write_text(t / "vocab.json", R"({"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3})");
  CHECK_THROWS_WITH(text::BartBpeTokenizer::load(t.path()), Catch::Contains("<s> = 0"));
}

TEST_CASE("hf import: logits and encoder states equal transformers to 1e-4", "[hf]") {
  const json idx = golden_index();
  int models = 0;
  for (const auto& mj : idx["models"]) {
    const fs::path dir = kGolden / mj["dir"].get<std::string>();
    INFO("model " << dir);
    auto hf = model::load_hf_bart(dir);
    CHECK(hf.options.vocab_size == mj["config"]["vocab_size"].get<int64_t>());
    CHECK(hf.options.scale_embedding == mj["config"]["scale_embedding"].get<bool>());
    auto m = load_dense(hf);
    auto g = io::load_safetensors(dir / "golden.safetensors").tensors;
    torch::NoGradGuard ng;
    auto enc = m->encode(g["input_ids"], g["attention_mask"], {});
    // every position, padding included (both attend over the unmasked keys only)
    const double de = max_abs_diff(enc, g["encoder_states"]);
    auto logits = m->forward(g["input_ids"], g["attention_mask"], g["decoder_input_ids"], {});
    const double dl = max_abs_diff(logits, g["logits"]);
    WARN("model " << mj["name"].get<std::string>() << ": max |encoder diff| " << de << ", max |logit diff| " << dl);
    CHECK(de < 1e-4);
    CHECK(dl < 1e-4);
    ++models;
  }
  CHECK(models == 3);
}

TEST_CASE("hf import: beam search and greedy tokens equal transformers' generate", "[hf]") {
  const json idx = golden_index();
  int compared = 0;
  for (const auto& mj : idx["models"]) {
    const fs::path dir = kGolden / mj["dir"].get<std::string>();
    auto hf = model::load_hf_bart(dir);
    auto m = load_dense(hf);
    auto g = io::load_safetensors(dir / "golden.safetensors").tensors;
    for (const auto& gj : mj["generations"]) {
      const std::string name = gj["name"].get<std::string>();
      INFO("model " << dir << ", generation " << name);
      model::GenerationOptions o;
      if (name == "beam_cfg") {
        o = model::hf_generation_options(hf);  // the checkpoint's own generation_config.json
      } else {
        model::HfBart only = hf;
        only.generation = gj["settings"];
        only.config = json::object();
        o = model::hf_generation_options(only);
      }
      auto out = model::generate(*m, g["input_ids"], g["attention_mask"], {}, o);
      auto want = g[gj["tensor"].get<std::string>()];
      for (int64_t b = 0; b < want.size(0); ++b) {
        std::vector<int64_t> w;
        for (int64_t t = 1; t < want.size(1); ++t) {  // after the decoder start token, through EOS
          const int64_t id = want[b][t].item<int64_t>();
          if (id == o.pad_id) break;
          w.push_back(id);
          if (id == o.eos_id) break;
        }
        INFO("row " << b);
        CHECK(out[b] == w);
        ++compared;
      }
    }
  }
  CHECK(compared == 45);
}

TEST_CASE("hf import: unsupported checkpoints are refused naming the key or tensor", "[hf]") {
  const fs::path src = kGolden / "tiny_a";
  test::TempDir t;
  auto fresh = [&](const std::string& name) {
    const fs::path d = t / name;
    fs::create_directories(d);
    for (const auto& f : {"config.json", "model.safetensors", "generation_config.json"}) fs::copy_file(src / f, d / f);
    return d;
  };
  auto edit_config = [&](const fs::path& d, const std::function<void(json&)>& f) {
    json c = json::parse(test::read_text(d / "config.json"));
    f(c);
    test::write_text(d / "config.json", c.dump());
  };
  {  // another architecture
    auto d = fresh("t5");
    edit_config(d, [](json& c) { c["model_type"] = "t5"; });
    CHECK_THROWS_WITH(model::load_hf_bart(d), Catch::Contains("model_type is 't5'"));
  }
  {  // config.json and weights disagree: a layer more than the file has
    auto d = fresh("layers");
    edit_config(d, [](json& c) { c["encoder_layers"] = 2; });
    CHECK_THROWS_WITH(model::load_hf_bart(d), Catch::Contains("missing tensor 'model.encoder.layers.1."));
  }
  {  // a missing tensor
    auto d = fresh("missing");
    auto f = io::load_safetensors(d / "model.safetensors");
    std::vector<std::pair<std::string, torch::Tensor>> keep;
    for (auto& [n, v] : f.tensors)
      if (n != "model.decoder.layers.0.fc2.bias") keep.emplace_back(n, v);
    io::save_safetensors(d / "model.safetensors", keep);
    CHECK_THROWS_WITH(model::load_hf_bart(d), Catch::Contains("model.decoder.layers.0.fc2.bias"));
    CHECK_THROWS_AS(model::load_hf_bart(d), DataError);
  }
  {  // a shape mismatch
    auto d = fresh("shape");
    auto f = io::load_safetensors(d / "model.safetensors");
    std::vector<std::pair<std::string, torch::Tensor>> keep;
    for (auto& [n, v] : f.tensors)
      keep.emplace_back(n, n == "model.encoder.layers.0.fc1.weight" ? torch::zeros({7, 16}) : v);
    io::save_safetensors(d / "model.safetensors", keep);
    CHECK_THROWS_WITH(model::load_hf_bart(d), Catch::Contains("'model.encoder.layers.0.fc1.weight' has shape [7, 16]"));
  }
  {  // the config of tlmoe must describe the same architecture
    auto hf = model::read_hf_bart_config(src);
    auto mine = hf.options;
    mine.layer.d_model = 32;
    CHECK_THROWS_WITH(model::check_hf_architecture(hf, mine), Catch::Contains("model.d_model"));
    CHECK_THROWS_AS(model::check_hf_architecture(hf, mine), ConfigError);
  }
}
