// Bad input, as a careful user hits it by accident: every reader names the file (and key, tensor or
// line), nothing reaches the user as a raw library exception, suspicious but legal input is warned
// about, and a killed writer's leftovers and a concurrent writer are dealt with.
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <torch/torch.h>  // before catch.hpp: c10 defines CHECK too

#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/error.h"
#include "adapt/adapt.h"
#include "analysis/analyze.h"
#include "config/config.h"
#include "evaluate/checkpoint_eval.h"
#include "data/preprocess.h"
#include "data/task_meta.h"
#include "data/task_rep.h"
#include "data/token_cache.h"
#include "data/tsv.h"
#include "io/atomic_file.h"
#include "io/checkpoint.h"
#include "io/dir_lock.h"
#include "io/json_text.h"
#include "io/safetensors.h"
#include "model/load_model.h"
#include "test_util.h"
#include "train/task_rep_compute.h"
#include "tiny_data.h"

namespace fs = std::filesystem;
using nlohmann::json;
using tlmoe::test::read_text;
using tlmoe::test::run;
using tlmoe::test::TempDir;
using tlmoe::test::Tiny;
using tlmoe::test::write_text;

namespace {

// The message of the DataError (or ConfigError) that `f` throws; FAIL for anything else.
template <class F>
std::string input_error(F&& f) {
  try {
    f();
  } catch (const tlmoe::InputError& e) {
    return e.what();
  } catch (const std::exception& e) {
    FAIL("not an input error: " << e.what());
  }
  FAIL("no error");
  return "";
}

// A copy of a trained tiny run's last/ with meta.json edited by `edit`.
fs::path edited_checkpoint(const fs::path& src, const fs::path& dst, const std::function<void(json&)>& edit) {
  fs::copy(src, dst, fs::copy_options::recursive);
  json meta = json::parse(read_text(dst / "meta.json"));
  edit(meta);
  write_text(dst / "meta.json", meta.dump(1));
  return dst;
}

void rewrite_weights(const fs::path& file, const std::function<void(std::string&, torch::Tensor&)>& edit) {
  auto f = tlmoe::io::load_safetensors(file);
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& n : f.names) {
    std::string name = n;
    torch::Tensor t = f.tensors.at(n);
    edit(name, t);
    out.emplace_back(name, t);
  }
  tlmoe::io::save_safetensors(file, out, f.metadata);
}

// A tiny run of `steps` steps (no TensorBoard) in t.dir / dir; its config.
tlmoe::Config short_run(const Tiny& t, int64_t steps, const std::string& dir) {
  auto cfg = t.config();
  cfg.train.steps = steps;
  cfg.train.tensorboard = false;
  run(cfg, t.dir / dir);
  return cfg;
}

}  // namespace

TEST_CASE("meta.json: wrong types, null and missing state are named with the key", "[bad-input]") {
  Tiny t;
  const auto cfg = short_run(t, 2, "r");
  const fs::path last = t.dir / "r/last";
  auto msg = input_error([&] {
    tlmoe::io::load_checkpoint(edited_checkpoint(last, t.dir / "a", [](json& m) { m["step"] = "abc"; }));
  });
  CHECK_THAT(msg, Catch::Contains("a/meta.json") && Catch::Contains("\"step\" must be a non-negative integer, found string"));
  msg = input_error([&] {
    tlmoe::io::load_checkpoint(edited_checkpoint(last, t.dir / "b", [](json& m) { m["trainer"]["epoch"] = nullptr; }));
  });
  CHECK_THAT(msg, Catch::Contains("\"trainer.epoch\" must be a non-negative integer, found null"));
  msg = input_error([&] {
    tlmoe::io::load_checkpoint(edited_checkpoint(last, t.dir / "c", [](json& m) { m["tasks"] = {"a", 3}; }));
  });
  CHECK_THAT(msg, Catch::Contains("\"tasks\" must be a list of task names"));
  msg = input_error([&] { tlmoe::io::load_checkpoint(edited_checkpoint(last, t.dir / "d", [](json& m) { m = nullptr; })); });
  CHECK_THAT(msg, Catch::Contains("expected a JSON object, found null"));
  // a duplicate key: both lines named
  fs::copy(last, t.dir / "e", fs::copy_options::recursive);
  const std::string text = read_text(t.dir / "e/meta.json");
  write_text(t.dir / "e/meta.json", "{\n \"step\": 1,\n" + text.substr(text.find('{') + 1));
  msg = input_error([&] { tlmoe::io::load_checkpoint(t.dir / "e"); });
  CHECK_THAT(msg, Catch::Contains("key \"step\" appears twice in one object (lines 2 and"));
  // resuming a checkpoint without trainer state (an export, say)
  fs::remove_all(last);
  edited_checkpoint(t.dir / "a", last, [](json& m) {
    m["step"] = 2;
    m.erase("trainer");
  });
  msg = input_error([&] { run(cfg, t.dir / "r", /*resume=*/true); });
  CHECK_THAT(msg, Catch::Contains("r/last/meta.json") && Catch::Contains("holds no trainer state"));
}

