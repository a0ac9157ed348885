#include "app/cli_progress.h"

#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <string>

namespace nestscope::cli {

namespace {
std::atomic<bool> g_interrupted{false};
void on_sigint(int) { g_interrupted = true; }
}  // namespace

void install_interrupt_handler() { std::signal(SIGINT, on_sigint); }
bool interrupted() { return g_interrupted; }

ProgressBar::ProgressBar() : tty_(::isatty(STDERR_FILENO) != 0) {}

bool ProgressBar::update(const Progress& p) {
  const auto now = std::chrono::steady_clock::now();
  const bool last = p.total > 0 && p.done >= p.total;
  std::string extra;
  char buf[96];
  if (!std::isnan(p.loss)) {
    std::snprintf(buf, sizeof buf, "  loss %.4f", p.loss);
    extra += buf;
  }
  if (!std::isnan(p.tokens_per_s)) {
    std::snprintf(buf, sizeof buf, "  %.0f tok/s", p.tokens_per_s);
    extra += buf;
  }
  if (tty_) {
    if (!last && drawn_ && now - last_draw_ < std::chrono::milliseconds(100)) return !g_interrupted;
    const int width = 30;
    const int filled = p.total > 0 ? int(width * p.done / p.total) : 0;
    std::fprintf(stderr, "\r%-5s [%s%s] %lld/%lld%s\033[K", p.phase.c_str(), std::string(filled, '#').c_str(),
                 std::string(width - filled, '.').c_str(), (long long)p.done, (long long)p.total, extra.c_str());
    drawn_ = true;
  } else {
    // Log lines at every 2% (and at the end) so a redirected log stays readable.
    const int64_t bucket = p.total > 0 ? p.done * 50 / p.total : p.done;
    if (bucket == last_line_ && !last) return !g_interrupted;
    last_line_ = bucket;
    std::fprintf(stderr, "%s %lld/%lld%s\n", p.phase.c_str(), (long long)p.done, (long long)p.total, extra.c_str());
  }
  last_draw_ = now;
  return !g_interrupted;
}

void ProgressBar::finish() {
  if (tty_ && drawn_) std::fprintf(stderr, "\n");
  drawn_ = false;
  last_line_ = -1;
}

}  // namespace nestscope::cli
