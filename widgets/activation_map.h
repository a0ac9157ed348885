// ActivationMap: what the gate ran for one token (layers × heads, layers × neuron blocks) and, as a
// timeline under it, the active fraction and measurements of every generated token.
#pragma once
#include <QString>
#include <QWidget>
#include <set>
#include <utility>
#include <vector>

class QCheckBox;

namespace nestscope {

// One generated token as the map needs it (plain values; filled from Engine's GeneratedToken).
struct TokenActivity {
  QString text;
  double prob = 0;  // probability of the token produced
  double entropy = 0;
  qint64 macs = 0;
  std::vector<std::vector<int>> blocks;  // per layer, MLP blocks that ran (empty = ungated: all)
  std::vector<std::vector<int>> oracle;  // per layer, the oracle's top-k blocks (may be empty)
  std::vector<int> measurements;         // per layer, m used (0 = none)
  std::vector<std::vector<int>> heads;   // per layer, heads that ran
  std::vector<std::pair<QString, double>> top;  // the 5 likeliest tokens and their probabilities
};

class ActivationMap : public QWidget {
  Q_OBJECT
 public:
  explicit ActivationMap(QWidget* parent = nullptr);

  void setShape(int layers, int heads, int blocks);  // clears the tokens
  void clear();
  void appendToken(const TokenActivity& token);      // selects it when following the stream
  void selectToken(int index);
  // Draw the oracle's blocks (the truly strongest k) instead of the ones the gate ran.
  void setShowOracle(bool on);
  bool showOracle() const { return show_oracle_; }
  int selectedToken() const { return selected_; }
  int tokenCount() const { return int(tokens_.size()); }
  // Fraction of MLP blocks the selected token ran, over all layers (1 when ungated, -1 if none).
  double selectedActiveFraction() const;
  // Text of the cell under a widget position ("" when none): what the hover tooltip shows.
  QString describeAt(const QPoint& pos) const;
  // Cells forced off (ablation), drawn crossed out: (layer, head) and (layer, block).
  // Forced-on cells get a green frame.
  void setAblated(const std::set<std::pair<int64_t, int64_t>>& heads, const std::set<std::pair<int64_t, int64_t>>& blocks,
                  const std::set<std::pair<int64_t, int64_t>>& heads_on = {},
                  const std::set<std::pair<int64_t, int64_t>>& blocks_on = {});
  // Whether a head / block ran for the selected token (true when nothing is selected).
  bool cellRan(bool is_head, int layer, int index) const;
  QSize sizeHint() const override { return {520, 300}; }
  // Every token: index, text, entropy, MACs, active fraction, per-layer m and blocks. False + *error on failure.
  bool exportCsv(const QString& path, QString* error = nullptr) const;

 public:
  QPointF headCellCentre(int layer, int head) const;  // where to click a head (widget coordinates)

 Q_SIGNALS:
  void tokenSelected(int index);
  // A click on a head (is_head) or a neuron block cell: layer and index.
  void cellClicked(bool is_head, int layer, int index);

 protected:
  void paintEvent(QPaintEvent*) override;
  void mouseMoveEvent(QMouseEvent* e) override;
  void mousePressEvent(QMouseEvent* e) override;

 private:
  struct Layout {
    QRectF heads, blocks, timeline;
  };
  Layout layout() const;
  bool blockActive(const TokenActivity& t, int layer, int block) const;
  double activeFraction(const TokenActivity& t) const;

  int layers_ = 0, heads_ = 0, blocks_ = 0;
  std::vector<TokenActivity> tokens_;
  int selected_ = -1;
  bool follow_ = true;  // the newest token is selected until the user picks one
  std::set<std::pair<int64_t, int64_t>> heads_off_, blocks_off_, heads_on_, blocks_on_;
  bool show_oracle_ = false;
  QCheckBox* oracle_box_;
};

}  // namespace nestscope
