// Token caches (hand-checked ids, binary round trip, damaged files) and `preprocess` on a tiny
// CrossFit-layout dataset: first run builds everything, a second does nothing, a change
// rebuilds exactly what it affects, bad input fails before anything is written.
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <map>
#include <sstream>

#include "common/error.h"
#include "config/config.h"
#include "data/preprocess.h"
#include "data/token_cache.h"
#include "data/tsv.h"
#include "test_util.h"
#include "text/tokenizer.h"

namespace fs = std::filesystem;
using namespace tlmoe::data;
using tlmoe::DataError;
using tlmoe::test::read_text;
using tlmoe::test::TempDir;
using tlmoe::test::write_text;

namespace {

// A tokenizer whose ids are easy to check by hand: each space-separated word is one id,
// 10 + its length; "[x]" style words are 100 + length. Decode is not needed here.
class WordLengthTokenizer final : public tlmoe::text::Tokenizer {
 public:
  std::vector<std::int32_t> encode(std::string_view text) const override {
    std::vector<std::int32_t> ids;
    std::istringstream in{std::string(text)};
    std::string w;
    while (in >> w) ids.push_back((w.front() == '[' ? 100 : 10) + static_cast<std::int32_t>(w.size()));
    return ids;
  }
  std::string decode(const std::vector<std::int32_t>&, bool) const override { return ""; }
  std::int32_t pad_id() const override { return 1; }
  std::int32_t bos_id() const override { return 0; }
  std::int32_t eos_id() const override { return 2; }
  std::int32_t unk_id() const override { return 3; }
  std::int32_t vocab_size() const override { return 200; }
  std::string id_to_piece(std::int32_t id) const override { return std::to_string(id); }
  std::string fingerprint() const override { return "test:wordlength"; }
  std::string kind() const override { return "test"; }
};

using Ids = std::vector<std::int32_t>;

const std::vector<std::string> kWords = {"the",      "cat",       "sat",   "on",    "mat",   "question:",
                                         "context:", "who",       "river", "city",  "happy", "sad",
                                         "review",   "great",     "awful", "movie", "old",   "new",
                                         "because",  "sentence:", "blue"};

// A few deterministic example lines for one file.
std::string tsv_lines(const std::string& salt, int n) {
  std::string out;
  std::uint32_t s = static_cast<std::uint32_t>(std::hash<std::string>{}(salt));
  auto word = [&] {
    s = s * 1664525u + 1013904223u;
    return kWords[(s >> 8) % kWords.size()];
  };
  for (int i = 0; i < n; ++i) {
    std::string input;
    for (int j = 0; j < 4 + i % 5; ++j) input += (j ? " " : "") + word();
    out += input + "\t" + word() + (i % 3 == 0 ? "\t" + word() + " " + word() : "") + "\n";
  }
  return out;
}

// Tiny CrossFit layout: t-a and t-b are upstream (train) tasks, t-c is a test task.
// Each task has k-shot splits for seeds 13 and 42; t-a also has full files.
struct TinyGym {
  TempDir dir;
  TinyGym() {
    write_text(dir / "splits.json",
               R"({"all": ["t-a", "t-b", "t-c"], "train": ["t-a", "t-b"], "dev": [], "test": ["t-c"]})");
    write_text(
        dir / "tasks.json",
        R"({"t-a": {"metric": "EM"}, "t-b": {"metric": "ACC"}, "t-c": {"metric": "Classification-F1"}})");
    for (const std::string task : {"t-a", "t-b", "t-c"})
      for (const std::string seed : {"13", "42"})
        for (const std::string split : {"train", "dev", "test"}) {
          const std::string name = task + "_4_" + seed + "_" + split + ".tsv";
          write_text(dir / task / name, tsv_lines(name, 6));
        }
    write_text(dir / "t-a" / "t-a_full_train.tsv", tsv_lines("full", 20));
    write_text(dir / "t-a" / "t-a_full_dev.tsv", tsv_lines("fulldev", 5));
  }
  fs::path tok(const std::string& task, const std::string& stem) const {
    return fs::path(tlmoe::cache_dir(config())) / "tokens" / task / (stem + ".tok");
  }
  tlmoe::Config config() const {
    tlmoe::Config c = tlmoe::Config::defaults();
    c.data.dir = dir.path().string();
    c.data.splits = "";
    c.data.tasks = "";
    c.data.cache_dir = "";
    c.data.max_input_len = 8;
    c.data.max_output_len = 6;
    c.data.upstream_source = "kshot";
    c.data.task_prefix = true;
    c.tokenizer.model = "";
    c.tokenizer.vocab_size = 40;
    c.tokenizer.model_type = "unigram";
    c.tokenizer.character_coverage = 1.0;
    return c;
  }
};

struct FileState {
  std::string bytes;
  fs::file_time_type mtime;
  bool operator==(const FileState& o) const { return bytes == o.bytes && mtime == o.mtime; }
};

std::map<std::string, FileState> cache_files(const fs::path& cache) {
  std::map<std::string, FileState> out;
  for (const auto& e : fs::recursive_directory_iterator(cache))
    if (e.is_regular_file())
      out[fs::relative(e.path(), cache).string()] = {read_text(e.path()), e.last_write_time()};
  return out;
}

PreprocessReport run(const tlmoe::Config& cfg, std::string* log = nullptr) {
  std::ostringstream out;
  auto r = preprocess(cfg, out);
  if (log) *log = out.str();
  return r;
}

}  // namespace

