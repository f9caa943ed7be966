#include "text/sentencepiece_tokenizer.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <stdexcept>
#include <system_error>
#include <unordered_map>

#include "common/error.h"
#include "io/atomic_file.h"

namespace fs = std::filesystem;

namespace tlmoe::text {

namespace {

// Feeds training sentences from memory (no temporary corpus file).
class LinesIterator final : public sentencepiece::SentenceIterator {
 public:
  explicit LinesIterator(const std::vector<std::string>& lines) : lines_(lines) { skip_empty(); }
  bool done() const override { return i_ >= lines_.size(); }
  void Next() override {
    ++i_;
    skip_empty();
  }
  const std::string& value() const override { return lines_[i_]; }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  void skip_empty() {
    while (i_ < lines_.size() && lines_[i_].empty()) ++i_;
  }
  const std::vector<std::string>& lines_;
  std::size_t i_ = 0;
};

// SentencePiece's messages start with "./src/file.cc(123) [check expression] "; keep the rest.
std::string readable(const sentencepiece::util::Status& status) {
  std::string msg = status.message();
  std::size_t close = msg.find("] ");
  if (msg.rfind("./", 0) == 0 && close != std::string::npos) msg = msg.substr(close + 2);
  return msg;
}

bool has_nonempty_line(const std::vector<std::string>& lines) {
  for (const auto& l : lines)
    if (!l.empty()) return true;
  return false;
}

}  // namespace

SentencePieceTokenizer::~SentencePieceTokenizer() = default;

std::unique_ptr<SentencePieceTokenizer> SentencePieceTokenizer::load(const fs::path& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) throw DataError(path.string(), 0, "tokenizer model does not exist");
  return from_bytes(io::read_file(path), path.string());
}

std::unique_ptr<SentencePieceTokenizer> SentencePieceTokenizer::from_bytes(std::string model_bytes,
                                                                           const std::string& source) {
  std::unique_ptr<SentencePieceTokenizer> t(new SentencePieceTokenizer());
  t->sp_ = std::make_unique<sentencepiece::SentencePieceProcessor>();
  auto status = t->sp_->LoadFromSerializedProto(model_bytes);
  if (!status.ok()) throw DataError(source, 0, "not a SentencePiece model (" + readable(status) + ")");
  const auto& sp = *t->sp_;
  if (sp.bos_id() != kBos || sp.pad_id() != kPad || sp.eos_id() != kEos || sp.unk_id() != kUnk) {
    throw DataError(
        source, 0,
        "SentencePiece model has special ids bos=" + std::to_string(sp.bos_id()) +
            " pad=" + std::to_string(sp.pad_id()) + " eos=" + std::to_string(sp.eos_id()) +
            " unk=" + std::to_string(sp.unk_id()) +
            "; tlmoe needs BART's <s>=0 <pad>=1 </s>=2 <unk>=3 (let `tlmoe preprocess` train one, "
            "or train with --bos_id=0 --pad_id=1 --eos_id=2 --unk_id=3)");
  }
  t->vocab_size_ = sp.GetPieceSize();
  t->fingerprint_ = "sentencepiece:" + io::fnv1a64_hex(model_bytes);
  t->model_bytes_ = std::move(model_bytes);
  return t;
}

std::string SentencePieceTokenizer::train_bytes(const std::vector<std::string>& lines,
                                                const SentencePieceTrainOptions& o) {
  if (!has_nonempty_line(lines)) throw InputError("cannot train a tokenizer: no text");
  if (o.model_type != "unigram" && o.model_type != "bpe")
    throw InputError("SentencePiece model type must be unigram or bpe, got '" + o.model_type + "'");
  const std::unordered_map<std::string, std::string> args = {
      {"model_type", o.model_type},
      {"vocab_size", std::to_string(o.vocab_size)},
      {"hard_vocab_limit", "false"},  // too large a vocab_size shrinks instead of failing
      {"character_coverage", std::to_string(o.character_coverage)},
      {"num_threads", std::to_string(o.num_threads)},
      {"max_sentence_length", std::to_string(o.max_sentence_length)},
      {"input_sentence_size", "0"},  // every line given (the caller selects them)
      {"shuffle_input_sentence", "false"},
      {"bos_id", std::to_string(kBos)},
      {"pad_id", std::to_string(kPad)},
      {"eos_id", std::to_string(kEos)},
      {"unk_id", std::to_string(kUnk)},
      {"bos_piece", "<s>"},
      {"pad_piece", "<pad>"},
      {"eos_piece", "</s>"},
      {"unk_piece", "<unk>"},
      {"minloglevel", "1"},  // no progress chatter on stderr
  };
  sentencepiece::SetRandomGeneratorSeed(o.seed);
  LinesIterator it(lines);
  std::string model;
  auto status = sentencepiece::SentencePieceTrainer::Train(args, &it, &model);
  if (!status.ok()) throw InputError("SentencePiece training failed: " + readable(status));
  return model;
}

std::unique_ptr<SentencePieceTokenizer> SentencePieceTokenizer::train(
    const std::vector<std::string>& lines, const SentencePieceTrainOptions& options,
    const fs::path& model_path) {
  std::string bytes = train_bytes(lines, options);
  auto tok = from_bytes(bytes, model_path.string());  // check before anything is written
  io::write_file_atomic(model_path, bytes);
  return tok;
}

void SentencePieceTokenizer::check_id(std::int32_t id) const {
  if (id < 0 || id >= vocab_size_)
    throw std::out_of_range("token id " + std::to_string(id) + " outside the vocabulary [0, " +
                            std::to_string(vocab_size_) + ")");
}

std::vector<std::int32_t> SentencePieceTokenizer::encode(std::string_view text) const {
  std::vector<int> ids;
  auto status = sp_->Encode(text, &ids);
  if (!status.ok()) throw std::runtime_error("SentencePiece encode failed: " + readable(status));
  return std::vector<std::int32_t>(ids.begin(), ids.end());
}

std::string SentencePieceTokenizer::decode(const std::vector<std::int32_t>& ids, bool skip_special) const {
  std::string out;
  std::vector<int> run;  // ordinary ids waiting to be decoded together
  auto flush = [&] {
    if (run.empty()) return;
    std::string text;
    auto status = sp_->Decode(run, &text);
    if (!status.ok()) throw std::runtime_error("SentencePiece decode failed: " + readable(status));
    out += text;
    run.clear();
  };
  for (std::int32_t id : ids) {
    check_id(id);
    if (is_special(id)) {
      if (skip_special) continue;
      flush();
      out += sp_->IdToPiece(id);
    } else {
      run.push_back(id);
    }
  }
  flush();
  return out;
}

std::string SentencePieceTokenizer::id_to_piece(std::int32_t id) const {
  check_id(id);
  return sp_->IdToPiece(id);
}

}  // namespace tlmoe::text
