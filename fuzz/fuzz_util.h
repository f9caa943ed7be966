// Shared by the fuzz targets (docs/fuzzing.md): the exception contract and scratch files.
//
// Contract: a reader given bad bytes throws tlmoe::InputError (DataError, ConfigError,
// UsageError); that is the expected outcome and is swallowed. Any other exception leaving a
// reader (nlohmann::json::exception, std::out_of_range, c10::Error, YAML::Exception, ...) would
// reach the user as a raw library message, so it is a finding: expect_input_error does not catch
// it, and with no handler on the stack the C++ runtime calls std::terminate at the throw, before
// unwinding: libstdc++ prints "terminate called after throwing an instance of 'T'  what(): ...",
// aborts, and libFuzzer prints the stack of the throw site and saves the input. check() aborts
// on a broken invariant the same way (finding()).
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>
#include <system_error>

#include "common/error.h"

namespace tlmoe::fuzz {

[[noreturn]] inline void finding(const char* where, const std::string& what) {
  std::fprintf(stderr, "\n==tlmoe-fuzz== FINDING in %s: %s\n", where, what.c_str());
  std::fflush(stderr);
  std::abort();
}

// Runs f(); an InputError is the reader's documented answer to bad input. Any other exception
// propagates to std::terminate (see above); `where` names the call in the harness.
template <class F>
void expect_input_error(const char* where, F&& f) {
  try {
    f();
  } catch (const tlmoe::InputError&) {
  }
}

inline void check(bool ok, const char* where, const std::string& what) {
  if (!ok) finding(where, "invariant broken: " + what);
}

// The scratch directory of this process, tlmoe-fuzz-<pid>, removed at exit: under
// $TLMOE_FUZZ_TMPDIR, else /dev/shm (tmpfs) when there is one, else the system's temporary
// directory. Every input is written to a file there; on ext4, rewriting a file that was truncated
// costs milliseconds (a flush, ext4's auto_da_alloc), on tmpfs microseconds. A process that
// crashed leaves its directory behind; the next one removes those of processes that are gone.
class ScratchDir {
 public:
  ScratchDir() {
    namespace fs = std::filesystem;
    fs::path base;
    std::error_code ec;
    if (const char* env = std::getenv("TLMOE_FUZZ_TMPDIR"); env && *env)
      base = env;
    else if (fs::is_directory("/dev/shm", ec) && ::access("/dev/shm", W_OK) == 0)
      base = "/dev/shm";
    else
      base = fs::temp_directory_path();
    for (const auto& e : fs::directory_iterator(base, ec)) {
      const std::string name = e.path().filename().string();
      if (name.rfind("tlmoe-fuzz-", 0) != 0) continue;
      char* end = nullptr;
      const long pid = std::strtol(name.c_str() + 11, &end, 10);
      if (pid > 0 && *end == '\0' && ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH)
        fs::remove_all(e.path(), ec);
    }
    path_ = base / ("tlmoe-fuzz-" + std::to_string(::getpid()));
    fs::remove_all(path_, ec);
    if (!fs::create_directories(path_, ec)) {
      std::fprintf(stderr, "cannot create %s: %s\n", path_.c_str(), ec.message().c_str());
      std::abort();
    }
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

inline const std::filesystem::path& scratch() {
  static ScratchDir dir;
  return dir.path();
}

// Replaces the content of `p` (created when missing) without O_TRUNC: written, then cut to size.
inline void write_bytes(const std::filesystem::path& p, std::string_view bytes) {
  const int fd = ::open(p.c_str(), O_WRONLY | O_CREAT, 0644);
  bool ok = fd >= 0;
  for (std::size_t done = 0; ok && done < bytes.size();) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    ok = n > 0;
    if (ok) done += static_cast<std::size_t>(n);
  }
  ok = ok && ::ftruncate(fd, static_cast<off_t>(bytes.size())) == 0;
  if (fd >= 0) ::close(fd);
  if (!ok) {
    std::perror(("cannot write " + p.string()).c_str());
    std::abort();
  }
}

inline std::string_view as_text(const std::uint8_t* data, std::size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

}  // namespace tlmoe::fuzz
