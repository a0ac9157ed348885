// The explorer as a demo uses it: real mouse drags and key presses on the real window, driving the
// real Engine on its worker thread, at a projector's size, on PicoGPT and on the demo model.
#include <gtest/gtest.h>

#include <QApplication>
#include <QChart>
#include <QComboBox>
#include <QDialog>
#include <QDir>
#include <QElapsedTimer>
#include <QFile>
#include <QFileInfo>
#include <QProgressBar>
#include <QPushButton>
#include <QSlider>
#include <QStyle>
#include <QStyleOptionSlider>
#include <QTemporaryDir>
#include <QTest>

#include "tests/widgets/wait.h"

#include "app/engine_worker.h"
#include "app/main_window.h"
#include "core/io/default_model.h"
#include "widgets/activation_map.h"
#include "widgets/budget_panel.h"
#include "widgets/frontier_chart.h"
#include "widgets/generation_panel.h"

using namespace nestscope;

namespace {

// Drags a slider's handle with the mouse to `fraction` of its track (0 = left end).
void drag(QSlider* s, double fraction) {
  QStyleOptionSlider opt;
  opt.initFrom(s);
  opt.orientation = s->orientation();
  opt.minimum = s->minimum();
  opt.maximum = s->maximum();
  opt.sliderPosition = opt.sliderValue = s->value();
  const QRect handle = s->style()->subControlRect(QStyle::CC_Slider, &opt, QStyle::SC_SliderHandle, s);
  const QRect groove = s->style()->subControlRect(QStyle::CC_Slider, &opt, QStyle::SC_SliderGroove, s);
  const QPoint from = handle.center();
  const QPoint to(groove.left() + int(fraction * groove.width()), from.y());
  QTest::mousePress(s, Qt::LeftButton, Qt::NoModifier, from);
  for (int i = 1; i <= 8; ++i) QTest::mouseMove(s, from + (to - from) * i / 8, 5);
  QTest::mouseRelease(s, Qt::LeftButton, Qt::NoModifier, to);
}

// A window of the given size, its first generation done.
struct Window {
  MainWindow w;
  explicit Window(int tokens, QSize size = {1366, 768}) : w(options(tokens)) {
    w.resize(size);
    w.show();
  }
  static StartupOptions options(int tokens) {
    StartupOptions o;
    o.tokens = tokens;
    o.persist = false;  // the user's saved layout stays out of (and untouched by) the test
    return o;
  }
  bool firstGenerationDone(int tokens) {
    return QTest::qWaitFor([&] { return w.activationMap()->tokenCount() == tokens && !w.generationPanel()->busy(); },
                           60000);
  }
};

bool inside(const QWidget* w, const QWidget* window) {
  const QRect r(w->mapTo(window, QPoint(0, 0)), w->size());
  return w->isVisible() && r.width() > 100 && r.height() > 80 && window->rect().contains(r);
}

}  // namespace

TEST(Demo, FitsAProjectorWithTheOutputTheMapAndTheFrontierOnScreen) {
  if (!has_default_model()) GTEST_SKIP() << "this build embedded no default model";
  for (QSize size : {QSize(1280, 720), QSize(1366, 768), QSize(1920, 1080)}) {
    Window win(4, size);
    ASSERT_TRUE(win.firstGenerationDone(4));
    const QSize min = win.w.minimumSizeHint();
    // 1280×720 logical pixels is also 1920×1080 at 150% scaling.
    EXPECT_LE(min.width(), 1280) << size.width();
    EXPECT_LE(min.height(), 720) << size.width();
    EXPECT_EQ(win.w.size(), size);
    EXPECT_TRUE(inside(win.w.generationPanel(), &win.w)) << size.width();
    EXPECT_TRUE(inside(win.w.activationMap(), &win.w)) << size.width();
    EXPECT_TRUE(inside(win.w.frontierChart(), &win.w)) << size.width();
    EXPECT_TRUE(inside(win.w.budgetPanel(), &win.w)) << size.width();
    EXPECT_GT(win.w.frontierChart()->rows().size(), 10u);  // the built-in model's shipped sweep
    EXPECT_TRUE(win.w.messageText().isEmpty()) << win.w.messageText().toStdString();
  }
}

