// The launch contract (torchrun and Slurm variables), row sharding, and the c10d communicator
// with two ranks as two threads of this process (Gloo over 127.0.0.1).
#include <torch/torch.h>

#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <functional>
#include <map>
#include <thread>

#include "common/error.h"
#include "config/config.h"
#include "test_util.h"
#include "train/dist.h"

namespace dist = tlmoe::train::dist;
using tlmoe::test::free_port;

namespace {

dist::EnvLookup env_of(std::map<std::string, std::string> m) {
  return [m](const std::string& k) -> std::optional<std::string> {
    auto it = m.find(k);
    if (it == m.end()) return std::nullopt;
    return it->second;
  };
}

// Runs body(rank, communicator) as ranks 0 and 1 of a Gloo group, one thread each; returns the
// error each rank threw ("" when none).
std::vector<std::string> two_gloo_ranks(const std::function<void(int64_t, dist::Communicator&)>& body) {
  auto cfg = tlmoe::Config::defaults().dist;
  cfg.timeout_s = 20;
  dist::LaunchEnv base;
  base.launcher = "torchrun";
  base.world_size = 2;
  base.master_addr = "127.0.0.1";
  base.master_port = free_port();
  std::vector<std::string> errors(2);
  auto run = [&](int64_t rank) {
    try {
      auto env = base;
      env.rank = rank;
      auto comm = dist::connect(env, cfg, torch::kCPU);
      body(rank, *comm);
    } catch (const std::exception& e) {
      errors[rank] = e.what();
    }
  };
  std::thread t0(run, 0), t1(run, 1);
  t0.join();
  t1.join();
  return errors;
}

}  // namespace

