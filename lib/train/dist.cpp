#include "train/dist.h"

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#if defined(USE_C10D_NCCL) && TLMOE_WITH_CUDA
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#define TLMOE_HAVE_NCCL 1
#else
#define TLMOE_HAVE_NCCL 0
#endif

#include <csignal>
#include <chrono>
#include <cstdlib>
#include <map>

#include "common/error.h"

namespace tlmoe::train::dist {

namespace {

// An exception's message without c10's C++ backtrace.
std::string message_of(const std::exception& e) {
  if (const auto* c = dynamic_cast<const c10::Error*>(&e)) return c->what_without_backtrace();
  return e.what();
}

std::string seconds(double s) {
  char t[32];
  std::snprintf(t, sizeof t, "%g", s);
  return t;
}

int64_t parse_int(const std::string& name, const std::string& value) {
  try {
    size_t pos = 0;
    const long long v = std::stoll(value, &pos);
    if (pos == value.size()) return v;
  } catch (...) {
  }
  throw ConfigError("", "dist", "environment variable " + name + "='" + value + "' is not an integer");
}

std::optional<int64_t> env_int(const EnvLookup& env, const std::string& name) {
  auto v = env(name);
  if (!v || v->empty()) return std::nullopt;
  return parse_int(name, *v);
}

// A world of one: every collective is the identity.
class LocalCommunicator final : public Communicator {
 public:
  int64_t rank() const override { return 0; }
  int64_t size() const override { return 1; }
  std::string backend() const override { return "none"; }
  void broadcast(std::vector<torch::Tensor>&) override {}
  void all_reduce_sum(std::vector<torch::Tensor>&) override {}
  void barrier() override {}
};

constexpr int64_t kBucketBytes = 32 << 20;

class C10dCommunicator final : public Communicator {
 public:
  C10dCommunicator(c10::intrusive_ptr<c10d::Store> store, c10::intrusive_ptr<c10d::Backend> pg, int64_t rank,
                   int64_t size, std::string name, double timeout_s)
      : store_(std::move(store)), pg_(std::move(pg)), rank_(rank), size_(size), name_(std::move(name)),
        timeout_s_(timeout_s) {}

  int64_t rank() const override { return rank_; }
  int64_t size() const override { return size_; }
  std::string backend() const override { return name_; }

  void broadcast(std::vector<torch::Tensor>& tensors) override {
    run_bucketed(tensors, "broadcast", [&](std::vector<at::Tensor>& flat) {
      c10d::BroadcastOptions o;
      o.rootRank = 0;
      o.rootTensor = 0;
      return pg_->broadcast(flat, o);
    });
  }

  void all_reduce_sum(std::vector<torch::Tensor>& tensors) override {
    run_bucketed(tensors, "all_reduce", [&](std::vector<at::Tensor>& flat) {
      c10d::AllreduceOptions o;
      o.reduceOp = c10d::ReduceOp::SUM;
      return pg_->allreduce(flat, o);
    });
  }

  void barrier() override {
    try {
      pg_->barrier(c10d::BarrierOptions())->wait();
    } catch (const std::exception& e) {
      fail("barrier", e);
    }
  }

 private:
  [[noreturn]] void fail(const std::string& op, const std::exception& e) const {
    throw std::runtime_error("distributed " + name_ + " " + op + " failed on rank " + std::to_string(rank_) + " of " +
                             std::to_string(size_) + ": another rank died or did not answer within dist.timeout_s = " +
                             seconds(timeout_s_) + " s; this rank stops. The run directory keeps the last checkpoint rank 0 wrote. (" +
                             message_of(e) + ")");
  }

