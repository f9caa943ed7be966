// CrossFit's metrics (docs/method.md §10): every worked example there, the four ROUGE-L vectors
// for rouge 1.0.0 and 1.0.1, sklearn/scipy semantics, Python float() and str semantics. Every expected value is
// computed by hand in the comment next to it.
#include <catch2/catch.hpp>

#include <cmath>
#include <stdexcept>

#include "common/error.h"
#include "data/task_meta.h"
#include "metrics/metrics.h"

using tlmoe::metrics::accuracy;
using tlmoe::metrics::compute_metric;
using tlmoe::metrics::exact_match;
using tlmoe::metrics::Golds;
using tlmoe::metrics::macro_f1;
using tlmoe::metrics::matthews_corrcoef;
using tlmoe::metrics::metric_names;
using tlmoe::metrics::MetricOptions;
using tlmoe::metrics::normalize_answer;
using tlmoe::metrics::parse_python_float;
using tlmoe::metrics::pearson_r;
using tlmoe::metrics::per_example_scores;
using tlmoe::metrics::py_lower;
using tlmoe::metrics::py_strip;
using tlmoe::metrics::qa_f1;
using tlmoe::metrics::rouge_l;
using tlmoe::metrics::rouge_l_over_golds;
using tlmoe::metrics::RougeVersion;

