// nestscope_bench_real: what a user with a real-size checkpoint waits for (JSON on stdout).
//   --bandwidth        memory read bandwidth of this machine (GB/s, best of 5 passes over 1 GiB,
//                      all threads): what bounds batch-1 decode (every weight read per token)
//   --load DIR         in this fresh process: time from the process start to main, LibTorch's
//                      first-op initialisation, the import of DIR until the model can generate,
//                      and the first generated token; resident memory after
//   --decode DIR       batch-1 greedy decode tokens/s (N tokens after a short prompt), prefill
//                      tokens/s of a 64-token prompt (an English paragraph repeated and cut at a
//                      word; its length is reported), the greedy ids, peak resident memory
//   --budgets DIR      budgets that must pay at real size: each NSN rank of the default grid (SVD
//                      variants of attention + MLP, and of the LM head too) and each gate fraction,
//                      decode time / dense against MACs / dense (whole model, LM head and the gate's
//                      measurement included); the first variant build (seconds); a slider move to
//                      the first token with the variants built (median and max)
// Options: --tokens N (decode, default 64), --threads N (default: all cores), --weights auto|f32|bf16
// (load and decode: how the weights stay in memory, as the CLI's --weights), --budget JSON (decode
// at that budget, its variants built first).
#include <sys/resource.h>
#include <unistd.h>

#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "core/engine/engine.h"
#include "core/model/budget_json.h"
#include "core/error.h"
#include <torch/torch.h>

#include "core/defaults.h"

using namespace nestscope;
using Clock = std::chrono::steady_clock;
using Json = nlohmann::json;

namespace {

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

int64_t peak_rss_bytes() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return int64_t(u.ru_maxrss) * 1024;
}

int64_t current_rss_bytes() {
  std::ifstream f("/proc/self/statm");
  int64_t pages = 0, resident = 0;
  f >> pages >> resident;
  return resident * int64_t(sysconf(_SC_PAGESIZE));
}

// Seconds from this process's start (the kernel's record) to now.
double since_process_start() {
  std::ifstream stat("/proc/self/stat"), up("/proc/uptime");
  std::string s((std::istreambuf_iterator<char>(stat)), {});
  const auto close = s.rfind(')');
  std::vector<std::string> fields;
  size_t at = close + 2;
  while (at < s.size()) {
    const auto sp = s.find(' ', at);
    fields.push_back(s.substr(at, sp == std::string::npos ? std::string::npos : sp - at));
    if (sp == std::string::npos) break;
    at = sp + 1;
  }
  double uptime = 0;
  up >> uptime;
  const double start = double(std::stoll(fields.at(19))) / double(sysconf(_SC_CLK_TCK));  // field 22
  return uptime - start;
}

// Σ x over n floats read as four streams a quarter of the range apart, as a 4-row GEMV reads its
// weights (one sequential stream per core leaves bandwidth unused).
__attribute__((target("avx2"))) double sum_floats(const float* x, size_t n) {
  const size_t q = n / 4 / 8 * 8;
  const float *p0 = x, *p1 = x + q, *p2 = x + 2 * q, *p3 = x + 3 * q;
  __m256 a = _mm256_setzero_ps(), b = a, c = a, d = a;
  for (size_t i = 0; i < q; i += 8) {
    a = _mm256_add_ps(a, _mm256_loadu_ps(p0 + i));
    b = _mm256_add_ps(b, _mm256_loadu_ps(p1 + i));
    c = _mm256_add_ps(c, _mm256_loadu_ps(p2 + i));
    d = _mm256_add_ps(d, _mm256_loadu_ps(p3 + i));
  }
  float lanes[8];
  _mm256_storeu_ps(lanes, _mm256_add_ps(_mm256_add_ps(a, b), _mm256_add_ps(c, d)));
  double s = 0;
  for (float v : lanes) s += v;
  for (size_t i = 4 * q; i < n; ++i) s += x[i];
  return s;
}

double bandwidth_gb_s(int threads) {
  const size_t n = size_t(1) << 28;  // 1 GiB of floats
  std::vector<float> buf(n, 1.0f);
  double best = 0;
  for (int pass = 0; pass < 5; ++pass) {
    std::vector<double> part(static_cast<size_t>(threads), 0.0);
    const auto t0 = Clock::now();
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t)
      pool.emplace_back([&, t] {
        const size_t lo = n * size_t(t) / size_t(threads), hi = n * size_t(t + 1) / size_t(threads);
        const double s = sum_floats(buf.data() + lo, hi - lo);
        part[size_t(t)] = s;
      });
    for (auto& th : pool) th.join();
    const double s = seconds_since(t0);
    double total = 0;
    for (double p : part) total += p;
    if (total < 0) std::printf("%f", total);  // keeps the sum alive
    best = std::max(best, double(n * sizeof(float)) / s / 1e9);
  }
  return best;
}