  // Packs tensors of one dtype into flat buffers of at most kBucketBytes, sends every bucket,
  // waits for them all, copies the results back.
  template <class Op>
  void run_bucketed(std::vector<torch::Tensor>& tensors, const std::string& op, Op&& start) {
    std::map<c10::ScalarType, std::vector<size_t>> by_type;
    for (size_t i = 0; i < tensors.size(); ++i)
      if (tensors[i].defined() && tensors[i].numel() > 0) by_type[tensors[i].scalar_type()].push_back(i);
    struct Bucket {
      std::vector<size_t> members;
      std::vector<at::Tensor> flat;
      c10::intrusive_ptr<c10d::Work> work;
    };
    std::vector<Bucket> buckets;
    for (auto& [type, idx] : by_type) {
      Bucket b;
      int64_t bytes = 0;
      for (size_t i : idx) {
        const int64_t n = tensors[i].numel() * static_cast<int64_t>(tensors[i].element_size());
        if (!b.members.empty() && bytes + n > kBucketBytes) {
          buckets.push_back(std::move(b));
          b = Bucket();
          bytes = 0;
        }
        b.members.push_back(i);
        bytes += n;
      }
      if (!b.members.empty()) buckets.push_back(std::move(b));
    }
    try {
      for (auto& b : buckets) {
        std::vector<at::Tensor> parts;
        for (size_t i : b.members) parts.push_back(tensors[i].detach().reshape({-1}));
        b.flat = {parts.size() == 1 ? parts[0].clone() : torch::cat(parts)};
        b.work = start(b.flat);
      }
      for (auto& b : buckets) b.work->wait();
    } catch (const std::exception& e) {
      fail(op, e);
    }
    torch::NoGradGuard g;
    for (auto& b : buckets) {
      int64_t off = 0;
      for (size_t i : b.members) {
        auto& t = tensors[i];
        t.copy_(b.flat[0].narrow(0, off, t.numel()).view(t.sizes()));
        off += t.numel();
      }
    }
  }

