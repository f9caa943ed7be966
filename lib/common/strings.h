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

}  // namespace tlmoe
