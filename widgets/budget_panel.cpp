#include "widgets/budget_panel.h"

#include <QCheckBox>
#include <QComboBox>
#include <QFormLayout>
#include <QGroupBox>
#include <QHBoxLayout>
#include <QLabel>
#include <QPushButton>
#include <QSlider>
#include <QSpinBox>
#include <QTimer>
#include <QToolButton>
#include <QGridLayout>
#include <QVBoxLayout>
#include <cmath>

#include "core/engine/presets.h"

namespace nestscope {

namespace {

QString human(double n) {
  if (n >= 1e9) return QString::number(n / 1e9, 'f', 2) + "G";
  if (n >= 1e6) return QString::number(n / 1e6, 'f', 2) + "M";
  if (n >= 1e3) return QString::number(n / 1e3, 'f', 1) + "k";
  return QString::number(n, 'f', 0);
}

// A horizontal slider with arrow-key steps of 1 and PageUp/PageDown (Shift-less jumps) of `page`.
QSlider* slider(int lo, int hi, int page) {
  auto* s = new QSlider(Qt::Horizontal);
  s->setRange(lo, hi);
  s->setSingleStep(1);
  s->setPageStep(page);
  s->setFocusPolicy(Qt::StrongFocus);
  return s;
}

// Kind combo entries: "model's own" then the three parameterizations.
QComboBox* kind_box() {
  auto* c = new QComboBox;
  c->addItem(QObject::tr("as loaded"), -1);
  c->addItem(QObject::tr("dense"), int(LinearKind::Dense));
  c->addItem(QObject::tr("NSN (rank)"), int(LinearKind::Nsn));
  c->addItem(QObject::tr("MPO (χ)"), int(LinearKind::Mpo));
  return c;
}

}  // namespace

BudgetPanel::BudgetPanel(QWidget* parent) : QWidget(parent) {
  attn_kind_ = kind_box();
  mlp_kind_ = kind_box();
  rank_ = slider(1, 1, 8);
  rank_label_ = new QLabel;
  bond_ = slider(1, 1, 4);
  bond_label_ = new QLabel;
  policy_ = new QComboBox;
  for (const char* p : {"off", "sensing", "oracle", "static", "random"}) policy_->addItem(p);
  active_ = slider(5, 100, 10);
  active_->setValue(50);
  active_label_ = new QLabel;
  adaptive_ = new QCheckBox(tr("token-adaptive (more measurements when uncertain)"));
  m_min_ = new QSpinBox;
  m_max_ = new QSpinBox;
  for (auto* sb : {m_min_, m_max_}) {
    sb->setRange(0, 4096);
    sb->setSpecialValueText(tr("auto"));
  }
  heads_ = slider(1, 1, 1);
  heads_label_ = new QLabel;
  reprobe_ = new QCheckBox(tr("re-probe heads when uncertain"));
  reprobe_->setToolTip(tr("When a token's predictive entropy reaches half of its maximum, run the knockout "
                          "probes again on the text so far and keep the new top heads (at most every %1 tokens)")
                           .arg(GateOptions{}.head_reprobe_cooldown));
  head_global_ = new QCheckBox(tr("spread heads by importance across layers"));
  head_global_->setToolTip(tr("Keep the model's most important heads wherever they are (the same total, each "
                              "layer at least one) instead of the same number in every layer"));
  keep_ = slider(5, 100, 10);
  keep_->setValue(100);
  keep_label_ = new QLabel;
  target_ = slider(30, 100, 10);
  target_->setValue(100);
  target_->setToolTip(tr("One knob for prompt and model: the engine measures which mix of gate blocks and kept "
                         "prompt tokens fits this share of the MACs best (overrides both sliders)"));
  target_label_ = new QLabel;
  play_ = new QPushButton(tr("▶ Play budget"));
  play_->setToolTip(tr("Animate the budget from full to minimum while the model writes"));
  anim_ = new QTimer(this);
  anim_->setInterval(400);
  readout_ = new QLabel;
  readout_->setWordWrap(true);
  readout_->setTextInteractionFlags(Qt::TextSelectableByMouse);

  auto* kinds = new QGroupBox(tr("Parameterization"));
  auto* kf = new QFormLayout(kinds);
  kf->addRow(tr("attention"), attn_kind_);
  kf->addRow(tr("MLP"), mlp_kind_);
  auto* sizes = new QGroupBox(tr("Rank and bond dimension"));
  auto* sf = new QFormLayout(sizes);
  sf->addRow(rank_label_, rank_);
  sf->addRow(bond_label_, bond_);
  layers_toggle_ = new QToolButton;
  layers_toggle_->setText(tr("Per-layer ranks"));
  layers_toggle_->setCheckable(true);
  layers_toggle_->setToolButtonStyle(Qt::ToolButtonTextBesideIcon);
  layers_toggle_->setArrowType(Qt::RightArrow);
  layers_box_ = new QWidget;
  layers_box_->setVisible(false);
  new QGridLayout(layers_box_);
  sf->addRow(layers_toggle_);
  sf->addRow(layers_box_);
  connect(layers_toggle_, &QToolButton::toggled, this, [this](bool on) {
    layers_box_->setVisible(on);
    layers_toggle_->setArrowType(on ? Qt::DownArrow : Qt::RightArrow);
  });
  auto* gate = new QGroupBox(tr("Sensing gate"));
  auto* gf = new QFormLayout(gate);
  gf->addRow(tr("policy"), policy_);
  gf->addRow(active_label_, active_);
  gf->addRow(adaptive_);
  auto* mr = new QHBoxLayout;
  mr->addWidget(m_min_);
  mr->addWidget(new QLabel(tr("to")));
  mr->addWidget(m_max_);
  gf->addRow(tr("measurements"), mr);
  gf->addRow(heads_label_, heads_);
  gf->addRow(head_global_);
  gf->addRow(reprobe_);
  auto* prompt = new QGroupBox(tr("Prompt"));
  auto* pf = new QFormLayout(prompt);
  pf->addRow(keep_label_, keep_);
  pf->addRow(target_label_, target_);
  auto* lay = new QVBoxLayout(this);
  lay->addWidget(kinds);
  lay->addWidget(sizes);
  lay->addWidget(gate);
  lay->addWidget(prompt);
  lay->addWidget(play_);
  lay->addWidget(readout_);
  lay->addStretch();

  for (auto* c : {attn_kind_, mlp_kind_, policy_})
    connect(c, &QComboBox::currentIndexChanged, this, &BudgetPanel::emitChanged);
  for (auto* s : {rank_, bond_, active_, heads_, keep_, target_}) connect(s, &QSlider::valueChanged, this, &BudgetPanel::emitChanged);
  for (auto* s : {m_min_, m_max_}) connect(s, &QSpinBox::valueChanged, this, &BudgetPanel::emitChanged);
  connect(adaptive_, &QCheckBox::toggled, this, &BudgetPanel::emitChanged);
  connect(reprobe_, &QCheckBox::toggled, this, &BudgetPanel::emitChanged);
  connect(head_global_, &QCheckBox::toggled, this, &BudgetPanel::emitChanged);
  connect(play_, &QPushButton::clicked, this, &BudgetPanel::play);
  connect(anim_, &QTimer::timeout, this, [this] {
    QSlider* s = rank_->isEnabled() ? rank_ : bond_->isEnabled() ? bond_ : active_;
    if (s == active_ && policy_->currentIndex() == 0) policy_->setCurrentIndex(1);
    const int step = std::max(1, (s->maximum() - s->minimum()) / 16);
    if (s->value() <= s->minimum()) {
      play();  // reached the minimum: stop
      return;
    }
    s->setValue(std::max(s->minimum(), s->value() - step));
  });
  setLimits({});
}

void BudgetPanel::play() {
  if (anim_->isActive()) {
    anim_->stop();
    play_->setText(tr("▶ Play budget"));
    return;
  }
  QSlider* s = rank_->isEnabled() ? rank_ : bond_->isEnabled() ? bond_ : active_;
  s->setValue(s->maximum());
  play_->setText(tr("■ Stop"));
  anim_->start();
}

void BudgetPanel::setLimits(const BudgetLimits& l) {
  limits_ = l;
  quiet_ = true;
  rank_->setRange(1, std::max(1, l.rank));
  rank_->setValue(rank_->maximum());
  rank_->setPageStep(std::max(1, l.rank / 8));
  bond_->setRange(1, std::max(1, l.bond));
  bond_->setValue(bond_->maximum());
  heads_->setRange(1, std::max(1, l.heads));
  heads_->setValue(heads_->maximum());
  attn_kind_->setCurrentIndex(0);
  mlp_kind_->setCurrentIndex(0);
  policy_->setCurrentIndex(0);
  keep_->setValue(100);
  // One box per projection: 0 follows the global rank.
  auto* grid = static_cast<QGridLayout*>(layers_box_->layout());
  for (auto& [name, spin] : layer_spins_) delete spin;
  while (auto* item = grid->takeAt(0)) {
    delete item->widget();
    delete item;
  }
  layer_spins_.clear();
  int row = 0;
  for (const auto& [name, max_rank] : l.layers) {
    auto* spin = new QSpinBox;
    spin->setRange(0, std::max(1, max_rank));
    spin->setSpecialValueText(tr("global"));
    grid->addWidget(new QLabel(QString::fromStdString(name)), row / 2, (row % 2) * 2);
    grid->addWidget(spin, row / 2, (row % 2) * 2 + 1);
    ++row;
    connect(spin, &QSpinBox::valueChanged, this, &BudgetPanel::emitChanged);
    layer_spins_.emplace_back(name, spin);
  }
  layers_toggle_->setVisible(!l.layers.empty());
  quiet_ = false;
  updateLabels();
}

QSpinBox* BudgetPanel::layerRankBox(const std::string& name) const {
  for (const auto& [n, spin] : layer_spins_)
    if (n == name) return spin;
  return nullptr;
}

Budget BudgetPanel::budget() const {
  Budget b;
  auto kind_of = [](QComboBox* c, LinearKind own) {
    const int v = c->currentData().toInt();
    return v < 0 ? own : LinearKind(v);
  };
  const LinearKind attn = kind_of(attn_kind_, limits_.attn), mlp = kind_of(mlp_kind_, limits_.mlp);
  if (attn != limits_.attn) b.kind["attn"] = attn;
  if (mlp != limits_.mlp) b.kind["mlp"] = mlp;
  const bool any_nsn = attn == LinearKind::Nsn || mlp == LinearKind::Nsn;
  const bool any_mpo = attn == LinearKind::Mpo || mlp == LinearKind::Mpo;
  if (any_nsn && rank_->value() < rank_->maximum()) b.rank = rank_->value();
  for (const auto& [name, spin] : layer_spins_)  // per-layer overrides, on NSN layers only
    if (spin->value() > 0 && b.kind_for(projection_family(name), projection_family(name).rfind("attn", 0) == 0
                                                                        ? limits_.attn
                                                                        : projection_family(name).rfind("mlp", 0) == 0
                                                                              ? limits_.mlp
                                                                              : LinearKind::Dense) == LinearKind::Nsn)
      b.layer_rank[name] = spin->value();
  if (any_mpo && bond_->value() < bond_->maximum()) b.bond = bond_->value();
  if (const auto policy = GatePolicy(policy_->currentIndex()); policy != GatePolicy::Off) {
    b.gate = recommended_gate(active_->value() / 100.0);
    b.gate.policy = policy;
    b.gate.gamma = adaptive_->isChecked() ? 1.0 : 0.0;
    b.gate.m_min = m_min_->value();
    b.gate.m_max = m_max_->value();
  }
  if (heads_->value() < heads_->maximum()) {
    b.gate.head_active = double(heads_->value()) / double(heads_->maximum());
    if (reprobe_->isChecked()) b.gate.head_reprobe = kReprobeEntropy;
    b.gate.head_global = head_global_->isChecked();
  }
  b.prompt_keep = keep_->value() / 100.0;
  if (target_->value() < 100) {
    b.mac_target = target_->value() / 100.0;
    if (b.gate.policy == GatePolicy::Off) {  // the knob trades gate blocks too: the recommended gate
      GateOptions g = recommended_gate(b.gate.active);
      g.head_active = b.gate.head_active;
      g.head_reprobe = b.gate.head_reprobe;
      g.head_global = b.gate.head_global;
      b.gate = g;
    }
  }
  return b;
}

void BudgetPanel::setBudget(const Budget& b) {
  quiet_ = true;
  auto set_kind = [](QComboBox* c, const Budget& b, const char* group) {
    auto it = b.kind.find(group);
    c->setCurrentIndex(it == b.kind.end() ? 0 : c->findData(int(it->second)));
  };
  set_kind(attn_kind_, b, "attn");
  set_kind(mlp_kind_, b, "mlp");
  rank_->setValue(b.rank == 0 ? rank_->maximum() : int(b.rank));
  bond_->setValue(b.bond == 0 ? bond_->maximum() : int(b.bond));
  policy_->setCurrentIndex(int(b.gate.policy));
  active_->setValue(int(std::lround(b.gate.active * 100)));
  adaptive_->setChecked(b.gate.gamma > 0);
  m_min_->setValue(int(b.gate.m_min));
  m_max_->setValue(int(b.gate.m_max));
  heads_->setValue(int(std::lround(b.gate.head_active * heads_->maximum())));
  reprobe_->setChecked(b.gate.head_reprobe > 0);
  head_global_->setChecked(b.gate.head_global);
  keep_->setValue(int(std::lround(b.prompt_keep * 100)));
  target_->setValue(b.mac_target > 0 ? int(std::lround(b.mac_target * 100)) : 100);
  for (const auto& [name, spin] : layer_spins_) {
    auto it = b.layer_rank.find(name);
    spin->setValue(it == b.layer_rank.end() ? 0 : int(it->second));
  }
  quiet_ = false;
  emitChanged();
}

void BudgetPanel::updateLabels() {
  const Budget b = budget();
  const bool any_nsn = b.kind_for("attn.q", limits_.attn) == LinearKind::Nsn || b.kind_for("mlp.up", limits_.mlp) == LinearKind::Nsn;
  const bool any_mpo = b.kind_for("attn.q", limits_.attn) == LinearKind::Mpo || b.kind_for("mlp.up", limits_.mlp) == LinearKind::Mpo;
  rank_->setEnabled(any_nsn && limits_.rank > 0);
  for (const auto& [name, spin] : layer_spins_) {
    const std::string family = projection_family(name);
    const LinearKind own = family.rfind("attn", 0) == 0 ? limits_.attn : family.rfind("mlp", 0) == 0 ? limits_.mlp : LinearKind::Dense;
    spin->setEnabled(b.kind_for(family, own) == LinearKind::Nsn);
  }
  bond_->setEnabled(any_mpo && limits_.bond > 0);
  rank_label_->setText(rank_->value() >= rank_->maximum() ? tr("rank: full") : tr("rank: %1").arg(rank_->value()));
  bond_label_->setText(bond_->value() >= bond_->maximum() ? tr("χ: full") : tr("χ: %1").arg(bond_->value()));
  const bool gated = policy_->currentIndex() != 0;
  active_->setEnabled(gated);
  adaptive_->setEnabled(gated);
  m_min_->setEnabled(gated);
  m_max_->setEnabled(gated);
  active_label_->setText(tr("blocks kept: %1%").arg(active_->value()));
  reprobe_->setEnabled(heads_->value() < heads_->maximum());
  head_global_->setEnabled(heads_->value() < heads_->maximum());
  heads_label_->setText(head_global_->isChecked() && heads_->value() < heads_->maximum()
                            ? tr("heads kept: %1 of %2 on average").arg(heads_->value()).arg(heads_->maximum())
                            : tr("heads kept: %1 of %2").arg(heads_->value()).arg(heads_->maximum()));
  keep_label_->setText(keep_->value() >= 100 ? tr("prompt kept: all") : tr("prompt kept: %1%").arg(keep_->value()));
  const bool knob = target_->value() < 100;
  target_label_->setText(knob ? tr("MAC target: %1% (gate + prompt)").arg(target_->value()) : tr("MAC target: off"));
  keep_->setEnabled(!knob);
  if (knob) active_->setEnabled(false);
}

void BudgetPanel::emitChanged() {
  updateLabels();
  if (!quiet_) Q_EMIT budgetChanged(budget());
}

void BudgetPanel::setReadout(const BudgetReadout& r) {
  QString t = tr("<b>%1</b> MACs/token (%2% of dense) · %3 parameters in use")
                  .arg(human(r.macs))
                  .arg(r.dense_macs > 0 ? 100.0 * r.macs / r.dense_macs : 100.0, 0, 'f', 1)
                  .arg(human(r.params));
  t += r.estimated_accuracy >= 0 ? tr("<br>estimated accuracy %1% (frontier)").arg(100 * r.estimated_accuracy, 0, 'f', 1)
                                 : tr("<br>estimated accuracy: run a frontier sweep");
  if (r.ms_per_token > 0) t += tr(" · measured %1 ms/token").arg(r.ms_per_token, 0, 'f', 2);
  readout_->setText(t);
}

QString BudgetPanel::readoutText() const { return readout_->text(); }

}  // namespace nestscope
