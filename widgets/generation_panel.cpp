#include "widgets/generation_panel.h"

#include <QColor>
#include <QDoubleSpinBox>
#include <QFontDatabase>
#include <QFormLayout>
#include <QHBoxLayout>
#include <QLabel>
#include <QPlainTextEdit>
#include <QPushButton>
#include <QScrollBar>
#include <QSpinBox>
#include <QTextCharFormat>
#include <QTextCursor>
#include <QTextEdit>
#include <QVBoxLayout>
#include <algorithm>
#include <cmath>

namespace nestscope {

GenerationPanel::GenerationPanel(QWidget* parent) : QWidget(parent) {
  const QFont mono = QFontDatabase::systemFont(QFontDatabase::FixedFont);

  prompt_ = new QPlainTextEdit(this);
  prompt_->setFont(mono);
  prompt_->setPlaceholderText(tr("Type a prompt, then Generate (Ctrl+Return)"));
  prompt_->setMaximumHeight(90);

  tokens_ = new QSpinBox(this);
  tokens_->setRange(1, 100000);
  temperature_ = new QDoubleSpinBox(this);
  temperature_->setRange(0.0, 5.0);
  temperature_->setSingleStep(0.1);
  temperature_->setToolTip(tr("0 = greedy"));
  top_k_ = new QSpinBox(this);
  top_k_->setRange(0, 100000);
  top_k_->setToolTip(tr("0 = off"));
  seed_ = new QSpinBox(this);
  seed_->setRange(0, 1 << 30);

  generate_ = new QPushButton(tr("Generate"), this);
  generate_->setShortcut(QKeySequence(Qt::CTRL | Qt::Key_Return));
  generate_->setToolTip(tr("Generate (Ctrl+Return)"));
  stop_ = new QPushButton(tr("Stop"), this);
  stop_->setShortcut(QKeySequence(Qt::Key_Escape));
  stop_->setToolTip(tr("Stop (Esc)"));
  stop_->setEnabled(false);

  auto* settings = new QHBoxLayout;
  auto add = [&](const QString& label, QWidget* w) {
    settings->addWidget(new QLabel(label, this));
    settings->addWidget(w);
  };
  add(tr("Tokens"), tokens_);
  add(tr("Temperature"), temperature_);
  add(tr("Top-k"), top_k_);
  add(tr("Seed"), seed_);
  settings->addStretch(1);
  settings->addWidget(generate_);
  settings->addWidget(stop_);

  output_ = new QTextEdit(this);
  output_->setReadOnly(true);
  output_->setFont(mono);
  output_->setPlaceholderText(tr("The continuation streams here, token by token. "
                                 "Darker text = the model was more certain."));

  auto* layout = new QVBoxLayout(this);
  layout->addWidget(new QLabel(tr("Prompt"), this));
  layout->addWidget(prompt_);
  layout->addLayout(settings);
  layout->addWidget(new QLabel(tr("Output"), this));
  layout->addWidget(output_, 1);

  setSettings(GenerationSettings{});
  connect(generate_, &QPushButton::clicked, this, &GenerationPanel::requestGenerate);
  connect(stop_, &QPushButton::clicked, this, &GenerationPanel::stopRequested);
}

QString GenerationPanel::prompt() const { return prompt_->toPlainText(); }
void GenerationPanel::setPrompt(const QString& text) { prompt_->setPlainText(text); }
QString GenerationPanel::output() const { return output_->toPlainText(); }

GenerationSettings GenerationPanel::settings() const {
  return {tokens_->value(), temperature_->value(), top_k_->value(), quint64(seed_->value())};
}

void GenerationPanel::setSettings(const GenerationSettings& s) {
  tokens_->setValue(s.max_new_tokens);
  temperature_->setValue(s.temperature);
  top_k_->setValue(s.top_k);
  seed_->setValue(int(s.seed));
}

void GenerationPanel::requestGenerate() {
  if (!generate_->isEnabled()) return;
  Q_EMIT generateRequested(prompt(), settings());
}

void GenerationPanel::startOutput() {
  output_->clear();
  QTextCharFormat fmt;
  fmt.setForeground(palette().color(QPalette::PlaceholderText));
  QTextCursor c(output_->document());
  c.insertText(prompt(), fmt);
}

void GenerationPanel::appendToken(const QString& text, double entropy) {
  // Entropy in nats, 0 (certain) .. ~3 (a guess among ~20 characters): dark blue to orange.
  const double u = std::clamp(entropy / 3.0, 0.0, 1.0);
  const QColor sure(20, 40, 120), unsure(230, 110, 0);
  QColor c = QColor::fromRgbF(float(sure.redF() + u * (unsure.redF() - sure.redF())),
                              float(sure.greenF() + u * (unsure.greenF() - sure.greenF())),
                              float(sure.blueF() + u * (unsure.blueF() - sure.blueF())));
  QTextCharFormat fmt;
  fmt.setForeground(c);
  fmt.setToolTip(tr("entropy %1 nats").arg(entropy, 0, 'f', 2));
  QTextCursor cursor(output_->document());
  cursor.movePosition(QTextCursor::End);
  cursor.insertText(text, fmt);
  output_->verticalScrollBar()->setValue(output_->verticalScrollBar()->maximum());
}

void GenerationPanel::setBusy(bool busy) {
  generate_->setEnabled(!busy);
  stop_->setEnabled(busy);
}

}  // namespace nestscope
