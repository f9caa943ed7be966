// SentencePiece tokenizer: training on a small generated corpus, BART special ids, round trips,
// determinism, fingerprints, vocabulary-size behaviour and bad model files.
#include <catch2/catch.hpp>

#include <sentencepiece_trainer.h>

#include <algorithm>
#include <cstdint>

#include "common/error.h"
#include "io/atomic_file.h"
#include "test_util.h"
#include "text/sentencepiece_tokenizer.h"

using tlmoe::DataError;
using tlmoe::InputError;
using tlmoe::test::TempDir;
using tlmoe::text::SentencePieceTokenizer;
using tlmoe::text::SentencePieceTrainOptions;

namespace {

const std::vector<std::string> kWords = {
    "the",       "cat",      "sat",      "on",  "a",     "mat",    "question:", "context:", "answer",
    "is",        "not",      "happy",    "sad", "movie", "review", "great",     "awful",    "because",
    "sentence:", "positive", "negative", "who", "what",  "where",  "when",      "river",    "city"};

// Deterministic pseudo-random sentences over kWords.
std::vector<std::string> corpus(std::size_t n, std::uint32_t seed = 7) {
  std::vector<std::string> lines;
  std::uint32_t s = seed;
  for (std::size_t i = 0; i < n; ++i) {
    std::string line;
    const std::size_t len = 3 + i % 9;
    for (std::size_t j = 0; j < len; ++j) {
      s = s * 1664525u + 1013904223u;
      line += (j ? " " : "") + kWords[(s >> 8) % kWords.size()];
    }
    lines.push_back(line);
  }
  return lines;
}

SentencePieceTrainOptions small(std::int64_t vocab, const std::string& type = "unigram") {
  SentencePieceTrainOptions o;
  o.vocab_size = vocab;
  o.model_type = type;
  return o;
}

}  // namespace

TEST_CASE("tokenizer: train, load, BART special ids, round trip", "[tokenizer]") {
  TempDir d;
  auto tok = SentencePieceTokenizer::train(corpus(1500), small(60), d / "spm.model");
  REQUIRE(std::filesystem::exists(d / "spm.model"));
  auto loaded = SentencePieceTokenizer::load(d / "spm.model");
  CHECK(loaded->fingerprint() == tok->fingerprint());
  CHECK(loaded->vocab_size() == 60);
  CHECK(loaded->bos_id() == 0);
  CHECK(loaded->pad_id() == 1);
  CHECK(loaded->eos_id() == 2);
  CHECK(loaded->unk_id() == 3);
  CHECK(loaded->id_to_piece(0) == "<s>");
  CHECK(loaded->id_to_piece(1) == "<pad>");
  CHECK(loaded->id_to_piece(2) == "</s>");
  CHECK(loaded->id_to_piece(3) == "<unk>");
  CHECK(loaded->kind() == "sentencepiece");

  for (const std::string s : {"the cat sat on a mat", "question: who is happy context: the river city",
                              "sentence: great movie review"}) {
    auto ids = loaded->encode(s);
    CHECK_FALSE(ids.empty());
    for (auto id : ids) CHECK_FALSE(loaded->is_special(id));
    CHECK(loaded->decode(ids) == s);
  }
  // specials: dropped by default, shown as pieces on request
  auto ids = loaded->encode("the cat");
  std::vector<std::int32_t> framed = {0};
  framed.insert(framed.end(), ids.begin(), ids.end());
  framed.push_back(2);
  framed.push_back(1);
  CHECK(loaded->decode(framed) == "the cat");
  CHECK(loaded->decode(framed, /*skip_special=*/false) == "<s>the cat</s><pad>");
  // a character never seen in training is <unk>
  auto unk = loaded->encode("the \xD0\xB6");
  CHECK(std::find(unk.begin(), unk.end(), 3) != unk.end());
  CHECK_THROWS_AS(loaded->id_to_piece(60), std::out_of_range);
  CHECK_THROWS_AS(loaded->decode({5, -1}), std::out_of_range);
}

TEST_CASE("tokenizer: training is deterministic and the fingerprint is the model's content hash",
          "[tokenizer]") {
  const auto lines = corpus(1200);
  for (const char* type : {"unigram", "bpe"}) {
    INFO(type);
    const std::string a = SentencePieceTokenizer::train_bytes(lines, small(60, type));
    const std::string b = SentencePieceTokenizer::train_bytes(lines, small(60, type));
    CHECK(a == b);
    auto t = SentencePieceTokenizer::from_bytes(a, "mem");
    CHECK(t->fingerprint() == "sentencepiece:" + tlmoe::io::fnv1a64_hex(a));
  }
  const std::string other = SentencePieceTokenizer::train_bytes(lines, small(50));
  CHECK(SentencePieceTokenizer::from_bytes(other, "mem")->fingerprint() !=
        SentencePieceTokenizer::from_bytes(SentencePieceTokenizer::train_bytes(lines, small(60)), "mem")
            ->fingerprint());
}

TEST_CASE("tokenizer: too large a vocabulary shrinks, too small a one is an InputError", "[tokenizer]") {
  const auto lines = corpus(300);
  auto t = SentencePieceTokenizer::from_bytes(SentencePieceTokenizer::train_bytes(lines, small(5000)), "mem");
  CHECK(t->vocab_size() < 5000);
  CHECK(t->vocab_size() > 4);
  CHECK(t->decode(t->encode("the cat sat")) == "the cat sat");

  CHECK_THROWS_WITH(
      SentencePieceTokenizer::train_bytes(lines, small(10)),
      Catch::StartsWith("SentencePiece training failed: Vocabulary size is smaller than required_chars"));
  CHECK_THROWS_AS(SentencePieceTokenizer::train_bytes({"", ""}, small(100)), InputError);
  CHECK_THROWS_AS(SentencePieceTokenizer::train_bytes(lines, small(100, "word")), InputError);
}

TEST_CASE("tokenizer: missing, corrupt and foreign model files", "[tokenizer]") {
  TempDir d;
  CHECK_THROWS_WITH(SentencePieceTokenizer::load(d / "none.model"),
                    "data error: " + (d / "none.model").string() + ": tokenizer model does not exist");
  tlmoe::test::write_text(d / "junk.model", "this is not a protobuf at all \x01\x02\x03");
  CHECK_THROWS_WITH(
      SentencePieceTokenizer::load(d / "junk.model"),
      Catch::StartsWith("data error: " + (d / "junk.model").string() + ": not a SentencePiece model"));

  // SentencePiece's own default ids (unk=0, bos=1, eos=2, no pad) are refused, naming the file.
  struct Lines : sentencepiece::SentenceIterator {
    std::vector<std::string> v = corpus(500);
    std::size_t i = 0;
    bool done() const override { return i >= v.size(); }
    void Next() override { ++i; }
    const std::string& value() const override { return v[i]; }
    sentencepiece::util::Status status() const override { return {}; }
  } it;
  std::string bytes;
  REQUIRE(
      sentencepiece::SentencePieceTrainer::Train({{"vocab_size", "60"}, {"minloglevel", "1"}}, &it, &bytes)
          .ok());
  tlmoe::test::write_text(d / "default.model", bytes);
  CHECK_THROWS_WITH(SentencePieceTokenizer::load(d / "default.model"),
                    Catch::StartsWith("data error: " + (d / "default.model").string() +
                                      ": SentencePiece model has special ids bos=1 pad=-1 eos=2 unk=0"));
}
