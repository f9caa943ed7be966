// Multi-process training (docs/distributed.md): tlmoe started twice with torchrun's environment
// (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT) on localhost over Gloo. The reference is always a
// one-process run of the same config: same global batch, so the same losses and weights up to
// floating-point reduction order.
#include <torch/torch.h>

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>

#include "config/config.h"
#include "io/safetensors.h"
#include "test_util.h"
#include "tiny_data.h"

extern char** environ;

namespace fs = std::filesystem;
using nlohmann::json;
using tlmoe::test::free_port;
using tlmoe::test::read_text;
using tlmoe::test::run_tlmoe;
using tlmoe::test::Tiny;
using tlmoe::test::write_text;

namespace {

// tlmoe <args> as rank `rank` of `world` (torchrun's variables), output to `log`.
pid_t spawn_rank(const std::vector<std::string>& args, int rank, int world, int port, const fs::path& log) {
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) {
    const std::string s(*e);
    if (s.rfind("RANK=", 0) && s.rfind("WORLD_SIZE=", 0) && s.rfind("LOCAL_RANK=", 0) && s.rfind("MASTER_", 0))
      env.push_back(s);
  }
  env.push_back("RANK=" + std::to_string(rank));
  env.push_back("LOCAL_RANK=" + std::to_string(rank));
  env.push_back("WORLD_SIZE=" + std::to_string(world));
  env.push_back("MASTER_ADDR=127.0.0.1");
  env.push_back("MASTER_PORT=" + std::to_string(port));
  std::vector<std::string> argv = {tlmoe::test::binary()};
  argv.insert(argv.end(), args.begin(), args.end());
  std::vector<char*> av, ev;
  for (auto& s : argv) av.push_back(s.data());
  av.push_back(nullptr);
  for (auto& s : env) ev.push_back(s.data());
  ev.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, argv[0].c_str(), &fa, nullptr, av.data(), ev.data());
  posix_spawn_file_actions_destroy(&fa);
  REQUIRE(rc == 0);
  return pid;
}

// Exit code of `pid`, or -1 when it has not ended within `limit` seconds (it is then killed).
int wait_exit(pid_t pid, double limit) {
  const auto t0 = std::chrono::steady_clock::now();
  while (true) {
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() > limit) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

struct Ranks {
  std::vector<int> codes;
  std::string logs;  // every rank's output, for INFO
};

// Runs `tlmoe <args>` as `world` processes and waits for all of them.
Ranks run_ranks(const std::vector<std::string>& args, int world, const fs::path& dir, double limit = 120) {
  const int port = free_port();
  std::vector<pid_t> pids;
  for (int r = 0; r < world; ++r)
    pids.push_back(spawn_rank(args, r, world, port, dir / ("rank" + std::to_string(r) + ".log")));
  Ranks out;
  for (int r = 0; r < world; ++r) {
    out.codes.push_back(wait_exit(pids[r], limit));
    out.logs += "--- rank " + std::to_string(r) + "\n" + read_text(dir / ("rank" + std::to_string(r) + ".log"));
  }
  return out;
}

std::vector<json> metric_lines(const fs::path& run, const char* key) {
  std::vector<json> v;
  std::istringstream in(read_text(run / "metrics.jsonl"));
  for (std::string line; std::getline(in, line);) {
    auto j = json::parse(line);
    if (j.contains(key)) v.push_back(j);
  }
  return v;
}

// The tiny config with every stochastic part that depends on the batch split turned off
// (dropout); gumbel noise stays on: every rank draws it for the whole global batch.
tlmoe::Config deterministic(const Tiny& t) {
  auto cfg = t.config();
  cfg.model.dropout = 0;
  cfg.model.attention_dropout = 0;
  cfg.model.activation_dropout = 0;
  cfg.train.steps = 6;
  cfg.train.eval_every = 3;
  cfg.train.log_every = 1;
  cfg.train.select_by = "loss";
  cfg.dist.timeout_s = 30;
  return cfg;
}

void check_same_weights(const fs::path& a, const fs::path& b, double tol) {
  auto x = tlmoe::io::load_safetensors(a / "last/model.safetensors");
  auto y = tlmoe::io::load_safetensors(b / "last/model.safetensors");
  REQUIRE(x.names == y.names);
  double worst = 0;
  std::string where;
  for (const auto& n : x.names) {
    const double d = (x.tensors.at(n).to(torch::kDouble) - y.tensors.at(n).to(torch::kDouble)).abs().max().item<double>();
    if (d > worst) worst = d, where = n;
  }
  INFO("largest weight difference " << worst << " in " << where);
  CHECK(worst < tol);
}

void check_same_losses(const fs::path& a, const fs::path& b, const char* key, double tol) {
  auto x = metric_lines(a, key), y = metric_lines(b, key);
  REQUIRE(x.size() == y.size());
  REQUIRE(!x.empty());
  for (size_t i = 0; i < x.size(); ++i) {
    INFO(key << " at step " << x[i]["step"] << ": " << x[i][key] << " vs " << y[i][key]);
    CHECK(x[i]["step"] == y[i]["step"]);
    CHECK(std::abs(x[i][key].get<double>() - y[i][key].get<double>()) < tol);
  }
}

std::vector<std::string> train_args(const fs::path& yaml, const fs::path& run, std::vector<std::string> more = {}) {
  std::vector<std::string> a = {"train", "--plain", "--config", yaml.string(), "--run-dir", run.string()};
  a.insert(a.end(), more.begin(), more.end());
  return a;
}

}  // namespace

