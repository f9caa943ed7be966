#include "data/task_meta.h"

#include "common/strings.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <set>
#include <stdexcept>
#include <system_error>

#include "common/error.h"
#include "io/atomic_file.h"
#include "io/json_text.h"

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;  // keeps file order, so errors follow the file

namespace tlmoe::data {

namespace {

// A parsed JSON file together with its text, so that semantic errors can name a line too.
struct JsonDoc {
  json value;
  std::string text;
  std::string file;
};

std::size_t line_at(const std::string& text, std::size_t byte) {
  byte = std::min(byte, text.size());
  return 1 + static_cast<std::size_t>(
                 std::count(text.begin(), text.begin() + static_cast<std::ptrdiff_t>(byte), '\n'));
}

// The line of the first `"key"` that is followed by ':' (an object key), searching from
// `from`; 0 when not found (then the error names the file only).
std::size_t line_of_key(const std::string& text, const std::string& key, std::size_t from = 0) {
  const std::string quoted = "\"" + key + "\"";
  for (std::size_t p = text.find(quoted, from); p != std::string::npos; p = text.find(quoted, p + 1)) {
    std::size_t q = p + quoted.size();
    while (q < text.size() && (text[q] == ' ' || text[q] == '\t' || text[q] == '\r' || text[q] == '\n')) ++q;
    if (q < text.size() && text[q] == ':') return line_at(text, p);
  }
  return 0;
}

// Every problem of a file, so that one run reports all of them: one problem keeps the usual
// "file:line: message" form; several become "file: N problems:" and a line each.
struct Problems {
  std::string file;
  std::vector<std::pair<std::size_t, std::string>> list;
  void add(std::size_t line, std::string msg) { list.emplace_back(line, std::move(msg)); }
  void throw_if_any() const {
    if (list.empty()) return;
    if (list.size() == 1) throw DataError(file, list[0].first, list[0].second);
    std::string msg = std::to_string(list.size()) + " problems:";
    for (const auto& [line, m] : list) msg += "\n  " + (line ? "line " + std::to_string(line) + ": " : std::string()) + m;
    throw DataError(file, 0, msg);
  }
};

// The known name `field` is probably a misspelling of, or "" (edit distance 1 or 2, at most
// half the known name's length).
std::string near_name(const std::string& field, const std::vector<std::string>& known) {
  for (const auto& k : known) {
    const std::size_t d = edit_distance(field, k);
    if (d > 0 && d <= 2 && 2 * d <= k.size()) return k;
  }
  return "";
}

// nlohmann's message is "[json.exception.parse_error.101] parse error at line 3, column 5: what";
// keep "what" and the column (the line goes into the DataError).
std::string parse_error_text(const json::parse_error& e) {
  std::string msg = e.what();
  std::size_t bracket = msg.find("] ");
  if (bracket != std::string::npos) msg = msg.substr(bracket + 2);
  std::size_t at_line = msg.find("at line ");
  std::size_t colon = msg.find(": ");
  if (at_line != std::string::npos && colon != std::string::npos && at_line < colon) {
    std::size_t column = msg.find("column ", at_line);
    std::string where =
        column != std::string::npos && column < colon ? msg.substr(column, colon - column) : "";
    msg = msg.substr(colon + 2) + (where.empty() ? "" : " (" + where + ")");
  }
  return "JSON syntax error: " + msg;
}

JsonDoc load_doc(const fs::path& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) throw DataError(path.string(), 0, "file does not exist");
  JsonDoc doc;
  doc.file = path.string();
  doc.text = io::read_file(path);
  try {
    doc.value = json::parse(doc.text);
  } catch (const json::parse_error& e) {
    std::size_t byte = e.byte == 0 ? 0 : e.byte - 1;  // e.byte is 1-based
    throw DataError(doc.file, line_at(doc.text, byte), parse_error_text(e));
  } catch (const json::exception& e) {  // e.g. a number too large for a double (out_of_range.406)
    throw DataError(doc.file, 0, "JSON error: " + io::json_error_text(e));
  }
  io::refuse_duplicate_keys(doc.text, doc.file);
  return doc;
}

std::string json_type(const json& v) { return v.type_name(); }

std::string join(const std::vector<std::string>& items, const std::string& sep) {
  std::string out;
  for (std::size_t i = 0; i < items.size(); ++i) out += (i ? sep : "") + items[i];
  return out;
}

// A list of task names (one value of splits.json); its problems go to `p`.
std::vector<std::string> task_list(const JsonDoc& doc, const std::string& key, Problems& p) {
  const std::size_t line = line_of_key(doc.text, key);
  const json& v = doc.value.at(key);
  if (!v.is_array()) {
    p.add(line, "\"" + key + "\" must be a list of task names, got " + json_type(v));
    return {};
  }
  std::vector<std::string> out;
  std::set<std::string> seen;
  for (std::size_t i = 0; i < v.size(); ++i) {
    const std::string entry = "\"" + key + "\" entry " + std::to_string(i + 1);
    if (!v[i].is_string()) {
      p.add(line, entry + " must be a string, got " + json_type(v[i]));
      continue;
    }
    std::string name = v[i].get<std::string>();
    if (!is_valid_task_name(name)) {
      p.add(line, entry + ": invalid task name '" + name + "'");
      continue;
    }
    if (!seen.insert(name).second) {
      p.add(line, "\"" + key + "\" lists '" + name + "' twice");
      continue;
    }
    out.push_back(std::move(name));
  }
  return out;
}

std::string get_string_field(const JsonDoc& doc, const json& entry, const std::string& task,
                             const std::string& field, std::size_t line) {
  auto it = entry.find(field);
  if (it == entry.end()) return "";
  if (!it->is_string())
    throw DataError(doc.file, line,
                    "task '" + task + "': \"" + field + "\" must be a string, got " + json_type(*it));
  return it->get<std::string>();
}

void check_metric(const JsonDoc& doc, const std::string& task, const std::string& metric, std::size_t line) {
  const auto& known = known_metrics();
  if (std::find(known.begin(), known.end(), metric) == known.end())
    throw DataError(
        doc.file, line,
        "task '" + task + "': unknown metric '" + metric + "' (expected one of " + join(known, ", ") + ")");
}

// Fields of a task entry that tlmoe does not use, by field name -> tasks (MetaNotes).
using Unknown = std::map<std::string, std::vector<std::string>>;

const std::vector<std::string>& known_task_fields() {
  static const std::vector<std::string> k = {"category", "sub_category", "metric", "labels", "instruction"};
  return k;
}

// "labels": a list of strings; null is an empty list.
std::vector<std::string> labels_field(const json& entry, const std::string& task, std::size_t line, Problems& p) {
  std::vector<std::string> out;
  auto it = entry.find("labels");
  if (it == entry.end() || it->is_null()) return out;
  bool ok = it->is_array();
  if (ok)
    for (const auto& l : *it) ok = ok && l.is_string();
  if (!ok) {
    p.add(line, "task '" + task + "': \"labels\" must be a list of strings (or null), got " + it->dump());
    return out;
  }
  for (const auto& l : *it) out.push_back(l.get<std::string>());
  return out;
}

TaskInfo task_from_object(const JsonDoc& doc, const std::string& task, const json& entry, std::size_t line,
                          Problems& p, Unknown& unknown) {
  for (const auto& [field, value] : entry.items()) {
    const auto& known = known_task_fields();
    if (std::find(known.begin(), known.end(), field) == known.end()) unknown[field].push_back(task);
  }
  TaskInfo info;
  info.name = task;
  auto text = [&](const std::string& field) {
    try {
      return get_string_field(doc, entry, task, field, line);
    } catch (const DataError&) {
      p.add(line, "task '" + task + "': \"" + field + "\" must be a string, got " + json_type(entry.at(field)));
      return std::string();
    }
  };
  info.category = text("category");
  info.sub_category = text("sub_category");
  info.instruction = text("instruction");
  if (!entry.contains("metric")) {
    std::string near;
    for (const auto& [field, value] : entry.items())
      if (near_name(field, {"metric"}) == "metric") near = field;
    p.add(line, "task '" + task + "': missing \"metric\"" + (near.empty() ? "" : " (is \"" + near + "\" a misspelling of it?)"));
  } else {
    info.metric = text("metric");
    const auto& k = known_metrics();
    if (entry.at("metric").is_string() && std::find(k.begin(), k.end(), info.metric) == k.end())
      p.add(line, "task '" + task + "': unknown metric '" + info.metric + "' (expected one of " + join(k, ", ") + ")");
  }
  info.labels = labels_field(entry, task, line, p);
  return info;
}

// What the loaders noticed but accepted: unknown fields (debug) and likely misspellings (warning).
void note_unknown_fields(const Unknown& unknown, MetaNotes& notes, const std::string& file) {
  std::vector<std::string> ignored;
  for (const auto& [field, tasks] : unknown) {
    const std::string near = near_name(field, known_task_fields());
    if (near.empty()) {
      ignored.push_back("\"" + field + "\" (" + std::to_string(tasks.size()) + " tasks)");
      continue;
    }
    std::string where;
    for (std::size_t i = 0; i < tasks.size() && i < 3; ++i) where += (i ? ", " : "") + tasks[i];
    if (tasks.size() > 3) where += ", … (" + std::to_string(tasks.size()) + " tasks)";
    notes.warnings.push_back(file + ": field \"" + field + "\" is not one tlmoe reads; did you mean \"" + near +
                             "\"? Ignored in " + where);
  }
  if (!ignored.empty())
    notes.debug.push_back(file + ": fields tlmoe does not use, kept in the file and ignored: " + join(ignored, ", "));
}

}  // namespace

