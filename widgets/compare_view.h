// CompareView: an A/B pair of continuations of one prompt (e.g. without and with an ablation),
// side by side, with the first divergence and the change in each shared token's log-probability.
#pragma once
#include <QString>
#include <QWidget>
#include <vector>

class QLabel;
class QTextEdit;

namespace nestscope {

struct ComparedToken {
  QString text;
  double prob = 0;  // probability the model gave the token it produced
};

class CompareView : public QWidget {
  Q_OBJECT
 public:
  explicit CompareView(QWidget* parent = nullptr);

  // Shows the pair; tokens before the first divergence are tinted by log p_B − log p_A.
  void setPair(const QString& label_a, const std::vector<ComparedToken>& a, const QString& label_b,
               const std::vector<ComparedToken>& b);
  int divergence() const { return divergence_; }       // first differing token (-1: none)
  double meanAbsDeltaLogProb() const { return mean_abs_; }  // over the shared prefix
  QString summary() const;

 private:
  QLabel* summary_;
  QLabel* label_a_;
  QLabel* label_b_;
  QTextEdit* a_;
  QTextEdit* b_;
  int divergence_ = -1;
  double mean_abs_ = 0;
};

}  // namespace nestscope
