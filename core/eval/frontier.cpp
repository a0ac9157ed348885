#include "core/eval/frontier.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <set>
#include <map>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include "core/error.h"
#include "core/json_guard.h"
#include "core/io/atomic_file.h"
#include "core/model/budget_json.h"

namespace nestscope {

using Json = nlohmann::json;

std::string sweep_row_to_json(const SweepRow& r) {
  if (!r.error.empty()) {
    Json j = {{"key", r.key},     {"model", r.model}, {"model_hash", r.model_hash}, {"method", r.method},
              {"label", r.label}, {"budget", Json::parse(r.budget_json)},           {"error", r.error}};
    if (!r.evaluation.empty()) j["evaluation"] = r.evaluation;
    if (r.grid_index >= 0) j["index"] = r.grid_index;
    return j.dump();
  }
  Json j = {{"key", r.key},
            {"model", r.model},
            {"model_hash", r.model_hash},
            {"method", r.method},
            {"label", r.label},
            {"budget", Json::parse(r.budget_json)},
            {"evaluated_on", r.evaluated_on},
            {"macs", r.macs},
            {"dense_macs", r.dense_macs},
            {"mac_fraction", r.mac_fraction},
            {"linear_macs", r.linear_macs},
            {"params", r.parameters},
            {"token_accuracy", r.eval.token_accuracy},
            {"token_accuracy_ci95", r.eval.accuracy_ci95},
            {"loss", r.eval.loss},
            {"perplexity", r.eval.perplexity},
            {"top1_agreement", r.eval.top1_agreement},
            {"kl", r.eval.kl},
            {"tokens", r.eval.tokens},
            {"windows", r.eval.windows},
            {"eval_seconds", r.eval.seconds},
            {"mlp_mac_fraction", r.mlp_mac_fraction},
            {"ms_per_token", r.ms_per_token}};
  if (!r.resolved_json.empty()) j["resolved_budget"] = Json::parse(r.resolved_json);
  if (!r.evaluation.empty()) j["evaluation"] = r.evaluation;
  if (r.grid_index >= 0) j["index"] = r.grid_index;
  if (r.attn_mac_fraction >= 0) {  // gate details (SweepOptions::gate_details)
    j["support_f1"] = r.support_f1;
    j["overhead_fraction"] = r.overhead_fraction;
    j["head_f1"] = r.head_f1;
    j["attn_mac_fraction"] = r.attn_mac_fraction;
  }
  return j.dump();
}

SweepRow sweep_row_from_json(const std::string& line) {
  Json j = parse_json(line, "sweep row");
  check(!j.is_discarded() && j.is_object(), "not a JSON object");
  SweepRow r;
  try {
    r.key = j.at("key").get<std::string>();
    r.model = j.at("model").get<std::string>();
    r.model_hash = j.at("model_hash").get<std::string>();
    r.method = j.at("method").get<std::string>();
    r.label = j.at("label").get<std::string>();
    r.budget_json = j.at("budget").dump();
    if (auto it = j.find("evaluation"); it != j.end()) r.evaluation = it->get<std::string>();
    if (auto it = j.find("index"); it != j.end()) r.grid_index = it->get<int64_t>();
    if (auto it = j.find("error"); it != j.end()) {
      r.error = it->get<std::string>();
      check(!r.error.empty(), "a row with an empty error");
      return r;
    }
    if (auto it = j.find("resolved_budget"); it != j.end()) r.resolved_json = it->dump();
    r.evaluated_on = j.at("evaluated_on").get<std::string>();
    r.macs = j.at("macs").get<int64_t>();
    r.dense_macs = j.at("dense_macs").get<int64_t>();
    r.mac_fraction = j.at("mac_fraction").get<double>();
    r.linear_macs = j.at("linear_macs").get<int64_t>();
    r.parameters = j.at("params").get<int64_t>();
    r.eval.token_accuracy = j.at("token_accuracy").get<double>();
    r.eval.accuracy_ci95 = j.at("token_accuracy_ci95").get<double>();
    r.eval.loss = j.at("loss").get<double>();
    r.eval.perplexity = j.at("perplexity").get<double>();
    r.eval.top1_agreement = j.at("top1_agreement").get<double>();
    r.eval.kl = j.at("kl").get<double>();
    r.eval.tokens = j.at("tokens").get<int64_t>();
    r.eval.windows = j.at("windows").get<int64_t>();
    r.eval.seconds = j.at("eval_seconds").get<double>();
    r.mlp_mac_fraction = j.at("mlp_mac_fraction").get<double>();
    r.ms_per_token = j.at("ms_per_token").get<double>();
    if (j.contains("attn_mac_fraction")) {
      r.support_f1 = j.at("support_f1").get<double>();
      r.overhead_fraction = j.at("overhead_fraction").get<double>();
      r.head_f1 = j.at("head_f1").get<double>();
      r.attn_mac_fraction = j.at("attn_mac_fraction").get<double>();
    }
  } catch (const Json::exception& e) {
    throw Error(std::string("not a frontier row (") + e.what() + ")");
  }
  return r;
}

std::vector<SweepRow> read_sweep_rows(const std::string& path, std::string* note, TornLine torn) {
  std::ifstream probe(path, std::ios::binary);
  if (!probe) return {};
  probe.close();
  const std::string text = read_text_file(path);
  std::vector<SweepRow> rows;
  size_t pos = 0;
  int64_t line_no = 0;
  while (pos < text.size()) {
    const size_t nl = text.find('\n', pos);
    ++line_no;
    if (nl == std::string::npos) {
      // A torn tail: the writer died mid-line (or is still writing).
      const std::string bytes = std::to_string(text.size() - pos) + " bytes";
      check(torn != TornLine::Refuse, path + ": the last line is incomplete (" + bytes +
                                          "): the sweep that writes it has not finished or died mid-row; rerun it "
                                          "to resume");
      if (torn == TornLine::Cut) {  // keep every complete line, drop the fragment
        write_file_atomic(path, std::string_view(text).substr(0, pos));
        if (note) *note = path + ": dropped an incomplete last line (" + bytes + ")";
      } else if (note) {
        *note = path + ": an incomplete last line (" + bytes + ") was not read";
      }
      break;
    }
    const std::string line = text.substr(pos, nl - pos);
    pos = nl + 1;
    if (line.empty()) continue;
    try {
      rows.push_back(sweep_row_from_json(line));
      rows.back().resumed = true;
    } catch (const Error& e) {
      throw Error(path + ": line " + std::to_string(line_no) + " is " + e.what() +
                  "; give another --out file or fix this one");
    }
  }
  return rows;
}

void append_sweep_row(const std::string& path, const SweepRow& row) {
  const std::string line = sweep_row_to_json(row) + "\n";
  std::FILE* f = std::fopen(path.c_str(), "ab");
  check(f != nullptr, path + ": cannot open for appending");
  const bool ok = std::fwrite(line.data(), 1, line.size(), f) == line.size() && std::fflush(f) == 0 &&
                  ::fsync(fileno(f)) == 0;
  std::fclose(f);
  check(ok, path + ": write failed (disk full?)");
}

Shard parse_shard(const std::string& text) {
  const auto slash = text.find('/');
  Shard s;
  try {
    size_t a = 0, b = 0;
    check(slash != std::string::npos, "");
    s.index = std::stoll(text.substr(0, slash), &a);
    s.count = std::stoll(text.substr(slash + 1), &b);
    check(a == slash && b == text.size() - slash - 1, "");
  } catch (const std::exception&) {
    throw Error("--shard: '" + text + "' is not i/n (e.g. 0/3: the first of three shards)");
  }
  check(s.count >= 1 && s.index >= 0 && s.index < s.count,
        "--shard: '" + text + "' needs 0 <= i < n (shards are numbered from 0, as Slurm array tasks are)");
  return s;
}

bool in_shard(const Shard& shard, const std::string& method, const std::string& label, const std::string& budget_json) {
  if (shard.all()) return true;
  // FNV-1a over the budget's identity: the same on every machine and compiler, unlike std::hash.
  uint64_t h = 1469598103934665603ull;
  for (const std::string* part : {&method, &label, &budget_json}) {
    for (unsigned char c : *part) h = (h ^ c) * 1099511628211ull;
    h = (h ^ 0xffu) * 1099511628211ull;  // separator
  }
  // FNV's low bits are weak (its last bit is the parity of the bytes' last bits): mix every bit
  // into every other (MurmurHash3's finalizer) before taking the remainder.
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ull;
  h ^= h >> 33;
  return int64_t(h % uint64_t(shard.count)) == shard.index;
}

MergedRows merge_sweep_files(const std::vector<std::string>& paths) {
  check(!paths.empty(), "merge: no results files given");
  struct Source {
    std::string path;
    std::set<std::string> models;
  };
  std::vector<Source> sources;
  std::vector<SweepRow> all;
  std::vector<size_t> from;  // all[i] came from sources[from[i]]
  for (const auto& path : paths) {
    std::ifstream probe(path, std::ios::binary);
    check(bool(probe), path + ": cannot be read");
    auto rows = read_sweep_rows(path, nullptr, TornLine::Refuse);
    Source src{path, {}};
    for (auto& r : rows) {
      check(!r.evaluation.empty(), path + ": row '" + r.method + " " + r.label +
                                       "' does not record how it was evaluated (written by an older version): "
                                       "rerun that shard");
      src.models.insert(r.model_hash.empty() ? r.model : r.model_hash);
      from.push_back(sources.size());
      all.push_back(std::move(r));
    }
    sources.push_back(std::move(src));
  }
  // One sweep: the same scoring everywhere, the same models in every file that has rows.
  const Source* first = nullptr;
  for (size_t i = 0; i < all.size(); ++i) {
    check(all[i].evaluation == all.front().evaluation,
          sources[from[i]].path + ": row '" + all[i].method + " " + all[i].label + "' was scored on other data (" +
              all[i].evaluation + ") than " + sources[from.front()].path + "'s (" + all.front().evaluation +
              "): not shards of one sweep");
  }
  for (const auto& s : sources) {
    if (s.models.empty()) continue;
    if (!first) first = &s;
    auto names = [](const std::set<std::string>& m) {
      std::string out;
      for (const auto& x : m) out += (out.empty() ? "" : ", ") + x;
      return out;
    };
    check(s.models == first->models, s.path + " holds rows of " + names(s.models) + " but " + first->path +
                                         " of " + names(first->models) + ": not shards of one sweep");
  }
  // A budget seen twice: the first finished row wins; a failed row only when none finished.
  MergedRows out;
  std::map<std::string, size_t> at;  // key -> index in out.rows
  std::map<std::string, size_t> model_order;
  for (auto& r : all) {
    model_order.emplace(r.model_hash.empty() ? r.model : r.model_hash, model_order.size());
    auto [it, fresh] = at.emplace(r.key, out.rows.size());
    if (fresh) {
      out.rows.push_back(std::move(r));
      continue;
    }
    ++out.duplicates;
    if (!out.rows[it->second].error.empty() && r.error.empty()) out.rows[it->second] = std::move(r);
  }
  std::stable_sort(out.rows.begin(), out.rows.end(), [&](const SweepRow& a, const SweepRow& b) {
    const size_t ma = model_order.at(a.model_hash.empty() ? a.model : a.model_hash);
    const size_t mb = model_order.at(b.model_hash.empty() ? b.model : b.model_hash);
    if (ma != mb) return ma < mb;
    return a.grid_index < b.grid_index;
  });
  for (auto& r : out.rows) r.resumed = false;
  return out;
}

namespace {
double score(const SweepRow& r, bool agreement) { return agreement ? r.eval.top1_agreement : r.eval.token_accuracy; }

// Least squares of y on [1, x, x², ...] (degree+1 coefficients) by the normal equations.
std::vector<double> polyfit(const std::vector<double>& x, const std::vector<double>& y, int degree) {
  const int n = degree + 1;
  std::vector<double> a(static_cast<size_t>(n * n), 0.0), b(static_cast<size_t>(n), 0.0);
  for (size_t i = 0; i < x.size(); ++i) {
    std::vector<double> p(static_cast<size_t>(n), 1.0);
    for (int k = 1; k < n; ++k) p[size_t(k)] = p[size_t(k - 1)] * x[i];
    for (int r = 0; r < n; ++r) {
      b[size_t(r)] += p[size_t(r)] * y[i];
      for (int c = 0; c < n; ++c) a[size_t(r * n + c)] += p[size_t(r)] * p[size_t(c)];
    }
  }
  for (int c = 0; c < n; ++c) {  // Gaussian elimination with partial pivoting
    int piv = c;
    for (int r = c + 1; r < n; ++r)
      if (std::abs(a[size_t(r * n + c)]) > std::abs(a[size_t(piv * n + c)])) piv = r;
    for (int k = 0; k < n; ++k) std::swap(a[size_t(c * n + k)], a[size_t(piv * n + k)]);
    std::swap(b[size_t(c)], b[size_t(piv)]);
    const double d = a[size_t(c * n + c)];
    if (std::abs(d) < 1e-300) continue;
    for (int r = 0; r < n; ++r) {
      if (r == c) continue;
      const double f = a[size_t(r * n + c)] / d;
      for (int k = 0; k < n; ++k) a[size_t(r * n + k)] -= f * a[size_t(c * n + k)];
      b[size_t(r)] -= f * b[size_t(c)];
    }
  }
  std::vector<double> coef(static_cast<size_t>(n));
  for (int c = 0; c < n; ++c) coef[size_t(c)] = std::abs(a[size_t(c * n + c)]) < 1e-300 ? 0 : b[size_t(c)] / a[size_t(c * n + c)];
  return coef;
}

double polyval(const std::vector<double>& c, double x) {
  double y = 0, p = 1;
  for (double v : c) {
    y += v * p;
    p *= x;
  }
  return y;
}
}  // namespace

std::vector<size_t> pareto_front(const std::vector<SweepRow>& rows, bool use_agreement) {
  std::vector<size_t> order;
  for (size_t i = 0; i < rows.size(); ++i)
    if (rows[i].error.empty()) order.push_back(i);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (rows[a].macs != rows[b].macs) return rows[a].macs < rows[b].macs;
    return score(rows[a], use_agreement) > score(rows[b], use_agreement);
  });
  std::vector<size_t> front;
  double best = -1e300;
  for (size_t i : order) {
    if (score(rows[i], use_agreement) > best) {
      front.push_back(i);
      best = score(rows[i], use_agreement);
    }
  }
  return front;
}

