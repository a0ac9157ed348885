#include "app/main_window.h"

#include <QApplication>
#include <QClipboard>
#include <QComboBox>
#include <QStandardItemModel>
#include <QDockWidget>
#include <QDragEnterEvent>
#include <QDropEvent>
#include <QMimeData>
#include <QJsonArray>
#include <QJsonDocument>
#include <QJsonObject>
#include <QDir>
#include <QFileDialog>
#include <QFileInfo>
#include <QHBoxLayout>
#include <QLabel>
#include <QMenuBar>
#include <QScreen>
#include <QScrollArea>
#include <QToolButton>
#include <QProgressBar>
#include <QPushButton>
#include <QSettings>
#include <QStatusBar>
#include <QTimer>
#include <QVBoxLayout>
#include <algorithm>
#include <utility>

#include "core/engine/engine.h"
#include "core/io/cache.h"
#include "core/model/budget_json.h"
#include "widgets/activation_map.h"
#include "widgets/budget_panel.h"
#include "widgets/compare_view.h"
#include "widgets/export.h"
#include "widgets/frontier_chart.h"
#include "widgets/generation_panel.h"
#include "widgets/teaching_view.h"
#include "widgets/theme.h"

namespace nestscope {

namespace {
// A dock whose content scrolls when the screen is smaller than the content wants: docks never
// overlap or push the window past the screen (a 1280×720 projector, a laptop at 150%).
QDockWidget* dock(QMainWindow* w, const QString& title, const QString& name, QWidget* content, Qt::DockWidgetArea area,
                 bool scrolls = true) {
  auto* d = new QDockWidget(title, w);
  d->setObjectName(name);  // saveState / restoreState key
  if (!scrolls) {  // the panel scrolls its own parts
    d->setWidget(content);
    w->addDockWidget(area, d);
    return d;
  }
  auto* scroll = new QScrollArea;
  scroll->setWidget(content);
  scroll->setWidgetResizable(true);
  scroll->setFrameShape(QFrame::NoFrame);
  scroll->setMinimumSize(120, 80);
  d->setWidget(scroll);
  w->addDockWidget(area, d);
  return d;
}

// The name a person knows the model by: the folder of a Hugging Face model, the file's name, or
// the built-in model's.
QString display_name(const QString& source) {
  if (source.isEmpty() || source.startsWith('<')) return QObject::tr("PicoGPT (built in)");
  const QFileInfo f(source);
  if (f.isDir()) return f.fileName().isEmpty() ? QDir(source).dirName() : f.fileName();
  return f.fileName().isEmpty() ? source : f.fileName();
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
  // Open at a size the screen has room for (a 1366×768 laptop, a 1280×720 projector).
  const QRect avail = screen() ? screen()->availableGeometry() : QRect(0, 0, 1400, 900);
  resize(std::min(1400, avail.width()), std::min(900, avail.height()));
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
  // The message bar: one non-modal line above the prompt for errors (no dialog to dismiss, no
  // stack of copies: a repeat of the same message counts up).
  message_bar_ = new QFrame;
  message_bar_->setObjectName("messageBar");
  message_bar_->setFrameShape(QFrame::StyledPanel);
  message_bar_->setStyleSheet("#messageBar { background: #fdecea; border: 1px solid #e0a39b; } "
                              "#messageBar QLabel { color: #5f1d17; }");
  message_label_ = new QLabel;
  message_label_->setWordWrap(true);
  message_label_->setTextInteractionFlags(Qt::TextSelectableByMouse);
  auto* close_message = new QToolButton;
  close_message->setText(QStringLiteral("✕"));
  close_message->setAutoRaise(true);
  close_message->setToolTip(tr("Dismiss"));
  auto* ml = new QHBoxLayout(message_bar_);
  ml->setContentsMargins(8, 4, 4, 4);
  ml->addWidget(message_label_, 1);
  ml->addWidget(close_message, 0, Qt::AlignTop);
  message_bar_->setVisible(false);
  connect(close_message, &QToolButton::clicked, this, &MainWindow::dismissMessage);
  auto* central = new QWidget;
  auto* cl = new QVBoxLayout(central);
  cl->setContentsMargins(0, 0, 0, 0);
  cl->setSpacing(2);
  cl->addWidget(message_bar_);
  cl->addWidget(panel_, 1);
  setCentralWidget(central);

  buildPanels(persist);
  buildMenus();
  connectWorker();
  setAcceptDrops(true);  // drop a checkpoint or a session onto the window
  rebuildRecent();
  panel_->setBusy(true);  // until the model is loaded
  if (!options_.ui_map.isEmpty()) {
    auto* t = new QTimer(this);
    connect(t, &QTimer::timeout, this, &MainWindow::writeUiMap);
    t->start(250);
  }
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
  frontier->setMinimumWidth(300);
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
  // Left: the budget (the model's details in a tab behind it); right: the frontier; bottom: the
  // activation map (teaching and compare in tabs behind it); the output in the middle.
  auto* budget_dock = dock(this, tr("Budget"), "budget", budget_, Qt::LeftDockWidgetArea, false);
  auto* model_dock = dock(this, tr("Model"), "model", model_box, Qt::LeftDockWidgetArea);
  tabifyDockWidget(budget_dock, model_dock);
  budget_dock->raise();
  auto* map_dock = dock(this, tr("Activation map"), "activations", map_, Qt::BottomDockWidgetArea);
  map_dock_ = map_dock;
  auto* teach_dock = dock(this, tr("Teaching view"), "teaching", teaching_, Qt::BottomDockWidgetArea);
  tabifyDockWidget(map_dock, teach_dock);
  compare_dock_ = dock(this, tr("Ablate and compare"), "compare", compare_, Qt::BottomDockWidgetArea);
  tabifyDockWidget(map_dock, compare_dock_);
  map_dock->raise();
  auto* frontier_dock = dock(this, tr("Frontier"), "frontier", frontier, Qt::RightDockWidgetArea);
  // The default split, once the window has its real size (restoreState below replaces it).
  QTimer::singleShot(0, this, [this, budget_dock, frontier_dock, map_dock] {
    if (restored_state_) return;
    const int w = width();
    resizeDocks({budget_dock, frontier_dock}, {std::max(300, w * 22 / 100), std::max(380, w * 36 / 100)}, Qt::Horizontal);
    resizeDocks({map_dock}, {std::max(170, height() * 29 / 100)}, Qt::Vertical);
  });
  if (persist) {
    restoreGeometry(settings.value("window/geometry").toByteArray());
    restored_state_ = restoreState(settings.value("window/state").toByteArray());
    // A layout saved on a larger screen (or before a projector was plugged in) is brought back
    // onto this one.
    if (screen()) {
      const QRect avail = screen()->availableGeometry();
      if (width() > avail.width() || height() > avail.height() || !avail.intersects(frameGeometry())) {
        resize(std::min(width(), avail.width()), std::min(height(), avail.height()));
        move(avail.topLeft());
      }
    }
  }

  model_label_ = new QLabel(tr("loading model…"), this);
  model_label_->setMinimumWidth(100);
  model_label_->setSizePolicy(QSizePolicy::Ignored, QSizePolicy::Preferred);  // elided by the bar, never widening it
  params_label_ = new QLabel(this);
  speed_label_ = new QLabel(this);
  load_progress_ = new QProgressBar(this);
  load_progress_->setMaximumWidth(180);
  load_progress_->setVisible(false);
  load_progress_->setFormat(tr("variants %v/%m"));
  statusBar()->addWidget(model_label_, 1);
  statusBar()->addPermanentWidget(load_progress_);
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
  connect(worker_, &EngineWorker::budgetRejected, this, [this](const Budget& running, const QString& message) {
    // The control that asked for it goes back to what runs; Play stops instead of repeating it.
    budget_->stopPlay();
    budget_->showBudget(running);
    onFailed(message);
  });
  connect(worker_, &EngineWorker::loadProgress, this, [this](int done, int total) {
    load_progress_->setVisible(done >= 0 && total > 0);
    if (total > 0) {
      load_progress_->setRange(0, total);
      load_progress_->setValue(std::max(0, done));
    }
  });
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
    measured_macs_ = measured_dense_macs_ = -1;  // the last generation ran another budget
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
  worker_->cancelSweep();  // a running sweep gives way at once (its finished rows stay cached)
  worker_->cancelLoad();   // a large model still building variants gives way at once
  model_label_->setText(tr("loading %1…").arg(display_name(path)));
  load_progress_->setRange(0, 0);  // busy until the first variant is counted
  load_progress_->setVisible(true);
  panel_->setBusy(true);
  Q_EMIT loadRequested(path);
}

void MainWindow::openDemoModel() {
  try {
    openModelPath(EngineWorker::demoModelFolder());
  } catch (const std::exception& e) {
    onFailed(QString::fromStdString(e.what()));
  }
}

void MainWindow::clearCaches() {
  const auto freed = clear_cache();
  statusBar()->showMessage(tr("cleared %1 of cached variants and frontier rows from %2")
                               .arg(QString::number(double(freed) / double(1 << 20), 'f', 1) + " MiB",
                                    QString::fromStdString(cache_dir())),
                           8000);
}

void MainWindow::showMessage(const QString& message) {
  // One message at a time; the same one again counts up instead of stacking copies.
  if (!message_bar_->isHidden() && message == message_text_) {
    ++message_count_;
  } else {
    message_text_ = message;
    message_count_ = 1;
  }
  message_label_->setText(message_count_ > 1 ? tr("%1 (×%2)").arg(message_text_).arg(message_count_) : message_text_);
  message_label_->setToolTip(message_text_);
  message_bar_->setVisible(true);
}

QString MainWindow::messageText() const { return message_bar_->isHidden() ? QString() : message_text_; }

void MainWindow::dismissMessage() {
  message_bar_->setVisible(false);
  message_text_.clear();
  message_count_ = 0;
}

Session MainWindow::session() const {
  Session s;
  s.model = QFileInfo::exists(model_.source) ? model_.source : QString();
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
  const QString current = QFileInfo::exists(model_.source) ? model_.source : QString();
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
      menu->addAction(display_name(p), this, [this, p, key] {
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
  openModelPath(path);
}

void MainWindow::onModelLoaded(const ModelView& m) {
  model_ = m;
  model_ready_ = true;
  measured_macs_ = measured_dense_macs_ = -1;
  ms_per_token_ = -1;
  rows_.clear();
  chart_->setRows({});
  chart_->setTitle(tr("%1 — compute–accuracy frontier").arg(display_name(m.source)));
  heads_off_.clear();
  blocks_off_.clear();
  heads_on_.clear();
  blocks_on_.clear();
  gate_blocks_off_.clear();
  showAblation();
  map_->setShape(m.layers, m.heads, m.blocks);
  map_dock_->raise();  // a new model: its activations, not the last model's comparison
  teaching_->setProjections(m.projections, m.limits.rank, m.limits.bond);
  teaching_->request();
  budget_->setLimits(m.limits);
  model_label_->setText(tr("%1 — %2").arg(display_name(m.source), m.summary));
  model_label_->setToolTip(m.source);
  model_info_->setText(tr("<b>%1</b><br>%2<br>%3 parameters · %4 MACs/token at full context<br>"
                          "rank up to %5 · χ up to %6<br><small>%7</small>")
                           .arg(display_name(m.source).toHtmlEscaped(), m.summary, theme::count(double(m.parameters)),
                                theme::count(double(m.macs)))
                           .arg(m.limits.rank)
                           .arg(m.limits.bond)
                           .arg(m.source.toHtmlEscaped()));
  params_label_->setText(tr("%1 parameters").arg(theme::count(double(m.parameters))));
  panel_->setBusy(false);
  if (QFileInfo::exists(m.source)) remember("recent/models", m.source);  // a checkpoint or a Hugging Face folder
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
  // The built-in prompt is PicoGPT's (a play); a model of words starts a story instead.
  if (panel_->prompt() == QStringLiteral("ROMEO:\n") && !m.summary.contains("(char)"))
    panel_->setPrompt(QStringLiteral("Once upon a time"));
  budget_->setBudget(start);  // emits budgetChanged: applies it and (debounced) regenerates
}

void MainWindow::onBudgetApplied(const Budget& b, double macs, double params) {
  macs_ = macs;
  params_ = params;
  budget_json_ = budget_to_json(b);
  teaching_->followBudget(int(b.rank), int(b.bond));
  updateReadout();
}

void MainWindow::updateReadout() {
  BudgetReadout r;
  r.macs = macs_;
  r.dense_macs = double(model_.dense_macs);
  r.measured_macs = measured_macs_;
  r.measured_dense_macs = measured_dense_macs_;
  r.params = params_;
  r.ms_per_token = ms_per_token_;
  // The chart's marker: the swept row of exactly this budget (measured), else placed by the fit.
  SweepRow at;
  if (!budget_json_.empty() && !rows_.empty()) {
    const auto swept = std::find_if(rows_.begin(), rows_.end(), [&](const SweepRow& row) { return row.budget_json == budget_json_; });
    r.accuracy_measured = swept != rows_.end();
    if (r.accuracy_measured) {
      at = *swept;
    } else {
      at.macs = int64_t(macs_);
      at.dense_macs = model_.dense_macs;
      at.parameters = int64_t(params_);
      at.ms_per_token = ms_per_token_;
      const std::string hash = model_.hash.toStdString();
      at.eval.token_accuracy = estimate_accuracy(rows_, hash, budget_json_, macs_);
      if (at.eval.token_accuracy < 0) {  // no series of its kind: the front and its parts bound it from above
        const AccuracyBound bound = accuracy_bound(rows_, hash, budget_json_, macs_);
        at.eval.token_accuracy = bound.accuracy;
        r.accuracy_bound = true;
        r.bound_from = QString::fromStdString(bound.from);
      }
      at.eval.perplexity = at.eval.top1_agreement = -1;  // the fit gives token accuracy only
    }
    r.accuracy = at.eval.token_accuracy;
  }
  budget_->setReadout(r);
  if (r.accuracy >= 0) chart_->setOperatingPoint(at, r.accuracy_measured);
  else chart_->clearOperatingPoint();
}

void MainWindow::onFinished(qint64 tokens, double tokensPerSecond, double msPerToken, double macsPerToken,
                            double denseMacsPerToken, bool stopped) {
  generating_ = false;
  panel_->setBusy(!model_ready_);
  if (tokens > 0) {
    ms_per_token_ = msPerToken;
    measured_macs_ = macsPerToken;
    measured_dense_macs_ = denseMacsPerToken;
  }
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
  chart_->setRows(rows);
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
  load_progress_->setVisible(false);
  panel_->setBusy(!model_ready_ || generating_);
  if (!model_ready_) model_label_->setText(tr("no model loaded"));
  else model_label_->setText(tr("%1 — %2").arg(display_name(model_.source), model_.summary));  // the model that stayed
  showMessage(message);
}

void MainWindow::writeUiMap() {
  const auto rect = [](const QWidget* w) {
    const QPoint g = w->mapToGlobal(QPoint(0, 0));
    return QJsonArray{g.x(), g.y(), w->isVisible() ? w->width() : 0, w->isVisible() ? w->height() : 0};
  };
  const auto shown = [&rect](const QWidget* w) {  // a panel in a dock's scroll area: what its viewport shows
    if (auto* area = qobject_cast<const QScrollArea*>(w->parentWidget() ? w->parentWidget()->parentWidget() : nullptr))
      return rect(area->viewport());
    return rect(w);
  };
  QJsonObject panels, controls;
  panels["output"] = shown(panel_);
  panels["budget"] = shown(budget_);
  // The bottom area shows one of its tabs: the activation map, the teaching view or the comparison.
  for (QWidget* w : std::initializer_list<QWidget*>{map_, teaching_, compare_})
    if (w->isVisible() && !w->visibleRegion().isEmpty()) panels["bottom"] = shown(w);  // a hidden tab lies off-screen
  panels["frontier"] = shown(chart_->parentWidget());
  controls["rank"] = rect(budget_->rankSlider());
  controls["bond"] = rect(budget_->bondSlider());
  controls["gate"] = rect(budget_->gateSlider());
  controls["play"] = rect(budget_->playButton());
  controls["sweep"] = rect(sweep_button_);
  const QPointF head = map_->headCellCentre(0, 0);
  const QPoint hg = map_->mapToGlobal(head.toPoint());
  controls["head_L0_0"] = QJsonArray{hg.x(), hg.y()};
  QJsonObject o;
  const QPoint wg = mapToGlobal(QPoint(0, 0));
  o["window"] = QJsonArray{wg.x(), wg.y(), width(), height()};
  o["model"] = model_.source;
  o["ready"] = model_ready_;
  o["busy"] = panel_->busy();
  o["tokens"] = map_->tokenCount();
  o["rows"] = int(chart_->rows().size());
  o["sweeping"] = sweep_progress_->isVisible();
  o["message"] = messageText();
  o["readout"] = budget_->readoutText();
  o["budget_json"] = QString::fromStdString(budget_json_);
  o["compare"] = compare_->summary();
  o["panels"] = panels;
  o["controls"] = controls;
  QFile f(options_.ui_map + ".tmp");
  if (!f.open(QIODevice::WriteOnly | QIODevice::Truncate)) {
    static bool said = false;  // once, not four times a second
    if (!std::exchange(said, true)) qWarning("nestscope: cannot write the UI map %s: %s", qPrintable(f.fileName()), qPrintable(f.errorString()));
    return;
  }
  f.write(QJsonDocument(o).toJson());
  f.close();
  QFile::remove(options_.ui_map);
  f.rename(options_.ui_map);
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
