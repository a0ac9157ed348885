// Data-parallel fine-tuning over c10d (Gloo on 127.0.0.1): two ranks of batch b take the steps
// one process of batch 2b takes, and a rank that dies stops the other with an error.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <arpa/inet.h>
#include <csignal>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <thread>

#include "core/error.h"
#include "core/io/atomic_file.h"
#include "core/io/checkpoint.h"
#include "core/train/data_parallel.h"
#include "tests/core/test_util.h"

using namespace nestscope;

namespace {

// A port nothing listens on right now (the kernel's pick for port 0).
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    ::close(fd);
    return 29500;
  }
  ::close(fd);
  return ntohs(a.sin_port);
}

// Starts `cmd` under /bin/sh (which execs it), stdout and stderr to `log`; returns its pid.
pid_t spawn(const std::string& cmd, const std::string& log) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    const std::string line = "exec " + cmd + " >" + log + " 2>&1";
    ::execl("/bin/sh", "sh", "-c", line.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  return pid;
}

// Waits up to `limit` for `pid`; its exit status, or -1 if it is still running.
int wait_for(pid_t pid, std::chrono::seconds limit) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return -1;
}

// The ranks a test started: killed (if still running) and reaped before its folder goes.
struct Processes {
  std::vector<pid_t> pids;
  pid_t add(pid_t pid) {
    pids.push_back(pid);
    return pid;
  }
  ~Processes() {
    for (pid_t pid : pids) {
      int status = 0;
      if (::waitpid(pid, &status, WNOHANG) == 0) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, &status, 0);
      }
    }
  }
};

// A log that may not exist yet.
std::string log_text(const std::string& path) { return std::filesystem::exists(path) ? read_text_file(path) : ""; }

std::string rank_env(int rank, int world, int port) {
  return "env RANK=" + std::to_string(rank) + " WORLD_SIZE=" + std::to_string(world) +
         " MASTER_ADDR=127.0.0.1 MASTER_PORT=" + std::to_string(port) + " NESTSCOPE_THREADS=1 ";
}

double max_difference(const std::string& a, const std::string& b) {
  auto ma = load_checkpoint(a), mb = load_checkpoint(b);
  const auto pa = ma.model->named_parameters(), pb = mb.model->named_parameters();
  EXPECT_EQ(pa.size(), pb.size());
  double worst = 0;
  for (const auto& item : pa) {
    const auto* other = pb.find(item.key());
    EXPECT_NE(other, nullptr) << item.key();
    if (other) worst = std::max(worst, (item.value() - *other).abs().max().item<double>());
  }
  return worst;
}

}  // namespace

TEST(DataParallel, TwoRanksOfBatchBTakeTheStepsOfOneProcessOfBatch2B) {
  test::TempDir dir;
  write_file_atomic(dir.file("corpus.txt"), test::hamlet_text() + test::hamlet_text());
  const std::string finetune = std::string(NESTSCOPE_CLI) + " nsn finetune --corpus " + dir.file("corpus.txt") +
                               " --seq-len 32 --warmup 1 --max-rank 32 --json";
  std::string log;
  // Batch 4 in one process and 2 + 2 over two ranks sum the same gradients in another order. Where
  // a weight's gradient is a sum of terms that nearly cancel (the largest differences are in key
  // projections: a query's score gradients sum to zero over its keys), that round-off is large
  // beside the gradient, and AdamW, which divides each step by the gradient's size, carries it into
  // the step. So the largest difference is proportional to the learning rate: 1.3e-5 at lr 1e-4 in
  // the sanitizer build, 1.3e-6 at 1e-5 (1.8e-7 in the release build), measured, while the weights
  // move 3.0e-5 at 1e-5. The steps are small enough for the 1e-5 bound to mean "equal".
  const std::string steps = " --steps 4 --lr 1e-5";
  ASSERT_EQ(test::run_command("NESTSCOPE_THREADS=1 " + finetune + steps + " --batch 4 -o " + dir.file("one.safetensors") + " 2>&1", &log), 0)
      << log;
  const int port = free_port();
  Processes ranks;
  const pid_t r0 = ranks.add(spawn(rank_env(0, 2, port) + finetune + steps + " --batch 2 -o " + dir.file("dp.safetensors"), dir.file("r0.log")));
  const pid_t r1 = ranks.add(spawn(rank_env(1, 2, port) + finetune + steps + " --batch 2 -o " + dir.file("dp-rank1.safetensors"), dir.file("r1.log")));
  const int s0 = wait_for(r0, std::chrono::seconds(300)), s1 = wait_for(r1, std::chrono::seconds(30));
  ASSERT_EQ(s0, 0) << log_text(dir.file("r0.log"));
  ASSERT_EQ(s1, 0) << log_text(dir.file("r1.log"));
  EXPECT_FALSE(std::filesystem::exists(dir.file("dp-rank1.safetensors")));  // rank 0 alone writes
  EXPECT_NE(read_text_file(dir.file("r0.log")).find("data-parallel: 2 ranks (torchrun, gloo)"), std::string::npos);
  const double diff = max_difference(dir.file("one.safetensors"), dir.file("dp.safetensors"));
  EXPECT_LT(diff, 1e-5);
  std::printf("largest weight difference, one process of batch 4 vs 2 ranks of batch 2: %.3g\n", diff);
  // The steps did something: the weights moved from the conversion's.
  ASSERT_EQ(test::run_command(std::string(NESTSCOPE_CLI) + " nsn convert --max-rank 32 -o " + dir.file("conv.safetensors") +
                                  " 2>&1", &log),
            0)
      << log;
  const double moved = max_difference(dir.file("conv.safetensors"), dir.file("dp.safetensors"));
  EXPECT_GT(moved, 1e-5);
  EXPECT_LT(diff, moved / 10);  // the two runs differ far less than either moved
  std::printf("largest move from the conversion: %.3g\n", moved);
}

