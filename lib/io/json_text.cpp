#include "io/json_text.h"

#include <map>
#include <vector>

#include "common/error.h"

namespace tlmoe::io {

std::optional<DuplicateKey> find_duplicate_key(std::string_view text) {
  struct Frame {
    bool object = false;
    bool want_key = false;
    std::map<std::string, std::size_t, std::less<>> keys;  // key -> line
  };
  std::vector<Frame> stack;
  std::size_t line = 1;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '\n') {
      ++line;
    } else if (c == '"') {
      const std::size_t begin = ++i;
      while (i < text.size() && text[i] != '"') i += text[i] == '\\' ? 2 : 1;
      if (i > text.size()) i = text.size();
      if (stack.empty() || !stack.back().object || !stack.back().want_key) continue;
      const std::string key(text.substr(begin, i - begin));
      auto [it, fresh] = stack.back().keys.emplace(key, line);
      if (!fresh) return DuplicateKey{key, it->second, line};
      stack.back().want_key = false;
    } else if (c == '{' || c == '[') {
      stack.push_back({c == '{', c == '{', {}});
    } else if (c == '}' || c == ']') {
      if (!stack.empty()) stack.pop_back();
    } else if (c == ',' && !stack.empty() && stack.back().object) {
      stack.back().want_key = true;
    }
  }
  return std::nullopt;
}

std::string json_error_text(const std::exception& e) {
  std::string_view what = e.what();
  if (what.rfind("[json.exception.", 0) == 0) {
    const auto close = what.find("] ");
    if (close != std::string_view::npos) what.remove_prefix(close + 2);
  }
  return std::string(what);
}

void refuse_duplicate_keys(std::string_view text, const std::string& file) {
  if (auto d = find_duplicate_key(text))
    throw DataError(file, d->second,
                    "key \"" + d->key + "\" appears twice in one object (lines " + std::to_string(d->first) + " and " +
                        std::to_string(d->second) + "): remove one; tlmoe does not pick either silently");
}

}  // namespace tlmoe::io
