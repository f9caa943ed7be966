// The embedded gym: draws every task's examples, cuts the CrossFit k-shot splits and writes
// the benchmark directory through a staging directory.
#include "data/gym.h"

#include <algorithm>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <stdexcept>

#include "common/error.h"
#include "data/gym_internal.h"
#include "io/atomic_file.h"

namespace fs = std::filesystem;

namespace tlmoe::gym {

namespace {

using detail::Example;
using detail::Rng;
using detail::TaskDef;
using json = nlohmann::ordered_json;

constexpr int kFormatVersion = 1;
constexpr const char* kGenerator = "tlmoe gym";
constexpr std::size_t kShotsPerClass = 16;
constexpr std::size_t kShots = 32;
constexpr std::uint64_t kTestStream = 0x7e57;  // separates the example stream from the split streams
constexpr int kMaxAttempts = 20000;            // draws per example before a task is declared too small

// A field as the loaders will see it: they strip the line and split it on tabs.
void check_field(const TaskDef& d, const std::string& f) {
  auto fail = [&](const std::string& why) {
    throw std::logic_error("gym task " + d.name + ": " + why + " in field '" + f + "'");
  };
  if (f.empty()) fail("empty field");
  if (f.front() == ' ' || f.back() == ' ') fail("leading or trailing space");
  if (f.find("  ") != std::string::npos) fail("double space");
  for (unsigned char c : f)
    if (c < 0x20 || c > 0x7e) fail("character outside printable ASCII");
}

struct BuiltTask {
  const TaskDef* def = nullptr;
  std::vector<Example> test, pool;
};

// Draws n_test + n_pool examples with distinct inputs. Classification tasks draw labels in
// turn, so the test set and the pool are balanced. Test first, then the pool, each shuffled.
BuiltTask build_task(const TaskDef& d, std::uint64_t seed) {
  Rng rng(detail::derive_seed({seed, detail::fnv1a64(d.name), kTestStream}));
  std::set<std::string> seen;
  std::vector<Example> all;
  const std::size_t total = d.n_test + d.n_pool;
  const std::size_t n_labels = d.labels.size();
  all.reserve(total);
  for (std::size_t i = 0; i < total; ++i) {
    const int label = n_labels ? static_cast<int>(i % n_labels) : -1;
    for (int attempt = 0;; ++attempt) {
      if (attempt == kMaxAttempts)
        throw std::logic_error("gym task " + d.name + ": cannot draw " + std::to_string(total) +
                               " distinct inputs");
      Example e = d.gen(rng, label);
      if (!seen.insert(e.input).second) continue;
      check_field(d, e.input);
      if (e.outputs.empty()) throw std::logic_error("gym task " + d.name + ": example without output");
      for (const auto& o : e.outputs) check_field(d, o);
      if (n_labels && (e.outputs.size() != 1 || e.outputs[0] != d.labels[static_cast<std::size_t>(label)]))
        throw std::logic_error("gym task " + d.name + ": label mismatch for '" + e.input + "'");
      all.push_back(std::move(e));
      break;
    }
  }
  BuiltTask t;
  t.def = &d;
  t.test.assign(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(d.n_test));
  t.pool.assign(all.begin() + static_cast<std::ptrdiff_t>(d.n_test), all.end());
  rng.shuffle(t.test);
  rng.shuffle(t.pool);
  return t;
}

// CrossFit's k-shot draw: shuffle the pool with the split seed; train = the first k (per
// class), dev = the next k (per class). Indices into the pool, in drawn order.
void kshot_split(const BuiltTask& t, std::uint64_t seed, int split_seed, std::vector<std::size_t>* train,
                 std::vector<std::size_t>* dev) {
  const TaskDef& d = *t.def;
  Rng rng(detail::derive_seed({seed, detail::fnv1a64(d.name), static_cast<std::uint64_t>(split_seed)}));
  std::vector<std::size_t> order(t.pool.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  rng.shuffle(order);
  if (d.labels.empty()) {
    if (order.size() < 2 * kShots) throw std::logic_error("gym task " + d.name + ": pool too small");
    train->assign(order.begin(), order.begin() + kShots);
    dev->assign(order.begin() + kShots, order.begin() + 2 * kShots);
    return;
  }
  std::map<std::string, std::size_t> n_train, n_dev;
  for (std::size_t i : order) {
    const std::string& label = t.pool[i].outputs[0];
    if (n_train[label] < kShotsPerClass) {
      ++n_train[label];
      train->push_back(i);
    } else if (n_dev[label] < kShotsPerClass) {
      ++n_dev[label];
      dev->push_back(i);
    }
  }
  const std::size_t want = kShotsPerClass * d.labels.size();
  if (train->size() != want || dev->size() != want)
    throw std::logic_error("gym task " + d.name + ": pool too small for " + std::to_string(kShotsPerClass) +
                           " shots per class");
}

std::string tsv_line(const Example& e) {
  std::string s = e.input;
  for (const auto& o : e.outputs) s.append("\t").append(o);
  s += '\n';
  return s;
}

std::string tsv(const std::vector<Example>& examples) {
  std::string s;
  for (const auto& e : examples) s += tsv_line(e);
  return s;
}

std::string tsv(const std::vector<Example>& pool, const std::vector<std::size_t>& idx) {
  std::string s;
  for (std::size_t i : idx) s += tsv_line(pool[i]);
  return s;
}

// Inside the staging directory a plain write suffices: the directory as a whole is moved into
// place only once every file is complete.
void write_file(const fs::path& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) throw std::runtime_error("cannot create " + path.string());
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  f.flush();
  if (!f) throw std::runtime_error("cannot write " + path.string());
}

std::string dump(const json& j) { return j.dump(1) + "\n"; }

// An existing gym can be replaced; anything else that is not empty is left alone.
void check_output_dir(const fs::path& out) {
  if (out.empty()) throw UsageError("gym: --out must name a directory");
  std::error_code ec;
  const fs::file_status st = fs::status(out, ec);
  if (!fs::exists(st)) return;
  if (!fs::is_directory(st))
    throw UsageError("gym: --out " + out.string() + " exists and is not a directory");
  if (fs::is_empty(out, ec)) return;
  const fs::path marker = out / "gym.json";
  bool is_gym = false;
  if (fs::is_regular_file(marker, ec)) {
    std::ifstream in(marker, std::ios::binary);
    const json j = json::parse(in, nullptr, /*allow_exceptions=*/false);
    is_gym = j.is_object() && j.contains("generator") && j["generator"] == kGenerator;
  }
  if (!is_gym)
    throw UsageError(
        "gym: refusing to replace " + out.string() +
        ": it is not empty and holds no gym.json written by 'tlmoe gym'; choose another --out or empty it");
}

}  // namespace

const std::vector<int>& kshot_seeds() {
  static const std::vector<int> seeds = {100, 13, 21, 42, 87};
  return seeds;
}

GymSummary generate(const GymOptions& opts) {
  check_output_dir(opts.out);
  const std::vector<TaskDef> defs = detail::task_defs();

  io::StagingDir staging(opts.out);
  const fs::path root = staging.path();
  GymSummary summary;
  json tasks_json = json::object(), ontology = json::object();
  std::map<std::string, std::vector<std::string>> partition;  // "train" | "dev" | "test" -> tasks
  std::map<std::string, std::map<std::string, std::vector<std::string>>> tree;

  std::vector<const TaskDef*> sorted;
  for (const auto& d : defs) sorted.push_back(&d);
  std::sort(sorted.begin(), sorted.end(),
            [](const TaskDef* a, const TaskDef* b) { return a->name < b->name; });

  for (const TaskDef* dp : sorted) {
    const TaskDef& d = *dp;
    const BuiltTask t = build_task(d, opts.seed);
    const bool cls = !d.labels.empty();
    const std::size_t k = cls ? kShotsPerClass : kShots;
    const fs::path dir = root / d.name;
    fs::create_directories(dir);

    const std::string test_bytes = tsv(t.test);
    for (int s : kshot_seeds()) {
      std::vector<std::size_t> train, dev;
      kshot_split(t, opts.seed, s, &train, &dev);
      const std::string prefix = d.name + "_" + std::to_string(k) + "_" + std::to_string(s) + "_";
      write_file(dir / (prefix + "train.tsv"), tsv(t.pool, train));
      write_file(dir / (prefix + "dev.tsv"), tsv(t.pool, dev));
      write_file(dir / (prefix + "test.tsv"), test_bytes);
    }
    std::size_t n_full_train = 0, n_full_dev = 0;
    if (d.partition == "train") {
      n_full_train = d.n_full_train;
      n_full_dev = t.pool.size() - d.n_full_train;
      const auto mid = t.pool.begin() + static_cast<std::ptrdiff_t>(d.n_full_train);
      write_file(dir / (d.name + "_full_train.tsv"), tsv(std::vector<Example>(t.pool.begin(), mid)));
      write_file(dir / (d.name + "_full_dev.tsv"), tsv(std::vector<Example>(mid, t.pool.end())));
    }

    GymTaskInfo info;
    info.name = d.name;
    info.category = d.category;
    info.sub_category = d.sub_category;
    info.metric = d.metric;
    info.partition = d.partition;
    info.classification = cls;
    info.labels = d.labels;
    info.n_full_train = n_full_train;
    info.n_full_dev = n_full_dev;
    info.n_test = t.test.size();
    info.k = k;
    summary.tasks.push_back(info);

    json entry = json::object();
    entry["category"] = d.category;
    entry["sub_category"] = d.sub_category;
    entry["metric"] = d.metric;
    entry["labels"] = d.labels;
    entry["instruction"] = d.instruction;
    tasks_json[d.name] = entry;
    partition[d.partition].push_back(d.name);
    partition["all"].push_back(d.name);
    tree[d.category][d.sub_category].push_back(d.name);
  }

  json splits = json::object();
  for (const char* key : {"all", "train", "dev", "test"}) splits[key] = partition[key];  // already sorted
  for (const auto& [category, subs] : tree) {
    json c = json::object();
    for (const auto& [sub, names] : subs) c[sub] = names;
    ontology[category] = c;
  }
  json marker = json::object();
  marker["generator"] = kGenerator;
  marker["format_version"] = kFormatVersion;
  marker["seed"] = opts.seed;
  marker["num_tasks"] = summary.tasks.size();

  write_file(root / "splits.json", dump(splits));
  write_file(root / "tasks.json", dump(tasks_json));
  write_file(root / "ontology.json", dump(ontology));
  write_file(root / "gym.json", dump(marker));
  staging.commit();
  return summary;
}

std::string format_task_table(const GymSummary& summary) {
  std::vector<std::vector<std::string>> rows = {
      {"name", "category", "partition", "metric", "k", "#train", "#test"}};
  for (const auto& t : summary.tasks) {
    std::string k = std::to_string(t.k);
    if (t.classification) k.append("x").append(std::to_string(t.labels.size()));
    rows.push_back({t.name, t.category, t.partition, t.metric, k,
                    t.partition == "train" ? std::to_string(t.n_full_train) : "-", std::to_string(t.n_test)});
  }
  std::vector<std::size_t> width(rows[0].size(), 0);
  for (const auto& r : rows)
    for (std::size_t c = 0; c < r.size(); ++c) width[c] = std::max(width[c], r[c].size());
  // Text columns left-aligned, counts right-aligned.
  auto numeric = [](std::size_t c) { return c >= 4; };
  std::ostringstream out;
  auto emit = [&](const std::vector<std::string>& r) {
    std::string line;
    for (std::size_t c = 0; c < r.size(); ++c) {
      const std::string pad(width[c] - r[c].size(), ' ');
      if (c) line += "  ";
      line += numeric(c) ? pad + r[c] : r[c] + pad;
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out << line << '\n';
  };
  emit(rows[0]);
  std::vector<std::string> rule;
  for (std::size_t w : width) rule.push_back(std::string(w, '-'));
  emit(rule);
  for (std::size_t i = 1; i < rows.size(); ++i) emit(rows[i]);
  return out.str();
}

}  // namespace tlmoe::gym
