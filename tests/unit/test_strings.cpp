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
