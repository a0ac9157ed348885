#include "app/main_window.h"

#include <QApplication>
#include <QFileDialog>
#include <QFileInfo>
#include <QLabel>
#include <QMenuBar>
#include <QMessageBox>
#include <QSettings>
#include <QStatusBar>
#include <QTimer>

#include "app/engine_worker.h"

namespace nestscope {

namespace {
QString human(qint64 n) {
  if (n >= 1000000) return QString::number(double(n) / 1e6, 'f', 2) + "M";
  if (n >= 1000) return QString::number(double(n) / 1e3, 'f', 1) + "k";
  return QString::number(n);
}
}  // namespace

MainWindow::MainWindow(const StartupOptions& options) : options_(options), worker_(new EngineWorker) {
  setWindowTitle(tr("NestScope"));
  resize(1000, 680);
  panel_ = new GenerationPanel(this);
  panel_->setPrompt(options.prompt);
  auto s = panel_->settings();
  QSettings settings;
  if (options.screenshot.isEmpty()) {  // a screenshot run stays reproducible: no saved state
    restoreGeometry(settings.value("window/geometry").toByteArray());
    s.temperature = settings.value("generate/temperature", s.temperature).toDouble();
    s.top_k = settings.value("generate/top_k", s.top_k).toInt();
    s.seed = settings.value("generate/seed", s.seed).toULongLong();
  }
  s.max_new_tokens = options.tokens;
  panel_->setSettings(s);
  setCentralWidget(panel_);

  model_label_ = new QLabel(tr("loading model…"), this);
  params_label_ = new QLabel(this);
  speed_label_ = new QLabel(this);
  statusBar()->addWidget(model_label_, 1);
  statusBar()->addPermanentWidget(params_label_);
  statusBar()->addPermanentWidget(speed_label_);

  auto* file = menuBar()->addMenu(tr("&File"));
  file->addAction(tr("&Open model…"), QKeySequence::Open, this, &MainWindow::openModel);
  file->addAction(tr("Open &default model"), this, [this] { Q_EMIT loadRequested(QString()); });
  file->addSeparator();
  file->addAction(tr("&Quit"), QKeySequence::Quit, this, &QWidget::close);
  auto* run = menuBar()->addMenu(tr("&Run"));
  run->addAction(tr("&Generate"), QKeySequence(Qt::CTRL | Qt::Key_Return), panel_, &GenerationPanel::requestGenerate);
  run->addAction(tr("&Stop"), this, [this] { worker_->requestStop(); });

  // The worker lives on its own thread: every call into the Engine happens there.
  worker_->moveToThread(&thread_);
  connect(&thread_, &QThread::finished, worker_, &QObject::deleteLater);
  connect(this, &MainWindow::loadRequested, worker_, &EngineWorker::loadModel);
  connect(this, &MainWindow::generateRequested, worker_, &EngineWorker::generate);
  connect(worker_, &EngineWorker::modelLoaded, this, &MainWindow::onModelLoaded);
  connect(worker_, &EngineWorker::generationStarted, panel_, &GenerationPanel::startOutput);
  connect(worker_, &EngineWorker::tokenGenerated, panel_, &GenerationPanel::appendToken);
  connect(worker_, &EngineWorker::generationFinished, this, &MainWindow::onFinished);
  connect(worker_, &EngineWorker::failed, this, &MainWindow::onFailed);
  connect(panel_, &GenerationPanel::generateRequested, this,
          [this](const QString& prompt, const GenerationSettings& settings) {
            panel_->setBusy(true);
            speed_label_->setText(tr("generating…"));
            Q_EMIT generateRequested(prompt, settings);
          });
  connect(panel_, &GenerationPanel::stopRequested, this, [this] { worker_->requestStop(); });
  panel_->setBusy(true);  // until the model is loaded
  thread_.start();
  Q_EMIT loadRequested(options.model);
}

void MainWindow::closeEvent(QCloseEvent* event) {
  if (options_.screenshot.isEmpty()) {
    QSettings settings;
    const auto s = panel_->settings();
    settings.setValue("window/geometry", saveGeometry());
    settings.setValue("generate/temperature", s.temperature);
    settings.setValue("generate/top_k", s.top_k);
    settings.setValue("generate/seed", s.seed);
  }
  QMainWindow::closeEvent(event);
}

MainWindow::~MainWindow() {
  worker_->requestStop();
  thread_.quit();
  thread_.wait();
}

void MainWindow::openModel() {
  const QString path = QFileDialog::getOpenFileName(this, tr("Open model"), QString(),
                                                    tr("NestScope checkpoints (*.safetensors);;All files (*)"));
  if (path.isEmpty()) return;
  worker_->requestStop();
  model_label_->setText(tr("loading %1…").arg(QFileInfo(path).fileName()));
  Q_EMIT loadRequested(path);
}

void MainWindow::onModelLoaded(const QString& source, qint64 parameters, qint64 macs, const QString& summary) {
  model_ready_ = true;
  model_label_->setText(tr("%1 — %2").arg(source, summary));
  params_label_->setText(tr("%1 parameters · %2 MACs/token").arg(human(parameters), human(macs)));
  panel_->setBusy(false);
  if (!options_.screenshot.isEmpty()) panel_->requestGenerate();
}

void MainWindow::onFinished(qint64 tokens, double tokensPerSecond, bool stopped) {
  panel_->setBusy(!model_ready_);
  speed_label_->setText(tr("%1 tokens · %2 tokens/s%3")
                            .arg(tokens)
                            .arg(tokensPerSecond, 0, 'f', 0)
                            .arg(stopped ? tr(" (stopped)") : QString()));
  if (!options_.screenshot.isEmpty()) QTimer::singleShot(100, this, &MainWindow::saveScreenshotAndQuit);
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