TEST_CASE("model.safetensors: a 0-dim embedding, an integer dtype, a config far larger than the weights", "[bad-input]") {
  Tiny t;
  const auto cfg = short_run(t, 2, "r");
  const fs::path last = t.dir / "r/last";
  fs::copy(last, t.dir / "z", fs::copy_options::recursive);
  rewrite_weights(t.dir / "z/model.safetensors", [](std::string& n, torch::Tensor& v) {
    if (n == "model.shared.weight") v = torch::tensor(1.0f);
  });
  auto msg = input_error([&] { tlmoe::model::load_model((t.dir / "z").string()); });
  CHECK_THAT(msg, Catch::Contains("z/model.safetensors") && Catch::Contains("model.shared.weight has 0 dimensions"));

  // An I32 tensor where the model has F32: same width, refused (it would load as garbage numbers).
  fs::copy(last, t.dir / "i", fs::copy_options::recursive);
  rewrite_weights(t.dir / "i/model.safetensors", [](std::string& n, torch::Tensor& v) {
    if (n == "final_logits_bias") v = v.to(torch::kInt);
  });
  msg = input_error([&] { tlmoe::model::load_model((t.dir / "i").string()); });
  CHECK_THAT(msg, Catch::Contains("final_logits_bias is Int in the checkpoint but Float in the model"));
  // a float type converts (a bf16 export loads into the fp32 model)
  fs::copy(last, t.dir / "h", fs::copy_options::recursive);
  rewrite_weights(t.dir / "h/model.safetensors", [](std::string& n, torch::Tensor& v) {
    if (n == "final_logits_bias") v = v.to(torch::kBFloat16);
  });
  CHECK_NOTHROW(tlmoe::model::load_model((t.dir / "h").string()));

  // meta.json describing feed-forward blocks 15000 times wider: refused before the model is built
  auto big = edited_checkpoint(last, t.dir / "big", [](json& m) {
    std::string c = m["config"];
    const auto at = c.find("ffn_dim: 64\n");
    REQUIRE(at != std::string::npos);
    c.replace(at, 11, "ffn_dim: 1000000");
    m["config"] = c;
  });
  msg = input_error([&] { tlmoe::model::load_model(big.string()); });
  CHECK_THAT(msg, Catch::Contains("big/meta.json") && Catch::Contains("describes a model of at least") &&
                      Catch::Contains("do not belong together"));
}

TEST_CASE("NaN weights: load_model lists them and eval warns and records them in summary.json", "[bad-input]") {
  Tiny t;
  const auto cfg = short_run(t, 2, "r");
  rewrite_weights(t.dir / "r/last/model.safetensors", [](std::string& n, torch::Tensor& v) {
    if (n == "final_logits_bias") v = torch::full_like(v, std::nanf(""));
  });
  auto lm = tlmoe::model::load_model((t.dir / "r/last").string());
  CHECK(lm.non_finite == std::vector<std::string>{"final_logits_bias"});
  CHECK_THAT(tlmoe::model::non_finite_warning(lm, "ck"), Catch::Contains("1 tensor(s) of ck hold NaN or Inf values (final_logits_bias)"));
  write_text(t.dir / "cfg.yaml", tlmoe::to_yaml(cfg));
  auto r = tlmoe::test::run_tlmoe("eval --config " + (t.dir / "cfg.yaml").string() + " --checkpoint " +
                                  (t.dir / "r/last").string() + " --out " + (t.dir / "ev").string());
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.output, Catch::Contains("warning: 1 tensor(s) of") && Catch::Contains("hold NaN or Inf values"));
  const json s = json::parse(read_text(t.dir / "ev/summary.json"));
  CHECK(s.at("non_finite_weights") == json::array({"final_logits_bias"}));

  // adapt and analyze-routes record them too; the ontology below leaves out "second", which
  // analyze-routes names
  std::ostringstream log;
  auto ao = tlmoe::test::tiny_adapt(cfg, t.dir / "r/last", t.dir / "ad", log);
  tlmoe::adapt::adapt(ao);
  CHECK(json::parse(read_text(t.dir / "ad/summary.json")).at("non_finite_weights") == json::array({"final_logits_bias"}));
  write_text(t.dir / "data/ontology.json", R"({"copy": {"ends": ["first", "last"]}})");
  tlmoe::analysis::AnalyzeOptions an;
  an.cfg = cfg;
  an.checkpoint = (t.dir / "r/last").string();
  an.out_dir = (t.dir / "an").string();
  an.log = &log;
  tlmoe::analysis::analyze_routes(an);
  const json st = json::parse(read_text(t.dir / "an/stats.json"));
  CHECK(st.at("non_finite_weights") == json::array({"final_logits_bias"}));
  CHECK(st.at("tasks_not_in_ontology") == json::array({"second"}));
  CHECK_THAT(log.str(), Catch::Contains("warning: adapt: non-finite loss") &&
                            Catch::Contains("1 of the checkpoint's tasks are not in") && Catch::Contains("(second)"));
}

