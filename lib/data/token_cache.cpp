#include "data/token_cache.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <system_error>

#include "common/error.h"
#include "io/atomic_file.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace tlmoe::data {

namespace {

constexpr std::size_t kMagicSize = 8;
constexpr std::size_t kPreambleSize = kMagicSize + 4 + 8;  // magic, version, manifest length
constexpr std::size_t kCountsSize = 3 * 8;                 // E, Q, N

// ---- little-endian encoding -------------------------------------------------------------------

template <typename T>
void put_le(std::string& out, T v) {
  auto u = static_cast<std::make_unsigned_t<T>>(v);
  for (std::size_t i = 0; i < sizeof(T); ++i) out.push_back(static_cast<char>((u >> (8 * i)) & 0xFF));
}

template <typename T>
T get_le(const char* p) {
  std::make_unsigned_t<T> u = 0;
  for (std::size_t i = 0; i < sizeof(T); ++i)
    u |= static_cast<std::make_unsigned_t<T>>(static_cast<unsigned char>(p[i])) << (8 * i);
  return static_cast<T>(u);
}

// Reads fixed-size fields from bytes, throwing a DataError when the file ends too early.
class Reader {
 public:
  Reader(std::string_view bytes, std::string file) : bytes_(bytes), file_(std::move(file)) {}
  template <typename T>
  T get(const char* what) {
    need(sizeof(T), what);
    T v = get_le<T>(bytes_.data() + pos_);
    pos_ += sizeof(T);
    return v;
  }
  std::string_view take(std::size_t n, const char* what) {
    need(n, what);
    std::string_view s = bytes_.substr(pos_, n);
    pos_ += n;
    return s;
  }
  std::size_t pos() const { return pos_; }
  std::size_t remaining() const { return bytes_.size() - pos_; }

 private:
  void need(std::size_t n, const char* what) const {
    if (remaining() < n)
      throw DataError(file_, 0,
                      std::string("damaged token cache: the file ends inside the ") + what + " (" +
                          std::to_string(bytes_.size()) +
                          " bytes; truncated); rebuild it with `tlmoe preprocess`");
  }
  std::string_view bytes_;
  std::string file_;
  std::size_t pos_ = 0;
};

[[noreturn]] void damaged(const std::string& file, const std::string& what) {
  throw DataError(file, 0, "damaged token cache: " + what + "; rebuild it with `tlmoe preprocess`");
}

// ---- manifest JSON ------------------------------------------------------------------------------

json manifest_to_json(const TokenCacheManifest& m) {
  json j{{"format", "tlmoe token cache"},
              {"version", kTokenCacheVersion},
              {"source", m.source},
              {"task", m.key.task},
              {"source_hash", m.key.source_hash},
              {"tokenizer", m.key.tokenizer_fingerprint},
              {"max_input_len", m.key.options.max_input_len},
              {"max_output_len", m.key.options.max_output_len},
              {"task_prefix", m.key.options.task_prefix},
              {"stats", m.stats},
              {"body_hash", m.body_hash}};
  if (!m.key.options.instruction.empty()) j["instruction"] = m.key.options.instruction;  // absent: none
  return j;
}

TokenCacheManifest manifest_from_json(std::string_view text, const std::string& file) {
  try {
    json j = json::parse(text);
    TokenCacheManifest m;
    m.source = j.at("source").get<std::string>();
    m.key.task = j.at("task").get<std::string>();
    m.key.source_hash = j.at("source_hash").get<std::string>();
    m.key.tokenizer_fingerprint = j.at("tokenizer").get<std::string>();
    m.key.options.max_input_len = j.at("max_input_len").get<std::int64_t>();
    m.key.options.max_output_len = j.at("max_output_len").get<std::int64_t>();
    m.key.options.task_prefix = j.at("task_prefix").get<bool>();
    m.key.options.instruction = j.value("instruction", std::string());
    m.stats = j.at("stats").get<TokenStats>();
    m.body_hash = j.at("body_hash").get<std::string>();
    return m;
  } catch (const json::exception& e) {
    damaged(file, std::string("bad manifest (") + e.what() + ")");
  }
}

// Header fields up to and including the counts.
struct Header {
  TokenCacheManifest manifest;
  std::uint64_t examples = 0, sequences = 0, tokens = 0;
  std::size_t body_offset = 0;  // where the counts start
};

// Parses magic, version, manifest and counts from the first bytes of a cache; checks that the
// counts agree with the manifest and that `file_size` is exactly what they imply.
Header parse_header(Reader& r, const std::string& file, std::uint64_t file_size) {
  if (r.take(kMagicSize, "magic") != std::string_view(kTokenCacheMagic, kMagicSize))
    damaged(file, "not a tlmoe token cache (bad magic bytes)");
  const auto version = r.get<std::uint32_t>("version");
  if (version < kTokenCacheVersion)
    throw DataError(file, 0,
                    "token cache format version " + std::to_string(version) +
                        " is older than this tlmoe's (" + std::to_string(kTokenCacheVersion) +
                        "); rebuild it with `tlmoe preprocess`");
  if (version > kTokenCacheVersion)
    throw DataError(file, 0,
                    "token cache format version " + std::to_string(version) +
                        " was written by a newer tlmoe (this one reads " +
                        std::to_string(kTokenCacheVersion) + "); rebuild it with `tlmoe preprocess`");
  const auto manifest_len = r.get<std::uint64_t>("manifest length");
  Header h;
  h.manifest = manifest_from_json(r.take(static_cast<std::size_t>(manifest_len), "manifest"), file);
  h.body_offset = r.pos();
  h.examples = r.get<std::uint64_t>("example count");
  h.sequences = r.get<std::uint64_t>("sequence count");
  h.tokens = r.get<std::uint64_t>("token count");
  if (h.examples > file_size || h.sequences > file_size || h.tokens > file_size)
    damaged(file, "counts larger than the file");
  if (h.manifest.stats.examples != static_cast<std::int64_t>(h.examples) ||
      h.manifest.stats.examples + h.manifest.stats.outputs != static_cast<std::int64_t>(h.sequences))
    damaged(file, "counts disagree with the manifest");
  const std::uint64_t expected =
      h.body_offset + kCountsSize + 4 * h.examples + 8 * (h.sequences + 1) + 4 * h.tokens;
  if (file_size != expected)
    damaged(file, "size " + std::to_string(file_size) + " bytes, expected " + std::to_string(expected) +
                      (file_size < expected ? " (truncated)" : ""));
  return h;
}

void update_max(std::int64_t& m, std::int64_t v) { m = std::max(m, v); }

}  // namespace

