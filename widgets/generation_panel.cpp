#include "widgets/generation_panel.h"

#include <QColor>
#include <QComboBox>
#include <QMouseEvent>
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

#include "widgets/theme.h"

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
  // The keys are the window's (Run menu): a second binding here would make both ambiguous.
  generate_->setToolTip(tr("Generate (Ctrl+Return)"));
  stop_ = new QPushButton(tr("Stop"), this);
  stop_->setToolTip(tr("Stop (Esc)"));
  stop_->setEnabled(false);

  auto* settings = new QHBoxLayout;
  auto add = [&](const QString& label, QWidget* w) {
    settings->addWidget(new QLabel(label, this));
    settings->addWidget(w);
  };
  add(tr("Tokens"), tokens_);
  add(tr("Temp."), temperature_);
  add(tr("Top-k"), top_k_);
  add(tr("Seed"), seed_);
  settings->addStretch(1);
  for (QAbstractSpinBox* b : std::initializer_list<QAbstractSpinBox*>{tokens_, temperature_, top_k_, seed_})
    b->setMaximumWidth(b->fontMetrics().horizontalAdvance(QStringLiteral("0000000")) + 28);
  temperature_->setToolTip(tr("Temperature (0 = greedy)"));

  output_ = new QTextEdit(this);
  output_->setReadOnly(true);
  output_->setFont(mono);
  output_->setPlaceholderText(tr("The continuation streams here, token by token. "
                                 "Darker text = the model was more certain."));

  colouring_ = new QComboBox(this);
  colouring_->addItems({tr("colour: uncertainty"), tr("colour: MACs spent")});
  colouring_->setToolTip(tr("Colour tokens by the model's entropy or by the MACs their step cost"));
  auto* out_bar = new QHBoxLayout;
  auto* out_label = new QLabel(tr("Output"), this);
  out_label->setToolTip(tr("Hover a token for its alternatives; click it to show it in the activation map"));
  out_bar->addWidget(out_label);
  out_bar->addStretch(1);
  out_bar->addWidget(colouring_);

  auto* layout = new QVBoxLayout(this);
  auto* top = new QHBoxLayout;  // Generate and Stop next to the prompt they act on
  top->addWidget(new QLabel(tr("Prompt"), this));
  top->addStretch(1);
  top->addWidget(generate_);
  top->addWidget(stop_);
  layout->addLayout(top);
  layout->addWidget(prompt_);
  layout->addLayout(settings);
  layout->addLayout(out_bar);
  layout->addWidget(output_, 1);
  output_->viewport()->installEventFilter(this);
  connect(colouring_, &QComboBox::currentIndexChanged, this, [this](int i) { setColouring(Colouring(i)); });

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
  spans_.clear();
  selected_ = -1;
  macs_lo_ = macs_hi_ = 0;
  QTextCharFormat fmt;
  fmt.setForeground(palette().color(QPalette::PlaceholderText));
  QTextCursor c(output_->document());
  c.insertText(prompt(), fmt);
}

void GenerationPanel::appendToken(const QString& text, double entropy) { appendToken(text, entropy, 0, {}); }

QColor GenerationPanel::colourOf(const Span& s) const {
  // Uncertainty: entropy in nats, 0 (certain) .. ~3 (a guess among ~20 characters). MACs: the
  // cheapest step of this generation .. the dearest. Blue (low) to orange (high), dark
  // blue on a light palette and light blue on a dark one.
  const double u = colour_mode_ == Colouring::Uncertainty
                       ? std::clamp(s.entropy / 3.0, 0.0, 1.0)
                       : (macs_hi_ > macs_lo_ ? double(s.macs - macs_lo_) / double(macs_hi_ - macs_lo_) : 0.0);
  return theme::mix(theme::lowCost(palette()), theme::highCost(palette()), u);
}

void GenerationPanel::paintSpan(int i) {
  const Span& sp = spans_[size_t(i)];
  QTextCursor c(output_->document());
  c.setPosition(sp.start);
  c.setPosition(sp.end, QTextCursor::KeepAnchor);
  QTextCharFormat fmt;
  fmt.setForeground(colourOf(sp));
  fmt.setBackground(i == selected_ ? theme::selection(palette()) : QColor(Qt::transparent));
  c.mergeCharFormat(fmt);
}

void GenerationPanel::appendToken(const QString& text, double entropy, qint64 macs,
                                  const std::vector<std::pair<QString, double>>& top) {
  QString tip = tr("entropy %1 nats").arg(entropy, 0, 'f', 2);
  if (macs > 0) tip += tr(" · %1 MACs").arg(theme::count(double(macs)));
  if (!top.empty()) {
    tip += tr("<br>alternatives:");
    for (const auto& [t, p] : top)
      tip += QStringLiteral("<br>&nbsp;&nbsp;'%1' %2%").arg(QString(t).replace('\n', "\\n").toHtmlEscaped()).arg(100 * p, 0, 'f', 1);
  }
  QTextCharFormat fmt;
  fmt.setToolTip(tip);
  QTextCursor cursor(output_->document());
  cursor.movePosition(QTextCursor::End);
  Span sp{cursor.position(), 0, entropy, macs};
  cursor.insertText(text, fmt);
  sp.end = cursor.position();
  spans_.push_back(sp);
  if (macs > 0) {
    macs_lo_ = spans_.size() == 1 ? macs : std::min(macs_lo_, macs);
    macs_hi_ = std::max(macs_hi_, macs);
  }
  paintSpan(int(spans_.size()) - 1);
  output_->verticalScrollBar()->setValue(output_->verticalScrollBar()->maximum());
}

void GenerationPanel::setColouring(Colouring c) {
  colour_mode_ = c;
  if (colouring_->currentIndex() != int(c)) colouring_->setCurrentIndex(int(c));
  for (int i = 0; i < int(spans_.size()); ++i) paintSpan(i);
}

int GenerationPanel::tokenAt(int position) const {
  for (int i = 0; i < int(spans_.size()); ++i)
    if (position >= spans_[size_t(i)].start && position < spans_[size_t(i)].end) return i;
  return -1;
}

void GenerationPanel::selectToken(int index) {
  if (index < 0 || index >= int(spans_.size()) || index == selected_) return;
  const int old = selected_;
  selected_ = index;
  if (old >= 0) paintSpan(old);
  paintSpan(index);
}

bool GenerationPanel::eventFilter(QObject* watched, QEvent* event) {
  if (watched == output_->viewport() && event->type() == QEvent::MouseButtonRelease) {
    const auto* e = static_cast<QMouseEvent*>(event);
    const int i = tokenAt(output_->cursorForPosition(e->position().toPoint()).position());
    if (i >= 0) {
      selectToken(i);
      Q_EMIT tokenClicked(i);
    }
  }
  return QWidget::eventFilter(watched, event);
}

void GenerationPanel::changeEvent(QEvent* event) {
  QWidget::changeEvent(event);
  if (event->type() == QEvent::PaletteChange)
    for (int i = 0; i < int(spans_.size()); ++i) paintSpan(i);
}

bool GenerationPanel::busy() const { return stop_->isEnabled(); }

void GenerationPanel::setBusy(bool busy) {
  generate_->setEnabled(!busy);
  stop_->setEnabled(busy);
}

}  // namespace nestscope