json read_json_file(const fs::path& path) { return load_doc(path).value; }

bool is_valid_task_name(std::string_view name) {
  if (name.empty() || name == "." || name == "..") return false;
  for (char c : name) {
    auto u = static_cast<unsigned char>(c);
    if (c == '/' || c == '\\' || u <= 0x20 || u == 0x7F) return false;
  }
  return true;
}


// ---- splits ---------------------------------------------------------------------------------

std::string TaskSplits::partition_of(std::string_view task) const {
  auto in = [&](const std::vector<std::string>& v) { return std::find(v.begin(), v.end(), task) != v.end(); };
  if (in(train)) return "train";
  if (in(dev)) return "dev";
  if (in(test)) return "test";
  return "";
}

namespace {

void check_partitions(const JsonDoc& doc, const TaskSplits& s, Problems& p) {
  const std::set<std::string> all(s.all.begin(), s.all.end());
  std::map<std::string, std::string> owner;  // task -> the partition listing it
  for (const auto& [key, list] : {std::pair<std::string, const std::vector<std::string>*>{"train", &s.train},
                                  {"dev", &s.dev},
                                  {"test", &s.test}}) {
    for (const auto& t : *list) {
      if (!all.count(t))
        p.add(line_of_key(doc.text, key), "task '" + t + "' is in \"" + key + "\" but not in \"all\"");
      auto [it, fresh] = owner.emplace(t, key);
      if (!fresh)
        p.add(line_of_key(doc.text, key), "task '" + t + "' is in both \"" + it->second + "\" and \"" + key + "\"");
    }
  }
}

}  // namespace

