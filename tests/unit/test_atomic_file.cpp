// write_file_atomic: a failure names the path and the operating system's reason, and leaves no
// temporary file behind.
#include <catch2/catch.hpp>

#include <filesystem>
#include <stdexcept>
#include <string>

#include "io/atomic_file.h"
#include "test_util.h"

namespace fs = std::filesystem;
using tlmoe::test::read_text;
using tlmoe::test::TempDir;
using tlmoe::test::write_text;

TEST_CASE("write_file_atomic: a failed rename reports its reason and cleans up", "[io]") {
  TempDir d;
  write_text(d / "target" / "inside.txt", "x");  // the target path is a non-empty directory
  std::string msg;
  try {
    tlmoe::io::write_file_atomic(d / "target", "bytes");
  } catch (const std::runtime_error& e) {
    msg = e.what();
  }
  INFO(msg);
  CHECK(msg.rfind("cannot rename into " + (d / "target").string() + ": ", 0) == 0);
  CHECK(msg.find("Success") == std::string::npos);  // the reason of the rename, not of the clean-up
  CHECK(msg.find("Is a directory") != std::string::npos);
  std::size_t left = 0;
  for (const auto& e : fs::directory_iterator(d.path())) left += e.path().filename() != "target";
  CHECK(left == 0);  // no temporary file left
  CHECK(read_text(d / "target" / "inside.txt") == "x");

  // and a good write replaces the file whole
  tlmoe::io::write_file_atomic(d / "file.txt", "one");
  tlmoe::io::write_file_atomic(d / "file.txt", "two");
  CHECK(read_text(d / "file.txt") == "two");
}
