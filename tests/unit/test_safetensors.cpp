// safetensors reader/writer: round trips, hand-built reference bytes in both directions,
// and every kind of broken file.
// torch before Catch: c10's logging header defines a one-argument CHECK that Catch replaces.
#include <torch/torch.h>

#include <catch2/catch.hpp>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <initializer_list>
#include <limits>
#include <string>
#include <vector>

#include "common/error.h"
#include "io/safetensors.h"
#include "test_util.h"

using tlmoe::DataError;
using tlmoe::io::load_safetensors;
using tlmoe::io::read_safetensors_header;
using tlmoe::io::save_safetensors;
using tlmoe::test::read_text;
using tlmoe::test::TempDir;
using tlmoe::test::write_text;

namespace {

// Bytes from a list of values 0..255.
std::string bytes(std::initializer_list<int> values) {
  std::string s;
  for (int v : values) s.push_back(static_cast<char>(v));
  return s;
}

// The 8-byte little-endian length prefix, built by hand.
std::string u64_le(uint64_t n) {
  std::string s;
  for (int i = 0; i < 8; ++i) s.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  return s;
}

// A whole file: length prefix, header text exactly as given, data bytes.
std::string make_file(const std::string& header, const std::string& data) {
  return u64_le(header.size()) + header + data;
}

// The message of the DataError thrown by load_safetensors (and, when `header_too`, the
// same error from read_safetensors_header); "" when nothing was thrown.
std::string load_error(const std::filesystem::path& p, bool header_too = true) {
  std::string msg;
  try {
    load_safetensors(p);
  } catch (const DataError& e) {
    CHECK(e.file() == p.string());
    CHECK(e.line() == 0);
    msg = e.what();
  }
  if (header_too) {
    std::string header_msg;
    try {
      read_safetensors_header(p);
    } catch (const DataError& e) {
      header_msg = e.what();
    }
    CHECK(header_msg == msg);
  }
  return msg;
}

// Is there anything in `dir` besides `keep`? (temporary files left behind)
std::vector<std::string> other_files(const std::filesystem::path& dir, const std::string& keep) {
  std::vector<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(dir))
    if (e.path().filename() != keep) out.push_back(e.path().filename().string());
  return out;
}

const std::vector<torch::Dtype> kAllDtypes = {
    torch::kFloat64, torch::kFloat32, torch::kFloat16, torch::kBFloat16, torch::kInt64,
    torch::kInt32,   torch::kInt16,   torch::kInt8,    torch::kUInt8,    torch::kBool};

// Small distinct values that every dtype represents exactly.
torch::Tensor sample(torch::Dtype dtype, std::vector<int64_t> shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  auto v = torch::arange(n, torch::kInt64);
  if (dtype == torch::kBool) return (v % 2 == 0).reshape(shape);
  if (dtype == torch::kUInt8) return (v * 3 + 1).to(dtype).reshape(shape);
  if (torch::isFloatingType(dtype)) return ((v.to(torch::kFloat64) - 2) * 0.5).to(dtype).reshape(shape);
  return (v * 7 - 20).to(dtype).reshape(shape);
}

}  // namespace

TEST_CASE("safetensors: every dtype round-trips, incl. scalars and empty tensors", "[safetensors]") {
  TempDir dir;
  const auto path = dir / "all.safetensors";
  std::vector<std::pair<std::string, torch::Tensor>> in;
  for (auto dtype : kAllDtypes) {
    const std::string d = c10::toString(dtype);
    in.emplace_back(d + ".matrix", sample(dtype, {2, 3}));
    in.emplace_back(d + ".scalar", sample(dtype, {}));
    in.emplace_back(d + ".empty", sample(dtype, {0}));
    in.emplace_back(d + ".empty3d", sample(dtype, {2, 0, 3}));
  }
  in.emplace_back("i64.extremes",
                  torch::tensor({std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max()}));
  in.emplace_back("f32.special", torch::tensor({std::numeric_limits<float>::infinity(),
                                                -std::numeric_limits<float>::infinity(), -0.0f,
                                                std::numeric_limits<float>::denorm_min()}));
  save_safetensors(path, in);

  auto out = load_safetensors(path);
  REQUIRE(out.tensors.size() == in.size());
  REQUIRE(out.names.size() == in.size());
  CHECK(out.metadata.empty());
  for (const auto& [name, t] : in) {
    INFO(name);
    REQUIRE(out.tensors.count(name) == 1);
    const auto& got = out.tensors.at(name);
    CHECK(got.scalar_type() == t.scalar_type());
    CHECK(got.sizes() == t.sizes());
    CHECK(got.device().is_cpu());
    CHECK(got.is_contiguous());
    // Each tensor owns exactly its bytes (no view into a shared file buffer).
    CHECK(got.storage().nbytes() == got.nbytes());
    CHECK(torch::equal(got, t));
  }
  // Bitwise equality for the special floats (-0.0 == 0.0 would pass torch::equal).
  auto special = out.tensors.at("f32.special");
  CHECK(std::memcmp(special.data_ptr(), in.back().second.data_ptr(), 16) == 0);
}

