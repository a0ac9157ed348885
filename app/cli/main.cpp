// nestscope-cli: train, evaluate, sample and sweep NestScope models without a GUI. Each command
// lives in its own file in app/cli/ and registers itself here.
#include <cstdio>

#include "app/cli/command.h"

using namespace nestscope;

int main(int argc, char** argv) {
  CLI::App app{"nestscope-cli: train, evaluate and sample elastic language models"};
  app.require_subcommand(1);
  cli::Registry registry;
  for (auto add : {cli::add_train, cli::add_eval, cli::add_generate, cli::add_info, cli::add_export, cli::add_frontier,
                   cli::add_nsn, cli::add_mpo, cli::add_gate, cli::add_corpus, cli::add_variants})
    add(app, registry);
  CLI11_PARSE(app, argc, argv);
  cli::install_interrupt_handler();
  try {
    Engine engine;
    cli::ProgressBar bar;
    return registry.run_parsed(engine, bar);
  } catch (const Cancelled&) {
    std::fprintf(stderr, "\ncancelled; nothing was saved\n");
    return 130;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "\nerror: %s\n", e.what());
    return 1;
  }
}
