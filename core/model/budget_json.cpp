#include "core/model/budget_json.h"

#include <iterator>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "core/error.h"
#include "core/json_guard.h"

namespace nestscope {

namespace {

using Json = nlohmann::json;

void only_keys(const Json& j, const std::set<std::string>& allowed, const std::string& where) {
  check(j.is_object(), where + " must be a JSON object");
  for (const auto& [k, v] : j.items()) {
    if (allowed.count(k)) continue;
    std::string list;
    for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
    throw Error(where + ": unknown key '" + k + "' (known: " + list + ")");
  }
}

template <class T>
T get(const Json& j, const char* key, T fallback, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end()) return fallback;
  try {
    if constexpr (std::is_same_v<T, bool>) {
      check(it->is_boolean(), "not a boolean");
    } else if constexpr (std::is_integral_v<T>) {
      check(it->is_number_integer() || it->is_number_unsigned(), "not an integer");
    } else if constexpr (std::is_floating_point_v<T>) {
      check(it->is_number(), "not a number");
    } else {
      check(it->is_string(), "not a string");
    }
    return it->get<T>();
  } catch (const Error& e) {
    throw Error(where + ": '" + key + "' is " + it->dump() + ", " + e.what());
  }
}

}  // namespace

namespace {

Json pairs(const std::set<std::pair<int64_t, int64_t>>& set) {
  Json a = Json::array();
  for (const auto& [l, i] : set) a.push_back({l, i});
  return a;
}

std::set<std::pair<int64_t, int64_t>> parse_pairs(const Json& j, const char* key, const std::string& where) {
  std::set<std::pair<int64_t, int64_t>> out;
  auto it = j.find(key);
  if (it == j.end()) return out;
  check(it->is_array(), where + ": '" + key + "' must be an array of [layer, index] pairs");
  for (const auto& p : *it) {
    check(p.is_array() && p.size() == 2 && p[0].is_number_integer() && p[1].is_number_integer(),
          where + ": '" + key + "' entries must be [layer, index] pairs of integers, got " + p.dump());
    out.emplace(p[0].get<int64_t>(), p[1].get<int64_t>());
  }
  return out;
}

}  // namespace

namespace {

// Every field, defaults included.
Json full_json(const Budget& b) {
  const auto& g = b.gate;
  Json kinds = Json::object();
  for (const auto& [family, kind] : b.kind) kinds[family] = linear_kind_name(kind);
  Json layer_rank = Json::object();
  for (const auto& [name, r] : b.layer_rank) layer_rank[name] = r;
  Json j = {
      {"rank", b.rank},
      {"bond", b.bond},
      {"layer_rank", layer_rank},
      {"kind", kinds},
      {"prompt_keep", b.prompt_keep},
      {"mac_target", b.mac_target},
      {"heads_off", pairs(b.heads_off)},
      {"blocks_off", pairs(b.blocks_off)},
      {"heads_on", pairs(b.heads_on)},
      {"blocks_on", pairs(b.blocks_on)},
      {"gate_blocks_off", pairs(b.gate_blocks_off)},
      {"gate",
       {{"policy", gate_policy_name(g.policy)},
        {"active", g.active},
        {"block", g.block},
        {"measurements", g.measurements},
        {"iters", g.iters},
        {"measurement", measurement_name(g.measurement)},
        {"recovery", recovery_name(g.recovery)},
        {"seed", g.seed},
        {"clustered", g.clustered},
        {"gamma", g.gamma},
        {"m_min", g.m_min},
        {"m_max", g.m_max},
        {"hysteresis", g.hysteresis},
        {"head_active", g.head_active},
        {"head_global", g.head_global},
        {"head_reprobe", g.head_reprobe},
        {"head_reprobe_cooldown", g.head_reprobe_cooldown},
        {"head_probes", g.head_probes},
        {"head_ranking", head_ranking_name(g.head_ranking)}}},
  };
  return j;
}

}  // namespace

std::string budget_to_json(const Budget& b) {
  // Fields at their defaults are left out, so a field added later (with a default that keeps the
  // old behaviour) does not change the text of existing budgets, nor the sweep keys built from it.
  static const Json defaults = full_json(Budget{});
  Json j = full_json(b);
  for (auto it = j.begin(); it != j.end();) {
    if (it.key() == "gate") {
      const Json& dg = defaults.at("gate");
      for (auto g = it->begin(); g != it->end();) g = *g == dg.at(g.key()) ? it->erase(g) : std::next(g);
      it = it->empty() ? j.erase(it) : std::next(it);
    } else {
      it = *it == defaults.at(it.key()) ? j.erase(it) : std::next(it);
    }
  }
  return j.dump();  // nlohmann's object keys are sorted
}

