#include "widgets/teaching_view.h"

#include <QComboBox>
#include <QFile>
#include <QTextStream>
#include <QHBoxLayout>
#include <QImage>
#include <QLabel>
#include <QPainter>
#include <QSpinBox>
#include <QVBoxLayout>
#include <algorithm>
#include <cmath>

#include "widgets/theme.h"

namespace nestscope {

namespace {

// A diverging map for weights: blue (negative) – white – red (positive), |v| / scale in [0, 1].
QRgb diverging(float v, float scale) {
  const float t = std::clamp(v / std::max(scale, 1e-12f), -1.f, 1.f);
  const int a = int(255 * (1 - std::abs(t)));
  return t >= 0 ? qRgb(255, a, a) : qRgb(a, a, 255);
}

QImage heatmap(const std::vector<float>& m, int rows, int cols, float scale, bool magnitude) {
  QImage img(cols, rows, QImage::Format_RGB32);
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) {
      const float v = m[size_t(r) * size_t(cols) + size_t(c)];
      if (magnitude) {
        const int g = 255 - int(255 * std::clamp(std::abs(v) / std::max(scale, 1e-12f), 0.f, 1.f));
        img.setPixel(c, r, qRgb(255, 140 + g * 115 / 255, g));  // white → orange
      } else {
        img.setPixel(c, r, diverging(v, scale));
      }
    }
  return img;
}

}  // namespace

TeachingView::TeachingView(QWidget* parent) : QWidget(parent) {
  layer_ = new QComboBox;
  rank_ = new QSpinBox;
  rank_->setPrefix(tr("rank "));
  rank_->setSpecialValueText(tr("rank: full"));
  bond_ = new QSpinBox;
  bond_->setPrefix(tr("χ "));
  bond_->setSpecialValueText(tr("χ: full"));
  summary_ = new QLabel;
  summary_->setWordWrap(true);
  auto* bar = new QHBoxLayout;
  bar->addWidget(new QLabel(tr("layer")));
  bar->addWidget(layer_, 1);
  bar->addWidget(rank_);
  bar->addWidget(bond_);
  auto* lay = new QVBoxLayout(this);
  lay->addLayout(bar);
  lay->addStretch(1);  // the drawings fill this space (paintEvent)
  lay->addWidget(summary_);
  setMinimumHeight(220);  // room for the spectrum, three heatmaps and the chain (the dock scrolls below it)
  connect(layer_, &QComboBox::currentIndexChanged, this, &TeachingView::request);
  connect(rank_, &QSpinBox::valueChanged, this, &TeachingView::request);
  connect(bond_, &QSpinBox::valueChanged, this, &TeachingView::request);
}

void TeachingView::setProjections(const QStringList& names, int rank_limit, int bond_limit) {
  const QSignalBlocker a(layer_), b(rank_), c(bond_);
  layer_->clear();
  layer_->addItems(names);
  rank_->setRange(0, std::max(1, rank_limit));
  rank_->setValue(std::max(1, rank_limit / 4));
  bond_->setRange(0, std::max(1, bond_limit));
  bond_->setValue(std::min(8, std::max(1, bond_limit)));
}

void TeachingView::followBudget(int rank, int bond) {
  if (rank == rank_->value() && bond == bond_->value()) return;
  {
    const QSignalBlocker b(rank_), c(bond_);
    rank_->setValue(rank);
    bond_->setValue(bond);
  }
  request();
}

void TeachingView::request() {
  if (layer_->count() == 0) return;
  Q_EMIT viewRequested(layer_->currentText(), rank_->value(), bond_->value());
}

void TeachingView::setView(const LayerView& v) {
  view_ = v;
  QString bonds;
  for (size_t i = 1; i + 1 < v.bond_dims.size(); ++i) bonds += (bonds.isEmpty() ? "" : "·") + QString::number(v.bond_dims[i]);
  summary_->setText(tr("%1 [%2×%3]: rank %4 keeps %5% of the spectral energy, error ‖W−W_r‖/‖W‖ = %6%. "
                       "MPO at χ = %7: bonds %8, %9 parameters (dense %10), error %11%.")
                        .arg(QString::fromStdString(v.name))
                        .arg(v.rows)
                        .arg(v.cols)
                        .arg(v.rank)
                        .arg(100 * v.energy_retained, 0, 'f', 1)
                        .arg(100 * v.rank_error, 0, 'f', 1)
                        .arg(v.bond)
                        .arg(bonds)
                        .arg(v.mpo_params)
                        .arg(v.rows * v.cols)
                        .arg(100 * v.bond_error, 0, 'f', 1));
  update();
}

QString TeachingView::summary() const { return summary_->text(); }

bool TeachingView::exportCsv(const QString& path, QString* error) const {
  QFile f(path);
  if (!f.open(QIODevice::WriteOnly | QIODevice::Truncate | QIODevice::Text)) {
    if (error) *error = tr("could not write %1: %2").arg(path, f.errorString());
    return false;
  }
  QTextStream out(&f);
  double total = 0, cum = 0;
  for (double s : view_.singular_values) total += s * s;
  out << "# " << QString::fromStdString(view_.name) << " [" << view_.rows << "x" << view_.cols << "], MPO bonds at chi="
      << view_.bond << ":";
  for (auto d : view_.bond_dims) out << ' ' << d;
  out << "\nindex,singular_value,cumulative_energy\n";
  for (size_t i = 0; i < view_.singular_values.size(); ++i) {
    cum += view_.singular_values[i] * view_.singular_values[i];
    out << i << ',' << view_.singular_values[i] << ',' << (total > 0 ? cum / total : 1.0) << "\n";
  }
  return true;
}

