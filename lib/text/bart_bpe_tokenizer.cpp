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
using ojson = nlohmann::ordered_json;

namespace {

// ---- Unicode ------------------------------------------------------------------------------------

struct CodeRange {
  char32_t lo, hi;
};
#include "text/unicode_tables.inc"

template <std::size_t N>
bool in_ranges(const CodeRange (&r)[N], char32_t c) {
  auto it = std::upper_bound(std::begin(r), std::end(r), c,
                             [](char32_t v, const CodeRange& x) { return v < x.lo; });
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
// \s: the White_Space property (what the regex engines of tokenizers and `regex` use, and Rust's
// char::is_whitespace, which lstrip / rstrip of added tokens use).
bool is_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}

// The code point at s[i] and its length in bytes. Input text is decoded leniently: a byte that
// starts no well-formed sequence is U+FFFD of length 1 (the text's bytes are still what BPE sees).
std::size_t next_code_point(std::string_view s, std::size_t i, char32_t& c) {
  const auto b = static_cast<unsigned char>(s[i]);
  const std::size_t len = b < 0x80 ? 1 : (b >> 5) == 0x6 ? 2 : (b >> 4) == 0xE ? 3 : (b >> 3) == 0x1E ? 4 : 0;
  c = 0xFFFD;
  if (len == 0 || i + len > s.size()) return 1;
  char32_t v = len == 1 ? b : len == 2 ? (b & 0x1F) : len == 3 ? (b & 0x0F) : (b & 0x07);
  for (std::size_t k = 1; k < len; ++k) {
    const auto cb = static_cast<unsigned char>(s[i + k]);
    if ((cb >> 6) != 0x2) return 1;
    v = (v << 6) | (cb & 0x3F);
  }
  c = v;
  return len;
}

// Code points with the byte offset of each (plus one past the end).
void utf8_decode(std::string_view s, std::vector<char32_t>& cps, std::vector<std::size_t>& offs) {
  for (std::size_t i = 0; i < s.size();) {
    char32_t c;
    const std::size_t len = next_code_point(s, i, c);
    cps.push_back(c);
    offs.push_back(i);
    i += len;
  }
  offs.push_back(s.size());
}

// Raw bytes -> text as Python's bytes.decode("utf-8", errors="replace") and Rust's
// String::from_utf8_lossy: one U+FFFD per maximal subpart of an ill-formed subsequence (the
// Unicode Standard's recommended practice, §3.9): a well-formed prefix of a sequence that breaks
// off is one U+FFFD, a byte that can start no sequence (80..C1, F5..FF) is one each.
std::string utf8_replace(std::string_view s) {
  static constexpr std::string_view kReplacement = "\xEF\xBF\xBD";
  std::string out;
  out.reserve(s.size());
  std::size_t i = 0;
  while (i < s.size()) {
    const auto b = static_cast<unsigned char>(s[i]);
    if (b < 0x80) {
      out += s[i++];
      continue;
    }
    std::size_t len = 0;
    unsigned char lo = 0x80,
                  hi = 0xBF;  // the range of the second byte (no overlong, surrogate or > U+10FFFF)
    if (b >= 0xC2 && b <= 0xDF) {
      len = 2;
    } else if (b >= 0xE0 && b <= 0xEF) {
      len = 3;
      lo = b == 0xE0 ? 0xA0 : 0x80;
      hi = b == 0xED ? 0x9F : 0xBF;
    } else if (b >= 0xF0 && b <= 0xF4) {
      len = 4;
      lo = b == 0xF0 ? 0x90 : 0x80;
      hi = b == 0xF4 ? 0x8F : 0xBF;
    }
    if (len == 0) {
      out += kReplacement;
      ++i;
      continue;
    }
    std::size_t k = 1;
    for (; k < len && i + k < s.size(); ++k) {
      const auto c = static_cast<unsigned char>(s[i + k]);
      if (c < (k == 1 ? lo : 0x80) || c > (k == 1 ? hi : 0xBF)) break;
    }
    if (k == len)
      out.append(s.substr(i, len));
    else
      out += kReplacement;
    i += k;
  }
  return out;
}

// transformers' clean_up_tokenization: each rule over the whole text, in order (str.replace).
std::string clean_up_tokenization(std::string s) {
  static const std::pair<const char*, const char*> rules[] = {
      {" .", "."},     {" ?", "?"},   {" !", "!"},   {" ,", ","},     {" ' ", "'"},
      {" n't", "n't"}, {" 'm", "'m"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};
  for (const auto& [from, to] : rules) {
    const std::string f(from), r(to);
    std::string o;
    std::size_t p = 0;
    for (std::size_t q; (q = s.find(f, p)) != std::string::npos; p = q + f.size())
      o.append(s, p, q - p).append(r);
    o.append(s, p, std::string::npos);
    s.swap(o);
  }
  return s;
}

// GPT-2's byte <-> printable code point table: printable Latin-1 bytes map to themselves, the
// other 68 bytes to 256, 257, ... in byte order.
struct ByteMap {
  std::unordered_map<char32_t, unsigned char> to_byte;
  ByteMap() {
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      to_byte[printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + n++)] =
          static_cast<unsigned char>(b);
    }
  }
};
const ByteMap& byte_map() {
  static const ByteMap m;
  return m;
}

