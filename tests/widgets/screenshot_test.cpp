// Runs the real GUI binary offscreen with --screenshot and checks the picture it saved.
#include <gtest/gtest.h>

#include <QDir>
#include <QImage>
#include <QProcess>
#include <QTemporaryDir>
#include <set>

namespace {
struct GuiRun {
  int exit_code = -1;
  QString err;
  bool finished = false;
};
// The GUI binary offscreen with `args`; waits up to 4 minutes.
GuiRun run_gui(const QStringList& args) {
  QProcess app;
  auto env = QProcessEnvironment::systemEnvironment();
  env.insert("QT_QPA_PLATFORM", "offscreen");
  app.setProcessEnvironment(env);
  app.start(NESTSCOPE_GUI_BIN, args);
  GuiRun r;
  r.finished = app.waitForFinished(240000);
  r.exit_code = app.exitCode();
  r.err = QString::fromUtf8(app.readAllStandardError());
  return r;
}
bool no_default_model(const GuiRun& r) { return r.exit_code != 0 && r.err.contains("no embedded default model"); }
}  // namespace

TEST(GuiScreenshot, WindowRendersAGenerationToPng) {
  QTemporaryDir dir;
  ASSERT_TRUE(dir.isValid());
  const QString png = dir.filePath("window.png");
  const auto r = run_gui({"--screenshot", png, "--prompt", "ROMEO:\n", "--tokens", "60"});
  ASSERT_TRUE(r.finished) << "GUI did not finish";
  if (no_default_model(r)) GTEST_SKIP() << r.err.toStdString();
  ASSERT_EQ(r.exit_code, 0) << r.err.toStdString();
  QImage img(png);
  ASSERT_FALSE(img.isNull());
  EXPECT_GE(img.width(), 800);
  EXPECT_GE(img.height(), 500);
  // A real window has many distinct colours (text, widgets); a blank one has a handful.
  std::set<QRgb> colours;
  for (int y = 0; y < img.height(); y += 3)
    for (int x = 0; x < img.width(); x += 3) colours.insert(img.pixel(x, y));
  EXPECT_GT(colours.size(), 20u);
}

TEST(GuiScreenshot, OneNamedPanel) {
  QTemporaryDir dir;
  const QString png = dir.filePath("map.png");
  auto r = run_gui({"--screenshot", png, "--panel", "activations", "--tokens", "20"});
  ASSERT_TRUE(r.finished) << "GUI did not finish";
  if (no_default_model(r)) GTEST_SKIP() << r.err.toStdString();
  ASSERT_EQ(r.exit_code, 0) << r.err.toStdString();
  QImage img(png);
  ASSERT_FALSE(img.isNull());
  EXPECT_LT(img.height(), 600);  // the panel, not the whole window
  r = run_gui({"--screenshot", png, "--panel", "nope", "--tokens", "5"});
  ASSERT_TRUE(r.finished);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(r.err.contains("no panel named 'nope'"));
}
