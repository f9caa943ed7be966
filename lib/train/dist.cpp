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
#include <cstring>
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
  std::unique_ptr<Pending> start_all_reduce_sum(torch::Tensor) override {
    struct Done final : Pending {
      void wait() override {}
    };
    return std::make_unique<Done>();
  }
  void store_set(const std::string& key, const std::string& value) override { store_[key] = value; }
  std::optional<std::string> store_get(const std::string& key) override {
    auto it = store_.find(key);
    if (it == store_.end()) return std::nullopt;
    return it->second;
  }
  int64_t store_add(const std::string& key, int64_t delta) override {
    auto it = store_.find(key);
    const int64_t v = (it == store_.end() ? 0 : std::stoll(it->second)) + delta;
    store_[key] = std::to_string(v);
    return v;
  }

 private:
  std::map<std::string, std::string> store_;
};

constexpr int64_t kBucketBytes = 32 << 20;

class C10dCommunicator final : public Communicator {
 public:
  C10dCommunicator(c10::intrusive_ptr<c10d::Store> store, c10::intrusive_ptr<c10d::Backend> pg, int64_t rank,
                   int64_t size, std::string name, double timeout_s, torch::Device device)
      : store_(std::move(store)), pg_(std::move(pg)), rank_(rank), size_(size), name_(std::move(name)),
        timeout_s_(timeout_s), device_(device) {}
  // NCCL's communicators are torn down explicitly (destroy_process_group's path in Python); a
  // group destroyed without it warns and may leave its watchdog running.
  ~C10dCommunicator() override {
    if (name_ != "nccl") return;
    try {
      pg_->shutdown();
    } catch (const std::exception&) {
    }
  }

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

  void store_set(const std::string& key, const std::string& value) override {
    try {
      store_->set(key, std::vector<uint8_t>(value.begin(), value.end()));
      // TCPStore's set is not acknowledged: a round trip on the same connection (answered after the
      // server has applied the set) makes it visible to every rank before this call returns, so a
      // barrier after it orders it for the others
      store_->check({key});
    } catch (const std::exception& e) {
      fail("store set", e);
    }
  }

  std::optional<std::string> store_get(const std::string& key) override {
    try {
      if (!store_->check({key})) return std::nullopt;
      const auto v = store_->get(key);
      return std::string(v.begin(), v.end());
    } catch (const std::exception& e) {
      fail("store get", e);
    }
  }

  int64_t store_add(const std::string& key, int64_t delta) override {
    try {
      return store_->add(key, delta);
    } catch (const std::exception& e) {
      fail("store add", e);
    }
  }