// A vocabulary / merges string (byte-level code points) -> raw bytes; false when a code point is
// outside the byte table (the token then stands for its UTF-8 text, as tokenizers' ByteLevel
// decoder does).
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
std::string token_bytes(const std::string& piece) {
  std::string raw;
  return to_raw_bytes(piece, raw) ? raw : piece;
}

std::string read_file(const fs::path& p, const char* why) {
  std::ifstream in(p, std::ios::binary);
  if (!in) throw DataError(p.string(), 0, std::string("cannot read (") + why + ")");
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}
json parse_json(const std::string& text, const std::string& file) {
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    throw DataError(file, 0, std::string("not valid JSON: ") + e.what());
  }
}

const char* const kNamed[] = {"<s>", "<pad>", "</s>", "<unk>", "<mask>"};  // BART's special tokens
bool is_named(const std::string& s) {
  return std::find(std::begin(kNamed), std::end(kNamed), s) != std::end(kNamed);
}

}  // namespace

// ---- reading the Hugging Face files ---------------------------------------------------------------

struct BartBpeTokenizer::Loader {
  struct Merge {
    std::string a, b;
    std::size_t line;  // merges.txt line, 0 for tokenizer.json
    std::string key;   // tokenizer.json key, empty for merges.txt
  };
  using Vocab = std::vector<std::pair<std::string, std::int64_t>>;
  struct Config {  // tokenizer_config.json and special_tokens_map.json
    std::string file;
    std::optional<bool> clean, prefix;
    std::vector<std::string> additional;  // additional special tokens
    std::vector<AddedToken> added;        // added_tokens_decoder
  };
  struct HfJson {  // tokenizer.json
    Vocab vocab;
    std::vector<Merge> merges;
    std::vector<AddedToken> added;
    bool prefix = false;
  };

  static Vocab vocab_entries(const json& v, const std::string& file, const std::string& key) {
    if (!v.is_object() || v.empty()) throw DataError(file, 0, key + "expected a JSON object {piece: id}");
    Vocab out;
    for (auto& [piece, idv] : v.items()) {
      if (!idv.is_number_integer())
        throw DataError(file, 0, key + "the id of '" + piece + "' is not an integer");
      out.emplace_back(piece, idv.get<std::int64_t>());
    }
    return out;
  }