  c10::intrusive_ptr<c10d::Store> store_;
  c10::intrusive_ptr<c10d::Backend> pg_;
  int64_t rank_, size_;
  std::string name_;
  double timeout_s_;
};

bool is_loopback(const std::string& a) { return a == "localhost" || a.rfind("127.", 0) == 0 || a == "::1"; }

}  // namespace

EnvLookup process_env() {
  return [](const std::string& name) -> std::optional<std::string> {
    const char* v = std::getenv(name.c_str());
    if (!v) return std::nullopt;
    return std::string(v);
  };
}

LaunchEnv read_launch_env(const DistConfig& cfg, const EnvLookup& env) {
  LaunchEnv e;
  if (cfg.launcher == "none") return e;
  const bool torchrun_set = env("RANK").has_value() || env("WORLD_SIZE").has_value();
  const auto slurm_tasks = env_int(env, "SLURM_NTASKS");
  std::string which = cfg.launcher;
  if (which == "auto") {
    if (torchrun_set) which = "torchrun";
    else if (slurm_tasks && *slurm_tasks > 1 && env("SLURM_PROCID")) which = "slurm";
    else return e;
  }
  if (which == "torchrun") {
    const auto rank = env_int(env, "RANK"), world = env_int(env, "WORLD_SIZE");
    if (!rank || !world)
      throw ConfigError("", "dist.launcher", "torchrun's contract needs both RANK and WORLD_SIZE in the environment");
    e.rank = *rank;
    e.world_size = *world;
    e.local_rank = env_int(env, "LOCAL_RANK").value_or(0);
    e.agent_store = env("TORCHELASTIC_USE_AGENT_STORE").value_or("") == "True";
    if (e.agent_store) e.store_prefix = "/worker/attempt_" + env("TORCHELASTIC_RESTART_COUNT").value_or("0");
  } else {  // slurm
    const auto rank = env_int(env, "SLURM_PROCID");
    if (!rank || !slurm_tasks)
      throw ConfigError("", "dist.launcher", "Slurm's contract needs SLURM_PROCID and SLURM_NTASKS in the environment");
    e.rank = *rank;
    e.world_size = *slurm_tasks;
    e.local_rank = env_int(env, "SLURM_LOCALID").value_or(0);
  }
  e.launcher = which;
  if (e.world_size < 1 || e.rank < 0 || e.rank >= e.world_size)
    throw ConfigError("", "dist.launcher",
                      "rank " + std::to_string(e.rank) + " is not within a world of " + std::to_string(e.world_size));
  if (e.world_size == 1) return e;
  e.master_addr = !cfg.master_addr.empty() ? cfg.master_addr : env("MASTER_ADDR").value_or("");
  if (e.master_addr.empty())
    throw ConfigError("", "dist.master_addr",
                      "a " + std::to_string(e.world_size) + "-process launch (" + which +
                          ") needs rank 0's address: set dist.master_addr or MASTER_ADDR");
  e.master_port = cfg.master_port > 0 ? cfg.master_port : env_int(env, "MASTER_PORT").value_or(29500);
  if (e.master_port <= 0 || e.master_port > 65535)
    throw ConfigError("", "dist.master_port", "port " + std::to_string(e.master_port) + " is out of range");
  return e;
}

std::unique_ptr<Communicator> connect(const LaunchEnv& env, const DistConfig& cfg, const torch::Device& device) {
  if (!env.distributed()) return std::make_unique<LocalCommunicator>();
  const auto timeout = std::chrono::milliseconds(static_cast<int64_t>(cfg.timeout_s * 1000.0));
  std::string backend = cfg.backend;
  if (backend == "auto") backend = device.is_cuda() && TLMOE_HAVE_NCCL ? "nccl" : "gloo";
  if (backend == "nccl" && !(device.is_cuda() && TLMOE_HAVE_NCCL))
    throw ConfigError("", "dist.backend",
                      device.is_cuda() ? "this build of tlmoe has no NCCL; use dist.backend: gloo"
                                       : "nccl needs device: cuda; use dist.backend: gloo (or auto) on CPU");

  // A peer that dies closes its sockets; writing to them must fail with an error that becomes a
  // message, not kill this process with SIGPIPE (Python, where c10d usually runs, ignores it too).
  std::signal(SIGPIPE, SIG_IGN);
  c10::intrusive_ptr<c10d::Store> store;
  try {
    c10d::TCPStoreOptions so;
    so.port = static_cast<std::uint16_t>(env.master_port);
    so.isServer = env.rank == 0 && !env.agent_store;
    so.numWorkers = env.agent_store ? std::nullopt : std::optional<std::size_t>(env.world_size);
    so.waitWorkers = !env.agent_store;
    so.timeout = timeout;
    store = c10::make_intrusive<c10d::TCPStore>(env.master_addr, so);
    if (!env.store_prefix.empty()) store = c10::make_intrusive<c10d::PrefixStore>(env.store_prefix, store);
  } catch (const std::exception& e) {
    throw std::runtime_error("distributed rendezvous failed on rank " + std::to_string(env.rank) + " of " +
                             std::to_string(env.world_size) + " at " + env.master_addr + ":" +
                             std::to_string(env.master_port) + " within dist.timeout_s = " + seconds(cfg.timeout_s) +
                             " s (" + message_of(e) + ")");
  }
  c10::intrusive_ptr<c10d::Backend> pg;
  try {
    if (backend == "gloo") {
      auto o = c10d::ProcessGroupGloo::Options::create(timeout);
      if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"))
        o->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
      else if (is_loopback(env.master_addr))
        o->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
      else
        o->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
      pg = c10::make_intrusive<c10d::ProcessGroupGloo>(store, static_cast<int>(env.rank),
                                                       static_cast<int>(env.world_size), o);
    } else {
#if TLMOE_HAVE_NCCL
      auto o = c10d::ProcessGroupNCCL::Options::create();
      o->timeout = timeout;
      pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, static_cast<int>(env.rank),
                                                       static_cast<int>(env.world_size), o);
#endif
    }
  } catch (const std::exception& e) {
    throw std::runtime_error("distributed " + backend + " group could not be formed on rank " +
                             std::to_string(env.rank) + " of " + std::to_string(env.world_size) +
                             " within dist.timeout_s = " + seconds(cfg.timeout_s) + " s (" + message_of(e) + ")");
  }
  return std::make_unique<C10dCommunicator>(store, pg, env.rank, env.world_size, backend, cfg.timeout_s);
}

std::pair<int64_t, int64_t> shard_rows(int64_t rows, int64_t rank, int64_t world) {
  const int64_t base = rows / world, extra = rows % world;
  const int64_t begin = rank * base + std::min(rank, extra);
  return {begin, begin + base + (rank < extra ? 1 : 0)};
}

}  // namespace tlmoe::train::dist