TaskSplits load_splits(const fs::path& path) {
  const JsonDoc doc = load_doc(path);
  if (!doc.value.is_object())
    throw DataError(doc.file, 0,
                    "expected an object with keys all, train, dev, test; got " + json_type(doc.value));
  static const std::vector<std::string> kKeys = {"all", "train", "dev", "test"};
  TaskSplits s;
  s.source = doc.file;
  Problems p{doc.file, {}};
  std::vector<std::string> other;
  for (const auto& [key, value] : doc.value.items())
    if (std::find(kKeys.begin(), kKeys.end(), key) == kKeys.end()) other.push_back(key);
  for (const auto& key : {"train", "dev", "test"}) {
    if (doc.value.contains(key)) continue;
    std::string near;
    for (const auto& o : other)
      if (near_name(o, {key}) == key) near = o;
    p.add(near.empty() ? 0 : line_of_key(doc.text, near),
          std::string("missing key \"") + key + "\"" + (near.empty() ? "" : " (is \"" + near + "\" a misspelling of it?)"));
  }
  p.throw_if_any();
  s.train = task_list(doc, "train", p);
  s.dev = task_list(doc, "dev", p);
  s.test = task_list(doc, "test", p);
  if (doc.value.contains("all")) {
    s.all = task_list(doc, "all", p);
  } else {
    for (const auto* v : {&s.train, &s.dev, &s.test}) s.all.insert(s.all.end(), v->begin(), v->end());
    s.notes.debug.push_back(doc.file + ": no \"all\" list; using train, dev and test (" +
                            std::to_string(s.all.size()) + " tasks)");
  }
  if (!other.empty())
    s.notes.debug.push_back(doc.file + ": keys tlmoe does not use, ignored: " + join(other, ", "));
  check_partitions(doc, s, p);
  p.throw_if_any();
  return s;
}