void TeachingView::paintEvent(QPaintEvent*) {
  QPainter p(this);
  p.fillRect(rect(), palette().base());
  const auto& v = view_;
  if (v.singular_values.empty()) {
    p.drawText(rect(), Qt::AlignCenter, tr("pick a layer"));
    return;
  }
  const double top = layer_->geometry().bottom() + 30, bottom = summary_->geometry().top() - 8;
  const double w = width() - 16, h = bottom - top;
  const QRectF spec(8, top, w * 0.34, h * 0.55), maps(16 + w * 0.34, top, w * 0.66 - 8, h * 0.55),
      chain(8, top + h * 0.6, w, h * 0.4);
  // Spectrum: σ_i as bars, the kept ones in colour.
  p.setPen(palette().text().color());
  p.drawText(spec.adjusted(0, -18, 0, 0).topLeft() + QPointF(0, 12), tr("singular values (kept in blue)"));
  const double smax = std::max(1e-12, v.singular_values.front());
  const double bw = spec.width() / double(v.singular_values.size());
  for (size_t i = 0; i < v.singular_values.size(); ++i) {
    const double bh = v.singular_values[i] / smax * (spec.height() - 4);
    p.fillRect(QRectF(spec.left() + double(i) * bw, spec.bottom() - bh, std::max(1.0, bw - (bw > 3 ? 1 : 0)), bh),
               int64_t(i) < v.rank ? QColor(0, 114, 178) : theme::idle(palette()));
  }
  p.drawLine(spec.bottomLeft(), spec.bottomRight());
  // W, W_r, |W − W_r| on one scale (the error on its own, so small errors stay visible).
  float scale = 0;
  for (float x : v.weight) scale = std::max(scale, std::abs(x));
  std::vector<float> err(v.weight.size());
  float emax = 0;
  for (size_t i = 0; i < err.size(); ++i) emax = std::max(emax, std::abs(err[i] = v.weight[i] - v.reconstruction[i]));
  const QImage images[] = {heatmap(v.weight, int(v.rows), int(v.cols), scale, false),
                           heatmap(v.reconstruction, int(v.rows), int(v.cols), scale, false),
                           heatmap(err, int(v.rows), int(v.cols), emax, true)};
  const QString titles[] = {tr("W"), tr("rank-%1 W_r").arg(v.rank), tr("|W − W_r| (max %1)").arg(emax, 0, 'g', 2)};
  const double cell = maps.width() / 3;
  for (int k = 0; k < 3; ++k) {
    QRectF r(maps.left() + k * cell + 4, maps.top(), cell - 8, maps.height());
    const double aspect = double(v.rows) / double(v.cols);
    QRectF img = r;
    if (r.width() * aspect > r.height()) img.setWidth(r.height() / aspect); else img.setHeight(r.width() * aspect);
    p.drawText(r.topLeft() - QPointF(0, 6), titles[k]);
    p.drawImage(img, images[k]);
    p.drawRect(img);
  }
  // The MPO chain: cores as circles, bonds as edges labelled D_l, legs o_l up and i_l down.
  const size_t L = v.out_factors.size();
  p.drawText(chain.topLeft() + QPointF(0, 12), tr("MPO chain at χ = %1").arg(v.bond));
  if (L == 0) return;
  p.setRenderHint(QPainter::Antialiasing);
  const double cy = chain.top() + chain.height() * 0.55, step = chain.width() / double(L + 1),
               rad = std::min(22.0, chain.height() * 0.18);
  for (size_t l = 0; l < L; ++l) {
    const QPointF c(chain.left() + step * double(l + 1), cy);
    if (l + 1 < L) {
      const QPointF n(chain.left() + step * double(l + 2), cy);
      const int64_t d = v.bond_dims[l + 1];
      QPen pen(QColor(0, 114, 178));
      pen.setWidthF(1.0 + 5.0 * std::log2(double(std::max<int64_t>(1, d))) / 8.0);  // thicker = larger bond
      p.setPen(pen);
      p.drawLine(c + QPointF(rad, 0), n - QPointF(rad, 0));
      p.setPen(palette().text().color());
      p.drawText(QRectF((c.x() + n.x()) / 2 - 40, cy - 22, 80, 16), Qt::AlignCenter, QStringLiteral("D=%1").arg(d));
    }
    p.setPen(palette().text().color());
    p.drawLine(c - QPointF(0, rad), c - QPointF(0, rad + 18));
    p.drawLine(c + QPointF(0, rad), c + QPointF(0, rad + 18));
    p.drawText(QRectF(c.x() - 30, c.y() - rad - 36, 60, 16), Qt::AlignCenter, QStringLiteral("o=%1").arg(v.out_factors[l]));
    p.drawText(QRectF(c.x() - 30, c.y() + rad + 20, 60, 16), Qt::AlignCenter, QStringLiteral("i=%1").arg(v.in_factors[l]));
    p.setBrush(QColor(230, 159, 0));
    p.drawEllipse(c, rad, rad);
    p.setBrush(Qt::NoBrush);
    p.drawText(QRectF(c.x() - rad, c.y() - 8, 2 * rad, 16), Qt::AlignCenter, QStringLiteral("G%1").arg(l + 1));
  }
}

}  // namespace nestscope