TEST_CASE("safetensors: non-contiguous inputs are written as their row-major values", "[safetensors]") {
  TempDir dir;
  const auto path = dir / "nc.safetensors";
  auto base = torch::arange(24, torch::kFloat32).reshape({4, 6});
  std::vector<std::pair<std::string, torch::Tensor>> in = {
      {"transposed", base.t()},
      {"strided", base.slice(1, 0, 6, 2)},
      {"offset", base.narrow(0, 1, 2)[1]},
      {"expanded", torch::arange(3, torch::kInt32).expand({2, 3})},
      {"permuted", torch::arange(24, torch::kInt16).reshape({2, 3, 4}).permute({2, 0, 1})},
      {"requires_grad", torch::ones({2}, torch::requires_grad())},
  };
  REQUIRE_FALSE(in[0].second.is_contiguous());
  save_safetensors(path, in);
  auto out = load_safetensors(path);
  for (const auto& [name, t] : in) {
    INFO(name);
    CHECK(out.tensors.at(name).is_contiguous());
    CHECK(torch::equal(out.tensors.at(name), t.detach().contiguous()));
  }
  CHECK_FALSE(out.tensors.at("requires_grad").requires_grad());
}

TEST_CASE("safetensors: metadata round-trips, none is written when empty", "[safetensors]") {
  TempDir dir;
  const std::map<std::string, std::string> meta = {{"format", "pt"},
                                                   {"quote\"and\\backslash", "line\nbreak\ttab"},
                                                   {"unicode", "Grüße, 東京 ✓"},
                                                   {"empty", ""}};
  const std::vector<std::pair<std::string, torch::Tensor>> in = {
      {"encoder.layers.0.fc1.weight", torch::ones({2, 2})}, {"名前", torch::zeros({1})}};
  save_safetensors(dir / "m.safetensors", in, meta);
  auto out = load_safetensors(dir / "m.safetensors");
  CHECK(out.metadata == meta);
  CHECK(torch::equal(out.tensors.at("名前"), torch::zeros({1})));
  auto header = read_safetensors_header(dir / "m.safetensors");
  CHECK(header.metadata == meta);

  save_safetensors(dir / "none.safetensors", in);
  CHECK(read_text(dir / "none.safetensors").find("__metadata__") == std::string::npos);
  CHECK(load_safetensors(dir / "none.safetensors").metadata.empty());
}

