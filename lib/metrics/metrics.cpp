#include "metrics/metrics.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <map>
#include <set>
#include <stdexcept>
#include <system_error>

#include "common/error.h"

namespace tlmoe::metrics {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// ---- UTF-8 and Python's character classes ------------------------------------------------------

struct CodePoint {
  char32_t cp = 0;
  std::size_t len = 1;
  bool valid = false;  // false: an invalid byte, kept as is (len 1)
};

CodePoint decode_utf8(std::string_view s, std::size_t i) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  if (b0 < 0x80) return {b0, 1, true};
  std::size_t len = 0;
  char32_t cp = 0;
  char32_t min = 0;
  if ((b0 & 0xE0) == 0xC0) {
    len = 2, cp = b0 & 0x1F, min = 0x80;
  } else if ((b0 & 0xF0) == 0xE0) {
    len = 3, cp = b0 & 0x0F, min = 0x800;
  } else if ((b0 & 0xF8) == 0xF0) {
    len = 4, cp = b0 & 0x07, min = 0x10000;
  } else {
    return {b0, 1, false};
  }
  if (i + len > s.size()) return {b0, 1, false};
  for (std::size_t k = 1; k < len; ++k) {
    const auto b = static_cast<unsigned char>(s[i + k]);
    if ((b & 0xC0) != 0x80) return {b0, 1, false};
    cp = (cp << 6) | (b & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return {b0, 1, false};
  return {cp, len, true};
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// Python's str.isspace() (what strip() and split() use).
bool is_py_space(const CodePoint& c) {
  if (!c.valid) return false;
  const char32_t cp = c.cp;
  return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) || cp == 0x85 || cp == 0xA0 ||
         cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
         cp == 0x205F || cp == 0x3000;
}

// Python's string.punctuation: !"#$%&'()*+,-./:;<=>?@[\]^_`{|}~
bool is_py_punct(char ch) {
  const auto c = static_cast<unsigned char>(ch);
  return (c >= 0x21 && c <= 0x2F) || (c >= 0x3A && c <= 0x40) || (c >= 0x5B && c <= 0x60) ||
         (c >= 0x7B && c <= 0x7E);
}

// Non-ASCII code points that are not word characters for the regex \b (punctuation, symbols,
// marks, spaces). Approximation of Python's Unicode alphanumeric test; see metrics.h.
constexpr std::pair<char32_t, char32_t> kNonWordRanges[] = {
    {0x80, 0xA9},     {0xAB, 0xB1},     {0xB4, 0xB4},     {0xB6, 0xB8},       {0xBB, 0xBB},
    {0xBF, 0xBF},     {0xD7, 0xD7},     {0xF7, 0xF7},     {0x2C2, 0x2C5},     {0x2D2, 0x2DF},
    {0x2E5, 0x2EB},   {0x2ED, 0x2ED},   {0x2EF, 0x36F},   {0x375, 0x375},     {0x37E, 0x37E},
    {0x384, 0x385},   {0x387, 0x387},   {0x1680, 0x1680}, {0x2000, 0x206F},   {0x20A0, 0x20FF},
    {0x2190, 0x245F}, {0x249C, 0x24E9}, {0x2500, 0x2775}, {0x2794, 0x2BFF},   {0x2E00, 0x2E7F},
    {0x3000, 0x3004}, {0x3008, 0x3020}, {0x3030, 0x3030}, {0x3036, 0x3037},   {0x303D, 0x303F},
    {0x30FB, 0x30FB}, {0xFE00, 0xFE6F}, {0xFEFF, 0xFEFF}, {0xFF01, 0xFF0F},   {0xFF1A, 0xFF20},
    {0xFF3B, 0xFF40}, {0xFF5B, 0xFF65}, {0xFFE0, 0xFFFF}, {0x1F000, 0x1FAFF},
};

bool is_word_char(const CodePoint& c) {
  if (!c.valid) return false;
  const char32_t cp = c.cp;
  if (cp < 0x80) {
    return (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') || (cp >= '0' && cp <= '9') || cp == '_';
  }
  for (const auto& [lo, hi] : kNonWordRanges)
    if (cp >= lo && cp <= hi) return false;
  return true;
}

// Simple lower-case mapping for the covered blocks (U+0130 and final sigma are handled by the caller).
char32_t lower_simple(char32_t c) {
  if (c < 0x80) return (c >= 'A' && c <= 'Z') ? c + 32 : c;
  if (c >= 0xC0 && c <= 0xDE && c != 0xD7) return c + 32;
  if (c >= 0x100 && c <= 0x137) return (c % 2 == 0) ? c + 1 : c;
  if (c >= 0x139 && c <= 0x148) return (c % 2 == 1) ? c + 1 : c;
  if (c >= 0x14A && c <= 0x177) return (c % 2 == 0) ? c + 1 : c;
  if (c == 0x178) return 0xFF;
  if (c >= 0x179 && c <= 0x17E) return (c % 2 == 1) ? c + 1 : c;
  if (c == 0x386) return 0x3AC;
  if (c >= 0x388 && c <= 0x38A) return c + 37;
  if (c == 0x38C) return 0x3CC;
  if (c == 0x38E || c == 0x38F) return c + 63;
  if (c >= 0x391 && c <= 0x3AB && c != 0x3A2) return c + 32;
  if (c >= 0x400 && c <= 0x40F) return c + 80;
  if (c >= 0x410 && c <= 0x42F) return c + 32;
  return c;
}

// A cased letter of the covered blocks (for the final-sigma rule).
bool is_cased_letter(const CodePoint& c) {
  if (!c.valid) return false;
  const char32_t cp = c.cp;
  return (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') ||
         (cp >= 0xC0 && cp <= 0x24F && cp != 0xD7 && cp != 0xF7) ||
         (cp >= 0x386 && cp <= 0x3FF && cp != 0x387) || (cp >= 0x400 && cp <= 0x4FF);
}

// Python's str.split() with no argument: runs of non-whitespace.
std::vector<std::string_view> py_split(std::string_view s) {
  std::vector<std::string_view> out;
  std::size_t start = std::string_view::npos;
  for (std::size_t i = 0; i < s.size();) {
    const CodePoint c = decode_utf8(s, i);
    if (is_py_space(c)) {
      if (start != std::string_view::npos) out.push_back(s.substr(start, i - start));
      start = std::string_view::npos;
    } else if (start == std::string_view::npos) {
      start = i;
    }
    i += c.len;
  }
  if (start != std::string_view::npos) out.push_back(s.substr(start));
  return out;
}

std::string join_spaces(const std::vector<std::string_view>& words) {
  std::string out;
  for (std::size_t i = 0; i < words.size(); ++i) {
    if (i > 0) out += ' ';
    out.append(words[i]);
  }
  return out;
}

std::string remove_punctuation(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char ch : s)
    if (!is_py_punct(ch)) out += ch;
  return out;
}

// re.sub(r'\b(a|an|the)\b', ' ', s): a match is exactly a maximal run of word characters equal to
// "a", "an" or "the".
std::string remove_articles(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  std::size_t i = 0;
  while (i < s.size()) {
    CodePoint c = decode_utf8(s, i);
    if (!is_word_char(c)) {
      out.append(s.substr(i, c.len));
      i += c.len;
      continue;
    }
    const std::size_t start = i;
    while (i < s.size()) {
      c = decode_utf8(s, i);
      if (!is_word_char(c)) break;
      i += c.len;
    }
    const std::string_view word = s.substr(start, i - start);
    if (word == "a" || word == "an" || word == "the") {
      out += ' ';
    } else {
      out.append(word);
    }
  }
  return out;
}

double max_over_golds(const std::vector<std::string>& golds, const auto& score) {
  double best = 0.0;
  for (std::size_t g = 0; g < golds.size(); ++g) {
    const double v = score(golds[g]);
    if (g == 0 || v > best) best = v;
  }
  return best;
}

// ---- ROUGE-L -----------------------------------------------------------------------------------

using Sentence = std::vector<std::string>;

// pltrdy rouge: [" ".join(p.split()) for p in s.split(".") if len(p) > 0], then each sentence
// split on " " (an all-space piece becomes the one word "").
std::vector<Sentence> rouge_sentences(std::string_view s) {
  std::vector<Sentence> out;
  std::size_t start = 0;
  while (start <= s.size()) {
    std::size_t dot = s.find('.', start);
    if (dot == std::string_view::npos) dot = s.size();
    const std::string_view piece = s.substr(start, dot - start);
    if (!piece.empty()) {
      Sentence words;
      for (const auto w : py_split(piece)) words.emplace_back(w);
      if (words.empty()) words.emplace_back();
      out.push_back(std::move(words));
    }
    start = dot + 1;
  }
  return out;
}

// The words of one LCS of ref and hyp, reconstructed as pltrdy rouge's _recon_lcs does (the tie
// rule decides which words when several LCS exist; it matters for the set variant).
std::vector<std::string> recon_lcs(const Sentence& ref, const Sentence& hyp) {
  const std::size_t n = ref.size(), m = hyp.size();
  std::vector<std::size_t> table((n + 1) * (m + 1), 0);  // table[i*(m+1)+j] = LCS(ref[:i], hyp[:j])
  auto at = [&](std::size_t i, std::size_t j) -> std::size_t& { return table[i * (m + 1) + j]; };
  for (std::size_t i = 1; i <= n; ++i)
    for (std::size_t j = 1; j <= m; ++j)
      at(i, j) = ref[i - 1] == hyp[j - 1] ? at(i - 1, j - 1) + 1 : std::max(at(i - 1, j), at(i, j - 1));
  std::vector<std::string> words;
  std::size_t i = n, j = m;
  while (i > 0 && j > 0) {
    if (ref[i - 1] == hyp[j - 1]) {
      words.push_back(ref[i - 1]);
      --i, --j;
    } else if (at(i - 1, j) > at(i, j - 1)) {
      --i;
    } else {
      --j;
    }
  }
  return words;
}

std::size_t word_count(const std::vector<Sentence>& sentences, RougeVersion version) {
  if (version == RougeVersion::kV1_0_0) {
    std::size_t n = 0;
    for (const auto& s : sentences) n += s.size();
    return n;
  }
  std::set<std::string> distinct;
  for (const auto& s : sentences) distinct.insert(s.begin(), s.end());
  return distinct.size();
}

// ---- the registry ------------------------------------------------------------------------------

double mean(const std::vector<double>& v) {
  double sum = 0.0;
  for (double x : v) sum += x;
  return sum / static_cast<double>(v.size());
}

std::vector<std::string> first_golds(const Golds& golds) {
  std::vector<std::string> out;
  out.reserve(golds.size());
  for (const auto& g : golds) out.push_back(g.front());
  return out;
}

MetricResult classification_f1(const std::vector<std::string>& preds, const Golds& golds,
                               const MetricOptions&) {
  return {macro_f1(first_golds(golds), preds), preds.size(), 0};
}

MetricResult matthews_correlation(const std::vector<std::string>& preds, const Golds& golds,
                                  const MetricOptions&) {
  std::vector<int> t, p;
  for (std::size_t i = 0; i < preds.size(); ++i) {
    t.push_back(golds[i].front() == "acceptable" ? 1 : 0);
    p.push_back(preds[i] == "acceptable" ? 1 : 0);
  }
  return {matthews_corrcoef(t, p), preds.size(), 0};
}

MetricResult pearson_correlation(const std::vector<std::string>& preds, const Golds& golds,
                                 const MetricOptions& options) {
  MetricResult r;
  r.num_examples = preds.size();
  std::vector<double> x, y;
  for (std::size_t i = 0; i < preds.size(); ++i) {
    const auto gold = parse_python_float(golds[i].front());
    if (!gold)
      throw InputError("Pearson-Correlation: the gold answer of example " + std::to_string(i) +
                       " is not a number: '" + golds[i].front() + "'");
    const auto pred = parse_python_float(preds[i]);
    if (!pred) ++r.unparsable;
    x.push_back(pred ? *pred : options.pearson_fallback.value_or(kNaN));
    y.push_back(*gold);
  }
  r.value = pearson_r(y, x);  // scipy pearsonr(golds, predictions)
  return r;
}

using ExampleFn = double (*)(std::string_view pred, const std::vector<std::string>& golds,
                             const MetricOptions& options);
using CorpusFn = MetricResult (*)(const std::vector<std::string>& preds, const Golds& golds,
                                  const MetricOptions& options);

struct MetricDef {
  std::string name;
  ExampleFn example = nullptr;  // set for means of per-example scores
  CorpusFn corpus = nullptr;    // set for corpus-level metrics
};

const std::vector<MetricDef>& registry() {
  static const std::vector<MetricDef> kRegistry = [] {
    std::vector<MetricDef> r;
    r.push_back({"EM",
                 [](std::string_view p, const std::vector<std::string>& g, const MetricOptions&) {
                   return exact_match(p, g);
                 },
                 nullptr});
    r.push_back({"ACC",
                 [](std::string_view p, const std::vector<std::string>& g, const MetricOptions&) {
                   return accuracy(p, g);
                 },
                 nullptr});
    r.push_back({"QA-F1",
                 [](std::string_view p, const std::vector<std::string>& g, const MetricOptions&) {
                   return qa_f1(p, g);
                 },
                 nullptr});
    r.push_back({"Classification-F1", nullptr, &classification_f1});
    r.push_back({"Matthew-Correlation", nullptr, &matthews_correlation});
    r.push_back({"Pearson-Correlation", nullptr, &pearson_correlation});
    r.push_back({"Rouge-L",
                 [](std::string_view p, const std::vector<std::string>& g, const MetricOptions& o) {
                   return rouge_l_over_golds(p, g, o.rouge_version);
                 },
                 nullptr});
    return r;
  }();
  return kRegistry;
}

const MetricDef* find_metric(std::string_view name) {
  for (const auto& def : registry())
    if (def.name == name) return &def;
  return nullptr;
}

const MetricDef& metric_or_throw(std::string_view name) {
  if (const MetricDef* def = find_metric(name)) return *def;
  std::string valid;
  for (const auto& n : metric_names()) valid += (valid.empty() ? "" : ", ") + n;
  throw std::invalid_argument("unknown metric '" + std::string(name) + "' (expected one of " + valid + ")");
}

void check_inputs(std::string_view name, const std::vector<std::string>& predictions, const Golds& golds) {
  const std::string what = "metric " + std::string(name) + ": ";
  if (predictions.size() != golds.size())
    throw std::invalid_argument(what + std::to_string(predictions.size()) + " predictions but " +
                                std::to_string(golds.size()) + " gold lists");
  if (predictions.empty()) throw std::invalid_argument(what + "no examples");
  for (std::size_t i = 0; i < golds.size(); ++i)
    if (golds[i].empty())
      throw std::invalid_argument(what + "example " + std::to_string(i) + " has no gold answer");
}

std::vector<std::string> stripped(const std::vector<std::string>& predictions) {
  std::vector<std::string> out;
  out.reserve(predictions.size());
  for (const auto& p : predictions) out.push_back(py_strip(p));
  return out;
}

std::vector<double> example_scores(const MetricDef& def, const std::vector<std::string>& preds,
                                   const Golds& golds, const MetricOptions& options) {
  std::vector<double> scores;
  scores.reserve(preds.size());
  for (std::size_t i = 0; i < preds.size(); ++i) scores.push_back(def.example(preds[i], golds[i], options));
  return scores;
}

}  // namespace

// ---- public API --------------------------------------------------------------------------------

RougeVersion parse_rouge_version(std::string_view s) {
  if (s == "1.0.0") return RougeVersion::kV1_0_0;
  if (s == "1.0.1") return RougeVersion::kV1_0_1;
  throw std::invalid_argument("unknown rouge version '" + std::string(s) +
                              "' (expected one of 1.0.0, 1.0.1)");
}

std::string_view to_string(RougeVersion v) { return v == RougeVersion::kV1_0_0 ? "1.0.0" : "1.0.1"; }

const std::vector<std::string>& metric_names() {
  static const std::vector<std::string> kNames = [] {
    std::vector<std::string> names;
    for (const auto& def : registry()) names.push_back(def.name);
    return names;
  }();
  return kNames;
}

bool is_metric(std::string_view name) { return find_metric(name) != nullptr; }

bool has_per_example_scores(std::string_view name) { return metric_or_throw(name).example != nullptr; }

MetricResult compute_metric(std::string_view name, const std::vector<std::string>& predictions,
                            const Golds& golds, const MetricOptions& options) {
  const MetricDef& def = metric_or_throw(name);
  check_inputs(name, predictions, golds);
  const auto preds = stripped(predictions);
  if (def.corpus) return def.corpus(preds, golds, options);
  return {mean(example_scores(def, preds, golds, options)), preds.size(), 0};
}

std::vector<double> per_example_scores(std::string_view name, const std::vector<std::string>& predictions,
                                       const Golds& golds, const MetricOptions& options) {
  const MetricDef& def = metric_or_throw(name);
  if (!def.example)
    throw std::invalid_argument("metric " + std::string(name) +
                                " is corpus-level: it has no per-example scores");
  check_inputs(name, predictions, golds);
  return example_scores(def, stripped(predictions), golds, options);
}

std::string py_strip(std::string_view s) {
  std::size_t begin = s.size(), end = 0;
  for (std::size_t i = 0; i < s.size();) {
    const CodePoint c = decode_utf8(s, i);
    if (!is_py_space(c)) {
      if (begin == s.size()) begin = i;
      end = i + c.len;
    }
    i += c.len;
  }
  return begin < end ? std::string(s.substr(begin, end - begin)) : std::string();
}

std::string py_lower(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  CodePoint prev;  // invalid: "no previous character"
  for (std::size_t i = 0; i < s.size();) {
    const CodePoint c = decode_utf8(s, i);
    if (!c.valid) {
      out += s[i];
    } else if (c.cp == 0x130) {  // İ -> i + COMBINING DOT ABOVE
      out += 'i';
      append_utf8(out, 0x307);
    } else if (c.cp == 0x3A3) {  // Σ: final sigma after a cased letter and not before one
      const bool next_cased = i + c.len < s.size() && is_cased_letter(decode_utf8(s, i + c.len));
      append_utf8(out, is_cased_letter(prev) && !next_cased ? 0x3C2 : 0x3C3);
    } else {
      append_utf8(out, lower_simple(c.cp));
    }
    prev = c;
    i += c.len;
  }
  return out;
}

std::string normalize_answer(std::string_view s) {
  return join_spaces(py_split(remove_articles(remove_punctuation(py_lower(s)))));
}

double exact_match(std::string_view pred, const std::vector<std::string>& golds) {
  const std::string p = normalize_answer(pred);
  return max_over_golds(golds, [&](const std::string& g) { return p == normalize_answer(g) ? 1.0 : 0.0; });
}

double accuracy(std::string_view pred, const std::vector<std::string>& golds) {
  const std::string p = py_lower(pred);
  return max_over_golds(golds, [&](const std::string& g) { return p == py_lower(g) ? 1.0 : 0.0; });
}

double qa_f1(std::string_view pred, const std::vector<std::string>& golds) {
  const std::string p_norm = normalize_answer(pred);
  const auto p_tokens = py_split(p_norm);
  std::map<std::string_view, std::size_t> p_counts;
  for (const auto t : p_tokens) ++p_counts[t];
  return max_over_golds(golds, [&](const std::string& gold) {
    const std::string g_norm = normalize_answer(gold);
    const auto g_tokens = py_split(g_norm);
    std::map<std::string_view, std::size_t> g_counts;
    for (const auto t : g_tokens) ++g_counts[t];
    std::size_t same = 0;
    for (const auto& [tok, count] : p_counts) {
      const auto it = g_counts.find(tok);
      if (it != g_counts.end()) same += std::min(count, it->second);
    }
    if (same == 0) return 0.0;
    const double precision = static_cast<double>(same) / static_cast<double>(p_tokens.size());
    const double recall = static_cast<double>(same) / static_cast<double>(g_tokens.size());
    return 2.0 * precision * recall / (precision + recall);
  });
}

double rouge_l(std::string_view hyp, std::string_view ref, RougeVersion version) {
  const auto hyp_s = rouge_sentences(hyp);
  const auto ref_s = rouge_sentences(ref);
  if (hyp_s.empty() || ref_s.empty()) return 0.0;
  const double m = static_cast<double>(word_count(ref_s, version));
  const double n = static_cast<double>(word_count(hyp_s, version));
  std::size_t llcs = 0;
  std::set<std::string> union_set;  // kV1_0_1: the running union over all reference sentences
  for (const auto& r : ref_s) {
    for (const auto& h : hyp_s) {
      const auto words = recon_lcs(r, h);
      if (version == RougeVersion::kV1_0_0) {
        llcs += words.size();
      } else {
        union_set.insert(words.begin(), words.end());
      }
    }
  }
  if (version == RougeVersion::kV1_0_1) llcs = union_set.size();
  const double r_lcs = static_cast<double>(llcs) / m;
  const double p_lcs = static_cast<double>(llcs) / n;
  return 2.0 * ((p_lcs * r_lcs) / (p_lcs + r_lcs + 1e-8));
}

double rouge_l_over_golds(std::string_view pred, const std::vector<std::string>& golds,
                          RougeVersion version) {
  if (std::all_of(pred.begin(), pred.end(), is_py_punct)) return 0.0;
  return max_over_golds(golds, [&](const std::string& g) { return rouge_l(pred, g, version); });
}

double macro_f1(const std::vector<std::string>& y_true, const std::vector<std::string>& y_pred) {
  if (y_true.size() != y_pred.size())
    throw std::invalid_argument("macro_f1: " + std::to_string(y_true.size()) + " true labels but " +
                                std::to_string(y_pred.size()) + " predictions");
  if (y_true.empty()) throw std::invalid_argument("macro_f1: no examples");
  struct Counts {
    std::size_t tp = 0, fp = 0, fn = 0;
  };
  std::map<std::string, Counts> labels;  // the union of labels in y_true and y_pred
  for (std::size_t i = 0; i < y_true.size(); ++i) {
    if (y_true[i] == y_pred[i]) {
      ++labels[y_true[i]].tp;
    } else {
      ++labels[y_true[i]].fn;
      ++labels[y_pred[i]].fp;
    }
  }
  double sum = 0.0;
  for (const auto& [label, c] : labels) {
    const std::size_t denom = 2 * c.tp + c.fp + c.fn;  // > 0: the label occurs somewhere
    sum += static_cast<double>(2 * c.tp) / static_cast<double>(denom);
  }
  return sum / static_cast<double>(labels.size());
}

double matthews_corrcoef(const std::vector<int>& y_true, const std::vector<int>& y_pred) {
  if (y_true.size() != y_pred.size())
    throw std::invalid_argument("matthews_corrcoef: " + std::to_string(y_true.size()) + " true labels but " +
                                std::to_string(y_pred.size()) + " predictions");
  if (y_true.empty()) throw std::invalid_argument("matthews_corrcoef: no examples");
  double t[2] = {0, 0}, p[2] = {0, 0}, correct = 0;
  for (std::size_t i = 0; i < y_true.size(); ++i) {
    if ((y_true[i] != 0 && y_true[i] != 1) || (y_pred[i] != 0 && y_pred[i] != 1))
      throw std::invalid_argument("matthews_corrcoef: labels must be 0 or 1");
    ++t[y_true[i]];
    ++p[y_pred[i]];
    if (y_true[i] == y_pred[i]) ++correct;
  }
  const double s = static_cast<double>(y_true.size());
  const double cov_ytyp = correct * s - (t[0] * p[0] + t[1] * p[1]);
  const double cov_ypyp = s * s - (p[0] * p[0] + p[1] * p[1]);
  const double cov_ytyt = s * s - (t[0] * t[0] + t[1] * t[1]);
  if (cov_ypyp * cov_ytyt == 0.0) return 0.0;
  return cov_ytyp / std::sqrt(cov_ytyt * cov_ypyp);
}

std::optional<double> parse_python_float(std::string_view text) {
  const std::string s = py_strip(text);
  std::size_t i = 0;
  bool negative = false;
  if (i < s.size() && (s[i] == '+' || s[i] == '-')) negative = s[i++] == '-';
  std::string rest = s.substr(i);
  for (char& ch : rest) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  if (rest == "inf" || rest == "infinity")
    return negative ? -std::numeric_limits<double>::infinity() : std::numeric_limits<double>::infinity();
  if (rest == "nan") return negative ? -kNaN : kNaN;

  auto is_digit = [&](std::size_t k) { return k < s.size() && s[k] >= '0' && s[k] <= '9'; };
  // digit ("_"? digit)*, appended to out without the underscores.
  auto read_digits = [&](std::string& out) {
    while (i < s.size()) {
      if (is_digit(i)) {
        out += s[i++];
      } else if (s[i] == '_' && !out.empty() && is_digit(i - 1) && is_digit(i + 1)) {
        ++i;
      } else {
        break;
      }
    }
  };
  std::string int_digits, frac_digits, exp_digits;
  bool exp_negative = false;
  read_digits(int_digits);
  if (i < s.size() && s[i] == '.') {
    ++i;
    read_digits(frac_digits);
  }
  if (int_digits.empty() && frac_digits.empty()) return std::nullopt;
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < s.size() && (s[i] == '+' || s[i] == '-')) exp_negative = s[i++] == '-';
    read_digits(exp_digits);
    if (exp_digits.empty()) return std::nullopt;
  }
  if (i != s.size()) return std::nullopt;