std::vector<FrontierFit> fit_frontiers(const std::vector<SweepRow>& rows, bool use_agreement) {
  std::map<std::string, std::vector<const SweepRow*>> by_method;
  for (const auto& r : rows)
    if (r.error.empty()) by_method[r.method].push_back(&r);
  std::vector<FrontierFit> out;
  for (const auto& [method, pts] : by_method) {
    FrontierFit f;
    f.method = method;
    f.points = int64_t(pts.size());
    if (pts.size() < 2) {
      out.push_back(f);
      continue;
    }
    std::vector<double> x, y;
    for (const auto* r : pts) {
      x.push_back(std::log(double(std::max<int64_t>(1, r->macs))));
      y.push_back(score(*r, use_agreement));
    }
    auto degree = [](size_t n) { return n >= 4 ? 2 : 1; };
    f.coef = polyfit(x, y, degree(x.size()));
    double ss = 0;
    for (size_t i = 0; i < x.size(); ++i) ss += std::pow(polyval(f.coef, x[i]) - y[i], 2);
    f.rmse = std::sqrt(ss / double(x.size()));
    if (x.size() >= 3) {
      // Held out: each interior budget (by MACs) in turn, predicted from all the others. The two
      // ends would be extrapolations, which no one reads off a frontier.
      std::vector<size_t> by_x(x.size());
      for (size_t i = 0; i < by_x.size(); ++i) by_x[i] = i;
      std::sort(by_x.begin(), by_x.end(), [&](size_t a, size_t b) { return x[a] < x[b]; });
      double sum = 0, worst = 0;
      for (size_t k = 1; k + 1 < by_x.size(); ++k) {
        const size_t i = by_x[k];
        std::vector<double> xs, ys;
        for (size_t j = 0; j < x.size(); ++j)
          if (j != i) {
            xs.push_back(x[j]);
            ys.push_back(y[j]);
          }
        const double e = std::abs(polyval(polyfit(xs, ys, degree(xs.size())), x[i]) - y[i]);
        sum += e;
        worst = std::max(worst, e);
      }
      f.loo_mae = sum / double(x.size() - 2);
      f.loo_max = worst;
    }
    out.push_back(f);
  }
  return out;
}