TEST_CASE("dist: the launch contract of torchrun and Slurm", "[dist]") {
  auto cfg = tlmoe::Config::defaults().dist;
  SECTION("nothing set: one process") {
    auto e = dist::read_launch_env(cfg, env_of({}));
    CHECK(e.world_size == 1);
    CHECK(e.rank == 0);
    CHECK(e.launcher == "none");
    CHECK_FALSE(e.distributed());
  }
  SECTION("torchrun") {
    auto e = dist::read_launch_env(cfg, env_of({{"RANK", "3"}, {"WORLD_SIZE", "4"}, {"LOCAL_RANK", "1"},
                                                {"MASTER_ADDR", "node7"}, {"MASTER_PORT", "1234"}}));
    CHECK(e.launcher == "torchrun");
    CHECK(e.rank == 3);
    CHECK(e.world_size == 4);
    CHECK(e.local_rank == 1);
    CHECK(e.master_addr == "node7");
    CHECK(e.master_port == 1234);
    CHECK_FALSE(e.agent_store);
    auto a = dist::read_launch_env(cfg, env_of({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"},
                                                {"TORCHELASTIC_USE_AGENT_STORE", "True"},
                                                {"TORCHELASTIC_RESTART_COUNT", "2"}}));
    CHECK(a.agent_store);
    CHECK(a.store_prefix == "/worker/attempt_2");
    CHECK(a.master_port == 29500);
  }
  SECTION("Slurm: the master from the config wins over the environment") {
    auto s = cfg;
    s.master_addr = "head";
    s.master_port = 4000;
    auto e = dist::read_launch_env(s, env_of({{"SLURM_PROCID", "5"}, {"SLURM_NTASKS", "8"}, {"SLURM_LOCALID", "1"},
                                              {"MASTER_ADDR", "other"}}));
    CHECK(e.launcher == "slurm");
    CHECK(e.rank == 5);
    CHECK(e.world_size == 8);
    CHECK(e.local_rank == 1);
    CHECK(e.master_addr == "head");
    CHECK(e.master_port == 4000);
    // one Slurm task, or dist.launcher none: one process
    CHECK(dist::read_launch_env(cfg, env_of({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "1"}})).world_size == 1);
    auto none = cfg;
    none.launcher = "none";
    CHECK(dist::read_launch_env(none, env_of({{"RANK", "1"}, {"WORLD_SIZE", "2"}})).world_size == 1);
    // torchrun's variables win under auto
    CHECK(dist::read_launch_env(cfg, env_of({{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"},
                                             {"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "4"}}))
              .launcher == "torchrun");
  }
  SECTION("inconsistent values are config errors") {
    CHECK_THROWS_AS(dist::read_launch_env(cfg, env_of({{"RANK", "0"}})), tlmoe::ConfigError);
    CHECK_THROWS_AS(dist::read_launch_env(cfg, env_of({{"RANK", "2"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}})),
                    tlmoe::ConfigError);
    CHECK_THROWS_AS(dist::read_launch_env(cfg, env_of({{"RANK", "x"}, {"WORLD_SIZE", "2"}})), tlmoe::ConfigError);
    CHECK_THROWS_WITH(dist::read_launch_env(cfg, env_of({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "2"}})),
                      Catch::Contains("dist.master_addr or MASTER_ADDR"));
  }
}

TEST_CASE("dist: shards of a global batch are contiguous, disjoint and cover it", "[dist]") {
  for (int64_t rows : {0, 1, 5, 7, 8, 33})
    for (int64_t world : {1, 2, 3, 4}) {
      int64_t next = 0;
      for (int64_t r = 0; r < world; ++r) {
        auto [b, e] = dist::shard_rows(rows, r, world);
        INFO(rows << " rows, rank " << r << " of " << world);
        CHECK(b == next);
        CHECK(e - b >= rows / world);
        CHECK(e - b <= rows / world + 1);
        next = e;
      }
      CHECK(next == rows);
    }
}

TEST_CASE("dist: all-reduce and broadcast over two Gloo ranks", "[dist]") {
  std::vector<std::vector<torch::Tensor>> got(2);
  auto errors = two_gloo_ranks([&](int64_t rank, dist::Communicator& comm) {
    const double r = static_cast<double>(rank);
    // two dtypes, several tensors: packed into one bucket per dtype
    std::vector<torch::Tensor> t = {torch::full({3}, 1.0 + r), torch::arange(4, torch::kDouble).view({2, 2}) * (r + 1),
                                    torch::full({2}, 10 * (rank + 1), torch::kLong)};
    comm.all_reduce_sum(t);
    std::vector<torch::Tensor> b = {torch::full({2}, 5.0 + r)};
    comm.broadcast(b);
    comm.barrier();
    t.push_back(b[0]);
    got[rank] = t;
  });
  INFO(errors[0] << " / " << errors[1]);
  REQUIRE(errors[0].empty());
  REQUIRE(errors[1].empty());
  for (int rank = 0; rank < 2; ++rank) {
    CHECK(torch::equal(got[rank][0], torch::full({3}, 3.0)));                            // 1 + 2
    CHECK(torch::equal(got[rank][1], torch::arange(4, torch::kDouble).view({2, 2}) * 3));  // x*1 + x*2
    CHECK(torch::equal(got[rank][2], torch::full({2}, 30, torch::kLong)));
    CHECK(torch::equal(got[rank][3], torch::full({2}, 5.0)));  // rank 0's values
  }
}

TEST_CASE("dist: a world of one needs no rendezvous", "[dist]") {
  auto comm = dist::connect(dist::LaunchEnv{}, tlmoe::Config::defaults().dist, torch::kCPU);
  CHECK(comm->size() == 1);
  CHECK(comm->backend() == "none");
  std::vector<torch::Tensor> t = {torch::ones({2})};
  comm->all_reduce_sum(t);
  CHECK(torch::equal(t[0], torch::ones({2})));
}

TEST_CASE("dist: a rendezvous nobody answers fails within dist.timeout_s with a clear message", "[dist]") {
  auto cfg = tlmoe::Config::defaults().dist;
  cfg.timeout_s = 0.5;
  dist::LaunchEnv env;
  env.launcher = "torchrun";
  env.rank = 1;  // a client: rank 0's store never comes up
  env.world_size = 2;
  env.master_addr = "127.0.0.1";
  env.master_port = free_port();
  const auto t0 = std::chrono::steady_clock::now();
  CHECK_THROWS_WITH(dist::connect(env, cfg, torch::kCPU),
                    Catch::Contains("rendezvous failed on rank 1 of 2") && Catch::Contains("dist.timeout_s = 0.5 s") &&
                        !Catch::Contains("frame #"));
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(10));
}

TEST_CASE("dist: strings gathered from every rank and the rendezvous store", "[dist]") {
  std::vector<std::vector<std::string>> got(2);
  std::vector<int64_t> claims[2];
  auto errors = two_gloo_ranks([&](int64_t rank, dist::Communicator& comm) {
    got[rank] = comm.all_gather_strings(rank == 0 ? std::string("first\nline") : std::string());
    auto again = comm.all_gather_strings(rank == 0 ? std::string() : std::string(300, 'x'));
    got[rank].insert(got[rank].end(), again.begin(), again.end());
    // a shared counter: every claim is unique
    for (int i = 0; i < 5; ++i) claims[rank].push_back(comm.store_add("test/counter", 1));
    comm.store_set("test/from" + std::to_string(rank), "v" + std::to_string(rank));
    comm.barrier();
    const auto other = comm.store_get("test/from" + std::to_string(1 - rank));
    REQUIRE(other.has_value());
    CHECK(*other == "v" + std::to_string(1 - rank));
    CHECK_FALSE(comm.store_get("test/never-set").has_value());
  });
  INFO(errors[0] << " / " << errors[1]);
  REQUIRE(errors[0].empty());
  REQUIRE(errors[1].empty());
  for (int r = 0; r < 2; ++r)
    CHECK(got[r] == std::vector<std::string>{"first\nline", "", "", std::string(300, 'x')});
  std::vector<int64_t> all = claims[0];
  all.insert(all.end(), claims[1].begin(), claims[1].end());
  std::sort(all.begin(), all.end());
  CHECK(all == std::vector<int64_t>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10});

  // a world of one: a map and a counter in the process
  auto one = dist::connect(dist::LaunchEnv{}, tlmoe::Config::defaults().dist, torch::kCPU);
  CHECK(one->all_gather_strings("alone") == std::vector<std::string>{"alone"});
  CHECK(one->store_add("n", 1) == 1);
  CHECK(one->store_add("n", 2) == 3);
  CHECK(one->store_add("n", 0) == 3);
  CHECK_FALSE(one->store_get("missing").has_value());
  one->store_set("k", "v");
  CHECK(one->store_get("k").value_or("") == "v");
}

TEST_CASE("dist: bucketed gradient all-reduce during backward equals the hand-summed gradients", "[dist]") {
  // Parameters in registration order; the reducer buckets them in reverse (p2, p1, p0, unused).
  // Rank 0: L = <a0,p0> + <b0,p1> + <c,p2> in two backward passes (gradient accumulation: the
  // first contributes <a0,p0> only); rank 1: L = <a1,p0> + <b1,p1> (p2 unused on rank 1); `unused`
  // gets no gradient anywhere.
  const auto a0 = torch::tensor({1.0f, -2.0f, 0.5f}), a1 = torch::tensor({4.0f, 0.25f, -1.0f});
  const auto b0 = torch::tensor({{1.0f, 2.0f}, {3.0f, 4.0f}}), b1 = torch::tensor({{-1.0f, 0.0f}, {0.5f, 8.0f}});
  const auto c = torch::tensor({2.0f, 3.0f, 5.0f, 7.0f, 11.0f});
  for (const bool overlap : {true, false})
    for (const int64_t bucket_bytes : {int64_t{4}, int64_t{1} << 20}) {
      std::vector<std::vector<torch::Tensor>> grads(2);
      std::vector<int64_t> early(2, -1), buckets(2, -1);
      std::vector<bool> unused_defined(2, true);
      auto errors = two_gloo_ranks([&](int64_t rank, dist::Communicator& comm) {
        auto unused = torch::zeros({4}, torch::requires_grad());
        auto p0 = torch::ones({3}, torch::requires_grad()), p1 = torch::ones({2, 2}, torch::requires_grad());
        auto p2 = torch::ones({5}, torch::requires_grad());
        dist::GradReducer reducer({unused, p0, p1, p2}, comm, bucket_bytes);
        buckets[rank] = reducer.buckets();
        if (rank == 0) {
          (p0 * a0).sum().backward();  // first micro-batch
          if (overlap) reducer.arm();
          ((p0 * a0).sum() + (p1 * b0).sum() + (p2 * c).sum()).backward();
        } else {
          if (overlap) reducer.arm();
          ((p0 * a1).sum() + (p1 * b1).sum()).backward();
        }
        reducer.finish();
        early[rank] = reducer.started_during_backward();
        grads[rank] = {p0.grad(), p1.grad(), p2.grad()};
        unused_defined[rank] = unused.grad().defined();
      });
      INFO("overlap " << overlap << ", bucket bytes " << bucket_bytes << ": " << errors[0] << " / " << errors[1]);
      REQUIRE(errors[0].empty());
      REQUIRE(errors[1].empty());
      CHECK(buckets[0] == (bucket_bytes == 4 ? 4 : 1));
      for (int r = 0; r < 2; ++r) {
        REQUIRE(grads[r][0].defined());
        REQUIRE(grads[r][1].defined());
        REQUIRE(grads[r][2].defined());  // defined on rank 1 too: rank 0 had it
        CHECK(torch::allclose(grads[r][0], a0 * 2 + a1));
        CHECK(torch::allclose(grads[r][1], b0 + b1));
        CHECK(torch::allclose(grads[r][2], c));
        CHECK_FALSE(unused_defined[r]);  // no rank produced it: AdamW skips it
      }
      // One bucket per parameter, armed: rank 0's buckets of p2, p1 and p0 start while backward
      // runs (the unused parameter's bucket is the last); rank 1 never reaches p2, whose bucket
      // comes first, so nothing of rank 1 can start before finish().
      if (overlap && bucket_bytes == 4) {
        CHECK(early[0] == 3);
        CHECK(early[1] == 0);
      } else if (!overlap) {
        CHECK(early[0] == 0);
      }
    }
}
