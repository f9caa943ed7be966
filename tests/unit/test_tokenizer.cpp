// SentencePiece tokenizer: training on a small generated corpus, BART special ids, round trips,
// determinism, fingerprints, vocabulary-size behaviour and bad model files. BART's byte-level BPE
// on a hand-made vocabulary: UTF-8 repair in decode, special tokens, the clean-up per transformers
// release, tokenizer.json (added tokens, prefix space, both merge formats, refusals), fingerprints
// and save_hf_files; every expected value is worked out by hand in the comments. The comparison
// with the real transformers is tests/hf/test_hf_tokenizer.cpp.
#include <catch2/catch.hpp>

#include <sentencepiece_trainer.h>

#include <algorithm>
#include <cstdint>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "io/atomic_file.h"
#include "test_util.h"
#include "text/bart_bpe_tokenizer.h"
#include "text/sentencepiece_tokenizer.h"

using tlmoe::DataError;
using tlmoe::InputError;
using tlmoe::test::TempDir;
using tlmoe::text::BartBpeTokenizer;
using tlmoe::text::HfSemantics;
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

// ---- BART byte-level BPE ---------------------------------------------------------------------------

namespace {

using json = nlohmann::json;
using Ids = std::vector<std::int32_t>;

// GPT-2's bytes_to_unicode (openai/gpt-2 encoder.py): printable Latin-1 bytes stand for
// themselves, the other 68 for U+0100, U+0101, ... in byte order. Returns the UTF-8 of the
// character that stands for byte b.
std::string byte_piece(int b) {
  int n = 0;
  for (int x = 0; x < b; ++x)
    if (!((x >= 0x21 && x <= 0x7E) || (x >= 0xA1 && x <= 0xAC) || (x >= 0xAE && x <= 0xFF))) ++n;
  const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
  const unsigned cp = printable ? b : 256 + n;
  std::string s;
  if (cp < 0x80)
    s += static_cast<char>(cp);
  else
    s += static_cast<char>(0xC0 | (cp >> 6)), s += static_cast<char>(0x80 | (cp & 0x3F));
  return s;
}

// The hand-made vocabulary: <s> <pad> </s> <unk> = 0..3, byte b = 4 + b, <mask> = 260, then the
// merges "h e" -> "he" 261, "l l" -> "ll" 262, "he ll" -> "hell" 263, "Ġ w" -> "Ġw" 264.
std::int32_t B(unsigned char b) { return 4 + b; }
const std::vector<std::pair<std::string, std::string>> kMerges = {
    {"h", "e"}, {"l", "l"}, {"he", "ll"}, {"Ġ", "w"}};

json model_vocab() {
  json v = json::object();
  v["<s>"] = 0, v["<pad>"] = 1, v["</s>"] = 2, v["<unk>"] = 3;
  for (int b = 0; b < 256; ++b) v[byte_piece(b)] = 4 + b;
  v["<mask>"] = 260;
  int id = 261;
  for (const auto& [a, b] : kMerges) v[a + b] = id++;
  return v;
}
std::string merges_txt() {
  std::string m = "#version: 0.2\n";
  for (const auto& [a, b] : kMerges) m += a + " " + b + "\n";
  return m;
}
json added(std::int32_t id, const std::string& content, bool special, bool lstrip = false,
           bool rstrip = false, bool normalized = false) {
  return {{"id", id},         {"content", content},       {"single_word", false}, {"lstrip", lstrip},
          {"rstrip", rstrip}, {"normalized", normalized}, {"special", special}};
}
json named(bool mask_lstrip) {
  return json::array({added(0, "<s>", true), added(1, "<pad>", true), added(2, "</s>", true),
                      added(3, "<unk>", true), added(260, "<mask>", true, mask_lstrip)});
}
// A tokenizer.json as tokenizers writes it for a byte-level BPE.
json hf_json(const json& added_tokens, bool prefix = false, bool pair_merges = true) {
  json merges = json::array();
  for (const auto& [a, b] : kMerges) merges.push_back(pair_merges ? json::array({a, b}) : json(a + " " + b));
  const json byte_level = {
      {"type", "ByteLevel"}, {"add_prefix_space", prefix}, {"trim_offsets", true}, {"use_regex", true}};
  return {{"version", "1.0"},
          {"truncation", nullptr},
          {"padding", nullptr},
          {"added_tokens", added_tokens},
          {"normalizer", nullptr},
          {"pre_tokenizer", byte_level},
          {"post_processor", nullptr},
          {"decoder", byte_level},
          {"model",
           {{"type", "BPE"},
            {"dropout", nullptr},
            {"unk_token", nullptr},
            {"continuing_subword_prefix", ""},
            {"end_of_word_suffix", ""},
            {"fuse_unk", false},
            {"byte_fallback", false},
            {"ignore_merges", false},
            {"vocab", model_vocab()},
            {"merges", merges}}}};
}
void write_json(const std::filesystem::path& p, const json& j) { tlmoe::test::write_text(p, j.dump()); }

std::unique_ptr<BartBpeTokenizer> plain(bool clean = true) {
  return BartBpeTokenizer::from_strings(model_vocab().dump(), merges_txt(), "mem", clean);
}
Ids bytes_to_ids(const std::string& s) {
  Ids ids;
  for (unsigned char c : s) ids.push_back(B(c));
  return ids;
}
const std::string R = "\xEF\xBF\xBD";  // U+FFFD

}  // namespace

