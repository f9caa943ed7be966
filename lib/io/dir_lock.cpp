#include "io/dir_lock.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <system_error>

#include "common/error.h"

namespace fs = std::filesystem;

namespace tlmoe::io {

std::string host_name() {
  char buf[256] = {0};
  if (::gethostname(buf, sizeof buf - 1) != 0 || buf[0] == '\0') return "localhost";
  return buf;
}

namespace {

// Creates the lock file exclusively with "pid host"; false when it exists already.
bool try_create(const fs::path& p) {
  const int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0644);
  if (fd < 0) {
    if (errno == EEXIST) return false;
    throw fs::filesystem_error("cannot create a lock file", p, std::error_code(errno, std::generic_category()));
  }
  const std::string text = std::to_string(::getpid()) + " " + host_name() + "\n";
  const bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  const int err = errno;
  ::close(fd);
  if (!ok) throw fs::filesystem_error("cannot write a lock file", p, std::error_code(err, std::generic_category()));
  return true;
}

}  // namespace

DirLock::DirLock(const fs::path& dir, std::ostream& log) : path_(dir / ".tlmoe.lock") {
  fs::create_directories(dir);
  for (int attempt = 0; attempt < 3; ++attempt) {
    if (try_create(path_)) return;
    std::ifstream in(path_);
    long pid = 0;
    std::string host;
    in >> pid >> host;
    if (host.empty()) host = "?";
    const bool here = host == host_name();
    if (!here)
      throw UsageError(dir.string() + " is in use by process " + std::to_string(pid) + " on host " + host + " (" +
                       path_.string() + "); remove that file if the run there is gone");
    if (pid > 0 && (::kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM))
      throw UsageError(dir.string() + " is in use by process " + std::to_string(pid) + " on " + host +
                       " (another tlmoe writes there; " + path_.string() + ")");
    log << "taking over " << path_.string() << " of process " << pid << ", which no longer runs\n";
    std::error_code ec;
    fs::remove(path_, ec);
  }
  throw UsageError("cannot take the lock " + path_.string() + " (it keeps reappearing)");
}

DirLock::~DirLock() {
  std::error_code ec;
  fs::remove(path_, ec);
}

}  // namespace tlmoe::io
