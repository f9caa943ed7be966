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
};

// world_size 1: a local group. Otherwise rendezvous at (master_addr, master_port) within
// cfg.timeout_s and build the backend chosen by cfg.backend for `device`.
std::unique_ptr<Communicator> connect(const LaunchEnv& env, const DistConfig& cfg, const torch::Device& device);

// The contiguous rows [begin, end) of a batch of `rows` rows that rank `rank` of `world` takes:
// sizes differ by at most one, lower ranks take the larger shares, some may be empty.
std::pair<int64_t, int64_t> shard_rows(int64_t rows, int64_t rank, int64_t world);

}  // namespace tlmoe::train::dist