TEST_CASE("dist: two Gloo processes train like one process with the same global batch", "[cli][dist]") {
  Tiny t;
  auto cfg = deterministic(t);
  cfg.train.grad_accum = 2;
  cfg.train.loss_reduction = "mean";  // each rank divides by the global batch's target tokens
  cfg.train.batch_size = 7;           // shards of 4 and 3 rows
  cfg.train.select_by = "score";      // dev score decoded task by task on the two ranks
  cfg.eval.num_beams = 1;
  cfg.dist.bucket_mb = 0.01;          // ~10 KiB gradient buckets: many, started during backward where complete
  write_text(t.dir / "c.yaml", tlmoe::to_yaml(cfg));
  auto one = run_tlmoe("train --plain --config " + (t.dir / "c.yaml").string() + " --run-dir " + (t.dir / "one").string());
  INFO(one.output);
  REQUIRE(one.exit_code == 0);
  auto two = run_ranks(train_args(t.dir / "c.yaml", t.dir / "two"), 2, t.dir.path());
  INFO(two.logs);
  REQUIRE(two.codes == std::vector<int>{0, 0});
  CHECK_THAT(two.logs, Catch::Contains("distributed: 2 processes (gloo, torchrun)"));
  CHECK_THAT(two.logs, Catch::Contains("trained to step 6"));
  check_same_losses(t.dir / "one", t.dir / "two", "loss", 1e-4);
  check_same_losses(t.dir / "one", t.dir / "two", "dev_loss", 1e-4);
  check_same_losses(t.dir / "one", t.dir / "two", "dev_score", 1e-9);
  check_same_weights(t.dir / "one", t.dir / "two", 1e-4);
  // rank 0 alone wrote the run directory; the routes are the one-process routes
  CHECK(fs::exists(t.dir / "two/routes/step_0000006.json"));
  CHECK(metric_lines(t.dir / "two", "loss").back()["world_size"] == 2);
  for (const auto& l : metric_lines(t.dir / "two", "loss")) {
    CHECK(l["grad_buckets"].get<int64_t>() > 1);
    CHECK(l["grad_buckets_overlapped"].get<int64_t>() >= 0);
    CHECK(l["grad_buckets_overlapped"].get<int64_t>() <= l["grad_buckets"].get<int64_t>());
  }
  CHECK_FALSE(metric_lines(t.dir / "one", "loss").back().contains("grad_buckets"));
  // the loss did move: the comparison is not between two untrained models
  auto l = metric_lines(t.dir / "one", "loss");
  CHECK(l.back()["loss"].get<double>() < l.front()["loss"].get<double>());
}

TEST_CASE("dist: a 2-process checkpoint resumes in 1 process and a 1-process one in 2 processes", "[cli][dist]") {
  Tiny t;
  auto cfg = deterministic(t);
  cfg.train.loss_reduction = "sum";
  cfg.train.grad_accum = 1;
  write_text(t.dir / "c.yaml", tlmoe::to_yaml(cfg));
  const std::string c = (t.dir / "c.yaml").string();
  auto ref = run_tlmoe("train --plain --config " + c + " --run-dir " + (t.dir / "ref").string());
  INFO(ref.output);
  REQUIRE(ref.exit_code == 0);

  // 2 processes for 3 steps, then 1 process to the end
  auto a = run_ranks(train_args(t.dir / "c.yaml", t.dir / "a", {"--stop-after", "3"}), 2, t.dir.path());
  INFO(a.logs);
  REQUIRE(a.codes == std::vector<int>{0, 0});
  auto a2 = run_tlmoe("train --plain --resume --config " + c + " --run-dir " + (t.dir / "a").string());
  INFO(a2.output);
  REQUIRE(a2.exit_code == 0);
  CHECK_THAT(a2.output, Catch::Contains("trained to step 6"));
  check_same_weights(t.dir / "ref", t.dir / "a", 1e-4);
  check_same_losses(t.dir / "ref", t.dir / "a", "loss", 1e-4);

  // 1 process for 3 steps, then 2 processes to the end
  auto b1 = run_tlmoe("train --plain --stop-after 3 --config " + c + " --run-dir " + (t.dir / "b").string());
  REQUIRE(b1.exit_code == 0);
  auto b = run_ranks(train_args(t.dir / "c.yaml", t.dir / "b", {"--resume"}), 2, t.dir.path());
  INFO(b.logs);
  REQUIRE(b.codes == std::vector<int>{0, 0});
  CHECK_THAT(b.logs, Catch::Contains("resuming"));
  check_same_weights(t.dir / "ref", t.dir / "b", 1e-4);
  check_same_losses(t.dir / "ref", t.dir / "b", "loss", 1e-4);
}

