// nestscope: the desktop explorer. Opens the embedded default model unless --model is given.
#include <QApplication>
#include <QCommandLineParser>

#include "app/main_window.h"

int main(int argc, char** argv) {
  QApplication app(argc, argv);
  QApplication::setApplicationName("NestScope");
  QApplication::setOrganizationName("NestScope");
  QCommandLineParser parser;
  parser.setApplicationDescription("NestScope: elastic language-model inference lab");
  parser.addHelpOption();
  QCommandLineOption model({"m", "model"}, "Checkpoint to open (default: the embedded PicoGPT).", "file");
  QCommandLineOption prompt({"p", "prompt"}, "Initial prompt.", "text");
  QCommandLineOption tokens({"n", "tokens"}, "Tokens to generate.", "count");
  QCommandLineOption screenshot("screenshot", "Generate once, save the window to FILE (PNG) and exit.", "file");
  parser.addOptions({model, prompt, tokens, screenshot});
  parser.process(app);

  nestscope::StartupOptions o;
  o.model = parser.value(model);
  if (parser.isSet(prompt)) o.prompt = parser.value(prompt);
  if (parser.isSet(tokens)) o.tokens = parser.value(tokens).toInt();
  o.screenshot = parser.value(screenshot);
  qRegisterMetaType<nestscope::GenerationSettings>("nestscope::GenerationSettings");

  nestscope::MainWindow w(o);
  w.show();
  return app.exec();
}