TEST(Demo, DraggingRankAndChiOnADenseModelChangesTheMacsAndTheOutput) {
  if (!has_default_model()) GTEST_SKIP() << "this build embedded no default model";
  Window win(24);
  auto* panel = win.w.generationPanel();
  auto s = panel->settings();
  s.temperature = 0;  // greedy: a different output means a different model
  panel->setSettings(s);
  ASSERT_TRUE(win.firstGenerationDone(24));
  panel->requestGenerate();
  ASSERT_TRUE(win.firstGenerationDone(24));
  const QString dense_out = panel->output(), dense_readout = win.w.budgetPanel()->readoutText();
  auto* budget = win.w.budgetPanel();
  drag(budget->rankSlider(), 0.1);  // PicoGPT is dense: the drag picks its SVD variant
  EXPECT_EQ(budget->budget().kind.at("attn"), LinearKind::Nsn);
  EXPECT_GT(budget->budget().rank, 0);
  EXPECT_LT(budget->budget().rank, 40);
  WAIT_UNTIL(budget->readoutText() != dense_readout && panel->output() != dense_out &&
                               win.w.activationMap()->tokenCount() == 24 && !panel->busy(), 60000);
  EXPECT_TRUE(budget->readoutText().contains("measured on the last generation"));
  const QString rank_out = panel->output(), rank_readout = budget->readoutText();
  drag(budget->bondSlider(), 0.2);  // χ: the TT-SVD chains
  EXPECT_EQ(budget->budget().kind.at("mlp"), LinearKind::Mpo);
  EXPECT_GT(budget->budget().bond, 0);
  WAIT_UNTIL(budget->readoutText() != rank_readout && panel->output() != rank_out &&
                               win.w.activationMap()->tokenCount() == 24 && !panel->busy(), 60000);
  EXPECT_TRUE(win.w.messageText().isEmpty()) << win.w.messageText().toStdString();
}

TEST(Demo, CtrlReturnGeneratesAndEscStops) {
  if (!has_default_model()) GTEST_SKIP() << "this build embedded no default model";
  Window win(4);
  ASSERT_TRUE(win.firstGenerationDone(4));
  QApplication::setActiveWindow(&win.w);
  ASSERT_TRUE(QTest::qWaitForWindowActive(&win.w));
  auto s = win.w.generationPanel()->settings();
  s.max_new_tokens = 100000;  // long enough to stop by hand
  win.w.generationPanel()->setSettings(s);
  QTest::keyClick(&win.w, Qt::Key_Return, Qt::ControlModifier);
  WAIT_UNTIL(win.w.generationPanel()->busy() && win.w.activationMap()->tokenCount() > 20, 30000);
  QTest::keyClick(&win.w, Qt::Key_Escape);
  WAIT_UNTIL(!win.w.generationPanel()->busy(), 30000);
  EXPECT_LT(win.w.activationMap()->tokenCount(), 100000);
}

TEST(Demo, TheGateAtHalfOnTheDemoModelRunsWithoutAMessageAndPlayReturns) {
  if (!has_default_model()) GTEST_SKIP() << "this build embedded no default model";
  Window win(16);
  ASSERT_TRUE(win.firstGenerationDone(16));
  win.w.openDemoModel();  // stories260K: a Llama with an MLP width of 172
  WAIT_UNTIL(win.w.modelSource().contains("stories260K") && win.w.modelReady(), 60000);
  EXPECT_TRUE(win.w.frontierChart()->chart()->title().contains("stories260K"));
  // Its shipped sweep: the rows follow the model's announcement (a separate signal).
  WAIT_UNTIL(win.w.frontierChart()->rows().size() > 10u, 10000);
  ASSERT_TRUE(win.firstGenerationDone(16));
  auto* budget = win.w.budgetPanel();
  drag(budget->gateSlider(), 0.45);  // blocks kept ~50%: turns the sensing gate on
  EXPECT_EQ(budget->budget().gate.policy, GatePolicy::Sensing);
  WAIT_UNTIL(win.w.activationMap()->tokenCount() == 16 && !win.w.generationPanel()->busy() &&
                               win.w.activationMap()->selectedActiveFraction() < 0.9, 60000);
  EXPECT_TRUE(win.w.messageText().isEmpty()) << win.w.messageText().toStdString();
  // Play budget animates rank from full to its minimum, then returns to where it started.
  const Budget before = budget->budget();
  budget->play();
  QTest::qWait(1500);
  budget->stopPlay();
  EXPECT_EQ(budget->budget(), before);
  WAIT_UNTIL(!win.w.generationPanel()->busy(), 60000);
  EXPECT_TRUE(win.w.messageText().isEmpty()) << win.w.messageText().toStdString();
}

