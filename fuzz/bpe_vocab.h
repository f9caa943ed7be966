// A tiny byte-level BPE vocabulary for the tokenizer fuzz targets, built in code: <s> <pad> </s>
// <unk> = 0..3, the 256 byte symbols of GPT-2's byte table = 4..259, <mask> = 260, then one id
// per merge (a handful of English ones, a multi-byte UTF-8 one and runs of spaces).
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <utility>
#include <vector>

namespace tlmoe::fuzz {

// GPT-2's bytes_to_unicode: byte b -> the UTF-8 text of its printable stand-in.
inline std::string byte_symbol(int b) {
  int cp = b;
  if (!((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255))) {
    int n = 0;
    for (int x = 0; x < b; ++x)
      if (!((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255))) ++n;
    cp = 256 + n;
  }
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

inline const std::vector<std::pair<std::string, std::string>>& tiny_merges() {
  static const std::vector<std::pair<std::string, std::string>> m = {
      {"Ġ", "t"},   {"h", "e"},   {"Ġt", "he"}, {"i", "n"},   {"e", "r"},  {"Ġ", "a"},   {"o", "n"},
      {"r", "e"},   {"in", "g"},  {"l", "l"},   {"he", "ll"}, {"Ġ", "w"},  {"Ġ", "s"},   {"a", "n"},
      {"Ġ", "Ġ"},   {"ĠĠ", "ĠĠ"}, {"Ã", "©"},   {"Ġ", "1"},   {"1", "2"},  {"'", "s"},   {"Ċ", "Ċ"},
      {"ĉ", "ĉ"},   {"Ġ", "["},   {"]", "Ġ"},   {"Ġa", "n"},  {"Ġ", "i"},  {"Ġi", "s"},  {"?", "Ġ"}};
  return m;
}

inline nlohmann::ordered_json tiny_vocab() {
  nlohmann::ordered_json v = nlohmann::ordered_json::object();
  v["<s>"] = 0, v["<pad>"] = 1, v["</s>"] = 2, v["<unk>"] = 3;
  for (int b = 0; b < 256; ++b) v[byte_symbol(b)] = 4 + b;
  v["<mask>"] = 260;
  int id = 261;
  for (const auto& [a, b] : tiny_merges())
    if (!v.contains(a + b)) v[a + b] = id++;
  return v;
}

inline std::string tiny_merges_txt() {
  std::string m = "#version: 0.2\n";
  for (const auto& [a, b] : tiny_merges()) m += a + " " + b + "\n";
  return m;
}

}  // namespace tlmoe::fuzz