  // merges.txt: "#version ..." header, then "a b" per line in rank order.
  static std::vector<Merge> merges_txt(const std::string& text, const std::string& file) {
    std::vector<Merge> out;
    std::istringstream ms(text);
    std::string line;
    std::size_t lineno = 0;
    while (std::getline(ms, line)) {
      ++lineno;
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.empty() || (lineno == 1 && line.rfind("#version", 0) == 0)) continue;
      const auto sp = line.find(' ');
      if (sp == std::string::npos || sp == 0 || sp + 1 >= line.size() ||
          line.find(' ', sp + 1) != std::string::npos)
        throw DataError(file, lineno, "expected two space-separated symbols, got '" + line + "'");
      out.push_back({line.substr(0, sp), line.substr(sp + 1), lineno, ""});
    }
    return out;
  }

  static void set_model(BartBpeTokenizer& t, const Vocab& vocab, const std::string& vfile,
                        const std::string& vkey, const std::vector<Merge>& merges, const std::string& mfile) {
    const std::size_t n = vocab.size();
    t.pieces_.assign(n, std::string());
    std::vector<bool> seen(n, false);
    for (const auto& [piece, id] : vocab) {
      if (id < 0 || id >= static_cast<int64_t>(n) || seen[id])
        throw DataError(vfile, 0,
                        vkey + "ids must be 0.." + std::to_string(n - 1) + " without gaps or repeats ('" +
                            piece + "' has " + std::to_string(id) + ")");
      seen[id] = true;
      t.pieces_[id] = piece;
    }
    for (std::size_t k = 0; k < 4; ++k)
      if (n <= k || t.pieces_[k] != kNamed[k])
        throw DataError(vfile, 0,
                        vkey + "tlmoe needs BART's special ids: " + kNamed[k] + " = " + std::to_string(k) +
                            (n > k ? " (id " + std::to_string(k) + " is '" + t.pieces_[k] + "')" : ""));
    t.model_size_ = static_cast<std::int32_t>(n);
    t.bytes_.resize(n);
    for (std::size_t id = 0; id < n; ++id) {
      std::string raw;
      if (to_raw_bytes(t.pieces_[id], raw)) {
        t.bytes_[id] = raw;
        t.by_bytes_.emplace(raw, static_cast<int32_t>(id));
      } else {
        t.bytes_[id] = t.pieces_[id];  // not byte-level text: reachable only by id
      }
    }
    int rank = 0;
    for (const auto& m : merges) {
      const std::string where = m.key.empty() ? "" : m.key + ": ";
      std::string a, b;
      if (!to_raw_bytes(m.a, a) || !to_raw_bytes(m.b, b))
        throw DataError(mfile, m.line,
                        where + "symbol outside the byte-level alphabet in '" + m.a + " " + m.b + "'");
      if (!t.by_bytes_.count(a + b))
        throw DataError(
            mfile, m.line,
            where + "the merge '" + m.a + " " + m.b + "' makes a token that the vocabulary does not have");
      t.ranks_.emplace(std::make_pair(a, b), rank++);
      t.merges_.emplace_back(m.a, m.b);
    }
  }

  // The five BART specials of the vocabulary are added tokens (as BartTokenizer adds them).
  static void add_named(BartBpeTokenizer& t) {
    for (const char* s : kNamed)
      for (std::int32_t id = 0; id < t.model_size_; ++id)
        if (t.pieces_[id] == s) {
          t.added_.push_back({s, id, true, false, false, false});
          break;
        }
  }

  // An added token of tokenizer.json or added_tokens_decoder: a named special updates its flags;
  // any other must have the id that tokenizers would give it (its vocabulary id, or the next id).
  static void add_token(BartBpeTokenizer& t, const AddedToken& a, const std::string& file,
                        const std::string& key) {
    if (a.content.empty()) throw DataError(file, 0, key + ": empty content");
    for (auto& have : t.added_)
      if (have.content == a.content) {
        if (!is_named(a.content) || have.id != a.id)
          throw DataError(file, 0,
                          key + ": '" + a.content + "' is declared twice or with id " + std::to_string(a.id) +
                              " instead of " + std::to_string(have.id));
        have = a;
        return;
      }
    std::int32_t want = t.vocab_size();
    for (std::int32_t id = 0; id < t.model_size_; ++id)
      if (t.pieces_[id] == a.content) want = id;
    if (a.id != want)
      throw DataError(file, 0,
                      key + ": '" + a.content + "' has id " + std::to_string(a.id) +
                          " but tokenizers gives it " + std::to_string(want) +
                          " (added tokens follow the vocabulary without gaps)");
    if (want == t.vocab_size()) {
      t.pieces_.push_back(a.content);
      t.bytes_.push_back(token_bytes(a.content));
    }
    t.added_.push_back(a);
  }

  static AddedToken added_token(const json& a, const std::string& file, const std::string& key,
                                std::int64_t id) {
    if (!a.is_object() || !a.contains("content") || !a["content"].is_string())
      throw DataError(file, 0, key + ": expected an object with a string 'content'");
    if (id < 0 || id > std::numeric_limits<std::int32_t>::max())
      throw DataError(file, 0, key + ": id " + std::to_string(id) + " is not a non-negative 32-bit integer");
    auto flag = [&](const char* name, bool dflt) {
      if (!a.contains(name) || a[name].is_null()) return dflt;
      if (!a[name].is_boolean()) throw DataError(file, 0, key + "." + name + ": expected true or false");
      return a[name].get<bool>();
    };
    AddedToken t;
    t.content = a["content"].get<std::string>();
    t.id = static_cast<std::int32_t>(id);
    t.special = flag("special", false);
    t.lstrip = flag("lstrip", false);
    t.rstrip = flag("rstrip", false);
    t.normalized = flag("normalized", !t.special);
    if (flag("single_word", false))
      throw DataError(file, 0, key + ".single_word: single-word added tokens are not supported");
    return t;
  }

  static std::vector<std::string> token_list(const json& v, const std::string& file, const std::string& key) {
    std::vector<std::string> out;
    if (v.is_null()) return out;
    if (!v.is_array()) throw DataError(file, 0, key + ": expected a list of tokens");
    for (const auto& x : v) {
      if (x.is_string())
        out.push_back(x.get<std::string>());
      else if (x.is_object() && x.contains("content") && x["content"].is_string())
        out.push_back(x["content"].get<std::string>());
      else
        throw DataError(file, 0, key + ": expected strings or {\"content\": ...}");
    }
    return out;
  }

  static Config read_config(const fs::path& dir) {
    Config c;
    const fs::path tcfg = dir / "tokenizer_config.json", stm = dir / "special_tokens_map.json";
    c.file = tcfg.string();
    if (fs::exists(tcfg)) {
      const json j = parse_json(read_file(tcfg, "tokenizer_config.json"), c.file);
      if (!j.is_object()) throw DataError(c.file, 0, "expected a JSON object");
      if (j.contains("clean_up_tokenization_spaces") && j["clean_up_tokenization_spaces"].is_boolean())
        c.clean = j["clean_up_tokenization_spaces"].get<bool>();
      if (j.contains("add_prefix_space") && j["add_prefix_space"].is_boolean())
        c.prefix = j["add_prefix_space"].get<bool>();
      for (const char* key : {"additional_special_tokens", "extra_special_tokens"})
        if (j.contains(key) && !j[key].is_object())
          for (auto& s : token_list(j[key], c.file, key)) c.additional.push_back(s);
      if (j.contains("added_tokens_decoder") && j["added_tokens_decoder"].is_object()) {
        for (auto& [k, v] : j["added_tokens_decoder"].items()) {
          const std::string key = "added_tokens_decoder." + k;
          std::int64_t id = -1;
          try {
            std::size_t used = 0;
            id = std::stoll(k, &used);
            if (used != k.size()) id = -1;
          } catch (const std::exception&) {
          }
          if (id < 0 || id > std::numeric_limits<std::int32_t>::max())
            throw DataError(c.file, 0, key + ": the key is not an id (a non-negative 32-bit integer)");
          c.added.push_back(added_token(v, c.file, key, id));
        }
        std::sort(c.added.begin(), c.added.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
      }
    }
    if (fs::exists(stm)) {
      const json j = parse_json(read_file(stm, "special_tokens_map.json"), stm.string());
      if (j.is_object() && j.contains("additional_special_tokens"))
        for (auto& s : token_list(j["additional_special_tokens"], stm.string(), "additional_special_tokens"))
          c.additional.push_back(s);
    }
    return c;
  }

  static void refuse_unless(bool ok, const std::string& file, const std::string& key,
                            const std::string& what) {
    if (!ok) throw DataError(file, 0, key + ": " + what + " (tlmoe reads a byte-level BPE as BART's)");
  }
  static std::string type_of(const json& j, const char* key) {
    if (!j.contains(key) || !j[key].is_object()) return "";
    const json& o = j[key];
    if (!o.contains("type")) return "?";
    return o["type"].is_string() ? o["type"].get<std::string>() : o["type"].dump();
  }

  // tokenizer.json: a byte-level BPE, or a DataError naming the key that tlmoe cannot reproduce.
  static HfJson read_hf_json(const fs::path& path) {
    const std::string file = path.string();
    const json j = parse_json(read_file(path, "tokenizer.json"), file);
    refuse_unless(j.is_object() && j.contains("model") && j["model"].is_object(), file, "model", "missing");
    const json& m = j["model"];
    const std::string type = !m.contains("type") ? "" : m["type"].is_string() ? m["type"].get<std::string>() : m["type"].dump();
    refuse_unless(type == "BPE", file, "model.type", "is '" + type + "', not 'BPE'");
    auto null_or = [&](const char* key, const json& ok) {
      return !m.contains(key) || m[key].is_null() || m[key] == ok;
    };
    refuse_unless(null_or("dropout", json()), file, "model.dropout", "BPE dropout is not supported");
    refuse_unless(null_or("continuing_subword_prefix", ""), file, "model.continuing_subword_prefix",
                  "must be empty");
    refuse_unless(null_or("end_of_word_suffix", ""), file, "model.end_of_word_suffix", "must be empty");
    refuse_unless(null_or("byte_fallback", false), file, "model.byte_fallback", "must be false");
    refuse_unless(null_or("ignore_merges", false), file, "model.ignore_merges", "must be false");
    refuse_unless(!j.contains("normalizer") || j["normalizer"].is_null(), file, "normalizer",
                  "is '" + type_of(j, "normalizer") + "': normalizers are not supported");
    const std::string pre = type_of(j, "pre_tokenizer");
    refuse_unless(pre == "ByteLevel", file, "pre_tokenizer", "is '" + pre + "', not 'ByteLevel'");
    const json& p = j["pre_tokenizer"];
    refuse_unless(p.contains("add_prefix_space") && p["add_prefix_space"].is_boolean(), file,
                  "pre_tokenizer.add_prefix_space", "missing");
    refuse_unless(!p.contains("use_regex") || p["use_regex"] == true, file, "pre_tokenizer.use_regex",
                  "must be true");
    const std::string dec = type_of(j, "decoder");
    refuse_unless(!j.contains("decoder") || j["decoder"].is_null() || dec == "ByteLevel", file, "decoder",
                  "is '" + dec + "', not 'ByteLevel'");
    HfJson h;
    h.prefix = p["add_prefix_space"].get<bool>();
    refuse_unless(m.contains("vocab"), file, "model.vocab", "missing");
    h.vocab = vocab_entries(m["vocab"], file, "model.vocab: ");
    refuse_unless(m.contains("merges") && m["merges"].is_array(), file, "model.merges", "missing");
    for (std::size_t i = 0; i < m["merges"].size(); ++i) {
      const json& x = m["merges"][i];
      const std::string key = "model.merges[" + std::to_string(i) + "]";
      std::string a, b;
      if (x.is_string()) {  // "a b" (tokenizers before 0.20)
        const std::string s = x.get<std::string>();
        const auto sp = s.find(' ');
        refuse_unless(sp != std::string::npos && sp > 0 && sp + 1 < s.size() &&
                          s.find(' ', sp + 1) == std::string::npos,
                      file, key, "expected two space-separated symbols, got '" + s + "'");
        a = s.substr(0, sp), b = s.substr(sp + 1);
      } else {  // ["a", "b"]
        refuse_unless(x.is_array() && x.size() == 2 && x[0].is_string() && x[1].is_string(), file, key,
                      "expected \"a b\" or [\"a\", \"b\"]");
        a = x[0].get<std::string>(), b = x[1].get<std::string>();
      }
      h.merges.push_back({a, b, 0, key});
    }
    if (j.contains("added_tokens") && !j["added_tokens"].is_null()) {
      refuse_unless(j["added_tokens"].is_array(), file, "added_tokens", "expected a list");
      for (std::size_t i = 0; i < j["added_tokens"].size(); ++i) {
        const json& a = j["added_tokens"][i];
        const std::string key = "added_tokens[" + std::to_string(i) + "]";
        refuse_unless(a.is_object() && a.contains("id") && a["id"].is_number_integer(), file, key + ".id",
                      "missing");
        h.added.push_back(added_token(a, file, key, a["id"].get<std::int64_t>()));
      }
    }
    return h;
  }

  // tokenizer.json next to vocab.json + merges.txt: transformers 5.x reads the former, 4.x's
  // Python class the latter, so they must say the same.
  static void check_same(const BartBpeTokenizer& t, const HfJson& h, const std::string& file) {
    if (h.vocab.size() != static_cast<std::size_t>(t.model_size_))
      throw DataError(file, 0,
                      "model.vocab has " + std::to_string(h.vocab.size()) + " entries, vocab.json " +
                          std::to_string(t.model_size_));
    for (const auto& [piece, id] : h.vocab)
      if (id < 0 || id >= t.model_size_ || t.pieces_[id] != piece)
        throw DataError(
            file, 0, "model.vocab gives '" + piece + "' id " + std::to_string(id) + ", vocab.json does not");
    bool same = h.merges.size() == t.merges_.size();
    for (std::size_t i = 0; same && i < h.merges.size(); ++i)
      same = h.merges[i].a == t.merges_[i].first && h.merges[i].b == t.merges_[i].second;
    if (!same) throw DataError(file, 0, "model.merges differ from merges.txt");
  }

  // The special-token tables and the added-token matching tables, once the tokens are known.
  static void finish(BartBpeTokenizer& t, const Config& cfg) {
    const std::size_t n = t.pieces_.size();
    t.special_.assign(n, 0);
    t.python_special_.assign(n, 0);
    t.python_literal_.assign(n, 0);
    auto find = [&](const std::string& content) -> const AddedToken* {
      for (const auto& a : t.added_)
        if (a.content == content) return &a;
      return nullptr;
    };
    for (const auto& a : t.added_) {
      t.special_[a.id] = a.special || is_named(a.content);
      t.python_special_[a.id] = is_named(a.content);
    }
    for (const auto& s : cfg.additional) {
      const AddedToken* a = find(s);
      if (!a)
        throw DataError(cfg.file, 0,
                        "additional special token '" + s + "' is not an added token of the tokenizer");
      t.special_[a->id] = t.python_special_[a->id] = 1;
    }
    // 4.46.3's PreTrainedTokenizer._decode: added tokens that are not specials, and additional
    // specials beyond the vocabulary, are decoded as their literal text
    for (const auto& a : t.added_)
      t.python_literal_[a.id] = !t.python_special_[a.id] || a.id >= t.model_size_;
    for (auto& pass : t.match_)
      for (auto& v : pass) v.clear();
    for (std::size_t k = 0; k < t.added_.size(); ++k) {
      const auto& a = t.added_[k];
      t.match_[a.normalized ? 1 : 0][static_cast<unsigned char>(a.content[0])].push_back(static_cast<int>(k));
    }
    for (auto& pass : t.match_)
      for (auto& v : pass)
        std::stable_sort(v.begin(), v.end(), [&](int x, int y) {
          return t.added_[x].content.size() > t.added_[y].content.size();
        });
  }

  // What the added tokens and add_prefix_space change in encoding beyond the five specials with
  // the flags of tokenizer.json (the fingerprint of a directory that tlmoe read before
  // tokenizer.json was read in full stays what it was when this is empty).
  static bool vocab_special(const BartBpeTokenizer& t, const AddedToken& a) {
    return is_named(a.content) && a.id < t.model_size_;
  }
  static std::string encoding_extras(const BartBpeTokenizer& t, bool named_flags) {
    const bool others =
        std::any_of(t.added_.begin(), t.added_.end(), [&](const auto& a) { return !vocab_special(t, a); });
    std::string s;
    for (const auto& a : t.added_) {
      if (!others && !(named_flags && (a.lstrip || a.rstrip))) continue;
      s += std::to_string(a.id) + ':' + a.content + ':' + (a.special ? "S" : "") + (a.lstrip ? "L" : "") +
           (a.rstrip ? "R" : "") + (a.normalized ? "N" : "") + '\0';
    }
    if (t.add_prefix_space_) s += "prefix";
    return s;
  }
};

