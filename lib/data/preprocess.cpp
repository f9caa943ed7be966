#include "data/preprocess.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>
#include <functional>
#include <iomanip>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <system_error>

#include "common/error.h"
#include "data/layout.h"
#include "data/task_meta.h"
#include "data/tsv.h"
#include "io/atomic_file.h"
#include "io/dir_lock.h"
#include "io/json_text.h"
#include "model/hf_bart.h"
#include "text/bart_bpe_tokenizer.h"
#include "text/sentencepiece_tokenizer.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace tlmoe::data {

namespace {

constexpr int kTokenizerSidecarVersion = 1;
constexpr std::uint32_t kTokenizerSeed = 42;  // SentencePiece's generator; fixed, see docs/data.md
constexpr int kTokenizerThreads = 4;          // part of the trained model: fixed, not the core count

// ---- dataset -----------------------------------------------------------------------------------

struct Dataset {
  fs::path dir;
  TaskSplits splits;
  TaskTable tasks;
  std::map<std::string, TaskFiles> files;  // every task of splits.all, sorted by name
};

void check_options(const Config& cfg) {
  if (cfg.data.upstream_source != "kshot" && cfg.data.upstream_source != "full")
    throw ConfigError("", "data.upstream_source",
                      "must be kshot or full, got '" + cfg.data.upstream_source + "'");
  if (cfg.data.max_input_len < 2) throw ConfigError("", "data.max_input_len", "must be >= 2 (<s> and </s>)");
  if (cfg.data.max_output_len < 2)
    throw ConfigError("", "data.max_output_len", "must be >= 2 (<s> and </s>)");
  if (cfg.tokenizer.kind != "sentencepiece" && cfg.tokenizer.kind != "bart-bpe")
    throw ConfigError("", "tokenizer.kind",
                      "must be sentencepiece or bart-bpe, got '" + cfg.tokenizer.kind + "'");
  if (cfg.tokenizer.kind == "bart-bpe" && cfg.tokenizer.model.empty() && model::hf_dir_of(cfg.model.init_from).empty())
    throw ConfigError("", "tokenizer.model",
                      "tokenizer.kind bart-bpe needs a Hugging Face tokenizer directory (tokenizer.json, or vocab.json + merges.txt) as tokenizer.model, "
                      "or model.init_from: hf:DIR to take the tokenizer of that model");
  if (cfg.tokenizer.model_type != "unigram" && cfg.tokenizer.model_type != "bpe")
    throw ConfigError("", "tokenizer.model_type",
                      "must be unigram or bpe, got '" + cfg.tokenizer.model_type + "'");
  if (cfg.tokenizer.max_train_lines < 1) throw ConfigError("", "tokenizer.max_train_lines", "must be >= 1");
}

Dataset load_dataset(const Config& cfg) {
  Dataset d;
  d.dir = cfg.data.dir;
  d.splits = load_splits(splits_path(cfg));
  d.tasks = load_tasks(tasks_path(cfg));
  for (const auto& task : d.splits.all) {
    if (!d.tasks.contains(task)) {
      std::string msg = "no entry for task '" + task + "' (listed in " + d.splits.source + ")";
      std::string near = d.tasks.suggest(task);
      if (!near.empty()) msg += "; did you mean '" + near + "'?";
      throw DataError(d.tasks.source(), 0, msg);
    }
  }
  d.files = check_dataset(d.dir, d.splits);
  if (cfg.data.upstream_source == "full") {
    for (const auto& task : d.splits.train) {
      if (d.files.at(task).full.train.empty())
        throw DataError(
            (task_dir(d.dir, task) / (task + "_full_train.tsv")).string(), 0,
            "missing: data.upstream_source is 'full', so every upstream (train) task needs its full "
            "training file");
    }
  }
  return d;
}

// ---- tokenizer -------------------------------------------------------------------------------------

// The files whose text trains the tokenizer, grouped by upstream task (sorted by name).
std::vector<std::pair<std::string, std::vector<fs::path>>> upstream_text_files(const Config& cfg,
                                                                               const Dataset& d) {
  std::vector<std::string> tasks = d.splits.train;
  std::sort(tasks.begin(), tasks.end());
  std::vector<std::pair<std::string, std::vector<fs::path>>> out;
  for (const auto& task : tasks) {
    const TaskFiles& f = d.files.at(task);
    std::vector<fs::path> files;
    if (cfg.data.upstream_source == "full") {
      files.push_back(f.full.train);
    } else {
      for (const auto& s : f.kshot) files.push_back(s.train);
    }
    if (!files.empty()) out.emplace_back(task, std::move(files));
  }
  return out;
}

// What data.instruction puts before a task's inputs: its tasks.json instruction, or "".
std::string instruction_for(const Config& cfg, const TaskTable& tasks, const std::string& task) {
  if (!cfg.data.instruction || !tasks.contains(task)) return "";
  return tasks.info(task).instruction;
}

// The text of a task's TSV files exactly as it will be tokenized (input_text / output_text, so
// the task prefix and instruction are part of it): each example's input, then its outputs.
std::vector<std::string> text_lines(const std::string& task, const std::vector<fs::path>& files,
                                    bool task_prefix, const std::string& instruction) {
  std::vector<std::string> lines;
  for (const auto& f : files) {
    for (const auto& ex : read_tsv(f)) {
      lines.push_back(input_text(task, ex.input, task_prefix, instruction));
      for (const auto& o : ex.outputs) lines.push_back(output_text(o));
    }
  }
  return lines;
}

// Water-filling: the largest per-task quota q with sum_i min(n_i, q) <= cap, so small tasks
// give all their lines and large ones share the rest equally.
std::int64_t per_task_quota(std::vector<std::int64_t> counts, std::int64_t cap) {
  std::sort(counts.begin(), counts.end());
  std::int64_t remaining = cap;
  for (std::size_t i = 0; i < counts.size(); ++i) {
    const auto left = static_cast<std::int64_t>(counts.size() - i);
    const std::int64_t fair = remaining / left;
    if (counts[i] > fair) return fair;
    remaining -= counts[i];
  }
  return counts.empty() ? 0 : counts.back();
}

// `quota` lines evenly spread over `lines` (all of them when there are fewer).
std::vector<std::string> spread_selection(std::vector<std::string> lines, std::int64_t quota) {
  const auto n = static_cast<std::int64_t>(lines.size());
  if (n <= quota) return lines;
  std::vector<std::string> out;
  out.reserve(static_cast<std::size_t>(quota));
  for (std::int64_t j = 0; j < quota; ++j)
    out.push_back(std::move(lines[static_cast<std::size_t>(j * n / quota)]));
  return out;
}

// At most tokenizer.max_train_lines lines of upstream text, chosen deterministically and
// balanced across tasks (two passes over the files, so only one task's text is held at once).
std::vector<std::string> tokenizer_training_lines(
    const std::vector<std::pair<std::string, std::vector<fs::path>>>& by_task, const Config& cfg,
    const TaskTable& tasks) {
  const bool prefix = cfg.data.task_prefix;
  std::vector<std::int64_t> counts;
  for (const auto& [task, files] : by_task)
    counts.push_back(static_cast<std::int64_t>(text_lines(task, files, prefix, instruction_for(cfg, tasks, task)).size()));
  const std::int64_t quota = per_task_quota(counts, cfg.tokenizer.max_train_lines);
  std::vector<std::string> lines;
  for (const auto& [task, files] : by_task) {
    for (auto& l : spread_selection(text_lines(task, files, prefix, instruction_for(cfg, tasks, task)), quota))
      lines.push_back(std::move(l));
  }
  return lines;
}

text::SentencePieceTrainOptions train_options(const Config& cfg) {
  text::SentencePieceTrainOptions o;
  o.vocab_size = cfg.tokenizer.vocab_size;
  o.model_type = cfg.tokenizer.model_type;
  o.character_coverage = cfg.tokenizer.character_coverage;
  o.seed = kTokenizerSeed;
  o.num_threads = kTokenizerThreads;
  return o;
}

// Everything the trained model depends on: options and the training files' content.
json tokenizer_identity(const Config& cfg, const Dataset& d,
                        const std::vector<std::pair<std::string, std::vector<fs::path>>>& by_task) {
  const auto o = train_options(cfg);
  json files = json::array();
  for (const auto& [task, paths] : by_task) {
    for (const auto& p : paths)
      files.push_back(
          {{"file", fs::relative(p, d.dir).generic_string()}, {"hash", io::fnv1a64_hex(io::read_file(p))}});
  }
  json id{{"version", kTokenizerSidecarVersion},
              {"vocab_size", o.vocab_size},
              {"model_type", o.model_type},
              {"character_coverage", o.character_coverage},
              {"seed", o.seed},
              {"num_threads", o.num_threads},
              {"max_sentence_length", o.max_sentence_length},
              {"max_train_lines", cfg.tokenizer.max_train_lines},
              {"upstream_source", cfg.data.upstream_source},
              {"task_prefix", cfg.data.task_prefix},
              {"files", files}};
  if (cfg.data.instruction) id["instruction"] = true;  // absent when off: older tokenizers stay valid
  return id;
}

// The previously trained model, if its sidecar says it was trained from exactly `identity`.
std::unique_ptr<text::SentencePieceTokenizer> reusable_tokenizer(const fs::path& model,
                                                                 const fs::path& sidecar,
                                                                 const json& identity, std::ostream& log) {
  std::error_code ec;
  if (!fs::exists(model, ec) || !fs::exists(sidecar, ec)) return nullptr;
  try {
    const json side = json::parse(io::read_file(sidecar));
    if (side.at("identity") != identity) {
      std::string changed;
      for (const auto& [k, v] : identity.items())
        if (!side.at("identity").contains(k) || side.at("identity").at(k) != v) changed += (changed.empty() ? "" : ", ") + k;
      log << "warning: tokenizer: " << model.string() << " was trained with other " << changed
          << "; retraining it in place, so checkpoints trained with the previous one (fingerprint "
          << side.value("fingerprint", std::string("?")) << ") no longer match this cache (data.cache_dir is shared; "
          << "leave it empty to keep one cache per tokenizer)\n";
      return nullptr;
    }
    auto tok = text::SentencePieceTokenizer::load(model);
    if (tok->fingerprint() != side.at("fingerprint").get<std::string>()) {
      log << "tokenizer: " << model.string() << " differs from its sidecar; retraining\n";
      return nullptr;
    }
    return tok;
  } catch (const std::exception& e) {  // a damaged sidecar or model: train again
    log << "tokenizer: cannot reuse " << model.string() << " (" << e.what() << "); retraining\n";
    return nullptr;
  }
}

std::unique_ptr<text::SentencePieceTokenizer> train_tokenizer(
    const Config& cfg, const std::vector<std::pair<std::string, std::vector<fs::path>>>& by_task,
    const TaskTable& tasks, const fs::path& model, std::ostream& log) {
  const auto lines = tokenizer_training_lines(by_task, cfg, tasks);
  try {
    auto tok = text::SentencePieceTokenizer::train(lines, train_options(cfg), model);
    log << "tokenizer: trained " << model.string() << " on " << lines.size() << " lines of " << by_task.size()
        << " upstream tasks; vocabulary " << tok->vocab_size();
    if (tok->vocab_size() < cfg.tokenizer.vocab_size)
      log << " (tokenizer.vocab_size is " << cfg.tokenizer.vocab_size << "; the text supports no more)";
    log << "\n";
    return tok;
  } catch (const DataError&) {
    throw;
  } catch (const InputError& e) {
    throw ConfigError("", "tokenizer.vocab_size",
                      std::string(e.what()) + " (check tokenizer.vocab_size = " +
                          std::to_string(cfg.tokenizer.vocab_size) + " and tokenizer.character_coverage)");
  }
}

struct TokenizerChoice {
  std::unique_ptr<text::Tokenizer> tokenizer;
  fs::path path;
  bool trained = false;
};

TokenizerChoice prepare_tokenizer(const Config& cfg, const Dataset& d, const fs::path& cache,
                                  const std::function<void()>& before_change, std::ostream& log) {
  TokenizerChoice c;
  if (cfg.tokenizer.kind == "bart-bpe") {
    c.path = cfg.tokenizer.model.empty() ? fs::path(model::hf_dir_of(cfg.model.init_from)) : fs::path(cfg.tokenizer.model);
    c.tokenizer = text::BartBpeTokenizer::load(c.path);
    log << "tokenizer: " << c.path.string() << " (bart-bpe, " << (fs::exists(c.path / "tokenizer.json") ? "tokenizer.json" : "vocab.json + merges.txt") << "), vocabulary "
        << c.tokenizer->vocab_size() << "\n";
    return c;
  }
  if (!cfg.tokenizer.model.empty()) {
    c.path = cfg.tokenizer.model;
    c.tokenizer = text::SentencePieceTokenizer::load(c.path);
    log << "tokenizer: " << c.path.string() << " (tokenizer.model), vocabulary " << c.tokenizer->vocab_size()
        << "\n";
    return c;
  }
  const auto by_task = upstream_text_files(cfg, d);
  if (by_task.empty())
    throw DataError(d.splits.source, 0,
                    "no upstream (\"train\") task has training files to train the tokenizer on");
  c.path = cache / "tokenizer" / "spm.model";
  const fs::path sidecar = cache / "tokenizer" / "spm.json";
  const json identity = tokenizer_identity(cfg, d, by_task);
  if (auto tok = reusable_tokenizer(c.path, sidecar, identity, log)) {
    log << "tokenizer: " << c.path.string() << " is up to date, vocabulary " << tok->vocab_size() << "\n";
    c.tokenizer = std::move(tok);
    return c;
  }
  before_change();
  auto tok = train_tokenizer(cfg, by_task, d.tasks, c.path, log);
  io::write_file_atomic(sidecar,
                        json{{"identity", identity}, {"fingerprint", tok->fingerprint()}}.dump(1) + "\n");
  c.tokenizer = std::move(tok);
  c.trained = true;
  return c;
}

// ---- token caches -------------------------------------------------------------------------------------

// One TSV file to tokenize and where its cache goes.
struct CacheJob {
  std::string task;
  fs::path source;
  fs::path cache;         // absolute
  std::string cache_rel;  // relative to the cache dir, '/'-separated
  json describe;          // kind, split, k, seed, prefix (for manifest.json)
};

std::vector<CacheJob> cache_jobs(const Dataset& d, const fs::path& cache) {
  std::vector<CacheJob> jobs;
  auto add = [&](const std::string& task, const fs::path& source, json describe) {
    CacheJob j;
    j.task = task;
    j.source = source;
    j.cache_rel = "tokens/" + task + "/" + source.stem().string() + ".tok";
    j.cache = cache / j.cache_rel;
    j.describe = std::move(describe);
    jobs.push_back(std::move(j));
  };
  for (const auto& [task, files] : d.files) {
    for (const auto& s : files.kshot) {
      for (const auto& [split, path] :
           {std::pair<std::string, fs::path>{"train", s.train}, {"dev", s.dev}, {"test", s.test}})
        add(task, path,
            {{"kind", "kshot"}, {"prefix", s.prefix}, {"k", s.k}, {"seed", s.seed}, {"split", split}});
    }
    if (!files.full.train.empty()) add(task, files.full.train, {{"kind", "full"}, {"split", "train"}});
    if (!files.full.dev.empty()) add(task, files.full.dev, {{"kind", "full"}, {"split", "dev"}});
  }
  return jobs;
}

// The cache's manifest if it exists, is intact and was built from `key`; otherwise nullopt
// (a damaged cache is reported in the log).
std::optional<TokenCacheManifest> up_to_date(const CacheJob& job, const TokenCacheKey& key,
                                             std::ostream& log) {
  std::error_code ec;
  if (!fs::exists(job.cache, ec)) return std::nullopt;
  try {
    TokenCacheManifest m = read_token_cache_manifest(job.cache, /*check_body_hash=*/true);
    if (m.key == key) return m;
  } catch (const DataError& e) {
    log << "rebuilding " << job.cache_rel << ": " << e.what() << "\n";
  }
  return std::nullopt;
}

// ---- report ---------------------------------------------------------------------------------------------

std::string fixed1(double v) {
  std::ostringstream s;
  s << std::fixed << std::setprecision(1) << v;
  return s.str();
}

double mean(std::int64_t sum, std::int64_t n) {
  return n > 0 ? static_cast<double>(sum) / static_cast<double>(n) : 0.0;
}

std::vector<std::string> table_row(const std::string& task, const std::string& partition, std::int64_t files,
                                   const TokenStats& s) {
  return {task,
          partition.empty() ? "-" : partition,
          std::to_string(files),
          std::to_string(s.examples),
          fixed1(mean(s.input_tokens, s.examples)),
          std::to_string(s.max_input_tokens),
          fixed1(mean(s.output_tokens, s.outputs)),
          std::to_string(s.max_output_tokens),
          std::to_string(s.truncated_examples)};
}

json manifest_json(const Config& cfg, const Dataset& d, const TokenizerChoice& tc,
                   const std::vector<CacheJob>& jobs, const std::vector<TokenCacheManifest>& caches) {
  json tasks = json::object();
  for (std::size_t i = 0; i < jobs.size(); ++i) {
    json entry = jobs[i].describe;
    entry["cache"] = jobs[i].cache_rel;
    entry["source"] = jobs[i].source.string();
    entry["source_hash"] = caches[i].key.source_hash;
    entry["stats"] = caches[i].stats;
    json& t = tasks[jobs[i].task];
    if (t.empty()) t = {{"partition", d.splits.partition_of(jobs[i].task)}, {"files", json::array()}};
    t["files"].push_back(std::move(entry));
  }
  return json{{"format", "tlmoe preprocess manifest"},
              {"version", kPreprocessManifestVersion},
              {"data_dir", cfg.data.dir},
              {"splits", d.splits.source},
              {"tasks_file", d.tasks.source()},
              {"tokenizer",
               {{"kind", tc.tokenizer->kind()},
                {"path", tc.path.string()},
                {"fingerprint", tc.tokenizer->fingerprint()},
                {"vocab_size", tc.tokenizer->vocab_size()},
                {"pad_id", tc.tokenizer->pad_id()},
                {"bos_id", tc.tokenizer->bos_id()},
                {"eos_id", tc.tokenizer->eos_id()},
                {"unk_id", tc.tokenizer->unk_id()}}},
              {"options",
               {{"max_input_len", cfg.data.max_input_len},
                {"max_output_len", cfg.data.max_output_len},
                {"task_prefix", cfg.data.task_prefix},
                {"instruction", cfg.data.instruction},
                {"upstream_source", cfg.data.upstream_source}}},
              {"token_cache_version", kTokenCacheVersion},
              {"tasks", tasks}};
}

}  // namespace

