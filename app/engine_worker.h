// EngineWorker: owns the Engine on a worker thread; the GUI talks to it only through signals and
// sees plain values (no LibTorch). A newer request supersedes a running generation or sweep.
#pragma once
#include <QObject>
#include <QString>
#include <atomic>
#include <memory>
#include <vector>

#include "core/eval/frontier.h"
#include "core/model/budget.h"
#include "widgets/activation_map.h"
#include "widgets/budget_panel.h"
#include "widgets/compare_view.h"
#include "widgets/generation_panel.h"
#include "widgets/teaching_view.h"

namespace nestscope {

class Engine;

// The loaded model as the window shows it.
struct ModelView {
  QString source, hash, summary;
  qint64 parameters = 0;
  qint64 macs = 0, dense_macs = 0;
  BudgetLimits limits;
  int layers = 0, heads = 0, blocks = 0;  // the activation map's shape (MLP blocks of 16)
  QStringList projections;                 // "blk.0.attn.q", …, for the teaching view
};

class EngineWorker : public QObject {
  Q_OBJECT
 public:
  EngineWorker();
  ~EngineWorker() override;

  // Thread-safe: the running generation stops after its current token.
  void requestStop() { ++generation_; }
  // Thread-safe: a new generation id; requests carrying an older one are skipped or stopped.
  int nextGeneration() { return ++generation_; }
  void cancelSweep() { sweep_cancel_ = true; }
  // Thread-safe: a load in progress stops building SVD / TT-SVD variants (the model itself stays
  // loaded; variants are built when a budget first asks for them). Opening another model or
  // closing the window does this so they never wait for a large model's variants.
  void cancelLoad() { ++load_epoch_; }
  // Where a model's frontier rows are cached (the user's cache folder, by content hash).
  static QString frontierCachePath(const QString& hash);
  // The rows swept before for a model of this hash (a cache file that cannot be read is deleted).
  static std::vector<SweepRow> cachedRows(const QString& hash);
  // The rows shipped with the application for a model of this hash (the built-in models' sweeps).
  static std::vector<SweepRow> shippedRows(const QString& hash);
  // The demo model (stories260K), unpacked from the application into the cache folder on first
  // use; returns its folder. Throws when it cannot be written.
  static QString demoModelFolder();
  // A built-in model's fine-tuned NSN / MPO variants (resources/variants/<hash>.safetensors, made
  // by `nestscope-cli variants pack`) into the variant cache, where its rank and χ budgets find them.
  static void installShippedVariants(const QString& hash);
  // Bytes a checkpoint of `file_bytes` needs in memory (weights, variants, buffers) and bytes the
  // machine has available now (-1 when unknown).
  static qint64 memoryNeeded(qint64 file_bytes);
  static qint64 memoryAvailable();

 public Q_SLOTS:
  void loadModel(const QString& path);  // empty = the embedded default model
  void setDevice(const QString& device);  // "auto", "cpu" or "cuda"; re-announces the model
  // Applies a budget (calibrating the gate on `prompt` first when the budget needs it).
  void setBudget(const nestscope::Budget& budget, const QString& prompt);
  void generate(const QString& prompt, const nestscope::GenerationSettings& settings, int id);
  // A/B: the same prompt, settings and seed under budget `a`, then under `b` (e.g. with heads or
  // neuron blocks ablated); the budget is `a` afterwards.
  void compare(const QString& prompt, const nestscope::GenerationSettings& settings, const nestscope::Budget& a,
               const nestscope::Budget& b, int id);
  // The built-in default grid scored on continuations of the full model (or on `text_path`).
  void runSweep(const QString& text_path);
  // Rows of a frontier results file (nestscope-cli frontier --out), shown as they are.
  void loadFrontier(const QString& path);
  // The teaching view's layer: spectrum, rank-r reconstruction, MPO chain at χ (0 = full).
  void layerView(const QString& name, int rank, int bond);
  // Writes the model at the current budget as a Hugging Face folder (config.json, weights, tokenizer).
  void exportHf(const QString& dir);

 Q_SIGNALS:
  void modelLoaded(const nestscope::ModelView& model);
  void budgetApplied(const nestscope::Budget& budget, double macs, double params);
  // The Engine refused a budget: `running` is the budget it kept (the panel shows that one).
  void budgetRejected(const nestscope::Budget& running, const QString& message);
  void generationStarted();
  void tokenGenerated(const nestscope::TokenActivity& token);
  // macsPerToken: the mean MACs the generated tokens actually spent (measured, not the estimate).
  // macsPerToken: the mean MACs of the generated tokens' steps; denseMacsPerToken: the dense
  // model's on the same steps (the same context lengths), so the two compare like for like.
  void generationFinished(qint64 tokens, double tokensPerSecond, double msPerToken, double macsPerToken,
                          double denseMacsPerToken, bool stopped);
  void sweepProgress(int done, int total);
  void frontierRows(const std::vector<nestscope::SweepRow>& rows);
  void layerViewReady(const nestscope::LayerView& view);
  void comparePair(const std::vector<nestscope::ComparedToken>& a, const std::vector<nestscope::ComparedToken>& b);
  void failed(const QString& message);
  void loading(const QString& what);  // before reading a checkpoint: its size and the memory it needs;
                                      // then the variants being built ("variants 3/49")
  void loadProgress(int done, int total);  // variants built so far; total 0 = reading; done < 0 = finished
  void exported(const QString& message);  // a Hugging Face export finished

 private:
  std::unique_ptr<Engine> engine_;
  std::atomic<int> generation_{0};
  std::atomic<bool> sweep_cancel_{false};
  std::atomic<int> load_epoch_{0};
  QString calibrated_prompt_;
  void announce();  // emits modelLoaded for the current model
  QString hash_;  // the loaded model's, for its frontier rows
};

}  // namespace nestscope
Q_DECLARE_METATYPE(nestscope::ModelView)
Q_DECLARE_METATYPE(nestscope::TokenActivity)
Q_DECLARE_METATYPE(std::vector<nestscope::SweepRow>)
Q_DECLARE_METATYPE(std::vector<nestscope::ComparedToken>)
