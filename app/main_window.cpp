#include "app/main_window.h"

#include <QApplication>
#include <QClipboard>
#include <QComboBox>
#include <QStandardItemModel>
#include <QDockWidget>
#include <QDragEnterEvent>
#include <QDropEvent>
#include <QMimeData>
#include <QDir>
#include <QFileDialog>
#include <QFileInfo>
#include <QHBoxLayout>
#include <QLabel>
#include <QMenuBar>
#include <QMessageBox>
#include <QProgressBar>
#include <QPushButton>
#include <QSettings>
#include <QStatusBar>
#include <QTimer>
#include <QVBoxLayout>

#include "core/engine/engine.h"
#include "core/model/budget_json.h"
#include "widgets/activation_map.h"
#include "widgets/budget_panel.h"
#include "widgets/compare_view.h"
#include "widgets/export.h"
#include "widgets/frontier_chart.h"
#include "widgets/generation_panel.h"
#include "widgets/teaching_view.h"

namespace nestscope {

namespace {
QString human(double n) {
  if (n >= 1e6) return QString::number(n / 1e6, 'f', 2) + "M";
  if (n >= 1e3) return QString::number(n / 1e3, 'f', 1) + "k";
  return QString::number(n, 'f', 0);
}

QDockWidget* dock(QMainWindow* w, const QString& title, const QString& name, QWidget* content, Qt::DockWidgetArea area) {
  auto* d = new QDockWidget(title, w);
  d->setObjectName(name);  // saveState / restoreState key
  d->setWidget(content);
  w->addDockWidget(area, d);
  return d;
}
}  // namespace

MainWindow::MainWindow(const StartupOptions& options) : options_(options), worker_(new EngineWorker) {
  // Types that cross the thread boundary in queued signals.
  qRegisterMetaType<GenerationSettings>("nestscope::GenerationSettings");
  qRegisterMetaType<Budget>("nestscope::Budget");
  qRegisterMetaType<ModelView>("nestscope::ModelView");
  qRegisterMetaType<TokenActivity>("nestscope::TokenActivity");
  qRegisterMetaType<std::vector<SweepRow>>("std::vector<nestscope::SweepRow>");
  qRegisterMetaType<LayerView>("nestscope::LayerView");
  qRegisterMetaType<std::vector<ComparedToken>>("std::vector<nestscope::ComparedToken>");
  setWindowTitle(tr("NestScope"));
  resize(1400, 900);
  panel_ = new GenerationPanel(this);
  panel_->setPrompt(options.prompt);
  auto s = panel_->settings();
  QSettings settings;
  const bool persist = options.persist && options.screenshot.isEmpty();  // a screenshot run is reproducible
  if (persist) {
    s.temperature = settings.value("generate/temperature", s.temperature).toDouble();
    s.top_k = settings.value("generate/top_k", s.top_k).toInt();
    s.seed = settings.value("generate/seed", s.seed).toULongLong();
  }
  s.max_new_tokens = options.tokens;
  panel_->setSettings(s);
  setCentralWidget(panel_);

  buildPanels(persist);
  buildMenus();
  connectWorker();
  setAcceptDrops(true);  // drop a checkpoint or a session onto the window
  rebuildRecent();
  panel_->setBusy(true);  // until the model is loaded
  thread_.start();
  Q_EMIT loadRequested(options.model);
}

void MainWindow::buildPanels(bool persist) {
  QSettings settings;
  // Docks: budget (left), model (left, under it), activation map (bottom), frontier (right).
  budget_ = new BudgetPanel;
  map_ = new ActivationMap;
  chart_ = new FrontierChart;
  teaching_ = new TeachingView;
  compare_ = new CompareView;
  auto* frontier = new QWidget;
  auto* fl = new QVBoxLayout(frontier);
  fl->setContentsMargins(4, 4, 4, 4);
  auto* bar = new QHBoxLayout;
  sweep_button_ = new QPushButton(tr("Sweep frontier"));
  sweep_button_->setToolTip(tr("Score the default grid of budgets (every mechanism and compositions) in the "
                               "background; results are cached per model"));
  sweep_progress_ = new QProgressBar;
  sweep_progress_->setVisible(false);
  bar->addWidget(sweep_button_);
  bar->addWidget(sweep_progress_, 1);
  fl->addLayout(bar);
  fl->addWidget(chart_, 1);
  frontier->setMinimumWidth(520);  // room for the axes and a legend of a dozen methods
  auto* model_box = new QWidget;
  auto* ml = new QVBoxLayout(model_box);
  model_info_ = new QLabel(tr("loading model…"));
  model_info_->setWordWrap(true);
  model_info_->setTextInteractionFlags(Qt::TextSelectableByMouse);
  auto* open = new QPushButton(tr("Open checkpoint…"));
  auto* device = new QComboBox;
  device->addItem(tr("device: auto"), "auto");
  device->addItem(tr("device: CPU"), "cpu");
  device->addItem(tr("device: CUDA"), "cuda");
  if (!Engine::cuda_available()) {  // shown, but not selectable, so the user knows why
    auto* item = qobject_cast<QStandardItemModel*>(device->model())->item(2);
    item->setEnabled(false);
    item->setToolTip(tr("this LibTorch sees no CUDA device"));
  }
  ml->addWidget(model_info_);
  ml->addWidget(device);
  ml->addWidget(open);
  connect(device, &QComboBox::currentIndexChanged, this, [this, device] {
    worker_->requestStop();
    Q_EMIT deviceRequested(device->currentData().toString());
  });
  connect(open, &QPushButton::clicked, this, &MainWindow::openModel);
  ml->addStretch();
  dock(this, tr("Budget"), "budget", budget_, Qt::LeftDockWidgetArea);
  dock(this, tr("Model"), "model", model_box, Qt::LeftDockWidgetArea);
  auto* map_dock = dock(this, tr("Activation map"), "activations", map_, Qt::BottomDockWidgetArea);
  auto* teach_dock = dock(this, tr("Teaching view"), "teaching", teaching_, Qt::BottomDockWidgetArea);
  tabifyDockWidget(map_dock, teach_dock);
  compare_dock_ = dock(this, tr("Ablate and compare"), "compare", compare_, Qt::BottomDockWidgetArea);
  tabifyDockWidget(map_dock, compare_dock_);
  map_dock->raise();
  auto* frontier_dock = dock(this, tr("Frontier"), "frontier", frontier, Qt::RightDockWidgetArea);
  resizeDocks({frontier_dock}, {560}, Qt::Horizontal);
  if (persist) {
    restoreGeometry(settings.value("window/geometry").toByteArray());
    restoreState(settings.value("window/state").toByteArray());
  }

  model_label_ = new QLabel(tr("loading model…"), this);
  params_label_ = new QLabel(this);
  speed_label_ = new QLabel(this);
  statusBar()->addWidget(model_label_, 1);
  statusBar()->addPermanentWidget(params_label_);
  statusBar()->addPermanentWidget(speed_label_);

}

void MainWindow::connectWorker() {
  // The worker lives on its own thread: every call into the Engine happens there.
  worker_->moveToThread(&thread_);
  connect(&thread_, &QThread::finished, worker_, &QObject::deleteLater);
  connect(this, &MainWindow::loadRequested, worker_, &EngineWorker::loadModel);
  connect(this, &MainWindow::deviceRequested, worker_, &EngineWorker::setDevice);
  connect(this, &MainWindow::budgetRequested, worker_, &EngineWorker::setBudget);
  connect(this, &MainWindow::generateRequested, worker_, &EngineWorker::generate);
  connect(this, &MainWindow::sweepRequested, worker_, &EngineWorker::runSweep);
  connect(this, &MainWindow::frontierFileRequested, worker_, &EngineWorker::loadFrontier);
  connect(this, &MainWindow::exportHfRequested, worker_, &EngineWorker::exportHf);
  connect(worker_, &EngineWorker::exported, this, [this](const QString& m) { statusBar()->showMessage(m, 8000); });
  connect(this, &MainWindow::layerViewRequested, worker_, &EngineWorker::layerView);
  connect(teaching_, &TeachingView::viewRequested, this, &MainWindow::layerViewRequested);
  connect(worker_, &EngineWorker::layerViewReady, teaching_, &TeachingView::setView);
  connect(this, &MainWindow::compareRequested, worker_, &EngineWorker::compare);
  connect(map_, &ActivationMap::cellClicked, this, &MainWindow::toggleAblation);
  connect(worker_, &EngineWorker::comparePair, this,
          [this](const std::vector<ComparedToken>& a, const std::vector<ComparedToken>& b) {
            QStringList off;
            for (const auto& [l, h] : heads_off_) off << tr("head L%1.%2").arg(l).arg(h);
            for (const auto& [l, k] : blocks_off_) off << tr("block L%1.%2").arg(l).arg(k);
            for (const auto& [l, k] : gate_blocks_off_) off << tr("gate block L%1.%2").arg(l).arg(k);
            QStringList on;
            for (const auto& [l, h] : heads_on_) on << tr("head L%1.%2").arg(l).arg(h);
            for (const auto& [l, k] : blocks_on_) on << tr("block L%1.%2").arg(l).arg(k);
            QStringList parts;
            if (!off.isEmpty()) parts << tr("without %1").arg(off.join(", "));
            if (!on.isEmpty()) parts << tr("forcing on %1").arg(on.join(", "));
            compare_->setPair(tr("A: the budget"), a, tr("B: %1").arg(parts.join("; ")), b);
          });
  connect(worker_, &EngineWorker::modelLoaded, this, &MainWindow::onModelLoaded);
  connect(worker_, &EngineWorker::budgetApplied, this, &MainWindow::onBudgetApplied);
  connect(worker_, &EngineWorker::generationStarted, this, [this] {
    panel_->startOutput();
    map_->clear();
  });
  connect(worker_, &EngineWorker::tokenGenerated, this, [this](const TokenActivity& t) {
    panel_->appendToken(t.text, t.entropy, t.macs, t.top);
    map_->appendToken(t);
  });
  // Clicking a token in the stream or in the map's strip selects it in both.
  connect(panel_, &GenerationPanel::tokenClicked, map_, &ActivationMap::selectToken);
  connect(map_, &ActivationMap::tokenSelected, panel_, &GenerationPanel::selectToken);
  connect(worker_, &EngineWorker::generationFinished, this, &MainWindow::onFinished);
  connect(worker_, &EngineWorker::frontierRows, this, &MainWindow::onFrontier);
  connect(worker_, &EngineWorker::sweepProgress, this, [this](int done, int total) {
    if (done < 0) {  // finished or cancelled
      sweep_progress_->setVisible(false);
      sweep_button_->setText(tr("Sweep frontier"));
      return;
    }
    sweep_progress_->setVisible(true);
    sweep_progress_->setRange(0, total);
    sweep_progress_->setValue(done);
  });
  connect(worker_, &EngineWorker::failed, this, &MainWindow::onFailed);
  connect(panel_, &GenerationPanel::generateRequested, this, [this] { startGeneration(); });
  connect(panel_, &GenerationPanel::stopRequested, this, [this] { worker_->requestStop(); });
  connect(sweep_button_, &QPushButton::clicked, this, [this] {
    if (sweep_progress_->isVisible()) {
      worker_->cancelSweep();
      return;
    }
    sweep_button_->setText(tr("Cancel sweep"));
    sweep_progress_->setVisible(true);
    sweep_progress_->setRange(0, 0);
    Q_EMIT sweepRequested(QString());
  });
  // A slider move applies the budget and regenerates from the prompt, debounced; the running
  // generation is stopped first so the new one starts at once.
  debounce_ = new QTimer(this);
  debounce_->setSingleShot(true);
  debounce_->setInterval(120);
  connect(budget_, &BudgetPanel::budgetChanged, this, [this] { debounce_->start(); });
  connect(debounce_, &QTimer::timeout, this, [this] {
    if (!model_ready_) return;
    worker_->requestStop();
    Q_EMIT budgetRequested(budget_->budget(), panel_->prompt());
    if (!panel_->prompt().isEmpty()) startGeneration();
  });
  connect(worker_, &EngineWorker::loading, this, [this](const QString& what) { model_label_->setText(tr("loading %1…").arg(what)); });
}

void MainWindow::showAblation() {
  // With the gate on the map shows blocks in the gate's order: its forced-off set is that order's.
  const bool gated = budget_->budget().gate.policy != GatePolicy::Off;
  map_->setAblated(heads_off_, gated ? gate_blocks_off_ : blocks_off_, heads_on_, blocks_on_);
}

void MainWindow::toggleAblation(bool is_head, int layer, int index) {
  if (!model_ready_) return;
  // A unit that ran for the selected token is forced off, one that was skipped is forced on;
  // clicking a forced unit again releases it.
  const std::pair<int64_t, int64_t> key{layer, index};
  const bool gated = budget_->budget().gate.policy != GatePolicy::Off;
  // Blocks under the gate are in the gate's neuron order, so they are forced off in that order.
  auto& off = is_head ? heads_off_ : gated ? gate_blocks_off_ : blocks_off_;
  auto& on = is_head ? heads_on_ : blocks_on_;
  if (!off.erase(key) && !on.erase(key)) {
    if (map_->cellRan(is_head, layer, index))
      off.insert(key);
    else
      on.insert(key);
  }
  showAblation();
  if (heads_off_.empty() && blocks_off_.empty() && heads_on_.empty() && blocks_on_.empty() && gate_blocks_off_.empty())
    return;
  const Budget a = budget_->budget();
  Budget b = a;
  b.heads_off = heads_off_;
  b.blocks_off = blocks_off_;
  b.heads_on = heads_on_;
  b.blocks_on = gated ? blocks_on_ : std::set<std::pair<int64_t, int64_t>>{};
  b.gate_blocks_off = gated ? gate_blocks_off_ : std::set<std::pair<int64_t, int64_t>>{};
  const int id = worker_->nextGeneration();  // supersedes a running generation
  compare_dock_->show();
  compare_dock_->raise();
  Q_EMIT compareRequested(panel_->prompt(), panel_->settings(), a, b, id);
}

void MainWindow::openModelPath(const QString& path) {
  worker_->requestStop();
  worker_->cancelLoad();  // a large model still building variants gives way at once
  Q_EMIT loadRequested(path);
}

Session MainWindow::session() const {
  Session s;
  s.model = QFileInfo(model_.source).isFile() ? model_.source : QString();
  s.model_hash = model_.hash;
  s.budget = budget_->budget();
  s.budget.heads_off = heads_off_;
  s.budget.blocks_off = blocks_off_;
  s.budget.heads_on = heads_on_;
  s.budget.blocks_on = blocks_on_;
  s.budget.gate_blocks_off = gate_blocks_off_;
  s.prompt = panel_->prompt();
  s.settings = panel_->settings();
  s.colouring = int(panel_->colouring());
  return s;
}

void MainWindow::openSession(const Session& s) {
  panel_->setPrompt(s.prompt);
  panel_->setSettings(s.settings);
  panel_->setColouring(GenerationPanel::Colouring(s.colouring));
  if (!s.frontier.isEmpty()) Q_EMIT frontierFileRequested(s.frontier);
  const QString current = QFileInfo(model_.source).isFile() ? model_.source : QString();
  if (model_ready_ && current == s.model) {
    if (!s.model_hash.isEmpty() && s.model_hash != model_.hash)
      onFailed(tr("the session was saved with another version of %1 (hash %2, now %3): results may differ")
                   .arg(s.model.isEmpty() ? tr("the default model") : s.model, s.model_hash, model_.hash));
    heads_off_ = s.budget.heads_off;
    blocks_off_ = s.budget.blocks_off;
    heads_on_ = s.budget.heads_on;
    blocks_on_ = s.budget.blocks_on;
    gate_blocks_off_ = s.budget.gate_blocks_off;
    showAblation();
    Budget b = s.budget;
    b.heads_off.clear();
    b.blocks_off.clear();
    b.heads_on.clear();
    b.blocks_on.clear();
    b.gate_blocks_off.clear();
    budget_->setBudget(b);
    return;
  }
  pending_session_ = s;  // applied in onModelLoaded
  have_pending_session_ = true;
  openModelPath(s.model);
}

void MainWindow::remember(const QString& key, const QString& path) {
  if (!options_.persist) return;
  QSettings settings;
  QStringList list = settings.value(key).toStringList();
  list.removeAll(path);
  list.prepend(path);
  while (list.size() > 8) list.removeLast();
  settings.setValue(key, list);
  rebuildRecent();
}

void MainWindow::rebuildRecent() {
  QSettings settings;
  for (auto [menu, key] : {std::pair{recent_models_, QStringLiteral("recent/models")},
                           std::pair{recent_sessions_, QStringLiteral("recent/sessions")}}) {
    menu->clear();
    const QStringList list = options_.persist ? settings.value(key).toStringList() : QStringList();
    for (const QString& p : list) {
      menu->addAction(QFileInfo(p).fileName(), this, [this, p, key] {
        if (key.endsWith("models")) {
          openModelPath(p);
          return;
        }
        try {
          openSession(load_session(p));
        } catch (const std::exception& e) {
          onFailed(QString::fromStdString(e.what()));
        }
      })->setToolTip(p);
    }
    menu->setEnabled(!list.isEmpty());
  }
}

void MainWindow::dragEnterEvent(QDragEnterEvent* event) {
  for (const auto& url : event->mimeData()->urls())
    if (url.isLocalFile() && (url.path().endsWith(".safetensors") || url.path().endsWith(".json") ||
                              QFileInfo(QDir(url.toLocalFile()), "config.json").isFile())) {
      event->acceptProposedAction();
      return;
    }
}

void MainWindow::dropEvent(QDropEvent* event) {
  for (const auto& url : event->mimeData()->urls()) {
    const QString p = url.toLocalFile();
    if (p.endsWith(".safetensors") || QFileInfo(QDir(p), "config.json").isFile()) {  // checkpoint or HF folder
      openModelPath(p);
    } else if (p.endsWith(".json")) {
      try {
        openSession(load_session(p));
      } catch (const std::exception& e) {
        onFailed(QString::fromStdString(e.what()));
      }
    }
  }
}

void MainWindow::closeEvent(QCloseEvent* event) {
  if (options_.persist && options_.screenshot.isEmpty()) {
    QSettings settings;
    const auto s = panel_->settings();
    settings.setValue("window/geometry", saveGeometry());
    settings.setValue("window/state", saveState());
    settings.setValue("generate/temperature", s.temperature);
    settings.setValue("generate/top_k", s.top_k);
    settings.setValue("generate/seed", s.seed);
  }
  QMainWindow::closeEvent(event);
}

MainWindow::~MainWindow() {
  worker_->requestStop();
  worker_->cancelSweep();
  worker_->cancelLoad();
  thread_.quit();
  thread_.wait();
}

void MainWindow::startGeneration() {
  const int id = worker_->nextGeneration();
  generating_ = true;
  panel_->setBusy(true);
  speed_label_->setText(tr("generating…"));
  Q_EMIT generateRequested(panel_->prompt(), panel_->settings(), id);
}

void MainWindow::openModel() {
  const QString path = QFileDialog::getOpenFileName(this, tr("Open model"), QString(),
                                                    tr("NestScope checkpoints (*.safetensors);;All files (*)"));
  if (path.isEmpty()) return;
  model_label_->setText(tr("loading %1…").arg(QFileInfo(path).fileName()));
  openModelPath(path);
}

void MainWindow::onModelLoaded(const ModelView& m) {
  model_ = m;
  model_ready_ = true;
  rows_.clear();
  chart_->setRows({});
  heads_off_.clear();
  blocks_off_.clear();
  heads_on_.clear();
  blocks_on_.clear();
  gate_blocks_off_.clear();
  showAblation();
  map_->setShape(m.layers, m.heads, m.blocks);
  teaching_->setProjections(m.projections, m.limits.rank, m.limits.bond);
  teaching_->request();
  budget_->setLimits(m.limits);
  model_label_->setText(tr("%1 — %2").arg(m.source, m.summary));
  model_info_->setText(tr("<b>%1</b><br>%2<br>%3 parameters · %4 MACs/token at full context<br>"
                          "rank up to %5 · χ up to %6")
                           .arg(m.source.toHtmlEscaped(), m.summary, human(double(m.parameters)), human(double(m.macs)))
                           .arg(m.limits.rank)
                           .arg(m.limits.bond));
  params_label_->setText(tr("%1 parameters").arg(human(double(m.parameters))));
  panel_->setBusy(false);
  if (QFileInfo(m.source).isFile()) remember("recent/models", m.source);
  if (have_pending_session_) {
    have_pending_session_ = false;
    openSession(pending_session_);
    return;
  }
  Budget start;
  if (!options_.budget.isEmpty()) {
    try {
      start = budget_from_json(options_.budget.toStdString());
    } catch (const std::exception& e) {
      onFailed(QString::fromStdString(e.what()));
    }
  }
  if (!options_.frontier.isEmpty()) Q_EMIT frontierFileRequested(options_.frontier);
  budget_->setBudget(start);  // emits budgetChanged: applies it and (debounced) regenerates
}

void MainWindow::onBudgetApplied(const Budget& b, double macs, double params) {
  macs_ = macs;
  params_ = params;
  budget_json_ = budget_to_json(b);
  updateReadout();
}

void MainWindow::updateReadout() {
  BudgetReadout r;
  r.macs = macs_;
  r.dense_macs = double(model_.dense_macs);
  r.params = params_;
  r.ms_per_token = ms_per_token_;
  r.estimated_accuracy = rows_.empty() || budget_json_.empty()
                             ? -1
                             : estimate_accuracy(rows_, model_.hash.toStdString(), budget_json_, macs_);
  budget_->setReadout(r);
  if (r.estimated_accuracy >= 0) chart_->setOperatingPoint(macs_, r.estimated_accuracy);
  else chart_->setOperatingPoint(qQNaN(), qQNaN());  // no series of this kind: no marker
}

void MainWindow::onFinished(qint64 tokens, double tokensPerSecond, double msPerToken, bool stopped) {
  generating_ = false;
  panel_->setBusy(!model_ready_);
  if (tokens > 0) ms_per_token_ = msPerToken;
  speed_label_->setText(tr("%1 tokens · %2 tokens/s%3")
                            .arg(tokens)
                            .arg(tokensPerSecond, 0, 'f', 0)
                            .arg(stopped ? tr(" (stopped)") : QString()));
  updateReadout();
  if (!options_.screenshot.isEmpty() && !stopped && !screenshot_taken_) {
    screenshot_taken_ = true;
    QTimer::singleShot(150, this, &MainWindow::saveScreenshotAndQuit);
  }
}

void MainWindow::onFrontier(const std::vector<SweepRow>& all) {
  // The loaded model's rows when the file has any (a file may hold several models' sweeps).
  std::vector<SweepRow> rows, measured;
  QStringList failed;
  for (const auto& r : all)
    if (r.error.empty()) measured.push_back(r);
    else failed << QString::fromStdString(r.method + " " + r.label + ": " + r.error);
  for (const auto& r : measured)
    if (r.model_hash == model_.hash.toStdString()) rows.push_back(r);
  if (rows.empty()) rows = measured;
  if (!failed.isEmpty())
    statusBar()->showMessage(tr("%n budget(s) could not run: %1", "", int(failed.size())).arg(failed.join("; ")), 15000);
  rows_ = rows;
  const QString name = QFileInfo(model_.source).isFile() ? QFileInfo(model_.source).fileName() : model_.source;
  chart_->setTitle(tr("%1: compute–accuracy frontier").arg(name));
  chart_->setRows(rows);
  sweep_progress_->setVisible(false);
  sweep_button_->setText(tr("Sweep frontier"));
  updateReadout();
}

QWidget* MainWindow::panel(const QString& name) const {
  if (name == "window") return const_cast<MainWindow*>(this);
  if (name == "frontier") return chart_;
  if (name == "activations") return map_;
  if (name == "teaching") return teaching_;
  if (name == "compare") return compare_;
  if (name == "budget") return budget_;
  if (name == "prompt") return panel_;
  for (auto* d : findChildren<QDockWidget*>())
    if (d->objectName() == name) return d->widget();
  return nullptr;
}

QString MainWindow::currentPanelName() const {
  for (QWidget* w = QApplication::focusWidget(); w; w = w->parentWidget())
    if (auto* d = qobject_cast<QDockWidget*>(w)) return d->objectName() == "activations" ? "activations" : d->objectName();
  return "frontier";
}

bool MainWindow::exportPanel(const QString& name, const QString& path, QString* error) {
  QWidget* w = panel(name);
  if (!w) {
    if (error) *error = tr("no panel named '%1' (frontier, activations, teaching, compare, budget, model, prompt, window)").arg(name);
    return false;
  }
  const QString ext = QFileInfo(path).suffix().toLower();
  if (ext == "csv") {
    if (w == chart_) return chart_->exportCsv(path, error);
    if (w == map_) return map_->exportCsv(path, error);
    if (w == teaching_) return teaching_->exportCsv(path, error);
    if (error) *error = tr("the %1 panel has no table to export; use .png or .svg").arg(name);
    return false;
  }
  if (ext == "svg") return w == chart_ ? chart_->exportSvg(path, error) : export_widget_svg(w, path, name, error);
  if (ext == "png") return w == chart_ ? chart_->exportPng(path, 2.0, error) : export_widget_png(w, path, 2.0, error);
  if (error) *error = tr("export to .png, .svg or .csv, not '%1'").arg(path);
  return false;
}

void MainWindow::exportCurrent(const QString& suffix) {
  const QString name = currentPanelName();
  const QString filter = suffix.isEmpty() ? tr("PNG (*.png);;SVG (*.svg);;CSV (*.csv)") : suffix.toUpper() + " (*." + suffix + ")";
  const QString path = QFileDialog::getSaveFileName(this, tr("Export %1").arg(name), name + "." + (suffix.isEmpty() ? "png" : suffix), filter);
  if (path.isEmpty()) return;
  QString error;
  if (!exportPanel(name, path, &error)) onFailed(error);
}

void MainWindow::onFailed(const QString& message) {
  if (!options_.screenshot.isEmpty()) {
    qCritical("error: %s", qPrintable(message));
    QApplication::exit(1);
    return;
  }
  last_error_ = message;
  if (!model_ready_) model_label_->setText(tr("no model loaded"));
  else model_label_->setText(tr("%1 — %2").arg(model_.source, model_.summary));  // the model that stayed
  // Non-modal: the window stays usable (and a running generation keeps streaming).
  auto* box = new QMessageBox(QMessageBox::Warning, tr("NestScope"), message, QMessageBox::Ok, this);
  box->setAttribute(Qt::WA_DeleteOnClose);
  box->open();
}

void MainWindow::saveScreenshotAndQuit() {
  QWidget* w = options_.panel.isEmpty() ? this : panel(options_.panel);
  if (!w) {
    qCritical("error: no panel named '%s'", qPrintable(options_.panel));
    QApplication::exit(1);
    return;
  }
  if (auto* d = qobject_cast<QDockWidget*>(w->parentWidget())) d->raise();  // a tabbed panel comes to the front
  QApplication::processEvents();
  const bool ok = w->grab().save(options_.screenshot, "PNG");
  if (!ok) qCritical("error: cannot write screenshot %s", qPrintable(options_.screenshot));
  QApplication::exit(ok ? 0 : 1);
}

}  // namespace nestscope
