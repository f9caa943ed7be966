// CrossFit's task metrics with the reference's exact semantics (docs/method.md §10, §13.12, §13.13):
// EM, ACC, QA-F1, Classification-F1, Matthew-Correlation, Pearson-Correlation, Rouge-L.
// Pure C++ (no LibTorch); the registry at the bottom maps CrossFit's metric names to them.
//
// Text handling follows Python 3 str semantics on UTF-8 input:
//   - strip()/split() use Python's whitespace set (ASCII \t\n\v\f\r, \x1c-\x1f, space and the
//     Unicode spaces U+0085, U+00A0, U+1680, U+2000-U+200A, U+2028, U+2029, U+202F, U+205F,
//     U+3000).
//   - lower() is exact for ASCII, Latin-1, Latin Extended-A, Greek (final sigma included) and
//     basic Cyrillic; other code points are left unchanged (Python would lower e.g. Armenian or
//     fullwidth Latin letters too).
//   - The regex word boundary \b of normalize_answer treats ASCII letters, digits and '_' as word
//     characters, and any other code point as one unless it lies in a punctuation / symbol / mark /
//     space block (General Punctuation, arrows, math, CJK punctuation, fullwidth punctuation,
//     emoji, ...). Python uses the full Unicode database; the difference only matters for a
//     non-ASCII character directly adjacent to "a", "an" or "the".
//   - Invalid UTF-8 bytes are kept as they are and count as non-space, non-word characters.
//
// NaN: only Pearson-Correlation can be NaN (an unparsable prediction under CrossFit's default,
// a "nan"/"inf" prediction, a constant input, or fewer than two examples). NaN is returned as
// is, never replaced; callers that average or compare scores must handle it (std::isnan).
#pragma once

#include <cstddef>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tlmoe::metrics {

// Gold answers per example; an example may have several (TSV columns 2...). The first one is used
// where a metric allows only one.
using Golds = std::vector<std::vector<std::string>>;

// The pltrdy `rouge` package version whose ROUGE-L to reproduce.
//   kV1_0_0 (CrossFit's pin, the default): word counts and the union of LCS words are multisets.
//   kV1_0_1: distinct word counts, the union is a set.
enum class RougeVersion { kV1_0_0, kV1_0_1 };

// "1.0.0" -> kV1_0_0, "1.0.1" -> kV1_0_1; anything else throws std::invalid_argument.
RougeVersion parse_rouge_version(std::string_view s);
std::string_view to_string(RougeVersion v);

struct MetricOptions {
  // Value used for a prediction that Python's float() rejects. nullopt (the default, CrossFit):
  // NaN, which makes the correlation NaN. TL-MoE's metrics.py uses 3.0.
  std::optional<double> pearson_fallback;
  RougeVersion rouge_version = RougeVersion::kV1_0_0;
};

struct MetricResult {
  double value = std::numeric_limits<double>::quiet_NaN();
  std::size_t num_examples = 0;
  std::size_t unparsable = 0;  // Pearson-Correlation: predictions float() rejects; 0 otherwise
};

// ---- the registry ------------------------------------------------------------------------------

// CrossFit's metric names, in this order: "EM", "ACC", "QA-F1", "Classification-F1",
// "Matthew-Correlation", "Pearson-Correlation", "Rouge-L".
const std::vector<std::string>& metric_names();
bool is_metric(std::string_view name);

// True for the metrics that are a mean of per-example scores (EM, ACC, QA-F1, Rouge-L); false for
// the corpus-level ones. Throws std::invalid_argument for an unknown name.
bool has_per_example_scores(std::string_view name);

// The metric `name` of predictions against golds. Each prediction is strip()-ed first (as CrossFit
// strips decoded text); golds are used as given. Throws std::invalid_argument for an unknown name
// (listing the valid ones), predictions.size() != golds.size(), no examples, or an example without
// a gold answer; Pearson-Correlation throws tlmoe::InputError when a first gold answer is not a
// number (CrossFit would crash there).
MetricResult compute_metric(std::string_view name, const std::vector<std::string>& predictions,
                            const Golds& golds, const MetricOptions& options = {});