TEST_CASE("safetensors: the reader decodes hand-built bytes", "[safetensors]") {
  TempDir dir;
  // Keys out of data order, arbitrary whitespace, key order inside entries varied, header
  // not padded to 8 bytes, unaligned tensors: all valid.
  const std::string header =
      "{\"w\": {\"dtype\": \"F32\", \"shape\": [2, 2], \"data_offsets\": [3, 19]},\n"
      " \"__metadata__\": {\"format\": \"pt\", \"note\": \"hand-built\"},\n"
      " \"d\": {\"data_offsets\": [39, 47], \"shape\": [], \"dtype\": \"F64\"},\n"
      " \"b\": {\"dtype\": \"BOOL\", \"shape\": [3], \"data_offsets\": [0, 3]},\n"
      " \"i\": {\"dtype\": \"I64\", \"shape\": [2], \"data_offsets\": [19, 35]},\n"
      " \"h\": {\"dtype\": \"BF16\", \"shape\": [2], \"data_offsets\": [35, 39]},\n"
      " \"f\": {\"dtype\": \"F16\", \"shape\": [1], \"data_offsets\": [47, 49]},\n"
      " \"e\": {\"dtype\": \"F32\", \"shape\": [0, 3], \"data_offsets\": [49, 49]}}";
  const std::string data = bytes({0x01, 0x00, 0x01}) +                                // b: true false true
                           bytes({0x00, 0x00, 0xC0, 0x3F, 0x00, 0x00, 0x00, 0xC0,     // w: 1.5  -2
                                  0x00, 0x00, 0x80, 0x3E, 0x00, 0x00, 0x40, 0x40}) +  //    0.25  3
                           bytes({0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,     // i: -1
                                  0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01}) +  //    0x0102030405060708
                           bytes({0x80, 0x3F, 0x00, 0xBF}) +                          // h: 1.0 -0.5 (bf16)
                           bytes({0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0xC0}) +  // d: -2.5
                           bytes({0x00, 0x3C});                                       // f: 1.0 (f16)
  REQUIRE(data.size() == 49);
  const auto path = dir / "hand.safetensors";
  write_text(path, make_file(header, data));

  auto out = load_safetensors(path);
  CHECK(out.names == std::vector<std::string>{"b", "w", "i", "h", "d", "f", "e"});
  CHECK(out.metadata == std::map<std::string, std::string>{{"format", "pt"}, {"note", "hand-built"}});

  const auto& b = out.tensors.at("b");
  CHECK(b.scalar_type() == torch::kBool);
  CHECK(torch::equal(b, torch::tensor({true, false, true})));

  const auto& w = out.tensors.at("w");
  CHECK(w.scalar_type() == torch::kFloat32);
  CHECK(w.sizes() == torch::IntArrayRef{2, 2});
  CHECK(w[0][0].item<float>() == 1.5f);
  CHECK(w[0][1].item<float>() == -2.0f);
  CHECK(w[1][0].item<float>() == 0.25f);
  CHECK(w[1][1].item<float>() == 3.0f);

  const auto& i = out.tensors.at("i");
  CHECK(i.scalar_type() == torch::kInt64);
  CHECK(i[0].item<int64_t>() == -1);
  CHECK(i[1].item<int64_t>() == 0x0102030405060708LL);

  const auto& h = out.tensors.at("h");
  CHECK(h.scalar_type() == torch::kBFloat16);
  CHECK(h[0].item<float>() == 1.0f);
  CHECK(h[1].item<float>() == -0.5f);

  const auto& d = out.tensors.at("d");
  CHECK(d.scalar_type() == torch::kFloat64);
  CHECK(d.dim() == 0);
  CHECK(d.item<double>() == -2.5);

  const auto& f = out.tensors.at("f");
  CHECK(f.scalar_type() == torch::kFloat16);
  CHECK(f[0].item<float>() == 1.0f);

  const auto& e = out.tensors.at("e");
  CHECK(e.sizes() == torch::IntArrayRef{0, 3});

  auto hdr = read_safetensors_header(path);
  REQUIRE(hdr.tensors.size() == 7);
  CHECK(hdr.tensors[2].name == "i");
  CHECK(hdr.tensors[2].dtype == torch::kInt64);
  CHECK(hdr.tensors[2].shape == std::vector<int64_t>{2});
  CHECK(hdr.tensors[2].begin == 19);
  CHECK(hdr.tensors[2].end == 35);
  CHECK(hdr.tensors[4].shape.empty());
  CHECK(hdr.metadata.at("note") == "hand-built");
}

