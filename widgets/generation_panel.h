// GenerationPanel: prompt box, sampling settings, Generate/Stop and the streamed continuation.
#pragma once
#include <QWidget>

class QDoubleSpinBox;
class QPlainTextEdit;
class QPushButton;
class QSpinBox;
class QTextEdit;

namespace nestscope {

struct GenerationSettings {
  int max_new_tokens = 300;
  double temperature = 0.8;
  int top_k = 0;
  quint64 seed = 0;
};

}  // namespace nestscope
Q_DECLARE_METATYPE(nestscope::GenerationSettings)
namespace nestscope {

class GenerationPanel : public QWidget {
  Q_OBJECT
 public:
  explicit GenerationPanel(QWidget* parent = nullptr);

  QString prompt() const;
  void setPrompt(const QString& text);
  GenerationSettings settings() const;
  void setSettings(const GenerationSettings& s);
  QString output() const;

 public Q_SLOTS:
  void startOutput();                                  // clears the view for a new continuation
  void appendToken(const QString& text, double entropy);  // colour: darker = more confident
  void setBusy(bool busy);                             // toggles Generate/Stop
  void requestGenerate();

 Q_SIGNALS:
  void generateRequested(const QString& prompt, const nestscope::GenerationSettings& settings);
  void stopRequested();

 private:
  QPlainTextEdit* prompt_;
  QTextEdit* output_;
  QPushButton* generate_;
  QPushButton* stop_;
  QSpinBox* tokens_;
  QDoubleSpinBox* temperature_;
  QSpinBox* top_k_;
  QSpinBox* seed_;
};

}  // namespace nestscope
