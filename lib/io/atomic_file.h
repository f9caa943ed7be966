// Atomic file and directory writes: nothing half-written is ever visible under the final name.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

namespace tlmoe::io {

// Writes `bytes` to `path.tmp-<pid>` in the same directory, flushes, and renames it over
// `path`. Creates missing parent directories. Throws std::runtime_error on I/O failure and
// removes the temporary file.
void write_file_atomic(const std::filesystem::path& path, std::string_view bytes);

// Reads a whole file; throws DataError(path, 0, ...) when it cannot be opened.
std::string read_file(const std::filesystem::path& path);

// A directory built under a temporary sibling name and moved into place by commit().
// If commit() is never called (an exception unwinds), the temporary directory is removed,
// so a failed command leaves nothing behind. commit() replaces an existing `final` directory.
class StagingDir {
 public:
  explicit StagingDir(std::filesystem::path final_path);
  ~StagingDir();
  StagingDir(const StagingDir&) = delete;
  StagingDir& operator=(const StagingDir&) = delete;

  const std::filesystem::path& path() const { return tmp_; }  // where to write now
  const std::filesystem::path& final_path() const { return final_; }
  void commit();

 private:
  std::filesystem::path final_, tmp_;
  bool committed_ = false;
};

// 64-bit FNV-1a hash of bytes, as 16 lowercase hex digits. Used for content fingerprints
// (cache invalidation), not for security.
std::string fnv1a64_hex(std::string_view bytes);

}  // namespace tlmoe::io
