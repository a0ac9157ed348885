// nestscope-cli: train, evaluate and sample NestScope models without a GUI.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <type_traits>
#include <iostream>
#include <nlohmann/json.hpp>

#include "app/cli_frontier.h"
#include "app/cli_progress.h"
#include "core/engine/engine.h"
#include "core/gate/gate_options.h"
#include "core/error.h"
#include "core/io/atomic_file.h"

using nlohmann::json;
using namespace nestscope;

namespace {

struct Common {
  std::string model;  // empty = embedded default model
  std::string device = "auto";
  bool json_out = false;
};

void add_common(CLI::App* cmd, Common& c, bool with_model = true) {
  if (with_model) cmd->add_option("-m,--model", c.model, "checkpoint (.safetensors) or Hugging Face model folder; default: the embedded PicoGPT");
  cmd->add_option("--device", c.device, "auto, cpu or cuda")->capture_default_str();
  cmd->add_flag("--json", c.json_out, "print one JSON object on stdout");
}

// Knowledge distillation from a teacher checkpoint (train, nsn finetune, mpo finetune).
void add_distill(CLI::App* cmd, TrainOptions& o) {
  cmd->add_option("--distill", o.distill, "weight of the KL to the teacher's next-token distribution (0 = plain CE)")
      ->capture_default_str();
  cmd->add_option("--temperature", o.distill_temperature, "distillation temperature")->capture_default_str();
  cmd->add_option("--teacher", o.teacher, "teacher checkpoint or HF folder (default: the embedded PicoGPT)");
}

void open_model(Engine& engine, const Common& c) {
  engine.set_device(c.device);
  if (c.model.empty()) {
    engine.load_default();
  } else {
    engine.load(c.model);
  }
}

ProgressFn bar_fn(cli::ProgressBar& bar) {
  return [&bar](const Progress& p) { return bar.update(p); };
}

std::vector<std::string> split_list(const std::string& csv) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : csv + ",") {
    if (c == ',') {
      if (!cur.empty()) out.push_back(cur);
      cur.clear();
    } else if (c != ' ') {
      cur += c;
    }
  }
  return out;
}

// Parses a whole string as a number of type T; throws Error naming the option otherwise.
template <class T>
T parse_number(const std::string& s, const char* what) {
  try {
    size_t used = 0;
    const T v = std::is_integral_v<T> ? T(std::stoll(s, &used)) : T(std::stod(s, &used));
    if (used == s.size()) return v;
  } catch (const std::exception&) {
  }
  throw Error(std::string(what) + ": '" + s + "' is not a " + (std::is_integral_v<T> ? "whole number" : "number"));
}

json frontier_json(const FrontierRow& r, double dense_acc) {
  return {{"method", r.method},
          {"allocation", r.allocation},
          {"rank", r.rank},
          {"mac_fraction", r.mac_fraction},
          {"linear_macs", r.linear_macs},
          {"model_macs", r.model_macs},
          {"parameters", r.parameters},
          {"token_accuracy", r.eval.token_accuracy},
          {"perplexity", r.eval.perplexity},
          {"loss", r.eval.loss},
          {"top1_agreement", r.eval.top1_agreement},
          {"kl", r.eval.kl},
          {"ms_per_token", r.ms_per_token},
          {"dense_token_accuracy", dense_acc},
          {"accuracy_drop_pp", 100.0 * (dense_acc - r.eval.token_accuracy)}};
}

// A frontier's dense reference: the loaded model when it has no elastic layers, else `dense_model`
// (or the embedded default), scored on the same validation split.
struct DenseReference {
  double token_accuracy = 0;
  int64_t parameters = 0;
};
// Scored on the same windows as the frontier (`windows` > 0: the first that many).
DenseReference dense_reference(Engine& engine, const std::string& dense_model, const std::string& device,
                               const std::string& text, int64_t windows) {
  const auto i = engine.info();
  if (i.max_rank == 0 && i.max_bond == 0)
    return {engine.evaluate(text, true, 0.9, {}, windows).token_accuracy, i.parameters};
  Engine dense;
  dense.set_device(device);
  if (dense_model.empty()) dense.load_default(); else dense.load(dense_model);
  return {dense.evaluate(text, true, 0.9, {}, windows).token_accuracy, dense.info().parameters};
}

// The result of `nsn finetune` / `mpo finetune`: validation scores and per-bucket loss and σ.
json finetune_json(const NsnFinetuneReport& r, const std::string& out) {
  json buckets = json::array();
  for (const auto& b : r.buckets)
    buckets.push_back({{"lo", b.lo}, {"hi", b.hi}, {"samples", b.samples}, {"mean_loss", b.mean_loss},
                       {"sigma", b.sigma}});
  return {{"out", out}, {"steps", r.train.steps}, {"seconds", r.train.seconds},
          {"token_accuracy", r.train.validation.token_accuracy}, {"loss", r.train.validation.loss},
          {"perplexity", r.train.validation.perplexity}, {"buckets", buckets}};
}

// Rows as CSV (header from the first row's keys) or JSON lines, written atomically.
void write_rows(const std::string& path, const json& rows) {
  std::string text;
  const bool csv = path.size() >= 4 && path.compare(path.size() - 4, 4, ".csv") == 0;
  if (csv && !rows.empty()) {
    // Columns: every key of every row (rows of different kinds leave the others' cells empty).
    std::vector<std::string> keys;
    for (const auto& r : rows)
      for (auto it = r.begin(); it != r.end(); ++it)
        if (std::find(keys.begin(), keys.end(), it.key()) == keys.end()) keys.push_back(it.key());
    std::string header;
    for (const auto& k : keys) header += (header.empty() ? "" : ",") + k;
    text += header + "\n";
    for (const auto& r : rows) {
      std::string line;
      for (size_t i = 0; i < keys.size(); ++i) {
        if (i) line += ",";
        if (!r.contains(keys[i])) continue;
        const auto& v = r[keys[i]];
        line += v.is_string() ? v.get<std::string>() : v.dump();
      }
      text += line + "\n";
    }
  } else {
    for (const auto& r : rows) text += r.dump() + "\n";
  }
  write_file_atomic(path, text);
}

