#include "io/safetensors.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string_view>
#include <tuple>

#include "common/error.h"
#include "io/json_text.h"

namespace fs = std::filesystem;

namespace tlmoe::io {

static_assert(std::endian::native == std::endian::little,
              "safetensors stores little-endian bytes; this reader/writer copies them verbatim");

namespace {

using json = nlohmann::json;

// A safetensors dtype: its name in the header, the torch dtype and the bytes per element.
struct DtypeEntry {
  std::string_view name;
  torch::Dtype dtype;
  uint64_t size;
};

constexpr DtypeEntry kDtypes[] = {
    {"F64", torch::kFloat64, 8},   {"F32", torch::kFloat32, 4}, {"F16", torch::kFloat16, 2},
    {"BF16", torch::kBFloat16, 2}, {"I64", torch::kInt64, 8},   {"I32", torch::kInt32, 4},
    {"I16", torch::kInt16, 2},     {"I8", torch::kInt8, 1},     {"U8", torch::kUInt8, 1},
    {"BOOL", torch::kBool, 1},
};

// HF's reader refuses headers above 100 MB; so do we (a corrupt length would otherwise make
// us allocate whatever the first 8 bytes say, up to the file size).
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

const DtypeEntry* find_dtype(std::string_view name) {
  for (const auto& d : kDtypes)
    if (d.name == name) return &d;
  return nullptr;
}

const DtypeEntry* find_dtype(torch::Dtype dtype) {
  for (const auto& d : kDtypes)
    if (d.dtype == dtype) return &d;
  return nullptr;
}

std::string supported_dtype_names() {
  std::string s;
  for (const auto& d : kDtypes) {
    if (!s.empty()) s += ", ";
    s += d.name;
  }
  return s;
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

std::string range_str(uint64_t begin, uint64_t end) {
  return "[" + std::to_string(begin) + ", " + std::to_string(end) + ")";
}

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};
using FilePtr = std::unique_ptr<std::FILE, FileCloser>;

// ---- reading ----------------------------------------------------------------------------------

// An open safetensors file with its header parsed and validated.
struct OpenedFile {
  FilePtr file;
  uint64_t data_start = 0;  // 8 + header length
  SafetensorsHeader header;
};

// Parses `text` as JSON; a key that repeats within one object is an error (nlohmann would
// silently keep the last one).
json parse_header_json(const std::string& file, const std::string& text) {
  std::vector<std::set<std::string>> open_objects;  // keys seen, one set per open object
  std::string duplicate;
  bool duplicate_is_tensor = false;
  json::parser_callback_t on_event = [&](int, json::parse_event_t event, json& parsed) {
    switch (event) {
      case json::parse_event_t::object_start:
        open_objects.emplace_back();
        break;
      case json::parse_event_t::object_end:
        if (!open_objects.empty()) open_objects.pop_back();
        break;
      case json::parse_event_t::key:
        if (!open_objects.empty() && duplicate.empty() &&
            !open_objects.back().insert(parsed.get<std::string>()).second) {
          duplicate = parsed.get<std::string>();
          duplicate_is_tensor = open_objects.size() == 1;
        }
        break;
      default:
        break;
    }
    return true;
  };
  json header;
  try {
    header = json::parse(text, on_event);
  } catch (const json::exception& e) {
    throw DataError(file, 0, "header is not valid JSON: " + io::json_error_text(e));
  }
  if (!duplicate.empty()) {
    throw DataError(file, 0,
                    duplicate_is_tensor ? "duplicate tensor name '" + duplicate + "' in the header"
                                        : "duplicate key '" + duplicate + "' in the header");
  }
  return header;
}

// A JSON number that is a non-negative integer, as u64.
bool as_u64(const json& v, uint64_t& out) {
  if (v.is_number_unsigned()) {
    out = v.get<uint64_t>();
    return true;
  }
  if (v.is_number_integer() && v.get<int64_t>() >= 0) {
    out = static_cast<uint64_t>(v.get<int64_t>());
    return true;
  }
  return false;
}

TensorInfo parse_tensor_entry(const std::string& file, const std::string& name, const json& entry) {
  auto fail = [&](const std::string& msg) { return DataError(file, 0, "tensor '" + name + "': " + msg); };
  if (!entry.is_object()) throw fail("entry is not a JSON object");
  for (const char* key : {"dtype", "shape", "data_offsets"})
    if (!entry.contains(key)) throw fail(std::string("entry has no \"") + key + "\"");

  const json& dtype_json = entry["dtype"];
  if (!dtype_json.is_string()) throw fail("\"dtype\" is not a string");
  const std::string dtype_name = dtype_json.get<std::string>();
  const DtypeEntry* dtype = find_dtype(dtype_name);
  if (!dtype) throw fail("unknown dtype '" + dtype_name + "' (supported: " + supported_dtype_names() + ")");

  const json& shape_json = entry["shape"];
  if (!shape_json.is_array()) throw fail("\"shape\" is not an array");
  TensorInfo info;
  info.name = name;
  info.dtype = dtype->dtype;
  uint64_t nbytes = dtype->size;
  bool overflow = false;
  for (const json& dim : shape_json) {
    uint64_t d = 0;
    if (!as_u64(dim, d) || d > static_cast<uint64_t>(INT64_MAX))
      throw fail("\"shape\" holds " + dim.dump() + ", not a non-negative integer");
    info.shape.push_back(static_cast<int64_t>(d));
    overflow = __builtin_mul_overflow(nbytes, d, &nbytes) || overflow;
  }
  if (overflow) throw fail("shape " + shape_str(info.shape) + " is too large");
  uint64_t elements = 1;  // over the non-zero dimensions: a tensor must be addressable even when empty
  for (int64_t d : info.shape)
    if (d > 0 && (__builtin_mul_overflow(elements, static_cast<uint64_t>(d), &elements) || elements > static_cast<uint64_t>(INT64_MAX)))
      throw fail("shape " + shape_str(info.shape) + " is too large");

  const json& offsets = entry["data_offsets"];
  if (!offsets.is_array() || offsets.size() != 2 || !as_u64(offsets[0], info.begin) ||
      !as_u64(offsets[1], info.end))
    throw fail("\"data_offsets\" is " + offsets.dump() + ", not [begin, end] with non-negative integers");
  if (info.end < info.begin)
    throw fail("data_offsets " + range_str(info.begin, info.end) + " end before they begin");
  if (info.end - info.begin != nbytes) {
    throw fail("data_offsets " + range_str(info.begin, info.end) + " span " +
               std::to_string(info.end - info.begin) + " bytes but dtype " + dtype_name + " with shape " +
               shape_str(info.shape) + " needs " + std::to_string(nbytes));
  }
  return info;
}

// Validates the header JSON against a data section of `data_size` bytes.
SafetensorsHeader parse_header(const std::string& file, const std::string& text, uint64_t data_size) {
  json root = parse_header_json(file, text);
  if (!root.is_object()) throw DataError(file, 0, "header is not a JSON object");

  SafetensorsHeader header;
  for (const auto& [key, value] : root.items()) {
    if (key == "__metadata__") {
      if (!value.is_object()) throw DataError(file, 0, "\"__metadata__\" is not a JSON object");
      for (const auto& [mkey, mvalue] : value.items()) {
        if (!mvalue.is_string())
          throw DataError(
              file, 0,
              "\"__metadata__\" must map strings to strings; key '" + mkey + "' holds " + mvalue.dump());
        header.metadata[mkey] = mvalue.get<std::string>();
      }
      continue;
    }
    header.tensors.push_back(parse_tensor_entry(file, key, value));
  }

  auto& ts = header.tensors;
  std::sort(ts.begin(), ts.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
  });
  for (const auto& t : ts) {
    if (t.end > data_size) {
      throw DataError(file, 0,
                      "truncated: tensor '" + t.name + "' needs bytes " + range_str(t.begin, t.end) +
                          " but the data section has " + std::to_string(data_size));
    }
  }
  // Sorted by begin, a tensor overlaps an earlier one iff it starts before the furthest end
  // seen so far. Empty tensors hold no bytes and overlap nothing.
  const TensorInfo* furthest = nullptr;
  for (const auto& t : ts) {
    if (t.begin == t.end) continue;
    if (furthest && t.begin < furthest->end) {
      throw DataError(file, 0,
                      "tensors '" + furthest->name + "' " + range_str(furthest->begin, furthest->end) +
                          " and '" + t.name + "' " + range_str(t.begin, t.end) + " overlap");
    }
    if (!furthest || t.end > furthest->end) furthest = &t;
  }
  return header;
}

OpenedFile open_safetensors(const fs::path& path) {
  const std::string file = path.string();
  OpenedFile out;
  out.file.reset(std::fopen(path.c_str(), "rb"));
  if (!out.file) {
    const int err = errno;
    std::error_code ec;
    if (!fs::exists(path, ec)) throw DataError(file, 0, "file not found");
    throw DataError(file, 0, std::string("cannot open: ") + std::strerror(err));
  }
  struct stat st {};
  if (::fstat(::fileno(out.file.get()), &st) != 0) {
    throw DataError(file, 0, std::string("cannot stat: ") + std::strerror(errno));
  }
  if (!S_ISREG(st.st_mode)) throw DataError(file, 0, "not a regular file");
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  if (file_size < 8) {
    throw DataError(file, 0,
                    "file is " + std::to_string(file_size) +
                        " bytes, shorter than the 8-byte header length: not a safetensors file");
  }

  unsigned char len_bytes[8];
  if (std::fread(len_bytes, 1, 8, out.file.get()) != 8)
    throw DataError(file, 0, "cannot read the header length");
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | len_bytes[i];
  if (header_len > file_size - 8) {
    throw DataError(file, 0,
                    "header length " + std::to_string(header_len) + " is larger than the " +
                        std::to_string(file_size - 8) +
                        " bytes after it: truncated or not a safetensors file");
  }
  if (header_len > kMaxHeaderBytes) {
    throw DataError(file, 0,
                    "header length " + std::to_string(header_len) + " exceeds " +
                        std::to_string(kMaxHeaderBytes) + " bytes: not a safetensors file");
  }
  std::string text(header_len, '\0');
  if (std::fread(text.data(), 1, header_len, out.file.get()) != header_len)
    throw DataError(file, 0, "cannot read the " + std::to_string(header_len) + "-byte header");

  out.data_start = 8 + header_len;
  out.header = parse_header(file, text, file_size - out.data_start);
  return out;
}

}  // namespace