TEST_CASE("a damaged preprocess manifest names the field", "[bad-input][preprocess]") {
  Tiny t;
  auto cfg = t.config();
  std::ostringstream log;
  const auto rep = tlmoe::data::preprocess(cfg, log);
  const fs::path man = rep.cache_dir / "manifest.json";
  json m = json::parse(read_text(man));
  m["tokenizer"]["vocab_size"] = "48";
  write_text(man, m.dump());
  CHECK_THAT(input_error([&] { tlmoe::data::read_preprocess_manifest(cfg); }),
             Catch::Contains("manifest.json") && Catch::Contains("\"tokenizer.vocab_size\" is not an integer"));
  m = json::parse(read_text(man));
  m["tokenizer"]["vocab_size"] = 48;
  m["tasks"]["first"]["files"][0].erase("cache");
  write_text(man, m.dump());
  CHECK_THAT(input_error([&] { tlmoe::data::read_preprocess_manifest(cfg); }),
             Catch::Contains("\"tasks.first.files[].cache\" is not a string"));
  write_text(man, "[1e400]");
  CHECK_THAT(input_error([&] { tlmoe::data::read_preprocess_manifest(cfg); }), Catch::Contains("damaged manifest: number overflow"));
}

TEST_CASE("damaged RNG state and token ids outside the vocabulary are refused naming the file", "[bad-input]") {
  Tiny t;
  auto cfg = t.config();
  cfg.train.steps = 4;
  cfg.train.eval_every = 2;
  cfg.train.tensorboard = false;
  run(cfg, t.dir / "r", false, 2);
  rewrite_weights(t.dir / "r/last/optimizer.safetensors", [](std::string& n, torch::Tensor& v) {
    if (n == "rng.cpu") v = v.slice(0, 0, 100).clone();
  });
  auto msg = input_error([&] { run(cfg, t.dir / "r", true); });
  CHECK_THAT(msg, Catch::Contains("r/last/optimizer.safetensors") && Catch::Contains("rng.cpu is not a CPU generator state"));

  tlmoe::data::TokenCache c;
  c.manifest.source = "x.tsv";
  c.manifest.key.task = "x";
  c.examples.push_back({{0, 5, 2}, {{0, 7, 2}}});
  c.examples.push_back({{0, 4000, 2}, {{0, 2}}});
  tlmoe::data::write_token_cache(t.dir / "x.tok", c);
  CHECK(tlmoe::data::read_token_cache(t.dir / "x.tok").examples.size() == 2);  // vocabulary unknown: read
  msg = input_error([&] { tlmoe::data::read_token_cache(t.dir / "x.tok", 48); });
  CHECK_THAT(msg, Catch::Contains("x.tok") && Catch::Contains("token id 4000 in sequence 3 is outside the vocabulary of 48 ids"));
}

