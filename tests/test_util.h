// Helpers shared by the tests: temporary directories and running the tlmoe binary.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>

namespace tlmoe::test {

// A fresh directory under the system temp dir, removed when the object dies.
class TempDir {
 public:
  TempDir() {
    std::random_device rd;
    path_ = std::filesystem::temp_directory_path() /
            ("tlmoe-test-" + std::to_string(rd()) + std::to_string(rd()));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& s) const { return path_ / s; }

 private:
  std::filesystem::path path_;
};

inline void write_text(const std::filesystem::path& p, const std::string& s) {
  if (p.has_parent_path()) std::filesystem::create_directories(p.parent_path());
  std::ofstream f(p, std::ios::binary);
  f << s;
}

inline std::string read_text(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

struct RunResult {
  int exit_code;
  std::string output;  // stdout and stderr together
};

// Where the tests find what they need. The build compiles in the paths of this tree; a relocated
// copy of the test executables (the GPU-machine bundle, scripts/device_bundle.sh) points them
// elsewhere with TLMOE_TEST_BINARY, TLMOE_TEST_SOURCE_DIR, TLMOE_TEST_GOLDEN_DIR, TLMOE_TEST_PYTHON.
inline std::string path_setting(const char* env_name, const char* built_in) {
  const char* v = std::getenv(env_name);
  return v && *v ? std::string(v) : std::string(built_in);
}
inline std::string binary() { return path_setting("TLMOE_TEST_BINARY", TLMOE_BINARY); }
inline std::string source_dir() { return path_setting("TLMOE_TEST_SOURCE_DIR", TLMOE_SOURCE_DIR); }

// Runs a shell command line, capturing stdout and stderr together.
inline RunResult run_shell(const std::string& command) {
  const std::string cmd = command + " 2>&1";
  RunResult r{-1, ""};
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0) r.output.append(buf.data(), n);
  int status = ::pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

// Runs `tlmoe <args>` through the shell, capturing output. `args` is shell syntax.
inline RunResult run_tlmoe(const std::string& args) { return run_shell("'" + binary() + "' " + args); }

// A TCP port free right now on 127.0.0.1 (the kernel picks it), for a test's rendezvous.
inline int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t n = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &n);
  const int port = ntohs(a.sin_port);
  ::close(fd);
  return port;
}

}  // namespace tlmoe::test
