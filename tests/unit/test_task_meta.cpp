// splits.json, tasks.json (and the task_metrics.json form), ontology.json: good and bad files,
// the real CrossFit files shipped in data/crossfit/, and "did you mean" suggestions.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <set>
#include <sstream>

#include "common/error.h"
#include "data/layout.h"
#include "data/task_meta.h"
#include "test_util.h"

using tlmoe::DataError;
using namespace tlmoe::data;
using tlmoe::test::TempDir;
using tlmoe::test::write_text;

namespace {
std::string crossfit(const std::string& name) { return tlmoe::test::source_dir() + "/data/crossfit/" + name; }

// The message of the DataError `f` throws, or "" if none.
template <typename F>
std::string data_error(F&& f) {
  try {
    f();
  } catch (const DataError& e) {
    return e.what();
  }
  return "";
}

const char* kGoodTask = R"({"category": "classification", "sub_category": "nli", "metric": "ACC",
                            "labels": ["yes", "no"], "instruction": "Does it follow?"})";
}  // namespace

TEST_CASE("the real CrossFit random.json, ontology.json, task_metrics.json and tasks.json load", "[data]") {
  TaskSplits s = load_splits(crossfit("random.json"));
  CHECK(s.all.size() == 160);
  CHECK(s.train.size() == 120);
  CHECK(s.dev.size() == 20);
  CHECK(s.test.size() == 20);
  CHECK(s.partition_of("quoref") == "test");
  CHECK(s.partition_of("cos_e") == "dev");

  Ontology o = load_ontology(crossfit("ontology.json"));
  CHECK(o.place.size() == 160);
  CHECK(o.tree.size() == 4);
  CHECK(o.tree.at("classification").at("emotion").size() == 13);
  CHECK(o.tree.at("qa").at("multiple-choice qa").size() == 23);
  CHECK(o.of("financial_phrasebank").sub == "hate speech detection");
  CHECK(o.of("financial_phrasebank").top == "classification");
  for (const auto& t : s.all) CHECK(o.contains(t));

  auto metrics = load_task_metrics(crossfit("task_metrics.json"));
  for (const auto& t : s.all) CHECK(metrics.count(t) == 1);
  CHECK(metrics.at("glue-cola") == "Matthew-Correlation");
  std::map<std::string, int> train_metrics;
  for (const auto& t : s.train) ++train_metrics[metrics.at(t)];
  CHECK(train_metrics["ACC"] == 42);  // docs/data.md
  CHECK(train_metrics["Classification-F1"] == 35);
  CHECK(train_metrics["EM"] == 23);

  TaskTable table = load_tasks(crossfit("tasks.json"));
  for (const auto& t : s.all) CHECK(table.contains(t));
  CHECK(table.info("quoref").metric == "QA-F1");
  // the metric-map form is accepted by load_tasks too
  TaskTable from_metrics = load_tasks(crossfit("task_metrics.json"));
  CHECK(from_metrics.info("wiki_split").metric == "Rouge-L");
  CHECK(from_metrics.info("wiki_split").category.empty());
}

TEST_CASE("task table: sorted ids, lookups, suggestions for unknown names", "[data]") {
  TempDir d;
  write_text(d / "tasks.json", std::string("{\"b-task\": ") + kGoodTask +
                                   ", \"a-task\": {\"metric\": \"EM\"}, " +
                                   "\"glue-cola\": {\"metric\": \"Matthew-Correlation\"}}");
  TaskTable t = load_tasks(d / "tasks.json");
  REQUIRE(t.size() == 3);
  CHECK(t.names() == std::vector<std::string>{"a-task", "b-task", "glue-cola"});
  CHECK(t.id("b-task") == 1);
  CHECK(t.name(2) == "glue-cola");
  CHECK(t.info("b-task").labels == std::vector<std::string>{"yes", "no"});
  CHECK(t.info("b-task").sub_category == "nli");
  CHECK(t.info("b-task").instruction == "Does it follow?");
  CHECK(t.info("a-task").labels.empty());
  CHECK(data_error([&] { t.id("glue-cloa"); }) ==
        "data error: " + (d / "tasks.json").string() +
            ": unknown task 'glue-cloa' (did you mean 'glue-cola'?)");
  CHECK(data_error([&] { t.info("something-else-entirely"); }) ==
        "data error: " + (d / "tasks.json").string() + ": unknown task 'something-else-entirely'");
  CHECK_THROWS_AS(t.info(std::int64_t{3}), std::out_of_range);
}

