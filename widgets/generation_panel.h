// GenerationPanel: prompt box, sampling settings, Generate/Stop and the streamed continuation.
#pragma once
#include <QColor>
#include <QWidget>
#include <utility>
#include <vector>

class QComboBox;
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
  int tokenCount() const { return int(spans_.size()); }
  int selectedToken() const { return selected_; }
  // The token under a character position of the output (-1: the prompt or nothing).
  int tokenAt(int position) const;
  // Where token i starts in the output text (for tests and selection).
  int tokenStart(int i) const { return spans_[size_t(i)].start; }
  enum class Colouring { Uncertainty, Macs };
  void setColouring(Colouring c);
  Colouring colouring() const { return colour_mode_; }

 public Q_SLOTS:
  void startOutput();                                  // clears the view for a new continuation
  void appendToken(const QString& text, double entropy);  // colour: darker = more confident
  // The same with the MACs the step spent and the model's top alternatives (shown on hover).
  void appendToken(const QString& text, double entropy, qint64 macs,
                   const std::vector<std::pair<QString, double>>& top);
  void selectToken(int index);  // highlights it (e.g. picked in the activation map)
  void setBusy(bool busy);                             // toggles Generate/Stop
  bool busy() const;                                   // a generation (or a load) is running
  void requestGenerate();

 Q_SIGNALS:
  void generateRequested(const QString& prompt, const nestscope::GenerationSettings& settings);
  void stopRequested();
  void tokenClicked(int index);

 private:
  QPlainTextEdit* prompt_;
  QTextEdit* output_;
  QPushButton* generate_;
  QPushButton* stop_;
  QSpinBox* tokens_;
  QDoubleSpinBox* temperature_;
  QSpinBox* top_k_;
  QSpinBox* seed_;
  QComboBox* colouring_;

  struct Span {
    int start = 0, end = 0;
    double entropy = 0;
    qint64 macs = 0;
  };
  std::vector<Span> spans_;
  qint64 macs_lo_ = 0, macs_hi_ = 0;
  int selected_ = -1;
  Colouring colour_mode_ = Colouring::Uncertainty;
  QColor colourOf(const Span& s) const;
  void paintSpan(int i);

 protected:
  bool eventFilter(QObject* watched, QEvent* event) override;
  void changeEvent(QEvent* event) override;  // a palette switch recolours the tokens
};

}  // namespace nestscope
