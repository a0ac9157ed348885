#include <gtest/gtest.h>

#include <QPushButton>
#include <QSignalSpy>
#include <QTest>
#include <QTextCursor>
#include <QTextEdit>
#include <algorithm>
#include <cmath>

#include "widgets/generation_panel.h"
#include "widgets/theme.h"

using nestscope::GenerationPanel;
using nestscope::GenerationSettings;

TEST(GenerationPanel, StreamsTokensAfterThePrompt) {
  GenerationPanel p;
  p.setPrompt("ROMEO:\n");
  p.startOutput();
  p.appendToken("B", 0.1);
  p.appendToken("u", 2.5);
  p.appendToken("t", 0.0);
  EXPECT_EQ(p.output().toStdString(), "ROMEO:\nBut");
  p.startOutput();
  EXPECT_EQ(p.output().toStdString(), "ROMEO:\n");
}

TEST(GenerationPanel, GenerateEmitsPromptAndSettingsAndBusyBlocksIt) {
  GenerationPanel p;
  p.setPrompt("Hi");
  p.setSettings({42, 0.5, 7, 9});
  QSignalSpy spy(&p, &GenerationPanel::generateRequested);
  p.requestGenerate();
  ASSERT_EQ(spy.count(), 1);
  EXPECT_EQ(spy.at(0).at(0).toString().toStdString(), "Hi");
  const auto s = spy.at(0).at(1).value<GenerationSettings>();
  EXPECT_EQ(s.max_new_tokens, 42);
  EXPECT_DOUBLE_EQ(s.temperature, 0.5);
  EXPECT_EQ(s.top_k, 7);
  EXPECT_EQ(s.seed, 9u);
  p.setBusy(true);
  p.requestGenerate();
  EXPECT_EQ(spy.count(), 1);
  QSignalSpy stop(&p, &GenerationPanel::stopRequested);
  for (auto* b : p.findChildren<QPushButton*>())
    if (b->text() == "Stop") QTest::mouseClick(b, Qt::LeftButton);
  EXPECT_EQ(stop.count(), 1);
}

namespace {
// WCAG contrast ratio of two colours (1 = none, 21 = black on white).
double contrast(const QColor& a, const QColor& b) {
  auto lum = [](const QColor& c) {
    auto ch = [](double v) { return v <= 0.03928 ? v / 12.92 : std::pow((v + 0.055) / 1.055, 2.4); };
    return 0.2126 * ch(c.redF()) + 0.7152 * ch(c.greenF()) + 0.0722 * ch(c.blueF());
  };
  const double x = lum(a), y = lum(b);
  return (std::max(x, y) + 0.05) / (std::min(x, y) + 0.05);
}

QColor tokenColour(GenerationPanel& p, int i) {
  auto* edit = p.findChild<QTextEdit*>();
  QTextCursor c(edit->document());
  c.setPosition(p.tokenStart(i) + 1);  // the format of the character before the cursor
  return c.charFormat().foreground().color();
}
}  // namespace

TEST(GenerationPanel, TokensStayReadableWhenThePaletteTurnsDark) {
  GenerationPanel p;
  p.setPrompt("A");
  p.startOutput();
  p.appendToken("b", 0.0);  // certain: the low end of the scale
  p.appendToken("c", 3.0);  // a guess: the high end
  for (bool dark : {false, true}) {
    if (dark) {  // a switch to a dark desktop theme while the window is open recolours what is there
      QPalette pal = p.palette();
      pal.setColor(QPalette::Window, QColor(37, 37, 40));
      pal.setColor(QPalette::Base, QColor(26, 26, 28));
      pal.setColor(QPalette::Text, QColor(228, 228, 230));
      p.setPalette(pal);
    }
    EXPECT_EQ(nestscope::theme::isDark(p.palette()), dark);
    const QColor base = p.palette().color(QPalette::Base);
    for (int i = 0; i < 2; ++i) EXPECT_GE(contrast(tokenColour(p, i), base), 3.0) << "token " << i << " dark " << dark;
    EXPECT_NE(tokenColour(p, 0), tokenColour(p, 1));  // the scale still separates certain from uncertain
  }
}