  std::string canon = negative ? "-" : "";
  canon += int_digits.empty() ? "0" : int_digits;
  if (!frac_digits.empty()) canon += "." + frac_digits;
  if (!exp_digits.empty()) canon += std::string("e") + (exp_negative ? "-" : "") + exp_digits;
  double value = 0.0;
  const auto [ptr, ec] = std::from_chars(canon.data(), canon.data() + canon.size(), value);
  if (ec == std::errc::result_out_of_range) {
    // Overflow (Python: +-inf) or underflow (Python: +-0.0): decide by the decimal exponent of the
    // first non-zero digit.
    const std::string digits = int_digits + frac_digits;
    const std::size_t first = digits.find_first_not_of('0');
    long long exponent = 0;
    for (char ch : exp_digits) exponent = std::min(exponent * 10 + (ch - '0'), 1'000'000'000'000LL);
    if (exp_negative) exponent = -exponent;
    const long long magnitude =
        static_cast<long long>(int_digits.size()) - static_cast<long long>(first) + exponent;
    const double v = magnitude > 0 ? std::numeric_limits<double>::infinity() : 0.0;
    return negative ? -v : v;
  }
  if (ec != std::errc() || ptr != canon.data() + canon.size()) return std::nullopt;
  return value;
}

double pearson_r(const std::vector<double>& x, const std::vector<double>& y) {
  if (x.size() != y.size())
    throw std::invalid_argument("pearson_r: " + std::to_string(x.size()) + " x values but " +
                                std::to_string(y.size()) + " y values");
  const std::size_t n = x.size();
  if (n < 2) return kNaN;
  auto constant = [](const std::vector<double>& v) {
    return std::all_of(v.begin(), v.end(), [&](double e) { return e == v[0]; });
  };
  if (constant(x) || constant(y)) return kNaN;
  auto sign = [](double d) { return std::isnan(d) ? kNaN : static_cast<double>((d > 0) - (d < 0)); };
  if (n == 2) return sign(x[1] - x[0]) * sign(y[1] - y[0]);
  const double x_mean = mean(x), y_mean = mean(y);
  double x_norm = 0.0, y_norm = 0.0;
  for (std::size_t i = 0; i < n; ++i) {
    x_norm += (x[i] - x_mean) * (x[i] - x_mean);
    y_norm += (y[i] - y_mean) * (y[i] - y_mean);
  }
  x_norm = std::sqrt(x_norm);
  y_norm = std::sqrt(y_norm);
  double r = 0.0;
  for (std::size_t i = 0; i < n; ++i) r += ((x[i] - x_mean) / x_norm) * ((y[i] - y_mean) / y_norm);
  return std::max(std::min(r, 1.0), -1.0);
}

}  // namespace tlmoe::metrics
