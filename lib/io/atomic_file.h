// Atomic file and directory writes: nothing half-written is ever visible under the final name.
#pragma once

#include <filesystem>
#include <functional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tlmoe::io {

// Writes `bytes` to `path.tmp-<pid>` in the same directory, flushes, and renames it over
// `path`. Creates missing parent directories. Throws std::runtime_error on I/O failure and
// removes the temporary file.
void write_file_atomic(const std::filesystem::path& path, std::string_view bytes);

// Several files written all or none: every file goes to a temporary sibling first (flushed and
// fsynced); only when all are written are they renamed into place, which needs no space. A failed
// write (a full disk) removes the temporaries and leaves every target as it was; the error names
// the file and the reason ("No space left on device").
void write_files_atomic(const std::vector<std::pair<std::filesystem::path, std::string>>& files);

// Test hook, nullptr in normal use: a write of a file for which it returns true fails as on a full
// disk (ENOSPC), in write_file_atomic, write_files_atomic and the staged outputs built on them.
void set_write_fault(std::function<bool(const std::filesystem::path&)> fault);

// "" for a regular file (symbolic links followed), else why it cannot be read as one: "file not
// found", "is a directory, not a file", "is a FIFO (named pipe) ...": reading a FIFO would block.
std::string file_kind_problem(const std::filesystem::path& path);

// Reads a whole regular file; throws DataError(path, 0, ...) naming why it cannot (not found, a
// directory or FIFO, unreadable).
std::string read_file(const std::filesystem::path& path);

// A directory built under a temporary sibling name and moved into place by commit().
// If commit() is never called (an exception unwinds), the temporary directory is removed,
// so a failed command leaves nothing behind. commit() replaces an existing `final` directory in
// three steps: (1) `final` is renamed to `final.tmp-<pid>-<hex>.old`, (2) the staged
// `final.tmp-<pid>-<hex>` (complete: commit() is called only once everything is written) is
// renamed to `final`, (3) the old one is removed. A process killed between (1) and (2) leaves no
// `final` but both complete directories under names that pair them: recover_staged() finishes
// that commit; killed elsewhere, it leaves `final` intact and only leftovers to remove.
class StagingDir {
 public:
  explicit StagingDir(std::filesystem::path final_path);
  ~StagingDir();
  StagingDir(const StagingDir&) = delete;
  StagingDir& operator=(const StagingDir&) = delete;

  const std::filesystem::path& path() const { return tmp_; }  // where to write now
  const std::filesystem::path& final_path() const { return final_; }
  void commit();
  // For an output folder that may hold the user's other files: moves every file of the staged
  // tree into `final` (created if missing; same-named files replaced, one rename each, no space
  // needed) instead of replacing the folder, then removes the staged one.
  void merge_into_final();

 private:
  std::filesystem::path final_, tmp_;
  bool committed_ = false;
};

// What recover_staged() did: "" (nothing to do), or one line for the log.
// Leftovers of `final` (its "final.tmp-<pid>-<hex>" and "….old" siblings) are those of processes
// that no longer run on this host, or, with `all_leftovers` (the caller holds the directory's
// lock, so no other writer exists), every one. Then:
//   `final` missing, a staged directory and its paired .old present  -> the commit is finished
//                                                                       (staged -> final, old removed)
//   `final` missing, a .old alone                                    -> rolled back (old -> final)
//   anything else                                                    -> leftovers removed
std::string recover_staged(const std::filesystem::path& final_path, bool all_leftovers);

// Test hook, nullptr in normal use: called with the step StagingDir::commit() is about to take (1,
// 2, 3 as above; 4 when done) and the final path. A hook that throws SimulatedCrash leaves the
// file system as a kill at that instant would: commit() and the destructor clean nothing up.
struct SimulatedCrash : std::runtime_error {
  using std::runtime_error::runtime_error;
};
void set_commit_hook(std::function<void(int step, const std::filesystem::path& final_path)> hook);

// Removes the temporaries ("<name>.tmp-<pid>-<hex>…", files or folders) under `dir` (recursively)
// whose writing process no longer runs on this host, and returns their paths: what a killed
// writer left behind. Those of live processes are left alone.
std::vector<std::filesystem::path> remove_stale_temporaries(const std::filesystem::path& dir);

// 64-bit FNV-1a hash of bytes, as 16 lowercase hex digits. Used for content fingerprints
// (cache invalidation), not for security.
std::string fnv1a64_hex(std::string_view bytes);

}  // namespace tlmoe::io
