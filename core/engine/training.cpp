// Engine: training, conversion and fine-tuning (each replaces the model only when it finished).
#include "core/engine/engine_impl.h"
#include "core/io/default_model.h"
#include "core/io/hf_model.h"
#include "core/model/convert.h"
#include "core/text/char_tokenizer.h"
#include "core/train/nsn_objective.h"
#include "core/train/self_corpus.h"
#include "core/train/trainer.h"
#include "core/variants/variants.h"

namespace nestscope {

namespace {

// How a nested objective (NSN ranks or MPO bonds) is recorded in the checkpoint.
struct NestedRecord {
  const char* extras_key;  // where the learned log-variances are saved
  const char* objective;
  const char* section;     // training-record key holding the options and per-bucket logs
  const char* min_name;
};

// The distillation teacher of `options` (its checkpoint or HF folder; empty = the embedded default
// model) on `device`, checked to share `student`'s tokenizer; nullopt without distillation.
std::optional<LoadedModel> load_teacher(const TrainOptions& options, const Tokenizer& student, torch::Device device) {
  if (options.distill <= 0) return std::nullopt;
  LoadedModel t = options.teacher.empty()    ? load_checkpoint_bytes(default_model_bytes(), kEmbeddedSource)
                  : is_hf_folder(options.teacher) ? import_hf_folder(options.teacher)
                                                  : load_checkpoint(options.teacher);
  check(t.tokenizer->to_json() == student.to_json(),
        "the teacher " + t.source + " has a different tokenizer from the model; distillation needs the same one");
  t.model->to(device);
  t.model->eval();
  return t;
}

// Runs the nested objective on `next` (a fork), stores s_k, returns the report; fills `rec`.
NsnFinetuneReport train_nested(LoadedModel& next, const Corpus& corpus, int64_t corpus_bytes,
                               const TrainOptions& options, const NsnTrainOptions& n, const NestedRecord& how,
                               const ProgressFn& progress, nlohmann::json& rec, Gpt* teacher) {
  auto prior = next.extras.find(how.extras_key);
  auto r = train_nsn_multirank(next.model, corpus, options, n, progress,
                               prior == next.extras.end() ? torch::Tensor() : prior->second, teacher);
  rec = nlohmann::json::parse(train_record_json(options, r.train, corpus_bytes));
  rec["objective"] = how.objective;
  rec[how.section] = {{how.min_name, n.min_rank}, {"max_sample", n.max_sample}, {"buckets", n.buckets}, {"curriculum", n.curriculum}};
  for (const auto& b : r.buckets)
    rec[how.section]["per_bucket"].push_back(
        {{"lo", b.lo}, {"hi", b.hi}, {"samples", b.samples}, {"mean_loss", b.mean_loss}, {"sigma", b.sigma}});
  next.extras[how.extras_key] = r.log_var;
  return {r.train, r.buckets};
}

}  // namespace

FineTune::FineTune(Engine::Impl& impl, const std::string& corpus_text, const TrainOptions& options) {
  options.validate();
  next = impl.fork();
  corpus = make_corpus(*next.tokenizer, corpus_text, options.train_fraction);
  teacher = load_teacher(options, *next.tokenizer, impl.device);
}

TrainResult Engine::train(const std::string& corpus_text, const ModelConfig& config, const TrainOptions& options,
                          bool continue_current, const ProgressFn& progress) {
  options.validate();
  LoadedModel next;
  if (continue_current) {
    next = impl_->fork();
  } else {
    auto tok = std::make_unique<CharTokenizer>(CharTokenizer::from_corpus(corpus_text));
    next.config = config;
    next.config.vocab_size = tok->vocab_size();
    next.config.validate();
    next.tokenizer = std::move(tok);
    torch::manual_seed(options.seed);
    next.model = Gpt(next.config);
  }
  next.model->to(impl_->device);
  const Corpus corpus = make_corpus(*next.tokenizer, corpus_text, options.train_fraction);
  auto teacher = load_teacher(options, *next.tokenizer, impl_->device);
  TrainResult result = train_model(next.model, corpus, options, progress, {}, {}, teacher ? &teacher->model : nullptr);
  next.source = "<trained in this session>";
  next.training_json = train_record_json(options, result, int64_t(corpus_text.size()));
  impl_->adopt(std::move(next));
  return result;
}

void Engine::convert_nsn(const std::vector<std::string>& families, int64_t max_rank, const ProgressFn& progress) {
  impl_->adopt(impl_->converted(nsn_config(impl_->need().config, families, max_rank), "NSN",
                                {{"conversion", "nsn-svd"}, {"max_rank", max_rank}, {"families", families}}, progress));
}

NsnFinetuneReport Engine::finetune_nsn(const std::string& corpus_text, const TrainOptions& options,
                                       const NsnTrainOptions& nsn, const ProgressFn& progress) {
  FineTune f(*impl_, corpus_text, options);
  NsnTrainOptions n = nsn;
  n.axis = NestedAxis::Rank;
  nlohmann::json rec;
  auto report = train_nested(f.next, f.corpus, int64_t(corpus_text.size()), options, n,
                             {"train.nsn.log_var", "nsn-multirank", "nsn", "min_rank"}, progress, rec, f.teacher_model());
  impl_->adopt_trained(std::move(f.next), rec);
  return report;
}

void Engine::convert_mpo(const std::vector<std::string>& families, int64_t bond, const ProgressFn& progress) {
  impl_->adopt(impl_->converted(mpo_config(impl_->need().config, families, bond), "MPO",
                                {{"conversion", "mpo-tt-svd"}, {"bond", bond}, {"families", families}}, progress));
}

NsnFinetuneReport Engine::finetune_mpo(const std::string& corpus_text, const TrainOptions& options,
                                       const std::optional<NsnTrainOptions>& nested, const ProgressFn& progress) {
  options.validate();
  check(info().max_bond > 0, "the model has no MPO layers: convert it first (nestscope-cli mpo convert)");
  FineTune f(*impl_, corpus_text, options);
  NsnFinetuneReport report;
  nlohmann::json rec;
  if (nested) {
    NsnTrainOptions n = *nested;
    n.axis = NestedAxis::Bond;
    report = train_nested(f.next, f.corpus, int64_t(corpus_text.size()), options, n,
                          {"train.mpo.log_var", "mpo-nested-bond", "nested", "min_bond"}, progress, rec, f.teacher_model());
  } else {
    report.train = train_model(f.next.model, f.corpus, options, progress, {}, {}, f.teacher_model());
    rec = nlohmann::json::parse(train_record_json(options, report.train, int64_t(corpus_text.size())));
    rec["objective"] = "mpo-full-bond";
  }
  impl_->adopt_trained(std::move(f.next), rec);
  return report;
}

}  // namespace nestscope

namespace nestscope {

void Engine::pack_variants(const std::vector<std::string>& tuned, const std::string& out,
                           const std::string& origin) const {
  const auto& m = impl_->need();
  check(!m.hash.empty(), "variant pack: the model was made in this session; save and load it first");
  std::vector<LoadedModel> loaded;
  for (const auto& path : tuned) loaded.push_back(load_checkpoint(path));
  std::vector<const GptImpl*> models;
  for (const auto& l : loaded) {
    check(l.tokenizer->to_json() == m.tokenizer->to_json(), l.source + " has another tokenizer than the model");
    models.push_back(l.model.get());
  }
  nestscope::pack_variants(*m.model, m.hash, models, out, origin);
}

SelfCorpus Engine::sample_corpus(const SelfCorpusOptions& options, const ProgressFn& progress) {
  auto& m = impl_->need();
  return sample_self_corpus(*m.model, *m.tokenizer, options, progress);
}

}  // namespace nestscope
