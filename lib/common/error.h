// Error types of tlmoe. Library code throws; only apps/tlmoe/main.cpp maps them to exit codes:
//   InputError and its subclasses (bad usage, bad config, bad data)  -> exit 2
//   anything else (a failure while running)                          -> exit 1
#pragma once

#include <cstddef>
#include <stdexcept>
#include <string>

namespace tlmoe {

// Base of every "the user gave us something wrong" error (exit code 2).
class InputError : public std::runtime_error {
 public:
  explicit InputError(const std::string& msg) : std::runtime_error(msg) {}
};

// Bad command line usage (unknown flag value, missing argument).
class UsageError : public InputError {
 public:
  explicit UsageError(const std::string& msg) : InputError(msg) {}
};

// A config problem. `where` is "file:line" or "--set" or "" (cross-field checks);
// `key` is the dotted key path, e.g. "model.d_model".
class ConfigError : public InputError {
 public:
  ConfigError(const std::string& where, const std::string& key, const std::string& msg)
      : InputError(format(where, key, msg)), where_(where), key_(key) {}
  const std::string& where() const { return where_; }
  const std::string& key() const { return key_; }

 private:
  static std::string format(const std::string& where, const std::string& key,
                            const std::string& msg) {
    std::string s = "config error: ";
    if (!where.empty()) s += where + ": ";
    if (!key.empty()) s += "key '" + key + "': ";
    return s + msg;
  }
  std::string where_, key_;
};

// A data problem in a file. line == 0 means "the file as a whole".
class DataError : public InputError {
 public:
  DataError(const std::string& file, std::size_t line, const std::string& msg)
      : InputError(format(file, line, msg)), file_(file), line_(line) {}
  const std::string& file() const { return file_; }
  std::size_t line() const { return line_; }

 private:
  static std::string format(const std::string& file, std::size_t line, const std::string& msg) {
    std::string s = "data error: ";
    s.append(file);
    if (line > 0) s.append(":").append(std::to_string(line));
    s.append(": ").append(msg);
    return s;
  }
  std::string file_;
  std::size_t line_;
};

// An internal error's text without the C++ stack frames LibTorch appends to it (lines starting
// "Exception raised from" or "frame #"): a user sees the message, never the frames.
inline std::string without_stack_frames(const std::string& what) {
  std::string out;
  std::size_t begin = 0;
  while (begin <= what.size()) {
    std::size_t end = what.find('\n', begin);
    if (end == std::string::npos) end = what.size();
    const std::string line = what.substr(begin, end - begin);
    if (line.rfind("Exception raised from", 0) != 0 && line.rfind("frame #", 0) != 0 && !line.empty())
      out += (out.empty() ? "" : "\n") + line;
    begin = end + 1;
  }
  return out;
}

}  // namespace tlmoe
