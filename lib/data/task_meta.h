// Task-level metadata: the task partition (splits.json), per-task information (tasks.json or
// CrossFit's task_metrics.json) and the task ontology (ontology.json). Formats in docs/data.md
// and docs/data.md. Every loader throws DataError naming the file, and the line where it is known
// (JSON syntax errors, the entry of a bad task).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <map>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

namespace tlmoe::data {

// Parses a JSON file, keeping object keys in file order. Syntax errors become
// DataError(file, line, ...), the line computed from the parser's byte position; a missing
// file is DataError(file, 0, ...).
nlohmann::ordered_json read_json_file(const std::filesystem::path& path);

// A task name must be usable as a folder name: non-empty, no '/', '\\', whitespace or control
// characters, not "." or "..".
bool is_valid_task_name(std::string_view name);

// ---- splits.json (CrossFit custom_tasks_splits/random.json) ----------------------------------
// { "all": [task...], "train": [...], "dev": [...], "test": [...] }
// train = upstream (seen) tasks; dev / test = unseen tasks for model selection / reporting.
// What a metadata loader noticed and accepted: `warnings` are worth the user's attention (a likely
// misspelling), `debug` lines are not (fields tlmoe does not use, a derived "all"). print_notes
// shows warnings always and debug lines when the environment sets TLMOE_DEBUG (not "0").
struct MetaNotes {
  std::vector<std::string> warnings;
  std::vector<std::string> debug;
};
void print_notes(const MetaNotes& notes, std::ostream& log);

struct TaskSplits {
  std::vector<std::string> all, train, dev, test;  // file order
  std::string source;                              // the file, for messages
  MetaNotes notes;

  // "train", "dev", "test", or "" for a task only in "all".
  std::string partition_of(std::string_view task) const;
};

// "all" may be missing (then it is train, dev and test in that order; a debug note says so); keys
// other than all/train/dev/test are ignored (debug note), unless one looks like a misspelling of a
// missing one. Errors, all reported at once: a missing train/dev/test key, a non-list or
// non-string entry, an invalid task name, a duplicate within a list, a train/dev/test task
// missing from "all", a task in two of train/dev/test.
TaskSplits load_splits(const std::filesystem::path& path);

// ---- tasks.json ----------------------------------------------------------------------------
// { "<task>": { "category": str, "sub_category": str, "metric": str, "labels": [str],
//               "instruction": str }, ... }
// Every field but "metric" may be omitted (empty); "labels": null is an empty list. Other fields
// (as other tools write them: "source", sizes, examples, ...) are kept in the file and ignored,
// with a debug note; one within edit distance 2 of a known field gets a warning naming it. Every
// problem of the file is reported at once (DataError, a line each). Alternatively the CrossFit metric map
// { "<task>": "<metric>" } (task_metrics.json) is accepted: categories, labels and instructions
// are then empty.
struct TaskInfo {
  std::string name;
  std::string category;
  std::string sub_category;
  std::string metric;               // one of known_metrics()
  std::vector<std::string> labels;  // label words of classification tasks (may be empty)
  std::string instruction;          // natural-language task description (may be empty)
};

// "EM", "ACC", "QA-F1", "Classification-F1", "Matthew-Correlation", "Pearson-Correlation",
// "Rouge-L" (CrossFit's METRICS names).
const std::vector<std::string>& known_metrics();

// Task name <-> dense id (the index in sorted name order) and metadata lookup.
class TaskTable {
 public:
  TaskTable() = default;
  // Sorts by name. Throws DataError(source, 0, ...) on a duplicate name.
  TaskTable(std::vector<TaskInfo> tasks, std::string source);

  std::size_t size() const { return tasks_.size(); }
  bool contains(std::string_view name) const;
  const std::vector<std::string>& names() const { return names_; }  // sorted; names()[id]
  const std::string& source() const { return source_; }
  const MetaNotes& notes() const { return notes_; }
  void set_notes(MetaNotes n) { notes_ = std::move(n); }

  // Lookups throw DataError(source, 0, "unknown task 'x' (did you mean 'y'?)").
  std::int64_t id(std::string_view name) const;
  const TaskInfo& info(std::string_view name) const;
  const TaskInfo& info(std::int64_t id) const;  // throws std::out_of_range for a bad id
  const std::string& name(std::int64_t id) const { return info(id).name; }

  // The closest name by edit distance if it is close enough to be a likely typo, else "".
  std::string suggest(std::string_view name) const;

 private:
  std::vector<TaskInfo> tasks_;     // sorted by name
  std::vector<std::string> names_;  // tasks_[i].name
  std::string source_;
  MetaNotes notes_;
};

TaskTable load_tasks(const std::filesystem::path& path);

// CrossFit's task_metrics.json: { "<task>": "<metric>" }, metric checked against known_metrics().
std::map<std::string, std::string> load_task_metrics(const std::filesystem::path& path);

// ---- ontology.json (CrossTaskMoE playground/plot_utils/ontology.json) ------------------------
// { "<top category>": { "<sub category>": [task, ...] }, ... }; each task appears once.
struct Ontology {
  struct Place {
    std::string top;  // e.g. "classification"
    std::string sub;  // e.g. "sentiment analysis"
  };
  std::map<std::string, std::map<std::string, std::vector<std::string>>> tree;  // top -> sub -> tasks
  std::map<std::string, Place> place;                                           // task -> (top, sub)
  std::string source;
  MetaNotes notes;

  bool contains(std::string_view task) const { return place.count(std::string(task)) > 0; }
  // Throws DataError(source, 0, "task 'x' is not in the ontology ...").
  const Place& of(std::string_view task) const;
};

// Also the flat form { "<category>": [task, ...] } (sub-category = the category; a debug note).
// Errors, all reported at once: non-object levels, non-string tasks, empty names, a task listed
// twice (both places named).
Ontology load_ontology(const std::filesystem::path& path);

// task -> CrossFit metric name, from tasks.json (either of its two formats).
std::map<std::string, std::string> task_metrics(const std::filesystem::path& tasks_file);

// ---- zero-shot answerability (docs/data.md "Zero-shot-answerable tasks") ---------------------
// An unseen (dev or test) classification task is answerable zero-shot in principle when a model
// can know every one of its label words without seeing the task: each label is an answer some
// upstream ("train") task trains on, or, with `instruction_in_input` (data.instruction), a whole
// word or phrase of the task's instruction (case-insensitive). Tasks without labels (free-form
// answers) are never counted. Returns task -> "seen answers" | "named in the instruction" |
// "seen answers and the instruction", for the answerable tasks only.
std::map<std::string, std::string> zero_shot_answerable(const TaskTable& tasks, const TaskSplits& splits,
                                                        bool instruction_in_input);

// True when `phrase` occurs in `text` case-insensitively with no letter, digit or '_' on
// either side ("no" is in "Answer no." but not in "not").
bool contains_word(std::string_view text, std::string_view phrase);

}  // namespace tlmoe::data
