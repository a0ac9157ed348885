// A progress bar on stderr for the CLI: redrawn in place on a terminal, plain lines otherwise.
#pragma once
#include <chrono>
#include <cstdint>

#include "core/progress.h"

namespace nestscope::cli {

class ProgressBar {
 public:
  ProgressBar();
  // Draws p; returns false when the user pressed Ctrl-C (the work then cancels).
  bool update(const Progress& p);
  void finish();  // ends the line

 private:
  bool tty_;
  bool drawn_ = false;
  int64_t last_line_ = -1;
  std::chrono::steady_clock::time_point last_draw_;
};

// Installs a SIGINT handler that makes every ProgressBar::update return false.
void install_interrupt_handler();
bool interrupted();

}  // namespace nestscope::cli
