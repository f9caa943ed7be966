#include "text/bart_bpe_tokenizer.h"

#include <algorithm>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

#include "common/error.h"
#include "io/atomic_file.h"

namespace tlmoe::text {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// ---- Unicode ------------------------------------------------------------------------------------

struct CodeRange {
  char32_t lo, hi;
};
#include "text/unicode_tables.inc"

template <std::size_t N>
bool in_ranges(const CodeRange (&r)[N], char32_t c) {
  auto it = std::upper_bound(std::begin(r), std::end(r), c, [](char32_t v, const CodeRange& x) { return v < x.lo; });
  if (it == std::begin(r)) return false;
  --it;
  return c >= it->lo && c <= it->hi;
}

bool is_letter(char32_t c) {
  if (c < 0x80) return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
  return in_ranges(kLetterRanges, c);
}
bool is_number(char32_t c) {
  if (c < 0x80) return c >= '0' && c <= '9';
  return in_ranges(kNumberRanges, c);
}
// \s: the White_Space property (what the regex engines of tokenizers and `regex` use).
bool is_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

// Decodes UTF-8 into code points with the byte offset of each (plus one past the end). An invalid
// byte becomes U+FFFD covering that byte (the text's bytes are still what BPE sees).
void utf8_decode(std::string_view s, std::vector<char32_t>& cps, std::vector<std::size_t>& offs) {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto b = static_cast<unsigned char>(s[i]);
    int len = b < 0x80 ? 1 : (b >> 5) == 0x6 ? 2 : (b >> 4) == 0xE ? 3 : (b >> 3) == 0x1E ? 4 : 0;
    char32_t c = 0xFFFD;
    if (len == 0 || i + len > s.size()) {
      len = 1;
    } else {
      c = len == 1 ? b : len == 2 ? (b & 0x1F) : len == 3 ? (b & 0x0F) : (b & 0x07);
      for (int k = 1; k < len; ++k) {
        const auto cb = static_cast<unsigned char>(s[i + k]);
        if ((cb >> 6) != 0x2) {
          c = 0xFFFD;
          len = 1;
          break;
        }
        c = (c << 6) | (cb & 0x3F);
      }
    }
    cps.push_back(c);
    offs.push_back(i);
    i += len;
  }
  offs.push_back(s.size());
}

// Raw bytes -> valid UTF-8: a byte that starts no valid sequence becomes U+FFFD (as Rust's
// from_utf8_lossy for a single stray byte).
std::string utf8_lossy(const std::string& s) {
  std::vector<char32_t> cps;
  std::vector<std::size_t> offs;
  utf8_decode(s, cps, offs);
  std::string out;
  out.reserve(s.size());
  for (std::size_t k = 0; k < cps.size(); ++k) {
    if (cps[k] == 0xFFFD && offs[k + 1] - offs[k] == 1) out += "\xEF\xBF\xBD";
    else out.append(s, offs[k], offs[k + 1] - offs[k]);
  }
  return out;
}

// GPT-2's byte <-> printable code point table: printable Latin-1 bytes map to themselves, the
// other 68 bytes to 256, 257, ... in byte order.
struct ByteMap {
  char32_t to_cp[256];
  std::unordered_map<char32_t, unsigned char> to_byte;
  ByteMap() {
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      to_cp[b] = printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + n++);
      to_byte[to_cp[b]] = static_cast<unsigned char>(b);
    }
  }
};
const ByteMap& byte_map() {
  static const ByteMap m;
  return m;
}

// A vocabulary / merges string (byte-level code points) -> raw bytes; false when a code point is
// outside the byte table (a special token such as "<s>" is plain ASCII and converts fine).
bool to_raw_bytes(const std::string& piece, std::string& out) {
  std::vector<char32_t> cps;
  std::vector<std::size_t> offs;
  utf8_decode(piece, cps, offs);
  out.clear();
  const auto& m = byte_map().to_byte;
  for (char32_t c : cps) {
    auto it = m.find(c);
    if (it == m.end()) return false;
    out += static_cast<char>(it->second);
  }
  return true;
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) throw DataError(p.string(), 0, "cannot read (a Hugging Face tokenizer directory needs vocab.json and merges.txt)");
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace

