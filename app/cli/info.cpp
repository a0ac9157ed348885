// `nestscope-cli info`: describe a model.
#include "app/cli/command.h"

namespace nestscope::cli {

void add_info(CLI::App& app, Registry& r) {
  auto a = std::make_shared<Common>();
  auto* cmd = app.add_subcommand("info", "describe a model");
  add_common(cmd, *a);
  r.add(cmd, [a](Engine& engine, ProgressBar&) {
    open_model(engine, *a);
    const auto i = engine.info();
    return print({{"model", i.source},
           {"parameters", i.parameters},
           {"macs_per_token", i.macs_per_token},
           {"max_rank", i.max_rank},
           {"max_bond", i.max_bond},
           {"device", i.device},
           {"weights", i.weights},
           {"cuda_kernels", Engine::cuda_kernels()},
           {"tokenizer", i.tokenizer_kind},
           {"config", Json::parse(i.config.to_json())},
           {"training", Json::parse(i.training_json, nullptr, false)}},
          a->json_out);
  });
}

}  // namespace nestscope::cli