std::string prompt_of(Engine& e, int64_t tokens) {
  // A plain English prompt, repeated to at least the token count wanted, then cut word by word to
  // the last length not below it (exactly `tokens` when words are single tokens, as here in GPT-2).
  std::string p = "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. ";
  auto count = [&](const std::string& s) { return int64_t(e.generate(s, {.max_new_tokens = 0}).prompt_tokens); };
  while (count(p) < tokens) p += p;
  for (auto cut = p.find_last_of(' ', p.size() - 2); cut != std::string::npos && cut > 0;
       cut = p.find_last_of(' ', cut - 1)) {
    if (count(p.substr(0, cut)) < tokens) break;
    p.resize(cut);
  }
  return p;
}


// --load: a fresh process's start-up, LibTorch's first op, the import, the first token.
void measure_load(Json& out, const std::string& dir, int threads, double to_main, WeightStorage weights) {
  auto t0 = Clock::now();
  init_threads(threads);
  (void)torch::ones({8}).sum().item<float>();  // LibTorch initialises on its first op
  out["process_start_to_main_s"] = to_main;
  out["torch_init_s"] = seconds_since(t0);
  t0 = Clock::now();
  Engine e;
  e.load(dir, weights);
  out["load_s"] = seconds_since(t0);
  out["weights"] = e.info().weights;
  t0 = Clock::now();
  const auto r = e.generate("Once upon a time", {.max_new_tokens = 1, .temperature = 0});
  out["first_token_s"] = seconds_since(t0);
  out["generated"] = r.generated_tokens;
  out["rss_bytes"] = current_rss_bytes();
  out["peak_rss_bytes"] = peak_rss_bytes();
}

// --decode: batch-1 greedy decode and a 64-token prefill, best of 3 rounds.
void measure_decode(Json& out, const std::string& dir, int threads, int64_t tokens, WeightStorage weights,
                    const std::string& budget) {
  init_threads(threads);
  Engine e;
  e.load(dir, weights);
  if (!budget.empty()) {
    e.set_variant_cache(false);
    e.set_budget(budget_from_json(budget));
    out["budget"] = budget;
  }
  out["parameters"] = e.info().parameters;
  out["weights"] = e.info().weights;
  // Bytes of weights a decode step reads: all but the rows of tables it only indexes (an untied
  // embedding; a learned position table), at 4 bytes each, or 2 when stored in bfloat16 (whose
  // float32 norms and biases, under 0.2% of these models' parameters, are counted at 2 as well).
  const auto c = e.info().config;
  int64_t indexed = c.tied_head ? 0 : c.vocab_size * c.d_model;
  if (c.position == PositionEncoding::Learned) indexed += c.context * c.d_model;
  out["weight_bytes_read_per_token"] = (e.info().weights == "bf16" ? 2 : 4) * (e.info().parameters - indexed);
  GenerateOptions g{.max_new_tokens = tokens, .temperature = 0};
  std::vector<int64_t> ids;
  double best_decode = 0, best_prefill = 0;
  const std::string p64 = prompt_of(e, 64);
  for (int round = 0; round < 3; ++round) {
    ids.clear();
    const auto r = e.generate("Once upon a time", g, [&](const GeneratedToken& t) {
      ids.push_back(t.id);
      return true;
    });
    best_decode = std::max(best_decode, r.tokens_per_s);
    const auto pre = e.generate(p64, {.max_new_tokens = 1, .temperature = 0});
    best_prefill = std::max(best_prefill, double(pre.prompt_tokens) / (pre.prefill_ms / 1000.0));
    out["prefill_tokens"] = pre.prompt_tokens;
  }
  out["decode_tokens_per_s"] = best_decode;
  out["prefill_tokens_per_s"] = best_prefill;
  out["greedy_ids"] = ids;
  out["peak_rss_bytes"] = peak_rss_bytes();
}