namespace {
// What kind of budget this is, not how much of it: the series it belongs to.
std::string structure(const Budget& b) {
  std::string s;
  for (const auto& [family, kind] : b.kind) s += family + "=" + linear_kind_name(kind) + ";";
  s += std::string("gate=") + gate_policy_name(b.gate.policy) + ";heads=" + (b.gate.head_active < 1 ? "1" : "0") +
       ";prompt=" + (b.prompt_keep < 1 ? "1" : "0") + ";rank=" + (b.rank > 0 || !b.layer_rank.empty() ? "1" : "0") +
       ";bond=" + (b.bond > 0 ? "1" : "0");
  return s;
}

// Linear in log MACs between the points (sorted by log MACs), flat beyond the ends; -1 when none.
double interpolate_log_macs(const std::vector<std::pair<double, double>>& pts, double macs) {
  if (pts.empty()) return -1;
  const double x = std::log(std::max(1.0, macs));
  if (x <= pts.front().first) return pts.front().second;
  for (size_t i = 1; i < pts.size(); ++i)
    if (x <= pts[i].first) {
      const double t = (x - pts[i - 1].first) / std::max(1e-12, pts[i].first - pts[i - 1].first);
      return pts[i - 1].second + t * (pts[i].second - pts[i - 1].second);
    }
  return pts.back().second;
}
}  // namespace

