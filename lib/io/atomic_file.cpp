#include "io/atomic_file.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>

#include "common/error.h"

namespace fs = std::filesystem;

namespace tlmoe::io {

namespace {
std::string unique_suffix() {
  static std::random_device rd;
  std::ostringstream s;
  s << ".tmp-" << ::getpid() << "-" << std::hex << rd();
  return s.str();
}
}  // namespace

void write_file_atomic(const fs::path& path, std::string_view bytes) {
  if (path.has_parent_path()) fs::create_directories(path.parent_path());
  fs::path tmp = path;
  tmp += unique_suffix();
  {
    std::FILE* f = std::fopen(tmp.c_str(), "wb");
    if (!f) throw fs::filesystem_error("cannot create", tmp, std::error_code(errno, std::generic_category()));
    // The first failure's reason (errno), e.g. "No space left on device", before clean-up runs.
    int err = 0;
    auto check = [&err](bool ok) {
      if (!ok && err == 0) err = errno ? errno : EIO;
    };
    check(std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size());
    check(std::fflush(f) == 0);
    check(::fsync(::fileno(f)) == 0);
    check(std::fclose(f) == 0);
    if (err) {
      std::error_code ignored;
      fs::remove(tmp, ignored);
      throw std::runtime_error("cannot write " + path.string() + ": " + std::strerror(err));
    }
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    const std::string why = ec.message();  // before the clean-up below reuses nothing of it
    std::error_code ignored;
    fs::remove(tmp, ignored);
    throw std::runtime_error("cannot rename into " + path.string() + ": " + why);
  }
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw DataError(path.string(), 0, "cannot open file");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

StagingDir::StagingDir(fs::path final_path) : final_(std::move(final_path)) {
  if (final_.has_filename() == false) final_ = final_.parent_path();
  tmp_ = final_;
  tmp_ += unique_suffix();
  if (tmp_.has_parent_path()) fs::create_directories(tmp_.parent_path());
  fs::create_directories(tmp_);
}

StagingDir::~StagingDir() {
  if (!committed_) {
    std::error_code ec;
    fs::remove_all(tmp_, ec);
  }
}

void StagingDir::commit() {
  std::error_code ec;
  if (fs::exists(final_)) {
    // Move the old directory aside first so that a failure never leaves neither.
    fs::path old = final_;
    old += unique_suffix() + ".old";
    fs::rename(final_, old, ec);
    if (ec) throw std::runtime_error("cannot replace " + final_.string() + ": " + ec.message());
    fs::rename(tmp_, final_, ec);
    if (ec) {
      fs::rename(old, final_);
      throw std::runtime_error("cannot move output into " + final_.string() + ": " + ec.message());
    }
    fs::remove_all(old, ec);
  } else {
    fs::rename(tmp_, final_, ec);
    if (ec) throw std::runtime_error("cannot move output into " + final_.string() + ": " + ec.message());
  }
  committed_ = true;
}

std::string fnv1a64_hex(std::string_view bytes) {
  std::uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

}  // namespace tlmoe::io