// ---- stats and key ----------------------------------------------------------------------------

void to_json(json& j, const TokenStats& s) {
  j = json{{"examples", s.examples},
           {"outputs", s.outputs},
           {"input_tokens", s.input_tokens},
           {"output_tokens", s.output_tokens},
           {"max_input_tokens", s.max_input_tokens},
           {"max_output_tokens", s.max_output_tokens},
           {"longest_input_untruncated", s.longest_input_untruncated},
           {"longest_output_untruncated", s.longest_output_untruncated},
           {"truncated_inputs", s.truncated_inputs},
           {"truncated_outputs", s.truncated_outputs},
           {"truncated_examples", s.truncated_examples}};
}

void from_json(const json& j, TokenStats& s) {
  j.at("examples").get_to(s.examples);
  j.at("outputs").get_to(s.outputs);
  j.at("input_tokens").get_to(s.input_tokens);
  j.at("output_tokens").get_to(s.output_tokens);
  j.at("max_input_tokens").get_to(s.max_input_tokens);
  j.at("max_output_tokens").get_to(s.max_output_tokens);
  j.at("longest_input_untruncated").get_to(s.longest_input_untruncated);
  j.at("longest_output_untruncated").get_to(s.longest_output_untruncated);
  j.at("truncated_inputs").get_to(s.truncated_inputs);
  j.at("truncated_outputs").get_to(s.truncated_outputs);
  j.at("truncated_examples").get_to(s.truncated_examples);
}

void TokenStats::add(const TokenStats& o) {
  examples += o.examples;
  outputs += o.outputs;
  input_tokens += o.input_tokens;
  output_tokens += o.output_tokens;
  update_max(max_input_tokens, o.max_input_tokens);
  update_max(max_output_tokens, o.max_output_tokens);
  update_max(longest_input_untruncated, o.longest_input_untruncated);
  update_max(longest_output_untruncated, o.longest_output_untruncated);
  truncated_inputs += o.truncated_inputs;
  truncated_outputs += o.truncated_outputs;
  truncated_examples += o.truncated_examples;
}

bool TokenCacheKey::operator==(const TokenCacheKey& o) const {
  return task == o.task && source_hash == o.source_hash && tokenizer_fingerprint == o.tokenizer_fingerprint &&
         options.max_input_len == o.options.max_input_len &&
         options.max_output_len == o.options.max_output_len && options.task_prefix == o.options.task_prefix &&
         options.instruction == o.options.instruction;
}

// ---- tokenization -----------------------------------------------------------------------------

std::string input_text(const std::string& task, const std::string& input, bool task_prefix,
                       const std::string& instruction) {
  const std::string body = instruction.empty() ? input : instruction + " " + input;
  return task_prefix ? " [" + task + "] " + body : body;
}