TEST_CASE("token cache: hand-checked ids, truncation keeps </s>, counts", "[preprocess]") {
  WordLengthTokenizer tok;
  std::vector<TsvExample> examples = {{"a bb", {"ccc", "d e f g h"}}, {"one two three four five six", {"x"}}};
  TokenizeOptions o;
  o.max_input_len = 6;
  o.max_output_len = 5;
  o.task_prefix = true;
  TokenCache c = tokenize_examples(examples, tok, "tk", o);
  REQUIRE(c.examples.size() == 2);
  // " [tk] a bb" -> [tk]=104, a=11, bb=12
  CHECK(c.examples[0].input_ids == Ids{0, 104, 11, 12, 2});
  CHECK(c.examples[0].output_ids[0] == Ids{0, 13, 2});
  CHECK(c.examples[0].output_ids[1] == Ids{0, 11, 11, 11, 2});   // d e f g h cut to 5, </s> kept
  CHECK(c.examples[1].input_ids == Ids{0, 104, 13, 13, 15, 2});  // cut from 9 ids
  CHECK(c.examples[1].output_ids[0] == Ids{0, 11, 2});
  const TokenStats& s = c.manifest.stats;
  CHECK(s.examples == 2);
  CHECK(s.outputs == 3);
  CHECK(s.truncated_inputs == 1);
  CHECK(s.truncated_outputs == 1);
  CHECK(s.truncated_examples == 2);
  CHECK(s.input_tokens == 11);
  CHECK(s.output_tokens == 11);
  CHECK(s.max_input_tokens == 6);
  CHECK(s.longest_input_untruncated == 9);
  CHECK(s.longest_output_untruncated == 7);
  CHECK(c.manifest.key.tokenizer_fingerprint == "test:wordlength");

  o.task_prefix = false;
  CHECK(tokenize_examples(examples, tok, "tk", o).examples[0].input_ids == Ids{0, 11, 12, 2});

  // an instruction goes after the prefix and before the input: " [tk] say yes a bb"
  o.max_input_len = 16;
  o.instruction = "say yes";
  CHECK(tokenize_examples(examples, tok, "tk", o).examples[0].input_ids == Ids{0, 13, 13, 11, 12, 2});
  o.task_prefix = true;
  TokenCache with = tokenize_examples(examples, tok, "tk", o);
  CHECK(with.examples[0].input_ids == Ids{0, 104, 13, 13, 11, 12, 2});
  CHECK(with.examples[0].output_ids[0] == Ids{0, 13, 2});  // outputs never carry it
  CHECK(input_text("tk", "a bb", true, "say yes") == " [tk] say yes a bb");
  CHECK(input_text("tk", "a bb", false, "") == "a bb");
}