TEST_CASE("tokenizer: bart-bpe decode repairs invalid UTF-8 as Python's errors='replace'", "[tokenizer]") {
  auto t = plain(false);
  auto dec = [&](const std::string& bytes) { return t->decode(bytes_to_ids(bytes)); };
  // well-formed: é (C3 A9), € (E2 82 AC), U+1F600 (F0 9F 98 80)
  CHECK(dec("\xC3\xA9") == "\xC3\xA9");
  CHECK(dec("\xE2\x82\xAC") == "\xE2\x82\xAC");
  CHECK(dec("\xF0\x9F\x98\x80") == "\xF0\x9F\x98\x80");
  // a truncated sequence is ONE U+FFFD, and the byte that broke it starts afresh
  CHECK(dec("\xE2\x82"
            "A") == R + "A");
  CHECK(dec("\xF0\x9F\x98") == R);
  CHECK(dec("a\xF0\x9F"
            "b\x80") == "a" + R + "b" + R);
  CHECK(dec("\xC3") == R);
  CHECK(dec("\xE2\x82\xE2\x82\xAC") == R + "\xE2\x82\xAC");
  // C0, C1, F5..FF start nothing: one U+FFFD each, and each continuation byte after them too
  CHECK(dec("\xC1\x83") == R + R);
  CHECK(dec("\xC0\xAF") == R + R);
  CHECK(dec("\xF5\x80") == R + R);
  CHECK(dec("\xFF"
            "a") == R + "a");
  // E0 needs A0..BF next (no overlong), ED 80..9F (no surrogate), F0 90..BF, F4 80..8F (<= U+10FFFF)
  CHECK(dec("\xE0\x80\x80") == R + R + R);
  CHECK(dec("\xED\xA0\x80") == R + R + R);
  CHECK(dec("\xED\x9F\xBF") == "\xED\x9F\xBF");  // U+D7FF
  CHECK(dec("\xF0\x8F\xBF\xBF") == R + R + R + R);
  CHECK(dec("\xF4\x90\x80\x80") == R + R + R + R);
  CHECK(dec("\xF4\x8F\xBF\xBF") == "\xF4\x8F\xBF\xBF");  // U+10FFFF
  CHECK(dec("\xF4\x8F\xBF") == R);
  // a lone continuation byte
  CHECK(dec("\x80\xBF") == R + R);
}

TEST_CASE("tokenizer: bart-bpe encodes by the GPT-2 regex and BPE merges", "[tokenizer]") {
  auto t = plain();
  // "hello": h e l l o -> (h e) rank 0 -> he l l o -> (l l) rank 1 -> he ll o -> (he ll) -> hell o
  CHECK(t->encode("hello") == Ids{263, B('o')});
  // " world" is one piece; (Ġ w) merges
  CHECK(t->encode("hello world") == Ids{263, B('o'), 264, B('o'), B('r'), B('l'), B('d')});
  // specials in the text are matched literally; <mask> has no lstrip without tokenizer.json
  CHECK(t->encode("a <mask>b</s>") == Ids{B('a'), B(' '), 260, B('b'), 2});
  CHECK(t->vocab_size() == 265);
}

