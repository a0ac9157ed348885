// `nestscope-cli generate`: continue a prompt, streaming tokens to stdout.
#include <cstdio>

#include "app/cli/command.h"

namespace nestscope::cli {

namespace {

struct GenerateArgs {
  Common common;
  std::string prompt;
  GenerateOptions options;
};

int run(const GenerateArgs& a, Engine& engine) {
  open_model(engine, a.common);
  Json tokens = Json::array();
  auto on_token = [&](const GeneratedToken& t) {
    if (a.common.json_out) {
      Json bytes = Json::array();
      for (unsigned char c : t.bytes) bytes.push_back(int(c));
      tokens.push_back({{"id", t.id}, {"text", t.text}, {"bytes", bytes}, {"prob", t.prob}, {"entropy", t.entropy}});
    } else {
      // The prompt is echoed once it has been accepted, so a rejected prompt prints only the error.
      if (t.index == 0) std::fwrite(a.prompt.data(), 1, a.prompt.size(), stdout);
      std::fwrite(t.text.data(), 1, t.text.size(), stdout);
      std::fflush(stdout);
    }
    return !interrupted();
  };
  const auto r = engine.generate(a.prompt, a.options, on_token);
  if (!a.common.json_out) {
    std::printf("\n");
    std::fprintf(stderr, "[%lld tokens, %.1f tokens/s]\n", (long long)r.generated_tokens, r.tokens_per_s);
    return 0;
  }
  Json j = {{"prompt", a.prompt},         {"text", r.text},
            {"prompt_tokens", r.prompt_tokens}, {"generated_tokens", r.generated_tokens},
            {"prefill_ms", r.prefill_ms}, {"decode_ms", r.decode_ms},
            {"tokens_per_s", r.tokens_per_s}, {"stopped", r.stopped}, {"ended", r.ended},
            {"tokens", tokens}};
  if (r.joint.used) j["joint"] = joint_json(r, engine.budget().mac_target);
  return print(j, true);
}

}  // namespace

void add_generate(CLI::App& app, Registry& r) {
  auto a = std::make_shared<GenerateArgs>();
  auto* cmd = app.add_subcommand("generate", "continue a prompt, streaming tokens to stdout");
  cmd->add_option("-p,--prompt", a->prompt, "text to continue")->required();
  cmd->add_option("-n,--tokens", a->options.max_new_tokens, "tokens to generate")->capture_default_str();
  cmd->add_option("-t,--temperature", a->options.temperature, "0 = greedy")->capture_default_str();
  cmd->add_option("--top-k", a->options.top_k, "0 = off")->capture_default_str();
  cmd->add_option("--seed", a->options.seed)->capture_default_str();
  add_common(cmd, a->common);
  r.add(cmd, [a](Engine& e, ProgressBar&) { return run(*a, e); });
}

}  // namespace nestscope::cli
