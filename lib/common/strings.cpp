#include "common/strings.h"

#include <algorithm>
#include <vector>

namespace tlmoe {

std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      std::size_t sub = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, sub});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::string csv_field(std::string_view s) {
  if (s.find_first_of(",\"\r\n") == std::string_view::npos) return std::string(s);
  std::string out = "\"";
  for (char c : s) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

std::vector<std::string> split_list(std::string_view s, char sep) {
  std::vector<std::string> v;
  size_t from = 0;
  while (from <= s.size()) {
    const size_t comma = std::min(s.find(sep, from), s.size());
    if (comma > from) v.emplace_back(s.substr(from, comma - from));
    from = comma + 1;
  }
  return v;
}

}  // namespace tlmoe
