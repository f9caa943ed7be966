// Checks on JSON text that nlohmann's parser does not make: a key given twice in one object (the
// parser keeps the last silently), reported with the lines of both.
#pragma once

#include <cstddef>
#include <exception>
#include <optional>
#include <string>
#include <string_view>

namespace tlmoe::io {

struct DuplicateKey {
  std::string key;     // as written between the quotes (escapes not decoded)
  std::size_t first;   // 1-based line of the first occurrence
  std::size_t second;  // 1-based line of the repeat
};

// The first key that occurs twice in the same object of `text`, or nothing. Meant for text that
// parses as JSON; on malformed text it returns what it found before the damage.
std::optional<DuplicateKey> find_duplicate_key(std::string_view text);

// A JSON error's text without nlohmann's "[json.exception.parse_error.101] " prefix (any other
// exception's text as it is).
std::string json_error_text(const std::exception& e);

// Throws DataError(file, line of the repeat, "key \"k\" appears twice in one object (lines a and
// b): ...") when `text` has a duplicate key.
void refuse_duplicate_keys(std::string_view text, const std::string& file);

}  // namespace tlmoe::io
