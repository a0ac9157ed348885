// `nestscope-cli variants pack`: fine-tuned projections as a model's variant file.
#include "app/cli/command.h"
#include "core/io/cache.h"

namespace nestscope::cli {

namespace {

struct VariantArgs {
  Common common;
  std::vector<std::string> from;
  std::string out, origin;
  bool install = false;
};

}  // namespace

void add_variants(CLI::App& app, Registry& r) {
  auto a = std::make_shared<VariantArgs>();
  auto* v = app.add_subcommand("variants", "a model's NSN / MPO variants");
  v->require_subcommand(1);
  auto* pack = v->add_subcommand(
      "pack", "write the projections of checkpoints fine-tuned from --model with --projections-only as its variant "
              "file, so its rank and χ budgets run them instead of SVD / TT-SVD conversions");
  pack->add_option("--from", a->from, "a fine-tuned checkpoint (repeatable)")->required();
  pack->add_option("-o,--out", a->out, "the variant file to write");
  pack->add_flag("--install", a->install, "write it to the model's place in the variant cache (instead of or beside --out)");
  pack->add_option("--origin", a->origin, "what the variants were trained with (stored in the file)")->required();
  add_common(pack, a->common);
  r.add(pack, [a](Engine& engine, ProgressBar&) {
    check(!a->out.empty() || a->install, "variants pack: give --out FILE or --install");
    open_model(engine, a->common);
    const auto hash = engine.info().hash;
    std::vector<std::string> written;
    if (!a->out.empty()) {
      engine.pack_variants(a->from, a->out, a->origin);
      written.push_back(a->out);
    }
    if (a->install) {
      const std::string path = variant_cache_path(hash);
      engine.pack_variants(a->from, path, a->origin);
      written.push_back(path);
    }
    return print({{"model", engine.info().source}, {"model_hash", hash}, {"from", a->from}, {"written", written}},
                 a->common.json_out);
  });
}

}  // namespace nestscope::cli
