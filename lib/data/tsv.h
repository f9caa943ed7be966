// CrossFit / NLP Few-shot Gym TSV files (docs/data.md).
//
// One example per line:   input<TAB>output1[<TAB>output2...]     (UTF-8, LF or CRLF)
// Several outputs are several gold answers. File names:
//   {task}_{k}_{seed}_{train|dev|test}.tsv   k-shot splits (CrossFit)
//   {task}_full_{train|dev}.tsv              whole training / dev sets (tlmoe's extension, for
//                                            upstream training on full data)
//
// Reading is strict where CrossFit is silent (see docs/data.md): CrossFit strips the line and
// splits on TAB; we strip spaces (and \v, \f) at both ends but never TABs, so an empty first or
// last column is an error instead of a silently shifted or dropped field. Every problem is a
// DataError naming the file and the 1-based line.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tlmoe::data {

struct TsvExample {
  std::string input;
  std::vector<std::string> outputs;  // >= 1 gold answers, in file order
};

// Reads and validates a whole TSV file. Throws DataError(file, line, ...) for: a missing or
// unreadable file, invalid UTF-8 (overlong forms, surrogates, code points > U+10FFFF, truncated
// sequences), a blank line (a single newline at the end of the file is fine), a line without a
// TAB, an empty input, an empty or blank output column, a stray carriage return inside a line,
// and a file with no examples (line 0). A UTF-8 byte-order mark at the start is skipped.
std::vector<TsvExample> read_tsv(const std::filesystem::path& path);

// Same as read_tsv on bytes already in memory; `file` names the source in errors.
std::vector<TsvExample> parse_tsv(std::string_view text, const std::string& file);

// Byte offset of the first invalid UTF-8 sequence in `text`, or std::nullopt when it is valid.
std::optional<std::size_t> find_invalid_utf8(std::string_view text);

// What a data file name says about its content.
struct TsvFileName {
  std::string task;       // may contain '_' and '-'
  std::string prefix;     // "{task}_{k}_{seed}" or "{task}_full"; the file name minus "_{split}.tsv"
  std::string split;      // train | dev | test (test only for k-shot files)
  bool full = false;      // {task}_full_{split}.tsv
  std::int64_t k = 0;     // shots (0 for full files)
  std::int64_t seed = 0;  // sampling seed (0 for full files)
};

// Parses a bare file name (no directory). CrossFit's rule: prefix = name minus "_{split}.tsv";
// task = prefix minus its last two '_' fields, which must be the integers k and seed, unless
// the prefix ends in "_full". Returns std::nullopt when the name does not match.
std::optional<TsvFileName> match_file_name(const std::string& name);

// As match_file_name, but throws DataError(name, 0, ...) describing the expected forms.
TsvFileName parse_file_name(const std::string& name);

}  // namespace tlmoe::data
