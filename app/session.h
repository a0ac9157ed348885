// Session: everything needed to reopen a demo or a finding exactly — the model (path and hash),
// the budget, the prompt, the sampling settings and the view. Stored as JSON.
#pragma once
#include <QString>

#include "core/model/budget.h"
#include "widgets/generation_panel.h"

namespace nestscope {

struct Session {
  QString model;        // checkpoint path; empty = the embedded default model
  QString model_hash;   // of the checkpoint when saved (a different file at the path is reported)
  Budget budget;
  QString prompt;
  GenerationSettings settings;
  int colouring = 0;    // GenerationPanel::Colouring
  QString frontier;     // a frontier results file shown, if any
};

QString session_to_json(const Session& s);
// Throws Error naming `source` and the field on anything malformed.
Session session_from_json(const QString& text, const QString& source);
// Atomic write; throws Error.
void save_session(const QString& path, const Session& s);
Session load_session(const QString& path);

}  // namespace nestscope
