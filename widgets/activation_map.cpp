#include "widgets/activation_map.h"

#include <QCheckBox>
#include <QFile>
#include <QMouseEvent>
#include <QTextStream>
#include <QPainter>
#include <QToolTip>
#include <algorithm>

#include "widgets/theme.h"

namespace nestscope {

namespace {
const QColor kOn(0, 114, 178), kAccent(213, 94, 0);
}

ActivationMap::ActivationMap(QWidget* parent) : QWidget(parent) {
  setMouseTracking(true);
  oracle_box_ = new QCheckBox(tr("compare with the oracle"), this);
  oracle_box_->setToolTip(tr("Blocks: dark = the gate ran it and it is among the truly strongest k; orange = the "
                             "oracle would have run it but the gate did not; light = the gate ran it needlessly"));
  connect(oracle_box_, &QCheckBox::toggled, this, &ActivationMap::setShowOracle);
  setMinimumSize(280, 150);
}

void ActivationMap::setShape(int layers, int heads, int blocks) {
  layers_ = layers, heads_ = heads, blocks_ = blocks;
  clear();
}

void ActivationMap::clear() {
  tokens_.clear();
  selected_ = -1;
  follow_ = true;
  update();
}

void ActivationMap::appendToken(const TokenActivity& token) {
  tokens_.push_back(token);
  if (follow_) selected_ = int(tokens_.size()) - 1;
  update();
}

bool ActivationMap::exportCsv(const QString& path, QString* error) const {
  QFile f(path);
  if (!f.open(QIODevice::WriteOnly | QIODevice::Truncate | QIODevice::Text)) {
    if (error) *error = tr("could not write %1: %2").arg(path, f.errorString());
    return false;
  }
  QTextStream out(&f);
  out << "token,text,entropy,macs,active_fraction";
  for (int l = 0; l < layers_; ++l) out << ",m_L" << l << ",blocks_L" << l << ",heads_L" << l;
  out << "\n";
  for (size_t i = 0; i < tokens_.size(); ++i) {
    const auto& t = tokens_[i];
    QString text = t.text;
    text.replace('"', "\"\"");
    out << i << ",\"" << text << "\"," << t.entropy << ',' << t.macs << ',' << activeFraction(t);
    for (int l = 0; l < layers_; ++l) {
      auto join = [](const std::vector<std::vector<int>>& v, int l) {
        QStringList s;
        if (l < int(v.size()))
          for (int x : v[size_t(l)]) s << QString::number(x);
        return s.join(' ');
      };
      out << ',' << (l < int(t.measurements.size()) ? t.measurements[size_t(l)] : 0) << ",\"" << join(t.blocks, l) << "\",\""
          << join(t.heads, l) << '"';
    }
    out << "\n";
  }
  return true;
}

void ActivationMap::setShowOracle(bool on) {
  show_oracle_ = on;
  if (oracle_box_->isChecked() != on) oracle_box_->setChecked(on);
  update();
}

void ActivationMap::setAblated(const std::set<std::pair<int64_t, int64_t>>& heads,
                               const std::set<std::pair<int64_t, int64_t>>& blocks,
                               const std::set<std::pair<int64_t, int64_t>>& heads_on,
                               const std::set<std::pair<int64_t, int64_t>>& blocks_on) {
  heads_off_ = heads;
  blocks_off_ = blocks;
  heads_on_ = heads_on;
  blocks_on_ = blocks_on;
  update();
}

bool ActivationMap::cellRan(bool is_head, int layer, int index) const {
  if (selected_ < 0) return true;
  const auto& t = tokens_[size_t(selected_)];
  if (!is_head) return blockActive(t, layer, index);
  if (layer >= int(t.heads.size())) return true;
  return std::count(t.heads[size_t(layer)].begin(), t.heads[size_t(layer)].end(), index) > 0;
}

void ActivationMap::selectToken(int index) {
  if (index < 0 || index >= int(tokens_.size())) return;
  selected_ = index;
  follow_ = index == int(tokens_.size()) - 1;
  update();
  Q_EMIT tokenSelected(index);
}

bool ActivationMap::blockActive(const TokenActivity& t, int layer, int block) const {
  if (layer >= int(t.blocks.size()) || t.blocks[size_t(layer)].empty()) return true;  // ungated
  const auto& b = t.blocks[size_t(layer)];
  return std::binary_search(b.begin(), b.end(), block);
}

double ActivationMap::activeFraction(const TokenActivity& t) const {
  if (t.blocks.empty() || blocks_ == 0) return 1.0;
  double on = 0;
  for (const auto& b : t.blocks) on += b.empty() ? blocks_ : double(b.size());
  return on / (double(blocks_) * double(t.blocks.size()));
}

double ActivationMap::selectedActiveFraction() const {
  return selected_ < 0 ? -1 : activeFraction(tokens_[size_t(selected_)]);
}

QPointF ActivationMap::headCellCentre(int layer, int head) const {
  const auto L = layout();
  const double ch = L.heads.height() / std::max(1, layers_), hw = L.heads.width() / std::max(1, heads_);
  return {L.heads.left() + (head + 0.5) * hw, L.heads.top() + (layer + 0.5) * ch};
}

ActivationMap::Layout ActivationMap::layout() const {
  const double w = width(), h = height(), top = show_oracle_ ? 40 : 22, gap = 16, strip = 56;
  const double grid_h = std::max(40.0, h - top - strip - gap - 18);
  const double head_w = std::max(60.0, std::min(w * 0.28, heads_ * 22.0));
  return {QRectF(44, top, head_w, grid_h), QRectF(44 + head_w + gap, top, w - head_w - gap - 52, grid_h),
          QRectF(44, h - strip - 4, w - 52, strip)};
}

void ActivationMap::paintEvent(QPaintEvent*) {
  QPainter p(this);
  p.setRenderHint(QPainter::Antialiasing, false);
  p.fillRect(rect(), palette().base());
  p.setPen(palette().text().color());
  if (layers_ == 0) {
    p.drawText(rect(), Qt::AlignCenter, tr("load a model and generate to see what each token uses"));
    return;
  }
  const auto L = layout();
  oracle_box_->move(width() - oracle_box_->sizeHint().width() - 8, 1);
  const TokenActivity* t = selected_ >= 0 ? &tokens_[size_t(selected_)] : nullptr;
  const QColor kOff = theme::offCell(palette());
  p.drawText(QRectF(L.heads.left(), 2, L.heads.width(), 18), Qt::AlignLeft, tr("heads"));
  p.drawText(QRectF(L.blocks.left(), 2, L.blocks.width(), 18), Qt::AlignLeft,
             t ? tr("MLP neuron blocks — token %1 '%2'").arg(selected_).arg(t->text.toHtmlEscaped().replace('\n', "\\n"))
               : tr("MLP neuron blocks"));
  if (show_oracle_) {  // the legend of the oracle's colours, on its own line under the titles
    double x = L.blocks.left();
    const QFontMetricsF fm(font());
    for (const auto& [colour, text] : {std::pair{kOn, tr("gate ran it, oracle agrees")},
                                       std::pair{QColor(230, 159, 0), tr("oracle only (missed)")},
                                       std::pair{kOn.lighter(165), tr("gate only (needless)")}}) {
      p.fillRect(QRectF(x, 22, 12, 12), colour);
      p.drawText(QPointF(x + 16, 33), text);
      x += 16 + fm.horizontalAdvance(text) + 14;
    }
  }
  const double ch = L.heads.height() / layers_;
  for (int l = 0; l < layers_; ++l) {
    p.drawText(QRectF(0, L.heads.top() + l * ch, 40, ch), Qt::AlignRight | Qt::AlignVCenter, tr("L%1").arg(l));
    const double hw = L.heads.width() / std::max(1, heads_);
    for (int h = 0; h < heads_; ++h) {
      bool on = true;
      if (t && l < int(t->heads.size())) on = std::count(t->heads[size_t(l)].begin(), t->heads[size_t(l)].end(), h) > 0;
      const QRectF cell(L.heads.left() + h * hw + 1, L.heads.top() + l * ch + 1, hw - 2, ch - 2);
      p.fillRect(cell, on ? kOn : kOff);
      if (heads_on_.count({l, h})) {  // forced on: framed
        p.setPen(QPen(QColor(0, 158, 115), 3));
        p.drawRect(cell.adjusted(1, 1, -1, -1));
        p.setPen(palette().text().color());
      }
      if (heads_off_.count({l, h})) {  // ablated: crossed out
        p.setPen(QPen(kAccent, 2));
        p.drawLine(cell.topLeft(), cell.bottomRight());
        p.drawLine(cell.topRight(), cell.bottomLeft());
        p.setPen(palette().text().color());
      }
    }
    const double bw = L.blocks.width() / std::max(1, blocks_);
    for (int b = 0; b < blocks_; ++b) {
      const bool on = !t || blockActive(*t, l, b);
      const QRectF cell(L.blocks.left() + b * bw + (bw > 4 ? 0.5 : 0), L.heads.top() + l * ch + 1, bw - (bw > 4 ? 1 : 0),
                        ch - 2);
      QColor colour = on ? kOn : kOff;
      if (show_oracle_ && t && l < int(t->oracle.size()) && !t->oracle[size_t(l)].empty()) {
        const auto& o = t->oracle[size_t(l)];
        const bool best = std::binary_search(o.begin(), o.end(), b);
        colour = on && best ? kOn : best ? QColor(230, 159, 0) : on ? kOn.lighter(165) : kOff;
      }
      p.fillRect(cell, blocks_off_.count({l, b}) ? kAccent : colour);
      if (blocks_on_.count({l, b})) {
        p.setPen(QPen(QColor(0, 158, 115), 2));
        p.drawRect(cell.adjusted(1, 1, -1, -1));
        p.setPen(palette().text().color());
      }
    }
  }
  // Timeline: bar = active fraction per token; dots = mean measurements (scaled to the largest).
  p.setPen(palette().text().color());
  p.drawText(QRectF(0, L.timeline.top(), 40, 16), Qt::AlignRight, tr("use"));
  p.drawRect(L.timeline);
  const int n = int(tokens_.size());
  if (n == 0) return;
  double m_max = 1;
  for (const auto& tk : tokens_)
    for (int m : tk.measurements) m_max = std::max(m_max, double(m));
  const double tw = L.timeline.width() / n;
  for (int i = 0; i < n; ++i) {
    const double f = activeFraction(tokens_[size_t(i)]);
    const double bh = f * (L.timeline.height() - 2);
    p.fillRect(QRectF(L.timeline.left() + i * tw, L.timeline.bottom() - bh, std::max(1.0, tw - (tw > 3 ? 1 : 0)), bh),
               i == selected_ ? kAccent : kOn.lighter(130));
    const auto& ms = tokens_[size_t(i)].measurements;
    if (!ms.empty()) {
      double mean = 0;
      for (int m : ms) mean += m;
      mean /= double(ms.size());
      p.fillRect(QRectF(L.timeline.left() + i * tw, L.timeline.bottom() - mean / m_max * (L.timeline.height() - 2) - 1,
                        std::max(1.0, tw - 1), 2),
                 palette().text().color());
    }
  }
}

QString ActivationMap::describeAt(const QPoint& pos) const {
  if (layers_ == 0) return {};
  const auto L = layout();
  const TokenActivity* t = selected_ >= 0 ? &tokens_[size_t(selected_)] : nullptr;
  const int l = int((pos.y() - L.heads.top()) / (L.heads.height() / layers_));
  if (L.heads.contains(pos) && l >= 0 && l < layers_) {
    const int h = int((pos.x() - L.heads.left()) / (L.heads.width() / std::max(1, heads_)));
    bool on = true;
    if (t && l < int(t->heads.size())) on = std::count(t->heads[size_t(l)].begin(), t->heads[size_t(l)].end(), h) > 0;
    return tr("layer %1, head %2: %3").arg(l).arg(h).arg(on ? tr("ran") : tr("skipped"));
  }
  if (L.blocks.contains(pos) && l >= 0 && l < layers_) {
    const int b = int((pos.x() - L.blocks.left()) / (L.blocks.width() / std::max(1, blocks_)));
    QString s = tr("layer %1, block %2: %3").arg(l).arg(b).arg(!t || blockActive(*t, l, b) ? tr("ran") : tr("skipped"));
    if (t && l < int(t->oracle.size()) && !t->oracle[size_t(l)].empty()) {
      const auto& o = t->oracle[size_t(l)];
      s += std::binary_search(o.begin(), o.end(), b) ? tr(" · among the oracle's top-k") : tr(" · not in the oracle's top-k");
    }
    if (t && l < int(t->measurements.size()) && t->measurements[size_t(l)] > 0)
      s += tr(" · %1 measurements in this layer").arg(t->measurements[size_t(l)]);
    return s;
  }
  if (L.timeline.contains(pos) && !tokens_.empty()) {
    const int i = std::clamp(int((pos.x() - L.timeline.left()) / (L.timeline.width() / tokens_.size())), 0,
                             int(tokens_.size()) - 1);
    const auto& tk = tokens_[size_t(i)];
    return tr("token %1 '%2': %3% of blocks, %4 MACs, entropy %5 nats")
        .arg(i)
        .arg(QString(tk.text).replace('\n', "\\n"))
        .arg(100 * activeFraction(tk), 0, 'f', 1)
        .arg(theme::count(double(tk.macs)))
        .arg(tk.entropy, 0, 'f', 2);
  }
  return {};
}

void ActivationMap::mouseMoveEvent(QMouseEvent* e) {
  const QString s = describeAt(e->position().toPoint());
  if (s.isEmpty()) QToolTip::hideText(); else QToolTip::showText(e->globalPosition().toPoint(), s, this);
}

void ActivationMap::mousePressEvent(QMouseEvent* e) {
  const auto L = layout();
  const QPointF pos = e->position();
  if (layers_ > 0 && (L.heads.contains(pos) || L.blocks.contains(pos))) {
    const int l = std::clamp(int((pos.y() - L.heads.top()) / (L.heads.height() / layers_)), 0, layers_ - 1);
    if (L.heads.contains(pos))
      Q_EMIT cellClicked(true, l, std::clamp(int((pos.x() - L.heads.left()) / (L.heads.width() / std::max(1, heads_))), 0, heads_ - 1));
    else
      Q_EMIT cellClicked(false, l,
                         std::clamp(int((pos.x() - L.blocks.left()) / (L.blocks.width() / std::max(1, blocks_))), 0, blocks_ - 1));
    return;
  }
  if (L.timeline.contains(e->position()) && !tokens_.empty())
    selectToken(std::clamp(int((e->position().x() - L.timeline.left()) / (L.timeline.width() / tokens_.size())), 0,
                           int(tokens_.size()) - 1));
}

}  // namespace nestscope
