// gtest main for widget tests: one QApplication (offscreen under ctest) for the whole run. A
// modal window (a message box, a dialog) is a failure: the explorer reports in its message bar.
#include <gtest/gtest.h>

#include <QApplication>
#include <QEvent>
#include <QTimer>
#include <QWidget>

namespace {

class ModalGuard : public QObject {
 protected:
  bool eventFilter(QObject* o, QEvent* e) override {
    if (e->type() == QEvent::Show && o->isWidgetType()) {
      auto* w = static_cast<QWidget*>(o);
      if (w->isWindow() && w->windowModality() != Qt::NonModal) {
        ADD_FAILURE() << "a modal window opened: " << qPrintable(w->metaObject()->className()) << " '"
                      << qPrintable(w->windowTitle()) << "'";
        QTimer::singleShot(0, w, &QWidget::close);
      }
    }
    return false;
  }
};

}  // namespace

int main(int argc, char** argv) {
  if (qEnvironmentVariableIsEmpty("QT_QPA_PLATFORM")) qputenv("QT_QPA_PLATFORM", "offscreen");
  QApplication app(argc, argv);
  ModalGuard guard;
  app.installEventFilter(&guard);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