double estimate_accuracy(const std::vector<SweepRow>& rows, const std::string& model_hash,
                         const std::string& budget_json, double macs) {
  const std::string want = structure(budget_from_json(budget_json));
  // A full budget (nothing set) matches the dense point of any series of this model.
  std::vector<std::pair<double, double>> pts;  // (log macs, accuracy)
  for (const auto& r : rows) {
    if (r.model_hash != model_hash || !r.error.empty()) continue;
    Budget b;
    try {
      b = budget_from_json(r.budget_json);
    } catch (const Error&) {
      continue;
    }
    if (structure(b) == want || r.budget_json == budget_json)
      pts.emplace_back(std::log(double(std::max<int64_t>(1, r.macs))), r.eval.token_accuracy);
  }
  std::sort(pts.begin(), pts.end());
  return interpolate_log_macs(pts, macs);
}

namespace {
// The accuracy of one part of a budget alone, read off the rows of its own series (those whose
// budget has the part's structure and passes `same`) by linear interpolation in `knob`. Below the
// swept range the lowest point bounds it; above it nothing does (-1).
template <class Same, class Knob>
double part_accuracy(const std::vector<SweepRow>& rows, const std::string& model_hash, const Budget& part, Same&& same,
                     Knob&& knob) {
  const std::string want = structure(part);
  std::vector<std::pair<double, double>> pts;  // (knob, accuracy)
  for (const auto& r : rows) {
    if (r.model_hash != model_hash || !r.error.empty()) continue;
    Budget b;
    try {
      b = budget_from_json(r.budget_json);
    } catch (const Error&) {
      continue;
    }
    if (structure(b) == want && same(b)) pts.emplace_back(knob(b), r.eval.token_accuracy);
  }
  if (pts.empty()) return -1;
  std::sort(pts.begin(), pts.end());
  const double k = knob(part);
  if (k > pts.back().first + 1e-12) return -1;
  if (k <= pts.front().first) return pts.front().second;
  for (size_t i = 1; i < pts.size(); ++i)
    if (k <= pts[i].first) {
      const double t = (k - pts[i - 1].first) / std::max(1e-12, pts[i].first - pts[i - 1].first);
      return pts[i - 1].second + t * (pts[i].second - pts[i - 1].second);
    }
  return pts.back().second;
}

std::string percent(double f) {
  char s[32];
  std::snprintf(s, sizeof s, "%.0f%%", 100 * f);
  return s;
}
}  // namespace

