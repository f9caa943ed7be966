// One writer per output directory (docs/train.md, Resume and stop): a lock file naming the
// holder's pid and host, created exclusively, removed when the holder lets go.
#pragma once

#include <filesystem>
#include <ostream>
#include <string>

namespace tlmoe::io {

// Takes {dir}/.tlmoe.lock ("pid host", created with O_EXCL). A lock held by a live process
// throws UsageError naming the directory, the pid and the host; a lock left by a process of
// this host that no longer runs is taken over (said on `log`). A lock of another host cannot be
// checked and is refused with the lock file's path to remove when that run is known to be gone.
class DirLock {
 public:
  DirLock(const std::filesystem::path& dir, std::ostream& log);
  ~DirLock();
  DirLock(const DirLock&) = delete;
  DirLock& operator=(const DirLock&) = delete;

  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// This machine's host name ("localhost" when it has none).
std::string host_name();

}  // namespace tlmoe::io
