// Data-parallel training over PyTorch's own distributed layer (c10d): a TCPStore rendezvous, Gloo
// on CPU, NCCL for CUDA models when LibTorch was built with it. Configured the torchrun way, from
// the environment: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT, or under `srun` SLURM_PROCID,
// SLURM_STEP_NUM_TASKS (MASTER_ADDR defaults to the node that ran srun). Torch-free header.
#pragma once
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace at {
class Tensor;
}

namespace nestscope {

struct DistributedConfig {
  int64_t rank = 0, world = 1;
  int64_t local_rank = 0;       // LOCAL_RANK / SLURM_LOCALID: the GPU a CUDA rank uses
  std::string master_addr = "127.0.0.1";
  int port = 29500;
  std::chrono::milliseconds timeout{300000};  // NESTSCOPE_DIST_TIMEOUT seconds: a rank that stalls
  std::string source;           // "torchrun", "slurm" or "" (one process)
  bool distributed() const { return world > 1; }
};

// The environment's data-parallel setup; one process (world 1) when none is set. Throws Error on
// a partial or invalid one (RANK without WORLD_SIZE, RANK >= WORLD_SIZE, a port out of range, …).
DistributedConfig distributed_config_from_env();

// One process's membership in a data-parallel group: averages gradients across the ranks after
// each backward pass. Every collective throws Error (naming the rank and what was going on) when
// a peer is gone or the timeout passes, so a dead rank stops the others instead of hanging them.
class DataParallel {
 public:
  // Joins the group (the rendezvous waits up to config.timeout for every rank); `cuda`: the
  // gradients live on the GPU (NCCL when available, else Gloo).
  DataParallel(const DistributedConfig& config, bool cuda = false);
  ~DataParallel();
  DataParallel(const DataParallel&) = delete;
  DataParallel& operator=(const DataParallel&) = delete;

  int64_t rank() const;
  int64_t world() const;
  const std::string& backend() const;
  // Replaces every defined gradient of `params` by its mean over the ranks, all-reduced in flat
  // buckets of about `bucket_bytes` (one collective per bucket, not per tensor).
  void average_gradients(const std::vector<at::Tensor>& params, int64_t bucket_bytes = 25 << 20);
  // The mean of one number over the ranks (the step's loss, for the log).
  double average(double value);
  // Every rank has the same values as rank 0 (the parameters before the first step).
  void broadcast_from_root(const std::vector<at::Tensor>& tensors);
  void barrier();
  // Seconds spent in collectives so far (the all-reduce cost per step, for the benchmark).
  double communication_seconds() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace nestscope
