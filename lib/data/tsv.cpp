#include "data/tsv.h"

#include <cstdio>
#include <system_error>

#include "common/error.h"
#include "io/atomic_file.h"

namespace fs = std::filesystem;

namespace tlmoe::data {

namespace {

struct Utf8Problem {
  std::size_t offset;  // of the first byte of the bad sequence
  const char* what;
};

bool is_continuation(unsigned char c) { return (c & 0xC0) == 0x80; }

// Checks one sequence starting at text[i]; returns its length, or 0 and sets `what`.
// Well-formed UTF-8 (Unicode table 3-7): the second byte's range depends on the lead byte,
// which excludes overlong forms (C0, C1, E0 80..9F, F0 80..8F), surrogates (ED A0..BF) and
// code points above U+10FFFF (F4 90.., F5..FF).
std::size_t sequence_length(std::string_view text, std::size_t i, const char** what) {
  const auto c = static_cast<unsigned char>(text[i]);
  if (c < 0x80) return 1;
  std::size_t len = 0;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (c >= 0xC2 && c <= 0xDF) {
    len = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    len = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    len = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    *what = (c == 0xC0 || c == 0xC1) ? "overlong encoding"
            : is_continuation(c)     ? "continuation byte without a lead byte"
                                     : "byte that never occurs in UTF-8";
    return 0;
  }
  if (i + 1 >= text.size()) {
    *what = "truncated sequence";
    return 0;
  }
  const auto c1 = static_cast<unsigned char>(text[i + 1]);
  if (!is_continuation(c1)) {
    *what = "truncated sequence";
    return 0;
  }
  if (c1 < lo || c1 > hi) {
    *what = c == 0xED ? "UTF-16 surrogate" : c == 0xF4 ? "code point above U+10FFFF" : "overlong encoding";
    return 0;
  }
  for (std::size_t j = 2; j < len; ++j) {
    if (i + j >= text.size() || !is_continuation(static_cast<unsigned char>(text[i + j]))) {
      *what = "truncated sequence";
      return 0;
    }
  }
  return len;
}

std::optional<Utf8Problem> check_utf8(std::string_view text) {
  std::size_t i = 0;
  while (i < text.size()) {
    const char* what = nullptr;
    std::size_t n = sequence_length(text, i, &what);
    if (n == 0) return Utf8Problem{i, what};
    i += n;
  }
  return std::nullopt;
}

std::string hex_byte(unsigned char c) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "0x%02X", c);
  return buf;
}

bool is_strippable(char c) { return c == ' ' || c == '\v' || c == '\f'; }

// Spaces, \v and \f at both ends go (as Python's str.strip would), TABs stay: they separate
// columns, and stripping one would hide an empty column.
std::string_view strip_spaces(std::string_view s) {
  while (!s.empty() && is_strippable(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_strippable(s.back())) s.remove_suffix(1);
  return s;
}

bool is_blank(std::string_view s) {
  for (char c : s)
    if (!(is_strippable(c) || c == '\t' || c == '\r')) return false;
  return true;
}

// Parses one line (without its '\n'); `line_no` is 1-based, for errors.
TsvExample parse_line(std::string_view line, const std::string& file, std::size_t line_no) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);  // CRLF
  if (is_blank(line)) throw DataError(file, line_no, "blank line (every line must be input<TAB>output)");
  if (line.find('\r') != std::string_view::npos)
    throw DataError(file, line_no,
                    "carriage return (\\r) inside the line; CrossFit would split the line there");
  line = strip_spaces(line);
  std::vector<std::string_view> fields;
  std::size_t start = 0;
  while (true) {
    std::size_t tab = line.find('\t', start);
    fields.push_back(
        line.substr(start, tab == std::string_view::npos ? std::string_view::npos : tab - start));
    if (tab == std::string_view::npos) break;
    start = tab + 1;
  }
  if (fields.size() < 2) throw DataError(file, line_no, "no TAB between the input and the output");
  if (strip_spaces(fields[0]).empty()) throw DataError(file, line_no, "empty input (column 1)");
  TsvExample ex;
  ex.input = std::string(fields[0]);
  for (std::size_t c = 1; c < fields.size(); ++c) {
    if (strip_spaces(fields[c]).empty())
      throw DataError(file, line_no,
                      "empty output in column " + std::to_string(c + 1) +
                          (c + 1 == fields.size() ? " (a TAB at the end of the line?)" : ""));
    ex.outputs.emplace_back(fields[c]);
  }
  return ex;
}