TEST_CASE("tokenizer: bart-bpe skips every special token, pad/bos/eos and <unk>, <mask> too", "[tokenizer]") {
  auto t = plain(false);
  const Ids ids = {0, 3, 260, B('a'), 2, 1};
  CHECK(t->decode(ids) == "a");
  CHECK(t->decode(ids, /*skip_special=*/false) == "<s><unk><mask>a</s><pad>");
  for (std::int32_t id : {0, 1, 2, 3, 260}) CHECK(t->is_special(id));
  for (std::int32_t id : {B('a'), 261, 264}) CHECK_FALSE(t->is_special(id));
  t->set_semantics(HfSemantics::current);
  CHECK(t->decode(ids) == "a");
  CHECK(t->is_special(3));
  CHECK_THROWS_AS(t->decode({265}), std::out_of_range);
  CHECK_FALSE(t->is_special(265));
}

TEST_CASE("tokenizer: bart-bpe clean-up of spaces per transformers release", "[tokenizer]") {
  // " a , b ." and " don 't" as bytes
  const Ids ids = bytes_to_ids(" a , b . don 't I 'm");
  // no rule for " 't": "don 't" keeps its space
  const std::string raw = " a , b . don 't I 'm", clean = " a, b. don 't I'm";
  auto on = plain(/*clean=*/true), off = plain(/*clean=*/false);
  // legacy (4.46.3): as tokenizer_config.json says
  CHECK(on->semantics() == HfSemantics::legacy);
  CHECK(on->decode(ids) == clean);
  CHECK(off->decode(ids) == raw);
  // current (5.x): never for a BPE model
  on->set_semantics(HfSemantics::current);
  CHECK_FALSE(on->clean_up_spaces());
  CHECK(on->decode(ids) == raw);
  // the explicit override wins under either
  on->set_clean_up_spaces(true);
  CHECK(on->decode(ids) == clean);
  off->set_clean_up_spaces(false);
  CHECK(off->decode(ids) == raw);
  // the rules run one after the other over the whole text: " ' " -> "'" before " 's"
  auto t = plain(true);
  CHECK(t->decode(bytes_to_ids("it ' s ok !")) == "it's ok!");
}

TEST_CASE("tokenizer: bart-bpe fingerprint is the content hash tlmoe always wrote, whatever the semantics",
          "[tokenizer]") {
  const std::string v = model_vocab().dump(), m = merges_txt();
  auto t = BartBpeTokenizer::from_strings(v, m, "mem", true);
  CHECK(t->fingerprint() == "bart-bpe:" + tlmoe::io::fnv1a64_hex(v + '\0' + m + '1'));
  t->set_semantics(HfSemantics::current);
  t->set_clean_up_spaces(false);
  CHECK(t->fingerprint() == "bart-bpe:" + tlmoe::io::fnv1a64_hex(v + '\0' + m + '1'));

  tlmoe::test::TempDir d;
  tlmoe::test::write_text(d / "vocab.json", v);
  tlmoe::test::write_text(d / "merges.txt", m);
  // no tokenizer_config.json: clean-up on (the 4.x default before 4.45), in the fingerprint too
  auto a = BartBpeTokenizer::load(d.path());
  CHECK(a->fingerprint() == t->fingerprint());
  CHECK(a->clean_up_spaces());
  // with tokenizer.json: the specials' flags in file order, appended and hashed again
  write_json(d / "tokenizer.json", hf_json(named(/*mask_lstrip=*/true)));
  auto b = BartBpeTokenizer::load(d.path());
  CHECK(b->fingerprint() ==
        "bart-bpe:" + tlmoe::io::fnv1a64_hex(t->fingerprint() + "<s><pad></s><unk><mask>L"));
  // an added token beyond the vocabulary changes the encoding, so the fingerprint
  json more = named(true);
  more.push_back(added(265, "<extra_id_0>", true));
  write_json(d / "tokenizer.json", hf_json(more));
  CHECK(BartBpeTokenizer::load(d.path())->fingerprint() != b->fingerprint());
}

