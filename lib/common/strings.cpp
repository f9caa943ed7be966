#include "common/strings.h"

#include <algorithm>
#include <utility>
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

namespace {

bool python_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

// The code point of the well-formed sequence at s[i] and its length; 0 length when s[i] starts
// none (only the whitespace code points matter here, all at most 3 bytes long).
std::pair<char32_t, std::size_t> code_point_at(std::string_view s, std::size_t i) {
  const auto b = static_cast<unsigned char>(s[i]);
  if (b < 0x80) return {b, 1};
  const std::size_t len = (b >> 5) == 0x6 ? 2 : (b >> 4) == 0xE ? 3 : 0;
  if (len == 0 || i + len > s.size()) return {0, 0};
  char32_t c = len == 2 ? (b & 0x1F) : (b & 0x0F);
  for (std::size_t k = 1; k < len; ++k) {
    const auto cb = static_cast<unsigned char>(s[i + k]);
    if ((cb >> 6) != 0x2) return {0, 0};
    c = (c << 6) | (cb & 0x3F);
  }
  if ((len == 2 && c < 0x80) || (len == 3 && (c < 0x800 || (c >= 0xD800 && c <= 0xDFFF)))) return {0, 0};
  return {c, len};
}

}  // namespace

std::string python_strip(std::string_view s) {
  std::size_t b = 0;
  while (b < s.size()) {
    auto [c, len] = code_point_at(s, b);
    if (len == 0 || !python_space(c)) break;
    b += len;
  }
  std::size_t e = s.size();
  while (e > b) {
    // the start of the last code point: back over continuation bytes (at most 2 for a space)
    std::size_t k = e - 1;
    while (k > b && e - k < 3 && (static_cast<unsigned char>(s[k]) >> 6) == 0x2) --k;
    auto [c, len] = code_point_at(s, k);
    if (len != e - k || !python_space(c)) break;
    e = k;
  }
  return std::string(s.substr(b, e - b));
}

}  // namespace tlmoe
