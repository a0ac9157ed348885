// MainWindow: composition of the panels (dock widgets), menus and the worker thread. The panels
// themselves live in widgets/; this file only wires them to the EngineWorker.
#pragma once
#include <QMainWindow>
#include <QThread>
#include <vector>

#include "app/engine_worker.h"
#include "app/session.h"

class QLabel;
class QDockWidget;
class QFrame;
class QMenu;
class QProgressBar;
class QPushButton;
class QTimer;

namespace nestscope {

class ActivationMap;
class BudgetPanel;
class CompareView;
class FrontierChart;
class GenerationPanel;
class TeachingView;

struct StartupOptions {
  QString model;           // empty = embedded default model
  QString prompt = QStringLiteral("ROMEO:\n");
  int tokens = 300;
  QString budget;          // JSON budget applied before the first generation ("" = full)
  QString screenshot;      // non-empty: generate once, save the window as PNG, quit
  QString panel;           // with screenshot: only this panel (budget, model, activations, teaching,
                           // compare, frontier); empty = the whole window
  QString frontier;        // a results file (nestscope-cli frontier --out) to show at start
  bool persist = true;     // restore and save window state and settings (QSettings)
  QString ui_map;          // non-empty: keep this JSON file updated with the window's state and controls
};

class MainWindow : public QMainWindow {
  Q_OBJECT
 public:
  explicit MainWindow(const StartupOptions& options);
  ~MainWindow() override;

  BudgetPanel* budgetPanel() const { return budget_; }
  ActivationMap* activationMap() const { return map_; }
  FrontierChart* frontierChart() const { return chart_; }
  GenerationPanel* generationPanel() const { return panel_; }
  TeachingView* teachingView() const { return teaching_; }
  CompareView* compareView() const { return compare_; }
  QPushButton* sweepButton() const { return sweep_button_; }
  QProgressBar* sweepProgress() const { return sweep_progress_; }
  // Toggles a head (or a neuron block) in the ablation set and runs the A/B comparison.
  void toggleAblation(bool is_head, int layer, int index);
  // Exports a panel ("frontier", "activations", "teaching", "compare", "budget", "model", "window")
  // to `path`: .png (2×), .svg, or .csv (frontier, activations, teaching). False + *error on failure.
  bool exportPanel(const QString& name, const QString& path, QString* error = nullptr);
  QWidget* panel(const QString& name) const;
  bool modelReady() const { return model_ready_; }
  QString modelSource() const { return model_.source; }
  QString lastError() const { return last_error_; }
  // The window's state as a session, and reopening one (loads its model when it differs).
  Session session() const;
  void openSession(const Session& s);
  void openModelPath(const QString& path);  // empty = the embedded default model
  void openDemoModel();                      // stories260K, shipped with the application
  void clearCaches();                        // variants and frontier rows in the user's cache folder
  // The message bar: errors as one non-modal line; the same message again counts up.
  void showMessage(const QString& message);
  void dismissMessage();
  QString messageText() const;  // the message shown now ("" = none)
  int messageCount() const { return messageText().isEmpty() ? 0 : message_count_; }

 Q_SIGNALS:
  void loadRequested(const QString& path);
  void deviceRequested(const QString& device);
  void budgetRequested(const nestscope::Budget& budget, const QString& prompt);
  void generateRequested(const QString& prompt, const nestscope::GenerationSettings& settings, int id);
  void sweepRequested(const QString& text_path);
  void frontierFileRequested(const QString& path);
  void exportHfRequested(const QString& dir);
  void layerViewRequested(const QString& name, int rank, int bond);
  void compareRequested(const QString& prompt, const nestscope::GenerationSettings& settings,
                        const nestscope::Budget& a, const nestscope::Budget& b, int id);

 private Q_SLOTS:
  void openModel();
  void onModelLoaded(const nestscope::ModelView& model);
  void onBudgetApplied(const nestscope::Budget& budget, double macs, double params);
  void onFinished(qint64 tokens, double tokensPerSecond, double msPerToken, double macsPerToken, double denseMacsPerToken,
                  bool stopped);
  void onFrontier(const std::vector<nestscope::SweepRow>& rows);
  void onFailed(const QString& message);

 protected:
  void closeEvent(QCloseEvent* event) override;
  void dragEnterEvent(QDragEnterEvent* event) override;
  void dropEvent(QDropEvent* event) override;

 private:
  // The constructor's parts: the panels and docks, the menus (main_window_menus.cpp), and the
  // signal wiring to the worker thread.
  void buildPanels(bool persist);
  void buildMenus();
  void connectWorker();
  void startGeneration();
  void updateReadout();
  QString currentPanelName() const;  // the dock holding the keyboard focus (default: frontier)
  void exportCurrent(const QString& suffix);  // asks for a file name
  void saveScreenshotAndQuit();
  void writeUiMap();  // options_.ui_map: state and screen rectangles, for scripts
  void remember(const QString& key, const QString& path);  // recent files (QSettings)
  void rebuildRecent();

  StartupOptions options_;
  QThread thread_;
  EngineWorker* worker_;  // owned by thread_ (deleteLater on finish)
  GenerationPanel* panel_;
  BudgetPanel* budget_;
  ActivationMap* map_;
  FrontierChart* chart_;
  TeachingView* teaching_;
  CompareView* compare_;
  QDockWidget* compare_dock_ = nullptr;
  QDockWidget* map_dock_ = nullptr;
  QLabel* model_info_;
  QPushButton* sweep_button_;
  QProgressBar* sweep_progress_;
  QProgressBar* load_progress_;
  QFrame* message_bar_;
  QLabel* message_label_;
  QString message_text_;
  int message_count_ = 0;
  QLabel* model_label_;
  QLabel* params_label_;
  QLabel* speed_label_;
  QTimer* debounce_;
  ModelView model_;
  bool model_ready_ = false;
  bool generating_ = false;
  bool screenshot_taken_ = false;
  bool restored_state_ = false;  // a saved dock layout was restored (no default split)
  double macs_ = 0, params_ = 0, ms_per_token_ = -1;
  double measured_macs_ = -1;  // mean MACs per token of the last generation under the current budget
  double measured_dense_macs_ = -1;  // the dense model's on the same steps
  std::string budget_json_;
  std::vector<SweepRow> rows_;
  QString last_error_;
  QMenu* recent_models_ = nullptr;
  QMenu* recent_sessions_ = nullptr;
  bool have_pending_session_ = false;
  Session pending_session_;  // applied once its model has loaded
  std::set<std::pair<int64_t, int64_t>> heads_off_, blocks_off_, heads_on_, blocks_on_;  // the A/B ablation
  std::set<std::pair<int64_t, int64_t>> gate_blocks_off_;  // blocks forced off in the gate's order
  void showAblation();
};

}  // namespace nestscope
