// Token caches: one tokenized TSV file in a compact, versioned binary file (`.tok`).
//
// Tokenization (docs/method.md §6.1):
//   input  text = " [" + task + "] " + input   (data.task_prefix; else input as is); with
//                 data.instruction, input is preceded by the task's instruction and a space
//   output text = " " + output                 (one sequence per gold answer)
//   ids = <s> encode(text) </s>; a sequence longer than the maximum is cut to max-1 ids and
//   </s> appended again, so every sequence ends with </s>. Cut sequences are counted.
//
// File layout (all integers little endian):
//   offset  size       field
//   0       8          magic "TLMOETOK"
//   8       4          u32 format version (kTokenCacheVersion)
//   12      8          u64 M = manifest length in bytes
//   20      M          manifest: UTF-8 JSON object (TokenCacheManifest below, with "body_hash")
//   20+M    8          u64 E = examples
//           8          u64 Q = sequences = E + total outputs
//           8          u64 N = tokens
//           4*E        u32 outputs per example (>= 1)
//           8*(Q+1)    u64 offsets into the token array; offsets[0] = 0, offsets[Q] = N
//           4*N        i32 token ids
// Sequences are stored example by example: the input, then its outputs in file order;
// sequence q is tokens[offsets[q] .. offsets[q+1]). body_hash = FNV-1a 64 of everything after
// the manifest. The file ends exactly there; any other size is a damaged file.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "data/tsv.h"
#include "text/tokenizer.h"

namespace tlmoe::data {

inline constexpr char kTokenCacheMagic[9] = "TLMOETOK";
inline constexpr std::uint32_t kTokenCacheVersion = 1;

// How text becomes ids; part of the cache key.
struct TokenizeOptions {
  std::int64_t max_input_len = 512;  // including <s> and </s>; >= 2
  std::int64_t max_output_len = 64;  // including <s> and </s>; >= 2
  bool task_prefix = true;           // input text " [task] input"
  std::string instruction;           // put before the input ("" = none): " [task] instruction input"
};

// One tokenized example.
struct TokenizedExample {
  std::vector<std::int32_t> input_ids;                // <s> ... </s>
  std::vector<std::vector<std::int32_t>> output_ids;  // one per gold answer, <s> ... </s>
};

// Lengths and truncation counts of one file, after truncation unless noted.
struct TokenStats {
  std::int64_t examples = 0;
  std::int64_t outputs = 0;        // gold answers over all examples
  std::int64_t input_tokens = 0;   // sum over examples
  std::int64_t output_tokens = 0;  // sum over outputs
  std::int64_t max_input_tokens = 0;
  std::int64_t max_output_tokens = 0;
  std::int64_t longest_input_untruncated = 0;  // before truncation (to choose max lengths)
  std::int64_t longest_output_untruncated = 0;
  std::int64_t truncated_inputs = 0;    // examples whose input was cut
  std::int64_t truncated_outputs = 0;   // outputs that were cut
  std::int64_t truncated_examples = 0;  // examples with the input or any output cut

  void add(const TokenStats& other);  // sums, maxima of maxima
};

// JSON form (the "stats" object of cache and preprocess manifests).
void to_json(nlohmann::json& j, const TokenStats& s);
void from_json(const nlohmann::json& j, TokenStats& s);

// What a cache was built from: equal keys mean the cache is up to date.
struct TokenCacheKey {
  std::string task;
  std::string source_hash;            // io::fnv1a64_hex of the TSV bytes
  std::string tokenizer_fingerprint;  // Tokenizer::fingerprint()
  TokenizeOptions options;

  bool operator==(const TokenCacheKey& o) const;
  bool operator!=(const TokenCacheKey& o) const { return !(*this == o); }
};

struct TokenCacheManifest {
  std::string source;  // the TSV file, as given
  TokenCacheKey key;
  TokenStats stats;
  std::string body_hash;  // filled by serialize / read
};

struct TokenCache {
  TokenCacheManifest manifest;
  std::vector<TokenizedExample> examples;
};

// The text that is tokenized for an input / an output (docs/method.md §6.1).
std::string input_text(const std::string& task, const std::string& input, bool task_prefix,
                       const std::string& instruction = "");
std::string output_text(const std::string& output);

// <s> encode(text) </s>, cut to max_len (>= 2) keeping the final </s>; `truncated` tells
// whether it was cut, `untruncated_len` the length before.
std::vector<std::int32_t> tokenize_sequence(const text::Tokenizer& tok, const std::string& text,
                                            std::int64_t max_len, bool* truncated,
                                            std::int64_t* untruncated_len);

// Tokenizes examples of `task`; fills the manifest's key (options, tokenizer fingerprint, task)
// and stats. source and source_hash are left for the caller.
TokenCache tokenize_examples(const std::vector<TsvExample>& examples, const text::Tokenizer& tok,
                             const std::string& task, const TokenizeOptions& options);

// The file bytes (format above). Computes the body hash.
std::string serialize_token_cache(const TokenCache& cache);

// serialize_token_cache, written atomically to `path` (parent folders created).
void write_token_cache(const std::filesystem::path& path, const TokenCache& cache);

// Reads and checks a whole cache: magic, version, manifest, sizes, offsets, body hash. Throws
// DataError(path, 0, ...) for a damaged file; an older version says to rebuild it with
// `tlmoe preprocess`. Every id must lie in [0, vocab_size) (any non-negative id when vocab_size is
// 0): a cache written for another vocabulary is refused naming the file, the example and the id.
TokenCache read_token_cache(const std::filesystem::path& path, std::int64_t vocab_size = 0);

// Reads the header and manifest and checks the file size against the counts; with
// `check_body_hash` also reads the rest and checks its hash (what preprocess does before it
// reuses a cache). Throws DataError(path, 0, ...) like read_token_cache.
TokenCacheManifest read_token_cache_manifest(const std::filesystem::path& path, bool check_body_hash = false);

}  // namespace tlmoe::data