// ---- pre-tokenisation -------------------------------------------------------------------------------

std::vector<std::string> BartBpeTokenizer::pretokenize(std::string_view text) {
  std::vector<char32_t> c;
  std::vector<std::size_t> off;
  utf8_decode(text, c, off);
  const std::size_t n = c.size();
  std::vector<std::string> out;
  std::size_t i = 0;
  auto run = [&](std::size_t j, auto pred) {
    while (j < n && pred(c[j])) ++j;
    return j;
  };
  auto other = [](char32_t x) { return !is_space(x) && !is_letter(x) && !is_number(x); };
  while (i < n) {
    std::size_t end = i;
    // 's|'t|'re|'ve|'m|'ll|'d
    if (c[i] == '\'' && i + 1 < n) {
      const char32_t a = c[i + 1], b = i + 2 < n ? c[i + 2] : 0;
      if (a == 's' || a == 't' || a == 'm' || a == 'd') end = i + 2;
      else if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) end = i + 3;
    }
    if (end == i) {
      const std::size_t s = c[i] == ' ' ? i + 1 : i;  // the optional leading space
      if (s < n && is_letter(c[s])) end = run(s, is_letter);            //  ?\p{L}+
      else if (s < n && is_number(c[s])) end = run(s, is_number);       //  ?\p{N}+
      else if (s < n && other(c[s])) end = run(s, other);               //  ?[^\s\p{L}\p{N}]+
    }
    if (end == i) {
      // c[i] is whitespace. \s+(?!\S): the run, minus its last character when a non-space follows;
      // when that leaves nothing, \s+ takes the whole run.
      const std::size_t j = run(i, is_space);
      end = j;
      if (j < n && j - i > 1) end = j - 1;
    }
    out.emplace_back(text.substr(off[i], off[end] - off[i]));
    i = end;
  }
  return out;
}

// ---- loading ----------------------------------------------------------------------------------------

std::unique_ptr<BartBpeTokenizer> BartBpeTokenizer::load(const fs::path& dir) {
  const fs::path vocab = dir / "vocab.json", merges = dir / "merges.txt", tcfg = dir / "tokenizer_config.json";
  bool clean = true;
  if (fs::exists(tcfg)) {
    try {
      auto j = json::parse(read_file(tcfg));
      if (j.contains("clean_up_tokenization_spaces") && j["clean_up_tokenization_spaces"].is_boolean())
        clean = j["clean_up_tokenization_spaces"].get<bool>();
    } catch (const json::exception& e) {
      throw DataError(tcfg.string(), 0, std::string("not valid JSON: ") + e.what());
    }
  }
  auto t = from_strings(read_file(vocab), read_file(merges), dir.string(), clean);
  const fs::path tj = dir / "tokenizer.json";
  if (fs::exists(tj)) {
    std::string flags;
    try {
      auto j = json::parse(read_file(tj));
      if (j.contains("added_tokens") && j["added_tokens"].is_array())
        for (const auto& a : j["added_tokens"])
          for (auto& s : t->specials_)
            if (a.value("content", std::string()) == s.content) {
              s.lstrip = a.value("lstrip", false);
              s.rstrip = a.value("rstrip", false);
              flags += s.content + (s.lstrip ? "L" : "") + (s.rstrip ? "R" : "");
            }
    } catch (const json::exception& e) {
      throw DataError(tj.string(), 0, std::string("not valid JSON: ") + e.what());
    }
    if (!flags.empty()) t->fingerprint_ = "bart-bpe:" + io::fnv1a64_hex(t->fingerprint_ + flags);
  }
  return t;
}

