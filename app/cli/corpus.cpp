// `nestscope-cli corpus`: a distillation corpus sampled from the model itself, with its recipe.
#include "app/cli/command.h"
#include "core/io/atomic_file.h"

namespace nestscope::cli {

namespace {

struct CorpusArgs {
  Common common;
  SelfCorpusOptions sample;
  std::string out;
};

}  // namespace

void add_corpus(CLI::App& app, Registry& r) {
  auto a = std::make_shared<CorpusArgs>();
  auto* cmd = app.add_subcommand(
      "corpus", "sample a distillation corpus from the model itself (its training text absent); writes OUT and OUT.json");
  cmd->add_option("-o,--out", a->out, "the corpus text file; the recipe goes to OUT.json")->required();
  cmd->add_option("--samples", a->sample.samples, "sequences to sample")->capture_default_str();
  cmd->add_option("--max-tokens", a->sample.max_tokens, "tokens per sequence at most")->capture_default_str();
  cmd->add_option("--temperature", a->sample.temperature)->capture_default_str();
  cmd->add_option("--seed", a->sample.seed, "sequence i samples with seed·1000003 + i")->capture_default_str();
  cmd->add_option("--batch", a->sample.batch, "sequences decoded together (the text does not depend on it)")
      ->capture_default_str();
  cmd->add_option("--prompt", a->sample.prompt, "start of every sequence (default: the tokenizer's BOS alone)");
  add_common(cmd, a->common);
  r.add(cmd, [a](Engine& engine, ProgressBar& bar) {
    open_model(engine, a->common);
    const auto& o = a->sample;
    const auto c = engine.sample_corpus(o, bar_fn(bar));
    bar.finish();
    const auto info = engine.info();
    Json recipe = {{"model", info.source},
                   {"model_hash", info.hash},
                   {"samples", o.samples},
                   {"max_tokens", o.max_tokens},
                   {"temperature", o.temperature},
                   {"seed", o.seed},
                   {"prompt", o.prompt.empty() ? "<BOS>" : o.prompt},
                   {"sampled_tokens", c.tokens},
                   {"ended_early", c.ended},
                   {"bytes", int64_t(c.text.size())},
                   {"split", "the last 10% of the tokens is held out (every command's validation split)"},
                   {"command", "nestscope-cli corpus -m " + info.source + " --samples " + std::to_string(o.samples) +
                                   " --max-tokens " + std::to_string(o.max_tokens) + " --seed " + std::to_string(o.seed) +
                                   " -o " + a->out}};
    write_file_atomic(a->out, c.text);
    write_file_atomic(a->out + ".json", recipe.dump(2) + "\n");
    recipe["out"] = a->out;
    return print(recipe, a->common.json_out);
  });
}

}  // namespace nestscope::cli