// ---- loading ----------------------------------------------------------------------------------------

std::unique_ptr<BartBpeTokenizer> BartBpeTokenizer::load(const fs::path& dir) {
  const fs::path vocab = dir / "vocab.json", merges = dir / "merges.txt", tj = dir / "tokenizer.json";
  const Loader::Config cfg = Loader::read_config(dir);
  const bool has_tj = fs::exists(tj);
  std::unique_ptr<BartBpeTokenizer> t(new BartBpeTokenizer());
  std::string vocab_text, merges_text;
  if (!has_tj || (fs::exists(vocab) && fs::exists(merges))) {
    const char* why = "a Hugging Face tokenizer directory needs tokenizer.json or vocab.json and merges.txt";
    vocab_text = read_file(vocab, why);
    merges_text = read_file(merges, why);
    Loader::set_model(*t, Loader::vocab_entries(parse_json(vocab_text, vocab.string()), vocab.string(), ""),
                      vocab.string(), "", Loader::merges_txt(merges_text, merges.string()), merges.string());
    t->vocab_files_ = true;
  }
  Loader::HfJson h;
  if (has_tj) {
    h = Loader::read_hf_json(tj);
    if (t->vocab_files_)
      Loader::check_same(*t, h, tj.string());
    else
      Loader::set_model(*t, h.vocab, tj.string(), "model.vocab: ", h.merges, tj.string());
  }
  Loader::add_named(*t);
  const auto& added = has_tj ? h.added : cfg.added;
  const std::string added_file = has_tj ? tj.string() : cfg.file;
  for (std::size_t i = 0; i < added.size(); ++i)
    Loader::add_token(*t, added[i], added_file,
                      has_tj ? "added_tokens[" + std::to_string(i) + "]"
                             : "added_tokens_decoder." + std::to_string(added[i].id));
  t->add_prefix_space_ = cfg.prefix.value_or(false);
  if (has_tj && h.prefix != t->add_prefix_space_)
    throw DataError(
        tj.string(), 0,
        std::string("pre_tokenizer.add_prefix_space is ") + (h.prefix ? "true" : "false") +
            " but tokenizer_config.json's add_prefix_space is " +
            (t->add_prefix_space_ ? "true" : "false or absent") +
            " (transformers' BartTokenizer follows tokenizer_config.json, AutoTokenizer may follow "
            "tokenizer.json: make them agree)");
  t->config_clean_ = cfg.clean.value_or(true);  // the 4.x releases before 4.45
  Loader::finish(*t, cfg);
  if (t->vocab_files_) {
    // the fingerprint tlmoe has always given this directory, extended only where the encoding changed
    std::string fp = "bart-bpe:" + io::fnv1a64_hex(vocab_text + '\0' + merges_text +
                                                   (cfg.clean.value_or(true) ? '1' : '0'));
    std::string flags;
    for (const auto& a : h.added)  // the flags of the specials of vocab.json, as tlmoe always read them
      if (Loader::vocab_special(*t, a)) flags += a.content + (a.lstrip ? "L" : "") + (a.rstrip ? "R" : "");
    if (!flags.empty()) fp = "bart-bpe:" + io::fnv1a64_hex(fp + flags);
    const std::string extras = Loader::encoding_extras(*t, /*named_flags=*/!has_tj);
    t->fingerprint_ = extras.empty() ? fp : "bart-bpe:" + io::fnv1a64_hex(fp + '\0' + extras);
  } else {
    std::string all = "tokenizer.json";
    for (std::int32_t id = 0; id < t->model_size_; ++id) all += '\0' + t->pieces_[id];
    for (const auto& [a, b] : t->merges_) all += '\0' + a + ' ' + b;
    t->fingerprint_ = "bart-bpe:" + io::fnv1a64_hex(all + '\0' + Loader::encoding_extras(*t, true));
  }
  return t;
}

