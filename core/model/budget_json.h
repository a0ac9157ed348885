// Budget <-> JSON: the one text form of a Budget (budget files, sweep results, sessions).
#pragma once
#include <string>
#include <vector>

#include "core/model/budget.h"

namespace nestscope {

// Keys sorted, fields at their defaults left out: equal budgets give equal strings (a cache key),
// and a field added later does not change the text of budgets that leave it at its default.
std::string budget_to_json(const Budget& budget);
// Fields may be left out (defaults); an unknown key, a value of the wrong type or an unknown
// enum name throws Error naming it. Ranges are checked when the budget is applied to a model.
Budget budget_from_json(const std::string& text);

// One budget of a sweep, named for tables and plots.
struct NamedBudget {
  std::string method;  // the series: "dense", "svd", "nsn", "tt-svd", "mpo", "gate", "svd-mlp+tt-svd-attn", ...
  std::string label;   // this point: "r=32", "χ=8", "sensing 50%"
  Budget budget;
};

// A budget file: a JSON array of objects {"method": ..., "label": ..., "budget": {...}} (label
// optional). Throws Error naming the file and the entry on anything malformed; nothing partial.
std::vector<NamedBudget> read_budget_file(const std::string& path);
std::vector<NamedBudget> parse_budget_list(const std::string& text, const std::string& source);

}  // namespace nestscope