TEST_CASE("tokenizer: bart-bpe tokenizer.json added tokens, lstrip/rstrip and the two matching passes",
          "[tokenizer]") {
  tlmoe::test::TempDir d;
  json a = named(/*mask_lstrip=*/true);
  a.push_back(added(265, "<extra_id_0>", true));
  a.push_back(added(266, "newword", false, false, false, /*normalized=*/true));
  a.push_back(added(267, "ab", false, false, false, /*normalized=*/true));
  a.push_back(added(268, "bc", false, false, false, /*normalized=*/false));
  a.push_back(added(269, "<r>", false, false, /*rstrip=*/true, false));
  write_json(d / "tokenizer.json", hf_json(a));
  auto t = BartBpeTokenizer::load(d.path());
  CHECK(t->vocab_size() == 270);
  CHECK(t->id_to_piece(266) == "newword");
  // <mask> absorbs the space before it; the rest is BPE'd around it
  CHECK(t->encode(" a <mask> b") == Ids{B(' '), B('a'), 260, B(' '), B('b')});
  CHECK(t->encode("  <mask>") == Ids{260});
  CHECK(t->encode("x<extra_id_0>newword y") == Ids{B('x'), 265, 266, B(' '), B('y')});
  // "bc" is not normalized: matched first over the whole text, so "abc" is a + bc, not ab + c
  CHECK(t->encode("abc") == Ids{B('a'), 268});
  CHECK(t->encode("abd") == Ids{267, B('d')});
  // rstrip absorbs the whitespace after (a tab and U+3000 IDEOGRAPHIC SPACE are whitespace)
  CHECK(t->encode("x<r> \t\xE3\x80\x80y") == Ids{B('x'), 269, B('y')});
  // decode (current, tokenizers): skip drops the special ones; added tokens are their bytes
  t->set_semantics(HfSemantics::current);
  const Ids ids = {B('a'), 265, 266, B(' '), B('b'), 260};
  CHECK(t->decode(ids) == "anewword b");
  CHECK(t->decode(ids, false) == "a<extra_id_0>newword b<mask>");
  CHECK(t->is_special(265));
  CHECK_FALSE(t->is_special(266));
  // legacy, tokenizer.json alone: 4.46.3 loads it as BartTokenizerFast, which decodes as tokenizers
  t->set_semantics(HfSemantics::legacy);
  CHECK(t->decode(ids) == "anewword b");
  // the two merge formats ("a b" strings, [a, b] pairs) read the same
  write_json(d / "tokenizer.json", hf_json(a, false, /*pair_merges=*/false));
  auto s = BartBpeTokenizer::load(d.path());
  CHECK(s->fingerprint() == t->fingerprint());
  CHECK(s->encode("hello world") == Ids{263, B('o'), 264, B('o'), B('r'), B('l'), B('d')});
}

TEST_CASE("tokenizer: bart-bpe legacy decode of added tokens as 4.46.3's Python BartTokenizer",
          "[tokenizer]") {
  tlmoe::test::TempDir d;
  tlmoe::test::write_text(d / "vocab.json", model_vocab().dump());
  tlmoe::test::write_text(d / "merges.txt", merges_txt());
  json a = named(true);
  a.push_back(added(265, "<extra_id_0>", true));
  a.push_back(added(266, "newword", false, false, false, true));
  write_json(d / "tokenizer.json", hf_json(a));
  const Ids ids = {B('a'), 265, 266, B(' '), B('b')};
  {
    // <extra_id_0> is special in tokenizer.json but no additional special token: the Python
    // class keeps it; added tokens stand for their text, pieces joined by one space:
    // "a" | "<extra_id_0>" | "newword" | " b"
    auto t = BartBpeTokenizer::load(d.path());
    CHECK(t->decode(ids) == "a <extra_id_0> newword  b");
    CHECK_FALSE(t->is_special(265));
    t->set_semantics(HfSemantics::current);
    CHECK(t->decode(ids) == "anewword b");
    CHECK(t->is_special(265));
  }
  {
    // listed as an additional special token: skipped; "a" | "newword" | " b"
    write_json(d / "tokenizer_config.json", {{"additional_special_tokens", {"<extra_id_0>"}}});
    auto t = BartBpeTokenizer::load(d.path());
    CHECK(t->decode(ids) == "a newword  b");
    CHECK(t->decode(ids, false) == "a <extra_id_0> newword  b");
    // a skipped special does not break the run of text; a kept one within vocab.json is text
    CHECK(t->decode({266, 0, 266}) == "newword newword");
    CHECK(t->decode({266, 0, 266}, false) == "newword <s> newword");
  }
  {
    // the added tokens of a 4.x save_pretrained without tokenizer.json: added_tokens_decoder
    std::filesystem::remove(d / "tokenizer.json");
    json dec = json::object();
    dec["260"] = {{"content", "<mask>"}, {"lstrip", true},       {"rstrip", false},
                  {"normalized", true},  {"single_word", false}, {"special", true}};
    dec["265"] = {{"content", "newword"}, {"lstrip", false},      {"rstrip", false},
                  {"normalized", true},   {"single_word", false}, {"special", false}};
    write_json(d / "tokenizer_config.json",
               {{"added_tokens_decoder", dec}, {"clean_up_tokenization_spaces", true}});
    auto t = BartBpeTokenizer::load(d.path());
    CHECK(t->encode("x <mask>newword") == Ids{B('x'), 260, 265});
    CHECK(t->decode({B('x'), B(' '), B(','), 265}) == "x, newword");  // "x ," | "newword", then clean-up
  }
}

