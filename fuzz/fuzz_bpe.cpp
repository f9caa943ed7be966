// Fuzz target: BART's byte-level BPE (lib/text/bart_bpe_tokenizer.cpp) on arbitrary bytes:
//   - encode(input) with a tiny in-code vocabulary (bpe_vocab.h), loaded as vocab.json +
//     merges.txt (from_strings) and as a directory whose tokenizer.json adds tokens with
//     lstrip/rstrip/normalized flags (load);
//   - decode of those ids under both semantics, with and without skip_special; for valid UTF-8
//     without clean-up, decode(encode(text)) must give the text back, and the pre-tokenizer's
//     pieces must concatenate to the text;
//   - decode of arbitrary id sequences read from the input (little-endian 16-bit values mapped
//     to [-8, vocab_size + 8)): ids outside the vocabulary must throw std::out_of_range, as the
//     Tokenizer interface documents (tokenizer.h); any other exception is a finding (it is not
//     caught: fuzz_util.h).
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "bpe_vocab.h"
#include "data/tsv.h"
#include "fuzz_util.h"
#include "text/bart_bpe_tokenizer.h"

using namespace tlmoe;
using text::BartBpeTokenizer;
using text::HfSemantics;

namespace {

std::unique_ptr<BartBpeTokenizer> legacy, current, added;

// A tokenizer.json (as tokenizers writes one) over the tiny vocabulary, with added tokens.
std::string tokenizer_json_with_added_tokens() {
  using json = nlohmann::ordered_json;
  auto tok = [](int id, const char* content, bool special, bool lstrip, bool rstrip, bool normalized) {
    return json{{"id", id},         {"content", content},       {"single_word", false}, {"lstrip", lstrip},
                {"rstrip", rstrip}, {"normalized", normalized}, {"special", special}};
  };
  const json vocab = fuzz::tiny_vocab();
  const int n = static_cast<int>(vocab.size());
  json merges = json::array();
  for (const auto& [a, b] : fuzz::tiny_merges()) merges.push_back(json::array({a, b}));
  const json added_tokens = json::array({tok(0, "<s>", true, false, false, false), tok(1, "<pad>", true, false, false, false),
                                         tok(2, "</s>", true, false, false, false), tok(3, "<unk>", true, false, false, false),
                                         tok(260, "<mask>", true, true, false, false),
                                         tok(n, "[SEP]", true, true, true, false),
                                         tok(n + 1, "<extra>", false, false, false, true),
                                         tok(n + 2, " the end", false, false, true, true)});
  const json byte_level = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}};
  const json j = {{"version", "1.0"},        {"truncation", nullptr},   {"padding", nullptr},
                  {"added_tokens", added_tokens}, {"normalizer", nullptr}, {"pre_tokenizer", byte_level},
                  {"post_processor", nullptr}, {"decoder", byte_level},
                  {"model", {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr},
                             {"continuing_subword_prefix", ""}, {"end_of_word_suffix", ""}, {"fuse_unk", false},
                             {"byte_fallback", false}, {"ignore_merges", false}, {"vocab", vocab}, {"merges", merges}}}};
  return j.dump(1);
}

void decode_all(const BartBpeTokenizer& t, const std::vector<std::int32_t>& ids, const char* where) {
  bool in_range = true;
  for (auto id : ids) in_range = in_range && id >= 0 && id < t.vocab_size();
  for (bool skip : {true, false}) {
    try {
      t.decode(ids, skip);
      fuzz::check(in_range, where, "decode accepted an id outside the vocabulary");
    } catch (const std::out_of_range& e) {
      if (in_range) fuzz::finding(where, std::string("std::out_of_range for ids inside the vocabulary: ") + e.what());
    } catch (const InputError&) {
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const std::string vocab = fuzz::tiny_vocab().dump(), merges = fuzz::tiny_merges_txt();
  legacy = BartBpeTokenizer::from_strings(vocab, merges, "tiny", true);
  current = BartBpeTokenizer::from_strings(vocab, merges, "tiny", true);
  current->set_semantics(HfSemantics::current);
  current->set_clean_up_spaces(false);
  const auto dir = fuzz::scratch() / "tokenizer";
  std::filesystem::create_directories(dir);
  fuzz::write_bytes(dir / "tokenizer.json", tokenizer_json_with_added_tokens());
  added = BartBpeTokenizer::load(dir);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text = fuzz::as_text(data, size);
  const bool utf8 = !data::find_invalid_utf8(text).has_value();

  for (auto* t : {legacy.get(), added.get()}) {
    std::vector<std::int32_t> ids;
    fuzz::expect_input_error("encode", [&] { ids = t->encode(text); });
    for (auto id : ids) fuzz::check(id >= 0 && id < t->vocab_size(), "encode", "an id outside the vocabulary");
    decode_all(*t, ids, "decode(encode(input))");
    t->set_semantics(HfSemantics::current);
    decode_all(*t, ids, "decode(encode(input)), current semantics");
    t->set_semantics(HfSemantics::legacy);
  }

  fuzz::expect_input_error("round trip", [&] {
    std::vector<std::int32_t> ids = current->encode(text);
    if (!utf8) return;
    const std::string back = current->decode(ids, false);
    fuzz::check(back == text, "round trip", "decode(encode(text), skip_special = false) != text: '" + back + "'");
    std::string joined;
    for (const auto& piece : BartBpeTokenizer::pretokenize(text)) joined += piece;
    fuzz::check(joined == text, "pretokenize", "the pieces do not concatenate to the text");
  });

  // Arbitrary ids: two input bytes each.
  std::vector<std::int32_t> ids;
  const std::int32_t n = legacy->vocab_size();
  for (std::size_t i = 0; i + 1 < size; i += 2)
    ids.push_back(static_cast<std::int32_t>((data[i] | (data[i + 1] << 8)) % (n + 16)) - 8);
  for (auto* t : {legacy.get(), current.get(), added.get()}) {
    decode_all(*t, ids, "decode(arbitrary ids)");
    for (auto id : ids) {
      try {
        t->id_to_piece(id);
        t->is_special(id);
      } catch (const std::out_of_range&) {
        if (id >= 0 && id < t->vocab_size()) fuzz::finding("id_to_piece", "std::out_of_range for an id inside the vocabulary");
      }
    }
  }
  return 0;
}
