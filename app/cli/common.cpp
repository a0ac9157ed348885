// Helpers every nestscope-cli command shares.
#include <algorithm>
#include <cstdio>
#include <iostream>

#include "app/cli/command.h"

#include "core/train/data_parallel.h"
#include "core/defaults.h"
#include "core/io/atomic_file.h"

namespace nestscope::cli {

namespace {
int64_t failed_rows = 0;  // reported by report_failed_rows; the command then exits with 1
}  // namespace

void report_failed_rows(const std::vector<SweepRow>& rows) {
  for (const auto& r : rows)
    if (!r.error.empty()) {
      std::fprintf(stderr, "budget '%s %s' failed: %s\n", r.method.c_str(), r.label.c_str(), r.error.c_str());
      ++failed_rows;
    }
}

int Registry::run_parsed(Engine& engine, ProgressBar& bar) const {
  for (const auto& [command, run] : commands_)
    if (command->parsed()) {
      const int rc = run(engine, bar);
      return rc == 0 && failed_rows > 0 ? 1 : rc;
    }
  throw Error("no command given (see --help)");
}

void add_common(CLI::App* cmd, Common& c, bool with_model) {
  if (with_model)
    cmd->add_option("-m,--model", c.model,
                    "checkpoint (.safetensors) or Hugging Face model folder; default: the embedded PicoGPT");
  if (with_model)
    cmd->add_option("--weights", c.weights,
                    "weights in memory: f32, bf16 (half the bytes per decode step), or auto (bf16 for a bf16 folder)")
        ->capture_default_str();
  cmd->add_option("--device", c.device, "auto, cpu or cuda")->capture_default_str();
  cmd->add_flag("--json", c.json_out, "print one JSON object on stdout");
}

void add_training_options(CLI::App* cmd, TrainOptions& o) {
  cmd->add_option("--steps", o.steps)->capture_default_str();
  cmd->add_option("--batch", o.batch)->capture_default_str();
  cmd->add_option("--seq-len", o.context, "tokens per training sequence (0 = the model's context)")->capture_default_str();
  cmd->add_option("--lr", o.lr)->capture_default_str();
  cmd->add_option("--warmup", o.warmup)->capture_default_str();
  cmd->add_option("--weight-decay", o.weight_decay)->capture_default_str();
  cmd->add_option("--seed", o.seed)->capture_default_str();
  cmd->add_option("--distill", o.distill, "weight of the KL to the teacher's next-token distribution (0 = plain CE)")
      ->capture_default_str();
  cmd->add_option("--temperature", o.distill_temperature, "distillation temperature")->capture_default_str();
  cmd->add_flag("--projections-only", o.projections_only,
                "train the NSN / MPO projections only (embeddings, norms and dense projections stay): the result is a variant of the model");
  cmd->add_option("--teacher", o.teacher, "teacher checkpoint or HF folder (default: the embedded PicoGPT)");
}

void open_model(Engine& engine, const Common& c) {
  engine.set_device(c.device);
  if (c.model.empty()) {
    engine.load_default(parse_weight_storage(c.weights));
  } else {
    engine.load(c.model, parse_weight_storage(c.weights));
  }
}

ProgressFn bar_fn(ProgressBar& bar) {
  return [&bar](const Progress& p) { return bar.update(p); };
}

bool join_data_parallel(TrainOptions& o, bool cuda) {
  const auto config = distributed_config_from_env();
  if (!config.distributed()) return true;
  o.data_parallel = std::make_shared<DataParallel>(config, cuda);
  if (config.rank == 0)
    std::fprintf(stderr, "data-parallel: %lld ranks (%s, %s), %lld sequences each per step\n", (long long)config.world,
                 config.source.c_str(), o.data_parallel->backend().c_str(), (long long)o.batch);
  return config.rank == 0;
}

ProgressFn rank_bar_fn(ProgressBar& bar, bool root) {
  if (root) return bar_fn(bar);
  return [](const Progress&) { return !interrupted(); };
}

int print(const Json& j, bool compact) {
  std::cout << (compact ? j.dump() : j.dump(2)) << "\n";
  return 0;
}

void save_and_print(Engine& engine, ProgressBar& bar, const std::string& out, Json j, bool compact) {
  bar.finish();
  engine.save(out);
  j["out"] = out;
  print(j, compact);
}


namespace {

// A converted model's parameters, linear MACs and `limit_key` (its largest rank or χ).
Json converted_json(Engine& engine, const char* limit_key) {
  const auto i = engine.info();
  return {{"parameters", i.parameters}, {limit_key, std::string(limit_key) == "bond" ? i.max_bond : i.max_rank},
          {"linear_macs", i.linear_macs}, {"dense_linear_macs", i.dense_linear_macs}};
}

}  // namespace

int run_conversion(const MechanismArgs& a, Engine& engine, ProgressBar& bar,
                   const std::function<void(Engine&, const ProgressFn&)>& convert, const char* limit_key) {
  open_model(engine, a.common);
  convert(engine, bar_fn(bar));
  save_and_print(engine, bar, a.out, converted_json(engine, limit_key), a.common.json_out);
  return 0;
}

void add_preset_options(CLI::App* cmd, PresetArgs& a, bool with_dense) {
  cmd->add_option("--corpus", a.corpus, "text; its last 10% is scored")->required();
  if (with_dense) cmd->add_option("--dense", a.dense_model, "dense reference model (default: the embedded PicoGPT)");
  cmd->add_option("--windows", a.windows, "validation windows to score (0 = all)")->capture_default_str();
  cmd->add_option("--rows", a.rows_out, "also write the rows to this file (.csv or .jsonl)");
  cmd->add_option("--reference", a.reference,
                  "top-1 agreement and KL against this checkpoint or HF folder (e.g. the dense model a fine-tuned "
                  "variant came from); default: the swept model at its full budget");
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

Json eval_json(const EvalResult& e) {
  return {{"token_accuracy", e.token_accuracy}, {"loss", e.loss}, {"perplexity", e.perplexity},
          {"tokens", e.tokens}, {"windows", e.windows}, {"seconds", e.seconds}};
}

Json joint_json(const GenerateResult& r, double mac_target) {
  return {{"mac_target", mac_target},       {"active", r.joint.active},
          {"prompt_keep", r.joint.prompt_keep}, {"mac_fraction", r.joint.mac_fraction},
          {"calibration_kl", r.joint.kl},   {"calibration_agreement", r.joint.agreement},
          {"fits", r.joint.fits}};
}

void write_rows(const std::string& path, const Json& rows) {
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

std::vector<SweepRow> sweep_preset(Engine& engine, const std::vector<NamedBudget>& budgets, const std::string& text,
                                   int64_t windows, bool gate_details, ProgressBar& bar, int64_t calibration_windows,
                                   const std::string& reference) {
  SweepOptions o;
  o.reference_model = reference;
  o.text = text;
  o.validation_split = true;
  o.max_windows = windows;
  o.calibration_windows = calibration_windows;
  o.gate_details = gate_details;
  auto rows = engine.sweep(budgets, o, bar_fn(bar));
  bar.finish();
  report_failed_rows(rows);
  return rows;
}

Json preset_scores_json(const SweepRow& r, double dense_acc) {
  if (!r.error.empty()) return {{"error", r.error}};
  return {{"token_accuracy", r.eval.token_accuracy}, {"perplexity", r.eval.perplexity}, {"loss", r.eval.loss},
          {"top1_agreement", r.eval.top1_agreement}, {"kl", r.eval.kl}, {"ms_per_token", r.ms_per_token},
          {"dense_token_accuracy", dense_acc}, {"accuracy_drop_pp", 100.0 * (dense_acc - r.eval.token_accuracy)}};
}

Json preset_row_json(const SweepRow& r, const ModelInfo& info, double dense_acc) {
  Json j = preset_scores_json(r, dense_acc);
  j.update({{"method", r.method}, {"mac_fraction", double(r.linear_macs) / double(info.dense_linear_macs)},
            {"linear_macs", r.linear_macs}, {"model_macs", r.macs}, {"parameters", r.parameters}});
  return j;
}

DenseReference dense_reference(Engine& engine, const std::string& dense_model, const std::string& device,
                               const std::string& text, int64_t windows) {
  const auto i = engine.info();
  if (i.max_rank == 0 && i.max_bond == 0)
    return {engine.evaluate(text, true, kTrainFraction, {}, windows).token_accuracy, i.parameters};
  Engine dense;
  dense.set_device(device);
  if (dense_model.empty()) dense.load_default(); else dense.load(dense_model);
  return {dense.evaluate(text, true, kTrainFraction, {}, windows).token_accuracy, dense.info().parameters};
}

void print_preset(const Json& rows, int64_t one, const Json& extra, bool compact) {
  if (one >= 0) {
    Json j = rows.at(size_t(one));
    for (const auto& [k, v] : extra.items()) j[k] = v;
    print(j, compact);
    return;
  }
  Json j = extra;
  j["rows"] = rows;
  print(j, compact);
}

}  // namespace nestscope::cli