TEST_CASE("duplicate keys: splits.json names both lines, a YAML config both places", "[bad-input]") {
  TempDir d;
  write_text(d / "splits.json", "{\n  \"train\": [\"a\"],\n  \"dev\": [],\n  \"train\": [\"b\"],\n  \"test\": []\n}\n");
  auto msg = input_error([&] { tlmoe::data::load_splits(d / "splits.json"); });
  CHECK_THAT(msg, Catch::Contains("splits.json:4") && Catch::Contains("key \"train\" appears twice in one object (lines 2 and 4)"));
  // the same key name in different objects is fine; nested duplicates are found
  CHECK_FALSE(tlmoe::io::find_duplicate_key(R"({"a": {"x": 1}, "b": {"x": 2}, "c": [{"x": 1}, {"x": 2}]})"));
  auto dup = tlmoe::io::find_duplicate_key("{\"a\": {\"x\": 1,\n \"y\": \"x\",\n \"x\": 3}}");
  REQUIRE(dup);
  CHECK(dup->key == "x");
  CHECK(dup->first == 1);
  CHECK(dup->second == 3);

  write_text(d / "c.yaml", "model:\n  d_model: 64\n  heads: 4\n  d_model: 32\n");
  msg = input_error([&] { tlmoe::load_config({(d / "c.yaml").string(), {}}); });
  CHECK_THAT(msg, Catch::Contains("c.yaml:4") && Catch::Contains("model.d_model") && Catch::Contains("given twice") &&
                      Catch::Contains("first at " + (d / "c.yaml").string() + ":2"));
  write_text(d / "s.yaml", "model:\n  d_model: 64\nmodel:\n  heads: 4\n");
  CHECK_THAT(input_error([&] { tlmoe::load_config({(d / "s.yaml").string(), {}}); }), Catch::Contains("s.yaml:3"));
}

TEST_CASE("cross-field config errors name the file and line (or --set) where the key was set", "[bad-input]") {
  TempDir d;
  write_text(d / "c.yaml", "data:\n  dir: x\nmodel:\n  experts: 2\nrouting:\n  top_k: 3\n");
  auto msg = input_error([&] { tlmoe::load_config({(d / "c.yaml").string(), {}}); });
  CHECK_THAT(msg, Catch::Contains("c.yaml:6") && Catch::Contains("routing.top_k (3) must be <= model.experts (2)"));
  // the checked key at its default: the key it is checked against names the place
  write_text(d / "t.yaml", "data:\n  dir: x\nrouting:\n  tau0: 0.01\n");
  CHECK_THAT(input_error([&] { tlmoe::load_config({(d / "t.yaml").string(), {}}); }),
             Catch::Contains("t.yaml:4") && Catch::Contains("routing.tau_min must be <= routing.tau0"));
  write_text(d / "h.yaml", "data:\n  dir: x\n");
  CHECK_THAT(input_error([&] { tlmoe::load_config({(d / "h.yaml").string(), {"model.heads=5"}}); }),
             Catch::Contains("--set model.heads=5") && Catch::Contains("must divide model.d_model"));
  CHECK_THAT(input_error([&] { tlmoe::load_config({(d / "h.yaml").string(), {"adapt.lrs=[]"}}); }),
             Catch::Contains("--set adapt.lrs=[]") && Catch::Contains("grid is empty"));
}

TEST_CASE("only regular files are read: a directory as config, a FIFO as TSV", "[bad-input]") {
  TempDir d;
  fs::create_directories(d / "conf.yaml");
  CHECK_THAT(input_error([&] { tlmoe::load_config({(d / "conf.yaml").string(), {}}); }),
             Catch::Contains("conf.yaml") && Catch::Contains("is a directory"));
  REQUIRE(::mkfifo((d / "pipe.tsv").c_str(), 0600) == 0);
  CHECK_THAT(input_error([&] { tlmoe::data::read_tsv(d / "pipe.tsv"); }),  // returns at once, no hang
             Catch::Contains("pipe.tsv") && Catch::Contains("FIFO"));
}

TEST_CASE("without_stack_frames keeps LibTorch's message and drops its frames", "[bad-input]") {
  try {
    TORCH_CHECK(false, "shapes do not fit");
  } catch (const c10::Error& e) {
    const std::string full = e.what(), shown = tlmoe::without_stack_frames(full);
    CHECK_THAT(shown, Catch::Contains("shapes do not fit"));
    CHECK(shown.find("frame #") == std::string::npos);
    CHECK(shown.find("Exception raised from") == std::string::npos);
  }
  CHECK(tlmoe::without_stack_frames("one\nframe #0: x\ntwo") == "one\ntwo");
}