std::string output_text(const std::string& output) { return " " + output; }

std::vector<std::int32_t> tokenize_sequence(const text::Tokenizer& tok, const std::string& text,
                                            std::int64_t max_len, bool* truncated,
                                            std::int64_t* untruncated_len) {
  if (max_len < 2)
    throw InputError("maximum sequence length must be >= 2 (<s> and </s>), got " + std::to_string(max_len));
  std::vector<std::int32_t> ids;
  ids.push_back(tok.bos_id());
  const auto body = tok.encode(text);
  ids.insert(ids.end(), body.begin(), body.end());
  ids.push_back(tok.eos_id());
  *untruncated_len = static_cast<std::int64_t>(ids.size());
  *truncated = *untruncated_len > max_len;
  if (*truncated) {
    ids.resize(static_cast<std::size_t>(max_len - 1));
    ids.push_back(tok.eos_id());
  }
  return ids;
}

TokenCache tokenize_examples(const std::vector<TsvExample>& examples, const text::Tokenizer& tok,
                             const std::string& task, const TokenizeOptions& options) {
  TokenCache cache;
  cache.manifest.key.task = task;
  cache.manifest.key.tokenizer_fingerprint = tok.fingerprint();
  cache.manifest.key.options = options;
  TokenStats& s = cache.manifest.stats;
  cache.examples.reserve(examples.size());
  for (const auto& ex : examples) {
    TokenizedExample out;
    bool cut = false, any_cut = false;
    std::int64_t raw_len = 0;
    out.input_ids = tokenize_sequence(tok, input_text(task, ex.input, options.task_prefix, options.instruction),
                                      options.max_input_len, &cut, &raw_len);
    s.truncated_inputs += cut;
    any_cut = cut;
    s.input_tokens += static_cast<std::int64_t>(out.input_ids.size());
    update_max(s.max_input_tokens, static_cast<std::int64_t>(out.input_ids.size()));
    update_max(s.longest_input_untruncated, raw_len);
    for (const auto& o : ex.outputs) {
      out.output_ids.push_back(
          tokenize_sequence(tok, output_text(o), options.max_output_len, &cut, &raw_len));
      s.truncated_outputs += cut;
      any_cut = any_cut || cut;
      s.output_tokens += static_cast<std::int64_t>(out.output_ids.back().size());
      update_max(s.max_output_tokens, static_cast<std::int64_t>(out.output_ids.back().size()));
      update_max(s.longest_output_untruncated, raw_len);
    }
    s.outputs += static_cast<std::int64_t>(ex.outputs.size());
    s.truncated_examples += any_cut;
    cache.examples.push_back(std::move(out));
  }
  s.examples = static_cast<std::int64_t>(examples.size());
  return cache;
}

// ---- serialization ----------------------------------------------------------------------------

std::string serialize_token_cache(const TokenCache& cache) {
  // Body first: its hash goes into the manifest.
  std::uint64_t sequences = 0, tokens = 0;
  for (const auto& ex : cache.examples) {
    sequences += 1 + ex.output_ids.size();
    tokens += ex.input_ids.size();
    for (const auto& o : ex.output_ids) tokens += o.size();
  }
  std::string body;
  body.reserve(kCountsSize + 4 * cache.examples.size() + 8 * (sequences + 1) + 4 * tokens);
  put_le<std::uint64_t>(body, cache.examples.size());
  put_le<std::uint64_t>(body, sequences);
  put_le<std::uint64_t>(body, tokens);
  for (const auto& ex : cache.examples)
    put_le<std::uint32_t>(body, static_cast<std::uint32_t>(ex.output_ids.size()));
  std::uint64_t offset = 0;
  put_le<std::uint64_t>(body, offset);
  for (const auto& ex : cache.examples) {
    offset += ex.input_ids.size();
    put_le<std::uint64_t>(body, offset);
    for (const auto& o : ex.output_ids) {
      offset += o.size();
      put_le<std::uint64_t>(body, offset);
    }
  }
  for (const auto& ex : cache.examples) {
    for (auto id : ex.input_ids) put_le<std::int32_t>(body, id);
    for (const auto& o : ex.output_ids)
      for (auto id : o) put_le<std::int32_t>(body, id);
  }

  TokenCacheManifest m = cache.manifest;
  m.stats.examples = static_cast<std::int64_t>(cache.examples.size());
  m.stats.outputs = static_cast<std::int64_t>(sequences - cache.examples.size());
  m.body_hash = io::fnv1a64_hex(body);
  const std::string manifest = manifest_to_json(m).dump(1);

  std::string out;
  out.reserve(kPreambleSize + manifest.size() + body.size());
  out.append(kTokenCacheMagic, kMagicSize);
  put_le<std::uint32_t>(out, kTokenCacheVersion);
  put_le<std::uint64_t>(out, manifest.size());
  out += manifest;
  out += body;
  return out;
}