TEST_CASE("dist: a killed or hung rank makes the other exit non-zero within dist.timeout_s", "[cli][dist]") {
  Tiny t;
  auto cfg = deterministic(t);
  cfg.train.steps = 1000000;  // runs until a rank fails
  cfg.train.eval_every = 2;   // checkpoints early
  cfg.train.log_every = 1;
  cfg.dist.timeout_s = 3;
  write_text(t.dir / "c.yaml", tlmoe::to_yaml(cfg));
  // preprocess once, so that both runs start training at once
  auto pre = run_tlmoe("preprocess --config " + (t.dir / "c.yaml").string());
  REQUIRE(pre.exit_code == 0);

  for (const int sig : {SIGKILL, SIGSTOP}) {
    const fs::path run = t.dir / (sig == SIGKILL ? "killed" : "hung");
    const int port = free_port();
    const auto args = train_args(t.dir / "c.yaml", run);
    const pid_t r0 = spawn_rank(args, 0, 2, port, t.dir / "r0.log");
    const pid_t r1 = spawn_rank(args, 1, 2, port, t.dir / "r1.log");
    // wait until rank 0 has written a checkpoint and trained on
    const auto t0 = std::chrono::steady_clock::now();
    while (!(fs::exists(run / "last/meta.json") && metric_lines(run, "loss").size() >= 4) &&
           std::chrono::steady_clock::now() - t0 < std::chrono::seconds(60))
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    REQUIRE(fs::exists(run / "last/meta.json"));
    ::kill(r1, sig);
    const auto t_fail = std::chrono::steady_clock::now();
    const int code = wait_exit(r0, 30);
    const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_fail).count();
    ::kill(r1, SIGKILL);
    wait_exit(r1, 10);
    const std::string log = read_text(t.dir / "r0.log");
    INFO((sig == SIGKILL ? "killed" : "stopped") << " rank 1; rank 0 exited with " << code << " after " << waited
                                                  << " s:\n" << log);
    CHECK(code == 1);
    CHECK(waited < 3 + 10);
    CHECK_THAT(log, Catch::Contains("failed on rank 0 of 2"));
    CHECK_THAT(log, Catch::Contains("dist.timeout_s = 3"));
    // nothing checkpointed is lost: one process resumes from rank 0's last checkpoint
    auto again = run_tlmoe("train --plain --resume --stop-after 1 --config " + (t.dir / "c.yaml").string() +
                           " --run-dir " + run.string());
    INFO(again.output);
    CHECK(again.exit_code == 0);
    CHECK_THAT(again.output, Catch::Contains("resuming"));
  }
}

namespace {

// An adapt sweep from scratch on the tiny data: 2 k-shot splits x 3 learning rates = 6 grid points.
tlmoe::Config adapt_sweep(const Tiny& t, int64_t steps) {
  auto cfg = t.config();
  cfg.model.experts = 1;
  cfg.adapt.lrs = {1e-5, 1e-3, 3e-3};
  cfg.adapt.batch_sizes = {4};
  cfg.adapt.steps = steps;
  cfg.adapt.warmup_steps = 2;
  cfg.adapt.eval_every = 4;
  cfg.eval.num_beams = 1;
  cfg.dist.timeout_s = 3;
  return cfg;
}

std::vector<std::string> adapt_args(const fs::path& yaml, const fs::path& out, std::vector<std::string> more = {}) {
  std::vector<std::string> a = {"adapt", "--plain", "--from-scratch", "--config", yaml.string(), "--out", out.string()};
  a.insert(a.end(), more.begin(), more.end());
  return a;
}

std::vector<json> progress_lines(const fs::path& out) {
  std::vector<json> v;
  std::istringstream in(read_text(out / "progress.jsonl"));
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) v.push_back(json::parse(line));
  return v;
}

bool rank_files_left(const fs::path& out) {
  for (const auto& e : fs::directory_iterator(out))
    if (e.path().filename().string().rfind("progress.rank", 0) == 0) return true;
  return false;
}

}  // namespace