TEST_CASE("token cache: binary layout, round trip, damaged and old files", "[preprocess]") {
  TempDir d;
  WordLengthTokenizer tok;
  TokenCache c = tokenize_examples({{"a bb", {"ccc", "dd"}}, {"e", {"f"}}}, tok, "tk", TokenizeOptions{});
  c.manifest.source = "x.tsv";
  c.manifest.key.source_hash = "0123456789abcdef";
  write_token_cache(d / "c.tok", c);
  const std::string bytes = read_text(d / "c.tok");
  CHECK(bytes.substr(0, 8) == "TLMOETOK");
  CHECK(bytes.substr(8, 4) == std::string("\x01\x00\x00\x00", 4));  // version 1, little endian
  std::uint64_t manifest_len = 0;
  for (int i = 0; i < 8; ++i)
    manifest_len |= std::uint64_t(static_cast<unsigned char>(bytes[12 + i])) << (8 * i);
  auto manifest = nlohmann::json::parse(bytes.substr(20, manifest_len));
  CHECK(manifest.at("task") == "tk");
  CHECK(manifest.at("stats").at("examples") == 2);
  // body: E = 2 examples, Q = 5 sequences, N = 18 tokens:
  //   [0,104,11,12,2] [0,13,2] [0,12,2] | [0,104,11,2] [0,11,2]
  // then outputs per example {2, 1}, offsets {0, 5, 8, 11, 15, 18}, the tokens.
  const std::size_t body = 20 + manifest_len;
  REQUIRE(bytes.size() == body + 24 + 4 * 2 + 8 * 6 + 4 * 18);
  CHECK(bytes[body] == 2);
  CHECK(bytes[body + 8] == 5);
  CHECK(bytes[body + 16] == 18);
  CHECK(bytes[body + 24] == 2);
  CHECK(bytes[body + 28] == 1);
  const std::size_t offsets = body + 32;
  for (int q = 0; q < 6; ++q)
    CHECK(static_cast<int>(bytes[offsets + 8 * q]) == std::vector<int>{0, 5, 8, 11, 15, 18}[q]);
  const std::size_t tokens = offsets + 48;
  CHECK(bytes.substr(tokens, 8) == std::string("\x00\x00\x00\x00\x68\x00\x00\x00", 8));  // 0, 104

  TokenCache back = read_token_cache(d / "c.tok");
  REQUIRE(back.examples.size() == 2);
  CHECK(back.examples[0].input_ids == Ids{0, 104, 11, 12, 2});
  CHECK(back.examples[0].output_ids == std::vector<Ids>{{0, 13, 2}, {0, 12, 2}});
  CHECK(back.examples[1].input_ids == Ids{0, 104, 11, 2});
  CHECK(back.examples[1].output_ids == std::vector<Ids>{{0, 11, 2}});
  CHECK(back.manifest.key == c.manifest.key);
  CHECK(back.manifest.source == "x.tsv");
  CHECK(read_token_cache_manifest(d / "c.tok").stats.output_tokens == c.manifest.stats.output_tokens);

  const std::string f = (d / "c.tok").string();
  write_text(d / "c.tok", bytes.substr(0, bytes.size() - 3));
  CHECK_THROWS_WITH(read_token_cache(d / "c.tok"),
                    Catch::StartsWith("data error: " + f + ": damaged token cache: size") &&
                        Catch::Contains("(truncated)") &&
                        Catch::Contains("rebuild it with `tlmoe preprocess`"));
  CHECK_THROWS_AS(read_token_cache_manifest(d / "c.tok"), DataError);
  write_text(d / "c.tok", bytes.substr(0, 30));
  CHECK_THROWS_WITH(read_token_cache_manifest(d / "c.tok"),
                    Catch::Contains("the file ends inside the manifest"));
  std::string flipped = bytes;
  flipped[flipped.size() - 2] ^= 0x40;
  write_text(d / "c.tok", flipped);
  CHECK_NOTHROW(read_token_cache_manifest(d / "c.tok"));
  CHECK_THROWS_WITH(read_token_cache(d / "c.tok"), Catch::Contains("content hash mismatch"));
  CHECK_THROWS_WITH(read_token_cache_manifest(d / "c.tok", true), Catch::Contains("content hash mismatch"));
  std::string old = bytes;
  old[8] = 0;
  write_text(d / "c.tok", old);
  CHECK_THROWS_WITH(read_token_cache(d / "c.tok"), "data error: " + f +
                                                       ": token cache format version 0 is older than this "
                                                       "tlmoe's (1); rebuild it with `tlmoe preprocess`");
  write_text(d / "c.tok", "NOTATOKFILE.........................");
  CHECK_THROWS_WITH(read_token_cache(d / "c.tok"), Catch::Contains("not a tlmoe token cache"));
}