// ---- tasks ----------------------------------------------------------------------------------

const std::vector<std::string>& known_metrics() {
  static const std::vector<std::string> kMetrics = {
      "EM", "ACC", "QA-F1", "Classification-F1", "Matthew-Correlation", "Pearson-Correlation", "Rouge-L"};
  return kMetrics;
}

TaskTable::TaskTable(std::vector<TaskInfo> tasks, std::string source)
    : tasks_(std::move(tasks)), source_(std::move(source)) {
  std::sort(tasks_.begin(), tasks_.end(),
            [](const TaskInfo& a, const TaskInfo& b) { return a.name < b.name; });
  for (std::size_t i = 0; i < tasks_.size(); ++i) {
    if (i > 0 && tasks_[i].name == tasks_[i - 1].name)
      throw DataError(source_, 0, "task '" + tasks_[i].name + "' is defined twice");
    names_.push_back(tasks_[i].name);
  }
}

bool TaskTable::contains(std::string_view name) const {
  return std::binary_search(names_.begin(), names_.end(), name);
}

std::int64_t TaskTable::id(std::string_view name) const {
  auto it = std::lower_bound(names_.begin(), names_.end(), name);
  if (it == names_.end() || *it != name) {
    std::string msg = "unknown task '" + std::string(name) + "'";
    std::string s = suggest(name);
    if (!s.empty()) msg += " (did you mean '" + s + "'?)";
    throw DataError(source_, 0, msg);
  }
  return it - names_.begin();
}

const TaskInfo& TaskTable::info(std::string_view name) const {
  return tasks_[static_cast<std::size_t>(id(name))];
}

const TaskInfo& TaskTable::info(std::int64_t id) const {
  if (id < 0 || static_cast<std::size_t>(id) >= tasks_.size())
    throw std::out_of_range("task id " + std::to_string(id) + " out of range [0, " +
                            std::to_string(tasks_.size()) + ")");
  return tasks_[static_cast<std::size_t>(id)];
}

std::string TaskTable::suggest(std::string_view name) const {
  // Ties go to the longer common prefix ("t-b" suggests "t-bb" over "t-a").
  auto common_prefix = [&](const std::string& n) {
    std::size_t i = 0;
    while (i < n.size() && i < name.size() && n[i] == name[i]) ++i;
    return i;
  };
  std::string best;
  std::size_t best_d = std::string::npos;
  for (const auto& n : names_) {
    std::size_t d = edit_distance(name, n);
    if (d < best_d || (d == best_d && common_prefix(n) > common_prefix(best))) best_d = d, best = n;
  }
  const std::size_t limit = std::max<std::size_t>(2, name.size() / 3);
  return best_d <= limit ? best : "";
}