Budget budget_from_json(const std::string& text) {
  Json j = parse_json(text, "budget");
  check(!j.is_discarded(), "budget: not valid JSON");
  const std::string w = "budget";
  only_keys(j, {"rank", "bond", "layer_rank", "kind", "gate", "prompt_keep", "mac_target", "heads_off", "blocks_off",
                "heads_on", "blocks_on", "gate_blocks_off"},
            w);
  Budget b;
  b.rank = get<int64_t>(j, "rank", 0, w);
  b.bond = get<int64_t>(j, "bond", 0, w);
  b.prompt_keep = get<double>(j, "prompt_keep", 1.0, w);
  b.mac_target = get<double>(j, "mac_target", 0.0, w);
  b.heads_off = parse_pairs(j, "heads_off", w);
  b.blocks_off = parse_pairs(j, "blocks_off", w);
  b.heads_on = parse_pairs(j, "heads_on", w);
  b.blocks_on = parse_pairs(j, "blocks_on", w);
  b.gate_blocks_off = parse_pairs(j, "gate_blocks_off", w);
  if (auto it = j.find("layer_rank"); it != j.end()) {
    check(it->is_object(), w + ": 'layer_rank' must be an object of layer name -> rank");
    for (const auto& [name, r] : it->items()) b.layer_rank[name] = get<int64_t>(*it, name.c_str(), 0, w + ".layer_rank");
  }
  if (auto it = j.find("kind"); it != j.end()) {
    check(it->is_object(), w + ": 'kind' must be an object of family -> dense|nsn|mpo");
    for (const auto& [family, k] : it->items()) {
      check(k.is_string(), w + ".kind: '" + family + "' must be dense, nsn or mpo");
      b.kind[family] = parse_linear_kind(k.get<std::string>());
    }
  }
  if (auto it = j.find("gate"); it != j.end()) {
    const std::string wg = w + ".gate";
    only_keys(*it, {"policy", "active", "block", "measurements", "iters", "measurement", "recovery", "seed",
                    "clustered", "gamma", "m_min", "m_max", "hysteresis", "head_active", "head_global", "head_reprobe",
                    "head_reprobe_cooldown", "head_probes", "head_ranking"},
              wg);
    auto& g = b.gate;
    const GateOptions d;
    g.policy = parse_gate_policy(get<std::string>(*it, "policy", gate_policy_name(d.policy), wg).c_str());
    g.active = get<double>(*it, "active", d.active, wg);
    g.block = get<int64_t>(*it, "block", d.block, wg);
    g.measurements = get<int64_t>(*it, "measurements", d.measurements, wg);
    g.iters = get<int64_t>(*it, "iters", d.iters, wg);
    g.measurement = parse_measurement(get<std::string>(*it, "measurement", measurement_name(d.measurement), wg).c_str());
    g.recovery = parse_recovery(get<std::string>(*it, "recovery", recovery_name(d.recovery), wg).c_str());
    g.seed = get<uint64_t>(*it, "seed", d.seed, wg);
    g.clustered = get<bool>(*it, "clustered", d.clustered, wg);
    g.gamma = get<double>(*it, "gamma", d.gamma, wg);
    g.m_min = get<int64_t>(*it, "m_min", d.m_min, wg);
    g.m_max = get<int64_t>(*it, "m_max", d.m_max, wg);
    g.hysteresis = get<double>(*it, "hysteresis", d.hysteresis, wg);
    g.head_active = get<double>(*it, "head_active", d.head_active, wg);
    g.head_global = get<bool>(*it, "head_global", d.head_global, wg);
    g.head_reprobe = get<double>(*it, "head_reprobe", d.head_reprobe, wg);
    g.head_reprobe_cooldown = get<int64_t>(*it, "head_reprobe_cooldown", d.head_reprobe_cooldown, wg);
    g.head_probes = get<int64_t>(*it, "head_probes", d.head_probes, wg);
    g.head_ranking = parse_head_ranking(get<std::string>(*it, "head_ranking", head_ranking_name(d.head_ranking), wg).c_str());
  }
  return b;
}

std::vector<NamedBudget> parse_budget_list(const std::string& text, const std::string& source) {
  Json j = parse_json(text, source);
  check(!j.is_discarded(), source + ": not valid JSON");
  check(j.is_array() && !j.empty(), source + ": expected a non-empty JSON array of budgets");
  std::vector<NamedBudget> out;
  for (size_t i = 0; i < j.size(); ++i) {
    const std::string w = source + ": entry " + std::to_string(i + 1);
    try {
      only_keys(j[i], {"method", "label", "budget"}, w);
      NamedBudget nb;
      nb.method = get<std::string>(j[i], "method", "", w);
      check(!nb.method.empty(), w + ": 'method' (the series name) is required");
      nb.label = get<std::string>(j[i], "label", "", w);
      auto it = j[i].find("budget");
      check(it != j[i].end(), w + ": 'budget' is required");
      nb.budget = budget_from_json(it->dump());
      out.push_back(std::move(nb));
    } catch (const Error& e) {
      const std::string msg = e.what();
      throw Error(msg.rfind(source, 0) == 0 ? msg : w + ": " + msg);
    }
  }
  return out;
}

std::vector<NamedBudget> read_budget_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  check(bool(in), path + ": cannot open the budget file");
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_budget_list(ss.str(), path);
}

}  // namespace nestscope