TEST_CASE("preprocess: builds everything once, then only what changed", "[preprocess]") {
  TinyGym g;
  const fs::path cache = tlmoe::cache_dir(g.config());
  const std::size_t kFiles = 3 * 2 * 3 + 2;  // tasks x seeds x splits + t-a's full files

  std::string log;
  PreprocessReport r1 = run(g.config(), &log);
  CHECK(r1.tokenizer_trained);
  CHECK(r1.files_built == static_cast<std::int64_t>(kFiles));
  CHECK(r1.files_reused == 0);
  CHECK(r1.vocab_size > 4);
  CHECK(fs::exists(cache / "tokenizer" / "spm.model"));
  CHECK(fs::exists(cache / "manifest.json"));
  REQUIRE(r1.tasks.size() == 3);
  CHECK(r1.tasks[0].task == "t-a");
  CHECK(r1.tasks[0].partition == "train");
  CHECK(r1.tasks[0].files == 8);
  CHECK(r1.tasks[0].stats.examples == 6 * 6 + 25);
  CHECK(r1.tasks[2].partition == "test");
  CHECK(r1.tasks[2].stats.max_input_tokens <= 8);
  CHECK(r1.tasks[2].stats.truncated_examples > 0);
  CHECK(log.find("20 built, 0 up to date") != std::string::npos);
  CHECK(log.find("\ntask ") != std::string::npos);  // the table's header
  const std::size_t row = log.find("\nt-c ");
  REQUIRE(row != std::string::npos);
  CHECK(log.substr(row, log.find('\n', row + 1) - row).find(" test ") != std::string::npos);

  // the cache reads back, every sequence framed by <s> ... </s> within the limits
  TokenCache c = read_token_cache(g.tok("t-c", "t-c_4_13_dev"));
  CHECK(c.examples.size() == 6);
  for (const auto& ex : c.examples) {
    CHECK(ex.input_ids.front() == 0);
    CHECK(ex.input_ids.back() == 2);
    CHECK(ex.input_ids.size() <= 8);
    for (const auto& o : ex.output_ids) CHECK((o.front() == 0 && o.back() == 2 && o.size() <= 6));
  }
  auto manifest = nlohmann::json::parse(read_text(cache / "manifest.json"));
  CHECK(manifest.at("tokenizer").at("fingerprint") == r1.tokenizer_fingerprint);
  CHECK(manifest.at("tasks").at("t-a").at("files").size() == 8);
  CHECK(manifest.at("tasks").at("t-c").at("partition") == "test");

  // second run: nothing to do, nothing touched (bytes and mtimes)
  const auto before = cache_files(cache);
  PreprocessReport r2 = run(g.config());
  CHECK_FALSE(r2.tokenizer_trained);
  CHECK(r2.files_built == 0);
  CHECK(r2.files_reused == static_cast<std::int64_t>(kFiles));
  CHECK(r2.tokenizer_fingerprint == r1.tokenizer_fingerprint);
  CHECK(cache_files(cache) == before);

  // a test task's file changes: exactly that cache is rebuilt (the tokenizer does not see it)
  write_text(g.dir / "t-c" / "t-c_4_13_dev.tsv", tsv_lines("changed", 4));
  PreprocessReport r3 = run(g.config());
  CHECK_FALSE(r3.tokenizer_trained);
  CHECK(r3.built == std::vector<std::string>{"tokens/t-c/t-c_4_13_dev.tok"});
  CHECK(read_token_cache(g.tok("t-c", "t-c_4_13_dev")).examples.size() == 4);

  // touching without a change rebuilds nothing (content hashes, not mtimes)
  fs::last_write_time(g.dir / "t-b" / "t-b_4_42_dev.tsv", fs::file_time_type::clock::now());
  CHECK(run(g.config()).files_built == 0);

  // an upstream dev file is not tokenizer text either
  write_text(g.dir / "t-b" / "t-b_4_42_dev.tsv", tsv_lines("changed too", 3));
  CHECK(run(g.config()).built == std::vector<std::string>{"tokens/t-b/t-b_4_42_dev.tok"});

  // a length limit changes every cache, not the tokenizer
  auto cfg = g.config();
  cfg.data.max_output_len = 7;
  PreprocessReport r4 = run(cfg);
  CHECK_FALSE(r4.tokenizer_trained);
  CHECK(r4.files_built == static_cast<std::int64_t>(kFiles));

  // a different vocabulary size retrains the tokenizer and rebuilds everything
  cfg.tokenizer.vocab_size = 50;
  PreprocessReport r5 = run(cfg);
  CHECK(r5.tokenizer_trained);
  CHECK(r5.vocab_size != r1.vocab_size);
  CHECK(r5.files_built == static_cast<std::int64_t>(kFiles));
  CHECK(run(cfg).files_built == 0);
}

