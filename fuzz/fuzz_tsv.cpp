// Fuzz target: the CrossFit TSV reader (lib/data/tsv.cpp): parse_tsv and read_tsv on the input
// bytes, and the data file-name parser on the input as a name.
#include <string>

#include "data/tsv.h"
#include "fuzz_util.h"

using namespace tlmoe;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text = fuzz::as_text(data, size);

  std::vector<data::TsvExample> parsed;
  bool ok = false;
  fuzz::expect_input_error("parse_tsv", [&] {
    parsed = data::parse_tsv(text, "fuzz.tsv");
    ok = true;
  });
  if (ok) {
    // What read_tsv promises about the examples it returns (tsv.h).
    fuzz::check(!parsed.empty(), "parse_tsv", "no examples returned without an error");
    for (const auto& ex : parsed) {
      fuzz::check(!ex.input.empty() && !ex.outputs.empty(), "parse_tsv", "empty input or no outputs");
      fuzz::check(ex.input.find_first_of("\t\n\r") == std::string::npos, "parse_tsv", "TAB/newline in an input");
      for (const auto& o : ex.outputs)
        fuzz::check(!o.empty() && o.find_first_of("\t\n\r") == std::string::npos, "parse_tsv",
                    "empty output or TAB/newline in an output");
    }
  }

  const auto file = fuzz::scratch() / "fuzz.tsv";
  fuzz::write_bytes(file, text);
  fuzz::expect_input_error("read_tsv", [&] {
    auto from_file = data::read_tsv(file);
    fuzz::check(ok && from_file.size() == parsed.size(), "read_tsv", "read_tsv and parse_tsv disagree");
  });

  if (size <= 256) {
    const std::string name(text);
    fuzz::expect_input_error("parse_file_name", [&] {
      auto m = data::parse_file_name(name);
      fuzz::check(m.prefix + "_" + m.split + ".tsv" == name, "parse_file_name", "prefix/split do not rebuild the name");
      fuzz::check(m.full ? m.k == 0 : m.k > 0, "parse_file_name", "k out of range");
      fuzz::check(!m.task.empty(), "parse_file_name", "empty task");
    });
  }
  return 0;
}
