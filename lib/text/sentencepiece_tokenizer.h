// SentencePiece (unigram or BPE) through its C++ library, with BART's special ids:
// <s> = 0, <pad> = 1, </s> = 2, <unk> = 3.
//
// Training is deterministic: the same lines and options give byte-identical models. The model
// depends on num_threads (SentencePiece splits the corpus by thread), so it is a fixed option
// (not the machine's core count), and the seed fixes SentencePiece's global generator.
//
// Vocabulary size: trained with hard_vocab_limit = false, so a vocab_size larger than the text
// supports gives a smaller vocabulary instead of an error; vocab_size() reports the real size.
// A vocab_size too small for the text's characters still fails (InputError saying so).
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "text/tokenizer.h"

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace tlmoe::text {

struct SentencePieceTrainOptions {
  std::int64_t vocab_size = 8000;
  std::string model_type = "unigram";  // unigram | bpe
  double character_coverage = 1.0;     // fraction of characters covered; the rest map to <unk>
  std::uint32_t seed = 42;
  int num_threads = 4;                       // part of the result: keep it fixed
  std::int64_t max_sentence_length = 16384;  // bytes; longer lines are left out of training
};

class SentencePieceTokenizer final : public Tokenizer {
 public:
  // The special ids every tlmoe SentencePiece model has (BART's order).
  static constexpr std::int32_t kBos = 0, kPad = 1, kEos = 2, kUnk = 3;

  // Loads a .model file. Throws DataError(path, 0, ...) when it is missing, is not a
  // SentencePiece model, or has other special ids than the four above.
  static std::unique_ptr<SentencePieceTokenizer> load(const std::filesystem::path& path);

  // The same from model bytes; `source` names them in errors.
  static std::unique_ptr<SentencePieceTokenizer> from_bytes(std::string model_bytes,
                                                            const std::string& source);

  // Trains a model on `lines` (one sentence each) and returns its serialized bytes. Throws
  // InputError with SentencePiece's reason and advice when training fails (no text, a vocab
  // size below the number of distinct characters, ...).
  static std::string train_bytes(const std::vector<std::string>& lines,
                                 const SentencePieceTrainOptions& options);

  // train_bytes, then writes the model atomically to `model_path` and loads it.
  static std::unique_ptr<SentencePieceTokenizer> train(const std::vector<std::string>& lines,
                                                       const SentencePieceTrainOptions& options,
                                                       const std::filesystem::path& model_path);

  ~SentencePieceTokenizer() override;

  std::vector<std::int32_t> encode(std::string_view text) const override;
  std::string decode(const std::vector<std::int32_t>& ids, bool skip_special = true) const override;
  std::int32_t pad_id() const override { return kPad; }
  std::int32_t bos_id() const override { return kBos; }
  std::int32_t eos_id() const override { return kEos; }
  std::int32_t unk_id() const override { return kUnk; }
  std::int32_t vocab_size() const override { return vocab_size_; }
  std::string id_to_piece(std::int32_t id) const override;
  std::string fingerprint() const override { return fingerprint_; }
  std::string kind() const override { return "sentencepiece"; }

  const std::string& model_bytes() const { return model_bytes_; }

 private:
  SentencePieceTokenizer() = default;
  void check_id(std::int32_t id) const;

  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
  std::string model_bytes_;
  std::string fingerprint_;
  std::int32_t vocab_size_ = 0;
};

}  // namespace tlmoe::text
