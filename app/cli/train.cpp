// `nestscope-cli train`: a character-level GPT from a text file, or more steps of a checkpoint.
#include <cstdio>

#include "app/cli/command.h"
#include "core/io/atomic_file.h"

namespace nestscope::cli {

namespace {

struct TrainArgs {
  Common common;
  std::string corpus, out, init;
  TrainOptions train;
  ModelConfig config = ModelConfig::pico_gpt();
  std::string position = "sinusoidal", activation = "relu";
  int64_t mpo_bond = 0;
};

void add_model_options(CLI::App* cmd, TrainArgs& a) {
  cmd->add_option("--layers", a.config.n_layers)->capture_default_str();
  cmd->add_option("--d-model", a.config.d_model)->capture_default_str();
  cmd->add_option("--heads", a.config.n_heads)->capture_default_str();
  cmd->add_option("--d-ff", a.config.d_ff)->capture_default_str();
  cmd->add_option("--context", a.config.context)->capture_default_str();
  cmd->add_option("--position", a.position, "sinusoidal or learned")->capture_default_str();
  cmd->add_option("--activation", a.activation, "relu or gelu")->capture_default_str();
  cmd->add_option("--mpo-bond", a.mpo_bond, "train every projection as an MPO chain of this χ from random cores (0 = dense)")
      ->capture_default_str();
}

void add_gate_aware_options(CLI::App* cmd, TrainOptions& t) {
  cmd->add_option("--mlp-block-active", t.mlp_block_active,
                  "gate-aware training: per token keep only this fraction of MLP blocks (the oracle top-k)")
      ->capture_default_str();
  cmd->add_option("--mlp-block", t.mlp_block, "neurons per block for --mlp-block-active")->capture_default_str();
  cmd->add_option("--mlp-block-sensing", t.mlp_block_sensing,
                  "with --mlp-block-active: keep the blocks the sensing gate (PCA + MMSE, this many "
                  "measurements, prior from each batch) picks instead of the oracle's (0 = oracle)")
      ->capture_default_str();
  cmd->add_option("--head-active", t.head_active,
                  "head-aware training: each sequence keeps a random fraction of the heads per layer")
      ->capture_default_str();
  cmd->add_flag("--head-global", t.head_global,
                "with --head-active: each sequence keeps the model-wide top heads by probed importance (with noise), "
                "as the gate's --head-global keeps them");
  cmd->add_option("--head-noise", t.head_noise, "log-normal noise on the importance per sequence (--head-global)")
      ->capture_default_str();
  cmd->add_option("--head-reprobe-every", t.head_reprobe_every, "steps between head probes (--head-global)")
      ->capture_default_str();
}

int run(const TrainArgs& a, Engine& engine, ProgressBar& bar) {
  check(a.position == "sinusoidal" || a.position == "learned", "--position must be sinusoidal or learned");
  check(a.activation == "relu" || a.activation == "gelu", "--activation must be relu or gelu");
  check(a.mpo_bond >= 0, "--mpo-bond must be at least 1 (or 0 for dense), got " + std::to_string(a.mpo_bond));
  ModelConfig cfg = a.config;
  cfg.position = a.position == "sinusoidal" ? PositionEncoding::Sinusoidal : PositionEncoding::Learned;
  cfg.activation = a.activation == "relu" ? Activation::Relu : Activation::Gelu;
  // Factors stay empty: each family gets its balanced default once the corpus fixes the vocabulary.
  if (a.mpo_bond > 0)
    for (const auto& f : cfg.families()) cfg.linear[f] = LinearSpec{.kind = LinearKind::Mpo, .bond = a.mpo_bond};
  engine.set_device(a.common.device);
  if (!a.init.empty()) engine.load(a.init);
  const std::string text = read_text_file(a.corpus);
  TrainOptions t = a.train;
  const bool root = join_data_parallel(t, a.init.empty() ? a.common.device == "cuda" : engine.info().device == "cuda");
  const auto r = engine.train(text, cfg, t, !a.init.empty(), rank_bar_fn(bar, root));
  bar.finish();
  if (!root) return 0;
  engine.save(a.out);
  const auto i = engine.info();
  if (!a.common.json_out) {
    std::printf("trained %lld steps in %.1f s (%.0f tokens/s); validation loss %.4f, perplexity %.3f, "
                "token accuracy %.2f%%; saved %s\n",
                (long long)r.steps, r.seconds, r.tokens_per_s, r.validation.loss, r.validation.perplexity,
                100 * r.validation.token_accuracy, a.out.c_str());
    return 0;
  }
  Json j = {{"out", a.out},
            {"steps", r.steps},
            {"seconds", r.seconds},
            {"tokens_per_s", r.tokens_per_s},
            {"final_train_loss", r.final_train_loss},
            {"parameters", i.parameters},
            {"validation", eval_json(r.validation)},
            {"token_accuracy", r.validation.token_accuracy},
            {"loss", r.validation.loss},
            {"perplexity", r.validation.perplexity}};
  if (r.communication_seconds > 0) j["allreduce_seconds"] = r.communication_seconds;
  return print(j, true);
}

}  // namespace

void add_train(CLI::App& app, Registry& r) {
  auto a = std::make_shared<TrainArgs>();
  auto* cmd = app.add_subcommand("train", "train a character-level GPT on a text file");
  cmd->add_option("--corpus", a->corpus, "training text (UTF-8); the last 10% validates")->required();
  cmd->add_option("-o,--out", a->out, "where to write the checkpoint")->required();
  cmd->add_option("--init", a->init, "continue training this checkpoint instead of a fresh model");
  TrainOptions& t = a->train;
  add_training_options(cmd, t);
  cmd->add_option("--min-lr", t.min_lr)->capture_default_str();
  cmd->add_option("--grad-clip", t.grad_clip)->capture_default_str();
  cmd->add_option("--eval-every", t.eval_every, "validate every N steps (0 = at the end)")->capture_default_str();
  cmd->add_option("--eval-windows", t.eval_windows, "windows per intermediate validation (0 = all)")
      ->capture_default_str();
  cmd->add_option("--threads", t.threads, "0 = all cores")->capture_default_str();
  add_model_options(cmd, *a);
  add_gate_aware_options(cmd, t);
  add_common(cmd, a->common, /*with_model=*/false);
  r.add(cmd, [a](Engine& e, ProgressBar& bar) { return run(*a, e, bar); });
}

}  // namespace nestscope::cli
