// nestscope_bench_mpo: time of PicoGPT's MPO layers by direct contraction vs rebuilding W vs the
// dense layer, at several bond dimensions χ, batch-1 decode and a 64-token prefill (JSON); and
// forward(), which picks the path with fewer MACs for the number of rows.
// Then, on the default model (or --model) converted at χ = 32: the cost of a live χ change and
// each layer's relative reconstruction error by live truncation vs a fresh TT-SVD at that χ.
// usage: nestscope_bench_mpo [--threads N] [--iters N] [--model FILE]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>

#include "bench/bench_util.h"
#include "core/engine/engine.h"
#include "core/io/checkpoint.h"
#include "core/io/default_model.h"
#include "core/model/convert.h"
#include "core/layers/dense_linear.h"
#include "core/layers/mpo_linear.h"

using namespace nestscope;

using bench::time_us;

int main(int argc, char** argv) {
  int threads = 0, iters = 2000;
  std::string model_path;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--model")) model_path = argv[i + 1];
    if (!std::strcmp(argv[i], "--threads")) threads = std::stoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--iters")) iters = std::stoi(argv[i + 1]);
  }
  init_threads(threads);
  torch::NoGradGuard no_grad;
  struct Shape {
    const char* name;
    int64_t in, out;
  };
  // PicoGPT's published scheme: the balanced default factors (8·16, 8·8·8 / 4·4·8, 5·13).
  const Shape shapes[] = {{"attn (128x128)", 128, 128}, {"mlp.up (512x128)", 128, 512},
                          {"mlp.down (128x512)", 512, 128}, {"head (65x128)", 128, 65}};
  nlohmann::json rows = nlohmann::json::array();
  for (const auto& [name, in, out] : shapes) {
    torch::manual_seed(0);
    DenseLinear dense(in, out, true, 0.02);
    const int64_t sites = default_mpo_sites(in, out);
    MpoLinear mpo(in, out, balanced_factors(out, sites), balanced_factors(in, sites), 32, true, 0.02);
    mpo.load_from_dense(dense.to_dense(), dense.bias());
    for (int64_t tokens : {int64_t(1), int64_t(64)}) {
      auto x = torch::randn({tokens, in});
      const int n = int(std::clamp<int64_t>(int64_t(iters) * 128 * 128 / (in * out * tokens), 20, iters));
      const double dense_us = time_us([&] { return dense.forward(x); }, n);
      std::vector<float> y(size_t(tokens * out));
      const float* xp = x.data_ptr<float>();
      for (int64_t chi : {4, 8, 16, 32}) {
        mpo.set_bond(chi);
        const double direct_us = time_us([&] { return mpo.forward_direct(x); }, n);
        const double chosen_us = time_us([&] { return mpo.forward(x); }, n);  // the cheaper path by MACs
        const double rebuild_us = time_us([&] { return mpo.forward_rebuilt(x); }, n);
        // Raw buffers, as the decode step calls the layers: arithmetic only, timed in alternation.
        const auto [dense_raw_us, direct_raw_us] =
            bench::time_pair_us([&] { dense.forward_raw(tokens, xp, y.data()); },
                                [&] { mpo.forward_raw(tokens, xp, y.data()); }, n);
        rows.push_back({{"layer", name},
                        {"tokens", tokens},
                        {"bond", chi},
                        {"params", mpo.params()},
                        {"dense_us", dense_us},
                        {"direct_us", direct_us},
                        {"rebuild_us", rebuild_us},
                        {"direct_ratio", direct_us / dense_us},
                        {"forward_us", chosen_us},
                        {"forward_ratio", chosen_us / dense_us},
                        {"dense_raw_us", dense_raw_us},
                        {"direct_raw_us", direct_raw_us},
                        {"direct_raw_ratio", direct_raw_us / dense_raw_us},
                        {"rebuild_ratio", rebuild_us / dense_us},
                        {"mac_ratio", double(mpo.macs()) / double(in * out)}});
      }
    }
  }
  nlohmann::json outj = {{"threads", at::get_num_threads()}, {"rows", rows}};

  try {
    LoadedModel lm = model_path.empty() ? load_checkpoint_bytes(default_model_bytes(), "<embedded default model>")
                                        : load_checkpoint(model_path);
    const std::vector<int64_t> bonds = {1, 2, 4, 8, 16, 32};
    const auto t0 = std::chrono::steady_clock::now();
    Gpt mpo = convert_model(lm.model, mpo_config(lm.config, {}, 32));
    const double convert_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    // A slider drag: every χ change, in a cycle, timed one at a time.
    std::vector<double> change_us;
    for (int rep = 0; rep < 50; ++rep)
      for (int64_t b : bonds) {
        const auto c0 = std::chrono::steady_clock::now();
        mpo->apply_budget(Budget{.bond = b});
        change_us.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - c0).count());
      }
    std::sort(change_us.begin(), change_us.end());
    nlohmann::json layers = nlohmann::json::array();
    const auto dense_layers = lm.model->projections();
    const auto mpo_layers = mpo->projections();
    for (size_t i = 0; i < mpo_layers.size(); ++i) {
      auto* chain = dynamic_cast<MpoLinear*>(mpo_layers[i].second.get());
      if (!chain) continue;
      const auto w = dense_layers[i].second->to_dense().detach();
      nlohmann::json errs = nlohmann::json::array();
      for (int64_t b : bonds) {
        chain->set_bond(b);
        MpoLinear fresh(chain->in_features(), chain->out_features(), chain->out_factors(), chain->in_factors(), b,
                        false, 0.02);
        fresh.load_from_dense(w, {});
        const double live = ((chain->to_dense() - w).norm() / w.norm()).item<double>();
        const double best = ((fresh.to_dense() - w).norm() / w.norm()).item<double>();
        errs.push_back({{"bond", b}, {"params", chain->params()}, {"live_error", live}, {"fresh_tt_svd_error", best},
                        {"live_over_fresh", live / best}});
      }
      layers.push_back({{"layer", mpo_layers[i].first}, {"errors", errs}});
    }
    outj["default_model"] = {{"model", lm.source},
                             {"convert_ms", convert_ms},
                             {"bond_change_us_median", change_us[change_us.size() / 2]},
                             {"bond_change_us_max", change_us.back()},
                             {"layers", layers}};
  } catch (const std::exception& e) {
    outj["default_model"] = {{"error", e.what()}};
  }
  std::printf("%s\n", outj.dump(2).c_str());
  return 0;
}
