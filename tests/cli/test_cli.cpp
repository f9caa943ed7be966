// End-to-end tests of the tlmoe binary: help, version, exit codes, gym -> preprocess.
#include <catch2/catch.hpp>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "test_util.h"

namespace fs = std::filesystem;
using tlmoe::test::read_text;
using tlmoe::test::run_tlmoe;
using tlmoe::test::TempDir;
using tlmoe::test::write_text;

TEST_CASE("--help lists every subcommand, --version names git, LibTorch and CUDA", "[cli]") {
  auto r = run_tlmoe("--help");
  CHECK(r.exit_code == 0);
  for (const char* sub : {"gym", "preprocess", "train", "adapt", "eval", "analyze-routes", "bench", "config"})
    CHECK_THAT(r.output, Catch::Contains(sub));
  r = run_tlmoe("--version");
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.output, Catch::Contains("git"));
  CHECK_THAT(r.output, Catch::Contains("LibTorch 2."));
  CHECK_THAT(r.output, Catch::Contains("CUDA kernels:"));
  for (const char* sub : {"gym", "preprocess", "train", "adapt", "eval", "analyze-routes", "bench", "config show"}) {
    INFO(sub);
    CHECK(run_tlmoe(std::string(sub) + " --help").exit_code == 0);
  }
}

namespace {
// Runs tlmoe with TLMOE_MALLOC set (or unset for nullptr) in its environment.
tlmoe::test::RunResult run_with_malloc(const char* value, const std::string& args) {
  const char* old = std::getenv("TLMOE_MALLOC");
  const std::string saved = old ? old : "";
  if (value) ::setenv("TLMOE_MALLOC", value, 1);
  else ::unsetenv("TLMOE_MALLOC");
  auto r = run_tlmoe(args);
  if (old) ::setenv("TLMOE_MALLOC", saved.c_str(), 1);
  else ::unsetenv("TLMOE_MALLOC");
  return r;
}
}  // namespace

TEST_CASE("TLMOE_MALLOC chooses the CPU block cache or LibTorch's allocator, and refuses other values", "[cli]") {
  CHECK_THAT(run_with_malloc(nullptr, "--version").output, Catch::Contains("CPU block cache: on"));
  CHECK_THAT(run_with_malloc("cache", "--version").output, Catch::Contains("CPU block cache: on"));
  CHECK_THAT(run_with_malloc("system", "--version").output, Catch::Contains("CPU block cache: off"));
  auto bad = run_with_malloc("jemalloc", "--version");
  CHECK(bad.exit_code == 2);
  CHECK_THAT(bad.output, Catch::Contains("TLMOE_MALLOC='jemalloc'") && Catch::Contains("'system'"));
  CHECK(run_with_malloc("jemalloc", "gym --help").exit_code == 2);
}

TEST_CASE("usage errors exit 2", "[cli]") {
  CHECK(run_tlmoe("").exit_code == 2);                       // no subcommand
  CHECK(run_tlmoe("frobnicate").exit_code == 2);             // unknown subcommand
  CHECK(run_tlmoe("gym").exit_code == 2);                    // missing --out
  CHECK(run_tlmoe("gym --out x --seed abc").exit_code == 2); // bad value
  CHECK(run_tlmoe("bench nothing").exit_code == 2);
  CHECK(run_tlmoe("bench train --warmup -1").exit_code == 2);
}

TEST_CASE("bench dispatch reports gather and scatter bandwidth next to copy and the naive path", "[cli][bench]") {
  TempDir d;
  auto r = run_tlmoe("bench dispatch --shapes \"4,8,16,3,1;6,4,8,2,2\" --min-seconds 0.02 --rounds 1 --out " +
                     (d / "b.json").string());
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.output, Catch::Contains("4,8,16,3,1") && Catch::Contains("6,4,8,2,2") && Catch::Contains("idx_sel"));
  auto rep = nlohmann::json::parse(read_text(d / "b.json"));
  REQUIRE(rep["rows"].size() == 2);
  const auto& row = rep["rows"][1];
  CHECK(row["K"] == 2);
  // bytes: gather reads and writes B*K rows of S*D fp32; scatter reads B*K rows and writes B
  CHECK(row["gather_mb"].get<double>() == Approx(2.0 * 12 * 4 * 8 * 4 / 1e6));
  CHECK(row["scatter_mb"].get<double>() == Approx((12 + 6) * 4 * 8 * 4 / 1e6));
  for (const char* k : {"copy_gbps_gather_size", "gather_gbps", "index_select_gbps", "scatter_gbps", "index_add_gbps"})
    CHECK(row[k].get<double>() > 0);
  CHECK(run_tlmoe("bench dispatch --shapes 4,8,16").exit_code == 2);
  CHECK(run_tlmoe("bench dispatch --shapes \"4,8,16,2,3\"").exit_code == 2);  // K > m
}