TEST_CASE("dist: adapt hands its grid points to two ranks and merges results.csv like one process", "[cli][dist]") {
  Tiny t;
  write_text(t.dir / "c.yaml", tlmoe::to_yaml(adapt_sweep(t, 8)));
  const std::string c = (t.dir / "c.yaml").string();
  auto one = run_tlmoe("adapt --plain --from-scratch --config " + c + " --out " + (t.dir / "one").string());
  INFO(one.output);
  REQUIRE(one.exit_code == 0);
  const std::string reference = read_text(t.dir / "one/results.csv");
  REQUIRE(std::count(reference.begin(), reference.end(), '\n') == 7);  // header + 6 grid points

  auto two = run_ranks(adapt_args(t.dir / "c.yaml", t.dir / "two"), 2, t.dir.path());
  INFO(two.logs);
  REQUIRE(two.codes == std::vector<int>{0, 0});
  CHECK_THAT(two.logs, Catch::Contains("handed out to 2 processes (gloo, torchrun)"));
  CHECK(read_text(t.dir / "two/results.csv") == reference);
  CHECK(json::parse(read_text(t.dir / "two/summary.json")) == json::parse(read_text(t.dir / "one/summary.json")));
  // both ranks ran grid points; rank 0 merged them all into progress.jsonl, no per-rank file is left
  auto lines = progress_lines(t.dir / "two");
  CHECK(lines.size() == 6);
  std::set<int64_t> ranks;
  for (const auto& j : lines) ranks.insert(j["rank"].get<int64_t>());
  CHECK(ranks == std::set<int64_t>{0, 1});
  CHECK_FALSE(rank_files_left(t.dir / "two"));

  // 2 processes stop after one grid point each; 1 process finishes the sweep with the same results
  auto part = run_ranks(adapt_args(t.dir / "c.yaml", t.dir / "part", {"--stop-after", "1"}), 2, t.dir.path());
  INFO(part.logs);
  REQUIRE(part.codes == std::vector<int>{0, 0});
  CHECK(progress_lines(t.dir / "part").size() == 2);
  CHECK_THAT(part.logs, Catch::Contains("incomplete"));
  auto rest = run_tlmoe("adapt --plain --from-scratch --config " + c + " --out " + (t.dir / "part").string());
  INFO(rest.output);
  REQUIRE(rest.exit_code == 0);
  CHECK_THAT(rest.output, Catch::Contains("4 grid points run now, 2 reused, of 6"));
  CHECK(read_text(t.dir / "part/results.csv") == reference);
}

TEST_CASE("dist: a killed adapt rank stops the sweep within dist.timeout_s and nothing finished is lost", "[cli][dist]") {
  Tiny t;
  write_text(t.dir / "c.yaml", tlmoe::to_yaml(adapt_sweep(t, 400)));
  const std::string c = (t.dir / "c.yaml").string();
  auto pre = run_tlmoe("preprocess --config " + c);
  REQUIRE(pre.exit_code == 0);
  const fs::path out = t.dir / "sweep";
  const int port = free_port();
  const auto args = adapt_args(t.dir / "c.yaml", out);
  const pid_t r0 = spawn_rank(args, 0, 2, port, t.dir / "r0.log");
  const pid_t r1 = spawn_rank(args, 1, 2, port, t.dir / "r1.log");
  // rank 1 dies in the middle of its second grid point, after finishing its first
  const auto t0 = std::chrono::steady_clock::now();
  auto rank1_points = [&] {
    std::istringstream in(read_text(out / "progress.rank1.jsonl"));
    int n = 0;
    for (std::string line; std::getline(in, line);) n += !line.empty();
    return n;
  };
  while (!(fs::exists(out / "progress.rank1.jsonl") && rank1_points() >= 1) &&
         std::chrono::steady_clock::now() - t0 < std::chrono::seconds(120))
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  REQUIRE(rank1_points() >= 1);
  ::kill(r1, SIGKILL);
  wait_exit(r1, 10);
  const int code = wait_exit(r0, 180);
  const std::string log = read_text(t.dir / "r0.log");
  INFO("rank 0 exited with " << code << ":\n" << log);
  CHECK(code == 1);
  CHECK_THAT(log, Catch::Contains("rank 1 of 2 stopped answering"));
  CHECK_THAT(log, Catch::Contains("dist.timeout_s = 3"));
  // one process continues the sweep from everything both ranks finished
  auto again = run_tlmoe("adapt --plain --from-scratch --config " + c + " --out " + out.string());
  INFO(again.output);
  REQUIRE(again.exit_code == 0);
  CHECK_THAT(again.output, Catch::Contains("complete: "));
  CHECK_FALSE(rank_files_left(out));
  CHECK(progress_lines(out).size() == 6);
}