std::unique_ptr<BartBpeTokenizer> BartBpeTokenizer::from_strings(const std::string& vocab_json,
                                                                 const std::string& merges_txt,
                                                                 const std::string& source, bool clean_up_spaces) {
  std::unique_ptr<BartBpeTokenizer> t(new BartBpeTokenizer());
  t->clean_up_ = clean_up_spaces;
  const std::string vsrc = (fs::path(source) / "vocab.json").string(), msrc = (fs::path(source) / "merges.txt").string();
  json v;
  try {
    v = json::parse(vocab_json);
  } catch (const json::exception& e) {
    throw DataError(vsrc, 0, std::string("not valid JSON: ") + e.what());
  }
  if (!v.is_object() || v.empty()) throw DataError(vsrc, 0, "expected a JSON object {piece: id}");
  const std::size_t n = v.size();
  t->pieces_.assign(n, std::string());
  std::vector<bool> seen(n, false);
  for (auto& [piece, idv] : v.items()) {
    if (!idv.is_number_integer()) throw DataError(vsrc, 0, "the id of '" + piece + "' is not an integer");
    const auto id = idv.get<int64_t>();
    if (id < 0 || id >= static_cast<int64_t>(n) || seen[id])
      throw DataError(vsrc, 0, "ids must be 0.." + std::to_string(n - 1) + " without gaps or repeats ('" + piece +
                                   "' has " + std::to_string(id) + ")");
    seen[id] = true;
    t->pieces_[id] = piece;
  }
  const char* want[4] = {"<s>", "<pad>", "</s>", "<unk>"};
  for (int k = 0; k < 4; ++k)
    if (n <= static_cast<std::size_t>(k) || t->pieces_[k] != want[k])
      throw DataError(vsrc, 0, std::string("tlmoe needs BART's special ids: ") + want[k] + " = " + std::to_string(k) +
                                   (n > static_cast<std::size_t>(k) ? " (id " + std::to_string(k) + " is '" + t->pieces_[k] + "')" : ""));
  t->bytes_.resize(n);
  for (std::size_t id = 0; id < n; ++id) {
    const std::string& p = t->pieces_[id];
    const bool special = p.size() > 2 && p.front() == '<' && p.back() == '>' &&
                         (p == "<s>" || p == "</s>" || p == "<pad>" || p == "<unk>" || p == "<mask>");
    if (special) {
      t->specials_.push_back({p, static_cast<int32_t>(id)});
      t->bytes_[id] = p;
      continue;
    }
    std::string raw;
    if (to_raw_bytes(p, raw)) {
      t->bytes_[id] = raw;
      t->by_bytes_.emplace(raw, static_cast<int32_t>(id));
    } else {
      t->bytes_[id] = p;  // not byte-level text: reachable only by id
    }
  }
  std::sort(t->specials_.begin(), t->specials_.end(),
            [](const auto& a, const auto& b) { return a.content.size() > b.content.size(); });
  // merges.txt: "#version ..." header, then "a b" per line in rank order.
  std::istringstream ms(merges_txt);
  std::string line;
  std::size_t lineno = 0;
  int rank = 0;
  while (std::getline(ms, line)) {
    ++lineno;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || (lineno == 1 && line.rfind("#version", 0) == 0)) continue;
    const auto sp = line.find(' ');
    if (sp == std::string::npos || sp == 0 || sp + 1 >= line.size() || line.find(' ', sp + 1) != std::string::npos)
      throw DataError(msrc, lineno, "expected two space-separated symbols, got '" + line + "'");
    std::string a, b;
    if (!to_raw_bytes(line.substr(0, sp), a) || !to_raw_bytes(line.substr(sp + 1), b))
      throw DataError(msrc, lineno, "symbol outside the byte-level alphabet in '" + line + "'");
    if (!t->by_bytes_.count(a + b))
      throw DataError(msrc, lineno, "the merge '" + line + "' makes a token that vocab.json does not have");
    t->ranks_.emplace(std::make_pair(a, b), rank++);
  }
  t->fingerprint_ = "bart-bpe:" + io::fnv1a64_hex(vocab_json + '\0' + merges_txt + (clean_up_spaces ? '1' : '0'));
  return t;
}