TEST_CASE("bench train reports training and forward throughput, step phases and model FLOPs", "[cli][bench]") {
  TempDir d;
  write_text(d / "c.yaml",
             "data:\n  max_input_len: 64\n  max_output_len: 16\ntokenizer:\n  vocab_size: 64\nmodel:\n  d_model: 16\n"
             "  heads: 2\n  ffn_dim: 32\n  encoder_layers: 1\n  decoder_layers: 1\n  experts: 2\n  max_positions: 80\n"
             "train:\n  batch_size: 4\n  grad_accum: 1\n");
  auto r = run_tlmoe("bench train --config " + (d / "c.yaml").string() + " --steps 2 --rounds 1 --peak-tflops 1 --out " +
                     (d / "b.json").string());
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.output, Catch::Contains("fwd tok/s") && Catch::Contains("MFU"));
  auto rep = nlohmann::json::parse(read_text(d / "b.json"));
  REQUIRE(rep["variants"].size() == 3);
  // model FLOPs by hand for vanilla: B=4, S=64, T=16, d=16, F=32, V=64, one encoder and one decoder layer
  const double d_ = 16, F = 32, S = 64, T = 16, V = 64;
  const double enc = S * (4 * d_ * d_ + 2 * d_ * F + 2 * S * d_);
  const double dec = T * (4 * d_ * d_ + 2 * T * d_ + 2 * d_ * d_ + 2 * S * d_ + 2 * d_ * F) + S * 2 * d_ * d_;
  const double flops = 6.0 * 4 * (enc + dec + T * d_ * V);
  CHECK(rep["variants"][0]["model_flops_per_step"].get<double>() == Approx(flops));
  CHECK(rep["variants"][2]["model_flops_per_step"].get<double>() == Approx(flops));  // top-1: one expert
  CHECK(rep["variants"][1]["model_flops_per_step"].get<double>() > 1.9 * flops);    // dense: both experts
  for (const auto& v : rep["variants"]) {
    CHECK(v["forward_tokens_per_s"].get<double>() > 0);
    CHECK(v["step_seconds"]["backward"].get<double>() > 0);
    CHECK(v.contains("mfu"));
  }
  // --no-dense: vanilla and sparse only, with the same FLOP accounting
  auto nd = run_tlmoe("bench train --config " + (d / "c.yaml").string() + " --steps 1 --rounds 1 --no-dense --out " +
                      (d / "nd.json").string());
  INFO(nd.output);
  REQUIRE(nd.exit_code == 0);
  auto rep2 = nlohmann::json::parse(read_text(d / "nd.json"));
  REQUIRE(rep2["variants"].size() == 2);
  CHECK_THAT(rep2["variants"][1]["name"].get<std::string>(), Catch::Contains("sparse"));
  CHECK(rep2["variants"][1]["model_flops_per_step"].get<double>() == Approx(flops));
  // train.grad_accum: an optimizer step is two micro-batches, twice the FLOPs and tokens
  auto ga = run_tlmoe("bench train --config " + (d / "c.yaml").string() +
                      " --steps 1 --rounds 1 --no-dense --set train.grad_accum=2 --out " + (d / "ga.json").string());
  INFO(ga.output);
  REQUIRE(ga.exit_code == 0);
  CHECK_THAT(ga.output, Catch::Contains("batch 4 x 2 micro-batches x (64 + 16) tokens per step"));
  auto rep3 = nlohmann::json::parse(read_text(d / "ga.json"));
  CHECK(rep3["batch"]["grad_accum"].get<int64_t>() == 2);
  CHECK(rep3["variants"][0]["model_flops_per_step"].get<double>() == Approx(2 * flops));
  CHECK(rep3["variants"][1]["model_flops_per_step"].get<double>() == Approx(2 * flops));
  for (const auto& v : rep3["variants"]) CHECK(v.contains("host_cache_timed_steps"));
  // with LibTorch's own allocator there is no cache activity to report
  auto sys = run_with_malloc("system", "bench train --config " + (d / "c.yaml").string() +
                                           " --steps 1 --rounds 1 --no-dense --out " + (d / "sys.json").string());
  REQUIRE(sys.exit_code == 0);
  for (const auto& v : nlohmann::json::parse(read_text(d / "sys.json"))["variants"])
    CHECK_FALSE(v.contains("host_cache_timed_steps"));
}

