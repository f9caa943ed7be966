// BART's byte-level BPE (the GPT-2 vocabulary of facebook/bart-base), read from a Hugging Face
// tokenizer directory, token for token and string for string what Hugging Face produces.
//
// Encoding (as the `tokenizers` library, which transformers 5.x and 4.x's BartTokenizerFast run):
//   - added tokens written literally in the text are matched first, leftmost and longest first:
//     the ones tokenizer.json marks "normalized": false over the whole text, then the normalized
//     ones in the gaps; "lstrip" / "rstrip" absorb the whitespace before / after the token. The
//     five BART specials (<s> <pad> </s> <unk> <mask>) are always added tokens;
//   - with add_prefix_space, every piece of text between added tokens that does not start with
//     ' ' gets one in front;
//   - the rest is split by GPT-2's pre-tokenisation regex
//       's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//     implemented by hand over code points (Unicode categories L and N: unicode_tables.inc);
//   - each piece's UTF-8 bytes are merged by BPE (lowest merge rank first, leftmost on ties).
// Callers pass " text" where a word is not at the start of a sentence (docs/method.md §6.1).
//
// Decoding, as `BartTokenizer.from_pretrained(dir).decode(ids, skip_special_tokens)` does:
//   current (transformers 5.24; BartTokenizer is RobertaTokenizer over `tokenizers`, see
//   tokenization_utils_tokenizers.py, TokenizersBackend._decode):
//     - skip_special drops the five BART specials, every added token marked "special": true and
//       the additional special tokens of tokenizer_config.json / special_tokens_map.json;
//     - every kept token, added tokens included, becomes bytes (a token whose characters are all
//       in GPT-2's byte table is those bytes, any other its UTF-8 text), and the bytes become
//       text with one U+FFFD per maximal ill-formed subsequence (Python's and Rust's "replace");
//     - clean_up_tokenization_spaces is ignored for a BPE model, whatever tokenizer_config.json
//       says (it is applied only with clean_up_tokenization_spaces_for_bpe_even_though_it_will_
//       corrupt_output, which set_clean_up_spaces(true) reproduces).
//   legacy (transformers 4.x; the reference is 4.46.3, with the clean-up default of the releases
//   before 4.45, which the paper ran):
//     - a directory with vocab.json + merges.txt loads as the Python BartTokenizer
//       (tokenization_utils.py, PreTrainedTokenizer._decode): skip_special drops the five
//       specials and the additional special tokens only (an added token marked special but not
//       listed as additional special is kept); added tokens that are not specials, and
//       additional specials beyond vocab.json, stand for their literal text, and the pieces of
//       text between them are joined with one space (spaces_between_special_tokens);
//     - a directory with tokenizer.json alone cannot be loaded by the Python BartTokenizer;
//       BartTokenizerFast decodes it as the current semantics do;
//     - clean_up_tokenization_spaces is applied as tokenizer_config.json says, and when it says
//       nothing (or there is no tokenizer_config.json): the default of PreTrainedTokenizerBase.
//       __init__ was True up to 4.44 and is False from 4.45 (4.46.3 does not clean up then).
//       The clean-up (clean_up_tokenization) replaces, in order over the whole text, " ." " ?"
//       " !" " ," by the mark alone, " ' " by "'", and " n't" " 'm" " 's" " 've" " 're" lose
//       their space.
//
// Where the releases encode differently, tlmoe encodes as tokenizer.json says (as 5.24 does):
//   - <mask> without tokenizer.json, or with a tokenizer.json that gives it "lstrip": false:
//     4.46.3 gives <mask> lstrip = true anyway (BartTokenizer.__init__ when mask_token is a
//     string), 5.24 does not; tlmoe does not (save_hf_files writes it explicitly, so that both
//     releases load what tlmoe encodes);
//   - add_prefix_space under 4.46.3's Python BartTokenizer prefixes the whole text once, when it
//     does not start with whitespace, instead of every piece between added tokens.
// add_prefix_space comes from tokenizer_config.json (BartTokenizer's keyword, default false) and
// must agree with tokenizer.json's pre_tokenizer, which the class overrides.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "text/tokenizer.h"

namespace tlmoe::text {

class BartBpeTokenizer final : public Tokenizer {
 public:
  // Loads a Hugging Face tokenizer directory: the byte-level BPE from tokenizer.json when it is
  // there (model.type "BPE", model.vocab, model.merges as "a b" strings or [a, b] pairs,
  // added_tokens, a ByteLevel pre-tokenizer, no normalizer), else from vocab.json + merges.txt
  // (with tokenizer_config.json's added_tokens_decoder as the added tokens); when both are
  // there they must agree. tokenizer_config.json gives clean_up_tokenization_spaces,
  // add_prefix_space and additional_special_tokens (special_tokens_map.json too). Throws
  // DataError naming the file (and the key) for what is missing, malformed or not reproducible
  // (another model type, a normalizer, another pre-tokenizer, single_word added tokens, ids
  // other than tokenizers would give), and when <s> <pad> </s> <unk> are not ids 0 1 2 3.
  // The semantics after loading are legacy.
  static std::unique_ptr<BartBpeTokenizer> load(const std::filesystem::path& dir);
  // The same from vocab.json and merges.txt contents (`source` names them in errors);
  // clean_up_spaces stands for tokenizer_config.json's clean_up_tokenization_spaces.
  static std::unique_ptr<BartBpeTokenizer> from_strings(const std::string& vocab_json,
                                                        const std::string& merges_txt,
                                                        const std::string& source,
                                                        bool clean_up_spaces = true);

