#include "app/engine_worker.h"

#include "core/engine/engine.h"

namespace nestscope {

EngineWorker::EngineWorker() = default;
EngineWorker::~EngineWorker() = default;

void EngineWorker::loadModel(const QString& path) {
  try {
    if (!engine_) engine_ = std::make_unique<Engine>();  // created on the worker thread
    if (path.isEmpty()) {
      engine_->load_default();
    } else {
      engine_->load(path.toStdString());
    }
    const auto i = engine_->info();
    const auto& c = i.config;
    const QString summary = QStringLiteral("%1 layers · d=%2 · %3 heads · FFN %4 · context %5 · vocab %6 (%7) · %8")
                                .arg(c.n_layers).arg(c.d_model).arg(c.n_heads).arg(c.d_ff).arg(c.context)
                                .arg(c.vocab_size).arg(QString::fromStdString(i.tokenizer_kind))
                                .arg(QString::fromStdString(i.device));
    Q_EMIT modelLoaded(QString::fromStdString(i.source), i.parameters, i.macs_per_token, summary);
  } catch (const std::exception& e) {
    Q_EMIT failed(QString::fromStdString(e.what()));
  }
}

void EngineWorker::generate(const QString& prompt, const GenerationSettings& s) {
  stop_ = false;
  Q_EMIT generationStarted();
  try {
    if (!engine_) throw std::runtime_error("no model is loaded");
    GenerateOptions o;
    o.max_new_tokens = s.max_new_tokens;
    o.temperature = s.temperature;
    o.top_k = s.top_k;
    o.seed = s.seed;
    const auto r = engine_->generate(prompt.toStdString(), o, [this](const GeneratedToken& t) {
      Q_EMIT tokenGenerated(QString::fromStdString(t.text), t.entropy);
      return !stop_.load();
    });
    Q_EMIT generationFinished(r.generated_tokens, r.tokens_per_s, r.stopped);
  } catch (const std::exception& e) {
    Q_EMIT failed(QString::fromStdString(e.what()));
    Q_EMIT generationFinished(0, 0, true);
  }
}

}  // namespace nestscope
