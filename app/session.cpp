#include "app/session.h"

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/io/atomic_file.h"
#include "core/model/budget_json.h"

namespace nestscope {

namespace {
constexpr const char* kFormat = "nestscope.session.v1";
}

QString session_to_json(const Session& s) {
  nlohmann::json j = {{"format", kFormat},
                      {"model", s.model.toStdString()},
                      {"model_hash", s.model_hash.toStdString()},
                      {"budget", nlohmann::json::parse(budget_to_json(s.budget))},
                      {"prompt", s.prompt.toStdString()},
                      {"settings",
                       {{"max_new_tokens", s.settings.max_new_tokens},
                        {"temperature", s.settings.temperature},
                        {"top_k", s.settings.top_k},
                        {"seed", s.settings.seed}}},
                      {"colouring", s.colouring},
                      {"frontier", s.frontier.toStdString()}};
  return QString::fromStdString(j.dump(2));
}

Session session_from_json(const QString& text, const QString& source) {
  const std::string src = source.toStdString();
  auto j = nlohmann::json::parse(text.toStdString(), nullptr, false);
  check(!j.is_discarded() && j.is_object(), src + ": not a NestScope session (not a JSON object)");
  check(j.value("format", "") == kFormat, src + ": not a NestScope session (format is not " + kFormat + ")");
  Session s;
  try {
    s.model = QString::fromStdString(j.at("model").get<std::string>());
    s.model_hash = QString::fromStdString(j.value("model_hash", ""));
    s.budget = budget_from_json(j.at("budget").dump());
    s.prompt = QString::fromStdString(j.at("prompt").get<std::string>());
    const auto& g = j.at("settings");
    s.settings.max_new_tokens = g.at("max_new_tokens").get<int>();
    s.settings.temperature = g.at("temperature").get<double>();
    s.settings.top_k = g.at("top_k").get<int>();
    s.settings.seed = g.at("seed").get<quint64>();
    s.colouring = j.value("colouring", 0);
    s.frontier = QString::fromStdString(j.value("frontier", ""));
  } catch (const nlohmann::json::exception& e) {
    throw Error(src + ": " + e.what());
  } catch (const Error& e) {
    throw Error(src + ": " + e.what());
  }
  check(s.settings.max_new_tokens >= 1 && s.settings.temperature >= 0 && s.settings.top_k >= 0,
        src + ": sampling settings out of range");
  return s;
}

void save_session(const QString& path, const Session& s) {
  write_file_atomic(path.toStdString(), session_to_json(s).toStdString());
}

Session load_session(const QString& path) {
  return session_from_json(QString::fromStdString(read_text_file(path.toStdString())), path);
}

}  // namespace nestscope
