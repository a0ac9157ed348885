// nestscope: the desktop explorer. Opens the embedded default model unless --model is given.
#include <QApplication>
#include <QCommandLineParser>
#include <cstdio>

#include "app/main_window.h"
#include "widgets/theme.h"

int main(int argc, char** argv) {
  QApplication app(argc, argv);
  QApplication::setApplicationName("NestScope");
  QApplication::setOrganizationName("NestScope");
  QCommandLineParser parser;
  parser.setApplicationDescription("NestScope: elastic language-model inference lab");
  parser.addHelpOption();
  QCommandLineOption model({"m", "model"}, "Checkpoint or Hugging Face model folder to open (default: the embedded PicoGPT).", "path");
  QCommandLineOption prompt({"p", "prompt"}, "Initial prompt.", "text");
  QCommandLineOption tokens({"n", "tokens"}, "Tokens to generate.", "count");
  QCommandLineOption budget("budget", "Budget to start with, as JSON (e.g. '{\"rank\": 32, \"kind\": {\"mlp\": \"nsn\"}}').",
                            "json");
  QCommandLineOption screenshot("screenshot", "Generate once, save the window to FILE (PNG) and exit.", "file");
  QCommandLineOption frontier("frontier", "Show the rows of a frontier results file (nestscope-cli frontier --out).",
                              "file");
  QCommandLineOption panel("panel", "With --screenshot: only this panel (budget, model, activations, teaching, compare, "
                           "frontier, prompt).", "name");
  QCommandLineOption theme("theme", "Colour scheme: system (default), light or dark (e.g. for a projector).", "name",
                           "system");
  QCommandLineOption ui_map("ui-map", "Keep FILE updated (JSON) with the window's state and the screen rectangles of its "
                            "panels and controls, for scripts that drive the explorer (scripts/demo-check.sh).", "file");
  parser.addOptions({model, prompt, tokens, budget, frontier, screenshot, panel, theme, ui_map});
  parser.process(app);
  if (!nestscope::theme::apply(app, parser.value(theme))) {
    std::fprintf(stderr, "nestscope: --theme must be system, light or dark, not '%s'\n", qPrintable(parser.value(theme)));
    return 2;
  }

  nestscope::StartupOptions o;
  o.model = parser.value(model);
  if (parser.isSet(prompt)) o.prompt = parser.value(prompt);
  if (parser.isSet(tokens)) o.tokens = parser.value(tokens).toInt();
  o.budget = parser.value(budget);
  o.frontier = parser.value(frontier);
  o.screenshot = parser.value(screenshot);
  o.panel = parser.value(panel);
  o.ui_map = parser.value(ui_map);

  nestscope::MainWindow w(o);
  w.show();
  return app.exec();
}
