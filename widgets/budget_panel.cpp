#include "widgets/budget_panel.h"

#include <QCheckBox>
#include <QComboBox>
#include <QFormLayout>
#include <QGroupBox>
#include <QHBoxLayout>
#include <QLabel>
#include <QPushButton>
#include <QScrollArea>
#include <QScrollBar>
#include <QSlider>
#include <QSpinBox>
#include <QTimer>
#include <QToolButton>
#include <QGridLayout>
#include <QVBoxLayout>
#include <cmath>

#include "core/engine/presets.h"
#include "widgets/theme.h"

namespace nestscope {

namespace {

// A horizontal slider with arrow-key steps of 1 and PageUp/PageDown (Shift-less jumps) of `page`.
QSlider* slider(int lo, int hi, int page) {
  auto* s = new QSlider(Qt::Horizontal);
  s->setRange(lo, hi);
  s->setSingleStep(1);
  s->setPageStep(page);
  s->setFocusPolicy(Qt::StrongFocus);
  return s;
}

// A slider's label keeps one width whatever it says, so the track never moves under the mouse.
void fix_width(QLabel* label, const QStringList& widest) {
  int w = 0;
  for (const QString& t : widest) w = std::max(w, label->fontMetrics().horizontalAdvance(t));
  label->setFixedWidth(w + 6);
}

// Kind combo entries: "model's own" then the three parameterizations.
QComboBox* kind_box() {
  auto* c = new QComboBox;
  c->addItem(QObject::tr("as loaded"), -1);
  c->addItem(QObject::tr("dense"), int(LinearKind::Dense));
  c->addItem(QObject::tr("SVD → NSN (rank)"), int(LinearKind::Nsn));
  c->addItem(QObject::tr("TT-SVD → MPO (χ)"), int(LinearKind::Mpo));
  c->setToolTip(QObject::tr("How these projections are parameterized; dragging rank or χ picks the SVD or "
                            "TT-SVD variant of a dense model by itself"));
  return c;
}

}  // namespace

BudgetPanel::BudgetPanel(QWidget* parent) : QWidget(parent) {
  attn_kind_ = kind_box();
  mlp_kind_ = kind_box();
  rank_ = slider(1, 1, 8);
  rank_label_ = new QLabel;
  bond_ = slider(0, 0, 1);  // a position in bond_values_
  bond_label_ = new QLabel;
  policy_ = new QComboBox;
  for (const char* p : {"off", "sensing", "oracle", "static", "random"}) policy_->addItem(p);
  active_ = slider(5, 100, 12);
  active_->setValue(50);
  active_->setToolTip(tr("Share of the MLP's neuron blocks the gate runs per token; dragging it with the "
                         "gate off turns the sensing gate on"));
  active_label_ = new QLabel;
  adaptive_ = new QCheckBox(tr("token-adaptive"));
  adaptive_->setWhatsThis(tr("More measurements when the model is uncertain, fewer when it is confident"));
  m_min_ = new QSpinBox;
  m_max_ = new QSpinBox;
  for (auto* sb : {m_min_, m_max_}) {
    sb->setRange(0, 4096);
    sb->setSpecialValueText(tr("auto"));
  }
  heads_ = slider(1, 1, 1);
  heads_label_ = new QLabel;
  reprobe_ = new QCheckBox(tr("re-probe when uncertain"));
  reprobe_->setWhatsThis(tr("When a token's predictive entropy reaches half of its maximum, run the knockout "
                          "probes again on the text so far and keep the new top heads (at most every %1 tokens)")
                           .arg(GateOptions{}.head_reprobe_cooldown));
  head_global_ = new QCheckBox(tr("spread heads across layers"));
  head_global_->setWhatsThis(tr("Keep the model's most important heads wherever they are (the same total, each "
                              "layer at least one) instead of the same number in every layer"));
  keep_ = slider(5, 100, 12);
  keep_->setValue(100);
  keep_label_ = new QLabel;
  target_ = slider(30, 100, 9);
  target_->setValue(100);
  target_->setToolTip(tr("One knob for prompt and model: the engine measures which mix of gate blocks and kept "
                         "prompt tokens fits this share of the MACs best (overrides both sliders)"));
  target_label_ = new QLabel;
  play_ = new QPushButton(tr("▶ Play budget"));
  play_->setToolTip(tr("Animate the budget from full to minimum while the model writes"));
  anim_ = new QTimer(this);
  anim_->setInterval(400);
  readout_ = new QLabel;
  fix_width(rank_label_, {tr("rank: full"), tr("rank: 8888")});
  fix_width(bond_label_, {tr("χ: full"), tr("χ: 88888")});
  fix_width(active_label_, {tr("blocks: 100%")});
  fix_width(heads_label_, {tr("heads: ~88/88")});
  fix_width(keep_label_, {tr("prompt: all"), tr("prompt: 100%")});
  fix_width(target_label_, {tr("MACs: off"), tr("MACs: 100%")});
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
  // The knobs scroll on a small screen; Play and the readout stay in view under them.
  auto* knobs = new QWidget;
  auto* kl = new QVBoxLayout(knobs);
  kl->setContentsMargins(0, 0, 0, 0);
  kl->addWidget(kinds);
  kl->addWidget(sizes);
  kl->addWidget(gate);
  kl->addWidget(prompt);
  kl->addStretch();
  auto* scroll = new QScrollArea;
  scroll->setWidget(knobs);
  scroll->setWidgetResizable(true);
  scroll->setFrameShape(QFrame::NoFrame);
  scroll->setHorizontalScrollBarPolicy(Qt::ScrollBarAlwaysOff);
  scroll->setMinimumWidth(knobs->minimumSizeHint().width() + scroll->verticalScrollBar()->sizeHint().width());
  auto* lay = new QVBoxLayout(this);
  lay->setContentsMargins(4, 4, 4, 4);
  lay->addWidget(scroll, 1);
  lay->addWidget(play_);
  lay->addWidget(readout_);

  for (auto* c : {attn_kind_, mlp_kind_, policy_})
    connect(c, &QComboBox::currentIndexChanged, this, &BudgetPanel::emitChanged);
  // Rank and χ always work: on layers that have neither, the first move picks the SVD (rank) or
  // TT-SVD (χ) variant and the combos show it. Blocks kept turns the gate on the same way.
  connect(rank_, &QSlider::valueChanged, this, [this] { adoptFamily(LinearKind::Nsn); });
  connect(bond_, &QSlider::valueChanged, this, [this] { adoptFamily(LinearKind::Mpo); });
  connect(active_, &QSlider::valueChanged, this, [this] {
    if (!quiet_ && policy_->currentIndex() == 0) {
      const QSignalBlocker b(policy_);
      policy_->setCurrentIndex(int(GatePolicy::Sensing));
    }
  });
  for (auto* s : {rank_, bond_, active_, heads_, keep_, target_}) connect(s, &QSlider::valueChanged, this, &BudgetPanel::emitChanged);
  for (auto* s : {m_min_, m_max_}) connect(s, &QSpinBox::valueChanged, this, &BudgetPanel::emitChanged);
  connect(adaptive_, &QCheckBox::toggled, this, &BudgetPanel::emitChanged);
  connect(reprobe_, &QCheckBox::toggled, this, &BudgetPanel::emitChanged);
  connect(head_global_, &QCheckBox::toggled, this, &BudgetPanel::emitChanged);
  connect(play_, &QPushButton::clicked, this, &BudgetPanel::play);
  connect(anim_, &QTimer::timeout, this, [this] {
    QSlider* s = play_slider_;
    const int step = std::max(1, (s->maximum() - s->minimum()) / 16);
    if (s->value() <= s->minimum()) {
      stopPlay();  // reached the minimum
      return;
    }
    s->setValue(std::max(s->minimum(), s->value() - step));
  });
  setLimits({});
}

void BudgetPanel::play() {
  if (anim_->isActive()) {
    stopPlay();
    return;
  }
  // The knob the model has: rank (an SVD variant of a dense model), else χ, else the gate.
  play_slider_ = limits_.rank > 0 ? rank_ : limits_.bond > 0 ? bond_ : active_;
  play_start_ = budget();
  play_slider_->setValue(play_slider_->maximum());
  play_->setText(tr("■ Stop"));
  anim_->start();
}

void BudgetPanel::stopPlay() {
  if (!anim_->isActive()) return;
  anim_->stop();
  play_->setText(tr("▶ Play budget"));
  setBudget(play_start_);  // the budget it started from, not the minimum it reached
}

void BudgetPanel::adoptFamily(LinearKind kind) {
  if (quiet_) return;
  const Budget b = budget();
  if (b.kind_for("attn.q", limits_.attn) == kind || b.kind_for("mlp.up", limits_.mlp) == kind) return;
  const QSignalBlocker ba(attn_kind_), bm(mlp_kind_);
  for (QComboBox* c : {attn_kind_, mlp_kind_}) c->setCurrentIndex(c->findData(int(kind)));
  // The other knob no longer acts on these layers: it goes back to full, so it shows what runs.
  QSlider* other = kind == LinearKind::Nsn ? bond_ : rank_;
  const QSignalBlocker bo(other);
  other->setValue(other->maximum());
}

int BudgetPanel::bondValue() const {
  return bond_values_.empty() ? 1 : bond_values_[size_t(std::clamp(bond_->value(), 0, int(bond_values_.size()) - 1))];
}

void BudgetPanel::setBondValue(int bond) {
  // A χ off the steps (from a session or a script) joins them, so the budget round-trips.
  if (std::find(bond_values_.begin(), bond_values_.end(), bond) == bond_values_.end() && bond >= 1 &&
      bond <= limits_.bond) {
    bond_values_.insert(std::upper_bound(bond_values_.begin(), bond_values_.end(), bond), bond);
    bond_->setRange(0, int(bond_values_.size()) - 1);
    bond_->setPageStep(std::max(1, int(bond_values_.size()) / 8));
  }
  const auto it = std::lower_bound(bond_values_.begin(), bond_values_.end(), bond);
  bond_->setValue(it == bond_values_.end() ? bond_->maximum() : int(it - bond_values_.begin()));
}

void BudgetPanel::setLimits(const BudgetLimits& l) {
  limits_ = l;
  quiet_ = true;
  rank_->setRange(1, std::max(1, l.rank));
  rank_->setValue(rank_->maximum());
  rank_->setPageStep(std::max(1, l.rank / 8));
  // χ in steps of 1, 2, 3, 4, 6, 8, 12, … (powers of two and the halfway points), up to the
  // largest bond any chain has: a larger χ would change nothing.
  bond_values_.clear();
  for (int p = 1; p < l.bond; p *= 2) {
    bond_values_.push_back(p);
    if (p >= 2 && p + p / 2 < l.bond) bond_values_.push_back(p + p / 2);
  }
  if (l.bond >= 1) bond_values_.push_back(l.bond);
  bond_->setRange(0, std::max(0, int(bond_values_.size()) - 1));
  bond_->setPageStep(std::max(1, int(bond_values_.size()) / 8));
  bond_->setValue(bond_->maximum());
  rank_->setEnabled(l.rank > 0);
  rank_->setToolTip(l.rank > 0 ? tr("Keep the first r singular directions of every projection (NSN); PageUp / "
                                    "PageDown move an eighth of the range")
                               : tr("This model has no projection to factor"));
  bond_->setEnabled(l.bond > 0);
  bond_->setToolTip(l.bond > 0 ? tr("Cap every bond of the matrix-product chains at χ (MPO); PageUp / PageDown "
                                    "move an eighth of the range")
                               : tr("This model has no projection to split into a chain"));
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
  if (any_mpo && bond_->value() < bond_->maximum()) b.bond = bondValue();
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

void BudgetPanel::showBudget(const Budget& b) {
  quiet_ = true;
  auto set_kind = [](QComboBox* c, const Budget& b, const char* group) {
    auto it = b.kind.find(group);
    c->setCurrentIndex(it == b.kind.end() ? 0 : c->findData(int(it->second)));
  };
  set_kind(attn_kind_, b, "attn");
  set_kind(mlp_kind_, b, "mlp");
  rank_->setValue(b.rank == 0 ? rank_->maximum() : int(b.rank));
  if (b.bond == 0) bond_->setValue(bond_->maximum());
  else setBondValue(int(b.bond));
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
  updateLabels();
}

void BudgetPanel::setBudget(const Budget& b) {
  showBudget(b);
  emitChanged();
}

void BudgetPanel::updateLabels() {
  const Budget b = budget();
  for (const auto& [name, spin] : layer_spins_) {
    const std::string family = projection_family(name);
    const LinearKind own = family.rfind("attn", 0) == 0 ? limits_.attn : family.rfind("mlp", 0) == 0 ? limits_.mlp : LinearKind::Dense;
    const bool nsn = b.kind_for(family, own) == LinearKind::Nsn;
    spin->setEnabled(nsn);
    spin->setToolTip(nsn ? tr("0 = the global rank") : tr("Set this layer's family to SVD → NSN (or drag rank) to use it"));
  }
  rank_label_->setText(rank_->value() >= rank_->maximum() ? tr("rank: full") : tr("rank: %1").arg(rank_->value()));
  bond_label_->setText(bond_->value() >= bond_->maximum() ? tr("χ: full") : tr("χ: %1").arg(bondValue()));
  const bool gated = policy_->currentIndex() != 0;
  const QString gate_off = tr("Turn the gate on (policy, or drag blocks) to use this");
  for (QWidget* w : std::initializer_list<QWidget*>{adaptive_, m_min_, m_max_}) {
    w->setEnabled(gated);
    w->setToolTip(gated ? (w == adaptive_ ? adaptive_->whatsThis() : tr("Measurements per layer (auto = the recommended range)"))
                        : gate_off);
  }
  active_label_->setText(tr("blocks: %1%").arg(active_->value()));
  const bool fewer_heads = heads_->value() < heads_->maximum();
  for (QCheckBox* c : {reprobe_, head_global_}) c->setEnabled(fewer_heads);
  reprobe_->setToolTip(fewer_heads ? reprobe_->whatsThis() : tr("Keep fewer heads to use this"));
  head_global_->setToolTip(fewer_heads ? head_global_->whatsThis() : tr("Keep fewer heads to use this"));
  heads_label_->setText(head_global_->isChecked() && fewer_heads
                            ? tr("heads: ~%1/%2").arg(heads_->value()).arg(heads_->maximum())
                            : tr("heads: %1/%2").arg(heads_->value()).arg(heads_->maximum()));
  heads_label_->setToolTip(head_global_->isChecked() && fewer_heads ? tr("heads kept per layer, on average")
                                                                   : tr("heads kept in every layer"));
  keep_label_->setText(keep_->value() >= 100 ? tr("prompt: all") : tr("prompt: %1%").arg(keep_->value()));
  keep_label_->setToolTip(tr("Share of the prompt's tokens kept (the least informative are dropped)"));
  const bool knob = target_->value() < 100;
  target_label_->setText(knob ? tr("MACs: %1%").arg(target_->value()) : tr("MACs: off"));
  target_label_->setToolTip(tr("One MAC target for the gate and the prompt together"));
  keep_->setEnabled(!knob);
  keep_->setToolTip(knob ? tr("The MAC target decides the prompt share; set it to off to use this") : QString());
  active_->setEnabled(!knob);
}

void BudgetPanel::emitChanged() {
  updateLabels();
  if (!quiet_) Q_EMIT budgetChanged(budget());
}

void BudgetPanel::setReadout(const BudgetReadout& r) {
  // Every number says where it comes from: measured on the last generation, or an estimate.
  const auto share = [&](double m) { return r.dense_macs > 0 ? 100.0 * m / r.dense_macs : 100.0; };
  QString t;
  // A generation's tokens see a shorter context than the full one the estimate assumes: its MACs
  // are compared with the dense model's on the same tokens.
  if (r.measured_macs > 0 && r.measured_dense_macs > 0)
    t = tr("<b>%1</b> MACs/token measured on the last generation (%2% of dense on the same tokens)")
            .arg(theme::count(r.measured_macs))
            .arg(100.0 * r.measured_macs / r.measured_dense_macs, 0, 'f', 1);
  else if (r.measured_macs > 0)
    t = tr("<b>%1</b> MACs/token measured on the last generation").arg(theme::count(r.measured_macs));
  else
    t = tr("<b>%1</b> MACs/token, estimate at full context (%2% of dense)")
            .arg(theme::count(r.macs))
            .arg(share(r.macs), 0, 'f', 1);
  t += tr(" · %1 parameters in use").arg(theme::count(r.params));
  if (r.accuracy < 0) t += tr("<br>accuracy: not swept yet (Sweep frontier)");
  else if (r.accuracy_measured) t += tr("<br>token accuracy %1%, measured by the sweep").arg(100 * r.accuracy, 0, 'f', 1);
  else if (r.accuracy_bound)
    t += tr("<br>token accuracy at most ≈ %1%, estimate: %2")
             .arg(100 * r.accuracy, 0, 'f', 1)
             .arg(r.bound_from.isEmpty() ? tr("the best swept budget at these MACs") : r.bound_from.toHtmlEscaped());
  else t += tr("<br>token accuracy ≈ %1%, estimate from the frontier").arg(100 * r.accuracy, 0, 'f', 1);
  if (r.ms_per_token > 0) t += tr(" · %1 ms/token measured").arg(r.ms_per_token, 0, 'f', 2);
  readout_->setText(t);
}

QString BudgetPanel::readoutText() const { return readout_->text(); }

}  // namespace nestscope
