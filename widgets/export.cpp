#include "widgets/export.h"

#include <QFile>
#include <QImage>
#include <QPainter>
#include <QSvgGenerator>
#include <QWidget>

namespace nestscope {

bool export_widget_png(QWidget* w, const QString& path, double scale, QString* error) {
  QImage img(w->size() * scale, QImage::Format_ARGB32);
  img.setDevicePixelRatio(scale);
  img.fill(w->palette().base().color());
  {
    QPainter p(&img);
    w->render(&p);
  }
  if (img.save(path, "PNG")) return true;
  if (error) *error = QObject::tr("could not write %1").arg(path);
  return false;
}

bool export_widget_svg(QWidget* w, const QString& path, const QString& title, QString* error) {
  QSvgGenerator gen;
  gen.setFileName(path);
  gen.setSize(w->size());
  gen.setViewBox(QRect(QPoint(0, 0), w->size()));
  gen.setTitle(title);
  {
    QPainter p;
    if (!p.begin(&gen)) {
      if (error) *error = QObject::tr("could not write %1").arg(path);
      return false;
    }
    w->render(&p);
  }
  if (QFile(path).size() > 0) return true;
  if (error) *error = QObject::tr("could not write %1").arg(path);
  return false;
}

}  // namespace nestscope
