// Reading and writing Hugging Face safetensors files.
//
// Layout of a file:
//   bytes [0, 8)        N, the header length, as a little-endian u64
//   bytes [8, 8+N)      the header: UTF-8 JSON, possibly padded with trailing spaces
//   bytes [8+N, end)    the data section: every tensor's bytes, row-major, little-endian
// The header is one JSON object:
//   {"__metadata__": {"key": "value", ...},                        (optional, string values)
//    "<tensor name>": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...}
// where [begin, end) is relative to the start of the data section and
// end - begin == product(shape) * sizeof(dtype); a shape [] is a scalar (one element).
// dtypes: F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL (one byte, 0 or 1).
//
// What this writer produces (byte-for-byte deterministic for the same inputs):
//   - header JSON without spaces, "__metadata__" first (omitted when empty), then the
//     tensors in data order, each with keys in the order dtype, shape, data_offsets;
//   - the header padded with spaces so that 8 + N is a multiple of 8;
//   - tensors ordered by element size (largest first), then by name, and packed without
//     gaps: with the 8-aligned data section every tensor starts at a multiple of its
//     element size, so mmap-based readers get aligned tensors (the order of HF's writer).
// The reader accepts any order, unpadded headers and gaps between tensors; it rejects
// overlapping tensors, bytes beyond the data section, unknown dtypes, duplicate names and
// size mismatches with a DataError naming the file and the tensor.
// Host byte order must be little-endian (checked at compile time).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace tlmoe::io {

struct SafetensorsFile {
  std::vector<std::string> names;                // in file (offset) order
  std::map<std::string, torch::Tensor> tensors;  // CPU, contiguous, owning memory
  std::map<std::string, std::string> metadata;   // "__metadata__"
};

// Writes `tensors` (any device or layout of strides: each is copied to CPU and made
// contiguous one at a time, while it is written) to `path` atomically: the bytes go to a
// temporary sibling file that is flushed, fsynced and renamed over `path`, so a reader
// never sees a half-written file. Creates missing parent directories.
// Names must be non-empty, unique and not "__metadata__"; tensors must be defined, strided
// and of a supported dtype (TORCH_CHECK, c10::Error). I/O failures throw std::runtime_error
// and leave no temporary file behind.
void save_safetensors(const std::filesystem::path& path,
                      const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

// Reads a whole file: each tensor is allocated once and its bytes are read straight into it.
// Every problem with the file throws DataError(path, 0, ...).
SafetensorsFile load_safetensors(const std::filesystem::path& path);

// The header only (names, dtypes, shapes, byte ranges, metadata), without reading tensor
// bytes; validated as load_safetensors validates it, including the ranges against the
// file's size.
struct TensorInfo {
  std::string name;
  torch::Dtype dtype;
  std::vector<int64_t> shape;
  uint64_t begin, end;  // byte range in the data section
};
struct SafetensorsHeader {
  std::vector<TensorInfo> tensors;  // in file (offset) order
  std::map<std::string, std::string> metadata;
};
SafetensorsHeader read_safetensors_header(const std::filesystem::path& path);

}  // namespace tlmoe::io