  std::unique_ptr<Pending> start_all_reduce_sum(torch::Tensor flat) override {
    struct InFlight final : Pending {
      const C10dCommunicator* comm;
      c10::intrusive_ptr<c10d::Work> work;
      torch::Tensor target, staged;  // staged: a device copy when NCCL gets a host tensor
      void wait() override {
        try {
          work->wait();
        } catch (const std::exception& e) {
          comm->fail("all_reduce", e);
        }
        if (staged.defined()) target.copy_(staged);
      }
    };
    auto p = std::make_unique<InFlight>();
    p->comm = this;
    p->target = flat;
    std::vector<at::Tensor> v = {flat};
    if (needs_staging(flat)) {
      p->staged = flat.to(device_);
      v = {p->staged};
    }
    try {
      c10d::AllreduceOptions o;
      o.reduceOp = c10d::ReduceOp::SUM;
      p->work = pg_->allreduce(v, o);
    } catch (const std::exception& e) {
      fail("all_reduce", e);
    }
    return p;
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
        if (needs_staging(b.flat[0])) b.flat[0] = b.flat[0].to(device_);  // NCCL reduces device memory only
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

  bool needs_staging(const torch::Tensor& t) const { return name_ == "nccl" && !t.is_cuda(); }

  c10::intrusive_ptr<c10d::Store> store_;
  c10::intrusive_ptr<c10d::Backend> pg_;
  int64_t rank_, size_;
  std::string name_;
  double timeout_s_;
  torch::Device device_;
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

bool nccl_available() { return TLMOE_HAVE_NCCL; }

std::unique_ptr<Communicator> connect(const LaunchEnv& env, const DistConfig& cfg, const torch::Device& device) {
  if (!env.distributed()) return std::make_unique<LocalCommunicator>();
  return connect_group(env, cfg, device);
}

std::unique_ptr<Communicator> connect_group(const LaunchEnv& env, const DistConfig& cfg, const torch::Device& device) {
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
  return std::make_unique<C10dCommunicator>(store, pg, env.rank, env.world_size, backend, cfg.timeout_s, device);
}

std::vector<std::string> Communicator::all_gather_strings(const std::string& mine) {
  const int64_t world = size(), me = rank();
  if (world == 1) return {mine};
  std::vector<torch::Tensor> lengths = {torch::zeros({world}, torch::kLong)};
  lengths[0][me] = static_cast<int64_t>(mine.size());
  all_reduce_sum(lengths);
  std::vector<int64_t> len(static_cast<size_t>(world)), off(static_cast<size_t>(world) + 1, 0);
  for (int64_t r = 0; r < world; ++r) {
    len[r] = lengths[0][r].item<int64_t>();
    off[r + 1] = off[r] + len[r];
  }
  std::vector<torch::Tensor> bytes = {torch::zeros({std::max<int64_t>(1, off[world])}, torch::kUInt8)};
  std::memcpy(bytes[0].data_ptr<uint8_t>() + off[me], mine.data(), mine.size());
  all_reduce_sum(bytes);
  const auto* b = bytes[0].data_ptr<uint8_t>();
  std::vector<std::string> out;
  for (int64_t r = 0; r < world; ++r) out.emplace_back(reinterpret_cast<const char*>(b + off[r]), static_cast<size_t>(len[r]));
  return out;
}

// ---- GradReducer ---------------------------------------------------------------------------------

namespace {

struct ReducerHook final : torch::autograd::PostAccumulateGradHook {
  ReducerHook(GradReducer* r, size_t i) : reducer(r), param(i) {}
  void operator()(const torch::autograd::Variable&) override { reducer->on_gradient(param); }
  GradReducer* reducer;
  size_t param;
};

}  // namespace

GradReducer::GradReducer(std::vector<torch::Tensor> params, Communicator& comm, int64_t bucket_bytes)
    : params_(std::move(params)), comm_(comm), where_(params_.size()), filled_(params_.size(), 0) {
  std::map<std::pair<int, std::string>, size_t> open;  // (dtype, device) -> the bucket being filled
  for (size_t j = params_.size(); j-- > 0;) {
    const auto& p = params_[j];
    const std::pair<int, std::string> key{static_cast<int>(p.scalar_type()), p.device().str()};
    const int64_t elem = static_cast<int64_t>(p.element_size());
    auto it = open.find(key);
    if (it == open.end() || (buckets_[it->second].total + p.numel()) * elem > bucket_bytes) {
      buckets_.emplace_back();
      open[key] = buckets_.size() - 1;
      it = open.find(key);
    }
    Bucket& b = buckets_[it->second];
    where_[j] = {it->second, b.members.size()};
    b.members.push_back(j);
    b.offsets.push_back(b.total);
    b.total += p.numel();
  }
  for (size_t j = 0; j < params_.size(); ++j)
    torch::autograd::impl::set_post_acc_grad_hooks(params_[j], std::make_unique<ReducerHook>(this, j));
}

GradReducer::~GradReducer() {
  for (auto& p : params_) torch::autograd::impl::set_post_acc_grad_hooks(p, nullptr);
}

void GradReducer::arm() {
  for (auto& b : buckets_) {
    const auto& p = params_[b.members.front()];
    b.flat = torch::empty({b.total + static_cast<int64_t>(b.members.size())}, p.options().requires_grad(false));
    b.missing = static_cast<int64_t>(b.members.size());
    b.pending.reset();
  }
  std::fill(filled_.begin(), filled_.end(), 0);
  next_ = 0;
  started_early_ = 0;
  armed_ = true;
}

void GradReducer::fill(Bucket& b, size_t k) {
  torch::NoGradGuard ng;
  const auto& p = params_[b.members[k]];
  auto slot = b.flat.narrow(0, b.offsets[k], p.numel());
  const auto& g = p.grad();
  if (g.defined()) slot.copy_(g.reshape({-1}));
  else slot.zero_();
  b.flat.narrow(0, b.total + static_cast<int64_t>(k), 1).fill_(g.defined() ? 1.0 : 0.0);
  filled_[b.members[k]] = 1;
  --b.missing;
}

void GradReducer::start_ready() {
  while (next_ < buckets_.size() && buckets_[next_].missing == 0) {
    buckets_[next_].pending = comm_.start_all_reduce_sum(buckets_[next_].flat);
    ++next_;
  }
}

void GradReducer::on_gradient(size_t param) {
  if (!armed_ || filled_[param]) return;
  auto [bi, k] = where_[param];
  fill(buckets_[bi], k);
  if (buckets_[bi].missing == 0) {
    const size_t before = next_;
    start_ready();
    started_early_ += static_cast<int64_t>(next_ - before);
  }
}

void GradReducer::finish() {
  if (!armed_) arm();
  armed_ = false;  // the hooks stop here: what backward left out is filled below
  for (auto& b : buckets_)
    for (size_t k = 0; k < b.members.size(); ++k)
      if (!filled_[b.members[k]]) fill(b, k);
  start_ready();
  for (auto& b : buckets_) b.pending->wait();
  torch::NoGradGuard ng;
  for (auto& b : buckets_) {
    const auto used = b.flat.narrow(0, b.total, static_cast<int64_t>(b.members.size())).to(torch::kCPU, torch::kDouble);
    const auto* u = used.data_ptr<double>();
    for (size_t k = 0; k < b.members.size(); ++k) {
      if (u[k] == 0.0) continue;  // no rank produced this gradient
      auto p = params_[b.members[k]];
      auto sum = b.flat.narrow(0, b.offsets[k], p.numel()).view(p.sizes());
      if (p.grad().defined()) p.mutable_grad().copy_(sum);
      else p.mutable_grad() = sum.clone();
    }
  }
}

std::pair<int64_t, int64_t> shard_rows(int64_t rows, int64_t rank, int64_t world) {
  const int64_t base = rows / world, extra = rows % world;
  const int64_t begin = rank * base + std::min(rank, extra);
  return {begin, begin + base + (rank < extra ? 1 : 0)};
}

}  // namespace tlmoe::train::dist