TEST_CASE("tasks.json errors name the file, line and task", "[data]") {
  TempDir d;
  const std::string f = (d / "tasks.json").string();
  write_text(f, "{\n \"ok\": {\"metric\": \"EM\"},\n \"bad\": {\"metric\": \"BLEU\"}\n}\n");
  CHECK(data_error([&] { load_tasks(f); }) ==
        "data error: " + f +
            ":3: task 'bad': unknown metric 'BLEU' (expected one of EM, ACC, QA-F1, Classification-F1, "
            "Matthew-Correlation, Pearson-Correlation, Rouge-L)");
  write_text(f, "{\n \"t\": {\"category\": \"x\"}\n}\n");
  CHECK(data_error([&] { load_tasks(f); }) == "data error: " + f + ":2: task 't': missing \"metric\"");
  // a misspelled metric key with no metric: the error points at it
  write_text(f, "{\n \"t\": {\"metrc\": \"EM\"}\n}\n");
  CHECK(data_error([&] { load_tasks(f); }) ==
        "data error: " + f + ":2: task 't': missing \"metric\" (is \"metrc\" a misspelling of it?)");
  write_text(f, "{\"t\": {\"metric\": \"EM\", \"labels\": [1]}}");
  CHECK_THROWS_WITH(load_tasks(f), Catch::Contains("\"labels\" must be a list of strings (or null), got [1]"));
  write_text(f, "{\"t\": {\"metric\": \"EM\", \"category\": 3}}");
  CHECK_THROWS_WITH(load_tasks(f), Catch::Contains("\"category\" must be a string, got number"));
  write_text(f, "{\"a\": \"EM\", \"b\": {\"metric\": \"EM\"}}");
  CHECK_THROWS_WITH(load_tasks(f),
                    Catch::Contains("task 'b': expected a metric name like the other entries"));
  write_text(f, "{\"a/b\": \"EM\"}");
  CHECK_THROWS_WITH(load_tasks(f), Catch::Contains("invalid task name 'a/b'"));
  write_text(f, "{}");
  CHECK_THROWS_WITH(load_tasks(f), Catch::Contains("non-empty object"));
  write_text(f, "{\n  \"a\": {\"metric\": \"EM\"},\n  \"b\": {\"metric\" \"EM\"}\n}\n");
  CHECK_THROWS_WITH(load_tasks(f), Catch::StartsWith("data error: " + f + ":3: JSON syntax error: "));
  CHECK(data_error([&] { load_tasks(d / "missing.json"); }) ==
        "data error: " + (d / "missing.json").string() + ": file does not exist");
}

TEST_CASE("splits.json: good file and every kind of bad one", "[data]") {
  TempDir d;
  const std::string f = (d / "splits.json").string();
  auto splits_error = [&](const std::string& text) {
    write_text(f, text);
    return data_error([&] { load_splits(f); });
  };
  write_text(f, R"({"all": ["a", "b", "c", "d"], "train": ["b", "a"], "dev": ["c"], "test": []})");
  TaskSplits s = load_splits(f);
  CHECK(s.train == std::vector<std::string>{"b", "a"});  // file order kept
  CHECK(s.partition_of("d").empty());

  const std::string pre = "data error: " + f;
  CHECK(splits_error(R"({"all": ["a"], "train": ["a"], "dev": []})") == pre + ": missing key \"test\"");
  CHECK(splits_error("{\"all\": [\"a\"], \"train\": [\"a\"], \"dev\": [],\n \"tset\": []}") ==
        pre + ":2: missing key \"test\" (is \"tset\" a misspelling of it?)");
  CHECK(splits_error("{\"all\": [\"a\", 3],\n \"train\": [], \"dev\": [], \"test\": []}") ==
        pre + ":1: \"all\" entry 2 must be a string, got number");
  CHECK(splits_error(R"({"all": "a", "train": [], "dev": [], "test": []})") ==
        pre + ":1: \"all\" must be a list of task names, got string");
  CHECK(splits_error("{\"all\": [\"a\", \"b\"],\n \"train\": [\"a\", \"a\"], \"dev\": [], \"test\": []}") ==
        pre + ":2: \"train\" lists 'a' twice");
  CHECK(splits_error("{\"all\": [\"a\"],\n \"train\": [],\n \"dev\": [\"z\"], \"test\": []}") ==
        pre + ":3: task 'z' is in \"dev\" but not in \"all\"");
  CHECK(splits_error("{\"all\": [\"a\"], \"train\": [\"a\"], \"dev\": [],\n\"test\": [\"a\"]}") ==
        pre + ":2: task 'a' is in both \"train\" and \"test\"");
  CHECK(splits_error(R"({"all": [""], "train": [], "dev": [], "test": []})") ==
        pre + ":1: \"all\" entry 1: invalid task name ''");
  CHECK(splits_error("[1, 2]") == pre + ": expected an object with keys all, train, dev, test; got array");
  CHECK(splits_error("{\n\"all\": [\"a\",]\n}").find(pre + ":2: JSON syntax error") == 0);
}

