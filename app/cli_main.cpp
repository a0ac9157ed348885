// nestscope-cli: train, evaluate and sample NestScope models without a GUI.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "app/cli_progress.h"
#include "core/engine/engine.h"
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
  if (with_model) cmd->add_option("-m,--model", c.model, "checkpoint (.safetensors); default: the embedded PicoGPT");
  cmd->add_option("--device", c.device, "auto, cpu or cuda")->capture_default_str();
  cmd->add_flag("--json", c.json_out, "print one JSON object on stdout");
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
          std::fwrite(t.text.data(), 1, t.text.size(), stdout);
          std::fflush(stdout);
        }
        return !cli::interrupted();
      };
      if (!common.json_out) std::fwrite(prompt.data(), 1, prompt.size(), stdout);
      const auto r = engine.generate(prompt, gopt, on_token);
      if (common.json_out) {
        json j = {{"prompt", prompt},           {"text", r.text},
                  {"prompt_tokens", r.prompt_tokens}, {"generated_tokens", r.generated_tokens},
                  {"prefill_ms", r.prefill_ms}, {"decode_ms", r.decode_ms},
                  {"tokens_per_s", r.tokens_per_s}, {"stopped", r.stopped},
                  {"tokens", tokens}};
        std::cout << j.dump() << "\n";
      } else {
        std::printf("\n");
        std::fprintf(stderr, "[%lld tokens, %.1f tokens/s]\n", (long long)r.generated_tokens, r.tokens_per_s);
      }
    } else if (*info) {
      open_model(engine, common);
      const auto i = engine.info();
      json j = {{"model", i.source},
                {"parameters", i.parameters},
                {"macs_per_token", i.macs_per_token},
                {"device", i.device},
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
