#include "io/atomic_file.h"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <algorithm>
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

namespace {
std::function<bool(const fs::path&)> g_write_fault;

// Writes `bytes` to a new temporary sibling of `path`, flushed and fsynced, and returns its name;
// on failure removes it and throws naming `path` and the reason.
fs::path write_temporary(const fs::path& path, std::string_view bytes) {
  if (path.has_parent_path()) fs::create_directories(path.parent_path());
  fs::path tmp = path;
  tmp += unique_suffix();
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
  if (!err && g_write_fault && g_write_fault(path)) err = ENOSPC;
  if (err) {
    std::error_code ignored;
    fs::remove(tmp, ignored);
    throw std::runtime_error("cannot write " + path.string() + ": " + std::strerror(err));
  }
  return tmp;
}
}  // namespace

void set_write_fault(std::function<bool(const fs::path&)> fault) { g_write_fault = std::move(fault); }

void write_files_atomic(const std::vector<std::pair<fs::path, std::string>>& files) {
  std::vector<fs::path> tmps;
  try {
    for (const auto& [path, bytes] : files) tmps.push_back(write_temporary(path, bytes));
  } catch (...) {
    std::error_code ignored;
    for (const auto& t : tmps) fs::remove(t, ignored);
    throw;
  }
  for (std::size_t i = 0; i < files.size(); ++i) {
    std::error_code ec;
    fs::rename(tmps[i], files[i].first, ec);
    if (ec) {
      const std::string why = ec.message();
      std::error_code ignored;
      for (std::size_t j = i; j < tmps.size(); ++j) fs::remove(tmps[j], ignored);
      throw std::runtime_error("cannot rename into " + files[i].first.string() + ": " + why);
    }
  }
}

void write_file_atomic(const fs::path& path, std::string_view bytes) {
  const fs::path tmp = write_temporary(path, bytes);
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    const std::string why = ec.message();  // before the clean-up below reuses nothing of it
    std::error_code ignored;
    fs::remove(tmp, ignored);
    throw std::runtime_error("cannot rename into " + path.string() + ": " + why);
  }
}

std::string file_kind_problem(const fs::path& path) {
  std::error_code ec;
  const auto st = fs::status(path, ec);
  if (ec || st.type() == fs::file_type::not_found) return "file not found";
  switch (st.type()) {
    case fs::file_type::regular: return "";
    case fs::file_type::directory: return "is a directory, not a file";
    case fs::file_type::fifo: return "is a FIFO (named pipe), not a regular file: tlmoe reads only regular files";
    case fs::file_type::socket: return "is a socket, not a regular file";
    case fs::file_type::block:
    case fs::file_type::character: return "is a device, not a regular file";
    default: return "is not a regular file";
  }
}

