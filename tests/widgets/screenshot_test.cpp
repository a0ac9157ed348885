// Runs the real GUI binary offscreen with --screenshot and checks the picture it saved.
#include <gtest/gtest.h>

#include <QDir>
#include <QImage>
#include <QProcess>
#include <QTemporaryDir>
#include <set>

TEST(GuiScreenshot, WindowRendersAGenerationToPng) {
  QTemporaryDir dir;
  ASSERT_TRUE(dir.isValid());
  const QString png = dir.filePath("window.png");
  QProcess app;
  auto env = QProcessEnvironment::systemEnvironment();
  env.insert("QT_QPA_PLATFORM", "offscreen");
  app.setProcessEnvironment(env);
  app.start(NESTSCOPE_GUI_BIN, {"--screenshot", png, "--prompt", "ROMEO:\n", "--tokens", "60"});
  ASSERT_TRUE(app.waitForFinished(240000)) << "GUI did not finish";
  const QString err = QString::fromUtf8(app.readAllStandardError());
  if (app.exitCode() != 0 && err.contains("no embedded default model")) GTEST_SKIP() << err.toStdString();
  ASSERT_EQ(app.exitCode(), 0) << err.toStdString();
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
  QProcess app;
  auto env = QProcessEnvironment::systemEnvironment();
  env.insert("QT_QPA_PLATFORM", "offscreen");
  app.setProcessEnvironment(env);
  app.start(NESTSCOPE_GUI_BIN, {"--screenshot", png, "--panel", "activations", "--tokens", "20"});
  ASSERT_TRUE(app.waitForFinished(240000)) << "GUI did not finish";
  const QString err = QString::fromUtf8(app.readAllStandardError());
  if (app.exitCode() != 0 && err.contains("no embedded default model")) GTEST_SKIP() << err.toStdString();
  ASSERT_EQ(app.exitCode(), 0) << err.toStdString();
  QImage img(png);
  ASSERT_FALSE(img.isNull());
  EXPECT_LT(img.height(), 600);  // the panel, not the whole window
  app.start(NESTSCOPE_GUI_BIN, {"--screenshot", png, "--panel", "nope", "--tokens", "5"});
  ASSERT_TRUE(app.waitForFinished(240000));
  EXPECT_NE(app.exitCode(), 0);
  EXPECT_TRUE(QString::fromUtf8(app.readAllStandardError()).contains("no panel named 'nope'"));
}
