#pragma once
// The explorer's colours relative to the palette in use, so every panel reads on a light and on a
// dark desktop (and on a projector). Panels draw data in these colours, never in fixed greys.
#include <QColor>
#include <QPalette>
#include <QString>

class QApplication;

namespace nestscope::theme {

bool isDark(const QPalette& p);                          // window background darker than mid-grey
QColor mix(const QColor& a, const QColor& b, double t);  // a + t·(b − a), per channel
QColor offCell(const QPalette& p);                       // a unit the gate skipped: a faint tint of the text colour
QColor idle(const QPalette& p);                          // de-emphasised data (e.g. singular values dropped)
QColor lowCost(const QPalette& p);                       // the "cheap / certain" end of the token colour scale
QColor highCost(const QPalette& p);                      // the "dear / uncertain" end
QColor selection(const QPalette& p);                     // background of the selected token

// "system" leaves the platform's palette; "light" / "dark" set the Fusion style with a fixed
// palette (for a projector, or a screenshot in either scheme). Returns false for another name.
bool apply(QApplication& app, const QString& name);

// A count as people read it: 803k, 1.06M, 2.27G (three significant digits), 512 below a thousand.
QString count(double n);

}  // namespace nestscope::theme
