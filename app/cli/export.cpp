// `nestscope-cli export`: a Hugging Face folder (dense at a budget) and/or a NestScope checkpoint.
#include "app/cli/command.h"

namespace nestscope::cli {

namespace {

struct ExportArgs {
  Common common;
  std::string hf_dir, checkpoint;
  int64_t rank = 0, bond = 0;
};

int run(const ExportArgs& a, Engine& engine) {
  check(!a.hf_dir.empty() || !a.checkpoint.empty(), "export: give --hf FOLDER and/or --checkpoint FILE");
  open_model(engine, a.common);
  engine.set_budget(Budget{.rank = a.rank, .bond = a.bond});
  Json j = {{"model", engine.info().source}, {"rank", a.rank}, {"bond", a.bond}};
  if (!a.hf_dir.empty()) j["hf"] = {{"folder", a.hf_dir}, {"model_type", engine.export_hf(a.hf_dir)}};
  if (!a.checkpoint.empty()) {
    engine.save(a.checkpoint);
    j["checkpoint"] = a.checkpoint;
  }
  return print(j, a.common.json_out);
}

}  // namespace

void add_export(CLI::App& app, Registry& r) {
  auto a = std::make_shared<ExportArgs>();
  auto* cmd = app.add_subcommand("export", "write the model as a Hugging Face folder (dense at a chosen budget) "
                                           "or as a NestScope checkpoint");
  add_common(cmd, a->common);
  cmd->add_option("--hf", a->hf_dir, "folder to write config.json, model.safetensors and tokenizer.json to");
  cmd->add_option("--checkpoint", a->checkpoint, "NestScope checkpoint (.safetensors) to write");
  cmd->add_option("--rank", a->rank, "NSN rank the exported dense weights are taken at (0 = full)");
  cmd->add_option("--bond", a->bond, "MPO bond dimension χ the exported weights are taken at (0 = full)");
  r.add(cmd, [a](Engine& e, ProgressBar&) { return run(*a, e); });
}

}  // namespace nestscope::cli
