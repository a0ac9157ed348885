// Engine internals shared by the engine's source files (not part of the API: includes LibTorch).
#pragma once
#include <algorithm>
#include <memory>
#include <optional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/engine/engine.h"
#include "core/error.h"
#include "core/eval/calibrate.h"
#include "core/eval/joint_split.h"
#include "core/io/checkpoint.h"
#include "core/model/convert.h"
#include "core/model/sampler.h"
#include "core/variants/variants.h"
#include "core/text/tokenizer.h"
#include "core/train/corpus.h"

namespace nestscope {

inline constexpr const char* kEmbeddedSource = "<embedded default model>";

// `tokens` (fewer than one context) continued with the model's own samples at its current budget
// until `length` tokens (at most one context plus one); the last token is sampled, never fed.
std::vector<int64_t> extend_by_sampling(Gpt& model, std::vector<int64_t> tokens, int64_t length, Sampler& sampler);

struct Engine::Impl {
  std::unique_ptr<LoadedModel> loaded;
  torch::Device device = torch::kCPU;
  Budget budget;
  bool variant_cache = true;  // keep built variants in the user's cache (core/io/cache.h)
  // Joint MAC knob (Budget::mac_target): the last calibration text's tokens and the candidate
  // scores measured on them for one base budget (joint_key: that base in canonical JSON).
  std::vector<int64_t> calibration_tokens;
  std::vector<JointCandidate> joint_scores;
  std::string joint_key;

  LoadedModel& need() const {
    check(loaded != nullptr, "no model is loaded");
    return *loaded;
  }
  void adopt(LoadedModel m) {
    m.model->to(device);
    m.model->eval();
    loaded = std::make_unique<LoadedModel>(std::move(m));
    budget = Budget{};
    calibration_tokens.clear();
    joint_scores.clear();
    joint_key.clear();
  }
  // The budget a generation of `prompt` tokens and `fresh` new ones runs under: `b` itself, or,
  // with b.mac_target set, b with its measured joint split (scored once per base budget).
  Budget resolve(const Budget& b, int64_t prompt, int64_t fresh, JointChoice* choice = nullptr);
  // Builds the variants `kinds` need (see build_variants) around a full budget, then puts the
  // current budget back.
  VariantReport prepare_variants(const std::vector<LinearKind>& kinds, const ProgressFn& progress = {});
  VariantReport prepare_variants(const VariantNeeds& needs, const ProgressFn& progress = {});
  // The variants `b` runs on (built when missing, before the budget is applied).
  VariantNeeds needs_of(const Budget& b) const { return variant_needs(*need().model, b); }
  // The current model re-parameterized as `target` (conversion), with its record. On an error or
  // a cancel the current model keeps its budget.
  LoadedModel converted(const ModelConfig& target, const std::string& suffix, nlohmann::json record,
                        const ProgressFn& progress);
  // Replaces the current model by `next`, trained from it, recording the current model's history.
  void adopt_trained(LoadedModel next, nlohmann::json record) {
    record["previous"] = nlohmann::json::parse(need().training_json, nullptr, false);
    next.training_json = record.dump();
    adopt(std::move(next));
  }
  // A deep copy of the current model at full budget, for training that may fail or be cancelled.
  LoadedModel fork() const {
    auto& cur = need();
    LoadedModel next;
    next.config = cur.config;
    next.tokenizer = tokenizer_from_json(cur.tokenizer->to_json());
    next.model = clone_model(cur.model);
    next.model->apply_budget(Budget{});
    next.source = cur.source;
    next.extras = cur.extras;
    return next;
  }
};

// What every fine-tune starts from: a deep copy of the current model (options validated), the
// corpus split by its tokenizer, and the distillation teacher when options.distill > 0.
struct FineTune {
  FineTune(Engine::Impl& impl, const std::string& corpus_text, const TrainOptions& options);
  Gpt* teacher_model() { return teacher ? &teacher->model : nullptr; }
  LoadedModel next;
  Corpus corpus;
  std::optional<LoadedModel> teacher;
};

// What a job changes on the loaded model, put back when the job ends by return or throw: the
// engine's budget (and with it the head support), the gate's statistics and trace sinks, and —
// after keep_head_importance() — the calibrated head importance. Nothing else restores state by hand.
class ModelScope {
 public:
  // restore_budget false: the job keeps the engine's budget (generation without the MAC-target knob).
  explicit ModelScope(Engine::Impl& impl, bool restore_budget = true) : impl_(impl), budget_(restore_budget) {}
  ~ModelScope();
  ModelScope(const ModelScope&) = delete;
  ModelScope& operator=(const ModelScope&) = delete;
  void keep_head_importance();  // also restore the head importance the model has now
  // Puts everything back now and reports what fails (a job that changed what the budget needs,
  // such as the gate's calibration); the destructor then has nothing left to do. Without a call,
  // the destructor restores quietly: an error already on its way wins.
  void restore();

 private:
  Engine::Impl& impl_;
  bool budget_;
  bool restored_ = false;
  torch::Tensor importance_;
};

}  // namespace nestscope
