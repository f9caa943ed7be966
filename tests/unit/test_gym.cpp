// The embedded gym: layout, determinism, k-shot protocol, metadata consistency and the
// refusal to replace a directory that is not a gym.
#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "common/error.h"
#include "data/gym.h"
#include "data/task_meta.h"
#include "io/atomic_file.h"
#include "test_util.h"

namespace fs = std::filesystem;
using nlohmann::json;
using tlmoe::gym::GymOptions;
using tlmoe::gym::GymSummary;
using tlmoe::gym::GymTaskInfo;
using tlmoe::test::read_text;
using tlmoe::test::TempDir;
using tlmoe::test::write_text;

namespace {

// One gym (seed 42) shared by the read-only test cases, generated on first use.
struct SharedGym {
  TempDir dir;
  fs::path out;
  GymSummary summary;
  SharedGym() : out(dir.path() / "gym") { summary = tlmoe::gym::generate(GymOptions{out, 42}); }
};
const SharedGym& gym42() {
  static SharedGym g;
  return g;
}

// Every file under `root`: relative path -> bytes.
std::map<std::string, std::string> snapshot(const fs::path& root) {
  std::map<std::string, std::string> files;
  for (const auto& e : fs::recursive_directory_iterator(root))
    if (e.is_regular_file()) files[fs::relative(e.path(), root).generic_string()] = read_text(e.path());
  return files;
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (start < text.size()) {
    std::size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    out.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

std::vector<std::string> fields_of(const std::string& line) {
  std::vector<std::string> out;
  std::size_t start = 0;
  for (;;) {
    std::size_t tab = line.find('\t', start);
    out.push_back(line.substr(start, tab == std::string::npos ? std::string::npos : tab - start));
    if (tab == std::string::npos) return out;
    start = tab + 1;
  }
}

bool valid_utf8(const std::string& s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    std::size_t n;  // continuation bytes
    if (c < 0x80)
      n = 0;
    else if ((c & 0xE0) == 0xC0)
      n = 1;
    else if ((c & 0xF0) == 0xE0)
      n = 2;
    else if ((c & 0xF8) == 0xF0)
      n = 3;
    else
      return false;
    if (i + n >= s.size()) return false;
    for (std::size_t k = 1; k <= n; ++k)
      if ((static_cast<unsigned char>(s[i + k]) >> 6) != 0x2) return false;
    i += n + 1;
  }
  return true;
}

std::string kshot_file(const GymTaskInfo& t, int seed, const std::string& split) {
  return t.name + "/" + t.name + "_" + std::to_string(t.k) + "_" + std::to_string(seed) + "_" + split +
         ".tsv";
}

std::set<std::string> inputs_of(const std::string& tsv) {
  std::set<std::string> in;
  for (const auto& l : lines_of(tsv)) in.insert(fields_of(l)[0]);
  return in;
}

}  // namespace

TEST_CASE("gym: the same seed gives byte-identical files, another seed other data", "[gym]") {
  const auto& g = gym42();
  const auto first = snapshot(g.out);
  TempDir again;
  tlmoe::gym::generate(GymOptions{again / "gym", 42});
  const auto second = snapshot(again / "gym");
  REQUIRE(first.size() == second.size());
  for (const auto& [path, bytes] : first) {
    INFO(path);
    REQUIRE(second.count(path) == 1);
    CHECK(second.at(path) == bytes);
  }

  TempDir other;
  tlmoe::gym::generate(GymOptions{other / "gym", 7});
  const auto third = snapshot(other / "gym");
  REQUIRE(third.size() == first.size());
  for (const auto& t : g.summary.tasks) {
    for (const char* split : {"train", "test"}) {
      const std::string f = kshot_file(t, 13, split);
      INFO(f);
      CHECK(third.at(f) != first.at(f));
    }
  }
  CHECK(json::parse(third.at("gym.json"))["seed"] == 7);
}

// The whole seed-42 gym, hashed. It pins the output across compilers, standard libraries and
// platforms (the generator uses no std:: distributions and draws in a fixed order). A deliberate
// change to the tasks changes it: then record the new value, and say so in the CHANGELOG.
TEST_CASE("gym: seed 42 matches the recorded fingerprint", "[gym]") {
  std::string all;
  for (const auto& [path, bytes] : snapshot(gym42().out)) {
    all.append(path).push_back('\0');
    all.append(bytes).push_back('\0');
  }
  CHECK(tlmoe::io::fnv1a64_hex(all) == "706ca1cbf5502acc");
}

TEST_CASE("gym: inventory of tasks, categories and partitions", "[gym]") {
  const auto& tasks = gym42().summary.tasks;
  CHECK(tasks.size() >= 48);
  CHECK(std::is_sorted(tasks.begin(), tasks.end(),
                       [](const auto& a, const auto& b) { return a.name < b.name; }));

  std::set<std::string> categories, test_categories;
  std::map<std::string, int> per_partition;
  std::set<std::string> metrics;
  for (const auto& t : tasks) {
    categories.insert(t.category);
    ++per_partition[t.partition];
    if (t.partition == "test") test_categories.insert(t.category);
    metrics.insert(t.metric);
    CHECK(t.classification == !t.labels.empty());
    CHECK(t.k == (t.classification ? 16u : 32u));
    CHECK(t.n_test > 0);
    if (t.partition == "train") {
      CHECK(t.n_full_train > 0);
      CHECK(t.n_full_dev > 0);
    } else {
      CHECK(t.n_full_train == 0);
      CHECK(t.n_full_dev == 0);
    }
  }
  CHECK(categories.size() >= 5);
  for (const char* c : {"extractive", "classification", "world knowledge"}) CHECK(categories.count(c) == 1);
  CHECK(per_partition["test"] >= 8);
  CHECK(per_partition["dev"] >= 4);
  CHECK(per_partition["train"] + per_partition["dev"] + per_partition["test"] ==
        static_cast<int>(tasks.size()));
  CHECK(test_categories.size() >= 3);
  for (const char* m :
       {"Pearson-Correlation", "Matthew-Correlation", "Rouge-L", "QA-F1", "EM", "ACC", "Classification-F1"})
    CHECK(metrics.count(m) == 1);
}

TEST_CASE("gym: task names survive CrossFit's prefix parsing", "[gym]") {
  for (const auto& t : gym42().summary.tasks) {
    INFO(t.name);
    CHECK(std::all_of(t.name.begin(), t.name.end(), [](char c) {
      return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
    }));
    CHECK(t.name.find("_full_") == std::string::npos);
    // file name -> prefix (minus "_split.tsv") -> task (minus the last two "_" fields)
    std::string file = fs::path(kshot_file(t, 100, "dev")).filename().string();
    std::string prefix = file.substr(0, file.rfind('_'));
    std::string task = prefix.substr(0, prefix.rfind('_'));
    task = task.substr(0, task.rfind('_'));
    CHECK(task == t.name);
  }
}

TEST_CASE("gym: every task has its 15 k-shot files, and full files exactly for train tasks", "[gym]") {
  const auto& g = gym42();
  std::set<std::string> top;
  for (const auto& e : fs::directory_iterator(g.out)) top.insert(e.path().filename().string());
  std::set<std::string> expected_top = {"gym.json", "splits.json", "tasks.json", "ontology.json"};
  for (const auto& t : g.summary.tasks) expected_top.insert(t.name);
  CHECK(top == expected_top);

  for (const auto& t : g.summary.tasks) {
    INFO(t.name);
    std::set<std::string> files;
    for (const auto& e : fs::directory_iterator(g.out / t.name)) files.insert(e.path().filename().string());
    std::set<std::string> expected;
    for (int s : tlmoe::gym::kshot_seeds())
      for (const char* split : {"train", "dev", "test"})
        expected.insert(fs::path(kshot_file(t, s, split)).filename().string());
    CHECK(expected.size() == 15);
    if (t.partition == "train") {
      expected.insert(t.name + "_full_train.tsv");
      expected.insert(t.name + "_full_dev.tsv");
    }
    CHECK(files == expected);
  }
  CHECK(tlmoe::gym::kshot_seeds() == std::vector<int>{100, 13, 21, 42, 87});
}

TEST_CASE("gym: k-shot sizes, label balance, fixed test set, disjoint splits", "[gym]") {
  const auto& g = gym42();
  for (const auto& t : g.summary.tasks) {
    INFO(t.name);
    const std::string test = read_text(g.out / kshot_file(t, 100, "test"));
    CHECK(lines_of(test).size() == t.n_test);
    const auto test_inputs = inputs_of(test);
    CHECK(test_inputs.size() == t.n_test);
    std::set<std::string> train_sets;
    for (int s : tlmoe::gym::kshot_seeds()) {
      INFO("seed " << s);
      CHECK(read_text(g.out / kshot_file(t, s, "test")) == test);
      const std::string train = read_text(g.out / kshot_file(t, s, "train"));
      const std::string dev = read_text(g.out / kshot_file(t, s, "dev"));
      train_sets.insert(train);
      for (const std::string* split : {&train, &dev}) {
        const auto lines = lines_of(*split);
        if (t.classification) {
          CHECK(lines.size() == 16 * t.labels.size());
          std::map<std::string, int> per_label;
          for (const auto& l : lines) ++per_label[fields_of(l)[1]];
          CHECK(per_label.size() == t.labels.size());
          for (const auto& [label, n] : per_label) CHECK(n == 16);
        } else {
          CHECK(lines.size() == 32);
        }
      }
      const auto tr = inputs_of(train), dv = inputs_of(dev);
      CHECK(tr.size() == lines_of(train).size());  // no duplicate inputs
      CHECK(dv.size() == lines_of(dev).size());
      for (const auto& in : tr) {
        CHECK(dv.count(in) == 0);
        CHECK(test_inputs.count(in) == 0);
      }
      for (const auto& in : dv) CHECK(test_inputs.count(in) == 0);
    }
    CHECK(train_sets.size() == 5);  // the split seeds draw different shots
    if (t.partition == "train") {
      const std::string full_train = read_text(g.out / t.name / (t.name + "_full_train.tsv"));
      const std::string full_dev = read_text(g.out / t.name / (t.name + "_full_dev.tsv"));
      CHECK(lines_of(full_train).size() == t.n_full_train);
      CHECK(lines_of(full_dev).size() == t.n_full_dev);
      const auto ft = inputs_of(full_train), fd = inputs_of(full_dev);
      CHECK(ft.size() == t.n_full_train);
      for (const auto& in : ft) {
        CHECK(fd.count(in) == 0);
        CHECK(test_inputs.count(in) == 0);
      }
      for (const auto& in : fd) CHECK(test_inputs.count(in) == 0);
    }
  }
}

TEST_CASE("gym: every TSV line parses", "[gym]") {
  const auto& g = gym42();
  std::size_t n_lines = 0;
  for (const auto& [path, bytes] : snapshot(g.out)) {
    if (fs::path(path).extension() != ".tsv") continue;
    INFO(path);
    REQUIRE(!bytes.empty());
    CHECK(bytes.back() == '\n');
    CHECK(bytes.find('\r') == std::string::npos);
    CHECK(valid_utf8(bytes));
    for (const auto& line : lines_of(bytes)) {
      ++n_lines;
      const auto fields = fields_of(line);
      REQUIRE(fields.size() >= 2);
      for (const auto& f : fields) {
        CHECK(!f.empty());
        CHECK(f.front() != ' ');
        CHECK(f.back() != ' ');
      }
    }
  }
  CHECK(n_lines > 10000);
}

TEST_CASE("gym: splits.json, tasks.json, ontology.json and gym.json agree", "[gym]") {
  const auto& g = gym42();
  const json marker = json::parse(read_text(g.out / "gym.json"));
  CHECK(marker["generator"] == "tlmoe gym");
  CHECK(marker["format_version"] == 1);
  CHECK(marker["seed"] == 42);
  CHECK(marker["num_tasks"] == g.summary.tasks.size());

  const json splits = json::parse(read_text(g.out / "splits.json"));
  std::map<std::string, std::string> partition_of;
  std::set<std::string> all;
  for (const char* key : {"all", "train", "dev", "test"}) {
    INFO(key);
    REQUIRE(splits.contains(key));
    auto names = splits[key].get<std::vector<std::string>>();
    CHECK(std::is_sorted(names.begin(), names.end()));
    if (std::string(key) == "all") {
      all.insert(names.begin(), names.end());
      CHECK(all.size() == names.size());
    } else {
      for (const auto& n : names) CHECK(partition_of.emplace(n, key).second);  // disjoint
    }
  }
  CHECK(partition_of.size() == all.size());
  for (const auto& [n, p] : partition_of) CHECK(all.count(n) == 1);

  const json tasks = json::parse(read_text(g.out / "tasks.json"));
  const std::set<std::string> metric_names = {
      "EM", "ACC", "QA-F1", "Classification-F1", "Matthew-Correlation", "Pearson-Correlation", "Rouge-L"};
  CHECK(tasks.size() == all.size());
  for (const auto& t : g.summary.tasks) {
    INFO(t.name);
    REQUIRE(tasks.contains(t.name));
    const json& e = tasks[t.name];
    CHECK(partition_of.at(t.name) == t.partition);
    CHECK(e["category"] == t.category);
    CHECK(e["sub_category"] == t.sub_category);
    CHECK(e["metric"] == t.metric);
    CHECK(metric_names.count(t.metric) == 1);
    CHECK(!e["instruction"].get<std::string>().empty());
    const auto labels = e["labels"].get<std::vector<std::string>>();
    CHECK(labels == t.labels);
    if (t.metric == "Matthew-Correlation") CHECK(std::count(labels.begin(), labels.end(), "acceptable") == 1);
    if (t.classification) {
      std::set<std::string> label_set(labels.begin(), labels.end());
      CHECK(label_set.size() == labels.size());
      std::vector<std::string> files = {kshot_file(t, 42, "train"), kshot_file(t, 42, "dev"),
                                        kshot_file(t, 42, "test")};
      if (t.partition == "train") files.push_back(t.name + "/" + t.name + "_full_train.tsv");
      std::set<std::string> seen;
      for (const auto& f : files)
        for (const auto& l : lines_of(read_text(g.out / f))) {
          const auto fields = fields_of(l);
          seen.insert(fields.begin() + 1, fields.end());
        }
      for (const auto& out : seen) CHECK(label_set.count(out) == 1);
      CHECK(seen.size() == label_set.size());
    }
  }

  const json ontology = json::parse(read_text(g.out / "ontology.json"));
  std::map<std::string, int> times_listed;
  for (const auto& [category, subs] : ontology.items()) {
    for (const auto& [sub, names] : subs.items()) {
      for (const auto& n : names) {
        const std::string name = n.get<std::string>();
        ++times_listed[name];
        REQUIRE(tasks.contains(name));
        CHECK(tasks[name]["category"] == category);
        CHECK(tasks[name]["sub_category"] == sub);
      }
    }
  }
  CHECK(times_listed.size() == all.size());
  for (const auto& [n, k] : times_listed) CHECK(k == 1);
}

TEST_CASE("gym: format_task_table lists every task in aligned columns", "[gym]") {
  const auto& g = gym42();
  const std::string table = tlmoe::gym::format_task_table(g.summary);
  const auto lines = lines_of(table);
  REQUIRE(lines.size() == g.summary.tasks.size() + 2);
  CHECK(lines[0].rfind("name", 0) == 0);
  CHECK(lines[0].find("#test") != std::string::npos);
  const std::size_t category_col = lines[0].find("category");
  for (std::size_t i = 0; i < g.summary.tasks.size(); ++i) {
    const auto& t = g.summary.tasks[i];
    const std::string& row = lines[i + 2];
    CHECK(row.rfind(t.name + " ", 0) == 0);
    CHECK(row.compare(category_col, t.category.size(), t.category) == 0);
  }
}

TEST_CASE("gym: refuses to replace a directory that is not a gym", "[gym]") {
  TempDir dir;
  write_text(dir / "notes.txt", "precious");
  CHECK_THROWS_AS(tlmoe::gym::generate(GymOptions{dir.path(), 42}), tlmoe::UsageError);
  CHECK(read_text(dir / "notes.txt") == "precious");
  // A gym.json that some other program wrote does not count either.
  write_text(dir / "gym.json", "{\"generator\": \"something else\"}");
  CHECK_THROWS_AS(tlmoe::gym::generate(GymOptions{dir.path(), 42}), tlmoe::UsageError);
  CHECK(read_text(dir / "notes.txt") == "precious");
  // A plain file in the way.
  write_text(dir / "file", "x");
  CHECK_THROWS_AS(tlmoe::gym::generate(GymOptions{dir / "file", 42}), tlmoe::UsageError);
  CHECK(read_text(dir / "file") == "x");
  // Nothing staged is left behind next to the refused directory.
  std::size_t entries = 0;
  for (const auto& e : fs::directory_iterator(dir.path())) {
    (void)e;
    ++entries;
  }
  CHECK(entries == 3);
}

TEST_CASE("gym: an empty directory is used and an earlier gym is replaced", "[gym]") {
  TempDir dir;
  const fs::path out = dir / "gym";
  fs::create_directories(out);
  tlmoe::gym::generate(GymOptions{out, 5});
  CHECK(json::parse(read_text(out / "gym.json"))["seed"] == 5);
  write_text(out / "stale.txt", "from the old gym");
  const GymSummary s = tlmoe::gym::generate(GymOptions{out, 6});
  CHECK(json::parse(read_text(out / "gym.json"))["seed"] == 6);
  CHECK(!fs::exists(out / "stale.txt"));
  CHECK(fs::exists(out / kshot_file(s.tasks.front(), 87, "test")));
  // Only the gym itself remains in the parent: no staging or backup directories.
  std::vector<std::string> entries;
  for (const auto& e : fs::directory_iterator(dir.path())) entries.push_back(e.path().filename().string());
  CHECK(entries == std::vector<std::string>{"gym"});
}

TEST_CASE("gym: at least a third of the test tasks are answerable zero-shot with instructions", "[gym]") {
  const auto& g = gym42();
  const auto tasks = tlmoe::data::load_tasks(g.out / "tasks.json");
  const auto splits = tlmoe::data::load_splits(g.out / "splits.json");
  // read off the generated tasks.json by hand: the one test task answering with upstream label
  // words, and the five whose instructions name their labels (docs/gym.md, Zero-shot)
  using Why = std::map<std::string, std::string>;
  CHECK(tlmoe::data::zero_shot_answerable(tasks, splits, false) == Why{{"implication_yes_no", "seen answers"}});
  const Why with = tlmoe::data::zero_shot_answerable(tasks, splits, true);
  CHECK(with == Why{{"acceptability", "named in the instruction"},
                    {"animal_mention", "named in the instruction"},
                    {"claim_job_check", "named in the instruction"},
                    {"customer_opinion", "named in the instruction"},
                    {"implication_yes_no", "seen answers"},
                    {"topic_headline", "named in the instruction"}});
  CHECK(3 * with.size() >= splits.test.size());
}