std::string read_file(const fs::path& path) {
  if (const std::string why = file_kind_problem(path); !why.empty()) throw DataError(path.string(), 0, why);
  std::ifstream in(path, std::ios::binary);
  if (!in) throw DataError(path.string(), 0, std::string("cannot open file: ") + std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw DataError(path.string(), 0, "cannot read file");
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

namespace {
std::function<void(int, const fs::path&)> g_commit_hook;
}  // namespace

void set_commit_hook(std::function<void(int, const fs::path&)> hook) { g_commit_hook = std::move(hook); }

void StagingDir::commit() {
  auto step = [&](int n) {
    if (!g_commit_hook) return;
    try {
      g_commit_hook(n, final_);
    } catch (const SimulatedCrash&) {
      committed_ = true;  // a killed process cleans nothing up
      throw;
    }
  };
  std::error_code ec;
  if (fs::exists(final_)) {
    // Move the old directory aside first so that a failure never leaves neither; the old name
    // carries the staged one's suffix, which pairs them for recover_staged().
    fs::path old = tmp_;
    old += ".old";
    step(1);
    fs::rename(final_, old, ec);
    if (ec) throw std::runtime_error("cannot replace " + final_.string() + ": " + ec.message());
    step(2);
    fs::rename(tmp_, final_, ec);
    if (ec) {
      const std::string why = ec.message();
      std::error_code ignored;
      fs::rename(old, final_, ignored);
      throw std::runtime_error("cannot move output into " + final_.string() + ": " + why);
    }
    step(3);
    fs::remove_all(old, ec);
  } else {
    step(2);
    fs::rename(tmp_, final_, ec);
    if (ec) throw std::runtime_error("cannot move output into " + final_.string() + ": " + ec.message());
  }
  committed_ = true;
  step(4);
}

namespace {

// The writer's pid in a temporary name "<name>.tmp-<pid>-<hex>…" (unique_suffix), read at `at`, the
// position of ".tmp-"; 0 when the name is not one.
long temporary_pid(const std::string& name, std::size_t at) {
  if (name.compare(at, 5, ".tmp-") != 0) return 0;
  const char* digits = name.c_str() + at + 5;
  char* end = nullptr;
  const long pid = std::strtol(digits, &end, 10);
  return end != digits && *end == '-' && pid > 0 ? pid : 0;
}

bool running(long pid) { return ::kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM; }

// The pid of a "<name>.tmp-<pid>-<hex>[.old]" sibling of `final_path`, or 0 when `p` is not one.
long leftover_pid(const fs::path& p, const fs::path& final_path) {
  const std::string name = p.filename().string(), base = final_path.filename().string();
  return name.rfind(base, 0) == 0 && name.size() > base.size() ? temporary_pid(name, base.size()) : 0;
}

bool ends_with_old(const std::string& s) { return s.size() > 4 && s.compare(s.size() - 4, 4, ".old") == 0; }

}  // namespace

std::string recover_staged(const fs::path& final_path, bool all_leftovers) {
  const fs::path parent = final_path.has_parent_path() ? final_path.parent_path() : fs::path(".");
  std::error_code ec;
  if (!fs::is_directory(parent, ec)) return "";
  std::vector<fs::path> staged, old;
  for (const auto& e : fs::directory_iterator(parent, ec)) {
    const long pid = leftover_pid(e.path(), final_path);
    if (pid == 0) continue;
    if (!all_leftovers && running(pid)) continue;  // a live writer's
    (ends_with_old(e.path().filename().string()) ? old : staged).push_back(e.path());
  }
  if (staged.empty() && old.empty()) return "";
  std::string action;
  if (!fs::exists(final_path)) {
    for (const auto& o : old) {
      fs::path pair = o;
      pair.replace_extension();  // drop ".old"
      if (std::find(staged.begin(), staged.end(), pair) != staged.end()) {
        fs::rename(pair, final_path);
        action = "finished an interrupted commit of " + final_path.string() + " (" + pair.filename().string() + ")";
        break;
      }
    }
    if (action.empty() && !old.empty()) {
      fs::rename(old.front(), final_path);
      action = "rolled back an interrupted commit of " + final_path.string() + " (" + old.front().filename().string() + ")";
    }
  }
  std::size_t removed = 0;
  for (const auto& v : {staged, old})
    for (const auto& p : v)
      if (fs::exists(p, ec)) fs::remove_all(p, ec), ++removed;
  if (removed) action += std::string(action.empty() ? "" : "; ") + "removed " + std::to_string(removed) + " leftover(s) of " + final_path.string();
  return action;
}

void StagingDir::merge_into_final() {
  fs::create_directories(final_);
  std::vector<fs::path> files;
  for (const auto& e : fs::recursive_directory_iterator(tmp_))
    if (!e.is_directory()) files.push_back(fs::relative(e.path(), tmp_));
  for (const auto& rel : files) {
    const fs::path to = final_ / rel;
    if (to.has_parent_path()) fs::create_directories(to.parent_path());
    std::error_code ec;
    fs::rename(tmp_ / rel, to, ec);
    if (ec) throw std::runtime_error("cannot move " + rel.string() + " into " + final_.string() + ": " + ec.message());
  }
  committed_ = true;
  std::error_code ec;
  fs::remove_all(tmp_, ec);
}

std::vector<fs::path> remove_stale_temporaries(const fs::path& dir) {
  std::vector<fs::path> stale;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return stale;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    const std::string name = it->path().filename().string();
    const auto at = name.find(".tmp-");
    const long pid = at == std::string::npos ? 0 : temporary_pid(name, at);
    if (pid == 0 || running(pid)) continue;  // not a temporary, or its writer still runs
    stale.push_back(it->path());
    if (it->is_directory(ec)) it.disable_recursion_pending();
  }
  for (const auto& p : stale) fs::remove_all(p, ec);
  return stale;
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
