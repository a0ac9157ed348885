// BudgetPanel: every compute knob of the model as a slider, and what the budget costs.
#pragma once
#include <QWidget>
#include <string>
#include <utility>
#include <vector>

#include "core/model/budget.h"

class QCheckBox;
class QComboBox;
class QLabel;
class QPushButton;
class QSlider;
class QSpinBox;
class QTimer;
class QToolButton;

namespace nestscope {

// What the sliders may reach for the loaded model (from ModelInfo).
struct BudgetLimits {
  int rank = 0;        // largest NSN rank (own layers or SVD variants); 0 = no rank knob
  int bond = 0;        // largest MPO χ (own layers or TT-SVD variants); 0 = no χ knob
  int heads = 1;
  int mlp_width = 0;   // N, for the gate's block count
  LinearKind attn = LinearKind::Dense;  // the model's own kinds
  LinearKind mlp = LinearKind::Dense;
  // Every projection ("blk.0.attn.q", …) and the largest rank it can take, for per-layer ranks.
  std::vector<std::pair<std::string, int>> layers;
};

// The numbers shown under the sliders; negative = unknown. Each is shown as measured or as an
// estimate, never one passed off as the other.
struct BudgetReadout {
  double macs = 0, dense_macs = 0;   // the budget's MACs per token at full context (an estimate)
  double measured_macs = -1;         // mean MACs per token of the last generation under this budget
  double measured_dense_macs = -1;   // the dense model's on the same tokens (same context lengths)
  double params = 0;
  double accuracy = -1;              // token accuracy from the frontier
  bool accuracy_measured = false;    // a swept row of exactly this budget (else: the fit's estimate)
  bool accuracy_bound = false;       // no series of this budget's kind: an upper bound (accuracy_bound())
  QString bound_from;                // what bounds it ("the best swept budget at these MACs", "χ = 4 alone")
  double ms_per_token = -1;          // measured by the last generation
};

class BudgetPanel : public QWidget {
  Q_OBJECT
 public:
  explicit BudgetPanel(QWidget* parent = nullptr);

  void setLimits(const BudgetLimits& limits);
  const BudgetLimits& limits() const { return limits_; }
  Budget budget() const;             // what the controls say now
  void setBudget(const Budget& b);   // moves the controls (emits budgetChanged once)
  void showBudget(const Budget& b);  // moves the controls to what runs, without emitting
  void setReadout(const BudgetReadout& r);
  QString readoutText() const;       // the readout line, for tests and the status bar

  QSlider* rankSlider() const { return rank_; }
  QSlider* bondSlider() const { return bond_; }
  QSlider* gateSlider() const { return active_; }
  QSlider* keepSlider() const { return keep_; }
  QSlider* targetSlider() const { return target_; }
  QCheckBox* reprobeBox() const { return reprobe_; }
  QPushButton* playButton() const { return play_; }
  QCheckBox* headGlobalBox() const { return head_global_; }
  // The per-layer rank box of a projection (0 = follow the global rank), or nullptr.
  QSpinBox* layerRankBox(const std::string& name) const;

 public Q_SLOTS:
  void play();  // animates the rank (else χ, else gate) from full to its minimum; again = stop
  void stopPlay();  // stops the animation and returns to the budget it started from

 Q_SIGNALS:
  void budgetChanged(const nestscope::Budget& budget);

 private:
  void emitChanged();
  void updateLabels();
  void adoptFamily(LinearKind kind);  // rank / χ moved on layers without one: their SVD / TT-SVD variant
  int bondValue() const;              // χ at the bond slider's position
  void setBondValue(int bond);

  BudgetLimits limits_;
  bool quiet_ = false;
  QComboBox* attn_kind_;
  QComboBox* mlp_kind_;
  QSlider* rank_;
  QLabel* rank_label_;
  QSlider* bond_;  // positions index bond_values_
  std::vector<int> bond_values_;
  QLabel* bond_label_;
  QComboBox* policy_;
  QSlider* active_;
  QLabel* active_label_;
  QCheckBox* adaptive_;
  QCheckBox* reprobe_;
  QCheckBox* head_global_;
  QSlider* target_;  // Budget::mac_target (100 = off)
  QLabel* target_label_;  // GateOptions::head_reprobe at kReprobeEntropy
  static constexpr double kReprobeEntropy = 0.5;
  QSpinBox* m_min_;
  QSpinBox* m_max_;
  QSlider* heads_;
  QLabel* heads_label_;
  QSlider* keep_;
  QLabel* keep_label_;
  QPushButton* play_;
  QToolButton* layers_toggle_;
  QWidget* layers_box_;
  std::vector<std::pair<std::string, QSpinBox*>> layer_spins_;
  QTimer* anim_;
  QSlider* play_slider_ = nullptr;
  Budget play_start_;
  QLabel* readout_;
};

}  // namespace nestscope
Q_DECLARE_METATYPE(nestscope::Budget)