AccuracyBound accuracy_bound(const std::vector<SweepRow>& rows, const std::string& model_hash,
                             const std::string& budget_json, double macs) {
  AccuracyBound out{pareto_accuracy(rows, model_hash, macs), "the best swept budget at these MACs"};
  if (out.accuracy < 0) return out;
  const Budget b = budget_from_json(budget_json);
  auto consider = [&](double acc, const std::string& from) {
    if (acc >= 0 && acc < out.accuracy) out = {acc, from};
  };
  // The parameterization alone: the same kinds at the same rank or χ, nothing gated or dropped.
  if (b.layer_rank.empty() && (b.rank > 0 || b.bond > 0)) {
    Budget p;
    p.kind = b.kind;
    p.rank = b.rank;
    p.bond = b.bond;
    const bool by_rank = b.rank > 0;
    const auto knob = [&](const Budget& x) { return std::log(double(std::max<int64_t>(1, by_rank ? x.rank : x.bond))); };
    // With both set, the other knob must match: the series varies one of them.
    const auto same = [&](const Budget& x) { return by_rank ? (b.bond == 0 || x.bond == b.bond) : true; };
    consider(part_accuracy(rows, model_hash, p, same, knob),
             by_rank ? "rank " + std::to_string(b.rank) + " alone" : "χ = " + std::to_string(b.bond) + " alone");
  }
  // The gate alone: the same policy and heads kept, by its fraction of blocks.
  if (b.gate.policy != GatePolicy::Off || b.gate.head_active < 1) {
    Budget g;
    g.gate = b.gate;
    const auto same = [&](const Budget& x) { return std::abs(x.gate.head_active - b.gate.head_active) < 1e-9; };
    const auto knob = [](const Budget& x) { return x.gate.active; };
    std::string what = "the gate at " + percent(b.gate.active) + " of the blocks";
    if (b.gate.policy == GatePolicy::Off) what = "keeping " + percent(b.gate.head_active) + " of the heads";
    else if (b.gate.head_active < 1) what += " and " + percent(b.gate.head_active) + " of the heads";
    consider(part_accuracy(rows, model_hash, g, same, knob), what + " alone");
  }
  // The prompt compression alone, by its keep fraction.
  if (b.prompt_keep < 1) {
    Budget k;
    k.prompt_keep = b.prompt_keep;
    consider(part_accuracy(rows, model_hash, k, [](const Budget&) { return true; },
                           [](const Budget& x) { return x.prompt_keep; }),
             "keeping " + percent(b.prompt_keep) + " of the prompt alone");
  }
  return out;
}

double pareto_accuracy(const std::vector<SweepRow>& rows, const std::string& model_hash, double macs) {
  std::vector<std::pair<double, double>> pts;  // (log macs, accuracy)
  for (const auto& r : rows)
    if (r.model_hash == model_hash && r.error.empty())
      pts.emplace_back(std::log(double(std::max<int64_t>(1, r.macs))), r.eval.token_accuracy);
  std::sort(pts.begin(), pts.end());
  std::vector<std::pair<double, double>> front;  // the best accuracy reached at or below each MAC count
  for (const auto& p : pts)
    if (front.empty() || p.second > front.back().second) front.push_back(p);
  return interpolate_log_macs(front, macs);
}

}  // namespace nestscope