TEST_CASE("preprocess: a killed writer's temporaries are removed, a live writer's lock refuses a second writer",
          "[bad-input][preprocess]") {
  Tiny t;
  auto cfg = t.config();
  std::ostringstream log;
  const auto rep = tlmoe::data::preprocess(cfg, log);
  // what a preprocess killed while writing leaves: a cache temporary of a pid that no longer runs
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  REQUIRE(child > 0);
  ::waitpid(child, nullptr, 0);
  const fs::path tmp = rep.cache_dir / ("tokens/first/first_full_train.tok.tmp-" + std::to_string(child) + "-1f");
  const fs::path live = rep.cache_dir / ("tokens/first/first_full_train.tok.tmp-" + std::to_string(::getpid()) + "-2f");
  write_text(tmp, "half");
  write_text(live, "being written");
  std::ostringstream again;
  tlmoe::data::preprocess(cfg, again);
  CHECK_FALSE(fs::exists(tmp));
  CHECK(fs::exists(live));  // a live writer's file is not touched
  CHECK_THAT(again.str(), Catch::Contains("removed 1 temporary file(s) of killed writers"));
  fs::remove(live);

  // Another process holds the cache's lock: an up-to-date cache is still read, a change is refused.
  write_text(rep.cache_dir / ".tlmoe.lock", std::to_string(::getppid()) + " " + tlmoe::io::host_name() + "\n");
  CHECK_NOTHROW(tlmoe::data::preprocess(cfg, again));
  write_text(t.dir / "data/first/first_full_dev.tsv", "new input\tnew output\n");
  try {
    tlmoe::data::preprocess(cfg, again);
    FAIL("a second writer was let in");
  } catch (const tlmoe::UsageError& e) {
    CHECK_THAT(e.what(), Catch::Contains("in use by process " + std::to_string(::getppid())));
  }
}

TEST_CASE("a full disk leaves each output complete or absent: eval, adapt, analyze-routes", "[bad-input][full-disk]") {
  struct FaultOff {
    ~FaultOff() { tlmoe::io::set_write_fault(nullptr); }
  } off;
  Tiny t;
  const auto cfg = short_run(t, 10, "run");
  const std::string ck = (t.dir / "run/last").string();
  auto full_at = [](const std::string& name) {
    tlmoe::io::set_write_fault([name](const fs::path& p) { return p.filename() == name; });
  };
  auto names_in = [](const fs::path& d) {
    std::vector<std::string> v;
    if (fs::exists(d))
      for (const auto& e : fs::recursive_directory_iterator(d)) v.push_back(fs::relative(e.path(), d).string());
    std::sort(v.begin(), v.end());
    return v;
  };

  // eval: the disk fills while the third task's predictions are written: summary.json and the
  // predictions of the first two tasks, nothing of the third
  std::ostringstream log;
  tlmoe::evaluate::CheckpointEvalOptions eo;
  eo.cfg = cfg;
  eo.checkpoint = ck;
  eo.partitions = {"train", "test"};
  eo.out_dir = (t.dir / "ev").string();
  eo.log = &log;
  full_at("second.jsonl");
  try {
    tlmoe::evaluate::evaluate_checkpoint(eo);
    FAIL("no error on a full disk");
  } catch (const std::runtime_error& e) {
    CHECK_THAT(e.what(), Catch::Contains("predictions/second.jsonl") && Catch::Contains("No space left on device"));
  }
  CHECK(names_in(t.dir / "ev") == std::vector<std::string>{"predictions", "predictions/first.jsonl",
                                                           "predictions/last.jsonl", "summary.json"});
  const json s = json::parse(read_text(t.dir / "ev/summary.json"));
  CHECK(s["complete"] == false);
  CHECK(s["tasks"].size() == 2);

  // adapt: results.csv and summary.json together or not at all
  auto ao = tlmoe::test::tiny_adapt(cfg, ck, t.dir / "ad", log);
  full_at("summary.json");
  CHECK_THROWS_WITH(tlmoe::adapt::adapt(ao), Catch::Contains("No space left on device"));
  CHECK_FALSE(fs::exists(t.dir / "ad/results.csv"));
  CHECK_FALSE(fs::exists(t.dir / "ad/summary.json"));

  // analyze-routes: the disk fills at the last file (report.md): nothing lands in --out, whose
  // other files stay
  write_text(t.dir / "an/mine.txt", "keep");
  tlmoe::analysis::AnalyzeOptions an;
  an.cfg = cfg;
  an.checkpoint = ck;
  an.out_dir = (t.dir / "an").string();
  an.log = &log;
  full_at("report.md");
  CHECK_THROWS_WITH(tlmoe::analysis::analyze_routes(an), Catch::Contains("report.md") && Catch::Contains("No space left on device"));
  CHECK(names_in(t.dir / "an") == std::vector<std::string>{"mine.txt"});
  for (const auto& e : fs::directory_iterator(t.dir.path())) CHECK(e.path().filename().string().find(".tmp-") == std::string::npos);
  tlmoe::io::set_write_fault(nullptr);
  tlmoe::analysis::analyze_routes(an);
  CHECK(fs::exists(t.dir / "an/report.md"));
  CHECK(read_text(t.dir / "an/mine.txt") == "keep");
}

