// Config: precedence, base files, overrides, and every error kind.
// torch before Catch: c10 defines its own CHECK
#include <torch/torch.h>

#include <catch2/catch.hpp>

#include <set>

#include "common/error.h"
#include "config/config.h"
#include "evaluate/predict.h"
#include "model/hf_defaults.h"
#include "test_util.h"

using tlmoe::ConfigError;
using tlmoe::ConfigSources;
using tlmoe::load_config;
using tlmoe::test::TempDir;
using tlmoe::test::write_text;

namespace {
// Returns the message of the ConfigError thrown by load_config, or "" if none was thrown.
std::string config_error(const ConfigSources& src) {
  try {
    load_config(src);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST_CASE("defaults are the reference's stage-1 hyperparameters (docs/method.md §7.1)", "[config]") {
  auto c = tlmoe::Config::defaults();
  CHECK(c.routing.tau0 == 2.0);
  CHECK(c.routing.tau_min == 0.1);
  CHECK(c.routing.anneal_rate == 3e-4);
  CHECK(c.train.lr == 1e-5);
  CHECK(c.train.router_lr == 1e-3);
  CHECK(c.train.task_lr == 1e-2);
  CHECK(c.train.batch_size == 16);
  CHECK(c.train.grad_accum == 2);
  CHECK(c.train.clip_norm == 0.1);
  CHECK(c.model.experts == 3);
  CHECK(c.routing.hidden == 64);
  CHECK(c.routing.router == "linear_layer_specific");
  CHECK(c.routing.transformer_heads == 4);
  CHECK(c.routing.transformer_ffn == 64);
  CHECK(c.routing.selection == "gumbel_st");
  CHECK(c.adapt.lrs == std::vector<double>{1e-5, 2e-5, 5e-5});
  CHECK(c.adapt.batch_sizes == std::vector<std::int64_t>{2, 4, 8});
  CHECK(c.model.vanilla_encoder_layers.empty());
  // and a no-source load equals the defaults
  CHECK(tlmoe::to_yaml(load_config({})) == tlmoe::to_yaml(c));
}

TEST_CASE("precedence: defaults < base < file < --set, later --set wins", "[config]") {
  TempDir d;
  write_text(d / "sub/base.yaml",
             "model:\n  d_model: 128\n  heads: 4\n  experts: 5\ntrain:\n  steps: 10\n");
  write_text(d / "main.yaml", "base: sub/base.yaml\nmodel:\n  experts: 2\ntrain:\n  lr: 0.001\n");
  auto c = load_config({(d / "main.yaml").string(), {"train.steps=99", "train.steps=7", "adapt.lrs=[0.1, 0.2]"}});
  CHECK(c.model.d_model == 128);    // from base
  CHECK(c.model.heads == 4);        // from base
  CHECK(c.model.experts == 2);      // file beats base
  CHECK(c.train.lr == 0.001);       // file
  CHECK(c.train.steps == 7);        // last --set wins over base and earlier --set
  CHECK(c.adapt.lrs == std::vector<double>{0.1, 0.2});
  CHECK(c.model.ffn_dim == 3072);   // untouched default
}

TEST_CASE("base chains resolve relative to the naming file, deepest first", "[config]") {
  TempDir d;
  write_text(d / "a/b/root.yaml", "train:\n  steps: 1\n  seed: 5\n");
  write_text(d / "a/mid.yaml", "base: b/root.yaml\ntrain:\n  steps: 2\n");
  write_text(d / "top.yaml", "base: a/mid.yaml\n");
  auto c = load_config({(d / "top.yaml").string(), {}});
  CHECK(c.train.steps == 2);
  CHECK(c.train.seed == 5);
}

TEST_CASE("circular base chains are refused", "[config]") {
  TempDir d;
  write_text(d / "x.yaml", "base: y.yaml\n");
  write_text(d / "y.yaml", "base: x.yaml\n");
  auto msg = config_error({(d / "x.yaml").string(), {}});
  CHECK_THAT(msg, Catch::Contains("circular base chain"));
}

TEST_CASE("unknown keys name file, line, key and the nearest valid key", "[config]") {
  TempDir d;
  write_text(d / "c.yaml", "model:\n  d_model: 64\n  heads: 4\n  dmodel: 32\n");
  auto msg = config_error({(d / "c.yaml").string(), {}});
  CHECK_THAT(msg, Catch::Contains("c.yaml:4"));
  CHECK_THAT(msg, Catch::Contains("'model.dmodel'"));
  CHECK_THAT(msg, Catch::Contains("did you mean 'model.d_model'"));

  write_text(d / "s.yaml", "trian:\n  steps: 3\n");
  msg = config_error({(d / "s.yaml").string(), {}});
  CHECK_THAT(msg, Catch::Contains("s.yaml:1"));
  CHECK_THAT(msg, Catch::Contains("did you mean 'train'"));

  msg = config_error({"", {"routing.tau_mn=0.5"}});
  CHECK_THAT(msg, Catch::Contains("--set routing.tau_mn=0.5"));
  CHECK_THAT(msg, Catch::Contains("did you mean 'routing.tau_min'"));
}

TEST_CASE("wrong types are refused with file, line and key path", "[config]") {
  TempDir d;
  write_text(d / "t.yaml", "train:\n  steps: 10\n  batch_size: many\n");
  auto msg = config_error({(d / "t.yaml").string(), {}});
  CHECK_THAT(msg, Catch::Contains("t.yaml:3"));
  CHECK_THAT(msg, Catch::Contains("train.batch_size"));
  CHECK_THAT(msg, Catch::Contains("expected int"));

  CHECK_THAT(config_error({"", {"train.steps=2.5"}}), Catch::Contains("expected int"));
  CHECK_THAT(config_error({"", {"train.length_bucketing=maybe"}}), Catch::Contains("expected bool"));
  CHECK_THAT(config_error({"", {"adapt.lrs=0.1"}}), Catch::Contains("expected list of float"));
  CHECK_THAT(config_error({"", {"adapt.batch_sizes=[2, x]"}}), Catch::Contains("expected list of int"));
  CHECK_THAT(config_error({"", {"model={}"}}), Catch::Contains("is a section"));
}

TEST_CASE("out-of-range and invalid enum values are refused", "[config]") {
  TempDir d;
  write_text(d / "r.yaml", "model:\n  dropout: 1.5\n");
  auto msg = config_error({(d / "r.yaml").string(), {}});
  CHECK_THAT(msg, Catch::Contains("r.yaml:2"));
  CHECK_THAT(msg, Catch::Contains("model.dropout"));
  CHECK_THAT(msg, Catch::Contains("above the maximum"));

  CHECK_THAT(config_error({"", {"train.steps=0"}}), Catch::Contains("below the minimum"));
  CHECK_THAT(config_error({"", {"adapt.batch_sizes=[4, 0]"}}), Catch::Contains("below the minimum"));
  msg = config_error({"", {"routing.router=unknown_router"}});
  CHECK_THAT(msg, Catch::Contains("'unknown_router' is not one of"));
  CHECK_THAT(msg, Catch::Contains("linear_layer_specific"));
}

TEST_CASE("cross-field rules", "[config]") {
  CHECK_THAT(config_error({"", {"model.experts=2", "routing.top_k=3"}}),
             Catch::Contains("routing.top_k (3) must be <= model.experts (2)"));
  CHECK_THAT(config_error({"", {"model.d_model=100", "model.heads=12"}}), Catch::Contains("must divide"));
  CHECK_THAT(config_error({"", {"model.encoder_layers=2", "model.vanilla_encoder_layers=[0, 2]"}}),
             Catch::Contains("out of range"));
  CHECK_THAT(config_error({"", {"routing.tau0=0.01"}}), Catch::Contains("tau_min must be <= routing.tau0"));
  CHECK_THAT(config_error({"", {"eval.pearson_fallback=abc"}}), Catch::Contains("expected 'nan' or a number"));
  CHECK(config_error({"", {"eval.pearson_fallback=3.0"}}).empty());
  CHECK_THAT(config_error({"", {"eval.tau=abc"}}), Catch::Contains("expected 'checkpoint', 'min' or a positive number"));
  CHECK_THAT(config_error({"", {"eval.tau=0"}}), Catch::Contains("eval.tau"));
  CHECK_THAT(config_error({"", {"eval.tau=-1"}}), Catch::Contains("eval.tau"));
  CHECK(config_error({"", {"eval.tau=min"}}).empty());
  CHECK(config_error({"", {"eval.tau=0.5"}}).empty());
  // the transformer routers' heads must divide their width: task_rep.dim (shared), routing.hidden
  CHECK_THAT(config_error({"", {"routing.router=transformer", "task_rep.dim=30"}}),
             Catch::Contains("routing.transformer_heads (4) must divide the transformer router's width, task_rep.dim (30)"));
  CHECK_THAT(config_error({"", {"routing.router=transformer_layer_specific", "routing.hidden=30"}}),
             Catch::Contains("routing.hidden (30)"));
  CHECK(config_error({"", {"routing.router=transformer_layer_specific", "routing.hidden=30", "routing.transformer_heads=3"}}).empty());
  CHECK(config_error({"", {"routing.router=gru", "routing.hidden=30"}}).empty());
}

TEST_CASE("malformed files and overrides", "[config]") {
  TempDir d;
  CHECK_THAT(config_error({(d / "missing.yaml").string(), {}}), Catch::Contains("config file not found"));
  write_text(d / "bad.yaml", "model:\n  d_model: [1, 2\n  heads: 3\n");
  CHECK_THAT(config_error({(d / "bad.yaml").string(), {}}), Catch::Contains("YAML syntax error"));
  write_text(d / "list.yaml", "- a\n- b\n");
  CHECK_THAT(config_error({(d / "list.yaml").string(), {}}), Catch::Contains("top level must be a mapping"));
  write_text(d / "sec.yaml", "model: 3\n");
  CHECK_THAT(config_error({(d / "sec.yaml").string(), {}}), Catch::Contains("is a section"));
  write_text(d / "nobase.yaml", "base: nowhere.yaml\n");
  CHECK_THAT(config_error({(d / "nobase.yaml").string(), {}}), Catch::Contains("base file not found"));
  write_text(d / "null.yaml", "train:\n  steps:\n");
  CHECK_THAT(config_error({(d / "null.yaml").string(), {}}), Catch::Contains("has no value"));
  CHECK_THAT(config_error({"", {"train.steps"}}), Catch::Contains("expected section.key=value"));
}

TEST_CASE("the resolved YAML loads back to the same config", "[config]") {
  TempDir d;
  auto c = load_config({"", {"model.vanilla_decoder_layers=[1, 3]", "data.dir=some dir/x", "train.lr=3e-05",
                             "adapt.lrs=[1e-4]", "reference_compat=true"}});
  write_text(d / "resolved.yaml", tlmoe::to_yaml(c));
  auto c2 = load_config({(d / "resolved.yaml").string(), {}});
  CHECK(tlmoe::to_yaml(c2) == tlmoe::to_yaml(c));
  CHECK(c2.model.vanilla_decoder_layers == std::vector<std::int64_t>{1, 3});
  CHECK(c2.data.dir == "some dir/x");
  CHECK(c2.train.lr == 3e-5);
  CHECK(c2.reference_compat);
}

TEST_CASE("data paths default under data.dir", "[config]") {
  auto c = load_config({"", {"data.dir=/d", "data.tasks=/elsewhere/t.json"}});
  CHECK(tlmoe::splits_path(c) == "/d/splits.json");
  CHECK(tlmoe::tasks_path(c) == "/elsewhere/t.json");
  // one cache per tokenizer: spm-{upstream_source}-{vocab}-{hash of the other options}
  const std::string kshot = tlmoe::cache_dir(c);
  CHECK_THAT(kshot, Catch::StartsWith("/d/.tlmoe-cache/spm-kshot-" + std::to_string(c.tokenizer.vocab_size) + "-"));
  auto full = load_config({"", {"data.dir=/d", "data.upstream_source=full"}});
  CHECK_THAT(tlmoe::cache_dir(full), Catch::StartsWith("/d/.tlmoe-cache/spm-full-"));
  auto prefix = load_config({"", {"data.dir=/d", "data.task_prefix=false"}});
  CHECK(tlmoe::cache_dir(prefix) != kshot);
  CHECK(tlmoe::cache_dir(prefix).size() == kshot.size());
  auto same = load_config({"", {"data.dir=/d", "train.lr=0.5"}});  // not a tokenizer option
  CHECK(tlmoe::cache_dir(same) == kshot);
  auto given = load_config({"", {"data.dir=/d", "data.cache_dir=/c"}});
  CHECK(tlmoe::cache_dir(given) == "/c");
}

TEST_CASE("docs/config.md is generated from the declarations and up to date", "[config]") {
  const std::string path = tlmoe::test::source_dir() + "/docs/config.md";
  REQUIRE(std::filesystem::exists(path));
  auto on_disk = tlmoe::test::read_text(path);
  INFO("regenerate with: make docs");
  CHECK(on_disk == tlmoe::config_reference_markdown());
  // every key appears in the reference
  for (const auto& k : tlmoe::config_keys()) {
    CHECK_THAT(on_disk, Catch::Contains("`" + k + "`"));
  }
}

TEST_CASE("the shipped configs load", "[config]") {
  int n = 0;
  for (const auto& e : std::filesystem::recursive_directory_iterator(tlmoe::test::source_dir() + "/configs")) {
    if (e.path().extension() != ".yaml") continue;
    INFO(e.path().string());
    CHECK_NOTHROW(load_config({e.path().string(), {}}));
    ++n;
  }
  CHECK(n >= 9);
  // stage 2 inherits stage 1 through two base files and overrides the annealing
  auto s2 = load_config({tlmoe::test::source_dir() + "/configs/paper/stage2.yaml", {}});
  CHECK(s2.routing.selection == "softmax");
  CHECK(s2.routing.tau0 == 300.0);
  CHECK(s2.task_rep.dim == 128);
  CHECK(s2.train.steps == 60000);
  CHECK(s2.train.lr == 1e-5);
  CHECK(s2.model.experts == 3);
}

TEST_CASE("explicit keys: whatever a file, a base file or --set names, even at its default value", "[config]") {
  TempDir d;
  write_text(d / "base.yaml", "model:\n  dropout: 0.1\n");  // 0.1 is the default: still explicit
  write_text(d / "main.yaml", "base: base.yaml\ndata:\n  dir: x\n");
  auto c = load_config({(d / "main.yaml").string(), {"eval.num_beams=4"}});
  CHECK(c.explicit_keys == std::set<std::string>{"model.dropout", "data.dir", "eval.num_beams"});
  CHECK(c.is_explicit("model.dropout"));
  CHECK_FALSE(c.is_explicit("model.d_model"));
  CHECK(tlmoe::Config::defaults().explicit_keys.empty());
}

TEST_CASE("eval.beam_search, the former name of eval.semantics, still sets it", "[config]") {
  TempDir d;
  write_text(d / "old.yaml", "eval:\n  beam_search: current\n");
  auto c = load_config({(d / "old.yaml").string(), {}});
  CHECK(c.eval.semantics == "current");
  CHECK(c.is_explicit("eval.semantics"));
  CHECK(load_config({"", {"eval.beam_search=legacy"}}).eval.semantics == "legacy");
  CHECK_THAT(config_error({"", {"eval.semantics=newest"}}), Catch::Contains("eval.semantics") && Catch::Contains("legacy, current"));
}

TEST_CASE("eval.decoder_start: generation starts from the training token, eos, bos, or bos under reference_compat", "[config]") {
  auto cfg = tlmoe::Config::defaults();  // model.decoder_start eos: training shifts with </s>
  auto start = [](const tlmoe::Config& c) { return tlmoe::evaluate::generation_options(c, 0, 2, 1).decoder_start_id; };
  CHECK(tlmoe::model::generation_start(cfg) == "eos");
  CHECK(start(cfg) == 2);
  cfg.model.decoder_start = "bos";
  CHECK(start(cfg) == 0);  // "train" follows the training token
  cfg.model.decoder_start = "eos";
  cfg.reference_compat = true;
  CHECK(start(cfg) == 0);  // the reference: trained with </s>, generates from <s>
  cfg.explicit_keys.insert("eval.decoder_start");
  CHECK(start(cfg) == 2);  // an explicit "train" wins over reference_compat
  cfg.eval.decoder_start = "bos";
  cfg.reference_compat = false;
  CHECK(start(cfg) == 0);
  CHECK_THAT(tlmoe::model::describe_generation(cfg), Catch::Contains("decoder start <s>"));
}
