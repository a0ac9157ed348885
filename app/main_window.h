// MainWindow: composition of the panels, menus and the worker thread. Panels live in widgets/.
#pragma once
#include <QMainWindow>
#include <QThread>

#include "widgets/generation_panel.h"

class QLabel;

namespace nestscope {

class EngineWorker;

struct StartupOptions {
  QString model;           // empty = embedded default model
  QString prompt = QStringLiteral("ROMEO:\n");
  int tokens = 300;
  QString screenshot;      // non-empty: generate once, save the window as PNG, quit
};

class MainWindow : public QMainWindow {
  Q_OBJECT
 public:
  explicit MainWindow(const StartupOptions& options);
  ~MainWindow() override;

 Q_SIGNALS:
  void loadRequested(const QString& path);
  void generateRequested(const QString& prompt, const nestscope::GenerationSettings& settings);

 private Q_SLOTS:
  void openModel();
  void onModelLoaded(const QString& source, qint64 parameters, qint64 macs, const QString& summary);
  void onFinished(qint64 tokens, double tokensPerSecond, bool stopped);
  void onFailed(const QString& message);

 protected:
  void closeEvent(QCloseEvent* event) override;

 private:
  void saveScreenshotAndQuit();

  StartupOptions options_;
  QThread thread_;
  EngineWorker* worker_;  // owned by thread_ (deleteLater on finish)
  GenerationPanel* panel_;
  QLabel* model_label_;
  QLabel* params_label_;
  QLabel* speed_label_;
  bool model_ready_ = false;
};

}  // namespace nestscope
