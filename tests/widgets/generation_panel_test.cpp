#include <gtest/gtest.h>

#include <QPushButton>
#include <QSignalSpy>
#include <QTest>

#include "widgets/generation_panel.h"

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