// --budgets: decode time against MACs per budget of the default grid, the first variant build,
// a slider move to the first token.
void measure_budgets(Json& out, const std::string& dir, int threads, int64_t tokens) {
  init_threads(threads);
  Engine e;
  e.set_variant_cache(false);
  e.load(dir);
  auto t0 = Clock::now();
  int64_t reports = 0;
  e.prepare_variants({LinearKind::Nsn}, [&](const Progress&) { return ++reports, true; });
  out["first_variant_build_s"] = seconds_since(t0);
  out["first_variant_build_progress_reports"] = reports;
  const std::string calib = "Once upon a time, there was a little girl named Lily. She loved to play outside.";
  e.calibrate_gate(calib, kNeuronBlock);
  struct Point {
    std::string label;
    Budget budget;
  };
  std::vector<Point> points = {{"dense", Budget{}}};
  for (const auto& nb : e.grid("default")) {
    if (nb.method == "svd") {
      points.push_back({"svd " + nb.label, nb.budget});
      Budget with_head = nb.budget;
      with_head.kind["head"] = LinearKind::Nsn;
      points.push_back({"svd+head " + nb.label, with_head});
    } else if (nb.method == "gate") {
      points.push_back({"gate " + nb.label, nb.budget});
    }
  }
  std::vector<double> best(points.size(), 1e30), macs(points.size(), 0);
  for (int round = 0; round < 3; ++round)
    for (size_t i = 0; i < points.size(); ++i) {
      e.set_budget(points[i].budget);
      double sum = 0;
      int64_t n = 0;
      const auto r = e.generate("Once upon a time", {.max_new_tokens = tokens, .temperature = 0},
                                [&](const GeneratedToken& t) {
                                  sum += double(t.macs);
                                  ++n;
                                  return true;
                                });
      best[i] = std::min(best[i], r.decode_ms / double(std::max<int64_t>(1, r.generated_tokens - 1)));
      macs[i] = sum / double(std::max<int64_t>(1, n));
    }
  Json rows = Json::array();
  for (size_t i = 0; i < points.size(); ++i) {
    const double tr = best[i] / best[0], mr = macs[i] / macs[0];
    rows.push_back({{"budget", points[i].label}, {"ms_per_token", best[i]}, {"time_ratio", tr},
                    {"mac_ratio", mr}, {"time_over_mac_ratio", tr / mr}});
  }
  out["decode"] = rows;
  std::vector<double> lat;
  for (int i = 0; i < 10; ++i) {
    Budget b = points[1 + size_t(i % 2) * 2].budget;  // two SVD ranks in turn
    t0 = Clock::now();
    e.set_budget(b);
    double first = 0;
    e.generate("Once upon a time", {.max_new_tokens = 1, .temperature = 0}, [&](const GeneratedToken&) {
      first = seconds_since(t0) * 1e3;
      return true;
    });
    lat.push_back(first);
  }
  std::sort(lat.begin(), lat.end());
  out["slider_to_first_token_ms"] = {{"median", lat[lat.size() / 2]}, {"max", lat.back()}};
  out["peak_rss_bytes"] = peak_rss_bytes();
}

}  // namespace

int main(int argc, char** argv) {
  const double to_main = since_process_start();
  std::string mode, dir;
  int64_t tokens = 64;
  int threads = int(std::thread::hardware_concurrency());
  WeightStorage weights = WeightStorage::Auto;
  std::string budget;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw Error(a + " needs a value");
      return argv[++i];
    };
    if (a == "--bandwidth") mode = "bandwidth";
    else if (a == "--load") mode = "load", dir = next();
    else if (a == "--decode") mode = "decode", dir = next();
    else if (a == "--budgets") mode = "budgets", dir = next();
    else if (a == "--tokens") tokens = std::stoll(next());
    else if (a == "--threads") threads = std::stoi(next());
    else if (a == "--weights") weights = parse_weight_storage(next());
    else if (a == "--budget") budget = next();
    else {
      std::cerr << "usage: nestscope_bench_real --bandwidth | --load DIR | --decode DIR | --budgets DIR [--tokens N] [--threads N] [--weights auto|f32|bf16] [--budget JSON]\n";
      return 2;
    }
  }
  try {
    Json out = {{"mode", mode}, {"threads", threads}};
    if (mode == "bandwidth") {
      out["read_gb_s"] = bandwidth_gb_s(threads);
    } else if (mode == "load") {
      measure_load(out, dir, threads, to_main, weights);
    } else if (mode == "decode") {
      measure_decode(out, dir, threads, tokens, weights, budget);
    } else if (mode == "budgets") {
      measure_budgets(out, dir, threads, tokens);
    } else {
      throw Error("nothing to measure: give --bandwidth, --load DIR or --decode DIR");
    }
    std::cout << out.dump() << "\n";
  } catch (const std::exception& e) {
    std::cerr << "nestscope_bench_real: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