std::string format_task_table(const std::vector<TaskSummary>& tasks) {
  std::vector<std::vector<std::string>> rows;
  rows.push_back(
      {"task", "partition", "files", "examples", "in mean", "in max", "out mean", "out max", "truncated"});
  TokenStats total;
  std::int64_t total_files = 0;
  for (const auto& t : tasks) {
    rows.push_back(table_row(t.task, t.partition, t.files, t.stats));
    total.add(t.stats);
    total_files += t.files;
  }
  rows.push_back(table_row("total (" + std::to_string(tasks.size()) + " tasks)", "", total_files, total));
  std::vector<std::size_t> width(rows.front().size(), 0);
  for (const auto& r : rows)
    for (std::size_t c = 0; c < r.size(); ++c) width[c] = std::max(width[c], r[c].size());
  std::ostringstream out;
  for (const auto& r : rows) {
    std::string line;
    for (std::size_t c = 0; c < r.size(); ++c) {
      const std::string pad(width[c] - r[c].size(), ' ');
      line += c < 2 ? r[c] + pad : pad + r[c];  // text left, numbers right
      if (c + 1 < r.size()) line += "  ";
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out << line << "\n";
  }
  return out.str();
}

namespace {

// A task whose gold answers are cut by data.max_output_len can never be matched exactly: warn
// when more than 1% of its outputs are, with the length that would fit them all.
void warn_cut_outputs(const std::vector<TaskSummary>& tasks, std::int64_t max_len, std::ostream& log) {
  for (const auto& t : tasks) {
    const TokenStats& s = t.stats;
    if (s.outputs == 0 || 100 * s.truncated_outputs <= s.outputs) continue;
    log << "warning: task " << t.task << ": " << s.truncated_outputs << " of " << s.outputs << " gold outputs ("
        << fixed1(100.0 * static_cast<double>(s.truncated_outputs) / static_cast<double>(s.outputs))
        << "%) are longer than data.max_output_len = " << max_len
        << " tokens and are cut, so predictions can never match them exactly; data.max_output_len: "
        << s.longest_output_untruncated << " would fit them all\n";
  }
}

// data.instruction on: which tasks have no instruction to put before their inputs.
void log_missing_instructions(const Dataset& d, std::ostream& log) {
  std::vector<std::string> missing;
  for (const auto& task : d.splits.all)
    if (!d.tasks.contains(task) || d.tasks.info(task).instruction.empty()) missing.push_back(task);
  if (missing.empty()) {
    log << "preprocess: every task's instruction goes before its inputs (data.instruction)\n";
    return;
  }
  log << "warning: data.instruction: " << missing.size() << " of " << d.splits.all.size()
      << " tasks have no instruction in " << d.tasks.source() << " and keep their inputs as they are:";
  for (std::size_t i = 0; i < missing.size() && i < 10; ++i) log << " " << missing[i];
  if (missing.size() > 10) log << " …";
  log << "\n";
}

}  // namespace

PreprocessReport preprocess(const Config& cfg, std::ostream& log) {
  check_options(cfg);
  const Dataset d = load_dataset(cfg);
  PreprocessReport report;
  report.cache_dir = cache_dir(cfg);
  const fs::path manifest_path = report.cache_dir / "manifest.json";
  log << "preprocess: " << d.splits.all.size() << " tasks (train " << d.splits.train.size() << ", dev "
      << d.splits.dev.size() << ", test " << d.splits.test.size() << ") in " << d.dir.string() << "\n";
  print_notes(d.splits.notes, log);
  print_notes(d.tasks.notes(), log);
  if (cfg.data.instruction) log_missing_instructions(d, log);

  // What a killed preprocess left behind; then one writer at a time: the lock is taken before the
  // first change (a cache that is up to date is only read, so processes sharing it, such as the
  // ranks of a distributed run, never contend), and manifest.json, which describes a complete,
  // consistent cache, goes first.
  const auto stale = io::remove_stale_temporaries(report.cache_dir);
  if (!stale.empty())
    log << "preprocess: removed " << stale.size() << " temporary file(s) of killed writers (" << stale.front().string()
        << (stale.size() > 1 ? ", ..." : "") << ")\n";
  std::optional<io::DirLock> lock;
  bool changed = false;
  auto before_change = [&] {
    if (changed) return;
    lock.emplace(report.cache_dir, log);
    changed = true;
    std::error_code ec;
    fs::remove(manifest_path, ec);
  };

  TokenizerChoice tc = prepare_tokenizer(cfg, d, report.cache_dir, before_change, log);
  report.tokenizer_model = tc.path;
  report.tokenizer_fingerprint = tc.tokenizer->fingerprint();
  report.vocab_size = tc.tokenizer->vocab_size();
  report.tokenizer_trained = tc.trained;

  TokenizeOptions opts;
  opts.max_input_len = cfg.data.max_input_len;
  opts.max_output_len = cfg.data.max_output_len;
  opts.task_prefix = cfg.data.task_prefix;

  const std::vector<CacheJob> jobs = cache_jobs(d, report.cache_dir);
  std::vector<TokenCacheManifest> caches;
  caches.reserve(jobs.size());
  for (const auto& job : jobs) {
    const std::string bytes = io::read_file(job.source);
    opts.instruction = instruction_for(cfg, d.tasks, job.task);
    TokenCacheKey key{job.task, io::fnv1a64_hex(bytes), tc.tokenizer->fingerprint(), opts};
    if (auto m = up_to_date(job, key, log)) {
      caches.push_back(std::move(*m));
      ++report.files_reused;
      continue;
    }
    // Parse (and fail on a bad line) before anything for this file is written.
    const auto examples = parse_tsv(bytes, job.source.string());
    TokenCache cache = tokenize_examples(examples, *tc.tokenizer, job.task, opts);
    cache.manifest.source = job.source.string();
    cache.manifest.key.source_hash = key.source_hash;
    before_change();
    write_token_cache(job.cache, cache);
    caches.push_back(cache.manifest);
    report.built.push_back(job.cache_rel);
    ++report.files_built;
  }

  std::map<std::string, TaskSummary> by_task;
  for (std::size_t i = 0; i < jobs.size(); ++i) {
    TaskSummary& t = by_task[jobs[i].task];
    t.task = jobs[i].task;
    t.partition = d.splits.partition_of(t.task);
    t.files += 1;
    t.stats.add(caches[i].stats);
  }
  for (auto& [name, t] : by_task) report.tasks.push_back(std::move(t));
  warn_cut_outputs(report.tasks, cfg.data.max_output_len, log);

  // Rewritten only when its content changes, so a run with nothing to do touches nothing.
  const std::string manifest = manifest_json(cfg, d, tc, jobs, caches).dump(1) + "\n";
  std::error_code ec;
  if (!fs::exists(manifest_path, ec) || io::read_file(manifest_path) != manifest)
    io::write_file_atomic(manifest_path, manifest);
  log << "token caches: " << report.files_built << " built, " << report.files_reused << " up to date, in "
      << (report.cache_dir / "tokens").string() << "\n";
  log << format_task_table(report.tasks);
  log << "wrote " << manifest_path.string() << "\n";
  return report;
}

namespace {

// The fields every reader of manifest.json uses, with their types: a damaged or foreign manifest is
// refused here, naming the field, instead of failing later inside a reader.
void check_manifest(const json& m, const std::string& file) {
  auto fail = [&](const std::string& what) {
    throw DataError(file, 0, "damaged manifest: " + what + "; run `tlmoe preprocess` to rebuild it");
  };
  auto want = [&](const json& obj, const std::string& where, const char* key, bool (json::*is)() const, const char* type) {
    if (!obj.is_object() || !obj.contains(key) || !(obj.at(key).*is)()) fail("\"" + where + key + "\" is not " + type);
  };
  if (!m.is_object()) fail("not a JSON object");
  want(m, "", "splits", &json::is_string, "a string");
  want(m, "", "tasks_file", &json::is_string, "a string");
  want(m, "", "tokenizer", &json::is_object, "an object");
  for (const char* k : {"path", "fingerprint"}) want(m["tokenizer"], "tokenizer.", k, &json::is_string, "a string");
  for (const char* k : {"vocab_size", "pad_id", "bos_id", "eos_id"})
    want(m["tokenizer"], "tokenizer.", k, &json::is_number_integer, "an integer");
  want(m, "", "tasks", &json::is_object, "an object");
  for (auto it = m["tasks"].begin(); it != m["tasks"].end(); ++it) {
    const std::string where = "tasks." + it.key() + ".";
    want(it.value(), where, "files", &json::is_array, "a list");
    for (const json& f : it.value()["files"])
      for (const char* k : {"split", "kind", "cache", "source", "source_hash"}) want(f, where + "files[].", k, &json::is_string, "a string");
  }
}

}  // namespace

json read_preprocess_manifest(const Config& cfg) {
  const fs::path p = fs::path(cache_dir(cfg)) / "manifest.json";
  if (!fs::exists(p)) throw DataError(p.string(), 0, "cannot read the preprocess manifest; run `tlmoe preprocess`");
  const std::string text = io::read_file(p);
  json m;
  try {
    m = json::parse(text);
  } catch (const json::exception& e) {
    throw DataError(p.string(), 0, "damaged manifest: " + io::json_error_text(e));
  }
  check_manifest(m, p.string());
  return m;
}

std::unique_ptr<text::Tokenizer> load_tokenizer(const Config& cfg) {
  const json man = read_preprocess_manifest(cfg);
  const fs::path path = man.at("tokenizer").at("path").get<std::string>();
  std::unique_ptr<text::Tokenizer> tok;
  if (man.at("tokenizer").value("kind", std::string("sentencepiece")) == "bart-bpe") tok = text::BartBpeTokenizer::load(path);
  else tok = text::SentencePieceTokenizer::load(path);
  const std::string recorded = man.at("tokenizer").at("fingerprint").get<std::string>();
  if (tok->fingerprint() != recorded)
    throw DataError(path.string(), 0,
                    "this tokenizer (fingerprint " + tok->fingerprint() + ") is not the one the token caches were built with (" +
                        recorded + " in " + (fs::path(cache_dir(cfg)) / "manifest.json").string() +
                        "): the file was damaged or replaced; run `tlmoe preprocess` with the same config to rebuild it");
  // decode as the transformers release of eval.semantics would (a BART BPE's clean-up of spaces)
  tok->set_semantics(cfg.eval.semantics == "current" ? text::HfSemantics::current : text::HfSemantics::legacy);
  return tok;
}

}  // namespace tlmoe::data
