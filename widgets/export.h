// Exports any panel as a picture: PNG at a scale (2× for slides) or SVG (vector text and shapes).
#pragma once
#include <QString>

class QWidget;

namespace nestscope {

// Each returns false with a message in *error when the file cannot be written.
bool export_widget_png(QWidget* widget, const QString& path, double scale = 2.0, QString* error = nullptr);
bool export_widget_svg(QWidget* widget, const QString& path, const QString& title, QString* error = nullptr);

}  // namespace nestscope