TEST_CASE("ontology.json: reverse map and errors", "[data]") {
  TempDir d;
  const std::string f = (d / "ontology.json").string();
  write_text(f, R"({"qa": {"binary": ["boolq", "pubmed_qa"]}, "other": {"n/a": ["x"]}})");
  Ontology o = load_ontology(f);
  CHECK(o.of("pubmed_qa").top == "qa");
  CHECK(o.of("pubmed_qa").sub == "binary");
  CHECK(o.tree.at("qa").at("binary") == std::vector<std::string>{"boolq", "pubmed_qa"});
  CHECK(data_error([&] { o.of("boolk"); }) == "data error: " + f + ": task 'boolk' is not in the ontology");

  write_text(f, "{\"qa\": {\"binary\": [\"boolq\"]},\n \"other\": {\"n/a\": [\"boolq\"]}}");
  CHECK(data_error([&] { load_ontology(f); }) ==
        "data error: " + f + ":2: task 'boolq' appears twice: in 'qa/binary' and in 'other/n/a'");
  write_text(f, R"({"qa": "boolq"})");
  CHECK_THROWS_WITH(load_ontology(f), Catch::Contains("category 'qa': expected an object of sub-categories or a list of tasks, got string"));
  write_text(f, R"({"qa": {"binary": [1]}})");
  CHECK_THROWS_WITH(load_ontology(f), Catch::Contains("'qa/binary': invalid task entry 1"));
}

TEST_CASE("layout: k-shot splits sorted by prefix, full files, and missing pieces", "[data]") {
  TempDir d;
  for (const char* seed : {"13", "100"})
    for (const char* split : {"train", "dev", "test"})
      write_text(d / "t-x" / (std::string("t-x_16_") + seed + "_" + split + ".tsv"), "a\tb\n");
  write_text(d / "t-x" / "t-x_full_train.tsv", "a\tb\n");
  write_text(d / "t-x" / "README.md", "not data");
  auto splits = find_kshot_splits(d.path(), "t-x");
  REQUIRE(splits.size() == 2);
  CHECK(splits[0].prefix == "t-x_16_100");  // string order, as CrossFit
  CHECK(splits[0].seed == 100);
  CHECK(splits[1].prefix == "t-x_16_13");
  CHECK(splits[1].dev == d / "t-x" / "t-x_16_13_dev.tsv");
  auto full = full_files(d.path(), "t-x");
  CHECK(full.train == d / "t-x" / "t-x_full_train.tsv");
  CHECK(full.dev.empty());

  write_text(d / "t-x" / "t-x_16_42_train.tsv", "a\tb\n");
  write_text(d / "t-x" / "t-x_16_42_test.tsv", "a\tb\n");
  CHECK(data_error([&] { find_kshot_splits(d.path(), "t-x"); }) ==
        "data error: " + (d / "t-x" / "t-x_16_42_dev.tsv").string() +
            ": missing dev file of the k-shot split 't-x_16_42'");
  std::filesystem::remove(d / "t-x" / "t-x_16_42_train.tsv");
  std::filesystem::remove(d / "t-x" / "t-x_16_42_test.tsv");

  write_text(d / "t-x" / "other_16_1_train.tsv", "a\tb\n");
  CHECK_THROWS_WITH(find_kshot_splits(d.path(), "t-x"),
                    Catch::Contains("file of task 'other' in the folder of task 't-x'"));
  std::filesystem::remove(d / "t-x" / "other_16_1_train.tsv");
  write_text(d / "t-x" / "t-x_train.tsv", "a\tb\n");
  CHECK_THROWS_WITH(find_kshot_splits(d.path(), "t-x"),
                    Catch::Contains("t-x_train.tsv: unexpected file name"));
  std::filesystem::remove(d / "t-x" / "t-x_train.tsv");

  TaskSplits s;
  s.source = "splits.json";
  s.all = {"t-x", "t-y"};
  CHECK(data_error([&] { check_dataset(d.path(), s); }) ==
        "data error: " + (d / "t-y").string() +
            ": task 't-y' is listed in splits.json but has no folder here (expected files "
            "{task}_{k}_{seed}_{train|dev|test}.tsv or {task}_full_{train|dev}.tsv)");
  std::filesystem::create_directories(d / "t-y");
  CHECK_THROWS_WITH(check_dataset(d.path(), s), Catch::Contains("no data files for task 't-y'"));
  write_text(d / "t-y" / "t-y_full_dev.tsv", "a\tb\n");
  auto found = check_dataset(d.path(), s);
  CHECK(found.at("t-x").kshot.size() == 2);
  CHECK(found.at("t-y").kshot.empty());
  CHECK(found.at("t-y").full.dev == d / "t-y" / "t-y_full_dev.tsv");
  CHECK_THROWS_WITH(check_dataset(d / "nowhere", s),
                    Catch::Contains("data directory (data.dir) does not exist"));
}