namespace {
// A summary.json as adapt writes it: task -> split seed -> selected test score.
std::string summary(const std::vector<std::pair<std::string, std::vector<std::pair<int, double>>>>& tasks) {
  std::string s = "{\"complete\": true, \"tasks\": {";
  for (size_t i = 0; i < tasks.size(); ++i) {
    s += (i ? ", " : "") + std::string("\"") + tasks[i].first + "\": {\"metric\": \"EM\", \"mean\": ";
    double m = 0;
    for (auto& [seed, v] : tasks[i].second) m += v / static_cast<double>(tasks[i].second.size());
    s += std::to_string(m) + ", \"splits\": {";
    for (size_t j = 0; j < tasks[i].second.size(); ++j)
      s += (j ? ", " : "") + std::string("\"p") + std::to_string(tasks[i].second[j].first) + "\": {\"seed\": " +
           std::to_string(tasks[i].second[j].first) + ", \"test\": " + std::to_string(tasks[i].second[j].second) + "}";
    s += "}}";
  }
  return s + "}}";
}
}  // namespace

TEST_CASE("eval compare and eval table report ARG on hand-made result tables", "[cli][eval]") {
  TempDir d;
  // t1: A mean 0.5, B mean 0.4 -> RG +25 %; t2: A 0.3, B 0.6 -> RG -50 %; ARG = (25 - 50) / 2 = -12.5 %
  write_text(d / "a/summary.json", summary({{"t1", {{13, 0.6}, {42, 0.4}}}, {"t2", {{13, 0.3}, {42, 0.3}}}}));
  write_text(d / "b/summary.json", summary({{"t1", {{13, 0.4}, {42, 0.4}}}, {"t2", {{13, 0.6}, {42, 0.6}}}}));
  auto r = run_tlmoe("eval compare " + (d / "a").string() + " " + (d / "b").string() + " --json " +
                     (d / "c.json").string());
  INFO(r.output);
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.output, Catch::Contains("-12.5"));
  CHECK_THAT(r.output, Catch::Contains("+25.0") || Catch::Contains("25.0"));
  CHECK(fs::exists(d / "c.json"));
  auto t = run_tlmoe("eval table base=" + (d / "b").string() + " new=" + (d / "a").string() + " --markdown " +
                     (d / "t.md").string());
  INFO(t.output);
  CHECK(t.exit_code == 0);
  CHECK_THAT(t.output, Catch::Contains("ARG new over base: -12.5%"));
  CHECK_THAT(read_text(d / "t.md"), Catch::Contains("| t1 | EM |"));
  CHECK(run_tlmoe("eval compare " + (d / "a").string() + " " + (d / "missing").string()).exit_code == 2);
  CHECK(run_tlmoe("eval table justaname").exit_code == 2);

  // one column: its scores, and no empty comparison table
  t = run_tlmoe("eval table only=" + (d / "a").string() + " --markdown " + (d / "one.md").string());
  CHECK(t.exit_code == 0);
  CHECK_THAT(read_text(d / "one.md"), Catch::Contains("| t1 | EM |") && !Catch::Contains("| comparison |"));

  // --tasks restricts both to the named tasks: t1 alone gives ARG = RG(t1) = +25 %
  t = run_tlmoe("eval table base=" + (d / "b").string() + " new=" + (d / "a").string() + " --tasks t1");
  INFO(t.output);
  CHECK(t.exit_code == 0);
  CHECK_THAT(t.output, Catch::Contains("ARG new over base: +25.0% over 1 tasks") && !Catch::Contains("\nt2 "));
  r = run_tlmoe("eval compare " + (d / "a").string() + " " + (d / "b").string() + " --tasks t1");
  CHECK_THAT(r.output, Catch::Contains("+25.0") && !Catch::Contains("-12.5"));
  r = run_tlmoe("eval table base=" + (d / "b").string() + " new=" + (d / "a").string() + " --tasks t1,t3");
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.output, Catch::Contains("--tasks names 't3', which no result folder has"));

  // a run built on an unhealthy upstream model is marked and its warnings listed
  std::string sick = summary({{"t1", {{13, 0.6}, {42, 0.4}}}, {"t2", {{13, 0.3}, {42, 0.3}}}});
  sick.insert(1, R"("upstream_health": {"verdict": "collapsed", "warnings": ["upstream model collapsed on 1 dev task(s) (one answer for most inputs): t9"]}, )");
  write_text(d / "s/summary.json", sick);
  t = run_tlmoe("eval table base=" + (d / "b").string() + " sick=" + (d / "s").string() + " --markdown " +
                (d / "t2.md").string());
  INFO(t.output);
  CHECK(t.exit_code == 0);
  CHECK_THAT(t.output, Catch::Contains("sick (!)") && Catch::Contains("(!) sick: upstream model collapsed on 1 dev task(s)"));
  CHECK_THAT(t.output, !Catch::Contains("base (!)"));
  CHECK_THAT(read_text(d / "t2.md"), Catch::Contains("| sick (!) |") && Catch::Contains("(!) sick: upstream model collapsed"));
  r = run_tlmoe("eval compare " + (d / "s").string() + " " + (d / "b").string());
  CHECK_THAT(r.output, Catch::Contains("upstream model collapsed on 1 dev task(s)"));
}