TEST(DataParallel, ARankThatDiesStopsTheOtherWithAnError) {
  test::TempDir dir;
  write_file_atomic(dir.file("corpus.txt"), test::hamlet_text() + test::hamlet_text());
  const std::string finetune = std::string(NESTSCOPE_CLI) + " nsn finetune --corpus " + dir.file("corpus.txt") +
                               " --steps 1000000 --batch 2 --seq-len 32 --max-rank 32";
  const int port = free_port();
  Processes ranks;
  const pid_t r0 = ranks.add(spawn(rank_env(0, 2, port) + finetune + " -o " + dir.file("a.safetensors"), dir.file("r0.log")));
  const pid_t r1 = ranks.add(spawn(rank_env(1, 2, port) + finetune + " -o " + dir.file("b.safetensors"), dir.file("r1.log")));
  // Both are training once rank 0 reports steps.
  const auto start = std::chrono::steady_clock::now();
  while (log_text(dir.file("r0.log")).find("train") == std::string::npos &&
         std::chrono::steady_clock::now() - start < std::chrono::seconds(120))
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  ASSERT_NE(log_text(dir.file("r0.log")).find("train"), std::string::npos) << log_text(dir.file("r0.log"));
  ::kill(r1, SIGKILL);
  wait_for(r1, std::chrono::seconds(10));
  const auto killed = std::chrono::steady_clock::now();
  const int s0 = wait_for(r0, std::chrono::seconds(30));
  const std::string out = log_text(dir.file("r0.log"));
  ASSERT_GT(s0, 0) << "rank 0 still running 30 s after rank 1 died:\n" << out;
  EXPECT_LT(std::chrono::steady_clock::now() - killed, std::chrono::seconds(30));
  EXPECT_NE(out.find("data-parallel rank 0 of 2"), std::string::npos) << out;
  EXPECT_NE(out.find("another rank stopped"), std::string::npos) << out;
  EXPECT_FALSE(std::filesystem::exists(dir.file("a.safetensors")));
}

TEST(DataParallel, TheEnvironmentSaysWhetherAndHowToJoin) {
  auto with = [](std::vector<std::pair<const char*, const char*>> vars) {
    for (const char* k : {"RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK", "SLURM_PROCID",
                          "SLURM_STEP_NUM_TASKS", "SLURM_LOCALID", "SLURM_JOB_ID", "SLURM_LAUNCH_NODE_IPADDR",
                          "NESTSCOPE_DIST_TIMEOUT"})
      ::unsetenv(k);
    for (auto [k, v] : vars) ::setenv(k, v, 1);
    try {
      const auto c = distributed_config_from_env();
      return c.source + " " + std::to_string(c.rank) + "/" + std::to_string(c.world) + " " + c.master_addr + ":" +
             std::to_string(c.port);
    } catch (const Error& e) {
      return std::string("error: ") + e.what();
    }
  };
  EXPECT_EQ(with({}), " 0/1 127.0.0.1:29500");
  EXPECT_EQ(with({{"RANK", "1"}, {"WORLD_SIZE", "4"}, {"MASTER_ADDR", "10.0.0.2"}, {"MASTER_PORT", "1234"}}),
            "torchrun 1/4 10.0.0.2:1234");
  EXPECT_EQ(with({{"RANK", "0"}, {"WORLD_SIZE", "1"}}), " 0/1 127.0.0.1:29500");  // one process
  EXPECT_NE(with({{"RANK", "1"}}).find("RANK is set without WORLD_SIZE"), std::string::npos);
  EXPECT_NE(with({{"RANK", "4"}, {"WORLD_SIZE", "4"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "1"}}).find("RANK='4'"),
            std::string::npos);
  EXPECT_NE(with({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_PORT", "1"}}).find("MASTER_ADDR is not set"),
            std::string::npos);
  EXPECT_NE(with({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "99999"}}).find("MASTER_PORT"),
            std::string::npos);
  // srun: the step's tasks; rank 0's address is the launching node's unless MASTER_ADDR says.
  EXPECT_EQ(with({{"SLURM_PROCID", "2"}, {"SLURM_STEP_NUM_TASKS", "3"}, {"SLURM_JOB_ID", "123"},
                  {"SLURM_LAUNCH_NODE_IPADDR", "10.1.1.1"}}),
            "slurm 2/3 10.1.1.1:20123");
  // A batch script's own environment (no job step) is one process.
  EXPECT_EQ(with({{"SLURM_PROCID", "0"}, {"SLURM_JOB_ID", "123"}}), " 0/1 127.0.0.1:29500");
  with({});
}
