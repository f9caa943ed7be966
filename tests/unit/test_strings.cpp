// The small string helpers of lib/common: CSV fields and comma-separated lists.
#include <catch2/catch.hpp>

#include "common/strings.h"

TEST_CASE("csv_field quotes only fields that need it and doubles inner quotes", "[strings]") {
  CHECK(tlmoe::csv_field("plain_task") == "plain_task");
  CHECK(tlmoe::csv_field("a,b") == "\"a,b\"");
  CHECK(tlmoe::csv_field("say \"hi\"") == "\"say \"\"hi\"\"\"");
  CHECK(tlmoe::csv_field("two\nlines") == "\"two\nlines\"");
  CHECK(tlmoe::csv_field("") == "");
}

TEST_CASE("split_list splits on commas and drops empty items", "[strings]") {
  CHECK(tlmoe::split_list("a,b,,c") == std::vector<std::string>{"a", "b", "c"});
  CHECK(tlmoe::split_list("") == std::vector<std::string>{});
  CHECK(tlmoe::split_list(",x,") == std::vector<std::string>{"x"});
  CHECK(tlmoe::split_list("one") == std::vector<std::string>{"one"});
}

TEST_CASE("python_strip removes what Python's str.strip() removes, Unicode whitespace included", "[strings]") {
  using tlmoe::python_strip;
  CHECK(python_strip("  a b \t\n") == "a b");
  CHECK(python_strip("\x1c\x1f" "x" "\x0b\x0c") == "x");                    // U+001C..1F, \v \f
  CHECK(python_strip("\xc2\xa0" "x" "\xc2\x85") == "x");                     // U+00A0, U+0085
  CHECK(python_strip("\xe3\x80\x80" "日本" "\xe2\x80\x83\xe2\x80\xa8") == "日本");  // U+3000, U+2003, U+2028
  CHECK(python_strip("\xe2\x80\x8b" "x") == "\xe2\x80\x8b" "x");             // U+200B ZERO WIDTH SPACE is not
  CHECK(python_strip("\xef\xbf\xbd ") == "\xef\xbf\xbd");                    // U+FFFD stays
  CHECK(python_strip("\xa0" "x" "\xc2") == "\xa0" "x" "\xc2");               // stray bytes are not spaces
  CHECK(python_strip(" \xe3\x80") == "\xe3\x80");  // a cut-off U+3000 is no space; the space before it goes
  CHECK(python_strip("   ") == "");
  CHECK(python_strip("") == "");
}