SafetensorsHeader read_safetensors_header(const fs::path& path) { return open_safetensors(path).header; }

SafetensorsFile load_safetensors(const fs::path& path) {
  const std::string file = path.string();
  OpenedFile opened = open_safetensors(path);
  std::FILE* f = opened.file.get();

  SafetensorsFile out;
  out.metadata = std::move(opened.header.metadata);
  uint64_t position = opened.data_start;  // where the next fread starts
  for (const TensorInfo& info : opened.header.tensors) {
    torch::Tensor t = torch::empty(info.shape, torch::TensorOptions().dtype(info.dtype));
    const uint64_t nbytes = info.end - info.begin;
    if (nbytes > 0) {
      const uint64_t offset = opened.data_start + info.begin;
      if (offset != position && ::fseeko(f, static_cast<off_t>(offset), SEEK_SET) != 0)
        throw DataError(file, 0, "cannot seek to tensor '" + info.name + "': " + std::strerror(errno));
      const size_t got = std::fread(t.data_ptr(), 1, nbytes, f);
      if (got != nbytes) {
        // The header was checked against the file size, so the file shrank or failed.
        throw DataError(file, 0,
                        std::ferror(f) ? "cannot read tensor '" + info.name + "': " + std::strerror(errno)
                                       : "truncated: tensor '" + info.name + "' needs bytes " +
                                             range_str(info.begin, info.end) + " but the file ended after " +
                                             std::to_string(got) + " of them");
      }
      position = offset + nbytes;
    }
    if (info.dtype == torch::kBool) {
      // torch requires bool bytes to be 0 or 1; anything else is undefined behaviour later.
      const auto* bytes = static_cast<const unsigned char*>(t.data_ptr());
      for (uint64_t i = 0; i < nbytes; ++i) {
        if (bytes[i] > 1) {
          throw DataError(file, 0,
                          "tensor '" + info.name + "': BOOL element " + std::to_string(i) +
                              " has byte value " + std::to_string(bytes[i]) + " (must be 0 or 1)");
        }
      }
    }
    out.names.push_back(info.name);
    out.tensors.emplace(info.name, std::move(t));
  }
  return out;
}

