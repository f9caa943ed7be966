// The launch contract (torchrun and Slurm variables), row sharding, and the c10d communicator
// with two ranks as two threads of this process (Gloo over 127.0.0.1).
#include <torch/torch.h>

#include <catch2/catch.hpp>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <thread>

#include "common/error.h"
#include "config/config.h"
#include "train/dist.h"

namespace dist = tlmoe::train::dist;

namespace {

dist::EnvLookup env_of(std::map<std::string, std::string> m) {
  return [m](const std::string& k) -> std::optional<std::string> {
    auto it = m.find(k);
    if (it == m.end()) return std::nullopt;
    return it->second;
  };
}

int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t n = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &n);
  const int port = ntohs(a.sin_port);
  ::close(fd);
  return port;
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
  auto cfg = tlmoe::Config::defaults().dist;
  cfg.timeout_s = 20;
  dist::LaunchEnv base;
  base.launcher = "torchrun";
  base.world_size = 2;
  base.master_addr = "127.0.0.1";
  base.master_port = free_port();
  std::vector<std::vector<torch::Tensor>> got(2);
  std::vector<std::string> errors(2);
  auto body = [&](int64_t rank) {
    try {
      auto env = base;
      env.rank = rank;
      auto comm = dist::connect(env, cfg, torch::kCPU);
      const double r = static_cast<double>(rank);
      // two dtypes, several tensors: packed into one bucket per dtype
      std::vector<torch::Tensor> t = {torch::full({3}, 1.0 + r), torch::arange(4, torch::kDouble).view({2, 2}) * (r + 1),
                                      torch::full({2}, 10 * (rank + 1), torch::kLong)};
      comm->all_reduce_sum(t);
      std::vector<torch::Tensor> b = {torch::full({2}, 5.0 + r)};
      comm->broadcast(b);
      comm->barrier();
      t.push_back(b[0]);
      got[rank] = t;
    } catch (const std::exception& e) {
      errors[rank] = e.what();
    }
  };
  std::thread t0(body, 0), t1(body, 1);
  t0.join();
  t1.join();
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
