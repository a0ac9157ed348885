// MainWindow's menus and their actions (File, Run, View).
#include <QApplication>
#include <QClipboard>
#include <QDockWidget>
#include <QFileDialog>
#include <QMenuBar>

#include "app/main_window.h"
#include "widgets/budget_panel.h"
#include "widgets/generation_panel.h"

namespace nestscope {

void MainWindow::buildMenus() {
  auto* file = menuBar()->addMenu(tr("&File"));
  file->addAction(tr("&Open model…"), QKeySequence::Open, this, &MainWindow::openModel);
  file->addAction(tr("Open &Hugging Face folder…"), QKeySequence(Qt::CTRL | Qt::ALT | Qt::Key_O), this, [this] {
    const QString dir = QFileDialog::getExistingDirectory(this, tr("Open a Hugging Face model folder (config.json, "
                                                                   "model.safetensors, tokenizer.json)"));
    if (!dir.isEmpty()) openModelPath(dir);
  });
  file->addAction(tr("Open &default model (PicoGPT)"), this, [this] { openModelPath(QString()); });
  file->addAction(tr("Open demo model (stories260&K, TinyStories)"), QKeySequence(Qt::CTRL | Qt::SHIFT | Qt::Key_D), this,
                  &MainWindow::openDemoModel);
  file->addAction(tr("&Export as Hugging Face folder…"), this, [this] {
    const QString dir = QFileDialog::getExistingDirectory(this, tr("Export the model at the current budget to a folder"));
    if (!dir.isEmpty()) Q_EMIT exportHfRequested(dir);
  });
  recent_models_ = file->addMenu(tr("Recent &models"));
  file->addSeparator();
  file->addAction(tr("Open &session…"), QKeySequence(Qt::CTRL | Qt::SHIFT | Qt::Key_O), this, [this] {
    const QString p = QFileDialog::getOpenFileName(this, tr("Open session"), QString(),
                                                   tr("NestScope sessions (*.nestscope.json);;All files (*)"));
    if (p.isEmpty()) return;
    try {
      openSession(load_session(p));
      remember("recent/sessions", p);
    } catch (const std::exception& e) {
      onFailed(QString::fromStdString(e.what()));
    }
  });
  file->addAction(tr("&Save session…"), QKeySequence::Save, this, [this] {
    const QString p = QFileDialog::getSaveFileName(this, tr("Save session"), "finding.nestscope.json",
                                                   tr("NestScope sessions (*.nestscope.json)"));
    if (p.isEmpty()) return;
    try {
      save_session(p, session());
      remember("recent/sessions", p);
    } catch (const std::exception& e) {
      onFailed(QString::fromStdString(e.what()));
    }
  });
  recent_sessions_ = file->addMenu(tr("Recent s&essions"));
  file->addAction(tr("Open frontier &results…"), this, [this] {
    const QString p = QFileDialog::getOpenFileName(this, tr("Open frontier results"), QString(),
                                                   tr("Frontier rows (*.jsonl);;All files (*)"));
    if (!p.isEmpty()) Q_EMIT frontierFileRequested(p);
  });
  file->addSeparator();
  // Exports act on the panel that has the keyboard focus (the frontier when none does).
  file->addAction(tr("&Export current panel…"), QKeySequence(Qt::CTRL | Qt::Key_E), this, [this] { exportCurrent(QString()); });
  file->addAction(tr("Export current panel as PNG (2×)…"), QKeySequence(Qt::CTRL | Qt::SHIFT | Qt::Key_E), this,
                  [this] { exportCurrent("png"); });
  file->addAction(tr("Export current panel as SVG…"), QKeySequence(Qt::CTRL | Qt::ALT | Qt::Key_E), this,
                  [this] { exportCurrent("svg"); });
  file->addAction(tr("Export current panel data (CSV)…"), this, [this] { exportCurrent("csv"); });
  file->addAction(tr("&Copy current panel image"), QKeySequence(Qt::CTRL | Qt::SHIFT | Qt::Key_C), this, [this] {
    if (QWidget* w = panel(currentPanelName())) QApplication::clipboard()->setPixmap(w->grab());
  });
  file->addSeparator();
  file->addAction(tr("C&lear caches"), this, &MainWindow::clearCaches)
      ->setToolTip(tr("Delete the variants and frontier rows kept in the cache folder (rebuilt when needed)"));
  file->addAction(tr("&Quit"), QKeySequence::Quit, this, &QWidget::close);
  auto* run = menuBar()->addMenu(tr("&Run"));
  run->addAction(tr("&Generate"), QKeySequence(Qt::CTRL | Qt::Key_Return), panel_, &GenerationPanel::requestGenerate);
  run->addAction(tr("&Stop"), QKeySequence(Qt::Key_Escape), this, [this] { worker_->requestStop(); });
  run->addAction(tr("&Play budget"), QKeySequence(Qt::CTRL | Qt::Key_P), budget_, &BudgetPanel::play);
  auto* view = menuBar()->addMenu(tr("&View"));
  for (auto* d : findChildren<QDockWidget*>()) view->addAction(d->toggleViewAction());

}

}  // namespace nestscope
