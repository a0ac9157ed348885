#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>

#include "core/error.h"
#include "core/io/atomic_file.h"
#include "core/io/safetensors.h"
#include "tests/core/test_util.h"

using namespace nestscope;

namespace {

std::vector<uint8_t> bytes_of(const std::string& s) { return {s.begin(), s.end()}; }

// A file from a hand-written header and `data_bytes` zero bytes of data.
std::vector<uint8_t> handmade(const std::string& header, size_t data_bytes) {
  std::string s;
  for (int i = 0; i < 8; ++i) s += char((uint64_t(header.size()) >> (8 * i)) & 0xFF);
  s += header;
  s.append(data_bytes, '\0');
  return bytes_of(s);
}

void expect_error(std::vector<uint8_t> bytes, const std::string& needle) {
  try {
    SafetensorsFile::parse(std::move(bytes), "bad.safetensors");
    FAIL() << "expected an error containing '" << needle << "'";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("bad.safetensors"), std::string::npos) << msg;
    EXPECT_NE(msg.find(needle), std::string::npos) << msg;
  }
}

}  // namespace

TEST(Safetensors, RoundTripKeepsNamesShapesDataAndMetadata) {
  std::vector<float> a = {1.5f, -2.f, 3.25f, 0.f, 7.f, -1e-3f};
  std::vector<int64_t> b = {42, -7};
  const auto text = serialize_safetensors({{"blk.0.attn.q.weight", DType::F32, {2, 3}, a.data()},
                                           {"counts", DType::I64, {2}, b.data()}},
                                          {{"config", "{\"d\":1}"}});
  uint64_t header_len = 0;
  std::memcpy(&header_len, text.data(), 8);
  EXPECT_EQ(header_len % 8, 0u);  // header padded so the data section starts 8-aligned
  auto f = SafetensorsFile::parse(bytes_of(text), "mem");
  ASSERT_EQ(f.tensors().size(), 2u);
  const auto* q = f.find("blk.0.attn.q.weight");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->dtype, DType::F32);
  EXPECT_EQ(q->shape, (std::vector<int64_t>{2, 3}));
  std::vector<float> back(6);
  std::memcpy(back.data(), f.data(*q), 24);
  EXPECT_EQ(back, a);
  const auto* c = f.find("counts");
  ASSERT_NE(c, nullptr);
  int64_t c0;
  std::memcpy(&c0, f.data(*c), 8);
  EXPECT_EQ(c0, 42);
  EXPECT_EQ(f.metadata().at("config"), "{\"d\":1}");
}

TEST(Safetensors, RejectsTruncatedFiles) {
  expect_error(bytes_of("abc"), "truncated");
  std::vector<float> a(16, 1.f);
  auto text = serialize_safetensors({{"w", DType::F32, {16}, a.data()}}, {});
  auto cut = bytes_of(text.substr(0, text.size() - 5));
  expect_error(cut, "outside");
  auto cut_header = bytes_of(text.substr(0, 20));
  expect_error(cut_header, "truncated");
}

TEST(Safetensors, RejectsHeadersThatLie) {
  expect_error(handmade("not json at all", 0), "not a JSON object");
  expect_error(handmade(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,64]}})", 16), "outside");
  expect_error(handmade(R"({"w":{"dtype":"F32","shape":[5],"data_offsets":[0,16]}})", 16), "does not match");
  expect_error(handmade(R"({"w":{"dtype":"Q4","shape":[4],"data_offsets":[0,16]}})", 16), "unsupported dtype 'Q4'");
  expect_error(handmade(R"({"w":{"dtype":"F32","shape":[-4],"data_offsets":[0,16]}})", 16), "non-negative");
  expect_error(handmade(R"({"w":{"dtype":"F32","shape":[4]}})", 16), "needs dtype, shape and data_offsets");
  expect_error(handmade(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                        R"("b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})", 16), "overlap");
  expect_error(handmade(R"({"__metadata__":{"k":1}})", 0), "not a string");
  // A shape claiming ~1e18 elements is refused from the header alone, before any allocation.
  expect_error(handmade(R"({"w":{"dtype":"F32","shape":[1000000000,1000000000],"data_offsets":[0,16]}})", 16),
               "does not match");
}