namespace {
constexpr auto kV100 = RougeVersion::kV1_0_0;
constexpr auto kV101 = RougeVersion::kV1_0_1;

// The message of the std::invalid_argument that f throws, or "" if none.
template <class F>
std::string invalid_argument_message(F f) {
  try {
    f();
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST_CASE("normalize_answer: lower, punctuation, whole-word articles, whitespace", "[eval][metrics]") {
  CHECK(normalize_answer("The Cat!") == "cat");  // docs/method.md §10.1
  // "the-cat": '-' is deleted first, so "thecat" is one word and not an article
  CHECK(normalize_answer("the-cat") == "thecat");
  CHECK(normalize_answer("An apple a day") == "apple day");
  CHECK(normalize_answer("  Hello,   WORLD. ") == "hello world");
  CHECK(normalize_answer("A") == "");
  CHECK(normalize_answer("an-the a.n") == "anthe");  // "anthe an": "anthe" stays, "an" goes
  // '_' is punctuation (deleted) but digits are word characters: "the1" stays, "the_" -> "the" goes
  CHECK(normalize_answer("the1 the_") == "the1");
  CHECK(normalize_answer("theatre and a theme") == "theatre and theme");
  // every character of string.punctuation is deleted
  CHECK(normalize_answer("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~x") == "x");
  // Unicode whitespace splits words (Python str.split())
  CHECK(normalize_answer("x\xC2\xA0\xE3\x80\x80y\ty") == "x y y");
  // a non-ASCII letter is a word character: "thé" is not "the"
  CHECK(normalize_answer("th\xC3\xA9 cat") == "th\xC3\xA9 cat");
  // curly quotes are not word characters: re.sub gives "\u201c \u201d cat"
  CHECK(normalize_answer("\xE2\x80\x9Cthe\xE2\x80\x9D cat") == "\xE2\x80\x9C \xE2\x80\x9D cat");
}

TEST_CASE("py_strip and py_lower follow Python str semantics", "[eval][metrics]") {
  CHECK(py_strip("  a b \n") == "a b");
  CHECK(py_strip("\xC2\xA0x\xE2\x80\x83") == "x");  // U+00A0 and U+2003 are whitespace
  CHECK(py_strip(" \t ") == "");
  CHECK(py_strip("\x1Fx\x1C") == "x");  // Python counts \x1c-\x1f as whitespace
  CHECK(py_lower("ABC xyz 123") == "abc xyz 123");
  // Latin-1 / Latin Extended-A: À É Î Ÿ Ł -> à é î ÿ ł, × unchanged, İ -> i + U+0307
  CHECK(py_lower("\xC3\x80\xC3\x89\xC3\x8E\xC5\xB8\xC5\x81\xC3\x97") ==
        "\xC3\xA0\xC3\xA9\xC3\xAE\xC3\xBF\xC5\x82\xC3\x97");
  CHECK(py_lower("\xC4\xB0") == "i\xCC\x87");
  // Ā Ğ Ŋ Ź -> ā ğ ŋ ź (the even/odd pairs of Latin Extended-A), ı and ſ unchanged
  CHECK(py_lower("\xC4\x80\xC4\x9E\xC5\x8A\xC5\xB9\xC4\xB1\xC5\xBF") ==
        "\xC4\x81\xC4\x9F\xC5\x8B\xC5\xBA\xC4\xB1\xC5\xBF");
  // Greek with final sigma: ΣΟΦΟΣ -> σοφος (the last Σ becomes ς)
  CHECK(py_lower("\xCE\xA3\xCE\x9F\xCE\xA6\xCE\x9F\xCE\xA3") == "\xCF\x83\xCE\xBF\xCF\x86\xCE\xBF\xCF\x82");
  // Cyrillic: ЁЖ -> ёж
  CHECK(py_lower("\xD0\x81\xD0\x96") == "\xD1\x91\xD0\xB6");
}

TEST_CASE("EM: normalized equality, max over golds, predictions stripped", "[eval][metrics]") {
  CHECK(exact_match("The Cat!", {"cat"}) == 1.0);
  CHECK(exact_match("cats", {"cat"}) == 0.0);
  CHECK(exact_match("dog", {"cat", "Dog."}) == 1.0);
  // examples: 1 ("The Cat!" ~ "cat"), 1 ("dog" ~ "Dog."), 1 (" a b " -> "a b" -> "b"), 0 -> 3/4
  const auto r = compute_metric("EM", {"The Cat!", "dog", " a b ", "cats"},
                                Golds{{"cat"}, {"cat", "Dog."}, {"b"}, {"cat"}});
  CHECK(r.value == Approx(0.75));
  CHECK(r.num_examples == 4);
  CHECK(r.unparsable == 0);
}

TEST_CASE("ACC: lower-case equality only, a trailing period is wrong", "[eval][metrics]") {
  CHECK(accuracy("Yes.", {"yes"}) == 0.0);
  CHECK(accuracy("YES", {"yes"}) == 1.0);
  CHECK(accuracy("no", {"maybe", "No"}) == 1.0);
  CHECK(accuracy("the cat", {"cat"}) == 0.0);  // no article removal
  // 0 + 1 + 1 (" no " stripped) -> 2/3
  const auto r = compute_metric("ACC", {"Yes.", "YES", " no "}, Golds{{"yes"}, {"yes"}, {"maybe", "No"}});
  CHECK(r.value == Approx(2.0 / 3.0));
}

TEST_CASE("QA-F1: multiset token overlap of normalized answers", "[eval][metrics]") {
  // docs/method.md §10: "big cat" vs "cat": overlap 1, P = 1/2, R = 1, F1 = 2*(1/2)*1/(3/2) = 2/3
  CHECK(qa_f1("the big cat", {"a cat"}) == Approx(2.0 / 3.0));
  // {cat:2, dog:1} & {cat:1, dog:2} = {cat:1, dog:1}: overlap 2, P = R = 2/3, F1 = 2/3
  CHECK(qa_f1("cat cat dog", {"cat dog dog"}) == Approx(2.0 / 3.0));
  // max over golds: "blue fox" gives P = R = 1/2 -> 0.5; "red fox jumps" gives P = 1, R = 2/3 -> 0.8
  CHECK(qa_f1("red fox", {"blue fox", "red fox jumps"}) == Approx(0.8));
  CHECK(qa_f1("red", {"blue"}) == 0.0);
  // both normalize to "": no tokens, overlap 0 -> 0 (while EM is 1)
  CHECK(qa_f1("the", {"a"}) == 0.0);
  CHECK(exact_match("the", {"a"}) == 1.0);
  // mean over examples: (2/3 + 0.8) / 2 = 11/15
  const auto r =
      compute_metric("QA-F1", {"the big cat", "red fox"}, Golds{{"a cat"}, {"blue fox", "red fox jumps"}});
  CHECK(r.value == Approx(11.0 / 15.0));
}

TEST_CASE("Classification-F1: sklearn macro F1 over the union of true and predicted labels",
          "[eval][metrics]") {
  // docs/method.md §10: labels {neg, pos, xyz}. pos: tp 2, fp 1, fn 0 -> 4/5. neg: tp 0 -> 0. xyz: 0.
  // (0.8 + 0 + 0) / 3 = 0.266667
  CHECK(macro_f1({"pos", "neg", "pos", "neg"}, {"pos", "pos", "pos", "xyz"}) == Approx(0.8 / 3.0));
  // a: tp 1 (i0), fn 1 (i1), fp 1 (i4) -> 2/4 = 0.5. b: tp 2, fp 1 (i1) -> 4/5 = 0.8.
  // c: never predicted, tp 0 -> 0. macro = 1.3 / 3
  CHECK(macro_f1({"a", "a", "b", "b", "c"}, {"a", "b", "b", "b", "a"}) == Approx(1.3 / 3.0));
  CHECK(macro_f1({"x", "y"}, {"x", "y"}) == 1.0);
  // through the registry: first gold is y_true, predictions stripped, case kept ("Pos" != "pos")
  const auto r =
      compute_metric("Classification-F1", {" pos", "neg", "Pos"}, Golds{{"pos", "neg"}, {"neg"}, {"pos"}});
  // pos: tp 1, fn 1 -> 2/3. neg: tp 1 -> 1. Pos: fp 1 -> 0. (2/3 + 1 + 0) / 3 = 5/9
  CHECK(r.value == Approx(5.0 / 9.0));
  CHECK_THROWS_AS(macro_f1({"a"}, {"a", "b"}), std::invalid_argument);
}

TEST_CASE("Matthew-Correlation: exactly acceptable is 1, sklearn MCC, 0 when undefined", "[eval][metrics]") {
  // TP 2 (i0, i4), FN 1 (i1), TN 1 (i2), FP 1 (i3):
  // (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (2 - 1) / sqrt(3*3*2*2) = 1/6
  CHECK(matthews_corrcoef({1, 1, 0, 0, 1}, {1, 0, 0, 1, 1}) == Approx(1.0 / 6.0));
  CHECK(matthews_corrcoef({1, 0}, {0, 1}) == Approx(-1.0));
  CHECK(matthews_corrcoef({1, 0, 1}, {1, 0, 1}) == Approx(1.0));
  CHECK(matthews_corrcoef({1, 0, 1}, {0, 0, 0}) == 0.0);  // constant prediction: denominator 0
  CHECK(matthews_corrcoef({1, 1}, {1, 1}) == 0.0);        // one class only
  // "Acceptable" is not exactly "acceptable" (0); " acceptable " is stripped (1):
  // preds 1 0 0 1 1, golds 1 1 0 0 1 -> the 1/6 case above
  const auto r = compute_metric(
      "Matthew-Correlation", {"acceptable", "unacceptable", "Acceptable", " acceptable ", "acceptable"},
      Golds{{"acceptable"}, {"acceptable"}, {"unacceptable"}, {"unacceptable"}, {"acceptable"}});
  CHECK(r.value == Approx(1.0 / 6.0));
}

TEST_CASE("parse_python_float accepts what Python float() accepts", "[eval][metrics]") {
  CHECK(parse_python_float(" 1.5 ") == 1.5);
  CHECK(parse_python_float("\t-2\n") == -2.0);
  CHECK(parse_python_float("+3") == 3.0);
  CHECK(parse_python_float("3.") == 3.0);
  CHECK(parse_python_float(".5") == 0.5);
  CHECK(parse_python_float("1e3") == 1000.0);
  CHECK(parse_python_float("1E-2") == 0.01);
  CHECK(parse_python_float("1_000.5") == 1000.5);
  CHECK(parse_python_float("1e1_0") == 1e10);
  CHECK(parse_python_float("007") == 7.0);
  CHECK(parse_python_float("\xC2\xA0"
                           "4\xE3\x80\x80") == 4.0);  // Unicode whitespace around
  CHECK(parse_python_float("inf") == std::numeric_limits<double>::infinity());
  CHECK(parse_python_float("-Infinity") == -std::numeric_limits<double>::infinity());
  CHECK(parse_python_float("1e400") == std::numeric_limits<double>::infinity());
  const auto tiny = parse_python_float("-1e-400");  // underflow: -0.0
  REQUIRE(tiny);
  CHECK(*tiny == 0.0);
  CHECK(std::signbit(*tiny));
  const auto nan = parse_python_float("NaN");
  REQUIRE(nan);
  CHECK(std::isnan(*nan));
  for (const char* bad :
       {"",    " ",      ".",     "e3",  "1e",  "1__0",    "_1",  "1_",   "1._5", "1_.5", "0x10",
        "1,5", "nan(1)", "1.5.2", "3 4", "abc", "infinit", "+-1", "1 e3", "--1",  "in f"}) {
    INFO(bad);
    CHECK_FALSE(parse_python_float(bad));
  }
}

TEST_CASE("Pearson-Correlation: scipy pearsonr, NaN semantics, fallback and unparsable count",
          "[eval][metrics]") {
  // preds x = 1 2 3 4 (mean 2.5, centered -1.5 -.5 .5 1.5, sum sq 5),
  // golds y = 2 4 5 9 (mean 5, centered -3 -1 0 4, sum sq 26); sum of products 4.5+.5+0+6 = 11
  // r = 11 / sqrt(5 * 26) = 0.9647638
  const Golds golds{{"2"}, {"4", "x"}, {"5"}, {"9"}};
  auto r = compute_metric("Pearson-Correlation", {"1", " 2.0 ", "3e0", "+4"}, golds);
  CHECK(r.value == Approx(0.9647638212));
  CHECK(r.unparsable == 0);
  CHECK(pearson_r({1, 2, 3, 4}, {2, 4, 5, 9}) == Approx(0.9647638212));

  // CrossFit: an unparsable prediction is NaN, so r is NaN; the count is reported
  r = compute_metric("Pearson-Correlation", {"1", "abc", "3", "4"}, golds);
  CHECK(std::isnan(r.value));
  CHECK(r.unparsable == 1);
  // fallback 2.0 puts back exactly the x of the first case
  MetricOptions fallback2;
  fallback2.pearson_fallback = 2.0;
  r = compute_metric("Pearson-Correlation", {"1", "abc", "3", "4"}, golds, fallback2);
  CHECK(r.value == Approx(0.9647638212));
  CHECK(r.unparsable == 1);
  // TL-MoE's 3.0: x = 1 3 3 4 (mean 2.75, centered -1.75 .25 .25 1.25, sum sq 4.75);
  // products 5.25 - .25 + 0 + 5 = 10; r = 10 / sqrt(4.75 * 26) = 0.8998425
  MetricOptions fallback3;
  fallback3.pearson_fallback = 3.0;
  CHECK(compute_metric("Pearson-Correlation", {"1", "?", "3", "4"}, golds, fallback3).value ==
        Approx(0.8998425413));

  // a "nan" prediction parses (not counted as unparsable) and makes r NaN
  r = compute_metric("Pearson-Correlation", {"1", "nan", "3", "4"}, golds, fallback3);
  CHECK(std::isnan(r.value));
  CHECK(r.unparsable == 0);
  // constant prediction -> NaN, even with the fallback
  CHECK(std::isnan(compute_metric("Pearson-Correlation", {"3", "3", "x", "3"}, golds, fallback3).value));
  CHECK(std::isnan(pearson_r({1, 2, 3}, {5, 5, 5})));
  CHECK(std::isnan(pearson_r({1}, {2})));  // fewer than two examples
  // n = 2: sign(x1 - x0) * sign(y1 - y0) = sign(4) * sign(-1) = -1
  CHECK(pearson_r({1, 5}, {3, 2}) == -1.0);
  // exact linear relation -> 1 (clipped to [-1, 1])
  CHECK(pearson_r({1, 2, 3, 4, 5}, {3, 5, 7, 9, 11}) == Approx(1.0));
  CHECK(pearson_r({0.1, 0.2, 0.3}, {0.3, 0.2, 0.1}) == Approx(-1.0));
  // a gold that is not a number is bad data
  CHECK_THROWS_AS(compute_metric("Pearson-Correlation", {"1", "2"}, Golds{{"1"}, {"two"}}),
                  tlmoe::InputError);
}

TEST_CASE("Rouge-L: the four vectors of docs/method.md §10.9 for rouge 1.0.0 and 1.0.1", "[eval][metrics]") {
  // 1.0.0: LCS "the cat on the mat" = 5 of m = n = 6 words: P = R = 5/6, F = 0.833333
  // 1.0.1: distinct words m = n = 5, LCS word set {the, cat, on, mat} = 4: P = R = 0.8
  CHECK(rouge_l("the cat sat on the mat", "the cat is on the mat", kV100) == Approx(5.0 / 6.0).margin(1e-7));
  CHECK(rouge_l("the cat sat on the mat", "the cat is on the mat", kV101) == Approx(0.8).margin(1e-7));
  // 1.0.0: LCS 1, m = 2, n = 3: R = 1/2, P = 1/3, F = 2*(1/6)/(5/6) = 0.4
  // 1.0.1: m = 2 {the, cat}, n = 1 {the}: R = 1/2, P = 1, F = 2*(1/2)/(3/2) = 2/3
  CHECK(rouge_l("the the the", "the cat", kV100) == Approx(0.4).margin(1e-7));
  CHECK(rouge_l("the the the", "the cat", kV101) == Approx(2.0 / 3.0).margin(1e-7));
  // hyp sentences "a b" and "c d" (the piece " c d" is whitespace-normalized); ref "a c d":
  // LCS with "a b" = {a}, with "c d" = {c d}: llcs 3, m = 3, n = 4: R = 1, P = 3/4, F = 6/7
  CHECK(rouge_l("a b. c d", "a c d", kV100) == Approx(6.0 / 7.0).margin(1e-7));
  CHECK(rouge_l("a b. c d", "a c d", kV101) == Approx(6.0 / 7.0).margin(1e-7));
  // case-sensitive: only "world" matches: P = R = 1/2
  CHECK(rouge_l("Hello world", "hello world", kV100) == Approx(0.5).margin(1e-7));
  CHECK(rouge_l("Hello world", "hello world", kV101) == Approx(0.5).margin(1e-7));
}

TEST_CASE("Rouge-L: summary-level union LCS, empty sentences and the reconstruction tie rule",
          "[eval][metrics]") {
  // ref sentences "a" and "a b", hyp "a b".
  // 1.0.0: m = 3, n = 2, llcs = LCS(a; a b) + LCS(a b; a b) = 1 + 2 = 3: R = 1, P = 3/2,
  //        F = 2*(3/2)/(5/2 + 1e-8) = 1.2 (1.0.0 can exceed 1)
  // 1.0.1: m = n = 2, union {a} then {a, b}: llcs 2, P = R = 1, F = 2/(2 + 1e-8) ~ 1
  CHECK(rouge_l("a b", "a. a b", kV100) == Approx(1.2).margin(1e-7));
  CHECK(rouge_l("a b", "a. a b", kV101) == Approx(1.0).margin(1e-7));
  // hyp pieces "a", " ", " b" -> sentences [a], [""], [b]: n = 3 (the empty word counts).
  // ref "a b": llcs = 1 + 0 + 1 = 2, m = 2: R = 1, P = 2/3, F = 0.8 (both versions: n distinct = 3)
  CHECK(rouge_l("a. . b", "a b", kV100) == Approx(0.8).margin(1e-7));
  CHECK(rouge_l("a. . b", "a b", kV101) == Approx(0.8).margin(1e-7));
  // Tie rule: LCS(ref "a b", hyp "b a") has length 1; the reconstruction (reference rows, move up
  // only when strictly better) picks "b". With the second ref sentence "a" (LCS {a}) the 1.0.1
  // union is {a, b}: llcs 2 of m = n = 2 distinct -> F ~ 1 (picking "a" would give 0.5).
  // 1.0.0: llcs = 1 + 1 = 2, m = 3, n = 2: R = 2/3, P = 1, F = 0.8
  CHECK(rouge_l("b a", "a b. a", kV101) == Approx(1.0).margin(1e-7));
  CHECK(rouge_l("b a", "a b. a", kV100) == Approx(0.8).margin(1e-7));
  // a reference without any sentence: 0 (the package raises)
  CHECK(rouge_l("a", "...", kV100) == 0.0);
  // CrossFit's wrapper: a prediction of punctuation only scores 0, else the max over golds
  CHECK(rouge_l_over_golds("...!", {"..."}, kV100) == 0.0);
  // "?!" against itself has ROUGE-L ~1, but CrossFit scores a punctuation-only prediction 0
  CHECK(rouge_l("?!", "?!", kV100) == Approx(1.0).margin(1e-7));
  CHECK(rouge_l_over_golds("?!", {"?!"}, kV100) == 0.0);
  CHECK(rouge_l_over_golds("?a", {"?a"}, kV100) == Approx(1.0).margin(1e-7));
  CHECK(rouge_l_over_golds("the cat", {"dog", "the cat"}, kV100) == Approx(1.0).margin(1e-7));
  // registry: stripped "?!" is all punctuation -> 0; (5/6 + 0) / 2 and (0.8 + 0) / 2
  const std::vector<std::string> preds = {"the cat sat on the mat", "  ?! "};
  const Golds golds{{"the cat is on the mat"}, {"x"}};
  CHECK(compute_metric("Rouge-L", preds, golds).value == Approx(5.0 / 12.0).margin(1e-7));
  MetricOptions v101;
  v101.rouge_version = kV101;
  CHECK(compute_metric("Rouge-L", preds, golds, v101).value == Approx(0.4).margin(1e-7));
  CHECK(tlmoe::metrics::parse_rouge_version("1.0.1") == kV101);
  CHECK(tlmoe::metrics::to_string(kV100) == "1.0.0");
  CHECK_THROWS_AS(tlmoe::metrics::parse_rouge_version("1.0.2"), std::invalid_argument);
}

TEST_CASE("Metric registry: CrossFit names, unknown names, input checks, per-example scores",
          "[eval][metrics]") {
  const std::vector<std::string> expected = {
      "EM", "ACC", "QA-F1", "Classification-F1", "Matthew-Correlation", "Pearson-Correlation", "Rouge-L"};
  CHECK(metric_names() == expected);
  CHECK(metric_names() == tlmoe::data::known_metrics());  // the data layer validates task metrics with these
  CHECK(tlmoe::metrics::is_metric("Rouge-L"));
  CHECK_FALSE(tlmoe::metrics::is_metric("rouge-l"));

  const std::string msg = invalid_argument_message([] { compute_metric("BLEU", {"a"}, Golds{{"a"}}); });
  CHECK(msg ==
        "unknown metric 'BLEU' (expected one of EM, ACC, QA-F1, Classification-F1, Matthew-Correlation, "
        "Pearson-Correlation, Rouge-L)");
  CHECK(invalid_argument_message([] {
          compute_metric("EM", {"a", "b"}, Golds{{"a"}});
        }) == "metric EM: 2 predictions but 1 gold lists");
  CHECK(invalid_argument_message([] {
          compute_metric("ACC", {"a", "b"}, Golds{{"a"}, {}});
        }) == "metric ACC: example 1 has no gold answer");
  CHECK(invalid_argument_message([] { compute_metric("EM", {}, Golds{}); }) == "metric EM: no examples");

  CHECK(tlmoe::metrics::has_per_example_scores("EM"));
  CHECK(tlmoe::metrics::has_per_example_scores("Rouge-L"));
  CHECK_FALSE(tlmoe::metrics::has_per_example_scores("Classification-F1"));
  CHECK_FALSE(tlmoe::metrics::has_per_example_scores("Pearson-Correlation"));
  CHECK_THROWS_AS(tlmoe::metrics::has_per_example_scores("nope"), std::invalid_argument);
  CHECK(invalid_argument_message([] { per_example_scores("Matthew-Correlation", {"a"}, Golds{{"a"}}); }) ==
        "metric Matthew-Correlation is corpus-level: it has no per-example scores");
  // per-example QA-F1 of the earlier case: 2/3 and 0.8
  const auto s = per_example_scores("QA-F1", {" the big cat ", "red fox"},
                                    Golds{{"a cat"}, {"blue fox", "red fox jumps"}});
  REQUIRE(s.size() == 2);
  CHECK(s[0] == Approx(2.0 / 3.0));
  CHECK(s[1] == Approx(0.8));
  const auto em = per_example_scores("EM", {"The Cat!", "cats"}, Golds{{"cat"}, {"cat"}});
  CHECK(em == std::vector<double>{1.0, 0.0});
}