std::unique_ptr<BartBpeTokenizer> BartBpeTokenizer::from_strings(const std::string& vocab_json,
                                                                 const std::string& merges_txt,
                                                                 const std::string& source,
                                                                 bool clean_up_spaces) {
  std::unique_ptr<BartBpeTokenizer> t(new BartBpeTokenizer());
  const std::string vsrc = (fs::path(source) / "vocab.json").string(),
                    msrc = (fs::path(source) / "merges.txt").string();
  Loader::set_model(*t, Loader::vocab_entries(parse_json(vocab_json, vsrc), vsrc, ""), vsrc, "",
                    Loader::merges_txt(merges_txt, msrc), msrc);
  t->vocab_files_ = true;
  Loader::add_named(*t);
  t->config_clean_ = clean_up_spaces;
  Loader::finish(*t, Loader::Config{});
  t->fingerprint_ =
      "bart-bpe:" + io::fnv1a64_hex(vocab_json + '\0' + merges_txt + (clean_up_spaces ? '1' : '0'));
  return t;
}

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
      if (a == 's' || a == 't' || a == 'm' || a == 'd')
        end = i + 2;
      else if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l'))
        end = i + 3;
    }
    if (end == i) {
      const std::size_t s = c[i] == ' ' ? i + 1 : i;  // the optional leading space
      if (s < n && is_letter(c[s]))
        end = run(s, is_letter);  //  ?\p{L}+
      else if (s < n && is_number(c[s]))
        end = run(s, is_number);  //  ?\p{N}+
      else if (s < n && other(c[s]))
        end = run(s, other);  //  ?[^\s\p{L}\p{N}]+
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

// Text between added tokens: the prefix space, the GPT-2 regex, BPE per piece.
void BartBpeTokenizer::encode_plain(std::string_view text, std::vector<int32_t>& ids) const {
  if (text.empty()) return;
  std::string prefixed;
  if (add_prefix_space_ && text.front() != ' ') {  // tokenizers' ByteLevel checks for ' ' only
    prefixed = " ";
    prefixed.append(text);
    text = prefixed;
  }
  for (const auto& piece : pretokenize(text)) bpe(piece, ids);
}

// One pass of tokenizers' AddedVocabulary over `text` (pass 0: the tokens that are not
// normalized, pass 1: the normalized ones, in the gaps of pass 0), leftmost-longest as its
// Aho-Corasick automaton; lstrip / rstrip widen a match over the whitespace around it (not
// before the end of the previous match).
void BartBpeTokenizer::encode_split(std::string_view text, int pass, std::vector<int32_t>& ids) const {
  if (pass == 2) return encode_plain(text, ids);
  const auto& table = match_[pass];
  std::size_t done = 0;  // where the text not yet consumed starts
  std::size_t i = 0;
  while (i < text.size()) {
    const AddedToken* hit = nullptr;
    for (int k : table[static_cast<unsigned char>(text[i])])
      if (text.compare(i, added_[k].content.size(), added_[k].content) == 0) {
        hit = &added_[k];
        break;
      }
    if (!hit) {
      ++i;
      continue;
    }
    std::size_t start = i, stop = i + hit->content.size();
    if (hit->lstrip) {
      std::size_t b = start;
      while (b > done) {
        std::size_t p = b - 1;
        while (p > done && (static_cast<unsigned char>(text[p]) & 0xC0) == 0x80) --p;
        char32_t c;
        if (next_code_point(text, p, c) != b - p || !is_space(c)) break;
        b = p;
      }
      start = b;
    }
    if (hit->rstrip) {
      char32_t c;
      for (std::size_t len; stop < text.size() && (len = next_code_point(text, stop, c), is_space(c));)
        stop += len;
    }
    if (done < start) encode_split(text.substr(done, start - done), pass + 1, ids);
    ids.push_back(hit->id);
    i += hit->content.size();
    done = std::max(done, stop);
  }
  if (done < text.size()) encode_split(text.substr(done), pass + 1, ids);
}

std::vector<int32_t> BartBpeTokenizer::encode(std::string_view text) const {
  std::vector<int32_t> ids;
  encode_split(text, 0, ids);
  return ids;
}

void BartBpeTokenizer::check_id(int32_t id) const {
  if (id < 0 || id >= vocab_size())
    throw std::out_of_range("token id " + std::to_string(id) + " outside [0, " +
                            std::to_string(vocab_size()) + ")");
}

std::string BartBpeTokenizer::id_to_piece(int32_t id) const {
  check_id(id);
  return pieces_[id];
}

bool BartBpeTokenizer::is_special(int32_t id) const {
  if (id < 0 || id >= vocab_size()) return false;
  return python_decode() ? python_special_[id] : special_[id];
}

bool BartBpeTokenizer::clean_up_spaces() const {
  if (clean_override_) return *clean_override_;
  return semantics_ == HfSemantics::legacy && config_clean_;
}

// tokenizers' decode with the ByteLevel decoder: all kept tokens' bytes, then UTF-8 with U+FFFD.
std::string BartBpeTokenizer::decode_bytes(const std::vector<int32_t>& ids, bool skip_special) const {
  std::string raw;
  for (int32_t id : ids)
    if (!(skip_special && special_[id])) raw += bytes_[id];
  return utf8_replace(raw);
}

// transformers 4.46.3's PreTrainedTokenizer._decode for the Python BartTokenizer: runs of tokens
// decoded as bytes, literal added tokens between them, all joined with single spaces.
std::string BartBpeTokenizer::decode_python(const std::vector<int32_t>& ids, bool skip_special) const {
  std::vector<std::string> parts;
  std::string run;
  bool in_run = false;
  for (int32_t id : ids) {
    if (skip_special && python_special_[id]) continue;
    if (python_literal_[id]) {
      if (in_run) {
        std::string s = utf8_replace(run);
        if (!s.empty()) parts.push_back(std::move(s));
        run.clear();
        in_run = false;
      }
      parts.push_back(pieces_[id]);
    } else {
      run += bytes_[id];
      in_run = true;
    }
  }
  if (in_run) parts.push_back(utf8_replace(run));
  std::string out;
  for (std::size_t k = 0; k < parts.size(); ++k) out += (k ? " " : "") + parts[k];
  return out;
}

std::string BartBpeTokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  for (int32_t id : ids) check_id(id);
  std::string s = python_decode() ? decode_python(ids, skip_special) : decode_bytes(ids, skip_special);
  return clean_up_spaces() ? clean_up_tokenization(std::move(s)) : s;
}

