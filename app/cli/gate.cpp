// `nestscope-cli gate run | frontier`: the compressed-sensing gate over MLP blocks and heads.
#include <cmath>
#include <cstdio>

#include "app/cli/command.h"
#include "core/engine/presets.h"
#include "core/io/atomic_file.h"

namespace nestscope::cli {

namespace {

struct GateRunArgs {
  Common common;
  std::string prompt, calibration, policy = "sensing", measurement = "pca", recovery = "mmse";
  GenerateOptions generate;
  GateOptions gate = recommended_gate(0.5);
  bool no_cluster = false;
  double mac_target = 0;
};

struct GateFrontierArgs {
  Common common;
  PresetArgs preset;  // corpus, windows, rows file
  std::string policies = "sensing,oracle,static,random", actives, measurements, head_actives;
  std::string measurement = "rademacher", recovery = "iht";
  double active_one = 0;
  bool no_cluster = false;
  int64_t calibration_windows = 8;
  GateGridOptions grid;
};

int run_gate(const GateRunArgs& a, Engine& engine) {
  open_model(engine, a.common);
  GateOptions g = a.gate;
  g.policy = parse_gate_policy(a.policy.c_str());
  g.measurement = parse_measurement(a.measurement.c_str());
  g.recovery = parse_recovery(a.recovery.c_str());
  g.clustered = !a.no_cluster;
  // Task-conditioned: the prompt (or --calibration) sets the prior, order and static blocks.
  engine.calibrate_gate(a.calibration.empty() ? a.prompt : read_text_file(a.calibration), g.block, g.seed);
  Budget b = engine.budget();
  b.gate = g;
  b.mac_target = a.mac_target;
  engine.set_budget(b);
  Json tokens = Json::array();
  const auto r = engine.generate(a.prompt, a.generate, [&](const GeneratedToken& t) {
    Json layers = Json::array();
    for (const auto& l : t.gate) layers.push_back({{"blocks", l.blocks}, {"measurements", l.measurements}, {"macs", l.macs}});
    tokens.push_back({{"id", t.id}, {"text", t.text}, {"prob", t.prob}, {"entropy", t.entropy}, {"macs", t.macs},
                      {"dense_macs", t.dense_macs},
                      {"layers", layers}, {"heads", t.heads}, {"heads_reprobed", t.heads_reprobed},
                      {"probe_macs", t.probe_macs}});
    if (!a.common.json_out) {
      std::fwrite(t.text.data(), 1, t.text.size(), stdout);
      std::fflush(stdout);
    }
    return !interrupted();
  });
  if (!a.common.json_out) {
    std::printf("\n");
    return 0;
  }
  Json j = {{"prompt", a.prompt},        {"text", r.text},
            {"policy", gate_policy_name(g.policy)}, {"active", g.active},
            {"block", g.block},          {"measurement", measurement_name(g.measurement)},
            {"recovery", recovery_name(g.recovery)}, {"clustered", g.clustered},
            {"head_active", g.head_active}, {"head_global", g.head_global},
            {"head_reprobe", g.head_reprobe}, {"generated_tokens", r.generated_tokens},
            {"tokens_per_s", r.tokens_per_s}, {"tokens", tokens}};
  if (r.joint.used) j["joint"] = joint_json(r, engine.budget().mac_target);
  return print(j, true);
}

// One gate-frontier row with the keys `gate frontier` has always printed.
Json gate_row_json(const SweepRow& r, const Budget& b, int64_t width, double dense_acc) {
  const GateOptions& g = b.gate;
  Json j = preset_scores_json(r, dense_acc);
  if (g.head_active < 1) {
    const char* ranking = g.head_ranking == HeadRanking::Probed ? "sensing" : head_ranking_name(g.head_ranking);
    j.update({{"policy", std::string("heads-") + ranking}, {"head_active_fraction", g.head_active},
              {"head_global", g.head_global}, {"head_support_f1", r.head_f1}, {"attn_mac_fraction", r.attn_mac_fraction}});
    return j;
  }
  const int64_t block = gate_block(g.block, width);
  const int64_t n = width / block;
  const int64_t k = g.policy == GatePolicy::Off ? n : std::clamp<int64_t>(std::llround(g.active * double(n)), 1, n);
  const bool sensing = g.policy == GatePolicy::Sensing;
  const int64_t m = sensing && g.measurements == 0 ? default_measurements(width) : g.measurements;
  const double kd = double(k), nd = double(n);
  j.update({{"policy", gate_policy_name(g.policy)}, {"active_fraction", kd / nd}, {"active_blocks", k}, {"blocks", n},
            {"block", block}, {"measurements", m},
            {"m_over_k_log", m > 0 && k < n ? double(m) / (kd * double(block) * std::log(nd / kd)) : 0.0},
            {"measurement_fraction", double(m) / double(width)}, {"iters", g.iters}, {"clustered", g.clustered},
            {"measurement", sensing ? measurement_name(g.measurement) : ""},
            {"recovery", sensing ? recovery_name(g.recovery) : ""}, {"support_f1", r.support_f1},
            {"mlp_mac_fraction", r.mlp_mac_fraction}, {"overhead_fraction", r.overhead_fraction}});
  return j;
}

int run_frontier(const GateFrontierArgs& a, Engine& engine, ProgressBar& bar) {
  open_model(engine, a.common);
  const std::string text = read_text_file(a.preset.corpus);
  GateGridOptions g = a.grid;
  g.policies.clear();
  for (const auto& p : split_list(a.policies)) g.policies.push_back(parse_gate_policy(p.c_str()));
  g.actives = parse_list<double>(a.actives, "--actives");
  if (a.active_one > 0) g.actives = {a.active_one};
  if (g.actives.empty()) g.actives = default_gate_actives();
  g.measurements = parse_list<int64_t>(a.measurements, "--measurements");
  if (g.measurements.empty()) g.measurements = {0};
  g.clustered = !a.no_cluster;
  g.head_actives = parse_list<double>(a.head_actives, "--head-actives");
  g.measurement = parse_measurement(a.measurement.c_str());
  g.recovery = parse_recovery(a.recovery.c_str());
  const auto budgets = engine.gate_grid(g);
  const auto rows = sweep_preset(engine, budgets, text, a.preset.windows, true, bar, a.calibration_windows, a.preset.reference);
  const double dense_acc = rows.at(0).eval.token_accuracy;  // the ungated row
  const int64_t width = engine.info().config.d_ff;
  Json arr = Json::array();
  for (size_t i = 0; i < rows.size(); ++i) arr.push_back(gate_row_json(rows[i], budgets[i].budget, width, dense_acc));
  if (!a.preset.rows_out.empty()) write_rows(a.preset.rows_out, arr);
  if (a.active_one <= 0) {
    print_preset(arr, -1, {{"dense_token_accuracy", dense_acc}}, a.common.json_out);
    return 0;
  }
  // The sensing row (the first one after the ungated row when listed), the rest alongside.
  int64_t one = arr.size() > 1 ? 1 : 0;
  for (size_t i = 0; i < arr.size(); ++i)
    if (arr[i]["policy"] == "sensing") {
      one = int64_t(i);
      break;
    }
  print_preset(arr, one, {{"rows", arr}}, a.common.json_out);
  return 0;
}

void add_run(CLI::App* gate, Registry& r) {
  auto a = std::make_shared<GateRunArgs>();
  GateOptions& g = a->gate;
  auto* run = gate->add_subcommand("run", "generate with the gate on; every token carries its per-layer trace");
  run->add_option("-p,--prompt", a->prompt, "text to continue; it also calibrates the gate unless --calibration")
      ->required();
  run->add_option("-n,--tokens", a->generate.max_new_tokens, "tokens to generate")->capture_default_str();
  run->add_option("-t,--temperature", a->generate.temperature, "0 = greedy")->capture_default_str();
  run->add_option("--seed", a->generate.seed)->capture_default_str();
  run->add_option("--policy", a->policy, "sensing, oracle, static or random")->capture_default_str();
  run->add_option("--active", g.active, "fraction of MLP blocks kept")->capture_default_str();
  run->add_option("--block", g.block, "neurons per aligned block")->capture_default_str();
  run->add_option("--measurements", g.measurements, "m (0 = N/16)")->capture_default_str();
  run->add_option("--measurement", a->measurement, "Φ: rademacher, gaussian or pca")->capture_default_str();
  run->add_option("--recovery", a->recovery, "iht or mmse")->capture_default_str();
  run->add_flag("--no-cluster", a->no_cluster, "keep the checkpoint's neuron order");
  run->add_option("--gamma", g.gamma, "token-adaptive: m_t, k_t scale by 1 + γ·H/log V (0 = fixed)")->capture_default_str();
  run->add_option("--m-min", g.m_min, "token-adaptive lower bound on m_t (0 = m/2)")->capture_default_str();
  run->add_option("--m-max", g.m_max, "token-adaptive upper bound on m_t (0 = 4·m)")->capture_default_str();
  run->add_option("--hysteresis", g.hysteresis, "relative change before m_t / k_t move")->capture_default_str();
  run->add_option("--head-active", g.head_active, "fraction of attention heads kept")->capture_default_str();
  run->add_flag("--head-global", g.head_global,
                "keep the model-wide top heads (each layer at least one), not the same count per layer");
  run->add_option("--head-reprobe", g.head_reprobe, "re-probe the heads on the context when H/log V reaches this (0 = never)")
      ->capture_default_str();
  run->add_option("--head-reprobe-cooldown", g.head_reprobe_cooldown, "tokens between head re-probes")
      ->capture_default_str();
  run->add_option("--head-probes", g.head_probes, "knockout probes per head estimate (0 = 2·L·H)")->capture_default_str();
  run->add_option("--mac-target", a->mac_target,
                  "one knob: fraction of the MACs per token; the gate fraction and prompt keep are chosen by "
                  "measurement (overrides --active)")
      ->capture_default_str();
  run->add_option("--calibration", a->calibration, "calibrate on this text instead of the prompt");
  add_common(run, a->common);
  r.add(run, [a](Engine& e, ProgressBar&) { return run_gate(*a, e); });
}

void add_frontier(CLI::App* gate, Registry& r) {
  auto a = std::make_shared<GateFrontierArgs>();
  GateGridOptions& g = a->grid;
  auto* f = gate->add_subcommand("frontier", "gate policies × active fraction × measurements");
  add_preset_options(f, a->preset, /*with_dense=*/false);  // the ungated row is the reference
  f->add_option("--policies", a->policies, "comma-separated: sensing, oracle, static, random")->capture_default_str();
  f->add_option("--actives", a->actives, "comma-separated active block fractions (default 0.25,0.5,0.75)");
  f->add_option("--active", a->active_one, "evaluate this one active fraction and print one object");
  f->add_option("--measurements", a->measurements, "comma-separated m for the sensing policy (default N/16)");
  f->add_option("--block", g.block, "neurons per aligned block")->capture_default_str();
  f->add_option("--iters", g.iters, "block IHT iterations")->capture_default_str();
  f->add_option("--measurement", a->measurement, "Φ: rademacher, gaussian or pca")->capture_default_str();
  f->add_option("--recovery", a->recovery, "iht (no prior) or mmse (calibration prior)")->capture_default_str();
  f->add_flag("--no-cluster", a->no_cluster, "keep the checkpoint's neuron order (no co-activation blocks)");
  f->add_option("--calibration-windows", a->calibration_windows,
                "training windows that calibrate the static policy and the neuron order")
      ->capture_default_str();
  f->add_option("--seed", g.seed, "Φ and random-support seed")->capture_default_str();
  f->add_option("--head-actives", a->head_actives,
                "comma-separated fractions of attention heads kept: head rows by probes, oracle, random");
  f->add_flag("--head-global", g.head_global,
              "head rows keep the model-wide top heads (each layer at least one), not a fixed count per layer");
  f->add_option("--head-probes", g.head_probes, "random knockout probes (0 = 2·L·H)")->capture_default_str();
  add_common(f, a->common);
  r.add(f, [a](Engine& e, ProgressBar& bar) { return run_frontier(*a, e, bar); });
}

}  // namespace

void add_gate(CLI::App& app, Registry& r) {
  auto* gate = app.add_subcommand("gate", "the compressed-sensing gate over MLP neuron blocks");
  gate->require_subcommand(1);
  add_frontier(gate, r);
  add_run(gate, r);
}

}  // namespace nestscope::cli