TEST_CASE("safetensors: the writer produces hand-built bytes", "[safetensors]") {
  TempDir dir;
  const auto path = dir / "w.safetensors";

  SECTION("one F32 tensor") {
    save_safetensors(path, {{"a", torch::tensor({1.5f, -2.0f})}});
    // 54-byte header + 2 spaces = 56 = 0x38.
    const std::string expected = bytes({0x38, 0, 0, 0, 0, 0, 0, 0}) +
                                 "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}" + "  " +
                                 bytes({0x00, 0x00, 0xC0, 0x3F, 0x00, 0x00, 0x00, 0xC0});
    CHECK(read_text(path) == expected);
  }
  SECTION("with metadata") {
    save_safetensors(path, {{"a", torch::tensor({1.5f, -2.0f})}}, {{"format", "pt"}});
    // 85-byte header + 3 spaces = 88 = 0x58.
    const std::string expected = bytes({0x58, 0, 0, 0, 0, 0, 0, 0}) +
                                 "{\"__metadata__\":{\"format\":\"pt\"},"
                                 "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}" +
                                 "   " + bytes({0x00, 0x00, 0xC0, 0x3F, 0x00, 0x00, 0x00, 0xC0});
    CHECK(read_text(path) == expected);
  }
  SECTION("mixed dtypes: larger elements first, then by name; a scalar") {
    save_safetensors(path, {{"a", torch::tensor({1, -2, 3}, torch::kInt8)},
                            {"c", torch::tensor({-2, 258}, torch::kInt16)},
                            {"b", torch::tensor(0.5f)}});
    // 159-byte header + 1 space = 160 = 0xA0.
    const std::string expected = bytes({0xA0, 0, 0, 0, 0, 0, 0, 0}) +
                                 "{\"b\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]},"
                                 "\"c\":{\"dtype\":\"I16\",\"shape\":[2],\"data_offsets\":[4,8]},"
                                 "\"a\":{\"dtype\":\"I8\",\"shape\":[3],\"data_offsets\":[8,11]}}" +
                                 " " +
                                 bytes({0x00, 0x00, 0x00, 0x3F,  // b: 0.5
                                        0xFE, 0xFF, 0x02, 0x01,  // c: -2 258
                                        0x01, 0xFE, 0x03});      // a: 1 -2 3
    CHECK(read_text(path) == expected);
    CHECK(load_safetensors(path).names == std::vector<std::string>{"b", "c", "a"});
  }
  SECTION("no tensors") {
    save_safetensors(path, {});
    CHECK(read_text(path) == bytes({8, 0, 0, 0, 0, 0, 0, 0}) + "{}      ");
    auto out = load_safetensors(path);
    CHECK(out.names.empty());
    CHECK(out.tensors.empty());
  }
}

TEST_CASE("safetensors: the writer aligns every tensor to its element size", "[safetensors]") {
  TempDir dir;
  const auto path = dir / "align.safetensors";
  save_safetensors(path, {{"byte", torch::ones({3}, torch::kUInt8)},
                          {"half", torch::ones({3}, torch::kFloat16)},
                          {"double", torch::ones({1}, torch::kFloat64)},
                          {"float", torch::ones({1}, torch::kFloat32)},
                          {"bool", torch::ones({1}, torch::kBool)}});
  const std::string raw = read_text(path);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | static_cast<unsigned char>(raw[i]);
  CHECK((8 + header_len) % 8 == 0);

  auto header = read_safetensors_header(path);
  std::vector<std::string> order;
  uint64_t expected_begin = 0;
  for (const auto& t : header.tensors) {
    order.push_back(t.name);
    CHECK(t.begin == expected_begin);  // packed without gaps
    CHECK(t.begin % torch::elementSize(t.dtype) == 0);
    expected_begin = t.end;
  }
  CHECK(order == std::vector<std::string>{"double", "float", "half", "bool", "byte"});
  CHECK(8 + header_len + expected_begin == raw.size());
}

TEST_CASE("safetensors: saving is atomic and replaces an existing file", "[safetensors]") {
  TempDir dir;
  const auto path = dir / "sub" / "dir" / "model.safetensors";  // parents are created
  save_safetensors(path, {{"x", torch::ones({4})}});
  save_safetensors(path, {{"y", torch::zeros({2}, torch::kInt64)}});
  auto out = load_safetensors(path);
  CHECK(out.names == std::vector<std::string>{"y"});
  CHECK(other_files(path.parent_path(), "model.safetensors").empty());

  // A rejected save leaves the old file untouched and no temporary file behind.
  const std::string before = read_text(path);
  CHECK_THROWS_AS(save_safetensors(path, {{"a", torch::ones({1})}, {"a", torch::ones({1})}}), c10::Error);
  CHECK(read_text(path) == before);
  CHECK(other_files(path.parent_path(), "model.safetensors").empty());
}