  std::vector<std::int32_t> encode(std::string_view text) const override;
  std::string decode(const std::vector<std::int32_t>& ids, bool skip_special = true) const override;
  bool is_special(std::int32_t id) const override;
  void set_semantics(HfSemantics s) override { semantics_ = s; }
  HfSemantics semantics() const { return semantics_; }
  std::int32_t pad_id() const override { return 1; }
  std::int32_t bos_id() const override { return 0; }
  std::int32_t eos_id() const override { return 2; }
  std::int32_t unk_id() const override { return 3; }
  std::int32_t vocab_size() const override { return static_cast<std::int32_t>(pieces_.size()); }
  std::string id_to_piece(std::int32_t id) const override;
  // Depends on the vocabulary, the merges, the added tokens and add_prefix_space, never on the
  // semantics. For vocab.json + merges.txt it is what tlmoe wrote into token caches and
  // checkpoints before tokenizer.json was read in full: it changes only where the added tokens
  // or add_prefix_space change the encoding.
  std::string fingerprint() const override { return fingerprint_; }
  std::string kind() const override { return "bart-bpe"; }

  // The pre-tokenisation alone (pieces as UTF-8 text), for tests.
  static std::vector<std::string> pretokenize(std::string_view text);
  // Whether decode() applies the clean-up under the current semantics (or the override).
  bool clean_up_spaces() const;
  // Forces the clean-up on or off under either semantics (tests; transformers' decode argument).
  void set_clean_up_spaces(bool on) { clean_override_ = on; }
  bool add_prefix_space() const { return add_prefix_space_; }

  // Writes vocab.json, merges.txt, tokenizer.json, tokenizer_config.json and
  // special_tokens_map.json into dir (atomically, io/atomic_file.h), so that transformers 5.x and
  // 4.x load a tokenizer that encodes and decodes exactly as this one (added tokens,
  // lstrip/rstrip, clean-up setting kept; every special added token is listed as an additional
  // special token). With vocab.json there, 4.x's BartTokenizer is the Python class: added
  // tokens that are not special decode with spaces around them, as the legacy semantics of the
  // written directory do too (a source with tokenizer.json alone decoded them without).
  void save_hf_files(const std::filesystem::path& dir, std::int64_t model_max_length) const;

 private:
  struct AddedToken {  // as tokenizer.json's added_tokens declare it
    std::string content;
    std::int32_t id = 0;
    bool special = false, lstrip = false, rstrip = false, normalized = false;
  };
  struct Loader;  // reading the Hugging Face files (bart_bpe_tokenizer.cpp)

  BartBpeTokenizer() = default;
  void bpe(const std::string& bytes, std::vector<std::int32_t>& out) const;
  void encode_split(std::string_view text, int pass, std::vector<std::int32_t>& ids) const;
  void encode_plain(std::string_view text, std::vector<std::int32_t>& ids) const;
  std::string decode_bytes(const std::vector<std::int32_t>& ids, bool skip_special) const;
  std::string decode_python(const std::vector<std::int32_t>& ids, bool skip_special) const;
  bool python_decode() const { return semantics_ == HfSemantics::legacy && vocab_files_; }
  void check_id(std::int32_t id) const;

  std::vector<std::string> pieces_;                           // id -> piece (vocabulary, then added tokens)
  std::vector<std::string> bytes_;                            // id -> the raw bytes it stands for
  std::unordered_map<std::string, std::int32_t> by_bytes_;    // raw bytes -> id (the BPE model's vocabulary)
  std::map<std::pair<std::string, std::string>, int> ranks_;  // merge (raw bytes) -> rank
  std::vector<std::pair<std::string, std::string>> merges_;   // merges as written, in rank order
  std::int32_t model_size_ = 0;                               // ids below it are the BPE model's
  std::vector<AddedToken> added_;                             // in the order of tokenizer.json
  // per matching pass (0: not normalized, 1: normalized) and first byte: indices into added_,
  // longest content first
  std::array<std::array<std::vector<int>, 256>, 2> match_;
  std::vector<char> special_;         // id -> dropped by skip_special (tokenizers' rule)
  std::vector<char> python_special_;  // id -> dropped by skip_special (4.46.3's Python BartTokenizer)
  std::vector<char> python_literal_;  // id -> stands for its literal text there
  bool vocab_files_ = false;          // loaded from vocab.json + merges.txt (the Python class can load it)
  bool add_prefix_space_ = false;
  bool config_clean_ = true;  // tokenizer_config.json's clean_up_tokenization_spaces
  std::optional<bool> clean_override_;
  HfSemantics semantics_ = HfSemantics::legacy;
  std::string fingerprint_;
};

}  // namespace tlmoe::text