TEST(Demo, ARefusedBudgetShowsOneMessageAndThePanelShowsWhatRuns) {
  if (!has_default_model()) GTEST_SKIP() << "this build embedded no default model";
  Window win(4);
  ASSERT_TRUE(win.firstGenerationDone(4));
  auto* budget = win.w.budgetPanel();
  Budget shown;  // what the controls say before the request
  shown.kind = {{"attn", LinearKind::Nsn}};
  shown.rank = 8;
  budget->showBudget(shown);
  Budget bad = shown;
  bad.rank = 100000;  // beyond every layer's rank: the Engine refuses it and keeps the full model
  for (int i = 0; i < 3; ++i) Q_EMIT win.w.budgetRequested(bad, win.w.generationPanel()->prompt());
  WAIT_UNTIL(win.w.messageCount() == 3, 30000);  // one bar, counting the repeats
  EXPECT_TRUE(win.w.messageText().contains("rank 100000 is outside")) << win.w.messageText().toStdString();
  EXPECT_EQ(budget->budget(), Budget{});  // the panel shows the budget that runs
  win.w.dismissMessage();
  EXPECT_TRUE(win.w.messageText().isEmpty());
}

TEST(Demo, ACorruptFrontierCacheIsSweptAgainNotAnError) {
  if (!has_default_model()) GTEST_SKIP() << "this build embedded no default model";
  QTemporaryDir cache;
  const QByteArray saved = qgetenv("NESTSCOPE_CACHE_DIR");
  qputenv("NESTSCOPE_CACHE_DIR", cache.path().toUtf8());
  QString path;
  {
    Window first(4);
    ASSERT_TRUE(first.firstGenerationDone(4));
    path = EngineWorker::frontierCachePath(first.w.session().model_hash);
  }
  {
    QFile f(path);
    ASSERT_TRUE(f.open(QIODevice::WriteOnly));
    f.write("not a frontier row\n");
  }
  Window win(4);
  ASSERT_TRUE(win.firstGenerationDone(4));
  EXPECT_TRUE(win.w.messageText().isEmpty()) << win.w.messageText().toStdString();
  EXPECT_GT(win.w.frontierChart()->rows().size(), 10u);  // the shipped rows, as on a first launch
  EXPECT_FALSE(QFileInfo::exists(path));
  if (saved.isEmpty()) qunsetenv("NESTSCOPE_CACHE_DIR");
  else qputenv("NESTSCOPE_CACHE_DIR", saved);
}

TEST(Demo, TheFrontierShowsRowsWhileASweepRuns) {
  if (!has_default_model()) GTEST_SKIP() << "this build embedded no default model";
  QTemporaryDir dir, cache;
  const QByteArray saved = qgetenv("NESTSCOPE_CACHE_DIR");
  qputenv("NESTSCOPE_CACHE_DIR", cache.path().toUtf8());  // no rows swept before
  // A copy of the demo model with a config of its own (another content hash): nothing shipped for it.
  const QString model = dir.filePath("copy");
  QDir().mkpath(model);
  for (const QFileInfo& f : QDir(EngineWorker::demoModelFolder()).entryInfoList(QDir::Files))
    ASSERT_TRUE(QFile::copy(f.filePath(), model + "/" + f.fileName()));
  {
    QFile config(model + "/config.json");
    ASSERT_TRUE(config.open(QIODevice::ReadWrite));
    QByteArray text = config.readAll();
    text.replace("{", "{\n  \"_name_or_path\": \"a copy\",");
    config.resize(0);
    config.write(text);
  }
  Window win(4);
  ASSERT_TRUE(win.firstGenerationDone(4));
  const QString default_hash = win.w.session().model_hash;
  win.w.openModelPath(model);
  WAIT_UNTIL(win.w.modelSource() == model && win.w.modelReady(), 60000);
  ASSERT_NE(win.w.session().model_hash, default_hash);
  ASSERT_TRUE(win.firstGenerationDone(4));
  EXPECT_EQ(win.w.frontierChart()->rows().size(), 0u);
  QTest::mouseClick(win.w.sweepButton(), Qt::LeftButton);
  WAIT_UNTIL(win.w.frontierChart()->rows().size() >= 2, 120000);
  EXPECT_TRUE(win.w.sweepProgress()->isVisible());  // still running: rows arrive as they finish
  QTest::mouseClick(win.w.sweepButton(), Qt::LeftButton);  // cancel
  WAIT_UNTIL(!win.w.sweepProgress()->isVisible(), 60000);
  EXPECT_GE(win.w.frontierChart()->rows().size(), 2u);  // what finished stays
  if (saved.isEmpty()) qunsetenv("NESTSCOPE_CACHE_DIR");
  else qputenv("NESTSCOPE_CACHE_DIR", saved);
}
