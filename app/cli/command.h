// nestscope-cli's commands: each file in app/cli/ registers one command — its options, and what
// runs through the Engine when it is the one given — plus the helpers they share.
#pragma once
#include <CLI/CLI.hpp>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "app/cli_progress.h"
#include "core/engine/engine.h"
#include "core/error.h"

namespace nestscope::cli {

using Json = nlohmann::json;
// Runs a parsed command; returns the process's exit code.
using Run = std::function<int(Engine&, ProgressBar&)>;

// The commands registered so far, each a (sub)command and what runs when it was given.
class Registry {
 public:
  void add(CLI::App* command, Run run) { commands_.emplace_back(command, std::move(run)); }
  // Runs the command the command line named (exactly one was, CLI11 checked).
  int run_parsed(Engine& engine, ProgressBar& bar) const;

 private:
  std::vector<std::pair<CLI::App*, Run>> commands_;
};

// Sweep rows whose budget could not run: each is printed to stderr ("budget 'svd r=40' failed:
// ..."); the command prints the other rows as usual, then exits with status 1.
void report_failed_rows(const std::vector<SweepRow>& rows);

// One registration function per command file.
void add_train(CLI::App& app, Registry& r);
void add_eval(CLI::App& app, Registry& r);
void add_generate(CLI::App& app, Registry& r);
void add_info(CLI::App& app, Registry& r);
void add_export(CLI::App& app, Registry& r);
void add_frontier(CLI::App& app, Registry& r);
void add_nsn(CLI::App& app, Registry& r);
void add_mpo(CLI::App& app, Registry& r);
void add_gate(CLI::App& app, Registry& r);
void add_corpus(CLI::App& app, Registry& r);
void add_variants(CLI::App& app, Registry& r);

// --model, --weights, --device, --json: what every command that opens a model takes.
struct Common {
  std::string model;  // empty = the embedded default model
  std::string device = "auto";
  std::string weights = "auto";  // auto, f32 or bf16 (WeightStorage)
  bool json_out = false;
};
void add_common(CLI::App* cmd, Common& c, bool with_model = true);
// --steps, --batch, --lr, --warmup, --weight-decay, --seed and --distill, --temperature,
// --teacher: what every training command (train, nsn finetune, mpo finetune) takes.
void add_training_options(CLI::App* cmd, TrainOptions& o);
void open_model(Engine& engine, const Common& c);
ProgressFn bar_fn(ProgressBar& bar);
// Data-parallel training when the environment describes a group (torchrun's RANK, WORLD_SIZE,
// MASTER_ADDR, MASTER_PORT, or srun's SLURM_PROCID, SLURM_STEP_NUM_TASKS): joins it, so `o`
// trains as one rank of it. Returns false on every rank but 0: those draw no progress bar and
// neither save nor print (rank 0 writes the checkpoint, atomically).
bool join_data_parallel(TrainOptions& o, bool cuda);
// The bar on rank 0; elsewhere only Ctrl-C is watched.
ProgressFn rank_bar_fn(ProgressBar& bar, bool root);
// One JSON object on stdout: a line with --json, indented otherwise; returns exit code 0.
int print(const Json& j, bool compact);
// After a conversion or fine-tune: ends the bar, saves the engine's model to `out` and prints
// `j` with "out" added.
void save_and_print(Engine& engine, ProgressBar& bar, const std::string& out, Json j, bool compact);

// "a, b,c" -> {"a", "b", "c"}.
std::vector<std::string> split_list(const std::string& csv);
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
template <class T>
std::vector<T> parse_list(const std::string& csv, const char* what) {
  std::vector<T> out;
  for (const auto& s : split_list(csv)) out.push_back(parse_number<T>(s, what));
  return out;
}

Json eval_json(const EvalResult& e);
// `nsn finetune` / `mpo finetune`: validation scores and per-bucket loss and σ.
Json finetune_json(const NsnFinetuneReport& r, const std::string& out);
// GenerateResult::joint as JSON (the MAC-target knob's measured split).
Json joint_json(const GenerateResult& r, double mac_target);
// Rows as CSV (header from every row's keys) or JSON lines, written atomically.
void write_rows(const std::string& path, const Json& rows);

// The mechanism presets (`nsn frontier`, `mpo frontier`, `gate frontier`): a grid through
// Engine::sweep on the validation split of `text`, every row as JSON with the keys each preset
// has always printed.
std::vector<SweepRow> sweep_preset(Engine& engine, const std::vector<NamedBudget>& budgets, const std::string& text,
                                   int64_t windows, bool gate_details, ProgressBar& bar,
                                   int64_t calibration_windows = SweepOptions{}.calibration_windows,
                                   const std::string& reference = {});
// The scores every mechanism preset's row has: accuracy, perplexity, loss, agreement and KL with
// the full model, ms/token, and the drop from the dense reference's accuracy.
Json preset_scores_json(const SweepRow& r, double dense_acc);
// An NSN or MPO preset row: the scores, the method, linear and model MACs, parameters.
Json preset_row_json(const SweepRow& r, const ModelInfo& info, double dense_acc);
// A preset's dense reference on the same windows: the loaded model when it has no elastic layers,
// else `dense_model` (or the embedded default model).
struct DenseReference {
  double token_accuracy = 0;
  int64_t parameters = 0;
};
DenseReference dense_reference(Engine& engine, const std::string& dense_model, const std::string& device,
                               const std::string& text, int64_t windows);
// What every mechanism preset takes: the text, the dense reference, the windows, a rows file.
struct PresetArgs {
  std::string corpus, dense_model, rows_out;
  std::string reference;  // agreement / KL against this model (else the swept model at full budget)
  int64_t windows = 0;
};
// The options `nsn` and `mpo` share across convert, finetune and frontier (one is parsed).
struct MechanismArgs {
  Common common;
  PresetArgs preset;  // corpus (finetune, frontier), dense reference, windows, rows file (frontier)
  std::string out, families;
  TrainOptions train;     // finetune: the mechanism's recipe, then the options
  NsnTrainOptions nested;  // finetune: the nested objective
};
// `nsn convert` / `mpo convert`: opens the model, runs `convert` with the progress bar, saves the
// result to a.out and prints its parameters, linear MACs and `limit_key` (max_rank or bond).
int run_conversion(const MechanismArgs& a, Engine& engine, ProgressBar& bar,
                   const std::function<void(Engine&, const ProgressFn&)>& convert, const char* limit_key);
void add_preset_options(CLI::App* cmd, PresetArgs& a, bool with_dense = true);
// Prints a preset's rows: the one row asked for (`one` >= 0, with `extra` keys), or all of them.
void print_preset(const Json& rows, int64_t one, const Json& extra, bool compact);

}  // namespace nestscope::cli
