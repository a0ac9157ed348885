#include "widgets/compare_view.h"

#include <QFontDatabase>
#include <QGridLayout>
#include <QLabel>
#include <QTextCharFormat>
#include <QTextCursor>
#include <QTextEdit>
#include <algorithm>
#include <cmath>

#include "widgets/theme.h"

namespace nestscope {

CompareView::CompareView(QWidget* parent) : QWidget(parent) {
  const QFont mono = QFontDatabase::systemFont(QFontDatabase::FixedFont);
  summary_ = new QLabel(tr("Click a head or a neuron block in the activation map to force it off (or, if "
                           "it was skipped, on) and compare the continuations with and without the change."));
  summary_->setWordWrap(true);
  label_a_ = new QLabel;
  label_b_ = new QLabel;
  a_ = new QTextEdit;
  b_ = new QTextEdit;
  for (auto* e : {a_, b_}) {
    e->setReadOnly(true);
    e->setFont(mono);
  }
  auto* g = new QGridLayout(this);
  g->addWidget(summary_, 0, 0, 1, 2);
  g->addWidget(label_a_, 1, 0);
  g->addWidget(label_b_, 1, 1);
  g->addWidget(a_, 2, 0);
  g->addWidget(b_, 2, 1);
}

void CompareView::setPair(const QString& label_a, const std::vector<ComparedToken>& a, const QString& label_b,
                          const std::vector<ComparedToken>& b) {
  label_a_->setText(label_a);
  label_b_->setText(label_b);
  divergence_ = -1;
  const size_t n = std::min(a.size(), b.size());
  for (size_t i = 0; i < n && divergence_ < 0; ++i)
    if (a[i].text != b[i].text) divergence_ = int(i);
  if (divergence_ < 0 && a.size() != b.size()) divergence_ = int(n);
  const size_t shared = divergence_ < 0 ? n : size_t(divergence_);
  std::vector<double> delta(shared);
  mean_abs_ = 0;
  for (size_t i = 0; i < shared; ++i) {
    delta[i] = std::log(std::max(1e-12, b[i].prob)) - std::log(std::max(1e-12, a[i].prob));
    mean_abs_ += std::abs(delta[i]) / double(std::max<size_t>(1, shared));
  }
  // Shared prefix: B's tokens tinted green (more likely under B) or red (less); the divergence bold
  // on a yellow background; after it, plain.
  auto fill = [&](QTextEdit* e, const std::vector<ComparedToken>& toks, bool is_b) {
    e->clear();
    QTextCursor c(e->document());
    for (size_t i = 0; i < toks.size(); ++i) {
      QTextCharFormat f;
      if (i < shared && is_b) {
        const double t = std::clamp(delta[i] / 2.0, -1.0, 1.0);
        f.setBackground(t >= 0 ? QColor(0, 158, 115, int(110 * t)) : QColor(213, 94, 0, int(-110 * t)));
        f.setToolTip(tr("log p: %1 → %2 (Δ %3)")
                         .arg(std::log(std::max(1e-12, a[i].prob)), 0, 'f', 2)
                         .arg(std::log(std::max(1e-12, b[i].prob)), 0, 'f', 2)
                         .arg(delta[i], 0, 'f', 2));
      } else if (int(i) == divergence_) {
        f.setBackground(theme::selection(palette()));
        f.setFontWeight(QFont::Bold);
        f.setToolTip(tr("first divergence (p = %1)").arg(toks[i].prob, 0, 'f', 3));
      }
      c.insertText(toks[i].text, f);
    }
  };
  fill(a_, a, false);
  fill(b_, b, true);
  summary_->setText(summary());
}

QString CompareView::summary() const {
  if (divergence_ < 0) return tr("No divergence: the same continuation; mean |Δ log p| %1 nats per token").arg(mean_abs_, 0, 'f', 3);
  if (divergence_ == 0) return tr("The two continuations differ from the first token on");
  return tr("First divergence at token %1; before it the %n shared token(s) moved by a mean |Δ log p| of %2 nats", "",
            divergence_)
      .arg(divergence_)
      .arg(mean_abs_, 0, 'f', 3);
}

}  // namespace nestscope