// ---- writing ----------------------------------------------------------------------------------

namespace {

std::string temp_suffix() {
  static std::random_device rd;
  std::ostringstream s;
  s << ".tmp-" << ::getpid() << "-" << std::hex << rd();
  return s.str();
}

// Removes the temporary file unless release() was called (after the rename).
class TempFileGuard {
 public:
  explicit TempFileGuard(fs::path p) : path_(std::move(p)) {}
  ~TempFileGuard() {
    if (!path_.empty()) {
      std::error_code ec;
      fs::remove(path_, ec);
    }
  }
  TempFileGuard(const TempFileGuard&) = delete;
  TempFileGuard& operator=(const TempFileGuard&) = delete;
  void release() { path_.clear(); }

 private:
  fs::path path_;
};

struct PlannedTensor {
  std::string name;
  const DtypeEntry* dtype;
  std::vector<int64_t> shape;
  uint64_t begin, end;
  const torch::Tensor* tensor;
};

}  // namespace

void save_safetensors(const fs::path& path, const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  // Check every input before creating anything.
  std::vector<PlannedTensor> plan;
  std::set<std::string_view> seen;
  for (const auto& [name, t] : tensors) {
    TORCH_CHECK(!name.empty(), "save_safetensors(", path.string(), "): a tensor name is empty");
    TORCH_CHECK(name != "__metadata__", "save_safetensors(", path.string(),
                "): '__metadata__' is reserved and cannot name a tensor");
    TORCH_CHECK(seen.insert(name).second, "save_safetensors(", path.string(), "): duplicate tensor name '",
                name, "'");
    TORCH_CHECK(t.defined(), "save_safetensors(", path.string(), "): tensor '", name, "' is undefined");
    TORCH_CHECK(t.layout() == torch::kStrided, "save_safetensors(", path.string(), "): tensor '", name,
                "' has layout ", t.layout(), "; only dense (strided) tensors can be saved");
    const DtypeEntry* dtype = find_dtype(t.scalar_type());
    TORCH_CHECK(dtype, "save_safetensors(", path.string(), "): tensor '", name, "' has dtype ",
                t.scalar_type(),
                ", which safetensors files here do not support (supported: ", supported_dtype_names(), ")");
    plan.push_back({name, dtype, t.sizes().vec(), 0, 0, &t});
  }
  // Largest elements first, then by name: each tensor starts at a multiple of its element size.
  std::sort(plan.begin(), plan.end(), [](const PlannedTensor& a, const PlannedTensor& b) {
    if (a.dtype->size != b.dtype->size) return a.dtype->size > b.dtype->size;
    return a.name < b.name;
  });
  uint64_t offset = 0;
  for (auto& p : plan) {
    p.begin = offset;
    offset += static_cast<uint64_t>(p.tensor->numel()) * p.dtype->size;
    p.end = offset;
  }

  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) meta[k] = v;
    header["__metadata__"] = std::move(meta);
  }
  for (const auto& p : plan) {
    nlohmann::ordered_json entry = nlohmann::ordered_json::object();
    entry["dtype"] = std::string(p.dtype->name);
    entry["shape"] = p.shape;
    entry["data_offsets"] = nlohmann::ordered_json::array({p.begin, p.end});
    header[p.name] = std::move(entry);
  }
  std::string header_text;
  try {
    header_text = header.dump();
  } catch (const nlohmann::json::type_error& e) {
    TORCH_CHECK(false, "save_safetensors(", path.string(),
                "): a tensor name or metadata string is not valid UTF-8: ", e.what());
  }
  header_text.append((8 - header_text.size() % 8) % 8, ' ');

  if (path.has_parent_path()) fs::create_directories(path.parent_path());
  fs::path tmp = path;
  tmp += temp_suffix();
  TempFileGuard guard(tmp);
  FilePtr f(std::fopen(tmp.c_str(), "wb"));
  if (!f) throw std::runtime_error("cannot create " + tmp.string() + ": " + std::strerror(errno));
  auto write = [&](const void* data, size_t n) {
    if (n > 0 && std::fwrite(data, 1, n, f.get()) != n)
      throw std::runtime_error("cannot write " + tmp.string() + ": " + std::strerror(errno));
  };

  unsigned char len_bytes[8];
  for (int i = 0; i < 8; ++i) len_bytes[i] = static_cast<unsigned char>(header_text.size() >> (8 * i));
  write(len_bytes, 8);
  write(header_text.data(), header_text.size());
  for (const auto& p : plan) {
    // One tensor at a time on the CPU: a no-op for CPU contiguous tensors.
    torch::Tensor cpu = p.tensor->detach().to(torch::kCPU).resolve_conj().resolve_neg().contiguous();
    const uint64_t nbytes = p.end - p.begin;
    TORCH_INTERNAL_ASSERT(cpu.nbytes() == nbytes);
    write(cpu.data_ptr(), nbytes);
  }
  if (std::fflush(f.get()) != 0 || ::fsync(::fileno(f.get())) != 0)
    throw std::runtime_error("cannot write " + tmp.string() + ": " + std::strerror(errno));
  if (std::fclose(f.release()) != 0)
    throw std::runtime_error("cannot write " + tmp.string() + ": " + std::strerror(errno));

  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec)
    throw std::runtime_error("cannot rename " + tmp.string() + " to " + path.string() + ": " + ec.message());
  guard.release();
}

}  // namespace tlmoe::io