// ---- encode / decode ----------------------------------------------------------------------------------

void BartBpeTokenizer::bpe(const std::string& bytes, std::vector<int32_t>& out) const {
  std::vector<std::string> sym;
  sym.reserve(bytes.size());
  for (char b : bytes) sym.emplace_back(1, b);
  while (sym.size() > 1) {
    int best = std::numeric_limits<int>::max();
    std::size_t at = 0;
    for (std::size_t k = 0; k + 1 < sym.size(); ++k) {
      auto it = ranks_.find({sym[k], sym[k + 1]});
      if (it != ranks_.end() && it->second < best) best = it->second, at = k;
    }
    if (best == std::numeric_limits<int>::max()) break;
    sym[at] += sym[at + 1];
    sym.erase(sym.begin() + static_cast<std::ptrdiff_t>(at) + 1);
  }
  for (const auto& s : sym) {
    auto it = by_bytes_.find(s);
    out.push_back(it == by_bytes_.end() ? unk_id() : it->second);
  }
}

std::vector<int32_t> BartBpeTokenizer::encode(std::string_view text) const {
  std::vector<int32_t> ids;
  auto encode_plain = [&](std::string_view part) {
    for (const auto& piece : pretokenize(part)) bpe(piece, ids);
  };
  // byte offset where the whitespace at the end of `s` starts / where it ends at the start of `s`
  auto trailing_space = [](std::string_view s) {
    std::vector<char32_t> cps;
    std::vector<std::size_t> offs;
    utf8_decode(s, cps, offs);
    std::size_t k = cps.size();
    while (k > 0 && is_space(cps[k - 1])) --k;
    return offs[k];
  };
  auto leading_space = [](std::string_view s) {
    std::vector<char32_t> cps;
    std::vector<std::size_t> offs;
    utf8_decode(s, cps, offs);
    std::size_t k = 0;
    while (k < cps.size() && is_space(cps[k])) ++k;
    return offs[k];
  };
  std::size_t start = 0, i = 0;
  while (i < text.size()) {
    bool matched = false;
    if (text[i] == '<')
      for (const auto& s : specials_)
        if (text.compare(i, s.content.size(), s.content) == 0) {
          std::string_view before = text.substr(start, i - start);
          if (s.lstrip) before = before.substr(0, trailing_space(before));
          encode_plain(before);
          ids.push_back(s.id);
          i += s.content.size();
          if (s.rstrip) i += leading_space(text.substr(i));
          start = i;
          matched = true;
          break;
        }
    if (!matched) ++i;
  }
  encode_plain(text.substr(start));
  return ids;
}

void BartBpeTokenizer::check_id(int32_t id) const {
  if (id < 0 || id >= vocab_size())
    throw std::out_of_range("token id " + std::to_string(id) + " outside [0, " + std::to_string(vocab_size()) + ")");
}

std::string BartBpeTokenizer::id_to_piece(int32_t id) const {
  check_id(id);
  return pieces_[id];
}

std::string BartBpeTokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  std::string raw;
  for (int32_t id : ids) {
    check_id(id);
    if (skip_special && is_special(id)) continue;
    raw += bytes_[id];
  }
  std::string s = utf8_lossy(raw);
  if (!clean_up_) return s;
  static const std::pair<const char*, const char*> rules[] = {
      {" .", "."}, {" ?", "?"}, {" !", "!"}, {" ,", ","}, {" ' ", "'"},
      {" n't", "n't"}, {" 'm", "'m"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};
  for (const auto& [from, to] : rules) {  // each rule over the whole text, in order (str.replace)
    const std::string f(from), r(to);
    std::string o;
    std::size_t p = 0;
    for (std::size_t q; (q = s.find(f, p)) != std::string::npos; p = q + f.size()) o.append(s, p, q - p).append(r);
    o.append(s, p, std::string::npos);
    s.swap(o);
  }
  return s;
}

}  // namespace tlmoe::text
