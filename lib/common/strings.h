// Small string helpers shared by the config and data layers.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace tlmoe {

// Levenshtein distance (insertions, deletions, substitutions), for "did you mean" suggestions.
std::size_t edit_distance(std::string_view a, std::string_view b);

// One CSV field (RFC 4180): quoted, with inner quotes doubled, when it holds a comma, a quote or
// a line break; as is otherwise.
std::string csv_field(std::string_view s);

// "a,b,,c" -> {"a", "b", "c"}: items separated by `sep` (a comma by default), empty ones dropped.
std::vector<std::string> split_list(std::string_view s, char sep = ',');

// UTF-8 text without the whitespace at both ends, as Python's str.strip() (CrossFit strips
// predictions so): every code point for which str.isspace() is true — ASCII \t \n \v \f \r
// and space, U+001C..U+001F, U+0085, U+00A0, U+1680, U+2000..U+200A, U+2028, U+2029, U+202F,
// U+205F, U+3000. Bytes that are not valid UTF-8 are never whitespace.
std::string python_strip(std::string_view s);

}  // namespace tlmoe
