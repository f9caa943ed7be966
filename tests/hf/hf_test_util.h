// What the Hugging Face tests share: running the test tooling's Python (tests/golden/*.py).
#pragma once

#include <sys/wait.h>

#include <cstdio>
#include <string>

#include "test_util.h"

namespace tlmoe::test {

// Runs the tooling's Python (TLMOE_TEST_PYTHON, else the one the build was configured with) on
// `args` (already shell-quoted), offline; appends stdout and stderr to *output and returns the
// exit code (-1 when it could not run).
inline int run_python(const std::string& args, std::string* output) {
  const std::string cmd = "HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error '" +
                          path_setting("TLMOE_TEST_PYTHON", TLMOE_PYTHON) + "' " + args + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return -1;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) output->append(buf, n);
  const int st = ::pclose(p);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

}  // namespace tlmoe::test