TEST_CASE("tokenizer: bart-bpe add_prefix_space puts a space before every piece between added tokens",
          "[tokenizer]") {
  tlmoe::test::TempDir d;
  write_json(d / "tokenizer.json", hf_json(named(false), /*prefix=*/true));
  write_json(d / "tokenizer_config.json", {{"add_prefix_space", true}});
  auto t = BartBpeTokenizer::load(d.path());
  CHECK(t->add_prefix_space());
  CHECK(t->encode("a<mask>b") == Ids{B(' '), B('a'), 260, B(' '), B('b')});
  CHECK(t->encode(" a") == Ids{B(' '), B('a')});
  // only ' ' counts as the space already there: "\ta" -> " \ta" -> " " "\t" "a"
  CHECK(t->encode("\ta") == Ids{B(' '), B('\t'), B('a')});
  CHECK(t->encode("") == Ids{});
  // tokenizer_config.json saying otherwise (BartTokenizer follows it, AutoTokenizer may not)
  write_json(d / "tokenizer_config.json", json::object());
  CHECK_THROWS_WITH(BartBpeTokenizer::load(d.path()), Catch::Contains("pre_tokenizer.add_prefix_space"));
}

TEST_CASE("tokenizer: bart-bpe refuses a tokenizer.json it cannot reproduce, naming file and key",
          "[tokenizer]") {
  tlmoe::test::TempDir d;
  const std::string file = (d / "tokenizer.json").string();
  auto refused = [&](const json& j, const std::string& key) {
    write_json(d / "tokenizer.json", j);
    INFO(key);
    CHECK_THROWS_AS(BartBpeTokenizer::load(d.path()), DataError);
    CHECK_THROWS_WITH(BartBpeTokenizer::load(d.path()), Catch::Contains(file) && Catch::Contains(key));
  };
  json j = hf_json(named(false));
  j["model"]["type"] = "WordPiece";
  refused(j, "model.type");
  j = hf_json(named(false));
  j["normalizer"] = {{"type", "NFC"}};
  refused(j, "normalizer");
  j = hf_json(named(false));
  j["pre_tokenizer"] = {{"type", "Whitespace"}};
  refused(j, "pre_tokenizer");
  j = hf_json(named(false));
  j["model"]["merges"][1] = json::array({"l", "l", "x"});
  refused(j, "model.merges[1]");
  j = hf_json(named(false));
  j["model"]["merges"].push_back("x y");  // "xy" is no token
  refused(j, "model.merges[4]");
  j = hf_json(named(false));
  j["model"]["ignore_merges"] = true;
  refused(j, "model.ignore_merges");
  j = hf_json(named(false));
  j["model"]["vocab"]["<s>"] = 7;
  refused(j, "model.vocab");
  json a = named(false);
  a.push_back(added(300, "<x>", true));  // tokenizers would give it 265
  refused(hf_json(a), "added_tokens[5]");
  a = named(false);
  a.push_back(added(265, "<x>", true));
  a[5]["single_word"] = true;
  refused(hf_json(a), "added_tokens[5].single_word");
  tlmoe::test::write_text(d / "tokenizer.json", "{ not json");
  CHECK_THROWS_WITH(BartBpeTokenizer::load(d.path()),
                    Catch::Contains(file) && Catch::Contains("not valid JSON"));
  // next to vocab.json + merges.txt, tokenizer.json must say the same
  write_json(d / "tokenizer.json", hf_json(named(false)));
  tlmoe::test::write_text(d / "merges.txt", merges_txt());
  json v = model_vocab();
  tlmoe::test::write_text(d / "vocab.json", v.dump());
  CHECK_NOTHROW(BartBpeTokenizer::load(d.path()));
  v["hell"] = 264, v["Ġw"] = 263;
  tlmoe::test::write_text(d / "vocab.json", v.dump());
  CHECK_THROWS_WITH(BartBpeTokenizer::load(d.path()),
                    Catch::Contains(file) && Catch::Contains("model.vocab"));
  tlmoe::test::write_text(d / "vocab.json", model_vocab().dump());
  tlmoe::test::write_text(d / "merges.txt", "#version: 0.2\nh e\nl l\nhe ll\n");
  CHECK_THROWS_WITH(BartBpeTokenizer::load(d.path()),
                    Catch::Contains(file) && Catch::Contains("model.merges"));
  tlmoe::test::write_text(d / "merges.txt", merges_txt());
  // an additional special token that is no added token
  tlmoe::test::write_text(d / "vocab.json", model_vocab().dump());
  write_json(d / "tokenizer_config.json", {{"additional_special_tokens", {"<nope>"}}});
  CHECK_THROWS_WITH(BartBpeTokenizer::load(d.path()),
                    Catch::Contains("tokenizer_config.json") && Catch::Contains("<nope>"));
}

