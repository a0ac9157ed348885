// FrontierChart: accuracy against compute, one series per method, the Pareto front and the
// current operating point (Qt Charts lives in this file pair only).
#pragma once
#include <QString>
#include <QWidget>
#include <string>
#include <vector>

#include "core/eval/frontier.h"

QT_BEGIN_NAMESPACE
class QChart;
class QChartView;
class QCheckBox;
class QComboBox;
class QScatterSeries;
QT_END_NAMESPACE

namespace nestscope {

enum class FrontierX { MacShare, Macs, Parameters, Latency };  // MacShare: % of the dense model's MACs
enum class FrontierY { TokenAccuracy, Perplexity, Agreement };

class FrontierChart : public QWidget {
  Q_OBJECT
 public:
  explicit FrontierChart(QWidget* parent = nullptr);

  void setRows(const std::vector<SweepRow>& rows);
  const std::vector<SweepRow>& rows() const { return rows_; }
  void setAxes(FrontierX x, FrontierY y);
  FrontierX xAxis() const { return x_; }
  FrontierY yAxis() const { return y_; }
  // The current budget as a point: `at` carries its MACs, dense MACs, parameters, latency and
  // metrics (NaN or negative where unknown). Measured = a swept row, drawn filled; otherwise an
  // estimate placed by the fit, drawn hollow. No argument hides it.
  void setOperatingPoint(const SweepRow& at, bool measured);
  void clearOperatingPoint();
  QPointF operatingPoint() const;  // in the current axes' units; NaN when hidden
  bool operatingPointMeasured() const { return point_measured_; }
  // Fitted (default): the view covers the region up to the dense model, points far beyond it
  // (a TT-SVD chain larger than the matrix) are reachable by zoom or by showing all.
  void setShowAll(bool all);
  void setTitle(const QString& title);
  void setLegendAlignment(Qt::Alignment a);  // default right
  int seriesCount() const;
  QChart* chart() const { return chart_; }

  // Exports; each returns false with a message in *error when the file cannot be written.
  bool exportPng(const QString& path, double scale = 2.0, QString* error = nullptr);
  bool exportSvg(const QString& path, QString* error = nullptr);
  bool exportCsv(const QString& path, QString* error = nullptr) const;

  // The x / y value of a row for the given axes (what the chart plots).
  static double xValue(const SweepRow& r, FrontierX x);
  static double yValue(const SweepRow& r, FrontierY y);

 private:
  void rebuild();
  bool showMarker();  // styles and places the marker; false when the point lies outside the axes
  QSize renderSize();
  bool dark() const;  // the window background is dark (system palette)
  void applyTheme();   // the chart theme for the current palette
  void changeEvent(QEvent* e) override;  // follows palette changes while open

  std::vector<SweepRow> rows_;
  FrontierX x_ = FrontierX::MacShare;
  FrontierY y_ = FrontierY::TokenAccuracy;
  bool has_point_ = false, point_measured_ = false, show_all_ = false;
  SweepRow point_row_;
  QString title_;
  QChart* chart_;
  QChartView* view_;
  QComboBox* x_box_;
  QComboBox* y_box_;
  QCheckBox* all_box_;
  QScatterSeries* marker_ = nullptr;
};

// Renders `rows` to `path` (.png at 2× or .svg) without a window: creates an offscreen
// QApplication when none exists. Throws nothing; returns false with *error set on failure.
bool render_frontier_plot(const std::vector<SweepRow>& rows, const std::string& path, const std::string& title,
                          std::string* error);

}  // namespace nestscope