TEST_CASE("eval table and compare join several runs of a method (upstream seeds)", "[cli][eval]") {
  TempDir d;
  // method A, two runs (seeds); base B, one run (paired with each of A's).
  // t1: A run 1 splits 0.6, 0.4, run 2 splits 0.8, 0.6 -> mean over 4 units 0.6; B 0.4 -> RG +50 %
  // t2: A run 1 0.3, 0.3, run 2 0.5, 0.5 -> mean 0.4; B 0.5 -> RG -20 %.  ARG = (50 - 20) / 2 = +15 %
  write_text(d / "a1/summary.json", summary({{"t1", {{13, 0.6}, {42, 0.4}}}, {"t2", {{13, 0.3}, {42, 0.3}}}}));
  write_text(d / "a2/summary.json", summary({{"t1", {{13, 0.8}, {42, 0.6}}}, {"t2", {{13, 0.5}, {42, 0.5}}}}));
  write_text(d / "b/summary.json", summary({{"t1", {{13, 0.4}, {42, 0.4}}}, {"t2", {{13, 0.5}, {42, 0.5}}}}));
  const std::string a = (d / "a1").string() + "+" + (d / "a2").string();
  auto t = run_tlmoe("eval table base=" + (d / "b").string() + " a=" + a + " --permutations 100000");
  INFO(t.output);
  REQUIRE(t.exit_code == 0);
  CHECK_THAT(t.output, Catch::Contains("ARG a over base: +15.0% over 2 tasks"));
  CHECK_THAT(t.output, Catch::Contains("0.6000") && Catch::Contains("0.4000"));
  // 8 (run, split) pairs: exact enumeration of 2^8 sign flips
  auto c = run_tlmoe("eval compare " + a + " " + (d / "b").string() + " --json " + (d / "c.json").string());
  INFO(c.output);
  REQUIRE(c.exit_code == 0);
  const auto j = nlohmann::json::parse(read_text(d / "c.json"));
  CHECK(j["arg"]["pairs"] == 8);
  CHECK(j["arg"]["arg_percent"].get<double>() == Approx(15.0));
  CHECK(j["arg"]["exact"] == true);
  // two runs against three do not pair
  const std::string three = (d / "b").string() + "+" + (d / "b").string() + "+" + (d / "b").string();
  CHECK(run_tlmoe("eval compare " + a + " " + three).exit_code == 2);
  CHECK(run_tlmoe("eval compare " + a + "+ " + (d / "b").string()).exit_code == 2);
}

