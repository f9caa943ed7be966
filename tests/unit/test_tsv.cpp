// CrossFit TSV reading and file-name parsing: good files, and every malformed kind with its
// exact file:line.
#include <catch2/catch.hpp>

#include "common/error.h"
#include "data/tsv.h"
#include "test_util.h"

using tlmoe::DataError;
using tlmoe::data::parse_file_name;
using tlmoe::data::parse_tsv;
using tlmoe::data::read_tsv;
using tlmoe::test::TempDir;
using tlmoe::test::write_text;

namespace {
// The message of the DataError parse_tsv throws for `text` (file "f.tsv"), or "" if none.
std::string tsv_error(const std::string& text) {
  try {
    parse_tsv(text, "f.tsv");
  } catch (const DataError& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST_CASE("TSV: one example per line, several gold answers, trailing newline", "[data]") {
  TempDir d;
  write_text(d / "t.tsv", "question: why? context: because.\tbecause\nsentence: ok\tyes\tyep\tsure\n");
  auto ex = read_tsv(d / "t.tsv");
  REQUIRE(ex.size() == 2);
  CHECK(ex[0].input == "question: why? context: because.");
  CHECK(ex[0].outputs == std::vector<std::string>{"because"});
  CHECK(ex[1].input == "sentence: ok");
  CHECK(ex[1].outputs == std::vector<std::string>{"yes", "yep", "sure"});
}

TEST_CASE("TSV: CRLF, no final newline, surrounding spaces stripped, UTF-8 and BOM", "[data]") {
  auto ex = parse_tsv("\xEF\xBB\xBF  caf\xC3\xA9 \xE2\x82\xAC\tja \r\nx\t\xF0\x9F\x98\x80", "f.tsv");
  REQUIRE(ex.size() == 2);
  CHECK(ex[0].input == "caf\xC3\xA9 \xE2\x82\xAC");
  CHECK(ex[0].outputs == std::vector<std::string>{"ja"});
  CHECK(ex[1].outputs == std::vector<std::string>{"\xF0\x9F\x98\x80"});
  // inner spaces of a column are kept
  CHECK(parse_tsv("a  b\t c ", "f.tsv")[0].outputs == std::vector<std::string>{" c"});
}

TEST_CASE("TSV: structural errors name file and line", "[data]") {
  CHECK(tsv_error("a\tb\nno tab here\n") == "data error: f.tsv:2: no TAB between the input and the output");
  CHECK(tsv_error("a\tb\n\nc\td\n") ==
        "data error: f.tsv:2: blank line (every line must be input<TAB>output)");
  CHECK(tsv_error("a\tb\n\n") == "data error: f.tsv:2: blank line (every line must be input<TAB>output)");
  CHECK(tsv_error("a\tb\r\n   \r\n") ==
        "data error: f.tsv:2: blank line (every line must be input<TAB>output)");
  CHECK(tsv_error("a\tb\n\tc\n") == "data error: f.tsv:2: empty input (column 1)");
  CHECK(tsv_error("a\tb\n  \tc\n") == "data error: f.tsv:2: empty input (column 1)");
  CHECK(tsv_error("a\tb\tc\nd\t\te\n") == "data error: f.tsv:2: empty output in column 2");
  CHECK(tsv_error("a\t  \tc\n") == "data error: f.tsv:1: empty output in column 2");
  CHECK(tsv_error("a\tb\t\n") ==
        "data error: f.tsv:1: empty output in column 3 (a TAB at the end of the line?)");
  CHECK(tsv_error("a\tb\nc\rd\te\n") ==
        "data error: f.tsv:2: carriage return (\\r) inside the line; CrossFit would split the line there");
  CHECK(tsv_error("") == "data error: f.tsv: no examples (the file is empty)");
  CHECK(tsv_error("\n") == "data error: f.tsv:1: blank line (every line must be input<TAB>output)");
}

TEST_CASE("TSV: invalid UTF-8 of every kind is reported with line and column", "[data]") {
  CHECK(tsv_error("ok\tok\nab\xC0\xAF\tx\n") ==
        "data error: f.tsv:2: invalid UTF-8 at column 3 (byte 0xC0: overlong encoding)");
  CHECK(tsv_error("\xE0\x80\xAF\tx") ==
        "data error: f.tsv:1: invalid UTF-8 at column 1 (byte 0xE0: overlong encoding)");
  CHECK(tsv_error("\xF0\x80\x80\xAF\tx") ==
        "data error: f.tsv:1: invalid UTF-8 at column 1 (byte 0xF0: overlong encoding)");
  CHECK(tsv_error("a\t\xED\xA0\x80") ==
        "data error: f.tsv:1: invalid UTF-8 at column 3 (byte 0xED: UTF-16 surrogate)");
  CHECK(tsv_error("a\t\xF4\x90\x80\x80") ==
        "data error: f.tsv:1: invalid UTF-8 at column 3 (byte 0xF4: code point above U+10FFFF)");
  CHECK(tsv_error("a\tb\nc\t\xE2\x82") ==
        "data error: f.tsv:2: invalid UTF-8 at column 3 (byte 0xE2: truncated sequence)");
  CHECK(tsv_error("a\t\xE2\x82x") ==
        "data error: f.tsv:1: invalid UTF-8 at column 3 (byte 0xE2: truncated sequence)");
  CHECK(tsv_error("a\t\x80") ==
        "data error: f.tsv:1: invalid UTF-8 at column 3 (byte 0x80: continuation byte without a lead byte)");
  CHECK(tsv_error("a\t\xFF") ==
        "data error: f.tsv:1: invalid UTF-8 at column 3 (byte 0xFF: byte that never occurs in UTF-8)");
  // the largest valid code points of each length are fine
  CHECK(tsv_error("\x7F\xDF\xBF\xEF\xBF\xBF\xF4\x8F\xBF\xBF\tx").empty());
  CHECK(tsv_error("\xED\x9F\xBF\xEE\x80\x80\tx").empty());  // U+D7FF, U+E000 around the surrogates
}

TEST_CASE("TSV: a missing file is a DataError naming it", "[data]") {
  TempDir d;
  try {
    read_tsv(d / "nope.tsv");
    FAIL("no error");
  } catch (const DataError& e) {
    CHECK(e.file() == (d / "nope.tsv").string());
    CHECK(e.line() == 0);
    CHECK(std::string(e.what()).find("does not exist") != std::string::npos);
  }
}

TEST_CASE("file names: CrossFit k-shot and full-set names", "[data]") {
  auto a = parse_file_name("glue-cola_16_100_train.tsv");
  CHECK(a.task == "glue-cola");
  CHECK(a.prefix == "glue-cola_16_100");
  CHECK(a.k == 16);
  CHECK(a.seed == 100);
  CHECK(a.split == "train");
  CHECK_FALSE(a.full);

  auto b = parse_file_name("blimp-sentential_negation_npi_scope_16_13_test.tsv");
  CHECK(b.task == "blimp-sentential_negation_npi_scope");
  CHECK(b.prefix == "blimp-sentential_negation_npi_scope_16_13");
  CHECK(b.seed == 13);
  CHECK(b.split == "test");

  auto c = parse_file_name("tweet_eval-irony_full_dev.tsv");
  CHECK(c.task == "tweet_eval-irony");
  CHECK(c.full);
  CHECK(c.split == "dev");
  CHECK(c.prefix == "tweet_eval-irony_full");

  for (const char* bad :
       {"glue-cola_16_100_valid.tsv", "glue-cola_16_train.tsv", "glue-cola_x_100_train.tsv",
        "_16_100_train.tsv", "glue-cola_16_100_train.txt", "t_full_test.tsv", "t_0_1_dev.tsv", "train.tsv"}) {
    INFO(bad);
    CHECK_THROWS_AS(parse_file_name(bad), DataError);
    CHECK_FALSE(tlmoe::data::match_file_name(bad).has_value());
  }
  CHECK_THROWS_WITH(parse_file_name("x_train.tsv"),
                    Catch::Contains("x_train.tsv") && Catch::Contains("{task}_{k}_{seed}"));
}