TEST_CASE("contains_word: whole words and phrases, case-insensitive", "[data]") {
  CHECK(contains_word("Answer no if it does not.", "no"));
  CHECK_FALSE(contains_word("It is not here.", "no"));
  CHECK(contains_word("Acceptable or UNACCEPTABLE?", "unacceptable"));
  CHECK_FALSE(contains_word("unacceptable", "acceptable"));  // a suffix is not the word
  CHECK(contains_word("say very positive, please", "very positive"));
  CHECK_FALSE(contains_word("not_entailment", "entailment"));  // '_' joins a word
  CHECK_FALSE(contains_word("", "x"));
  CHECK_FALSE(contains_word("x", ""));
}

TEST_CASE("zero_shot_answerable: labels seen upstream or named in the instruction", "[data]") {
  TempDir d;
  write_text(d / "tasks.json", R"({
    "up-nli": {"metric": "ACC", "labels": ["yes", "no"]},
    "up-sent": {"metric": "ACC", "labels": ["positive", "negative"]},
    "up-qa": {"metric": "EM"},
    "t-yesno": {"metric": "ACC", "labels": ["no", "yes"], "instruction": "Is it so?"},
    "t-named": {"metric": "ACC", "labels": ["good", "evil"], "instruction": "Answer good or evil."},
    "t-mixed": {"metric": "ACC", "labels": ["positive", "mixed"], "instruction": "positive or mixed?"},
    "t-half": {"metric": "ACC", "labels": ["yes", "maybe"], "instruction": "Answer yes or no."},
    "t-free": {"metric": "EM", "instruction": "Copy the word yes."},
    "d-named": {"metric": "ACC", "labels": ["red", "blue"], "instruction": "Red or blue?"}})");
  write_text(d / "splits.json",
             R"({"all": ["up-nli", "up-sent", "up-qa", "t-yesno", "t-named", "t-mixed", "t-half", "t-free", "d-named"],
                 "train": ["up-nli", "up-sent", "up-qa"], "dev": ["d-named"],
                 "test": ["t-yesno", "t-named", "t-mixed", "t-half", "t-free"]})");
  const TaskTable tasks = load_tasks(d / "tasks.json");
  const TaskSplits splits = load_splits(d / "splits.json");
  // without instructions in the input only a task whose every label is an upstream answer counts
  CHECK(zero_shot_answerable(tasks, splits, false) == std::map<std::string, std::string>{{"t-yesno", "seen answers"}});
  const std::map<std::string, std::string> expect = {{"d-named", "named in the instruction"},
                                                     {"t-mixed", "seen answers and the instruction"},
                                                     {"t-named", "named in the instruction"},
                                                     {"t-yesno", "seen answers"}};
  CHECK(zero_shot_answerable(tasks, splits, true) == expect);  // t-half: "maybe" is nowhere; t-free: no labels
}

