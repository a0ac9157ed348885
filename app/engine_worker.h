// EngineWorker: owns the Engine on a worker thread; the GUI talks to it only through signals.
#pragma once
#include <QObject>
#include <QString>
#include <atomic>
#include <memory>

#include "widgets/generation_panel.h"

namespace nestscope {

class Engine;

class EngineWorker : public QObject {
  Q_OBJECT
 public:
  EngineWorker();
  ~EngineWorker() override;

  // Thread-safe: asks the running generation to stop after its current token.
  void requestStop() { stop_ = true; }

 public Q_SLOTS:
  void loadModel(const QString& path);  // empty = the embedded default model
  void generate(const QString& prompt, const nestscope::GenerationSettings& settings);

 Q_SIGNALS:
  void modelLoaded(const QString& source, qint64 parameters, qint64 macsPerToken, const QString& summary);
  void generationStarted();
  void tokenGenerated(const QString& text, double entropy);
  void generationFinished(qint64 tokens, double tokensPerSecond, bool stopped);
  void failed(const QString& message);

 private:
  std::unique_ptr<Engine> engine_;
  std::atomic<bool> stop_{false};
};

}  // namespace nestscope
