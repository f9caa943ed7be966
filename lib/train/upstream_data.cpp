#include "train/upstream_data.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/error.h"
#include "data/preprocess.h"
#include "data/token_cache.h"
#include "train/task_rep_compute.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace tlmoe::train {

namespace {

// Examples [begin, end) of a token cache read once (moved out of it).
void append(std::vector<data::Example>& out, data::TokenCache& c, int64_t task_id, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) {
    data::Example x;
    x.task_id = task_id;
    x.input = std::move(c.examples[i].input_ids);
    x.outputs = std::move(c.examples[i].output_ids);
    out.push_back(std::move(x));
  }
}

void append(std::vector<data::Example>& out, const fs::path& file, int64_t task_id, int64_t vocab) {
  data::TokenCache c = data::read_token_cache(file, vocab);
  append(out, c, task_id, 0, static_cast<int64_t>(c.examples.size()));
}

}  // namespace

int64_t held_out_size(int64_t n) { return n < 2 ? 0 : std::clamp<int64_t>(n / 10, 1, 500); }

UpstreamData load_upstream_data(const Config& cfg, std::ostream& log) {
  std::ostringstream quiet;  // the full table is `tlmoe preprocess`'s job; keep the summary line
  const data::PreprocessReport rep = data::preprocess(cfg, quiet);
  log << "data: " << rep.tasks.size() << " tasks, token caches " << rep.files_built << " built, "
      << rep.files_reused << " reused (" << rep.cache_dir.string() << ")\n";

  compute_task_reps(cfg, log);  // textemb / fisher: computed or reused; nothing for "learned"

  const fs::path mpath = rep.cache_dir / "manifest.json";
  const json man = data::read_preprocess_manifest(cfg);
  UpstreamData d;
  const json& tok = man.at("tokenizer");
  d.vocab_size = tok.at("vocab_size").get<int64_t>();
  d.pad_id = tok.at("pad_id").get<int64_t>();
  d.bos_id = tok.at("bos_id").get<int64_t>();
  d.eos_id = tok.at("eos_id").get<int64_t>();
  d.tokenizer_fingerprint = tok.at("fingerprint").get<std::string>();
  d.tokenizer_model = tok.at("path").get<std::string>();

  const json& tasks = man.at("tasks");
  for (auto it = tasks.begin(); it != tasks.end(); ++it) d.task_names.push_back(it.key());
  std::sort(d.task_names.begin(), d.task_names.end());
  std::map<std::string, int64_t> id;
  for (size_t i = 0; i < d.task_names.size(); ++i) id[d.task_names[i]] = static_cast<int64_t>(i);

  const std::string& src = cfg.data.upstream_source;
  for (const auto& name : d.task_names) {
    const json& t = tasks.at(name);
    if (t.value("partition", "") != "train") continue;
    d.upstream.push_back(name);
    bool any_train = false, full_dev = false;
    const json* full_train = nullptr;
    for (const json& f : t.at("files")) {
      const std::string kind = f.at("kind"), split = f.at("split");
      const fs::path file = rep.cache_dir / f.at("cache").get<std::string>();
      const bool is_full = kind == "full";
      bool to_train = false, to_dev = false;
      if (src == "full") {
        to_dev = is_full && split == "dev";
        full_dev |= to_dev;
        if (is_full && split == "train") full_train = &f;  // below, once its dev file is known
      } else {
        to_train = !is_full && (split == "train" || (src == "kshot_train_dev" && split == "dev"));
        to_dev = !is_full && split == "dev";
      }
      if (to_train) append(d.train, file, id[name], d.vocab_size), any_train = true;
      if (to_dev) append(d.dev, file, id[name], d.vocab_size);
    }
    if (full_train) {
      const fs::path file = rep.cache_dir / full_train->at("cache").get<std::string>();
      data::TokenCache c = data::read_token_cache(file, d.vocab_size);
      const auto n = static_cast<int64_t>(c.examples.size());
      const int64_t hold = full_dev ? 0 : held_out_size(n);
      append(d.train, c, id[name], 0, n - hold), any_train = n - hold > 0;
      if (hold > 0) append(d.dev, c, id[name], n - hold, n), d.held_out[name] = {n - hold, hold};
    }
    if (!any_train)
      throw DataError(mpath.string(), 0,
                      "upstream task '" + name + "' has no " +
                          (src == "full" ? std::string("{task}_full_train.tsv file")
                                         : std::string("k-shot train files")) +
                          " (data.upstream_source = " + src + ")");
  }
  if (!d.held_out.empty()) {
    int64_t held = 0;
    for (const auto& [task, h] : d.held_out) held += h.count;
    log << "data: " << d.held_out.size() << " upstream task(s) have no {task}_full_dev.tsv (" << d.held_out.begin()->first
        << (d.held_out.size() > 1 ? ", …" : "") << "); their dev examples are the last 10% of their "
        << "{task}_full_train.tsv, " << held << " examples held out of training (docs/train.md, Dev data)\n";
  }
  if (d.upstream.empty())
    throw DataError(man.value("splits", std::string("splits")), 0, "the split file lists no \"train\" tasks to train on");
  log << "data: " << d.upstream.size() << " upstream tasks, " << d.train.size() << " train and " << d.dev.size()
      << " dev examples (" << src << ")\n";
  return d;
}

}  // namespace tlmoe::train