TEST_CASE("preprocess: damaged caches are detected and rebuilt", "[preprocess]") {
  TinyGym g;
  run(g.config());
  const fs::path truncated = g.tok("t-a", "t-a_4_13_test");
  const fs::path flipped = g.tok("t-b", "t-b_4_13_train");
  const std::string good = read_text(truncated);
  write_text(truncated, good.substr(0, good.size() / 2));
  std::string bytes = read_text(flipped);
  bytes[bytes.size() - 1] ^= 0x01;
  write_text(flipped, bytes);

  std::string log;
  PreprocessReport r = run(g.config(), &log);
  CHECK(r.built == std::vector<std::string>{"tokens/t-a/t-a_4_13_test.tok", "tokens/t-b/t-b_4_13_train.tok"});
  CHECK(log.find("rebuilding tokens/t-a/t-a_4_13_test.tok: data error:") != std::string::npos);
  CHECK(log.find("truncated)") != std::string::npos);
  CHECK(log.find("content hash mismatch") != std::string::npos);
  CHECK(read_text(truncated) == good);
  CHECK_NOTHROW(read_token_cache(flipped));
}

TEST_CASE("preprocess: a bad TSV fails naming file and line, writing nothing for it", "[preprocess]") {
  TinyGym g;
  const fs::path bad = g.dir / "t-c" / "t-c_4_42_test.tsv";
  write_text(bad, "fine\tyes\nfine too\tno\nbroken line without tab\n");
  try {
    run(g.config());
    FAIL("no error");
  } catch (const DataError& e) {
    CHECK(e.file() == bad.string());
    CHECK(e.line() == 3);
    CHECK(std::string(e.what()).find("no TAB") != std::string::npos);
  }
  CHECK_FALSE(fs::exists(g.tok("t-c", "t-c_4_42_test")));
  CHECK_FALSE(fs::exists(fs::path(tlmoe::cache_dir(g.config())) / "manifest.json"));

  // after a complete run, a file that turns bad keeps its old cache and the manifest
  write_text(bad, tsv_lines("good again", 5));
  run(g.config());
  const std::string old_cache = read_text(g.tok("t-c", "t-c_4_42_test"));
  write_text(bad, "ok\tyes\n\xC3\x28\tno\n");
  CHECK_THROWS_WITH(run(g.config()), Catch::StartsWith("data error: " + bad.string() + ":2: invalid UTF-8"));
  CHECK(read_text(g.tok("t-c", "t-c_4_42_test")) == old_cache);
  CHECK(fs::exists(fs::path(tlmoe::cache_dir(g.config())) / "manifest.json"));
}

TEST_CASE("preprocess: metadata and layout problems are reported before any work", "[preprocess]") {
  TinyGym g;
  write_text(g.dir / "tasks.json",
             R"({"t-a": {"metric": "EM"}, "t-bb": {"metric": "ACC"}, "t-c": {"metric": "ACC"}})");
  CHECK_THROWS_WITH(run(g.config()), Catch::Contains("tasks.json: no entry for task 't-b'") &&
                                         Catch::Contains("did you mean 't-bb'?"));
  CHECK_FALSE(fs::exists(g.dir / ".tlmoe-cache"));
  write_text(g.dir / "tasks.json",
             R"({"t-a": {"metric": "EM"}, "t-b": {"metric": "ACC"}, "t-c": {"metric": "ACC"}})");

  auto cfg = g.config();
  cfg.data.upstream_source = "full";
  CHECK_THROWS_WITH(run(cfg), Catch::Contains("t-b_full_train.tsv: missing: data.upstream_source is 'full'"));

  fs::remove_all(g.dir / "t-c");
  CHECK_THROWS_WITH(run(g.config()),
                    Catch::Contains("task 't-c' is listed in") && Catch::Contains("has no folder"));
  CHECK_FALSE(fs::exists(g.dir / ".tlmoe-cache"));
}

