#include "widgets/theme.h"

#include <cmath>

#include <QApplication>
#include <QStyle>
#include <QStyleFactory>

namespace nestscope::theme {

bool isDark(const QPalette& p) { return p.color(QPalette::Window).lightness() < 128; }

QColor mix(const QColor& a, const QColor& b, double t) {
  auto ch = [t](double x, double y) { return float(x + t * (y - x)); };
  return QColor::fromRgbF(ch(a.redF(), b.redF()), ch(a.greenF(), b.greenF()), ch(a.blueF(), b.blueF()));
}

QColor offCell(const QPalette& p) { return mix(p.color(QPalette::Base), p.color(QPalette::Text), 0.12); }

QColor idle(const QPalette& p) { return mix(p.color(QPalette::Base), p.color(QPalette::Text), 0.3); }

QColor lowCost(const QPalette& p) { return isDark(p) ? QColor(120, 170, 255) : QColor(20, 40, 120); }

QColor highCost(const QPalette& p) { return isDark(p) ? QColor(255, 150, 40) : QColor(230, 110, 0); }

QColor selection(const QPalette& p) { return isDark(p) ? QColor(95, 80, 20) : QColor(255, 220, 120); }

bool apply(QApplication& app, const QString& name) {
  if (name == "system") return true;
  if (name != "light" && name != "dark") return false;
  QApplication::setStyle(QStyleFactory::create("Fusion"));
  if (name == "light") {
    app.setPalette(QApplication::style()->standardPalette());
    return true;
  }
  QPalette p;
  const QColor window(37, 37, 40), base(26, 26, 28), text(228, 228, 230), disabled(130, 130, 135);
  p.setColor(QPalette::Window, window);
  p.setColor(QPalette::WindowText, text);
  p.setColor(QPalette::Base, base);
  p.setColor(QPalette::AlternateBase, window);
  p.setColor(QPalette::ToolTipBase, window);
  p.setColor(QPalette::ToolTipText, text);
  p.setColor(QPalette::PlaceholderText, disabled);
  p.setColor(QPalette::Text, text);
  p.setColor(QPalette::Button, window);
  p.setColor(QPalette::ButtonText, text);
  p.setColor(QPalette::BrightText, QColor(255, 90, 90));
  p.setColor(QPalette::Light, QColor(70, 70, 75));
  p.setColor(QPalette::Midlight, QColor(55, 55, 60));
  p.setColor(QPalette::Mid, QColor(45, 45, 50));
  p.setColor(QPalette::Dark, QColor(20, 20, 22));
  p.setColor(QPalette::Shadow, Qt::black);
  p.setColor(QPalette::Highlight, QColor(42, 110, 190));
  p.setColor(QPalette::HighlightedText, Qt::white);
  p.setColor(QPalette::Link, QColor(110, 170, 255));
  for (auto role : {QPalette::WindowText, QPalette::Text, QPalette::ButtonText})
    p.setColor(QPalette::Disabled, role, disabled);
  app.setPalette(p);
  return true;
}

QString count(double n) {
  const double a = std::abs(n);
  const auto three = [](double v, const char* unit) {
    return QString::number(v, 'f', v >= 100 ? 0 : v >= 10 ? 1 : 2) + QLatin1String(unit);
  };
  if (a >= 1e9) return three(n / 1e9, "G");
  if (a >= 1e6) return three(n / 1e6, "M");
  if (a >= 1e3) return three(n / 1e3, "k");
  return QString::number(n, 'f', 0);
}

}  // namespace nestscope::theme
