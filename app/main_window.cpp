#include "app/main_window.h"

#include <QApplication>
#include <QClipboard>
#include <QDockWidget>
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

#include "core/model/budget_json.h"
#include "widgets/activation_map.h"
#include "widgets/budget_panel.h"
#include "widgets/frontier_chart.h"
#include "widgets/generation_panel.h"

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

  // Docks: budget (left), model (left, under it), activation map (bottom), frontier (right).
  budget_ = new BudgetPanel;
  map_ = new ActivationMap;
  chart_ = new FrontierChart;
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
  ml->addWidget(model_info_);
  ml->addWidget(open);
  ml->addStretch();
  dock(this, tr("Budget"), "budget", budget_, Qt::LeftDockWidgetArea);
  dock(this, tr("Model"), "model", model_box, Qt::LeftDockWidgetArea);
  dock(this, tr("Activation map"), "activations", map_, Qt::BottomDockWidgetArea);
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

  auto* file = menuBar()->addMenu(tr("&File"));
  file->addAction(tr("&Open model…"), QKeySequence::Open, this, &MainWindow::openModel);
  file->addAction(tr("Open &default model"), this, [this] { Q_EMIT loadRequested(QString()); });
  file->addAction(tr("Open frontier &results…"), this, [this] {
    const QString p = QFileDialog::getOpenFileName(this, tr("Open frontier results"), QString(),
                                                   tr("Frontier rows (*.jsonl);;All files (*)"));
    if (!p.isEmpty()) Q_EMIT frontierFileRequested(p);
  });
  file->addSeparator();
  file->addAction(tr("&Export frontier PNG…"), QKeySequence(Qt::CTRL | Qt::Key_E), this, [this] { exportFrontier("png"); });
  file->addAction(tr("Export frontier PNG (2×)…"), QKeySequence(Qt::CTRL | Qt::SHIFT | Qt::Key_E), this,
                  [this] { exportFrontier("png"); });
  file->addAction(tr("Export frontier SVG…"), QKeySequence(Qt::CTRL | Qt::ALT | Qt::Key_E), this, [this] { exportFrontier("svg"); });
  file->addAction(tr("Export frontier CSV…"), this, [this] { exportFrontier("csv"); });
  file->addAction(tr("Copy activation map image"), this,
                  [this] { QApplication::clipboard()->setPixmap(map_->grab()); });
  file->addSeparator();
  file->addAction(tr("&Quit"), QKeySequence::Quit, this, &QWidget::close);
  auto* run = menuBar()->addMenu(tr("&Run"));
  run->addAction(tr("&Generate"), QKeySequence(Qt::CTRL | Qt::Key_Return), panel_, &GenerationPanel::requestGenerate);
  run->addAction(tr("&Stop"), QKeySequence(Qt::Key_Escape), this, [this] { worker_->requestStop(); });
  run->addAction(tr("&Play budget"), QKeySequence(Qt::CTRL | Qt::Key_P), budget_, &BudgetPanel::play);
  auto* view = menuBar()->addMenu(tr("&View"));
  for (auto* d : findChildren<QDockWidget*>()) view->addAction(d->toggleViewAction());

  // The worker lives on its own thread: every call into the Engine happens there.
  worker_->moveToThread(&thread_);
  connect(&thread_, &QThread::finished, worker_, &QObject::deleteLater);
  connect(this, &MainWindow::loadRequested, worker_, &EngineWorker::loadModel);
  connect(this, &MainWindow::budgetRequested, worker_, &EngineWorker::setBudget);
  connect(this, &MainWindow::generateRequested, worker_, &EngineWorker::generate);
  connect(this, &MainWindow::sweepRequested, worker_, &EngineWorker::runSweep);
  connect(this, &MainWindow::frontierFileRequested, worker_, &EngineWorker::loadFrontier);
  connect(worker_, &EngineWorker::modelLoaded, this, &MainWindow::onModelLoaded);
  connect(worker_, &EngineWorker::budgetApplied, this, &MainWindow::onBudgetApplied);
  connect(worker_, &EngineWorker::generationStarted, this, [this] {
    panel_->startOutput();
    map_->clear();
  });
  connect(worker_, &EngineWorker::tokenGenerated, this, [this](const TokenActivity& t) {
    panel_->appendToken(t.text, t.entropy);
    map_->appendToken(t);
  });
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
  connect(open, &QPushButton::clicked, this, &MainWindow::openModel);
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
  panel_->setBusy(true);  // until the model is loaded
  thread_.start();
  Q_EMIT loadRequested(options.model);
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
  worker_->requestStop();
  model_label_->setText(tr("loading %1…").arg(QFileInfo(path).fileName()));
  Q_EMIT loadRequested(path);
}

void MainWindow::onModelLoaded(const ModelView& m) {
  model_ = m;
  model_ready_ = true;
  rows_.clear();
  chart_->setRows({});
  map_->setShape(m.layers, m.heads, m.blocks);
  budget_->setLimits(m.limits);
  model_label_->setText(tr("%1 — %2").arg(m.source, m.summary));
  model_info_->setText(tr("<b>%1</b><br>%2<br>%3 parameters · %4 MACs/token at full context<br>"
                          "rank up to %5 · χ up to %6")
                           .arg(m.source.toHtmlEscaped(), m.summary, human(double(m.parameters)), human(double(m.macs)))
                           .arg(m.limits.rank)
                           .arg(m.limits.bond));
  params_label_->setText(tr("%1 parameters").arg(human(double(m.parameters))));
  panel_->setBusy(false);
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
  chart_->setOperatingPoint(r.estimated_accuracy >= 0 ? macs_ : qQNaN(), r.estimated_accuracy);
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
  std::vector<SweepRow> rows;
  for (const auto& r : all)
    if (r.model_hash == model_.hash.toStdString()) rows.push_back(r);
  if (rows.empty()) rows = all;
  rows_ = rows;
  const QString name = QFileInfo(model_.source).isFile() ? QFileInfo(model_.source).fileName() : model_.source;
  chart_->setTitle(tr("%1: compute–accuracy frontier").arg(name));
  chart_->setRows(rows);
  sweep_progress_->setVisible(false);
  sweep_button_->setText(tr("Sweep frontier"));
  updateReadout();
}

void MainWindow::exportFrontier(const QString& suffix) {
  const QString path = QFileDialog::getSaveFileName(this, tr("Export frontier"), "frontier." + suffix);
  if (path.isEmpty()) return;
  QString error;
  const bool ok = suffix == "svg" ? chart_->exportSvg(path, &error)
                  : suffix == "csv" ? chart_->exportCsv(path, &error)
                                    : chart_->exportPng(path, 2.0, &error);
  if (!ok) onFailed(error);
}

void MainWindow::onFailed(const QString& message) {
  if (!options_.screenshot.isEmpty()) {
    qCritical("error: %s", qPrintable(message));
    QApplication::exit(1);
    return;
  }
  if (!model_ready_) model_label_->setText(tr("no model loaded"));
  QMessageBox::warning(this, tr("NestScope"), message);
}

void MainWindow::saveScreenshotAndQuit() {
  const bool ok = grab().save(options_.screenshot, "PNG");
  if (!ok) qCritical("error: cannot write screenshot %s", qPrintable(options_.screenshot));
  QApplication::exit(ok ? 0 : 1);
}

}  // namespace nestscope