TaskTable load_tasks(const fs::path& path) {
  const JsonDoc doc = load_doc(path);
  if (!doc.value.is_object() || doc.value.empty())
    throw DataError(doc.file, 0,
                    "expected a non-empty object {\"<task>\": {...}} (or {\"<task>\": \"<metric>\"})");
  // The form is decided by the first entry: metric map (strings) or full entries (objects).
  const bool metric_map = doc.value.begin()->is_string();
  std::vector<TaskInfo> tasks;
  Problems p{doc.file, {}};
  Unknown unknown;
  for (const auto& [task, entry] : doc.value.items()) {
    const std::size_t line = line_of_key(doc.text, task);
    if (!is_valid_task_name(task)) {
      p.add(line, "invalid task name '" + task + "'");
      continue;
    }
    if (metric_map) {
      if (!entry.is_string()) {
        p.add(line, "task '" + task + "': expected a metric name like the other entries, got " + json_type(entry));
        continue;
      }
      TaskInfo info;
      info.name = task;
      info.metric = entry.get<std::string>();
      const auto& k = known_metrics();
      if (std::find(k.begin(), k.end(), info.metric) == k.end())
        p.add(line, "task '" + task + "': unknown metric '" + info.metric + "' (expected one of " + join(k, ", ") + ")");
      tasks.push_back(std::move(info));
    } else {
      if (!entry.is_object()) {
        p.add(line, "task '" + task + "': expected an object, got " + json_type(entry));
        continue;
      }
      tasks.push_back(task_from_object(doc, task, entry, line, p, unknown));
    }
  }
  p.throw_if_any();
  TaskTable table(std::move(tasks), doc.file);
  MetaNotes notes;
  note_unknown_fields(unknown, notes, doc.file);
  table.set_notes(std::move(notes));
  return table;
}

std::map<std::string, std::string> load_task_metrics(const fs::path& path) {
  const JsonDoc doc = load_doc(path);
  if (!doc.value.is_object()) throw DataError(doc.file, 0, "expected an object {\"<task>\": \"<metric>\"}");
  std::map<std::string, std::string> out;
  for (const auto& [task, entry] : doc.value.items()) {
    const std::size_t line = line_of_key(doc.text, task);
    if (!entry.is_string())
      throw DataError(doc.file, line,
                      "task '" + task + "': the metric must be a string, got " + json_type(entry));
    check_metric(doc, task, entry.get<std::string>(), line);
    out[task] = entry.get<std::string>();
  }
  return out;
}

// ---- ontology -------------------------------------------------------------------------------

const Ontology::Place& Ontology::of(std::string_view task) const {
  auto it = place.find(std::string(task));
  if (it == place.end())
    throw DataError(source, 0, "task '" + std::string(task) + "' is not in the ontology");
  return it->second;
}

namespace {

// One sub-category's task list into `o`; its problems go to `p`.
void add_ontology_tasks(const JsonDoc& doc, const std::string& top, const std::string& sub, const json& tasks,
                        std::size_t line, Ontology& o, Problems& p) {
  const std::string where = "'" + top + "/" + sub + "'";
  if (!tasks.is_array()) {
    p.add(line, where + ": expected a list of task names, got " + json_type(tasks));
    return;
  }
  auto& list = o.tree[top][sub];
  for (const auto& t : tasks) {
    if (!t.is_string() || !is_valid_task_name(t.get_ref<const std::string&>())) {
      p.add(line, where + ": invalid task entry " + t.dump());
      continue;
    }
    const std::string& name = t.get_ref<const std::string&>();
    auto [it, fresh] = o.place.emplace(name, Ontology::Place{top, sub});
    if (!fresh) {
      p.add(line, "task '" + name + "' appears twice: in '" + it->second.top + "/" + it->second.sub + "' and in " + where);
      continue;
    }
    list.push_back(name);
  }
}

}  // namespace