TEST_CASE("bench generate reports the three variants and their ratios to vanilla", "[cli][bench]") {
  TempDir d;
  write_text(d / "c.yaml",
             "data:\n  max_input_len: 64\n  max_output_len: 8\ntokenizer:\n  vocab_size: 64\nmodel:\n  d_model: 16\n  heads: 2\n  ffn_dim: 32\n  encoder_layers: 1\n"
             "  decoder_layers: 1\n  experts: 2\n  max_positions: 80\neval:\n  batch_size: 4\n  max_len: 6\n  num_beams: 2\n");
  auto r = run_tlmoe("bench generate --config " + (d / "c.yaml").string() + " --batches 2 --rounds 1 --out " +
                     (d / "b.json").string());
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  const std::string rep = read_text(d / "b.json");
  for (const char* name : {"vanilla (m=1)", "dense soft routes (m=2, softmax)", "sparse hard routes (m=2, top-1)"})
    CHECK_THAT(rep, Catch::Contains(name));
  CHECK_THAT(rep, Catch::Contains("\"examples_per_s\""));
  CHECK_THAT(r.output, Catch::Contains("1.00x"));  // vanilla against itself
}

TEST_CASE("adapt and eval usage errors exit 2", "[cli]") {
  TempDir d;
  write_text(d / "c.yaml", "train:\n  steps: 5\n");
  const std::string c = " --config " + (d / "c.yaml").string();
  CHECK(run_tlmoe("adapt" + c + " --out " + (d / "o").string()).exit_code == 2);  // neither start given
  CHECK(run_tlmoe("adapt" + c + " --from-scratch --checkpoint x --out " + (d / "o").string()).exit_code == 2);
  CHECK(run_tlmoe("eval" + c).exit_code == 2);  // no checkpoint
  CHECK(run_tlmoe("adapt" + c + " --checkpoint " + (d / "nothing").string() + " --out " + (d / "o").string())
            .exit_code == 2);
  CHECK_FALSE(fs::exists(d / "o/results.csv"));
}

TEST_CASE("config show prints the resolved config, bad configs exit 2 naming file, line and key", "[cli]") {
  TempDir d;
  write_text(d / "base.yaml", "model:\n  d_model: 256\n  heads: 8\n");
  write_text(d / "c.yaml", "base: base.yaml\ntrain:\n  steps: 12\n");
  auto r = run_tlmoe("config show " + (d / "c.yaml").string() + " --set train.seed=7");
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.output, Catch::Contains("d_model: 256"));
  CHECK_THAT(r.output, Catch::Contains("steps: 12"));
  CHECK_THAT(r.output, Catch::Contains("seed: 7"));

  write_text(d / "bad.yaml", "train:\n  steps: 12\n  stpes: 3\n");
  r = run_tlmoe("config show " + (d / "bad.yaml").string());
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.output, Catch::Contains("bad.yaml:3"));
  CHECK_THAT(r.output, Catch::Contains("train.stpes"));
  CHECK_THAT(r.output, Catch::Contains("did you mean 'train.steps'"));

  r = run_tlmoe("config show --set model.dropout=2");
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.output, Catch::Contains("model.dropout"));

  r = run_tlmoe("config docs");
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.output, Catch::Contains("# Configuration reference"));
}

