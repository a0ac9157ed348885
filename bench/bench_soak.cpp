// Long-session soak of the GUI's worker (offscreen Qt, the same EngineWorker on its own QThread):
// N slider changes (rank, χ, gate, prompt keep), each followed by a generation request, as a user
// dragging sliders sends them. Reports resident memory after warm-up and at the end, and checks
// that every budget was answered in the order sent and that the last generation of every burst
// finished (earlier ones are superseded by design: a new slider position cancels them).
// usage: nestscope_bench_soak [--changes N] [--burst B] [--tokens T]
#include <QCoreApplication>
#include <QEventLoop>
#include <QThread>
#include <QTimer>

#include <chrono>
#include <deque>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>

#include "app/engine_worker.h"

using namespace nestscope;

namespace {

int64_t rss_kib() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6));
  return -1;
}

}  // namespace

int main(int argc, char** argv) {
  qputenv("QT_QPA_PLATFORM", "offscreen");
  QCoreApplication app(argc, argv);
  int changes = 10000, burst = 10, tokens = 4;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--changes" && i + 1 < argc) changes = std::stoi(argv[++i]);
    else if (a == "--burst" && i + 1 < argc) burst = std::stoi(argv[++i]);
    else if (a == "--tokens" && i + 1 < argc) tokens = std::stoi(argv[++i]);
    else {
      std::cerr << "usage: nestscope_bench_soak [--changes N] [--burst B] [--tokens T]\n";
      return 2;
    }
  }
  qRegisterMetaType<GenerationSettings>("nestscope::GenerationSettings");
  qRegisterMetaType<Budget>("nestscope::Budget");
  qRegisterMetaType<ModelView>("nestscope::ModelView");
  qRegisterMetaType<TokenActivity>("nestscope::TokenActivity");

  QThread thread;
  auto* worker = new EngineWorker;
  worker->moveToThread(&thread);
  QObject::connect(&thread, &QThread::finished, worker, &QObject::deleteLater);
  thread.start();

  // Budgets in flight: each answer must be the oldest one sent (kept O(in flight), so that the
  // bench's own bookkeeping does not show up as growth).
  std::deque<Budget> in_flight;
  int64_t sent = 0, applied = 0;
  bool in_order = true;
  int64_t failures = 0, finished = 0, started = 0;
  std::string last_failure;
  QObject::connect(worker, &EngineWorker::budgetApplied, &app,
                   [&](const Budget& b, double, double) {
                     ++applied;
                     in_order = in_order && !in_flight.empty() && in_flight.front() == b;
                     if (!in_flight.empty()) in_flight.pop_front();
                   });
  QObject::connect(worker, &EngineWorker::generationStarted, &app, [&] { ++started; });
  QObject::connect(worker, &EngineWorker::failed, &app, [&](const QString& m) {
    ++failures;
    last_failure = m.toStdString();
  });
  QEventLoop loop;
  bool burst_done = false;
  QObject::connect(worker, &EngineWorker::generationFinished, &app, [&](qint64, double, double, bool) {
    ++finished;
    burst_done = true;
    loop.quit();
  });
  bool loaded = false;
  QObject::connect(worker, &EngineWorker::modelLoaded, &app, [&](const ModelView&) {
    loaded = true;
    loop.quit();
  });
  QMetaObject::invokeMethod(worker, [worker] { worker->loadModel(QString()); }, Qt::QueuedConnection);
  loop.exec();
  if (!loaded) {
    std::cerr << "the default model did not load: " << last_failure << "\n";
    return 1;
  }

  QTimer watchdog;
  watchdog.setSingleShot(true);
  QObject::connect(&watchdog, &QTimer::timeout, &loop, &QEventLoop::quit);
  GenerationSettings settings;
  settings.max_new_tokens = tokens;
  const QString prompt = "ROMEO:\nBut soft, what light";
  int64_t rss_warm = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < changes; i += burst) {
    for (int j = i; j < std::min(changes, i + burst); ++j) {
      Budget b;
      b.kind["attn"] = (j % 3 == 0) ? LinearKind::Nsn : LinearKind::Mpo;
      b.kind["mlp"] = (j % 2 == 0) ? LinearKind::Nsn : LinearKind::Dense;
      // A rank only where some family is NSN and a χ only where some is MPO (the panel does the same).
      b.rank = (j % 3 == 0 || j % 2 == 0) ? 1 + (j * 37) % 128 : 0;
      b.bond = j % 3 != 0 ? 1 + (j * 11) % 16 : 0;
      b.prompt_keep = (j % 5 == 0) ? 0.5 : 1.0;
      if (j % 7 == 0) {
        b.gate.policy = GatePolicy::Sensing;
        b.gate.active = 0.25 + 0.25 * double(j % 3);
      }
      in_flight.push_back(b);
      ++sent;
      QMetaObject::invokeMethod(worker, [worker, b, prompt] { worker->setBudget(b, prompt); }, Qt::QueuedConnection);
      const int id = worker->nextGeneration();
      QMetaObject::invokeMethod(worker, [worker, prompt, settings, id] { worker->generate(prompt, settings, id); },
                                Qt::QueuedConnection);
    }
    burst_done = false;
    watchdog.start(60000);  // a lost answer shows as a timeout, not a hang
    if (!burst_done) loop.exec();
    watchdog.stop();
    if (!burst_done) {
      std::cerr << "burst " << i / burst << ": no generation finished within 60 s\n";
      break;
    }
    if (i == std::min(changes / 10, 1000) / burst * burst) rss_warm = rss_kib();
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  QCoreApplication::processEvents();
  const int64_t rss_end = rss_kib();
  thread.quit();
  thread.wait();
  in_order = in_order && applied == sent;
  std::cout << nlohmann::json{{"changes", changes},
                              {"burst", burst},
                              {"tokens_per_generation", tokens},
                              {"seconds", seconds},
                              {"budgets_sent", sent},
                              {"budgets_applied", applied},
                              {"budgets_in_order", in_order},
                              {"generations_started", started},
                              {"generations_finished", finished},
                              {"bursts", (changes + burst - 1) / burst},
                              {"failures", failures},
                              {"last_failure", last_failure},
                              {"rss_after_warmup_kib", rss_warm},
                              {"rss_end_kib", rss_end},
                              {"rss_growth_kib", rss_end - rss_warm}}
                   .dump(2)
            << "\n";
  return in_order && failures == 0 ? 0 : 1;
}