bool all_digits(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s)
    if (c < '0' || c > '9') return false;
  return true;
}

// Splits off the last '_' field: "a_b_c" -> {"a_b", "c"}; no '_' -> nullopt.
std::optional<std::pair<std::string, std::string>> split_last_field(const std::string& s) {
  std::size_t u = s.rfind('_');
  if (u == std::string::npos) return std::nullopt;
  return std::make_pair(s.substr(0, u), s.substr(u + 1));
}

}  // namespace

std::optional<std::size_t> find_invalid_utf8(std::string_view text) {
  auto p = check_utf8(text);
  if (!p) return std::nullopt;
  return p->offset;
}

std::vector<TsvExample> parse_tsv(std::string_view text, const std::string& file) {
  static constexpr std::string_view kBom = "\xEF\xBB\xBF";
  if (text.substr(0, kBom.size()) == kBom) text.remove_prefix(kBom.size());

  if (auto bad = check_utf8(text)) {
    std::size_t line_start = text.rfind('\n', bad->offset == 0 ? 0 : bad->offset - 1);
    line_start = (line_start == std::string_view::npos || bad->offset == 0) ? 0 : line_start + 1;
    std::size_t line_no = 1;
    for (std::size_t i = 0; i < line_start; ++i) line_no += text[i] == '\n';
    throw DataError(file, line_no,
                    "invalid UTF-8 at column " + std::to_string(bad->offset - line_start + 1) + " (byte " +
                        hex_byte(static_cast<unsigned char>(text[bad->offset])) + ": " + bad->what + ")");
  }

  std::vector<TsvExample> examples;
  std::size_t pos = 0, line_no = 0;
  while (pos < text.size()) {
    ++line_no;
    std::size_t nl = text.find('\n', pos);
    std::size_t end = nl == std::string_view::npos ? text.size() : nl;
    examples.push_back(parse_line(text.substr(pos, end - pos), file, line_no));
    if (nl == std::string_view::npos) break;
    pos = nl + 1;  // a '\n' as the very last byte ends the loop: one trailing newline is fine
  }
  if (examples.empty()) throw DataError(file, 0, "no examples (the file is empty)");
  return examples;
}

std::vector<TsvExample> read_tsv(const fs::path& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) throw DataError(path.string(), 0, "file does not exist");
  if (fs::is_directory(path, ec)) throw DataError(path.string(), 0, "is a directory, expected a TSV file");
  return parse_tsv(io::read_file(path), path.string());
}

std::optional<TsvFileName> match_file_name(const std::string& name) {
  static constexpr std::string_view kExt = ".tsv";
  if (name.size() <= kExt.size() || name.compare(name.size() - kExt.size(), kExt.size(), kExt) != 0)
    return std::nullopt;
  auto prefix_split = split_last_field(name.substr(0, name.size() - kExt.size()));
  if (!prefix_split) return std::nullopt;
  TsvFileName out;
  out.prefix = prefix_split->first;
  out.split = prefix_split->second;

  auto rest = split_last_field(out.prefix);
  if (!rest || rest->first.empty()) return std::nullopt;
  if (rest->second == "full") {
    if (out.split != "train" && out.split != "dev") return std::nullopt;
    out.full = true;
    out.task = rest->first;
    return out;
  }
  if (out.split != "train" && out.split != "dev" && out.split != "test") return std::nullopt;
  auto k_field = split_last_field(rest->first);
  if (!k_field || k_field->first.empty()) return std::nullopt;
  if (!all_digits(k_field->second) || !all_digits(rest->second)) return std::nullopt;
  if (k_field->second.size() > 9 || rest->second.size() > 9) return std::nullopt;  // no overflow
  out.task = k_field->first;
  out.k = std::stoll(k_field->second);
  out.seed = std::stoll(rest->second);
  if (out.k <= 0) return std::nullopt;
  return out;
}

TsvFileName parse_file_name(const std::string& name) {
  if (auto m = match_file_name(name)) return *m;
  throw DataError(
      name, 0,
      "file name does not follow {task}_{k}_{seed}_{train|dev|test}.tsv (k, seed: integers, k > 0) "
      "or {task}_full_{train|dev}.tsv");
}

}  // namespace tlmoe::data