TEST_CASE("adapt: a grid point whose loss diverges stops with a warning, the sweep goes on and records it",
          "[bad-input][adapt]") {
  Tiny t;
  const auto cfg = short_run(t, 4, "run");
  std::ostringstream log;
  auto ao = tlmoe::test::tiny_adapt(cfg, t.dir / "run/last", t.dir / "ad", log);
  ao.cfg.adapt.lrs = {1e-3, 1e12};  // the second one blows the weights up at once
  ao.cfg.adapt.steps = 4;
  ao.cfg.adapt.eval_every = 2;
  const auto r = tlmoe::adapt::adapt(ao);
  CHECK(r.complete);
  CHECK_THAT(log.str(), Catch::Contains("warning: adapt: non-finite loss for second") && Catch::Contains("lr 1e+12"));
  const json s = json::parse(read_text(t.dir / "ad/summary.json"));
  REQUIRE(s.contains("diverged_points"));
  CHECK(s["diverged_points"].size() == 2);  // lr 1e12 on both splits
  for (const auto& d : s["diverged_points"]) CHECK(d["lr"] == 1e12);
  // the selected point of every split is the one that did not diverge
  for (const auto& [k, v] : s["tasks"]["second"]["splits"].items()) CHECK(v["lr"] == 1e-3);
}

TEST_CASE("a damaged or replaced cached tokenizer is refused before use", "[bad-input][preprocess]") {
  Tiny t;
  auto cfg = t.config();
  std::ostringstream log;
  const auto rep = tlmoe::data::preprocess(cfg, log);
  CHECK_NOTHROW(tlmoe::data::load_tokenizer(cfg));
  const fs::path model = rep.tokenizer_model;
  std::string bytes = read_text(model);
  // one byte of a piece's text changed: still a valid SentencePiece model, but not this cache's
  const auto at = bytes.find("\xe2\x96\x81");  // the first word-start marker of a piece
  REQUIRE(at != std::string::npos);
  bytes[at + 3] = bytes[at + 3] == 'z' ? 'y' : 'z';
  write_text(model, bytes);
  const std::string msg = input_error([&] { tlmoe::data::load_tokenizer(cfg); });
  CHECK_THAT(msg, Catch::Contains(model.string()) && Catch::Contains("is not the one the token caches were built with") &&
                      Catch::Contains("tlmoe preprocess"));
  // preprocess notices the same and trains it again
  std::ostringstream again;
  tlmoe::data::preprocess(cfg, again);
  CHECK_NOTHROW(tlmoe::data::load_tokenizer(cfg));
}

TEST_CASE("task representations: computing them takes the cache's lock, reusing them does not", "[bad-input][taskrep]") {
  Tiny t;
  tlmoe::test::train_dense_source(t);
  auto cfg = t.config();
  cfg.task_rep.kind = "textemb";
  cfg.task_rep.source_checkpoint = (t.dir / "dense/last").string();
  cfg.task_rep.dim = 32;
  std::ostringstream log;
  const auto rep = tlmoe::data::preprocess(cfg, log);
  write_text(rep.cache_dir / ".tlmoe.lock", std::to_string(::getppid()) + " " + tlmoe::io::host_name() + "\n");
  try {
    tlmoe::train::compute_task_reps(cfg, log);
    FAIL("representations were written while another process holds the cache");
  } catch (const tlmoe::UsageError& e) {
    CHECK_THAT(e.what(), Catch::Contains("in use by process " + std::to_string(::getppid())));
  }
  CHECK_FALSE(fs::exists(tlmoe::data::task_rep_path(cfg)));
  fs::remove(rep.cache_dir / ".tlmoe.lock");
  CHECK_FALSE(tlmoe::train::compute_task_reps(cfg, log).reused);
  write_text(rep.cache_dir / ".tlmoe.lock", std::to_string(::getppid()) + " " + tlmoe::io::host_name() + "\n");
  CHECK(tlmoe::train::compute_task_reps(cfg, log).reused);  // up to date: read, no lock needed
}
