// The tokenizer interface. Implementations: SentencePiece (sentencepiece_tokenizer.h); a BART
// byte-level BPE (GPT-2 vocabulary, for Hugging Face checkpoints) will implement it too.
//
// Special ids follow BART: <s> = 0 (bos), <pad> = 1, </s> = 2 (eos), <unk> = 3. Token caches
// record fingerprint(), so a cache built with another tokenizer is never reused.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tlmoe::text {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Text -> ids, without special tokens. The text is encoded as the start of a sentence: the
  // caller adds <s> / </s>. Byte-level BPE implementations encode a leading space as given
  // (callers follow docs/method.md §6.1 and pass " [task] input" / " output").
  virtual std::vector<std::int32_t> encode(std::string_view text) const = 0;

  // Ids -> text. With skip_special, <s>, </s> and <pad> are dropped; otherwise they appear as
  // their pieces ("<s>", ...). Throws std::out_of_range for an id outside [0, vocab_size()).
  virtual std::string decode(const std::vector<std::int32_t>& ids, bool skip_special = true) const = 0;

  virtual std::int32_t pad_id() const = 0;
  virtual std::int32_t bos_id() const = 0;
  virtual std::int32_t eos_id() const = 0;
  virtual std::int32_t unk_id() const = 0;
  virtual std::int32_t vocab_size() const = 0;

  // The piece (subword string) of an id; throws std::out_of_range for a bad id.
  virtual std::string id_to_piece(std::int32_t id) const = 0;

  // A stable hash of the model's content ("<kind>:<16 hex digits>"); equal fingerprints mean
  // identical tokenization.
  virtual std::string fingerprint() const = 0;

  // "sentencepiece", "bart-bpe", ...
  virtual std::string kind() const = 0;

  bool is_special(std::int32_t id) const { return id == pad_id() || id == bos_id() || id == eos_id(); }
};

}  // namespace tlmoe::text
