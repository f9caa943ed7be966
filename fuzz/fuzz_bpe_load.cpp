// Fuzz target: reading a Hugging Face tokenizer directory (BartBpeTokenizer::load and
// from_strings, lib/text/bart_bpe_tokenizer.cpp). The first input byte picks the file(s) the
// rest of the input becomes, in a fresh directory:
//   0: tokenizer.json alone
//   1: vocab.json and merges.txt, split at the first NUL byte (also given to from_strings)
//   2: tokenizer_config.json, next to the valid vocab.json + merges.txt of bpe_vocab.h
//   3: special_tokens_map.json, next to the same
// A tokenizer that loads then encodes and decodes a fixed sentence and every id it has.
#include <memory>
#include <string>
#include <vector>

#include "bpe_vocab.h"
#include "fuzz_util.h"
#include "text/bart_bpe_tokenizer.h"

using namespace tlmoe;
using text::BartBpeTokenizer;

namespace {

void exercise(const BartBpeTokenizer& t) {
  const auto ids = t.encode(" the quick <mask> fox's 12 [SEP] é\n\n  ends<s>");
  std::vector<std::int32_t> all;
  for (std::int32_t id = 0; id < t.vocab_size() && id < 4096; ++id) all.push_back(id);
  for (auto s : {text::HfSemantics::legacy, text::HfSemantics::current})
    for (bool skip : {true, false}) {
      const_cast<BartBpeTokenizer&>(t).set_semantics(s);
      t.decode(ids, skip);
      t.decode(all, skip);
    }
  for (auto id : all) t.id_to_piece(id);
  t.fingerprint();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const int mode = data[0] % 4;
  const std::string rest(fuzz::as_text(data + 1, size - 1));
  const auto dir = fuzz::scratch() / "tokenizer";
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  std::filesystem::create_directories(dir);

  if (mode == 0) {
    fuzz::write_bytes(dir / "tokenizer.json", rest);
  } else if (mode == 1) {
    const std::size_t nul = rest.find('\0');
    const std::string vocab = rest.substr(0, nul), merges = nul == std::string::npos ? "" : rest.substr(nul + 1);
    fuzz::write_bytes(dir / "vocab.json", vocab);
    fuzz::write_bytes(dir / "merges.txt", merges);
    fuzz::expect_input_error("from_strings", [&] {
      exercise(*BartBpeTokenizer::from_strings(vocab, merges, "fuzz", true));
    });
  } else {
    fuzz::write_bytes(dir / "vocab.json", fuzz::tiny_vocab().dump());
    fuzz::write_bytes(dir / "merges.txt", fuzz::tiny_merges_txt());
    fuzz::write_bytes(dir / (mode == 2 ? "tokenizer_config.json" : "special_tokens_map.json"), rest);
  }
  fuzz::expect_input_error("load", [&] { exercise(*BartBpeTokenizer::load(dir)); });
  return 0;
}