// The per-example scores whose mean compute_metric returns (for bootstrap resampling). Same checks
// as compute_metric; also throws std::invalid_argument for a corpus-level metric.
std::vector<double> per_example_scores(std::string_view name, const std::vector<std::string>& predictions,
                                       const Golds& golds, const MetricOptions& options = {});

// ---- building blocks (no stripping of the prediction; golds must be non-empty) -----------------

// Python's str.strip() / str.lower() (see the header comment for the Unicode coverage).
std::string py_strip(std::string_view s);
std::string py_lower(std::string_view s);

// SQuAD normalization: lower(), delete every character of Python's string.punctuation, replace
// each whole word a/an/the by a space (regex \b(a|an|the)\b), then " ".join(s.split()).
// normalize_answer("The Cat!") == "cat".
std::string normalize_answer(std::string_view s);

// 1 if normalize_answer(pred) == normalize_answer(g) for some gold g, else 0.
double exact_match(std::string_view pred, const std::vector<std::string>& golds);
// 1 if py_lower(pred) == py_lower(g) for some gold g, else 0 (no other normalization).
double accuracy(std::string_view pred, const std::vector<std::string>& golds);
// Max over golds of the SQuAD token F1 of normalized, whitespace-split tokens (multiset overlap;
// 0 when the overlap is empty).
double qa_f1(std::string_view pred, const std::vector<std::string>& golds);

// pltrdy rouge's get_scores(hyp, ref)["rouge-l"]["f"]: summary-level union-LCS F-measure.
// Sentences = pieces of s.split(".") that are non-empty, each " ".join(piece.split()); words =
// sentence.split(" "). llcs = sum over reference sentences r of the new words that the union of
// LCS(r, h) over hypothesis sentences h adds (multiset: list concatenation; set: set union, so a
// word already in the union from an earlier reference sentence adds nothing); R = llcs/m,
// P = llcs/n, F = 2PR/(P+R+1e-8), with m / n the (distinct, for 1.0.1) reference / hypothesis word
// counts. Returns 0 when either side has no sentence (the package raises ValueError there).
double rouge_l(std::string_view hyp, std::string_view ref, RougeVersion version);
// CrossFit's per-example Rouge-L: 0 if `pred` has no character outside string.punctuation, else
// the max over golds of rouge_l(pred, gold).
double rouge_l_over_golds(std::string_view pred, const std::vector<std::string>& golds, RougeVersion version);

// sklearn f1_score(y_true, y_pred, average="macro"): the mean over the union of labels in y_true
// and y_pred of the per-label F1 2tp/(2tp+fp+fn); a label never predicted or never true with
// tp = 0 contributes 0. Throws std::invalid_argument on a size mismatch or empty input.
double macro_f1(const std::vector<std::string>& y_true, const std::vector<std::string>& y_pred);

// sklearn matthews_corrcoef for binary labels (0/1): (c*s - t.p) / sqrt((s^2 - p.p)(s^2 - t.t))
// with c the correct count, s the sample count, t / p the per-class true / predicted counts;
// 0 when the denominator is 0. Throws std::invalid_argument on a size mismatch or empty input.
double matthews_corrcoef(const std::vector<int>& y_true, const std::vector<int>& y_pred);

// Python's float(s): surrounding whitespace, a sign, digits with single '_' between digits, an
// optional '.', an exponent, "inf"/"infinity"/"nan" in any case; overflow gives +-inf, underflow
// +-0. nullopt where float() raises ValueError. Non-ASCII digits (accepted by Python) are rejected.
std::optional<double> parse_python_float(std::string_view s);

// scipy.stats.pearsonr(x, y)[0] (scipy 1.5): NaN when x or y is constant (exact equality) or
// n < 2 (scipy raises there); sign(x1-x0)*sign(y1-y0) for n = 2; otherwise the centered cosine
// clipped to [-1, 1]. A NaN input gives NaN; an inf input gives NaN for n > 2. Throws
// std::invalid_argument on a size mismatch.
double pearson_r(const std::vector<double>& x, const std::vector<double>& y);

}  // namespace tlmoe::metrics
