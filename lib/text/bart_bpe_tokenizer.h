// BART's byte-level BPE (the GPT-2 vocabulary of facebook/bart-base), read from a Hugging Face
// model directory's vocab.json + merges.txt, token for token what Hugging Face's BartTokenizer
// produces:
//   - the special tokens of the vocabulary (<s> <pad> </s> <unk> <mask>) written literally in the
//     text are matched first and become their ids (with tokenizer.json's lstrip/rstrip);
//   - the rest is split by GPT-2's pre-tokenisation regex
//       's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//     implemented by hand over code points (Unicode categories L and N: unicode_tables.inc);
//   - each piece's UTF-8 bytes are merged by BPE (lowest merge rank first, leftmost on ties).
// No prefix space is added (BartTokenizer's add_prefix_space = false): callers pass " text" where
// a word is not at the start of a sentence (docs/method.md §6.1).
//
// decode() maps tokens back to bytes (invalid UTF-8 becomes U+FFFD) and, when clean_up_spaces is
// set (the default, as transformers v4's BartTokenizer), applies clean_up_tokenization: " ." -> ".",
// " ?", " !", " ,", " ' " -> "'", " n't", " 'm", " 's", " 've", " 're" lose their space.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "text/tokenizer.h"

namespace tlmoe::text {

class BartBpeTokenizer final : public Tokenizer {
 public:
  // Loads {dir}/vocab.json and {dir}/merges.txt. Throws DataError naming the file when one is
  // missing or malformed, or when <s> <pad> </s> <unk> are not ids 0 1 2 3 (tlmoe's BART ids).
  // tokenizer_config.json's clean_up_tokenization_spaces, when present, sets clean_up_spaces;
  // tokenizer.json's added_tokens, when present, set lstrip/rstrip of the special tokens
  // (facebook/bart-base's <mask> absorbs the whitespace before it).
  static std::unique_ptr<BartBpeTokenizer> load(const std::filesystem::path& dir);
  // The same from file contents (`source` names them in errors).
  static std::unique_ptr<BartBpeTokenizer> from_strings(const std::string& vocab_json, const std::string& merges_txt,
                                                        const std::string& source, bool clean_up_spaces = true);

  std::vector<std::int32_t> encode(std::string_view text) const override;
  std::string decode(const std::vector<std::int32_t>& ids, bool skip_special = true) const override;
  std::int32_t pad_id() const override { return 1; }
  std::int32_t bos_id() const override { return 0; }
  std::int32_t eos_id() const override { return 2; }
  std::int32_t unk_id() const override { return 3; }
  std::int32_t vocab_size() const override { return static_cast<std::int32_t>(pieces_.size()); }
  std::string id_to_piece(std::int32_t id) const override;
  std::string fingerprint() const override { return fingerprint_; }
  std::string kind() const override { return "bart-bpe"; }

  // The pre-tokenisation alone (pieces as UTF-8 text), for tests.
  static std::vector<std::string> pretokenize(std::string_view text);
  bool clean_up_spaces() const { return clean_up_; }
  void set_clean_up_spaces(bool on) { clean_up_ = on; }

 private:
  BartBpeTokenizer() = default;
  void bpe(const std::string& bytes, std::vector<std::int32_t>& out) const;
  void check_id(std::int32_t id) const;

  std::vector<std::string> pieces_;                          // id -> piece as written in vocab.json
  std::vector<std::string> bytes_;                           // id -> the raw bytes it stands for
  std::unordered_map<std::string, std::int32_t> by_bytes_;   // raw bytes -> id (non-special)
  std::map<std::pair<std::string, std::string>, int> ranks_; // merge (raw bytes) -> rank
  struct Special {
    std::string content;
    std::int32_t id;
    bool lstrip = false, rstrip = false;  // tokenizer.json: absorb the whitespace before / after
  };
  std::vector<Special> specials_;  // literal special tokens, longest first
  std::string fingerprint_;
  bool clean_up_ = true;
};

}  // namespace tlmoe::text