json eval_json(const EvalResult& e) {
  return {{"token_accuracy", e.token_accuracy}, {"loss", e.loss}, {"perplexity", e.perplexity},
          {"tokens", e.tokens}, {"windows", e.windows}, {"seconds", e.seconds}};
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"nestscope-cli: train, evaluate and sample elastic language models"};
  app.require_subcommand(1);
  Common common;

  // train
  auto* train = app.add_subcommand("train", "train a character-level GPT on a text file");
  std::string corpus, out;
  std::string init;
  TrainOptions topt;
  ModelConfig cfg = ModelConfig::pico_gpt();
  std::string position = "sinusoidal", activation = "relu";
  train->add_option("--corpus", corpus, "training text (UTF-8); the last 10% validates")->required();
  train->add_option("-o,--out", out, "where to write the checkpoint")->required();
  train->add_option("--init", init, "continue training this checkpoint instead of a fresh model");
  train->add_option("--steps", topt.steps)->capture_default_str();
  train->add_option("--batch", topt.batch)->capture_default_str();
  train->add_option("--lr", topt.lr)->capture_default_str();
  train->add_option("--min-lr", topt.min_lr)->capture_default_str();
  train->add_option("--warmup", topt.warmup)->capture_default_str();
  train->add_option("--weight-decay", topt.weight_decay)->capture_default_str();
  train->add_option("--grad-clip", topt.grad_clip)->capture_default_str();
  train->add_option("--seed", topt.seed)->capture_default_str();
  add_distill(train, topt);
  train->add_option("--eval-every", topt.eval_every, "validate every N steps (0 = at the end)")->capture_default_str();
  train->add_option("--eval-windows", topt.eval_windows, "windows per intermediate validation (0 = all)")
      ->capture_default_str();
  train->add_option("--threads", topt.threads, "0 = all cores")->capture_default_str();
  train->add_option("--layers", cfg.n_layers)->capture_default_str();
  train->add_option("--d-model", cfg.d_model)->capture_default_str();
  train->add_option("--heads", cfg.n_heads)->capture_default_str();
  train->add_option("--d-ff", cfg.d_ff)->capture_default_str();
  train->add_option("--context", cfg.context)->capture_default_str();
  train->add_option("--position", position, "sinusoidal or learned")->capture_default_str();
  train->add_option("--activation", activation, "relu or gelu")->capture_default_str();
  int64_t train_mpo_bond = 0;
  train->add_option("--mlp-block-active", topt.mlp_block_active,
                    "gate-aware training: per token keep only this fraction of MLP blocks (the oracle top-k)")
      ->capture_default_str();
  train->add_option("--mlp-block", topt.mlp_block, "neurons per block for --mlp-block-active")->capture_default_str();
  train->add_option("--mlp-block-sensing", topt.mlp_block_sensing,
                    "with --mlp-block-active: keep the blocks the sensing gate (PCA + MMSE, this many "
                    "measurements, prior from each batch) picks instead of the oracle's (0 = oracle)")
      ->capture_default_str();
  train->add_option("--head-active", topt.head_active,
                    "head-aware training: each sequence keeps a random fraction of the heads per layer")
      ->capture_default_str();
  train->add_flag("--head-global", topt.head_global,
                  "with --head-active: each sequence keeps the model-wide top heads by probed importance (with noise), "
                  "as the gate's --head-global keeps them");
  train->add_option("--head-noise", topt.head_noise, "log-normal noise on the importance per sequence (--head-global)")
      ->capture_default_str();
  train->add_option("--head-reprobe-every", topt.head_reprobe_every, "steps between head probes (--head-global)")
      ->capture_default_str();
  train->add_option("--mpo-bond", train_mpo_bond,
                    "train every projection as an MPO chain of this χ from random cores (0 = dense)")
      ->capture_default_str();
  add_common(train, common, /*with_model=*/false);

  // eval
  auto* eval = app.add_subcommand("eval", "token accuracy, loss and perplexity on a text");
  std::string split = "val";
  eval->add_option("--corpus", corpus, "text to score (UTF-8)")->required();
  eval->add_option("--split", split, "val = the last 10% (as in training), all = the whole text")
      ->check(CLI::IsMember({"val", "all"}))
      ->capture_default_str();
  add_common(eval, common);

  // generate
  auto* gen = app.add_subcommand("generate", "continue a prompt, streaming tokens to stdout");
  std::string prompt;
  GenerateOptions gopt;
  gen->add_option("-p,--prompt", prompt, "text to continue")->required();
  gen->add_option("-n,--tokens", gopt.max_new_tokens, "tokens to generate")->capture_default_str();
  gen->add_option("-t,--temperature", gopt.temperature, "0 = greedy")->capture_default_str();
  gen->add_option("--top-k", gopt.top_k, "0 = off")->capture_default_str();
  gen->add_option("--seed", gopt.seed)->capture_default_str();
  add_common(gen, common);

  // info
  auto* info = app.add_subcommand("info", "describe a model");
  add_common(info, common);

  // export: a Hugging Face folder (dense at a budget) or a NestScope checkpoint
  auto* exp = app.add_subcommand("export", "write the model as a Hugging Face folder (dense at a chosen budget) "
                                           "or as a NestScope checkpoint");
  add_common(exp, common);
  std::string export_hf_dir, export_checkpoint;
  int64_t export_rank = 0, export_bond = 0;
  exp->add_option("--hf", export_hf_dir, "folder to write config.json, model.safetensors and tokenizer.json to");
  exp->add_option("--checkpoint", export_checkpoint, "NestScope checkpoint (.safetensors) to write");
  exp->add_option("--rank", export_rank, "NSN rank the exported dense weights are taken at (0 = full)");
  exp->add_option("--bond", export_bond, "MPO bond dimension χ the exported weights are taken at (0 = full)");

  // frontier: every mechanism and composition in one sweep
  auto* frontier = app.add_subcommand("frontier", "accuracy against MACs and latency for a list or grid of budgets");
  cli::FrontierArgs fr;
  frontier->add_option("-m,--model", fr.model, "checkpoint (.safetensors) or Hugging Face model folder; default: the embedded PicoGPT");
  frontier->add_option("--with", fr.with, "more checkpoints swept with the same --grid (repeatable)");
  auto* fr_budgets = frontier->add_option("--budgets", fr.budgets, "JSON array of {method, label, budget}");
  auto* fr_grid = frontier->add_option("--grid", fr.grid, "built-in budget grid (default)");
  fr_budgets->excludes(fr_grid);
  frontier->add_option("--eval", fr.eval, "evaluation text (UTF-8); omitted = continuations of the full model");
  frontier->add_option("--split", fr.split, "val = the last 10% of --eval, all = all of it")
      ->check(CLI::IsMember({"val", "all"}))
      ->capture_default_str();
  frontier->add_option("--windows", fr.windows, "context windows scored per budget (0 = all)")->capture_default_str();
  frontier->add_option("--continuations", fr.continuations, "sampled sequences when there is no --eval")
      ->capture_default_str();
  frontier->add_flag("!--no-latency", fr.latency, "skip the ms/token measurement");
  frontier->add_option("-o,--out", fr.out, "results, one JSON object per line; rerunning resumes from it")
      ->capture_default_str();
  frontier->add_option("--plot", fr.plot, "write the chart (.svg or .png, via Qt Charts offscreen)");
  frontier->add_option("--title", fr.title, "chart title");
  frontier->add_option("--device", fr.device, "auto, cpu or cuda")->capture_default_str();
  frontier->add_flag("--json", fr.json_out, "print one JSON object on stdout");

  // nsn convert | finetune | frontier
  auto* nsn = app.add_subcommand("nsn", "Nested Subspace Networks: convert, fine-tune, sweep ranks");
  nsn->require_subcommand(1);
  std::string families_csv;
  int64_t max_rank = 0;
  auto* nsn_convert = nsn->add_subcommand("convert", "surgical conversion of a dense model by truncated SVD");
  nsn_convert->add_option("-o,--out", out, "where to write the NSN checkpoint")->required();
  nsn_convert->add_option("--families", families_csv,
                          "comma-separated projections to convert (attn.q,attn.k,attn.v,attn.o,mlp.up,mlp.down,head); "
                          "default: attention and MLP");
  nsn_convert->add_option("--max-rank", max_rank, "largest rank R kept (0 = full)")->capture_default_str();
  add_common(nsn_convert, common);

  auto* nsn_finetune = nsn->add_subcommand("finetune", "multi-rank fine-tuning with learned per-rank log-variances");
  NsnTrainOptions nopt;
  TrainOptions fopt;
  fopt.steps = 500;
  fopt.warmup = 20;
  fopt.lr = 3e-4;
  fopt.weight_decay = 0.0;
  nsn_finetune->add_option("--corpus", corpus, "training text; the last 10% validates")->required();
  nsn_finetune->add_option("-o,--out", out, "where to write the fine-tuned checkpoint")->required();
  nsn_finetune->add_option("--steps", fopt.steps)->capture_default_str();
  nsn_finetune->add_option("--batch", fopt.batch)->capture_default_str();
  nsn_finetune->add_option("--lr", fopt.lr)->capture_default_str();
  nsn_finetune->add_option("--warmup", fopt.warmup)->capture_default_str();
  nsn_finetune->add_option("--weight-decay", fopt.weight_decay)->capture_default_str();
  nsn_finetune->add_option("--seed", fopt.seed)->capture_default_str();
  add_distill(nsn_finetune, fopt);
  nsn_finetune->add_option("--min-rank", nopt.min_rank, "lowest rank sampled")->capture_default_str();
  nsn_finetune->add_option("--buckets", nopt.buckets, "log-variance buckets")->capture_default_str();
  nsn_finetune->add_option("--max-sample-rank", nopt.max_sample, "highest rank sampled besides the full-rank anchor (0 = R)")
      ->capture_default_str();
  nsn_finetune->add_option("--curriculum", nopt.curriculum, "fraction of steps to widen the rank range")
      ->capture_default_str();
  nsn_finetune->add_option("--max-rank", max_rank, "R when the model is dense and gets converted first (0 = full)")
      ->capture_default_str();
  add_common(nsn_finetune, common);

  auto* nsn_frontier = nsn->add_subcommand("frontier", "accuracy against linear-layer MACs over NSN ranks");
  std::string ranks_csv, fractions_csv, rows_out, dense_model;
  double mac_fraction = 0;
  bool energy = false, sensitivity = false;
  int64_t windows = 0, calibration_windows = 8;
  nsn_frontier->add_option("--corpus", corpus, "text; its last 10% is scored")->required();
  nsn_frontier->add_option("--ranks", ranks_csv, "comma-separated global ranks");
  nsn_frontier->add_option("--fractions", fractions_csv, "comma-separated fractions of dense linear MACs");
  nsn_frontier->add_option("--mac-fraction", mac_fraction, "evaluate the one budget closest to this fraction");
  nsn_frontier->add_flag("--energy", energy, "also evaluate per-layer ranks allocated by spectral energy");
  nsn_frontier->add_flag("--sensitivity", sensitivity,
                         "also evaluate per-layer ranks allocated by measured loss sensitivity");
  nsn_frontier->add_option("--calibration-windows", calibration_windows,
                           "training-split windows that measure the sensitivity")
      ->capture_default_str();
  nsn_frontier->add_option("--dense", dense_model, "dense reference model (default: the embedded PicoGPT)");
  nsn_frontier->add_option("--windows", windows, "validation windows to score (0 = all)")->capture_default_str();
  nsn_frontier->add_option("--rows", rows_out, "also write the rows to this file (.csv or .jsonl)");
  add_common(nsn_frontier, common);

  // mpo convert | frontier
  auto* mpo = app.add_subcommand("mpo", "Matrix Product Operators: convert by TT-SVD, sweep bond dimensions");
  mpo->require_subcommand(1);
  int64_t bond = 0;
  auto* mpo_convert = mpo->add_subcommand("convert", "TT-SVD conversion of a dense model into MPO chains");
  mpo_convert->add_option("-o,--out", out, "where to write the MPO checkpoint")->required();
  mpo_convert->add_option("--families", families_csv,
                          "comma-separated projections to convert (attn.q,...,mlp.down,head); default: all");
  mpo_convert->add_option("--bond", bond, "bond dimension χ kept")->required();
  add_common(mpo_convert, common);
  auto* mpo_finetune = mpo->add_subcommand("finetune", "fine-tune MPO cores (full χ, or nested-χ with --nested)");
  TrainOptions mopt;
  mopt.steps = 500;
  mopt.warmup = 20;
  mopt.lr = 1e-3;
  mopt.weight_decay = 0.0;
  NsnTrainOptions mnest;
  mnest.min_rank = 2;
  bool nested = false;
  mpo_finetune->add_option("--corpus", corpus, "training text; the last 10% validates")->required();
  mpo_finetune->add_option("-o,--out", out, "where to write the fine-tuned checkpoint")->required();
  mpo_finetune->add_option("--steps", mopt.steps)->capture_default_str();
  mpo_finetune->add_option("--batch", mopt.batch)->capture_default_str();
  mpo_finetune->add_option("--lr", mopt.lr)->capture_default_str();
  mpo_finetune->add_option("--warmup", mopt.warmup)->capture_default_str();
  mpo_finetune->add_option("--weight-decay", mopt.weight_decay)->capture_default_str();
  mpo_finetune->add_option("--seed", mopt.seed)->capture_default_str();
  add_distill(mpo_finetune, mopt);
  mpo_finetune->add_flag("--nested", nested, "each step trains the full χ and one sampled χ (learned weights)");
  mpo_finetune->add_option("--min-bond", mnest.min_rank, "lowest χ sampled with --nested")->capture_default_str();
  mpo_finetune->add_option("--buckets", mnest.buckets, "log-variance buckets with --nested")->capture_default_str();
  mpo_finetune->add_option("--max-sample-bond", mnest.max_sample, "highest χ sampled besides the anchor with --nested (0 = max)")
      ->capture_default_str();
  mpo_finetune->add_option("--curriculum", mnest.curriculum, "fraction of steps to widen the χ range")
      ->capture_default_str();
  mpo_finetune->add_option("--bond", bond, "χ when the model is dense and gets converted first")->capture_default_str();
  add_common(mpo_finetune, common);
  auto* mpo_frontier = mpo->add_subcommand("frontier", "accuracy against parameters over bond dimensions");
  std::string bonds_csv;
  mpo_frontier->add_option("--corpus", corpus, "text; its last 10% is scored")->required();
  mpo_frontier->add_option("--bonds", bonds_csv, "comma-separated bond dimensions (default 2,4,8,16,32,64)");
  mpo_frontier->add_option("--bond", bond, "evaluate this one bond dimension and print one object");
  mpo_frontier->add_option("--dense", dense_model, "dense reference model (default: the embedded PicoGPT)");
  mpo_frontier->add_option("--windows", windows, "validation windows to score (0 = all)")->capture_default_str();
  mpo_frontier->add_option("--rows", rows_out, "also write the rows to this file (.csv or .jsonl)");
  add_common(mpo_frontier, common);

  // gate frontier
  auto* gate = app.add_subcommand("gate", "the compressed-sensing gate over MLP neuron blocks");
  gate->require_subcommand(1);
  auto* gate_frontier = gate->add_subcommand("frontier", "gate policies × active fraction × measurements");
  std::string policies_csv = "sensing,oracle,static,random", actives_csv, ms_csv;
  double active_one = 0;
  GateFrontierOptions gopt_f;
  gate_frontier->add_option("--corpus", corpus, "text; its last 10% is scored, its first part calibrates 'static'")
      ->required();
  gate_frontier->add_option("--policies", policies_csv, "comma-separated: sensing, oracle, static, random")
      ->capture_default_str();
  gate_frontier->add_option("--actives", actives_csv, "comma-separated active block fractions (default 0.25,0.5,0.75)");
  gate_frontier->add_option("--active", active_one, "evaluate this one active fraction and print one object");
  gate_frontier->add_option("--measurements", ms_csv, "comma-separated m for the sensing policy (default N/16)");
  gate_frontier->add_option("--block", gopt_f.block, "neurons per aligned block")->capture_default_str();
  gate_frontier->add_option("--iters", gopt_f.iters, "block IHT iterations")->capture_default_str();
  std::string measurement = "rademacher", recovery = "iht";
  gate_frontier->add_option("--measurement", measurement, "Φ: rademacher, gaussian or pca")->capture_default_str();
  gate_frontier->add_option("--recovery", recovery, "iht (no prior) or mmse (calibration prior)")->capture_default_str();
  bool no_cluster = false;
  gate_frontier->add_flag("--no-cluster", no_cluster, "keep the checkpoint's neuron order (no co-activation blocks)");
  gate_frontier->add_option("--calibration-windows", gopt_f.calibration_windows,
                            "training windows that calibrate the static policy and the neuron order")
      ->capture_default_str();
  gate_frontier->add_option("--seed", gopt_f.seed, "Φ and random-support seed")->capture_default_str();
  std::string head_actives_csv;
  gate_frontier->add_option("--head-actives", head_actives_csv,
                            "comma-separated fractions of attention heads kept: head rows by probes, oracle, random");
  gate_frontier->add_flag("--head-global", gopt_f.head_global,
                          "head rows keep the model-wide top heads (each layer at least one), not a fixed count per layer");
  gate_frontier->add_option("--head-probes", gopt_f.head_probes, "random knockout probes (0 = 2·L·H)")
      ->capture_default_str();
  gate_frontier->add_option("--windows", windows, "validation windows to score (0 = all)")->capture_default_str();
  gate_frontier->add_option("--rows", rows_out, "also write the rows to this file (.csv or .jsonl)");
  add_common(gate_frontier, common);

  auto* gate_run = gate->add_subcommand("run", "generate with the gate on; every token carries its per-layer trace");
  std::string gate_policy = "sensing", calibration_file;
  GateOptions grun{.policy = GatePolicy::Sensing, .active = 0.5, .block = 16};
  std::string run_measurement = "pca", run_recovery = "mmse";
  bool run_no_cluster = false;
  gate_run->add_option("-p,--prompt", prompt, "text to continue; it also calibrates the gate unless --calibration")
      ->required();
  gate_run->add_option("-n,--tokens", gopt.max_new_tokens, "tokens to generate")->capture_default_str();
  gate_run->add_option("-t,--temperature", gopt.temperature, "0 = greedy")->capture_default_str();
  gate_run->add_option("--seed", gopt.seed)->capture_default_str();
  gate_run->add_option("--policy", gate_policy, "sensing, oracle, static or random")->capture_default_str();
  gate_run->add_option("--active", grun.active, "fraction of MLP blocks kept")->capture_default_str();
  gate_run->add_option("--block", grun.block, "neurons per aligned block")->capture_default_str();
  gate_run->add_option("--measurements", grun.measurements, "m (0 = N/16)")->capture_default_str();
  gate_run->add_option("--measurement", run_measurement, "Φ: rademacher, gaussian or pca")->capture_default_str();
  gate_run->add_option("--recovery", run_recovery, "iht or mmse")->capture_default_str();
  gate_run->add_flag("--no-cluster", run_no_cluster, "keep the checkpoint's neuron order");
  gate_run->add_option("--gamma", grun.gamma, "token-adaptive: m_t, k_t scale by 1 + γ·H/log V (0 = fixed)")
      ->capture_default_str();
  gate_run->add_option("--m-min", grun.m_min, "token-adaptive lower bound on m_t (0 = m/2)")->capture_default_str();
  gate_run->add_option("--m-max", grun.m_max, "token-adaptive upper bound on m_t (0 = 4·m)")->capture_default_str();
  gate_run->add_option("--hysteresis", grun.hysteresis, "relative change before m_t / k_t move")->capture_default_str();
  gate_run->add_option("--head-active", grun.head_active, "fraction of attention heads kept")
      ->capture_default_str();
  gate_run->add_flag("--head-global", grun.head_global,
                     "keep the model-wide top heads (each layer at least one), not the same count per layer");
  gate_run->add_option("--head-reprobe", grun.head_reprobe,
                       "re-probe the heads on the context when H/log V reaches this (0 = never)")
      ->capture_default_str();
  gate_run->add_option("--head-reprobe-cooldown", grun.head_reprobe_cooldown, "tokens between head re-probes")
      ->capture_default_str();
  gate_run->add_option("--head-probes", grun.head_probes, "knockout probes per head estimate (0 = 2·L·H)")
      ->capture_default_str();
  double run_mac_target = 0;
  gate_run->add_option("--mac-target", run_mac_target,
                       "one knob: fraction of the MACs per token; the gate fraction and prompt keep are chosen by "
                       "measurement (overrides --active)")
      ->capture_default_str();
  gate_run->add_option("--calibration", calibration_file, "calibrate on this text instead of the prompt");
  add_common(gate_run, common);

  CLI11_PARSE(app, argc, argv);
  cli::install_interrupt_handler();

  try {
    Engine engine;
    cli::ProgressBar bar;
    if (*train) {
      check(position == "sinusoidal" || position == "learned", "--position must be sinusoidal or learned");
      check(activation == "relu" || activation == "gelu", "--activation must be relu or gelu");
      cfg.position = position == "sinusoidal" ? PositionEncoding::Sinusoidal : PositionEncoding::Learned;
      cfg.activation = activation == "relu" ? Activation::Relu : Activation::Gelu;
      check(train_mpo_bond >= 0, "--mpo-bond must be at least 1 (or 0 for dense), got " + std::to_string(train_mpo_bond));
      // Factors stay empty: each family gets its balanced default once the corpus fixes the vocabulary.
      if (train_mpo_bond > 0)
        for (const auto& f : cfg.families()) cfg.linear[f] = LinearSpec{.kind = LinearKind::Mpo, .bond = train_mpo_bond};
      engine.set_device(common.device);
      if (!init.empty()) engine.load(init);
      const std::string text = read_text_file(corpus);
      const auto r = engine.train(text, cfg, topt, !init.empty(), bar_fn(bar));
      bar.finish();
      engine.save(out);
      const auto i = engine.info();
      json j = {{"out", out},
                {"steps", r.steps},
                {"seconds", r.seconds},
                {"tokens_per_s", r.tokens_per_s},
                {"final_train_loss", r.final_train_loss},
                {"parameters", i.parameters},
                {"validation", eval_json(r.validation)},
                {"token_accuracy", r.validation.token_accuracy},
                {"loss", r.validation.loss},
                {"perplexity", r.validation.perplexity}};
      if (common.json_out) {
        std::cout << j.dump() << "\n";
      } else {
        std::printf("trained %lld steps in %.1f s (%.0f tokens/s); validation loss %.4f, perplexity %.3f, "
                    "token accuracy %.2f%%; saved %s\n",
                    (long long)r.steps, r.seconds, r.tokens_per_s, r.validation.loss, r.validation.perplexity,
                    100 * r.validation.token_accuracy, out.c_str());
      }
    } else if (*eval) {
      open_model(engine, common);
      const std::string text = read_text_file(corpus);
      const auto r = engine.evaluate(text, split == "val", 0.9, bar_fn(bar));
      bar.finish();
      const auto i = engine.info();
      json j = eval_json(r);
      j["parameters"] = i.parameters;
      j["model"] = i.source;
      j["split"] = split;
      if (common.json_out) {
        std::cout << j.dump() << "\n";
      } else {
        std::printf("%s on %s (%s split): token accuracy %.2f%%, loss %.4f, perplexity %.3f over %lld tokens\n",
                    i.source.c_str(), corpus.c_str(), split.c_str(), 100 * r.token_accuracy, r.loss, r.perplexity,
                    (long long)r.tokens);
      }
    } else if (*gen) {
      open_model(engine, common);
      json tokens = json::array();
      auto on_token = [&](const GeneratedToken& t) {
        if (common.json_out) {
          tokens.push_back({{"id", t.id}, {"text", t.text}, {"prob", t.prob}, {"entropy", t.entropy}});
        } else {
          // The prompt is echoed once it has been accepted, so a rejected prompt prints only the error.
          if (t.index == 0) std::fwrite(prompt.data(), 1, prompt.size(), stdout);
          std::fwrite(t.text.data(), 1, t.text.size(), stdout);
          std::fflush(stdout);
        }
        return !cli::interrupted();
      };
      const auto r = engine.generate(prompt, gopt, on_token);
      if (common.json_out) {
        json j = {{"prompt", prompt},           {"text", r.text},
                  {"prompt_tokens", r.prompt_tokens}, {"generated_tokens", r.generated_tokens},
                  {"prefill_ms", r.prefill_ms}, {"decode_ms", r.decode_ms},
                  {"tokens_per_s", r.tokens_per_s}, {"stopped", r.stopped},
                  {"tokens", tokens}};
        if (r.joint.used)
          j["joint"] = {{"mac_target", engine.budget().mac_target}, {"active", r.joint.active},
                        {"prompt_keep", r.joint.prompt_keep}, {"mac_fraction", r.joint.mac_fraction},
                        {"calibration_kl", r.joint.kl},       {"calibration_agreement", r.joint.agreement},
                        {"fits", r.joint.fits}};
        std::cout << j.dump() << "\n";
      } else {
        std::printf("\n");
        std::fprintf(stderr, "[%lld tokens, %.1f tokens/s]\n", (long long)r.generated_tokens, r.tokens_per_s);
      }
    } else if (*nsn_convert) {
      open_model(engine, common);
      engine.convert_nsn(split_list(families_csv), max_rank, bar_fn(bar));
      bar.finish();
      engine.save(out);
      const auto i = engine.info();
      json j = {{"out", out}, {"parameters", i.parameters}, {"max_rank", i.max_rank},
                {"linear_macs", i.linear_macs}, {"dense_linear_macs", i.dense_linear_macs}};
      std::cout << (common.json_out ? j.dump() : j.dump(2)) << "\n";
    } else if (*nsn_finetune) {
      open_model(engine, common);
      if (engine.info().max_rank == 0) engine.convert_nsn({}, max_rank, bar_fn(bar));
      const std::string text = read_text_file(corpus);
      const auto r = engine.finetune_nsn(text, fopt, nopt, bar_fn(bar));
      bar.finish();
      engine.save(out);
      const json j = finetune_json(r, out);
      std::cout << (common.json_out ? j.dump() : j.dump(2)) << "\n";
    } else if (*nsn_frontier) {
      open_model(engine, common);
      const std::string text = read_text_file(corpus);
      NsnFrontierOptions fo;
      for (const auto& r : split_list(ranks_csv)) fo.ranks.push_back(parse_number<int64_t>(r, "--ranks"));
      for (const auto& f : split_list(fractions_csv)) fo.mac_fractions.push_back(parse_number<double>(f, "--fractions"));
      if (mac_fraction > 0) fo.mac_fractions = {mac_fraction};
      if (fo.ranks.empty() && fo.mac_fractions.empty()) fo.mac_fractions = {0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0};
      fo.energy_allocation = energy;
      fo.sensitivity_allocation = sensitivity;
      fo.calibration_windows = calibration_windows;
      fo.max_windows = windows;
      const auto rows = engine.nsn_frontier(text, true, fo, bar_fn(bar));
      bar.finish();
      const double dense_acc = dense_reference(engine, dense_model, common.device, text, windows).token_accuracy;
      json arr = json::array();
      for (const auto& r : rows) arr.push_back(frontier_json(r, dense_acc));
      if (!rows_out.empty()) write_rows(rows_out, arr);
      if (mac_fraction > 0) {
        std::cout << (common.json_out ? arr[0].dump() : arr[0].dump(2)) << "\n";
      } else {
        json j = {{"dense_token_accuracy", dense_acc}, {"rows", arr}};
        std::cout << (common.json_out ? j.dump() : j.dump(2)) << "\n";
      }
    } else if (*mpo_convert) {
      open_model(engine, common);
      engine.convert_mpo(split_list(families_csv), bond, bar_fn(bar));
      bar.finish();
      engine.save(out);
      const auto i = engine.info();
      json j = {{"out", out}, {"parameters", i.parameters}, {"bond", i.max_bond},
                {"linear_macs", i.linear_macs}, {"dense_linear_macs", i.dense_linear_macs}};
      std::cout << (common.json_out ? j.dump() : j.dump(2)) << "\n";
    } else if (*mpo_finetune) {
      open_model(engine, common);
      if (engine.info().max_bond == 0) engine.convert_mpo({}, bond > 0 ? bond : 32, bar_fn(bar));
      const std::string text = read_text_file(corpus);
      const auto r = engine.finetune_mpo(text, mopt, nested ? std::optional<NsnTrainOptions>(mnest) : std::nullopt,
                                         bar_fn(bar));
      bar.finish();
      engine.save(out);
      json j = finetune_json(r, out);
      j["bond"] = engine.info().max_bond;
      j["parameters"] = engine.info().parameters;
      std::cout << (common.json_out ? j.dump() : j.dump(2)) << "\n";
    } else if (*mpo_frontier) {
      open_model(engine, common);
      const std::string text = read_text_file(corpus);
      MpoFrontierOptions mo;
      for (const auto& b : split_list(bonds_csv)) mo.bonds.push_back(parse_number<int64_t>(b, "--bonds"));
      if (bond > 0) mo.bonds = {bond};
      if (mo.bonds.empty()) mo.bonds = {2, 4, 8, 16, 32, 64};
      mo.max_windows = windows;
      const auto rows = engine.mpo_frontier(text, true, mo, bar_fn(bar));
      bar.finish();
      const DenseReference ref = dense_reference(engine, dense_model, common.device, text, windows);
      json arr = json::array();
      for (const auto& r : rows) {
        json j = frontier_json(r, ref.token_accuracy);
        j["bond"] = r.bond;
        j["compression_ratio"] = double(ref.parameters) / double(r.parameters);
        j["accuracy_vs_dense"] = r.eval.token_accuracy / ref.token_accuracy;
        arr.push_back(j);
      }
      if (!rows_out.empty()) write_rows(rows_out, arr);
      if (bond > 0) {
        std::cout << (common.json_out ? arr[0].dump() : arr[0].dump(2)) << "\n";
      } else {
        json j = {{"dense_token_accuracy", ref.token_accuracy}, {"dense_parameters", ref.parameters}, {"rows", arr}};
        std::cout << (common.json_out ? j.dump() : j.dump(2)) << "\n";
      }
    } else if (*gate_run) {
      open_model(engine, common);
      grun.policy = parse_gate_policy(gate_policy.c_str());
      grun.measurement = parse_measurement(run_measurement.c_str());
      grun.recovery = parse_recovery(run_recovery.c_str());
      grun.clustered = !run_no_cluster;
      // Task-conditioned: the prompt (or --calibration) sets the prior, order and static blocks.
      engine.calibrate_gate(calibration_file.empty() ? prompt : read_text_file(calibration_file), grun.block, grun.seed);
      Budget b = engine.budget();
      b.gate = grun;
      b.mac_target = run_mac_target;
      engine.set_budget(b);
      json tokens = json::array();
      const auto r = engine.generate(prompt, gopt, [&](const GeneratedToken& t) {
        json layers = json::array();
        for (const auto& l : t.gate)
          layers.push_back({{"blocks", l.blocks}, {"measurements", l.measurements}, {"macs", l.macs}});
        tokens.push_back({{"id", t.id}, {"text", t.text}, {"prob", t.prob}, {"entropy", t.entropy}, {"macs", t.macs},
                          {"layers", layers}, {"heads", t.heads}, {"heads_reprobed", t.heads_reprobed},
                          {"probe_macs", t.probe_macs}});
        if (!common.json_out) {
          std::fwrite(t.text.data(), 1, t.text.size(), stdout);
          std::fflush(stdout);
        }
        return !cli::interrupted();
      });
      if (common.json_out) {
        json j = {{"prompt", prompt},
                  {"text", r.text},
                  {"policy", gate_policy_name(grun.policy)},
                  {"active", grun.active},
                  {"block", grun.block},
                  {"measurement", measurement_name(grun.measurement)},
                  {"recovery", recovery_name(grun.recovery)},
                  {"clustered", grun.clustered},
                  {"head_active", grun.head_active},
                  {"head_global", grun.head_global},
                  {"head_reprobe", grun.head_reprobe},
                  {"generated_tokens", r.generated_tokens},
                  {"tokens_per_s", r.tokens_per_s},
                  {"tokens", tokens}};
        if (r.joint.used)
          j["joint"] = {{"mac_target", engine.budget().mac_target}, {"active", r.joint.active},
                        {"prompt_keep", r.joint.prompt_keep}, {"mac_fraction", r.joint.mac_fraction},
                        {"calibration_kl", r.joint.kl},       {"calibration_agreement", r.joint.agreement},
                        {"fits", r.joint.fits}};
        std::cout << j.dump() << "\n";
      } else {
        std::printf("\n");
      }
    } else if (*gate_frontier) {
      open_model(engine, common);
      const std::string text = read_text_file(corpus);
      gopt_f.policies.clear();
      for (const auto& p : split_list(policies_csv)) gopt_f.policies.push_back(parse_gate_policy(p.c_str()));
      gopt_f.actives.clear();
      for (const auto& a : split_list(actives_csv)) gopt_f.actives.push_back(parse_number<double>(a, "--actives"));
      if (active_one > 0) gopt_f.actives = {active_one};
      if (gopt_f.actives.empty()) gopt_f.actives = {0.25, 0.5, 0.75};
      gopt_f.measurements.clear();
      for (const auto& v : split_list(ms_csv)) gopt_f.measurements.push_back(parse_number<int64_t>(v, "--measurements"));
      if (gopt_f.measurements.empty()) gopt_f.measurements = {0};
      gopt_f.max_windows = windows;
      gopt_f.clustered = !no_cluster;
      for (const auto& v : split_list(head_actives_csv)) gopt_f.head_actives.push_back(parse_number<double>(v, "--head-actives"));
      gopt_f.measurement = parse_measurement(measurement.c_str());
      gopt_f.recovery = parse_recovery(recovery.c_str());
      const auto rows = engine.gate_frontier(text, true, gopt_f, bar_fn(bar));
      bar.finish();
      const double dense_acc = rows.at(0).eval.token_accuracy;  // the ungated row
      const int64_t width = engine.info().config.d_ff;
      json arr = json::array();
      for (const auto& r : rows) {
        const int64_t N = width;
        const double k = double(r.active_blocks), n = double(r.blocks);
        if (!r.head_policy.empty()) {
          arr.push_back({{"policy", "heads-" + r.head_policy},
                         {"head_active_fraction", r.gate.head_active},
                         {"head_global", r.gate.head_global},
                         {"token_accuracy", r.eval.token_accuracy},
                         {"perplexity", r.eval.perplexity},
                         {"loss", r.eval.loss},
                         {"top1_agreement", r.eval.top1_agreement},
                         {"kl", r.eval.kl},
                         {"head_support_f1", r.head_f1},
                         {"attn_mac_fraction", r.attn_mac_fraction},
                         {"ms_per_token", r.ms_per_token},
                         {"dense_token_accuracy", dense_acc},
                         {"accuracy_drop_pp", 100.0 * (dense_acc - r.eval.token_accuracy)}});
          continue;
        }
        arr.push_back({{"policy", gate_policy_name(r.gate.policy)},
                       {"active_fraction", k / n},
                       {"active_blocks", r.active_blocks},
                       {"blocks", r.blocks},
                       {"block", r.gate.block},
                       {"measurements", r.gate.measurements},
                       {"m_over_k_log", r.gate.measurements > 0 && k < n
                                            ? double(r.gate.measurements) / (k * double(r.gate.block) * std::log(n / k))
                                            : 0.0},
                       {"measurement_fraction", double(r.gate.measurements) / double(N)},
                       {"iters", r.gate.iters},
                       {"clustered", r.gate.clustered},
                       {"measurement", r.gate.policy == GatePolicy::Sensing ? measurement_name(r.gate.measurement) : ""},
                       {"recovery", r.gate.policy == GatePolicy::Sensing ? recovery_name(r.gate.recovery) : ""},
                       {"token_accuracy", r.eval.token_accuracy},
                       {"perplexity", r.eval.perplexity},
                       {"loss", r.eval.loss},
                       {"top1_agreement", r.eval.top1_agreement},
                       {"kl", r.eval.kl},
                       {"support_f1", r.support_f1},
                       {"mlp_mac_fraction", r.mlp_mac_fraction},
                       {"overhead_fraction", r.overhead_fraction},
                       {"ms_per_token", r.ms_per_token},
                       {"dense_token_accuracy", dense_acc},
                       {"accuracy_drop_pp", 100.0 * (dense_acc - r.eval.token_accuracy)}});
      }
      if (!rows_out.empty()) write_rows(rows_out, arr);
      if (active_one > 0) {
        // The sensing row (the first one after the ungated row when listed), the rest alongside.
        json one = arr.size() > 1 ? arr[1] : arr[0];
        for (const auto& r : arr)
          if (r["policy"] == "sensing") { one = r; break; }
        one["rows"] = arr;
        std::cout << (common.json_out ? one.dump() : one.dump(2)) << "\n";
      } else {
        json j = {{"dense_token_accuracy", dense_acc}, {"rows", arr}};
        std::cout << (common.json_out ? j.dump() : j.dump(2)) << "\n";
      }
    } else if (*frontier) {
      return cli::run_frontier(fr);
    } else if (*exp) {
      check(!export_hf_dir.empty() || !export_checkpoint.empty(), "export: give --hf FOLDER and/or --checkpoint FILE");
      open_model(engine, common);
      Budget b;
      b.rank = export_rank;
      b.bond = export_bond;
      engine.set_budget(b);
      json j = {{"model", engine.info().source}, {"rank", export_rank}, {"bond", export_bond}};
      if (!export_hf_dir.empty()) j["hf"] = {{"folder", export_hf_dir}, {"model_type", engine.export_hf(export_hf_dir)}};
      if (!export_checkpoint.empty()) {
        engine.save(export_checkpoint);
        j["checkpoint"] = export_checkpoint;
      }
      std::cout << (common.json_out ? j.dump() : j.dump(2)) << "\n";
    } else if (*info) {
      open_model(engine, common);
      const auto i = engine.info();
      json j = {{"model", i.source},
                {"parameters", i.parameters},
                {"macs_per_token", i.macs_per_token},
                {"max_rank", i.max_rank},
                {"max_bond", i.max_bond},
                {"device", i.device},
                {"cuda_kernels", Engine::cuda_kernels()},
                {"tokenizer", i.tokenizer_kind},
                {"config", json::parse(i.config.to_json())},
                {"training", json::parse(i.training_json, nullptr, false)}};
      if (common.json_out) {
        std::cout << j.dump() << "\n";
      } else {
        std::cout << j.dump(2) << "\n";
      }
    }
  } catch (const Cancelled& e) {
    std::fprintf(stderr, "\ncancelled; nothing was saved\n");
    return 130;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "\nerror: %s\n", e.what());
    return 1;
  }
  return 0;
}