TEST(Safetensors, RefusesAHugeHeaderClaimBeforeAllocating) {
  std::vector<uint8_t> b(16, 0);
  b[7] = 0x10;  // header length 2^60
  expect_error(b, "more than the 100 MiB allowed");
}

TEST(Safetensors, WriteIsAtomicAndLeavesTheOldFileOnFailure) {
  test::TempDir dir;
  const auto path = dir.file("w.safetensors");
  std::vector<float> a = {1, 2, 3};
  write_safetensors(path, {{"w", DType::F32, {3}, a.data()}}, {});
  const auto before = SafetensorsFile::read(path).tensors().size();
  // Block the temp file name so the write fails part-way.
  std::filesystem::create_directory(path + ".tmp." + std::to_string(::getpid()));
  std::vector<float> b = {9, 9, 9, 9};
  EXPECT_THROW(write_safetensors(path, {{"x", DType::F32, {4}, b.data()}, {"w", DType::F32, {3}, a.data()}}, {}),
               Error);
  auto f = SafetensorsFile::read(path);
  EXPECT_EQ(f.tensors().size(), before);
  EXPECT_NE(f.find("w"), nullptr);
  EXPECT_THROW(SafetensorsFile::read(dir.file("missing.safetensors")), Error);
}

// A writer killed at any point of a save leaves the previous file whole (temp file + rename).
TEST(AtomicFile, AWriterKilledMidSaveLeavesTheOldFile) {
  test::TempDir dir;
  const auto path = dir.file("model.safetensors");
  const std::string old_bytes = "the previous checkpoint";
  write_file_atomic(path, old_bytes);
  const std::string big(size_t(96) << 20, 'x');  // long enough to be caught mid-write
  int killed_mid_write = 0;
  for (int delay_ms : {0, 1, 3, 10, 30}) {
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {  // the writer: saves and exits; never returns into gtest
      try {
        write_file_atomic(path, big);
      } catch (...) {
        ::_exit(2);
      }
      ::_exit(0);
    }
    const std::string tmp = path + ".tmp." + std::to_string(child);
    for (int i = 0; i < 2000 && !std::filesystem::exists(tmp); ++i) ::usleep(100);  // the save has begun
    ::usleep(useconds_t(delay_ms) * 1000);
    const bool writing = std::filesystem::exists(tmp);
    ::kill(child, SIGKILL);
    int status = 0;
    ::waitpid(child, &status, 0);
    const std::string now = read_text_file(path);
    if (WIFSIGNALED(status) && writing) {
      ++killed_mid_write;
      EXPECT_EQ(now, old_bytes) << "killed after " << delay_ms << " ms";
    } else {
      EXPECT_TRUE(now == old_bytes || now == big);  // finished before the kill: the new file, whole
    }
    std::filesystem::remove(tmp);
    write_file_atomic(path, old_bytes);
  }
  EXPECT_GE(killed_mid_write, 1);
}

// Disk full (simulated with a file-size limit in a child process): a clear error, the previous file
// whole, no temporary file left behind.
TEST(AtomicFile, ADiskFullSaveFailsClearlyAndLeavesTheOldFile) {
  test::TempDir dir;
  const auto path = dir.file("frontier.jsonl");
  write_file_atomic(path, "old");
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::signal(SIGXFSZ, SIG_IGN);  // writes past the limit fail with EFBIG instead of killing us
    rlimit lim{1 << 16, 1 << 16};
    ::setrlimit(RLIMIT_FSIZE, &lim);
    try {
      write_file_atomic(path, std::string(1 << 20, 'y'));
    } catch (const Error& e) {
      const std::string m = e.what();
      ::_exit(m.find("cannot write") != std::string::npos && m.find("previous file, if any, is unchanged") != std::string::npos ? 0 : 3);
    }
    ::_exit(4);  // the write "succeeded": a failure
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_EQ(read_text_file(path), "old");
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp." + std::to_string(child)));
}
