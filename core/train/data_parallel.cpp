#include "core/train/data_parallel.h"

#ifdef NESTSCOPE_HAVE_C10D
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#endif
#ifdef NESTSCOPE_HAVE_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <cstdint>
#include <cstdlib>
#include <functional>

#include "core/error.h"

namespace nestscope {

namespace {

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

int64_t parse_env(const char* name, const std::string& value, int64_t lo, int64_t hi) {
  size_t used = 0;
  int64_t v = 0;
  try {
    v = std::stoll(value, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  check(used == value.size() && !value.empty() && v >= lo && v <= hi,
        std::string("data-parallel: ") + name + "='" + value + "' is not a whole number in [" + std::to_string(lo) +
            ", " + std::to_string(hi) + "]");
  return v;
}

}  // namespace

DistributedConfig distributed_config_from_env() {
  DistributedConfig c;
  const std::string rank = env("RANK"), world = env("WORLD_SIZE");
  if (!rank.empty() || !world.empty()) {
    check(!rank.empty() && !world.empty(), std::string("data-parallel: ") + (rank.empty() ? "WORLD_SIZE" : "RANK") +
                                               " is set without " + (rank.empty() ? "RANK" : "WORLD_SIZE") +
                                               " (torchrun sets both, and MASTER_ADDR, MASTER_PORT)");
    c.world = parse_env("WORLD_SIZE", world, 1, 1 << 16);
    c.rank = parse_env("RANK", rank, 0, c.world - 1);
    if (!env("LOCAL_RANK").empty()) c.local_rank = parse_env("LOCAL_RANK", env("LOCAL_RANK"), 0, 1 << 16);
    c.source = "torchrun";
  } else if (!env("SLURM_PROCID").empty() && !env("SLURM_STEP_NUM_TASKS").empty()) {
    // Under srun (a job step): the batch script itself has no SLURM_STEP_NUM_TASKS, so a
    // single process started there is not mistaken for one of many.
    c.world = parse_env("SLURM_STEP_NUM_TASKS", env("SLURM_STEP_NUM_TASKS"), 1, 1 << 16);
    c.rank = parse_env("SLURM_PROCID", env("SLURM_PROCID"), 0, c.world - 1);
    if (!env("SLURM_LOCALID").empty()) c.local_rank = parse_env("SLURM_LOCALID", env("SLURM_LOCALID"), 0, 1 << 16);
    c.source = "slurm";
  }
  if (!c.distributed()) return DistributedConfig{};
  if (!env("MASTER_ADDR").empty()) {
    c.master_addr = env("MASTER_ADDR");
  } else {
    check(c.source == "slurm" && !env("SLURM_LAUNCH_NODE_IPADDR").empty(),
          "data-parallel: WORLD_SIZE is " + std::to_string(c.world) + " but MASTER_ADDR is not set (the address of rank 0)");
    c.master_addr = env("SLURM_LAUNCH_NODE_IPADDR");
  }
  if (!env("MASTER_PORT").empty()) {
    c.port = int(parse_env("MASTER_PORT", env("MASTER_PORT"), 1, 65535));
  } else if (c.source == "slurm" && !env("SLURM_JOB_ID").empty()) {
    // One port per job, so two jobs sharing a node do not meet each other.
    c.port = 20000 + int(parse_env("SLURM_JOB_ID", env("SLURM_JOB_ID"), 0, INT64_MAX) % 20000);
  } else {
    check(c.source == "slurm", "data-parallel: MASTER_PORT is not set (rank 0's rendezvous port)");
  }
  if (!env("NESTSCOPE_DIST_TIMEOUT").empty())
    c.timeout = std::chrono::seconds(parse_env("NESTSCOPE_DIST_TIMEOUT", env("NESTSCOPE_DIST_TIMEOUT"), 1, 86400));
  return c;
}

#ifdef NESTSCOPE_HAVE_C10D
struct DataParallel::Impl {
  DistributedConfig config;
  std::string backend;
  bool cuda = false;  // collectives on the GPU (NCCL): the loss travels there too
  c10::intrusive_ptr<c10d::Store> store;
  // The process group's collectives (ProcessGroupGloo / ProcessGroupNCCL are ProcessGroups in
  // LibTorch 1.x and Backends in 2.x: the calls are the same, the base class is not).
  std::function<c10::intrusive_ptr<c10d::Work>(std::vector<at::Tensor>&)> allreduce_sum, broadcast_root;
  std::function<c10::intrusive_ptr<c10d::Work>()> barrier;
  double comm_seconds = 0;
  bool failed = false;  // a collective failed: the group's threads may be stuck on a dead peer

  Error failure(const char* what, const std::exception& e) {
    failed = true;
    return Error("data-parallel rank " + std::to_string(config.rank) + " of " + std::to_string(config.world) + ": " +
                 what + " failed — another rank stopped or is unreachable (" + first_line(e.what()) + ")");
  }

  void wait(const c10::intrusive_ptr<c10d::Work>& work, const char* what) {
    const auto t0 = std::chrono::steady_clock::now();
    try {
      work->wait(config.timeout);
    } catch (const std::exception& e) {
      throw failure(what, e);
    }
    comm_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  static std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }
  template <class Fn>
  void run(const char* what, Fn&& fn) {
    c10::intrusive_ptr<c10d::Work> work;
    try {
      work = fn();
    } catch (const Error&) {
      throw;
    } catch (const std::exception& e) {
      throw failure(what, e);
    }
    wait(work, what);
  }
};

DataParallel::DataParallel(const DistributedConfig& config, bool cuda) : impl_(std::make_unique<Impl>()) {
  auto& m = *impl_;
  m.config = config;
  const std::string who = "data-parallel rank " + std::to_string(config.rank) + " of " + std::to_string(config.world);
  try {
    c10d::TCPStoreOptions so;
    so.port = uint16_t(config.port);
    so.isServer = config.rank == 0;
    so.numWorkers = size_t(config.world);
    so.waitWorkers = true;
    so.timeout = config.timeout;
    m.store = c10::make_intrusive<c10d::TCPStore>(config.master_addr, so);
  } catch (const std::exception& e) {
    throw Error(who + ": no rendezvous at " + config.master_addr + ":" + std::to_string(config.port) + " (" +
                Impl::first_line(e.what()) + ")");
  }
  try {
#ifdef NESTSCOPE_HAVE_NCCL
    if (cuda) {
      auto pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(m.store, int(config.rank), int(config.world));
      m.allreduce_sum = [pg](std::vector<at::Tensor>& t) { return pg->allreduce(t); };
      m.broadcast_root = [pg](std::vector<at::Tensor>& t) { return pg->broadcast(t); };
      m.barrier = [pg] { return pg->barrier(); };
      m.backend = "nccl";
      m.cuda = true;
    }
#endif
    if (!m.allreduce_sum) {
      auto options = c10d::ProcessGroupGloo::Options::create(config.timeout);
      const std::string ifname = env("GLOO_SOCKET_IFNAME");
      const bool loopback = config.master_addr == "localhost" || config.master_addr.rfind("127.", 0) == 0;
      options->devices.push_back(!ifname.empty() ? c10d::ProcessGroupGloo::createDeviceForInterface(ifname)
                                 : loopback      ? c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1")
                                                 : c10d::ProcessGroupGloo::createDefaultDevice());
      options->threads = 2;
      auto pg = c10::make_intrusive<c10d::ProcessGroupGloo>(m.store, int(config.rank), int(config.world), options);
      m.allreduce_sum = [pg](std::vector<at::Tensor>& t) { return pg->allreduce(t); };
      m.broadcast_root = [pg](std::vector<at::Tensor>& t) { return pg->broadcast(t); };
      m.barrier = [pg] { return pg->barrier(); };
      m.backend = cuda ? "gloo (this LibTorch has no NCCL)" : "gloo";
    }
  } catch (const std::exception& e) {
    throw Error(who + ": the " + (cuda ? "GPU" : "Gloo") + " process group did not form (" +
                Impl::first_line(e.what()) + ")");
  }
}

DataParallel::~DataParallel() {
  // After a failed collective the process group's worker threads may still wait on the dead peer,
  // and its destructor would join them: the process is about to exit with the error, so the group
  // is left to the OS instead of hanging the exit.
  if (impl_ && impl_->failed) (void)impl_.release();
}

int64_t DataParallel::rank() const { return impl_->config.rank; }
int64_t DataParallel::world() const { return impl_->config.world; }
const std::string& DataParallel::backend() const { return impl_->backend; }
double DataParallel::communication_seconds() const { return impl_->comm_seconds; }

void DataParallel::average_gradients(const std::vector<at::Tensor>& params, int64_t bucket_bytes) {
  std::vector<torch::Tensor> grads;
  for (const auto& p : params)
    if (p.grad().defined()) grads.push_back(p.grad());
  const double scale = 1.0 / double(impl_->config.world);
  size_t i = 0;
  while (i < grads.size()) {
    // One bucket: consecutive gradients of one dtype and device, about bucket_bytes in all.
    size_t j = i;
    int64_t bytes = 0;
    while (j < grads.size() && grads[j].scalar_type() == grads[i].scalar_type() &&
           grads[j].device() == grads[i].device() && (j == i || bytes + grads[j].nbytes() <= size_t(bucket_bytes))) {
      bytes += int64_t(grads[j].nbytes());
      ++j;
    }
    std::vector<torch::Tensor> flat_parts;
    for (size_t k = i; k < j; ++k) flat_parts.push_back(grads[k].reshape(-1));
    std::vector<at::Tensor> flat = {torch::cat(flat_parts)};
    impl_->run("gradient all-reduce", [&] { return impl_->allreduce_sum(flat); });
    flat[0].mul_(scale);
    int64_t at = 0;
    for (size_t k = i; k < j; ++k) {
      const int64_t n = grads[k].numel();
      grads[k].copy_(flat[0].narrow(0, at, n).view(grads[k].sizes()));
      at += n;
    }
    i = j;
  }
}

double DataParallel::average(double value) {
  std::vector<at::Tensor> t = {
      torch::full({1}, value, torch::TensorOptions(torch::kFloat64).device(impl_->cuda ? torch::kCUDA : torch::kCPU))};
  impl_->run("loss all-reduce", [&] { return impl_->allreduce_sum(t); });
  return t[0].item<double>() / double(impl_->config.world);
}

void DataParallel::broadcast_from_root(const std::vector<at::Tensor>& tensors) {
  torch::NoGradGuard no_grad;
  for (const auto& t : tensors) {
    std::vector<at::Tensor> one = {t.detach()};
    impl_->run("parameter broadcast", [&] { return impl_->broadcast_root(one); });
  }
}

void DataParallel::barrier() {
  impl_->run("barrier", [&] { return impl_->barrier(); });
}

#else  // built without Gloo's headers: one process only

struct DataParallel::Impl {
  DistributedConfig config;
  std::string backend;
};

DataParallel::DataParallel(const DistributedConfig& config, bool) : impl_(std::make_unique<Impl>()) {
  impl_->config = config;
  throw Error("data-parallel training (WORLD_SIZE " + std::to_string(config.world) +
              ") needs a build with Gloo's headers (Debian: libgloo-dev); this one trains in one process only");
}
DataParallel::~DataParallel() = default;
int64_t DataParallel::rank() const { return impl_->config.rank; }
int64_t DataParallel::world() const { return impl_->config.world; }
const std::string& DataParallel::backend() const { return impl_->backend; }
double DataParallel::communication_seconds() const { return 0; }
void DataParallel::average_gradients(const std::vector<at::Tensor>&, int64_t) {}
double DataParallel::average(double value) { return value; }
void DataParallel::broadcast_from_root(const std::vector<at::Tensor>&) {}
void DataParallel::barrier() {}

#endif

}  // namespace nestscope
