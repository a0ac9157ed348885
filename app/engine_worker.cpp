#include "app/engine_worker.h"

#include <QDir>
#include <QFile>
#include <QFileInfo>
#include <algorithm>

#include "core/defaults.h"
#include "core/engine/engine.h"
#include "core/io/atomic_file.h"
#include "core/io/cache.h"

namespace nestscope {

EngineWorker::EngineWorker() = default;
EngineWorker::~EngineWorker() = default;

QString EngineWorker::frontierCachePath(const QString& hash) {
  const QString path = QString::fromStdString(frontier_cache_path(hash.toStdString()));
  if (!path.isEmpty()) QDir().mkpath(QFileInfo(path).path());
  return path;
}

std::vector<SweepRow> EngineWorker::cachedRows(const QString& hash) {
  const QString path = frontierCachePath(hash);
  if (path.isEmpty()) return {};
  try {
    return read_sweep_rows(path.toStdString());
  } catch (const std::exception&) {
    QFile::remove(path);  // a cache that cannot be read is swept again, not an error
    return {};
  }
}

std::vector<SweepRow> EngineWorker::shippedRows(const QString& hash) {
  std::vector<SweepRow> rows;
  for (const QFileInfo& f : QDir(QStringLiteral(":/frontier")).entryInfoList({"*.jsonl"}, QDir::Files)) {
    QFile file(f.filePath());
    if (!file.open(QIODevice::ReadOnly)) continue;
    for (const QByteArray& line : file.readAll().split('\n')) {
      if (line.trimmed().isEmpty()) continue;
      try {
        SweepRow r = sweep_row_from_json(line.toStdString());
        if (QString::fromStdString(r.model_hash) == hash) rows.push_back(std::move(r));
      } catch (const std::exception&) {
      }
    }
  }
  return rows;
}

void EngineWorker::installShippedVariants(const QString& hash) {
  if (hash.isEmpty()) return;
  QFile in(QStringLiteral(":/variants/%1.safetensors").arg(hash));
  if (!in.exists()) return;
  const std::string path = variant_cache_path(hash.toStdString());
  if (path.empty() || QFileInfo(QString::fromStdString(path)).size() == in.size()) return;  // installed before
  try {
    if (!in.open(QIODevice::ReadOnly)) return;
    write_file_atomic(path, in.readAll().toStdString());
  } catch (const std::exception&) {
    // An unwritable cache: the budgets convert by SVD / TT-SVD as for any model.
  }
}

QString EngineWorker::demoModelFolder() {
  const QString cache = QString::fromStdString(cache_dir());
  if (cache.isEmpty()) throw std::runtime_error("no cache folder to unpack the demo model into (set HOME or XDG_CACHE_HOME)");
  const QString dir = cache + QStringLiteral("/demo/stories260K");
  QDir().mkpath(dir);
  for (const QFileInfo& f : QDir(QStringLiteral(":/models/stories260K")).entryInfoList(QDir::Files)) {
    const QString out = dir + "/" + f.fileName();
    if (QFileInfo(out).size() == f.size()) continue;  // unpacked before
    QFile in(f.filePath());
    if (!in.open(QIODevice::ReadOnly)) throw std::runtime_error("cannot read the embedded demo model");
    write_file_atomic(out.toStdString(), in.readAll().toStdString());
  }
  if (!QFileInfo::exists(dir + "/config.json")) throw std::runtime_error("this build carries no demo model");
  return dir;
}

qint64 EngineWorker::memoryNeeded(qint64 file_bytes) {
  // The weights once, their SVD and TT-SVD variants (about as large again, twice), caches and
  // LibTorch's working set.
  return 3 * file_bytes + (qint64(256) << 20);
}

qint64 EngineWorker::memoryAvailable() {
  QFile f("/proc/meminfo");
  if (!f.open(QIODevice::ReadOnly)) return -1;
  for (const QByteArray& line : f.readAll().split('\n'))
    if (line.startsWith("MemAvailable:")) return line.simplified().split(' ').value(1).toLongLong() * 1024;
  return -1;
}

void EngineWorker::loadModel(const QString& path) {
  try {
    if (!engine_) engine_ = std::make_unique<Engine>();  // created on the worker thread
    if (!path.isEmpty()) {
      // Refuse before reading anything when it cannot fit; the current model stays loaded.
      const QFileInfo info(path);
      qint64 bytes = info.size();
      if (info.isDir()) {  // a Hugging Face folder: its weight files, which may be f16 (twice as large as float32)
        bytes = 0;
        for (const QFileInfo& f : QDir(path).entryInfoList({"*.safetensors"}, QDir::Files)) bytes += 2 * f.size();
      } else if (!info.isFile()) {
        throw std::runtime_error(path.toStdString() + ": no such file or folder");
      }
      const qint64 need = memoryNeeded(bytes), avail = memoryAvailable();
      const auto mib = [](qint64 b) { return QString::number(double(b) / double(1 << 20), 'f', 0) + " MiB"; };
      Q_EMIT loading(QStringLiteral("%1 (%2; needs about %3)").arg(info.fileName(), mib(bytes), mib(need)));
      if (avail >= 0 && need > avail)
        throw std::runtime_error(path.toStdString() + ": this model needs about " + mib(need).toStdString() +
                                 " of memory but only " + mib(avail).toStdString() +
                                 " are available; close other programs or open a smaller model");
    }
    const int epoch = load_epoch_.load();
    if (path.isEmpty()) engine_->load_default(); else engine_->load(path.toStdString());
    // SVD and TT-SVD variants (cached next to the checkpoint), so every slider has a mechanism.
    // On a large import this takes a while: it reports progress and stops when cancelled.
    const QString name = path.isEmpty() ? QStringLiteral("the default model") : QFileInfo(path).fileName();
    // A large model is shown (and can generate) at once; its variants follow with progress, and
    // the sliders' ranges update when they are there.
    const bool large = engine_->info().parameters >= 20'000'000;
    if (large) announce();
    installShippedVariants(QString::fromStdString(engine_->info().hash));
    try {
      engine_->prepare_variants({LinearKind::Nsn, LinearKind::Mpo}, [&](const Progress& p) {
        if (p.total > 0) {
          Q_EMIT loading(QStringLiteral("%1: variants %2/%3").arg(name).arg(p.done).arg(p.total));
          Q_EMIT loadProgress(int(p.done), int(p.total));
        }
        return load_epoch_.load() == epoch;
      });
    } catch (const Cancelled&) {
      // The model is loaded; a budget that needs a variant builds it then.
    }
    calibrated_prompt_.clear();
    Q_EMIT loadProgress(-1, 0);
    announce();
    // A frontier swept before for this very model comes back at once; a built-in model brings its own.
    std::vector<SweepRow> rows = cachedRows(hash_);
    if (rows.empty()) rows = shippedRows(hash_);
    if (!rows.empty()) Q_EMIT frontierRows(rows);
  } catch (const std::exception& e) {
    Q_EMIT loadProgress(-1, 0);
    Q_EMIT failed(QString::fromStdString(e.what()));
  }
}

void EngineWorker::setDevice(const QString& device) {
  try {
    if (!engine_) engine_ = std::make_unique<Engine>();
    engine_->set_device(device.toStdString());
    if (engine_->has_model()) announce();
  } catch (const std::exception& e) {
    Q_EMIT failed(QString::fromStdString(e.what()));
  }
}

void EngineWorker::announce() {
  {
    const auto i = engine_->info();
    const auto& c = i.config;
    ModelView v;
    v.source = QString::fromStdString(i.source);
    v.hash = QString::fromStdString(i.hash);
    QString style;  // what kind of transformer, in the words of its papers
    if (c.norm == Norm::RmsNorm || c.gated_mlp || c.position == PositionEncoding::Rope || c.kv_heads() != c.n_heads)
      style = QStringLiteral(" · %1%2%3%4")
                  .arg(c.norm == Norm::RmsNorm ? "RMSNorm" : "LayerNorm")
                  .arg(c.position == PositionEncoding::Rope ? ", rotary" : "")
                  .arg(c.kv_heads() != c.n_heads ? QStringLiteral(", GQA %1 kv heads").arg(c.kv_heads()) : QString())
                  .arg(c.gated_mlp ? ", gated MLP" : "");
    v.summary = QStringLiteral("%1 layers · d=%2 · %3 heads · FFN %4 · context %5 · vocab %6 (%7)%8 · %9%10")
                    .arg(c.n_layers).arg(c.d_model).arg(c.n_heads).arg(c.d_ff).arg(c.context)
                    .arg(c.vocab_size).arg(QString::fromStdString(i.tokenizer_kind)).arg(style)
                    .arg(QString::fromStdString(i.device))
                    .arg(i.weights == "bf16" ? QStringLiteral(", bfloat16 weights") : QString());
    v.parameters = i.parameters;
    v.macs = i.macs_per_token;
    v.dense_macs = i.dense_macs_per_token;
    v.limits.rank = int(i.rank_limit);
    v.limits.bond = int(i.bond_limit);
    v.limits.heads = int(c.n_heads);
    v.limits.mlp_width = int(c.d_ff);
    v.limits.attn = c.linear_spec("attn.q").kind;
    v.limits.mlp = c.linear_spec("mlp.up").kind;
    v.layers = int(c.n_layers);
    v.heads = int(c.n_heads);
    v.blocks = int(c.d_ff / gate_block(kNeuronBlock, c.d_ff));
    for (const auto& n : engine_->projection_names()) {
      v.projections << QString::fromStdString(n);
      const std::string family = projection_family(n);
      const auto [in, out] = c.family_shape(family);
      v.limits.layers.emplace_back(n, int(c.linear_spec(family).kind == LinearKind::Nsn ? c.nsn_max_rank(family)
                                                                                          : std::min(in, out)));
    }
    hash_ = v.hash;
    Q_EMIT modelLoaded(v);
  }
}

void EngineWorker::setBudget(const Budget& budget, const QString& prompt) {
  try {
    if (!engine_ || !engine_->has_model()) throw std::runtime_error("no model is loaded");
    const bool needs_calibration =
        budget.gate.policy != GatePolicy::Off || budget.gate.head_active < 1 || budget.mac_target > 0;
    if (needs_calibration && calibrated_prompt_ != prompt) {
      // Task-conditioned: the prompt itself is the gate's calibration text.
      Budget ungated = budget;
      ungated.gate = GateOptions{};
      engine_->set_budget(ungated);
      engine_->calibrate_gate(prompt.isEmpty() ? std::string("\n") : prompt.toStdString(), budget.gate.block);
      calibrated_prompt_ = prompt;
    }
    engine_->set_budget(budget);
    const auto i = engine_->info();
    Q_EMIT budgetApplied(budget, double(i.macs_per_token), double(i.active_parameters));
  } catch (const std::exception& e) {
    // The Engine keeps its last budget when it refuses one: the panel goes back to it.
    if (engine_ && engine_->has_model()) Q_EMIT budgetRejected(engine_->budget(), QString::fromStdString(e.what()));
    else Q_EMIT failed(QString::fromStdString(e.what()));
  }
}

void EngineWorker::generate(const QString& prompt, const GenerationSettings& s, int id) {
  if (id != generation_.load()) return;  // superseded before it started
  Q_EMIT generationStarted();
  try {
    if (!engine_) throw std::runtime_error("no model is loaded");
    GenerateOptions o;
    o.max_new_tokens = s.max_new_tokens;
    o.temperature = s.temperature;
    o.top_k = s.top_k;
    o.seed = s.seed;
    o.trace_oracle = true;  // the activation map can show what the oracle would have run
    double macs = 0, dense_macs = 0;
    int64_t counted = 0;
    const auto r = engine_->generate(prompt.toStdString(), o, [this, id, &macs, &dense_macs, &counted](const GeneratedToken& t) {
      macs += double(t.macs);
      dense_macs += double(t.dense_macs);
      ++counted;
      TokenActivity a;
      a.text = QString::fromStdString(t.text);
      a.prob = t.prob;
      a.entropy = t.entropy;
      a.macs = t.macs;
      for (const auto& g : t.gate) {
        a.blocks.emplace_back(g.blocks.begin(), g.blocks.end());
        a.oracle.emplace_back(g.oracle.begin(), g.oracle.end());
        a.measurements.push_back(int(g.measurements));
      }
      for (const auto& h : t.heads) a.heads.emplace_back(h.begin(), h.end());
      for (const auto& [text, p] : t.top) a.top.emplace_back(QString::fromStdString(text), p);
      Q_EMIT tokenGenerated(a);
      return id == generation_.load();
    });
    const double ms = r.generated_tokens > 0 ? r.decode_ms / double(r.generated_tokens) : 0;
    Q_EMIT generationFinished(r.generated_tokens, r.tokens_per_s, ms, counted > 0 ? macs / double(counted) : -1,
                              counted > 0 ? dense_macs / double(counted) : -1, r.stopped);
  } catch (const std::exception& e) {
    Q_EMIT failed(QString::fromStdString(e.what()));
    Q_EMIT generationFinished(0, 0, 0, -1, -1, true);
  }
}

void EngineWorker::loadFrontier(const QString& path) {
  try {
    // A file being written by a sweep elsewhere is read as far as it goes, never cut.
    const auto rows = read_sweep_rows(path.toStdString(), nullptr, TornLine::Skip);
    if (rows.empty()) throw std::runtime_error(path.toStdString() + ": no frontier rows");
    Q_EMIT frontierRows(rows);
  } catch (const std::exception& e) {
    Q_EMIT failed(QString::fromStdString(e.what()));
  }
}

void EngineWorker::compare(const QString& prompt, const GenerationSettings& s, const Budget& a, const Budget& b, int id) {
  if (id != generation_.load()) return;
  try {
    if (!engine_ || !engine_->has_model()) throw std::runtime_error("no model is loaded");
    GenerateOptions o;
    o.max_new_tokens = s.max_new_tokens;
    o.temperature = s.temperature;
    o.top_k = s.top_k;
    o.seed = s.seed;
    std::vector<ComparedToken> out[2];
    const Budget* budgets[2] = {&b, &a};  // B first, so the budget ends as A
    for (int k = 0; k < 2; ++k) {
      setBudget(*budgets[k], prompt);
      auto& toks = out[k];
      engine_->generate(prompt.toStdString(), o, [&](const GeneratedToken& t) {
        toks.push_back({QString::fromStdString(t.text), t.prob});
        return id == generation_.load();
      });
      if (id != generation_.load()) return;  // superseded: no half pair
    }
    Q_EMIT comparePair(out[1], out[0]);
  } catch (const std::exception& e) {
    Q_EMIT failed(QString::fromStdString(e.what()));
  }
}

void EngineWorker::layerView(const QString& name, int rank, int bond) {
  try {
    if (!engine_ || !engine_->has_model()) throw std::runtime_error("no model is loaded");
    Q_EMIT layerViewReady(engine_->layer_view(name.toStdString(), rank, bond));
  } catch (const std::exception& e) {
    Q_EMIT failed(QString::fromStdString(e.what()));
  }
}

void EngineWorker::runSweep(const QString& text_path) {
  sweep_cancel_ = false;
  try {
    if (!engine_ || !engine_->has_model()) throw std::runtime_error("no model is loaded");
    SweepOptions o;
    if (!text_path.isEmpty()) o.text = read_text_file(text_path.toStdString());
    o.max_windows = 24;
    o.results = frontierCachePath(hash_).toStdString();
    // Rows reach the chart as they finish: the shipped ones first, then each new one.
    std::vector<SweepRow> shown = shippedRows(hash_);
    if (!o.results.empty() && cachedRows(hash_).empty())
      for (const auto& r : shown) append_sweep_row(o.results, r);  // the sweep reuses what was shipped
    o.on_row = [this, &shown](const SweepRow& r) {
      const auto same = std::find_if(shown.begin(), shown.end(), [&](const SweepRow& s) {
        return s.method == r.method && s.label == r.label && s.budget_json == r.budget_json;
      });
      if (same != shown.end()) *same = r;
      else shown.push_back(r);
      Q_EMIT frontierRows(shown);
    };
    calibrated_prompt_.clear();  // the sweep calibrates the gate on its own text
    engine_->sweep(engine_->grid("default"), o, [this](const Progress& p) {
      Q_EMIT sweepProgress(int(p.done), int(p.total));
      return !sweep_cancel_.load();
    });
    Q_EMIT sweepProgress(-1, 0);
  } catch (const Cancelled&) {
    Q_EMIT sweepProgress(-1, 0);  // cancelled: finished rows are kept in the cache file
  } catch (const std::exception& e) {
    Q_EMIT failed(QString::fromStdString(e.what()));
    Q_EMIT sweepProgress(-1, 0);
  }
}

void EngineWorker::exportHf(const QString& dir) {
  try {
    if (!engine_ || !engine_->has_model()) throw std::runtime_error("no model is loaded");
    const auto type = engine_->export_hf(dir.toStdString());
    Q_EMIT exported(tr("exported as a Hugging Face %1 folder: %2").arg(QString::fromStdString(type), dir));
  } catch (const std::exception& e) {
    Q_EMIT failed(QString::fromStdString(e.what()));
  }
}

}  // namespace nestscope
