// TeachingView: one projection laid open — its singular-value spectrum and the energy a rank
// keeps, W beside its rank-r reconstruction and the error, and its MPO chain with bond dimensions
// drawn as a tensor-network diagram.
#pragma once
#include <QWidget>

#include "core/engine/engine.h"

class QComboBox;
class QImage;
class QLabel;
class QSpinBox;

namespace nestscope {

class TeachingView : public QWidget {
  Q_OBJECT
 public:
  explicit TeachingView(QWidget* parent = nullptr);

  void setProjections(const QStringList& names, int rank_limit, int bond_limit);
  void setView(const LayerView& view);
  // Shows the budget's rank and χ (0 = full), so the drawing is the layer the model runs now.
  void followBudget(int rank, int bond);
  const LayerView& view() const { return view_; }
  QString summary() const;  // the text line under the drawings (for tests and screen readers)
  // The spectrum (index, σ, cumulative energy) and the chain's bonds. False + *error on failure.
  bool exportCsv(const QString& path, QString* error = nullptr) const;
  QSize sizeHint() const override { return {640, 520}; }

 public Q_SLOTS:
  void request();  // asks for the layer / rank / χ the controls show

 Q_SIGNALS:
  void viewRequested(const QString& name, int rank, int bond);

 protected:
  void paintEvent(QPaintEvent*) override;

 private:
  QComboBox* layer_;
  QSpinBox* rank_;
  QSpinBox* bond_;
  QLabel* summary_;
  LayerView view_;
};

}  // namespace nestscope
Q_DECLARE_METATYPE(nestscope::LayerView)
