// Multi-process training on torch.distributed c10d (docs/distributed.md).
//
// The launch contract: torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT;
// Slurm sets SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID (the master address and port then come
// from dist.master_addr / dist.master_port or MASTER_ADDR / MASTER_PORT). Rank 0 hosts a
// c10d::TCPStore (torchrun's agent hosts it when TORCHELASTIC_USE_AGENT_STORE=True), every rank
// joins a ProcessGroupGloo (CPU) or ProcessGroupNCCL (CUDA, when the build has it). With none of
// it set, world_size is 1 and nothing distributed is created.
//
// This header is free of torch/csrc/distributed includes; they stay in dist.cpp.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "config/config.h"

namespace tlmoe::train::dist {

struct LaunchEnv {
  std::string launcher = "none";  // none | torchrun | slurm: where the values came from
  int64_t rank = 0;
  int64_t world_size = 1;
  int64_t local_rank = 0;
  std::string master_addr;        // empty when world_size == 1
  int64_t master_port = 0;
  bool agent_store = false;       // torchrun's agent already hosts the TCPStore
  std::string store_prefix;       // key prefix inside the agent's store
  bool distributed() const { return world_size > 1; }
};

// Looks an environment variable up (nullopt when unset); tests pass a map instead of the process env.
using EnvLookup = std::function<std::optional<std::string>(const std::string&)>;
EnvLookup process_env();

// Reads the launch contract per dist.launcher. Throws ConfigError for inconsistent or unparsable
// values (a RANK without WORLD_SIZE, RANK >= WORLD_SIZE, a multi-process launch without a
// master address, ...).
LaunchEnv read_launch_env(const DistConfig& cfg, const EnvLookup& env);

// One process group. A world of one is a no-op group: every collective returns at once.
// Collectives throw std::runtime_error naming the rank, the operation and dist.timeout_s when a
// peer dies or does not answer in time.
class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int64_t rank() const = 0;
  virtual int64_t size() const = 0;
  virtual std::string backend() const = 0;  // "none" | "gloo" | "nccl"
  // In place: every tensor takes rank 0's values (tensors of any dtype, contiguous).
  virtual void broadcast(std::vector<torch::Tensor>& tensors) = 0;
  // In place elementwise sum over ranks. Tensors are packed into flat buffers of one dtype
  // (at most bucket_bytes each), all buckets are sent before the first is waited for.
  virtual void all_reduce_sum(std::vector<torch::Tensor>& tensors) = 0;
  virtual void barrier() = 0;

  // One in-flight all-reduce; wait() blocks until the sum is in the tensor it was started on and
  // throws like the blocking collectives.
  class Pending {
   public:
    virtual ~Pending() = default;
    virtual void wait() = 0;
  };
  // Starts an in-place elementwise sum over ranks of one contiguous tensor and returns at once.
  // Every rank must start its collectives in the same order.
  virtual std::unique_ptr<Pending> start_all_reduce_sum(torch::Tensor flat) = 0;

  // The rendezvous store (c10d's TCPStore, hosted by rank 0; a map in a world of one): small
  // values by key, for coordination that must not time out while the peers are busy. Throws
  // std::runtime_error (naming the rank and dist.timeout_s) when the store's host is gone.
  virtual void store_set(const std::string& key, const std::string& value) = 0;
  virtual std::optional<std::string> store_get(const std::string& key) = 0;  // nullopt: not set (never waits)
  virtual int64_t store_add(const std::string& key, int64_t delta) = 0;       // the new value

  // Every rank's `mine`, indexed by rank, on every rank (two all-reduces: lengths, then bytes).
  std::vector<std::string> all_gather_strings(const std::string& mine);
};

// Sums the gradients of `params` over the ranks, bucketed like torch DDP: parameters in reverse
// order (the order backward produces their gradients), grouped by dtype and device into flat
// buckets of at most bucket_bytes. When armed, a post-accumulate-grad hook on every parameter
// copies its finished gradient into its bucket, and a bucket whose gradients are all in starts
// its all-reduce at once (buckets always start in index order, so every rank issues the same
// collectives in the same order) while backward goes on. finish() starts the buckets still
// missing gradients (parameters this rank did not reach count as zeros), waits for all, and
// writes the sums into .grad. A gradient undefined on every rank stays undefined (AdamW skips the
// parameter, as one process with the whole batch would); one defined on any rank is defined
// everywhere. Unarmed, finish() reduces everything after backward: the same sums, no overlap.
class GradReducer {
 public:
  GradReducer(std::vector<torch::Tensor> params, Communicator& comm, int64_t bucket_bytes);
  ~GradReducer();
  GradReducer(const GradReducer&) = delete;
  GradReducer& operator=(const GradReducer&) = delete;

  // The next backward is the last before finish(): reduce buckets as their gradients complete.
  void arm();
  void finish();

  int64_t buckets() const { return static_cast<int64_t>(buckets_.size()); }
  // Buckets of the last finish() whose all-reduce had started before finish() was called.
  int64_t started_during_backward() const { return started_early_; }

  void on_gradient(size_t param);  // called by the hooks

 private:
  struct Bucket {
    std::vector<size_t> members;
    std::vector<int64_t> offsets;  // of each member's gradient in flat; its used flag sits at total + k
    int64_t total = 0;             // gradient elements
    torch::Tensor flat;            // [total + members]
    int64_t missing = 0;
    std::unique_ptr<Communicator::Pending> pending;
  };
  void fill(Bucket& b, size_t k);  // copy member k's gradient (or zeros) into flat
  void start_ready();              // start consecutive complete buckets from next_

  std::vector<torch::Tensor> params_;
  Communicator& comm_;
  std::vector<Bucket> buckets_;
  std::vector<std::pair<size_t, size_t>> where_;  // param -> (bucket, member)
  std::vector<char> filled_;
  size_t next_ = 0;
  bool armed_ = false;
  int64_t started_early_ = 0;
};

// world_size 1: a local group. Otherwise rendezvous at (master_addr, master_port) within
// cfg.timeout_s and build the backend chosen by cfg.backend for `device`.
std::unique_ptr<Communicator> connect(const LaunchEnv& env, const DistConfig& cfg, const torch::Device& device);

// The c10d group itself, for any world size, a world of one included (env.master_addr must be
// set): what connect() builds for several processes. A one-rank group runs every collective
// through the real backend, which is how the GPU tests exercise NCCL on a single device.
std::unique_ptr<Communicator> connect_group(const LaunchEnv& env, const DistConfig& cfg, const torch::Device& device);

// Whether this build can form NCCL groups (LibTorch with NCCL and tlmoe's CUDA kernels).
bool nccl_available();

// The contiguous rows [begin, end) of a batch of `rows` rows that rank `rank` of `world` takes:
// sizes differ by at most one, lower ranks take the larger shares, some may be empty.
std::pair<int64_t, int64_t> shard_rows(int64_t rows, int64_t rank, int64_t world);

}  // namespace tlmoe::train::dist