TEST_CASE("gym -> preprocess end to end, with reuse and bad-data exit codes", "[cli][e2e]") {
  TempDir d;
  const std::string gym = (d / "gym").string();
  auto r = run_tlmoe("gym --out " + gym + " --seed 42");
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  REQUIRE(fs::exists(d / "gym/splits.json"));
  REQUIRE(fs::exists(d / "gym/tasks.json"));
  REQUIRE(fs::exists(d / "gym/ontology.json"));

  // The quickstart config, pointed at this gym, with a small vocabulary to keep the test quick.
  const std::string cfg = tlmoe::test::source_dir() + "/configs/quickstart_vanilla.yaml";
  const std::string sets = " --set data.dir=" + gym + " --set tokenizer.vocab_size=500";
  r = run_tlmoe("preprocess --config " + cfg + sets);
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  fs::path cache;  // one cache per tokenizer: the quickstart's options, vocabulary 500
  for (const auto& e : fs::directory_iterator(d / "gym/.tlmoe-cache")) cache = e.path();
  CHECK_THAT(cache.filename().string(), Catch::StartsWith("spm-full-500-"));
  CHECK(fs::exists(cache / "config.resolved.yaml"));
  CHECK(fs::exists(cache / "manifest.json"));
  CHECK(fs::exists(cache / "tokenizer/spm.model"));
  CHECK_THAT(read_text(cache / "config.resolved.yaml"), Catch::Contains("vocab_size: 500"));
  const std::string manifest1 = read_text(cache / "manifest.json");

  // Unchanged inputs: nothing is rebuilt, the manifest is byte-identical.
  r = run_tlmoe("preprocess --config " + cfg + sets);
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.output, Catch::Contains(" 0 built"));
  CHECK(read_text(cache / "manifest.json") == manifest1);

  // train: a tiny TL-MoE for a few steps, then the run-directory and config rules.
  const std::string tiny = sets + " --set model.d_model=32 --set model.encoder_layers=1 --set model.decoder_layers=1" +
                           " --set model.heads=2 --set model.ffn_dim=64 --set task_rep.dim=8 --set routing.hidden=8" +
                           " --set train.steps=4 --set train.eval_every=2 --set train.batch_size=4 --set eval.batch_size=64";
  const std::string run_dir = (d / "run").string();
  r = run_tlmoe("train --plain --config " + cfg + tiny + " --run-dir " + run_dir);
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.output, Catch::Contains("trained to step 4"));
  CHECK(fs::exists(d / "run/last/model.safetensors"));
  CHECK(fs::exists(d / "run/best/model.safetensors"));
  CHECK_THAT(read_text(d / "run/config.resolved.yaml"), Catch::Contains("d_model: 32"));
  r = run_tlmoe("train --plain --config " + cfg + tiny + " --run-dir " + run_dir);
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.output, Catch::Contains("--resume"));
  r = run_tlmoe("train --plain --config " + cfg + tiny + " --set train.steps=6 --resume --run-dir " + run_dir);
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.output, Catch::Contains("trained to step 6"));
  r = run_tlmoe("train --plain --config " + cfg + tiny + " --set routing.top_k=5 --run-dir " + (d / "r2").string());
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.output, Catch::Contains("routing.top_k"));
  CHECK_FALSE(fs::exists(d / "r2"));
  r = run_tlmoe("train --plain --config " + cfg + tiny + " --set routing.router=mystery --run-dir " + (d / "r2").string());
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.output, Catch::Contains("routing.router"));
  // An output path under a regular file cannot be written: exit 2, naming it (train and preprocess)
  write_text(d / "plain_file", "x");
  r = run_tlmoe("train --plain --config " + cfg + tiny + " --run-dir " + (d / "plain_file" / "run").string());
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.output, Catch::Contains("error: cannot write " + (d / "plain_file").string()) &&
                           Catch::Contains("Not a directory"));
  r = run_tlmoe("preprocess --config " + cfg + sets + " --set data.cache_dir=" + (d / "plain_file" / "cache").string());
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.output, Catch::Contains("error: cannot write " + (d / "plain_file").string()));

  // A malformed TSV line: exit 2, the message names the file and the line.
  fs::path victim;
  for (const auto& e : fs::recursive_directory_iterator(d / "gym"))
    if (e.path().filename().string().find("_13_dev.tsv") != std::string::npos) {
      victim = e.path();
      break;
    }
  REQUIRE(!victim.empty());
  std::string text = read_text(victim);
  auto nl = text.find('\n');
  auto second_end = text.find('\n', nl + 1);
  std::string line2 = text.substr(nl + 1, second_end - nl - 1);
  std::string broken = line2;
  for (auto& c : broken)
    if (c == '\t') c = ' ';
  write_text(victim, text.substr(0, nl + 1) + broken + text.substr(second_end));
  r = run_tlmoe("preprocess --config " + cfg + sets);
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.output, Catch::Contains(victim.filename().string() + ":2"));

  // A task listed in the splits without a folder: exit 2 naming the task.
  write_text(victim, text);
  fs::remove_all(victim.parent_path());
  r = run_tlmoe("preprocess --config " + cfg + sets);
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.output, Catch::Contains(victim.parent_path().filename().string()));

  // A missing data dir: exit 2.
  r = run_tlmoe("preprocess --config " + cfg + " --set data.dir=" + (d / "nowhere").string());
  CHECK(r.exit_code == 2);
}