TEST_CASE("safetensors: the writer rejects bad inputs", "[safetensors]") {
  TempDir dir;
  const auto path = dir / "bad.safetensors";
  auto message = [&](const std::vector<std::pair<std::string, torch::Tensor>>& in) {
    try {
      save_safetensors(path, in);
    } catch (const c10::Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  CHECK_THAT(message({{"a", torch::ones({1})}, {"a", torch::ones({2})}}),
             Catch::Contains("duplicate tensor name 'a'"));
  CHECK_THAT(message({{"", torch::ones({1})}}), Catch::Contains("empty"));
  CHECK_THAT(message({{"__metadata__", torch::ones({1})}}), Catch::Contains("reserved"));
  CHECK_THAT(message({{"u", torch::Tensor()}}), Catch::Contains("'u' is undefined"));
  CHECK_THAT(message({{"c", torch::ones({2}, torch::kComplexFloat)}}),
             Catch::Contains("'c' has dtype ComplexFloat"));
  CHECK_THAT(message({{"s", torch::ones({2, 2}).to_sparse()}}), Catch::Contains("only dense"));
  CHECK_THAT(message({{"bad\xff", torch::ones({1})}}), Catch::Contains("not valid UTF-8"));
  CHECK_FALSE(std::filesystem::exists(path));
  CHECK(other_files(dir.path(), "").empty());
}

TEST_CASE("safetensors: a large tensor round-trips", "[safetensors]") {
  TempDir dir;
  auto big = torch::randn({1 << 20});  // 4 MiB
  auto small = torch::randint(0, 100, {7}, torch::kInt8);
  save_safetensors(dir / "big.safetensors", {{"big", big}, {"small", small}});
  auto out = load_safetensors(dir / "big.safetensors");
  CHECK(torch::equal(out.tensors.at("big"), big));
  CHECK(torch::equal(out.tensors.at("small"), small));
}

TEST_CASE("safetensors: broken files throw DataError naming the problem", "[safetensors]") {
  TempDir dir;
  const auto path = dir / "broken.safetensors";
  const std::string f32_entry = "{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}";
  const std::string eight_bytes = bytes({0, 0, 0x80, 0x3F, 0, 0, 0, 0x40});

  SECTION("missing file") {
    CHECK_THAT(load_error(dir / "nope.safetensors"), Catch::Contains("file not found"));
  }
  SECTION("shorter than the length prefix") {
    write_text(path, "abc");
    CHECK_THAT(load_error(path), Catch::Contains("shorter than the 8-byte header length"));
  }
  SECTION("a directory") {
    std::filesystem::create_directories(path);
    CHECK_THAT(load_error(path), Catch::Contains("not a regular file"));
  }
  SECTION("truncated: the last bytes cut off") {
    save_safetensors(path, {{"x", torch::ones({4})}, {"y", torch::ones({3}, torch::kInt16)}});
    std::string raw = read_text(path);
    write_text(path, raw.substr(0, raw.size() - 3));
    const std::string msg = load_error(path);
    CHECK_THAT(msg, Catch::Contains("truncated: tensor 'y' needs bytes [16, 22)"));
    CHECK_THAT(msg, Catch::Contains("but the data section has 19"));
  }
  SECTION("truncated inside the header") {
    save_safetensors(path, {{"x", torch::ones({4})}});
    write_text(path, read_text(path).substr(0, 20));
    CHECK_THAT(load_error(path), Catch::Contains("truncated or not a safetensors file"));
  }
  SECTION("corrupted header length") {
    save_safetensors(path, {{"x", torch::ones({4})}});
    std::string raw = read_text(path);
    raw.replace(0, 8, u64_le(0x0000123400000000ULL));
    write_text(path, raw);
    CHECK_THAT(load_error(path), Catch::Contains("truncated or not a safetensors file"));
  }
  SECTION("header length too short to hold the JSON") {
    std::string raw = make_file("{\"a\":" + f32_entry + "}", eight_bytes);
    raw.replace(0, 8, u64_le(10));
    write_text(path, raw);
    CHECK_THAT(load_error(path), Catch::Contains("header is not valid JSON"));
  }
  SECTION("bad JSON") {
    write_text(path, make_file("{\"a\": {\"dtype\": \"F32\",", eight_bytes));
    CHECK_THAT(load_error(path), Catch::Contains("header is not valid JSON"));
  }
  SECTION("not an object") {
    write_text(path, make_file("[1, 2]", ""));
    CHECK_THAT(load_error(path), Catch::Contains("header is not a JSON object"));
  }
  SECTION("entry missing a field") {
    write_text(path, make_file("{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", eight_bytes));
    CHECK_THAT(load_error(path), Catch::Contains("tensor 'a': entry has no \"shape\""));
    write_text(path, make_file("{\"a\":{\"shape\":[2],\"data_offsets\":[0,8]}}", eight_bytes));
    CHECK_THAT(load_error(path), Catch::Contains("tensor 'a': entry has no \"dtype\""));
    write_text(path, make_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", eight_bytes));
    CHECK_THAT(load_error(path), Catch::Contains("tensor 'a': entry has no \"data_offsets\""));
  }
  SECTION("unknown dtype") {
    write_text(
        path, make_file("{\"a\":{\"dtype\":\"F8_E4M3\",\"shape\":[8],\"data_offsets\":[0,8]}}", eight_bytes));
    const std::string msg = load_error(path);
    CHECK_THAT(msg, Catch::Contains("tensor 'a': unknown dtype 'F8_E4M3'"));
    CHECK_THAT(msg, Catch::Contains("BF16"));  // lists the supported ones
  }
  SECTION("offsets inconsistent with dtype and shape") {
    write_text(path,
               make_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", eight_bytes));
    CHECK_THAT(load_error(path),
               Catch::Contains("tensor 'a': data_offsets [0, 4) span 4 bytes but dtype F32 with "
                               "shape [2] needs 8"));
  }
  SECTION("offsets beyond the data section") {
    write_text(path, make_file("{\"a\":" + f32_entry + "}", eight_bytes.substr(0, 4)));
    CHECK_THAT(load_error(path),
               Catch::Contains("truncated: tensor 'a' needs bytes [0, 8) but the data section has 4"));
  }
  SECTION("overlapping tensors") {
    write_text(path, make_file("{\"a\":" + f32_entry +
                                   ",\"b\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[4,8]}}",
                               eight_bytes));
    CHECK_THAT(load_error(path), Catch::Contains("tensors 'a' [0, 8) and 'b' [4, 8) overlap"));
  }
  SECTION("end before begin, negative or fractional numbers") {
    write_text(path,
               make_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,0]}}", eight_bytes));
    CHECK_THAT(load_error(path), Catch::Contains("tensor 'a': data_offsets [8, 0) end before"));
    write_text(path,
               make_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", eight_bytes));
    CHECK_THAT(load_error(path), Catch::Contains("\"shape\" holds -2"));
    write_text(path,
               make_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8.0]}}", eight_bytes));
    CHECK_THAT(load_error(path), Catch::Contains("tensor 'a': \"data_offsets\" is [0,8.0]"));
  }
  SECTION("a shape whose byte count overflows") {
    write_text(path, make_file("{\"a\":{\"dtype\":\"F64\",\"shape\":[4294967296,4294967296],"
                               "\"data_offsets\":[0,0]}}",
                               ""));
    CHECK_THAT(load_error(path), Catch::Contains("is too large"));
  }
  SECTION("duplicate tensor names") {
    write_text(path, make_file("{\"a\":" + f32_entry + ",\"a\":" + f32_entry + "}", eight_bytes));
    CHECK_THAT(load_error(path), Catch::Contains("duplicate tensor name 'a'"));
  }
  SECTION("duplicate key inside an entry") {
    write_text(path, make_file("{\"a\":{\"dtype\":\"F32\",\"dtype\":\"I32\",\"shape\":[2],"
                               "\"data_offsets\":[0,8]}}",
                               eight_bytes));
    CHECK_THAT(load_error(path), Catch::Contains("duplicate key 'dtype'"));
  }
  SECTION("metadata that is not string to string") {
    write_text(path, make_file("{\"__metadata__\":{\"step\":3},\"a\":" + f32_entry + "}", eight_bytes));
    CHECK_THAT(load_error(path), Catch::Contains("\"__metadata__\" must map strings to strings; key 'step'"));
  }
  SECTION("a BOOL byte that is not 0 or 1 (only load reads bytes)") {
    write_text(path, make_file("{\"m\":{\"dtype\":\"BOOL\",\"shape\":[3],\"data_offsets\":[0,3]}}",
                               bytes({1, 2, 0})));
    CHECK_THAT(load_error(path, /*header_too=*/false),
               Catch::Contains("tensor 'm': BOOL element 1 has byte value 2"));
    CHECK_NOTHROW(read_safetensors_header(path));
  }
}

TEST_CASE("safetensors: the reader tolerates gaps and trailing bytes", "[safetensors]") {
  TempDir dir;
  const auto path = dir / "gaps.safetensors";
  write_text(path, make_file("{\"a\":{\"dtype\":\"I8\",\"shape\":[1],\"data_offsets\":[2,3]},"
                             "\"z\":{\"dtype\":\"I8\",\"shape\":[0],\"data_offsets\":[0,0]}}",
                             bytes({9, 9, 5, 9})));
  auto out = load_safetensors(path);
  CHECK(out.names == std::vector<std::string>{"z", "a"});
  CHECK(out.tensors.at("a").item<int8_t>() == 5);
  CHECK(out.tensors.at("z").numel() == 0);
}