TEST_CASE("metadata as other tools write it: extra fields, null labels, no \"all\", flat ontology", "[data]") {
  TempDir d;
  // tasks.json with fields tlmoe does not know, "labels": null, and one misspelled known field
  write_text(d / "tasks.json", R"({
    "a": {"metric": "EM", "source": "hf", "num_train": 1000, "labels": null},
    "b": {"metric": "ACC", "labels": ["x", "y"], "source": "hf", "examples": ["p", "q"]},
    "c": {"metric": "EM", "lables": ["u"]}})");
  const TaskTable t = load_tasks(d / "tasks.json");
  CHECK(t.info("a").labels.empty());
  CHECK(t.info("b").labels == std::vector<std::string>{"x", "y"});
  CHECK(t.info("c").labels.empty());  // the misspelled field is not read
  REQUIRE(t.notes().warnings.size() == 1);
  CHECK(t.notes().warnings[0] == (d / "tasks.json").string() +
                                     ": field \"lables\" is not one tlmoe reads; did you mean \"labels\"? Ignored in c");
  REQUIRE(t.notes().debug.size() == 1);
  CHECK(t.notes().debug[0].find("\"examples\" (1 tasks), \"num_train\" (1 tasks), \"source\" (2 tasks)") !=
        std::string::npos);
  std::ostringstream shown;
  print_notes(t.notes(), shown);
  CHECK(shown.str().find("warning: ") == 0);
  CHECK(shown.str().find("debug: ") == std::string::npos);  // only with TLMOE_DEBUG
  ::setenv("TLMOE_DEBUG", "1", 1);
  std::ostringstream debug;
  print_notes(t.notes(), debug);
  ::unsetenv("TLMOE_DEBUG");
  CHECK(debug.str().find("debug: " + t.notes().debug[0]) != std::string::npos);

  // splits.json without "all": train, dev and test in that order; other keys ignored
  write_text(d / "splits.json", R"({"train": ["a", "b"], "dev": [], "test": ["c"], "note": "x"})");
  const TaskSplits s = load_splits(d / "splits.json");
  CHECK(s.all == std::vector<std::string>{"a", "b", "c"});
  CHECK(s.partition_of("c") == "test");
  REQUIRE(s.notes.debug.size() == 2);
  CHECK(s.notes.debug[0].find("no \"all\" list; using train, dev and test (3 tasks)") != std::string::npos);
  CHECK(s.notes.debug[1].find("keys tlmoe does not use, ignored: note") != std::string::npos);

  // the flat ontology form: the category is its own sub-category
  write_text(d / "ontology.json", R"({"classification": ["b"], "other": ["a", "c"]})");
  const Ontology o = load_ontology(d / "ontology.json");
  CHECK(o.of("b").top == "classification");
  CHECK(o.of("b").sub == "classification");
  CHECK(o.tree.at("other").at("other") == std::vector<std::string>{"a", "c"});
  // the nested and the flat form may be mixed
  write_text(d / "ontology.json", R"({"classification": {"sentiment": ["b"]}, "other": ["a"]})");
  CHECK(load_ontology(d / "ontology.json").of("b").sub == "sentiment");
}

TEST_CASE("a wrong metadata file lists every problem at once", "[data]") {
  TempDir d;
  const std::string f = (d / "tasks.json").string();
  write_text(f, "{\n \"a\": {\"metric\": \"BLEU\"},\n \"b\": {\"category\": 3, \"metric\": \"EM\"},\n \"c\": {}\n}\n");
  CHECK(data_error([&] { load_tasks(f); }) ==
        "data error: " + f + ": 3 problems:\n"
        "  line 2: task 'a': unknown metric 'BLEU' (expected one of EM, ACC, QA-F1, Classification-F1, "
        "Matthew-Correlation, Pearson-Correlation, Rouge-L)\n"
        "  line 3: task 'b': \"category\" must be a string, got number\n"
        "  line 4: task 'c': missing \"metric\"");
  const std::string sp = (d / "splits.json").string();
  write_text(sp, "{\"all\": [\"a\", 3],\n \"train\": [\"a\", \"a\"],\n \"dev\": [\"z\"], \"test\": []}");
  CHECK(data_error([&] { load_splits(sp); }) ==
        "data error: " + sp + ": 3 problems:\n"
        "  line 2: \"train\" lists 'a' twice\n"
        "  line 1: \"all\" entry 2 must be a string, got number\n"
        "  line 3: task 'z' is in \"dev\" but not in \"all\"");
  const std::string on = (d / "ontology.json").string();
  write_text(on, "{\"qa\": {\"binary\": [1]},\n \"x\": 5}");
  CHECK(data_error([&] { load_ontology(on); }) ==
        "data error: " + on + ": 2 problems:\n  line 1: 'qa/binary': invalid task entry 1\n"
        "  line 2: category 'x': expected an object of sub-categories or a list of tasks, got number");
}
