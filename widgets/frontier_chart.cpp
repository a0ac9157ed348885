#include "widgets/frontier_chart.h"

#include <QEvent>
#include <QApplication>
#include <QCheckBox>
#include <QComboBox>
#include <QFile>
#include <QHBoxLayout>
#include <QLabel>
#include <QPainter>
#include <QSvgGenerator>
#include <QTextStream>
#include <QVBoxLayout>
#include <QtCharts/QChart>
#include <QtCharts/QChartView>
#include <QtCharts/QLegend>
#include <QtCharts/QLegendMarker>
#include <QtCharts/QLineSeries>
#include <QtCharts/QLogValueAxis>
#include <QtCharts/QScatterSeries>
#include <QtCharts/QValueAxis>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>

#include "widgets/theme.h"

namespace nestscope {

namespace {

const char* x_name(FrontierX x) {
  switch (x) {
    case FrontierX::MacShare: return "% of dense MACs";
    case FrontierX::Parameters: return "parameters in use";
    case FrontierX::Latency: return "ms / token (measured)";
    case FrontierX::Macs: break;
  }
  return "MACs / token";
}

const char* y_name(FrontierY y) {
  switch (y) {
    case FrontierY::Perplexity: return "perplexity";
    case FrontierY::Agreement: return "top-1 agreement with the full model";
    case FrontierY::TokenAccuracy: break;
  }
  return "token accuracy";
}

// A fixed palette: Okabe–Ito (colour-blind friendly, yellow left out: unreadable on white) first,
// then distinct extras; one colour per method in order of appearance.
const QColor kPalette[] = {QColor(0, 0, 0),     QColor(230, 159, 0),  QColor(86, 180, 233), QColor(0, 158, 115),
                           QColor(213, 94, 0),  QColor(0, 114, 178),  QColor(204, 121, 167), QColor(140, 86, 75),
                           QColor(148, 103, 189), QColor(23, 190, 207), QColor(188, 189, 34), QColor(127, 127, 127),
                           QColor(214, 39, 40), QColor(44, 160, 44)};

}  // namespace

bool FrontierChart::dark() const { return theme::isDark(palette()); }

void FrontierChart::applyTheme() {
  // Follow the system palette: the dark chart theme on a dark desktop, the light one otherwise.
  // (setTheme restyles the legend font, so keep ours.)
  const QFont legend_font = chart_->legend()->font();
  chart_->setTheme(dark() ? QChart::ChartThemeDark : QChart::ChartThemeLight);
  chart_->legend()->setFont(legend_font);
}

void FrontierChart::changeEvent(QEvent* e) {
  QWidget::changeEvent(e);
  if (e->type() == QEvent::PaletteChange) {
    applyTheme();
    rebuild();  // series colours depend on it
  }
}

FrontierChart::FrontierChart(QWidget* parent) : QWidget(parent), chart_(new QChart), view_(new QChartView(chart_)) {
  view_->setRenderHint(QPainter::Antialiasing);
  applyTheme();
  chart_->legend()->setAlignment(Qt::AlignRight);
  QFont legend_font = chart_->legend()->font();
  legend_font.setPointSizeF(legend_font.pointSizeF() * 0.85);
  chart_->legend()->setFont(legend_font);
  x_box_ = new QComboBox;
  x_box_->addItems({tr("% of dense MACs"), tr("MACs"), tr("parameters"), tr("latency")});
  all_box_ = new QCheckBox(tr("all points"));
  all_box_->setToolTip(tr("Show every point, also those far beyond the dense model (a chain larger than its "
                          "matrix); drag a rectangle to zoom, right-click to zoom out"));
  view_->setRubberBand(QChartView::RectangleRubberBand);
  y_box_ = new QComboBox;
  y_box_->addItems({"token accuracy", "perplexity", "agreement"});
  auto* bar = new QHBoxLayout;
  bar->addWidget(new QLabel(tr("x:")));
  bar->addWidget(x_box_);
  bar->addWidget(new QLabel(tr("y:")));
  bar->addWidget(y_box_);
  bar->addWidget(all_box_);
  bar->addStretch();
  auto* lay = new QVBoxLayout(this);
  lay->setContentsMargins(0, 0, 0, 0);
  lay->addLayout(bar);
  lay->addWidget(view_, 1);
  connect(x_box_, &QComboBox::currentIndexChanged, this, [this](int i) { setAxes(FrontierX(i), y_); });
  connect(y_box_, &QComboBox::currentIndexChanged, this, [this](int i) { setAxes(x_, FrontierY(i)); });
  connect(all_box_, &QCheckBox::toggled, this, &FrontierChart::setShowAll);
  rebuild();
}

double FrontierChart::xValue(const SweepRow& r, FrontierX x) {
  switch (x) {
    case FrontierX::MacShare:
      return r.dense_macs > 0 ? 100.0 * double(r.macs) / double(r.dense_macs) : 100.0 * r.mac_fraction;
    case FrontierX::Parameters: return double(r.parameters);
    case FrontierX::Latency: return r.ms_per_token;
    case FrontierX::Macs: break;
  }
  return double(r.macs);
}

double FrontierChart::yValue(const SweepRow& r, FrontierY y) {
  switch (y) {
    case FrontierY::Perplexity: return r.eval.perplexity;
    case FrontierY::Agreement: return r.eval.top1_agreement;
    case FrontierY::TokenAccuracy: break;
  }
  return r.eval.token_accuracy;
}

void FrontierChart::setRows(const std::vector<SweepRow>& rows) {
  rows_.clear();
  for (const auto& r : rows)
    if (r.error.empty()) rows_.push_back(r);  // a budget that failed has no point to draw
  rebuild();
}

void FrontierChart::setAxes(FrontierX x, FrontierY y) {
  x_ = x;
  y_ = y;
  const QSignalBlocker bx(x_box_), by(y_box_);
  x_box_->setCurrentIndex(int(x));
  y_box_->setCurrentIndex(int(y));
  rebuild();
}

void FrontierChart::setOperatingPoint(const SweepRow& at, bool measured) {
  has_point_ = true;
  point_measured_ = measured;
  point_row_ = at;
  if (!showMarker()) rebuild();  // a slider move only moves the marker, unless it leaves the view
}

void FrontierChart::clearOperatingPoint() {
  has_point_ = false;
  showMarker();
}

bool FrontierChart::showMarker() {
  if (!marker_) return false;
  // Filled when the sweep measured this budget, hollow when the fit placed it.
  const QColor red(220, 20, 60);
  marker_->setName(point_measured_ ? tr("now (measured)") : tr("now (estimate)"));
  marker_->setColor(point_measured_ ? red : QColor(Qt::transparent));
  QPen border(red);
  border.setWidthF(2.5);
  marker_->setPen(border);
  marker_->clear();
  const QPointF now = operatingPoint();
  const bool shown = !std::isnan(now.x());
  for (auto* m : chart_->legend()->markers(marker_)) m->setVisible(shown);
  if (!shown) return true;
  marker_->append(now);
  const auto range = [](QAbstractAxis* a) {
    if (auto* v = qobject_cast<QValueAxis*>(a)) return std::pair{v->min(), v->max()};
    auto* l = static_cast<QLogValueAxis*>(a);
    return std::pair{l->min(), l->max()};
  };
  const auto [x0, x1] = range(chart_->axes(Qt::Horizontal).value(0));
  const auto [y0, y1] = range(chart_->axes(Qt::Vertical).value(0));
  return now.x() >= x0 && now.x() <= x1 && now.y() >= y0 && now.y() <= y1;
}

QPointF FrontierChart::operatingPoint() const {
  if (!has_point_) return {qQNaN(), qQNaN()};
  const double x = xValue(point_row_, x_), y = yValue(point_row_, y_);
  if (!(x > 0) || std::isnan(y) || y < 0) return {qQNaN(), qQNaN()};
  return {x, y};
}

void FrontierChart::setShowAll(bool all) {
  show_all_ = all;
  const QSignalBlocker b(all_box_);
  all_box_->setChecked(all);
  rebuild();
}

void FrontierChart::setTitle(const QString& title) {
  title_ = title;
  chart_->setTitle(title);
}

void FrontierChart::setLegendAlignment(Qt::Alignment a) { chart_->legend()->setAlignment(a); }

int FrontierChart::seriesCount() const { return int(chart_->series().size()); }

void FrontierChart::rebuild() {
  chart_->removeAllSeries();
  for (auto* a : chart_->axes()) {
    chart_->removeAxis(a);
    delete a;
  }
  marker_ = nullptr;
  chart_->setTitle(title_);
  // The fitted view ends a little past the dense model: a point far beyond it (a TT-SVD chain
  // with more MACs than its matrix) would squeeze every other series into a few pixels.
  double dense_x = 0;
  for (const auto& r : rows_)
    if (r.method == "dense" || r.mac_fraction == 1.0) dense_x = std::max(dense_x, xValue(r, x_));
  const double x_cap = show_all_ || x_ == FrontierX::Latency || !(dense_x > 0) ? 1e300 : dense_x * 1.08;
  // One line + scatter per method, points sorted by x.
  std::vector<std::string> order;
  std::map<std::string, std::vector<QPointF>> pts;
  double xmin = 1e300, xmax = -1e300, ymin = 1e300, ymax = -1e300;
  for (const auto& r : rows_) {
    const double x = xValue(r, x_), y = yValue(r, y_);
    if (!(x > 0) || std::isnan(y) || y < 0) continue;  // e.g. latency not measured, agreement unknown
    if (!pts.count(r.method)) order.push_back(r.method);
    pts[r.method].push_back({x, y});
    if (x > x_cap) continue;  // plotted, outside the fitted view
    xmin = std::min(xmin, x), xmax = std::max(xmax, x), ymin = std::min(ymin, y), ymax = std::max(ymax, y);
  }
  const QPointF now = operatingPoint();
  if (!std::isnan(now.x()) && now.x() <= x_cap)
    xmin = std::min(xmin, now.x()), xmax = std::max(xmax, now.x()), ymin = std::min(ymin, now.y()),
    ymax = std::max(ymax, now.y());
  QAbstractAxis* ax;
  if (x_ == FrontierX::MacShare || x_ == FrontierX::Latency) {
    auto* v = new QValueAxis;
    if (x_ == FrontierX::MacShare && xmax <= 108) {  // the fitted view: 0 … 110%, a tick every 20%
      v->setRange(0, 110);
      v->setTickType(QValueAxis::TicksDynamic);
      v->setTickAnchor(0);
      v->setTickInterval(20);
    } else {
      if (xmin <= xmax) v->setRange(0, xmax * 1.05);
      v->applyNiceNumbers();  // round ticks
    }
    v->setLabelFormat(x_ == FrontierX::MacShare ? "%.0f%%" : "%.2g");
    ax = v;
  } else {
    auto* l = new QLogValueAxis;  // decades of MACs or parameters
    l->setBase(10);
    l->setLabelFormat("%.0e");
    l->setMinorTickCount(8);
    if (xmin < xmax) l->setRange(std::pow(10, std::floor(std::log10(xmin))), std::pow(10, std::ceil(std::log10(xmax))));
    ax = l;
  }
  ax->setTitleText(x_name(x_));
  auto* ay = new QValueAxis;
  ay->setTitleText(y_name(y_));
  if (ymin <= ymax) {
    const double pad = std::max(1e-3, (ymax - ymin) * 0.05);
    ay->setRange(y_ == FrontierY::Perplexity ? ymin - pad : std::max(0.0, ymin - pad), ymax + pad);
    ay->applyNiceNumbers();  // round ticks: 0.1, 0.2, … not 0.59, 0.44
    const double step = (ay->max() - ay->min()) / std::max(1, ay->tickCount() - 1);
    ay->setLabelFormat(step >= 1 ? "%.0f" : step >= 0.1 ? "%.1f" : "%.2f");
  }
  chart_->addAxis(ax, Qt::AlignBottom);
  chart_->addAxis(ay, Qt::AlignLeft);
  // The Pareto front of (x, y) over every method, drawn first, under the points (higher is better except perplexity).
  std::vector<QPointF> all;
  for (const auto& [m, p] : pts) all.insert(all.end(), p.begin(), p.end());
  std::sort(all.begin(), all.end(), [](const QPointF& a, const QPointF& b) { return a.x() < b.x(); });
  auto* front = new QLineSeries;
  front->setName(tr("Pareto front"));
  QPen pen(QColor(60, 60, 60, 110));
  pen.setStyle(Qt::SolidLine);
  pen.setWidthF(7);  // a wide translucent band under the best points
  front->setPen(pen);
  const bool lower_better = y_ == FrontierY::Perplexity;
  double best = lower_better ? 1e300 : -1e300;
  for (const auto& q : all)
    if (lower_better ? q.y() < best : q.y() > best) {
      front->append(q);
      best = q.y();
    }
  chart_->addSeries(front);
  front->attachAxis(ax);
  front->attachAxis(ay);
  int colour = 0;
  for (const auto& method : order) {
    auto p = pts[method];
    std::sort(p.begin(), p.end(), [](const QPointF& a, const QPointF& b) { return a.x() < b.x(); });
    QColor c = kPalette[colour++ % (sizeof kPalette / sizeof kPalette[0])];
    if (dark() && c.lightness() < 40) c = QColor(235, 235, 235);  // black on a dark chart: light grey
    auto* dots = new QScatterSeries;
    dots->setName(QString::fromStdString(method));
    dots->setColor(c);
    dots->setBorderColor(c);
    dots->setMarkerSize(p.size() == 1 ? 11 : 8);
    for (const auto& q : p) dots->append(q);
    chart_->addSeries(dots);
    dots->attachAxis(ax);
    dots->attachAxis(ay);
    if (p.size() > 1) {
      auto* line = new QLineSeries;
      QPen pen(c);
      pen.setWidthF(1.6);
      if (method.find('+') != std::string::npos) pen.setStyle(Qt::DashLine);  // compositions dashed
      line->setPen(pen);
      for (const auto& q : p) line->append(q);
      chart_->addSeries(line);
      line->attachAxis(ax);
      line->attachAxis(ay);
      chart_->legend()->markers(line).first()->setVisible(false);
    }
  }
  marker_ = new QScatterSeries;  // the current budget
  marker_->setMarkerShape(QScatterSeries::MarkerShapeRectangle);
  marker_->setMarkerSize(14);
  chart_->addSeries(marker_);
  marker_->attachAxis(ax);
  marker_->attachAxis(ay);
  showMarker();
}

// A hidden chart (tests, the CLI) has never been laid out: give the view the widget's size first.
QSize FrontierChart::renderSize() {
  if (!view_->isVisible()) view_->resize(size().isEmpty() ? QSize(900, 560) : size());
  return view_->size();
}

bool FrontierChart::exportPng(const QString& path, double scale, QString* error) {
  const QSize size = renderSize();
  QImage img(size * scale, QImage::Format_ARGB32);
  img.setDevicePixelRatio(scale);
  img.fill(Qt::white);
  {
    QPainter p(&img);
    p.setRenderHint(QPainter::Antialiasing);
    view_->render(&p, QRectF(QPointF(0, 0), QSizeF(size)), view_->viewport()->rect());
  }
  if (!img.save(path, "PNG")) {
    if (error) *error = tr("could not write %1").arg(path);
    return false;
  }
  return true;
}

bool FrontierChart::exportSvg(const QString& path, QString* error) {
  const QSize size = renderSize();
  QSvgGenerator gen;
  gen.setFileName(path);
  gen.setSize(size);
  gen.setViewBox(QRect(QPoint(0, 0), size));
  gen.setTitle(title_.isEmpty() ? tr("NestScope frontier") : title_);
  {
    QPainter p;
    if (!p.begin(&gen)) {
      if (error) *error = tr("could not write %1").arg(path);
      return false;
    }
    view_->render(&p, QRectF(QPointF(0, 0), QSizeF(size)), view_->viewport()->rect());
  }
  QFile f(path);
  if (!f.exists() || f.size() == 0) {
    if (error) *error = tr("could not write %1").arg(path);
    return false;
  }
  return true;
}

bool FrontierChart::exportCsv(const QString& path, QString* error) const {
  QFile f(path);
  if (!f.open(QIODevice::WriteOnly | QIODevice::Truncate | QIODevice::Text)) {
    if (error) *error = tr("could not write %1: %2").arg(path, f.errorString());
    return false;
  }
  QTextStream out(&f);
  out << "method,label,macs,mac_fraction,params,ms_per_token,token_accuracy,token_accuracy_ci95,perplexity,"
         "top1_agreement,kl\n";
  for (const auto& r : rows_)
    out << QString::fromStdString(r.method) << ',' << '"' << QString::fromStdString(r.label) << '"' << ',' << r.macs
        << ',' << r.mac_fraction << ',' << r.parameters << ',' << r.ms_per_token << ',' << r.eval.token_accuracy << ','
        << r.eval.accuracy_ci95 << ',' << r.eval.perplexity << ',' << r.eval.top1_agreement << ',' << r.eval.kl << '\n';
  return true;
}

bool render_frontier_plot(const std::vector<SweepRow>& rows, const std::string& path, const std::string& title,
                          std::string* error) {
  std::unique_ptr<QApplication> app;
  static int argc = 1;
  static char name[] = "nestscope-cli";
  static char* argv[] = {name, nullptr};
  if (!QApplication::instance()) {
    if (qEnvironmentVariableIsEmpty("QT_QPA_PLATFORM")) qputenv("QT_QPA_PLATFORM", "offscreen");
    // A headless tool: the offscreen platform's notes about window hints are noise here.
    qInstallMessageHandler([](QtMsgType type, const QMessageLogContext&, const QString& msg) {
      if (type != QtDebugMsg && type != QtInfoMsg && !msg.contains("propagateSizeHints") &&
          !msg.contains("XDG_RUNTIME_DIR"))
        std::fprintf(stderr, "qt: %s\n", qPrintable(msg));
    });
    app = std::make_unique<QApplication>(argc, argv);
  }
  FrontierChart chart;
  chart.resize(1000, 620);
  chart.setTitle(QString::fromStdString(title));
  chart.setLegendAlignment(Qt::AlignRight);
  chart.setRows(rows);
  chart.show();  // lays out the chart so rendering has real geometry
  QApplication::processEvents();
  const QString p = QString::fromStdString(path);
  QString err;
  bool ok = false;
  if (p.endsWith(".svg", Qt::CaseInsensitive))
    ok = chart.exportSvg(p, &err);
  else if (p.endsWith(".png", Qt::CaseInsensitive))
    ok = chart.exportPng(p, 2.0, &err);
  else
    err = "plot file must end in .svg or .png: " + p;
  if (!ok && error) *error = err.toStdString();
  return ok;
}

}  // namespace nestscope