TEST_CASE("preprocess: an explicit tokenizer.model is used as is, full upstream text", "[preprocess]") {
  TinyGym g;
  auto cfg = g.config();
  cfg.data.upstream_source = "full";
  write_text(g.dir / "t-b" / "t-b_full_train.tsv", tsv_lines("b full", 10));
  PreprocessReport r1 = run(cfg);
  CHECK(r1.tokenizer_trained);
  CHECK(r1.files_built == 21);

  // a line cap: balanced over the upstream tasks (6 + 6 lines), a different tokenizer
  cfg.tokenizer.max_train_lines = 12;
  std::string log;
  PreprocessReport capped = run(cfg, &log);
  CHECK(capped.tokenizer_trained);
  CHECK(log.find("on 12 lines of 2 upstream tasks") != std::string::npos);
  cfg.tokenizer.max_train_lines = 200000;
  CHECK(run(cfg).tokenizer_fingerprint == r1.tokenizer_fingerprint);  // deterministic retraining

  cfg.tokenizer.model = r1.tokenizer_model.string();
  cfg.data.cache_dir = (g.dir / "other-cache").string();
  PreprocessReport r2 = run(cfg);
  CHECK_FALSE(r2.tokenizer_trained);
  CHECK(r2.tokenizer_fingerprint == r1.tokenizer_fingerprint);
  CHECK(r2.files_built == 21);
  CHECK_FALSE(fs::exists(g.dir / "other-cache" / "tokenizer"));

  cfg.tokenizer.model = (g.dir / "missing.model").string();
  CHECK_THROWS_WITH(run(cfg), Catch::Contains("missing.model: tokenizer model does not exist"));
}

TEST_CASE("preprocess: data.instruction puts each task's instruction before its inputs, in its own cache", "[preprocess]") {
  TinyGym g;
  write_text(g.dir / "tasks.json",
             R"({"t-a": {"metric": "EM", "instruction": "copy it"}, "t-b": {"metric": "ACC"},
                 "t-c": {"metric": "Classification-F1", "instruction": "say happy or sad"}})");
  auto plain = g.config();
  plain.data.max_input_len = 64;
  run(plain);
  auto cfg = plain;
  cfg.data.instruction = true;
  const fs::path plain_cache = tlmoe::cache_dir(plain), cache = tlmoe::cache_dir(cfg);
  CHECK(plain_cache != cache);  // another tokenizer text: its own folder, the plain one untouched
  const auto plain_files = cache_files(plain_cache);
  std::string log;
  PreprocessReport r = run(cfg, &log);
  CHECK(r.tokenizer_trained);
  CHECK(cache_files(plain_cache) == plain_files);
  CHECK(log.find("1 of 3 tasks have no instruction") != std::string::npos);
  CHECK(log.find("t-b") != std::string::npos);

  // t-c's first input, re-tokenized by hand with the trained tokenizer, equals the cache
  auto tok = load_tokenizer(cfg);
  const auto examples = read_tsv(g.dir / "t-c" / "t-c_4_13_train.tsv");
  bool cut = false;
  std::int64_t raw = 0;
  const auto expect = tokenize_sequence(*tok, " [t-c] say happy or sad " + examples[0].input, 64, &cut, &raw);
  const TokenCache c = read_token_cache(fs::path(tlmoe::cache_dir(cfg)) / "tokens" / "t-c" / "t-c_4_13_train.tok");
  CHECK(c.examples[0].input_ids == expect);
  CHECK(c.manifest.key.options.instruction == "say happy or sad");
  const TokenCache b = read_token_cache(fs::path(tlmoe::cache_dir(cfg)) / "tokens" / "t-b" / "t-b_4_13_train.tok");
  CHECK(b.manifest.key.options.instruction.empty());
  CHECK(nlohmann::json::parse(read_text(cache / "manifest.json")).at("options").at("instruction") == true);
  CHECK(run(cfg).files_built == 0);  // and a second run reuses all of it
}

TEST_CASE("preprocess: warns when a task's gold outputs are cut, with the length that fits them", "[preprocess]") {
  TinyGym g;
  auto cfg = g.config();
  cfg.data.max_input_len = 64;
  cfg.data.max_output_len = 3;  // <s>, one piece, </s>: most outputs of one or two words are cut
  std::string log;
  run(cfg, &log);
  const std::string key = "warning: task t-a: ";
  const auto at = log.find(key);
  REQUIRE(at != std::string::npos);
  const std::string line = log.substr(at, log.find('\n', at) - at);
  CHECK(line.find("are longer than data.max_output_len = 3 tokens") != std::string::npos);
  const std::string fit = "data.max_output_len: ";
  const auto k = std::stoll(line.substr(line.find(fit) + fit.size()));
  CHECK(k > 3);
  // the suggested length is enough: no task warns with it (every task's longest output fits)
  cfg.data.max_output_len = k;
  std::string log2;
  run(cfg, &log2);
  CHECK(log2.find("warning: task t-a:") == std::string::npos);
  // and one token less cuts some output again
  cfg.data.max_output_len = k - 1;
  const PreprocessReport r = run(cfg);
  std::int64_t cut = 0;
  for (const auto& t : r.tasks) cut += t.stats.truncated_outputs;
  CHECK(cut > 0);
}