Ontology load_ontology(const fs::path& path) {
  const JsonDoc doc = load_doc(path);
  if (!doc.value.is_object())
    throw DataError(doc.file, 0,
                    "expected {\"<category>\": {\"<sub category>\": [task, ...]}} or {\"<category>\": [task, ...]}, got " +
                        json_type(doc.value));
  Ontology o;
  o.source = doc.file;
  Problems p{doc.file, {}};
  std::vector<std::string> flat;
  for (const auto& [top, subs] : doc.value.items()) {
    const std::size_t top_line = line_of_key(doc.text, top);
    if (top.empty()) {
      p.add(top_line, "empty category name");
      continue;
    }
    if (subs.is_array()) {  // the flat form: the category is its own sub-category
      flat.push_back(top);
      add_ontology_tasks(doc, top, top, subs, top_line, o, p);
      continue;
    }
    if (!subs.is_object()) {
      p.add(top_line, "category '" + top + "': expected an object of sub-categories or a list of tasks, got " + json_type(subs));
      continue;
    }
    for (const auto& [sub, tasks] : subs.items()) {
      if (sub.empty()) {
        p.add(top_line, "category '" + top + "': empty sub-category name");
        continue;
      }
      add_ontology_tasks(doc, top, sub, tasks, line_of_key(doc.text, sub), o, p);
    }
  }
  p.throw_if_any();
  if (!flat.empty())
    o.notes.debug.push_back(doc.file + ": categories given as flat task lists (sub-category = category): " + join(flat, ", "));
  return o;
}

void print_notes(const MetaNotes& notes, std::ostream& log) {
  for (const auto& w : notes.warnings) log << "warning: " << w << "\n";
  const char* env = std::getenv("TLMOE_DEBUG");
  if (!env || !*env || std::string(env) == "0") return;
  for (const auto& d : notes.debug) log << "debug: " << d << "\n";
}

std::map<std::string, std::string> task_metrics(const std::filesystem::path& tasks_file) {
  const TaskTable table = load_tasks(tasks_file);
  std::map<std::string, std::string> m;
  for (const auto& name : table.names()) m[name] = table.info(name).metric;
  return m;
}

// ---- zero-shot answerability --------------------------------------------------------------------

bool contains_word(std::string_view text, std::string_view phrase) {
  if (phrase.empty() || phrase.size() > text.size()) return false;
  auto lower = [](char c) { return static_cast<char>(std::tolower(static_cast<unsigned char>(c))); };
  auto word_char = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; };
  for (std::size_t at = 0; at + phrase.size() <= text.size(); ++at) {
    bool same = true;
    for (std::size_t i = 0; same && i < phrase.size(); ++i) same = lower(text[at + i]) == lower(phrase[i]);
    if (!same) continue;
    const bool left_ok = at == 0 || !word_char(text[at - 1]);
    const std::size_t end = at + phrase.size();
    if (left_ok && (end == text.size() || !word_char(text[end]))) return true;
  }
  return false;
}

std::map<std::string, std::string> zero_shot_answerable(const TaskTable& tasks, const TaskSplits& splits,
                                                        bool instruction_in_input) {
  std::set<std::string> seen;
  for (const auto& t : splits.train)
    if (tasks.contains(t))
      for (const auto& l : tasks.info(t).labels) seen.insert(l);
  std::map<std::string, std::string> out;
  for (const auto* part : {&splits.dev, &splits.test}) {
    for (const auto& t : *part) {
      if (!tasks.contains(t) || tasks.info(t).labels.empty()) continue;
      const TaskInfo& info = tasks.info(t);
      bool all_known = true, any_seen = false, any_named = false;
      for (const auto& l : info.labels) {
        const bool is_seen = seen.count(l) > 0;
        const bool named = instruction_in_input && contains_word(info.instruction, l);
        any_seen = any_seen || is_seen;
        any_named = any_named || (named && !is_seen);
        all_known = all_known && (is_seen || named);
      }
      if (!all_known) continue;
      out[t] = any_named ? (any_seen ? "seen answers and the instruction" : "named in the instruction") : "seen answers";
    }
  }
  return out;
}

}  // namespace tlmoe::data
