// `nestscope-cli eval`: token accuracy, loss and perplexity on a text.
#include <cstdio>

#include "app/cli/command.h"
#include "core/defaults.h"
#include "core/io/atomic_file.h"

namespace nestscope::cli {

namespace {

struct EvalArgs {
  Common common;
  std::string corpus, split = "val";
};

int run(const EvalArgs& a, Engine& engine, ProgressBar& bar) {
  open_model(engine, a.common);
  const std::string text = read_text_file(a.corpus);
  const auto r = engine.evaluate(text, a.split == "val", kTrainFraction, bar_fn(bar));
  bar.finish();
  const auto i = engine.info();
  if (!a.common.json_out) {
    std::printf("%s on %s (%s split): token accuracy %.2f%%, loss %.4f, perplexity %.3f over %lld tokens\n",
                i.source.c_str(), a.corpus.c_str(), a.split.c_str(), 100 * r.token_accuracy, r.loss, r.perplexity,
                (long long)r.tokens);
    return 0;
  }
  Json j = eval_json(r);
  j["parameters"] = i.parameters;
  j["model"] = i.source;
  j["split"] = a.split;
  return print(j, true);
}

}  // namespace

void add_eval(CLI::App& app, Registry& r) {
  auto a = std::make_shared<EvalArgs>();
  auto* cmd = app.add_subcommand("eval", "token accuracy, loss and perplexity on a text");
  cmd->add_option("--corpus", a->corpus, "text to score (UTF-8)")->required();
  cmd->add_option("--split", a->split, "val = the last 10% (as in training), all = the whole text")
      ->check(CLI::IsMember({"val", "all"}))
      ->capture_default_str();
  add_common(cmd, a->common);
  r.add(cmd, [a](Engine& e, ProgressBar& bar) { return run(*a, e, bar); });
}

}  // namespace nestscope::cli
