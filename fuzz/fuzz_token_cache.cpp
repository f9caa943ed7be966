// Fuzz target: the token-cache reader (lib/data/token_cache.cpp): read_token_cache and
// read_token_cache_manifest (with and without the body hash) on the input as a .tok file.
//
// A mutated body almost never matches the manifest's "body_hash" (FNV-1a 64), which would keep
// the fuzzer in front of the hash check. So each input is read twice: as it is, and with the 16
// hex digits after "body_hash" in the manifest replaced by the hash of the bytes after the
// manifest (same length, so every offset stays where it was).
#include <cstring>
#include <string>

#include "data/token_cache.h"
#include "fuzz_util.h"
#include "io/atomic_file.h"

using namespace tlmoe;

namespace {

// The input with its body hash corrected, or "" when it has no hash where one is expected.
std::string with_fixed_hash(std::string bytes) {
  constexpr std::size_t kPreamble = 8 + 4 + 8;
  if (bytes.size() < kPreamble) return "";
  std::uint64_t manifest_len = 0;
  for (int i = 7; i >= 0; --i) manifest_len = (manifest_len << 8) | static_cast<unsigned char>(bytes[12 + i]);
  if (manifest_len > bytes.size() - kPreamble) return "";
  const std::size_t body = kPreamble + static_cast<std::size_t>(manifest_len);
  const std::string_view manifest(bytes.data() + kPreamble, static_cast<std::size_t>(manifest_len));
  const std::size_t key = manifest.find("\"body_hash\"");
  if (key == std::string_view::npos) return "";
  const std::size_t quote = manifest.find('"', key + 11);
  if (quote == std::string_view::npos || quote + 17 > manifest.size()) return "";
  const std::string hash = io::fnv1a64_hex(std::string_view(bytes).substr(body));
  if (hash.size() != 16) return "";
  std::memcpy(bytes.data() + kPreamble + quote + 1, hash.data(), 16);
  return bytes;
}

void read_all(const std::string& bytes, const char* tag) {
  const auto file = fuzz::scratch() / "cache.tok";
  fuzz::write_bytes(file, bytes);
  bool full_ok = false;
  data::TokenCache cache;
  fuzz::expect_input_error(tag, [&] {
    cache = data::read_token_cache(file);
    full_ok = true;
  });
  // The manifest readers check less (no offsets, no output counts), never more: what
  // read_token_cache accepts, they accept.
  for (bool check_body_hash : {true, false})
    fuzz::expect_input_error(tag, [&] {
      try {
        data::read_token_cache_manifest(file, check_body_hash);
      } catch (const InputError& e) {
        if (full_ok)
          fuzz::finding(tag, std::string("read_token_cache_manifest refuses what read_token_cache accepts: ") + e.what());
        throw;
      }
    });
  if (full_ok) {
    // A cache that reads back serializes to the same bytes (the writer is deterministic), except
    // for manifest formatting the reader tolerates; at least the body must re-read identically.
    const std::string again = data::serialize_token_cache(cache);
    fuzz::write_bytes(file, again);
    fuzz::expect_input_error(tag, [&] {
      try {
        auto back = data::read_token_cache(file);
        fuzz::check(back.examples.size() == cache.examples.size(), tag, "serialize -> read changes the examples");
        for (std::size_t e = 0; e < back.examples.size(); ++e)
          fuzz::check(back.examples[e].input_ids == cache.examples[e].input_ids &&
                          back.examples[e].output_ids == cache.examples[e].output_ids,
                      tag, "serialize -> read changes the token ids");
      } catch (const InputError& e) {
        fuzz::finding(tag, std::string("a cache that was read does not read back after serialize: ") + e.what());
      }
    });
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string bytes(fuzz::as_text(data, size));
  read_all(bytes, "read_token_cache");
  const std::string fixed = with_fixed_hash(bytes);
  if (!fixed.empty() && fixed != bytes) read_all(fixed, "read_token_cache (body hash fixed)");
  return 0;
}
