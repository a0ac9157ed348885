// The one error type of NestScope: a message a user can act on. Qt-free and torch-free.
#pragma once
#include <stdexcept>
#include <string>

namespace nestscope {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// Thrown when a progress callback asked long work to stop; state is left as it was before.
class Cancelled : public Error {
 public:
  Cancelled() : Error("cancelled by the user") {}
};

// Throws Error(message) when cond is false.
void check(bool cond, const std::string& message);

}  // namespace nestscope
