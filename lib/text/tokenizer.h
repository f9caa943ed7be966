// The tokenizer interface. Implementations: SentencePiece (sentencepiece_tokenizer.h) and BART's
// byte-level BPE (GPT-2 vocabulary, for Hugging Face checkpoints: bart_bpe_tokenizer.h).
//
// Special ids follow BART: <s> = 0 (bos), <pad> = 1, </s> = 2 (eos), <unk> = 3. Token caches
// record fingerprint(), so a cache built with another tokenizer is never reused.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tlmoe::text {

// Which Hugging Face transformers release a Hugging Face tokenizer decodes as: 4.x (legacy: what
// CrossFit and the paper ran; the reference is 4.46.3) or 5.x (current; the reference is 5.24).
// The releases differ in the clean-up of spaces before punctuation and in how added tokens are
// decoded; a tokenizer encodes one way under both (bart_bpe_tokenizer.h lists the differences).
enum class HfSemantics { legacy, current };

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Text -> ids, without special tokens. The text is encoded as the start of a sentence: the
  // caller adds <s> / </s>. Byte-level BPE implementations encode a leading space as given
  // (callers follow docs/method.md §6.1 and pass " [task] input" / " output").
  virtual std::vector<std::int32_t> encode(std::string_view text) const = 0;

  // Ids -> text. With skip_special, the special tokens (is_special) are dropped; otherwise they
  // appear as their pieces ("<s>", ...). Throws std::out_of_range for an id outside [0, vocab_size()).
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

  // Whether decode(ids, skip_special = true) drops the id: <pad>, <s> and </s> here; a byte-level
  // BPE adds <unk>, <mask> and its special added tokens (which, per transformers release:
  // bart_bpe_tokenizer.h).
  virtual bool is_special(std::int32_t id) const {
    return id == pad_id() || id == bos_id() || id == eos_id();
  }

  // Decode as that transformers release would (tokenizers that follow no Hugging Face release
  // ignore it). Never changes encode() or fingerprint().
  virtual void set_semantics(HfSemantics) {}
};

}  // namespace tlmoe::text