// ---- writing the Hugging Face files -------------------------------------------------------------------

namespace {

ojson token_dict(const std::string& content, bool lstrip, bool rstrip, bool normalized) {
  ojson d;
  d["content"] = content;
  d["lstrip"] = lstrip;
  d["normalized"] = normalized;
  d["rstrip"] = rstrip;
  d["single_word"] = false;
  return d;
}

}  // namespace

void BartBpeTokenizer::save_hf_files(const fs::path& dir, std::int64_t model_max_length) const {
  ojson vocab = ojson::object();
  for (std::int32_t id = 0; id < model_size_; ++id) vocab[pieces_[id]] = id;
  std::string merges = "#version: 0.2\n";
  ojson merge_list = ojson::array();
  for (const auto& [a, b] : merges_) {
    merges += a + ' ' + b + '\n';
    merge_list.push_back(a + ' ' + b);  // the format every tokenizers release reads
  }
  std::vector<AddedToken> added = added_;
  std::sort(added.begin(), added.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
  ojson added_list = ojson::array(), decoder = ojson::object(), additional = ojson::array();
  const AddedToken* mask = nullptr;
  for (const auto& a : added) {
    ojson d;
    d["id"] = a.id;
    d["content"] = a.content;
    d["single_word"] = false;
    d["lstrip"] = a.lstrip;
    d["rstrip"] = a.rstrip;
    d["normalized"] = a.normalized;
    d["special"] = static_cast<bool>(special_[a.id]);
    added_list.push_back(d);
    ojson e = token_dict(a.content, a.lstrip, a.rstrip, a.normalized);
    e["special"] = static_cast<bool>(special_[a.id]);
    decoder[std::to_string(a.id)] = e;
    // the Python class skips only the named specials and these: every special added token
    if (special_[a.id] && !is_named(a.content)) additional.push_back(a.content);
    if (a.content == "<mask>") mask = &a;
  }
  const ojson byte_level = {{"type", "ByteLevel"},
                            {"add_prefix_space", add_prefix_space_},
                            {"trim_offsets", true},
                            {"use_regex", true}};
  ojson tj;
  tj["version"] = "1.0";
  tj["truncation"] = nullptr;
  tj["padding"] = nullptr;
  tj["added_tokens"] = added_list;
  tj["normalizer"] = nullptr;
  tj["pre_tokenizer"] = byte_level;
  tj["post_processor"] = {{"type", "RobertaProcessing"},
                          {"sep", {"</s>", eos_id()}},
                          {"cls", {"<s>", bos_id()}},
                          {"trim_offsets", true},
                          {"add_prefix_space", add_prefix_space_}};
  tj["decoder"] = {
      {"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}};
  tj["model"] = {{"type", "BPE"},
                 {"dropout", nullptr},
                 {"unk_token", nullptr},
                 {"continuing_subword_prefix", ""},
                 {"end_of_word_suffix", ""},
                 {"fuse_unk", false},
                 {"byte_fallback", false},
                 {"ignore_merges", false},
                 {"vocab", vocab},
                 {"merges", merge_list}};

  ojson stm;
  static const std::pair<const char*, const char*> kRoles[] = {{"bos_token", "<s>"},   {"eos_token", "</s>"},
                                                               {"unk_token", "<unk>"}, {"sep_token", "</s>"},
                                                               {"pad_token", "<pad>"}, {"cls_token", "<s>"}};
  for (const auto& [key, value] : kRoles) stm[key] = value;
  // <mask> as an AddedToken, so that 4.x does not give it its default lstrip = true
  stm["mask_token"] =
      mask ? token_dict(mask->content, mask->lstrip, mask->rstrip, mask->normalized) : ojson();
  stm["additional_special_tokens"] = additional;

  ojson cfg;
  cfg["add_prefix_space"] = add_prefix_space_;
  cfg["added_tokens_decoder"] = decoder;
  for (const auto& [key, value] : stm.items()) cfg[key] = value;
  if (mask) {
    ojson m = {{"__type", "AddedToken"}};
    m.update(token_dict(mask->content, mask->lstrip, mask->rstrip, mask->normalized));
    cfg["mask_token"] = m;  // what 4.x's tokenizer_config.json reader turns into an AddedToken
  }
  cfg["clean_up_tokenization_spaces"] = clean_override_.value_or(config_clean_);
  cfg["errors"] = "replace";
  cfg["model_max_length"] = model_max_length;
  cfg["tokenizer_class"] = "BartTokenizer";
  cfg["trim_offsets"] = true;

  io::write_file_atomic(dir / "vocab.json", vocab.dump(2) + "\n");
  io::write_file_atomic(dir / "merges.txt", merges);
  io::write_file_atomic(dir / "tokenizer.json", tj.dump(2) + "\n");
  io::write_file_atomic(dir / "tokenizer_config.json", cfg.dump(2) + "\n");
  io::write_file_atomic(dir / "special_tokens_map.json", stm.dump(2) + "\n");
}

}  // namespace tlmoe::text