TEST_CASE("tokenizer: bart-bpe save_hf_files writes what loads back the same", "[tokenizer]") {
  tlmoe::test::TempDir d;
  json a = named(/*mask_lstrip=*/true);
  a.push_back(added(265, "<extra_id_0>", true));
  a.push_back(added(266, "newword", false, false, false, true));
  write_json(d / "src" / "tokenizer.json", hf_json(a));
  write_json(d / "src" / "tokenizer_config.json", {{"clean_up_tokenization_spaces", true}});
  auto t = BartBpeTokenizer::load(d / "src");
  t->save_hf_files(d / "out", 1024);
  for (const char* f :
       {"vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"})
    CHECK(std::filesystem::exists(d / "out" / f));
  const json stm = json::parse(tlmoe::test::read_text(d / "out" / "special_tokens_map.json"));
  CHECK(stm["bos_token"] == "<s>");
  CHECK(stm["eos_token"] == "</s>");
  CHECK(stm["sep_token"] == "</s>");
  CHECK(stm["cls_token"] == "<s>");
  CHECK(stm["pad_token"] == "<pad>");
  CHECK(stm["unk_token"] == "<unk>");
  CHECK(stm["mask_token"]["content"] == "<mask>");
  CHECK(stm["mask_token"]["lstrip"] == true);
  CHECK(stm["additional_special_tokens"] == json::array({"<extra_id_0>"}));
  const json cfg = json::parse(tlmoe::test::read_text(d / "out" / "tokenizer_config.json"));
  CHECK(cfg["model_max_length"] == 1024);
  CHECK(cfg["clean_up_tokenization_spaces"] == true);
  CHECK(cfg["tokenizer_class"] == "BartTokenizer");
  CHECK(tlmoe::test::read_text(d / "out" / "merges.txt") == merges_txt());

  auto back = BartBpeTokenizer::load(d / "out");
  for (const std::string text :
       {" a <mask> b", "x<extra_id_0>newword y", "hello world , !", "\xC3\xA9t\xC3\xA9"}) {
    INFO(text);
    CHECK(back->encode(text) == t->encode(text));
  }
  const Ids ids = {B('a'), 265, 266, B(' '), B(','), 260}, no_added_text = {B('a'), 265, B(' '), B(','), 260};
  t->set_semantics(HfSemantics::current);
  back->set_semantics(HfSemantics::current);
  CHECK(back->decode(ids) == t->decode(ids));
  CHECK(back->decode(ids, false) == t->decode(ids, false));
  t->set_semantics(HfSemantics::legacy);
  back->set_semantics(HfSemantics::legacy);
  CHECK(back->decode(no_added_text) == "a,");
  CHECK(t->decode(no_added_text) == "a,");
  // the saved directory has vocab.json, so 4.46.3 loads it as the Python class, which writes an
  // added token that is not special with spaces around it: "a" | "newword" | " ," -> clean-up
  CHECK(back->decode(ids) == "a newword ,");
  CHECK(t->decode(ids) == "anewword,");
}
