// Small string helpers shared by the config and data layers.
#pragma once

#include <cstddef>
#include <string_view>

namespace tlmoe {

// Levenshtein distance (insertions, deletions, substitutions), for "did you mean" suggestions.
std::size_t edit_distance(std::string_view a, std::string_view b);

}  // namespace tlmoe
