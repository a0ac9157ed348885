#include "widgets/frontier_chart.h"

#include <QEvent>
#include <QApplication>
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
    case FrontierX::Parameters: return "parameters in use";
    case FrontierX::Latency: return "measured ms / token (batch 1, CPU)";
    case FrontierX::Macs: break;
  }
  return "MACs / token (full context)";
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
  x_box_->addItems({"MACs", "parameters", "latency"});
  y_box_ = new QComboBox;
  y_box_->addItems({"token accuracy", "perplexity", "agreement"});
  auto* bar = new QHBoxLayout;
  bar->addWidget(new QLabel(tr("x:")));
  bar->addWidget(x_box_);
  bar->addWidget(new QLabel(tr("y:")));
  bar->addWidget(y_box_);
  bar->addStretch();
  auto* lay = new QVBoxLayout(this);
  lay->setContentsMargins(0, 0, 0, 0);
  lay->addLayout(bar);
  lay->addWidget(view_, 1);
  connect(x_box_, &QComboBox::currentIndexChanged, this, [this](int i) { setAxes(FrontierX(i), y_); });
  connect(y_box_, &QComboBox::currentIndexChanged, this, [this](int i) { setAxes(x_, FrontierY(i)); });
  rebuild();
}

double FrontierChart::xValue(const SweepRow& r, FrontierX x) {
  switch (x) {
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

void FrontierChart::setOperatingPoint(double x, double y) {
  point_ = QPointF(x, y);
  if (!marker_) return;
  marker_->clear();
  const bool shown = !std::isnan(x) && !std::isnan(y);
  if (shown) marker_->append(point_);
  for (auto* m : chart_->legend()->markers(marker_)) m->setVisible(shown);
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
  // One line + scatter per method, points sorted by x.
  std::vector<std::string> order;
  std::map<std::string, std::vector<QPointF>> pts;
  double xmin = 1e300, xmax = -1e300, ymin = 1e300, ymax = -1e300;
  for (const auto& r : rows_) {
    const double x = xValue(r, x_), y = yValue(r, y_);
    if (!(x > 0) || std::isnan(y) || y < 0) continue;  // e.g. latency not measured, agreement unknown
    if (!pts.count(r.method)) order.push_back(r.method);
    pts[r.method].push_back({x, y});
    xmin = std::min(xmin, x), xmax = std::max(xmax, x), ymin = std::min(ymin, y), ymax = std::max(ymax, y);
  }
  const bool log_x = x_ != FrontierX::Latency;
  QAbstractAxis* ax;
  if (log_x) {
    auto* l = new QLogValueAxis;
    l->setBase(10);
    l->setLabelFormat("%.3g");
    l->setMinorTickCount(8);
    if (xmin < xmax) l->setRange(xmin / 1.15, xmax * 1.15);
    ax = l;
  } else {
    auto* v = new QValueAxis;
    if (xmin < xmax) v->setRange(0, xmax * 1.1);
    ax = v;
  }
  ax->setTitleText(x_name(x_));
  auto* ay = new QValueAxis;
  ay->setTitleText(y_name(y_));
  if (ymin <= ymax) {
    const double pad = std::max(1e-3, (ymax - ymin) * 0.06);
    ay->setRange(ymin - pad, ymax + pad);
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
  marker_ = new QScatterSeries;
  marker_->setName(tr("now"));
  marker_->setMarkerShape(QScatterSeries::MarkerShapeRectangle);
  marker_->setMarkerSize(14);
  marker_->setColor(QColor(220, 20, 60));
  chart_->addSeries(marker_);
  marker_->attachAxis(ax);
  marker_->attachAxis(ay);
  setOperatingPoint(point_.x(), point_.y());
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