TEST_CASE("ft_textemb on the gym: preprocess fine-tunes a copy of the source per task, train routes with the vectors",
          "[cli][e2e]") {
  TempDir d;
  const std::string gym = (d / "gym").string();
  REQUIRE(run_tlmoe("gym --out " + gym + " --seed 42").exit_code == 0);
  const std::string src = tlmoe::test::source_dir();
  const std::string tiny = " --set data.dir=" + gym + " --set tokenizer.vocab_size=500 --set model.d_model=32" +
                           " --set model.encoder_layers=1 --set model.decoder_layers=1 --set model.heads=2" +
                           " --set model.ffn_dim=64 --set routing.hidden=8 --set train.batch_size=4" +
                           " --set train.eval_every=100 --set eval.batch_size=64";
  auto r = run_tlmoe("train --plain --config " + src + "/configs/quickstart_vanilla.yaml" + tiny +
                     " --set train.steps=3 --run-dir " + (d / "vanilla").string());
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  const std::string ft = tiny + " --set task_rep.kind=ft_textemb --set task_rep.dim=4 --set task_rep.ft_steps=3" +
                         " --set task_rep.ft_lr=0.001 --set task_rep.source_checkpoint=" + (d / "vanilla/last").string();
  r = run_tlmoe("preprocess --config " + src + "/configs/quickstart.yaml" + ft);
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.output, Catch::Contains("task representations (ft_textemb)") && Catch::Contains("fine-tuning loss"));
  fs::path file;
  for (const auto& e : fs::recursive_directory_iterator(d / "gym/.tlmoe-cache"))
    if (e.path().filename() == "ft_textemb.safetensors") file = e.path();
  REQUIRE(!file.empty());
  // one fine-tuned vector per task of the split file, seen and unseen
  const auto splits = nlohmann::json::parse(read_text(d / "gym/splits.json"));
  CHECK_THAT(r.output, Catch::Contains("[" + std::to_string(splits.at("all").size()) + "/" +
                                       std::to_string(splits.at("all").size()) + "]"));
  r = run_tlmoe("train --plain --config " + src + "/configs/quickstart.yaml" + ft +
                " --set train.steps=2 --run-dir " + (d / "routed").string());
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.output, Catch::Contains("up to date, reused"));
  CHECK(fs::exists(d / "routed/last/model.safetensors"));
}