void write_token_cache(const fs::path& path, const TokenCache& cache) {
  io::write_file_atomic(path, serialize_token_cache(cache));
}

TokenCache read_token_cache(const fs::path& path, std::int64_t vocab_size) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec))
    throw DataError(path.string(), 0, "token cache does not exist; run `tlmoe preprocess`");
  const std::string file = path.string();
  const std::string bytes = io::read_file(path);
  Reader r(bytes, file);
  Header h = parse_header(r, file, bytes.size());
  if (io::fnv1a64_hex(std::string_view(bytes).substr(h.body_offset)) != h.manifest.body_hash)
    damaged(file, "content hash mismatch");

  std::vector<std::uint32_t> refs(h.examples);
  for (auto& n : refs) {
    n = r.get<std::uint32_t>("output counts");
    if (n == 0) damaged(file, "an example without outputs");
  }
  std::vector<std::uint64_t> offsets(h.sequences + 1);
  for (auto& o : offsets) o = r.get<std::uint64_t>("offsets");
  std::uint64_t total_refs = 0;
  for (auto n : refs) total_refs += n;
  if (h.examples + total_refs != h.sequences) damaged(file, "output counts disagree with the sequence count");
  if (offsets.front() != 0 || offsets.back() != h.tokens) damaged(file, "bad offsets");
  for (std::size_t q = 1; q < offsets.size(); ++q)
    if (offsets[q] < offsets[q - 1]) damaged(file, "offsets go backwards");

  const std::string_view tokens = r.take(static_cast<std::size_t>(4 * h.tokens), "tokens");
  std::size_t q = 0;
  auto sequence = [&]() {
    std::vector<std::int32_t> ids(offsets[q + 1] - offsets[q]);
    for (std::size_t i = 0; i < ids.size(); ++i) {
      ids[i] = get_le<std::int32_t>(tokens.data() + 4 * (offsets[q] + i));
      if (ids[i] < 0 || (vocab_size > 0 && ids[i] >= vocab_size))
        damaged(file, "token id " + std::to_string(ids[i]) + " in sequence " + std::to_string(q + 1) +
                          (vocab_size > 0 ? " is outside the vocabulary of " + std::to_string(vocab_size) + " ids"
                                          : " is negative") +
                          " (a cache of another tokenizer?)");
    }
    ++q;
    return ids;
  };
  TokenCache cache;
  cache.manifest = std::move(h.manifest);
  cache.examples.resize(h.examples);
  for (std::size_t e = 0; e < h.examples; ++e) {
    cache.examples[e].input_ids = sequence();
    for (std::uint32_t j = 0; j < refs[e]; ++j) cache.examples[e].output_ids.push_back(sequence());
  }
  return cache;
}

TokenCacheManifest read_token_cache_manifest(const fs::path& path, bool check_body_hash) {
  const std::string file = path.string();
  std::error_code ec;
  const std::uint64_t size = fs::file_size(path, ec);
  if (ec) throw DataError(file, 0, "token cache does not exist; run `tlmoe preprocess`");
  if (check_body_hash) {
    const std::string bytes = io::read_file(path);
    Reader r(bytes, file);
    Header h = parse_header(r, file, bytes.size());
    if (io::fnv1a64_hex(std::string_view(bytes).substr(h.body_offset)) != h.manifest.body_hash)
      damaged(file, "content hash mismatch");
    return h.manifest;
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) throw DataError(file, 0, "cannot open token cache");
  // The preamble, then the manifest and the counts (the manifest length is in the preamble).
  std::string head(kPreambleSize, '\0');
  in.read(head.data(), static_cast<std::streamsize>(head.size()));
  head.resize(static_cast<std::size_t>(in.gcount()));
  if (head.size() == kPreambleSize) {
    const auto manifest_len = get_le<std::uint64_t>(head.data() + kMagicSize + 4);
    if (manifest_len <= size) {
      std::string rest(static_cast<std::size_t>(std::min<std::uint64_t>(manifest_len + kCountsSize, size)),
                       '\0');
      in.read(rest.data(), static_cast<std::streamsize>(rest.size()));
      rest.resize(static_cast<std::size_t>(in.gcount()));
      head += rest;
    }
  }
  Reader r(head, file);
  return parse_header(r, file, size).manifest;
}

}  // namespace tlmoe::data