TEST_CASE("bad input through the binary: exit 2 naming the file, never a raw library message", "[cli][bad-input]") {
  TempDir d;
  const std::string gym = (d / "gym").string();
  REQUIRE(run_tlmoe("gym --out " + gym + " --seed 7").exit_code == 0);
  const std::string cfg = tlmoe::test::source_dir() + "/configs/quickstart_vanilla.yaml";
  const std::string sets = " --set data.dir=" + gym + " --set tokenizer.vocab_size=500 --set model.d_model=32" +
                           " --set model.encoder_layers=1 --set model.decoder_layers=1 --set model.heads=2" +
                           " --set model.ffn_dim=64 --set train.batch_size=4 --set train.eval_every=100" +
                           " --set eval.batch_size=64 --set train.tensorboard=false";
  auto r = run_tlmoe("train --plain --config " + cfg + sets + " --set train.steps=2 --run-dir " + (d / "run").string());
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  auto refused = [](const tlmoe::test::RunResult& res, const std::string& names) {
    INFO(res.output);
    CHECK(res.exit_code == 2);
    CHECK_THAT(res.output, Catch::Contains(names));
    CHECK_THAT(res.output, !Catch::Contains("json.exception") && !Catch::Contains("frame #") &&
                               !Catch::Contains("Exception raised from"));
  };
  // meta.json with a string step
  fs::copy(d / "run/last", d / "bad", fs::copy_options::recursive);
  auto meta = nlohmann::json::parse(read_text(d / "bad/meta.json"));
  meta["step"] = "abc";
  write_text(d / "bad/meta.json", meta.dump());
  refused(run_tlmoe("eval --config " + cfg + sets + " --checkpoint " + (d / "bad").string()), "bad/meta.json");
  // a config path that is a directory
  fs::create_directories(d / "conf.yaml");
  refused(run_tlmoe("preprocess --config " + (d / "conf.yaml").string()), "conf.yaml");
  // a key twice in splits.json: both lines
  const std::string splits = read_text(d / "gym/splits.json");
  write_text(d / "gym/splits.json", "{\n\"dev\": [],\n" + splits.substr(splits.find('{') + 1));
  refused(run_tlmoe("preprocess --config " + cfg + sets), "appears twice in one object (lines 2 and");
  write_text(d / "gym/splits.json", splits);
  // a FIFO where a TSV file belongs: refused at once, no hang
  fs::path victim;
  for (const auto& e : fs::recursive_directory_iterator(d / "gym"))
    if (e.path().filename().string().find("_13_dev.tsv") != std::string::npos) victim = e.path();
  REQUIRE(!victim.empty());
  const std::string victim_text = read_text(victim);
  fs::remove(victim);
  REQUIRE(tlmoe::test::run_shell("mkfifo '" + victim.string() + "'").exit_code == 0);
  refused(run_tlmoe("preprocess --config " + cfg + sets), "FIFO");
  fs::remove(victim);
  write_text(victim, victim_text);

  // an output path under a regular file: exit 2 naming it, in every command that writes
  write_text(d / "plain", "x");
  const std::string ck = " --checkpoint " + (d / "run/last").string();
  const std::string task = nlohmann::json::parse(read_text(d / "gym/splits.json")).at("train").at(0).get<std::string>();
  for (const std::string& cmd : {"eval --config " + cfg + sets + ck + " --out " + (d / "plain/ev").string(),
                                 "adapt --config " + cfg + sets + ck + " --out " + (d / "plain/ad").string(),
                                 "export" + ck + " --task " + task + " --out " + (d / "plain/ex").string()}) {
    auto res = run_tlmoe(cmd);
    INFO(cmd << "\n" << res.output);
    CHECK(res.exit_code == 2);
    CHECK_THAT(res.output, Catch::Contains("cannot write " + (d / "plain").string()) && Catch::Contains("Not a directory"));
  }
}

TEST_CASE("gym refuses to overwrite an unrelated non-empty directory", "[cli]") {
  TempDir d;
  write_text(d / "mine/precious.txt", "keep me");
  auto r = run_tlmoe("gym --out " + (d / "mine").string());
  CHECK(r.exit_code == 2);
  CHECK(read_text(d / "mine/precious.txt") == "keep me");
}

TEST_CASE("study.sh: STUDY_METHODS is checked before anything runs", "[cli]") {
  TempDir d;
  const fs::path out = d / "study";
  auto study = [&](const std::string& methods) {
    return tlmoe::test::run_shell("STUDY_METHODS='" + methods + "' STUDY_OUT='" + out.string() + "' bash '" +
                                  tlmoe::test::source_dir() + "/scripts/study.sh' '" + tlmoe::test::binary() + "'");
  };
  auto r = study("vanilla bogus");
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.output, Catch::Contains("unknown method 'bogus' in STUDY_METHODS"));
  r = study("tlmoe");
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.output, Catch::Contains("tlmoe needs vanilla"));
  r = study("vanilla stage2");
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.output, Catch::Contains("stage2 needs tlmoe"));
  CHECK_FALSE(fs::exists(out));  // nothing written
}
