// Fuzz target: the JSON metadata readers of lib/data/task_meta.cpp. The input is written as one
// file and read by every loader (splits.json, tasks.json, task_metrics.json, ontology.json), so
// that one corpus serves them all; what a loader accepts is then looked up as the commands do.
#include <set>
#include <sstream>
#include <string>

#include "data/task_meta.h"
#include "fuzz_util.h"

using namespace tlmoe;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto file = fuzz::scratch() / "meta.json";
  fuzz::write_bytes(file, fuzz::as_text(data, size));

  fuzz::expect_input_error("read_json_file", [&] { data::read_json_file(file); });

  fuzz::expect_input_error("load_splits", [&] {
    data::TaskSplits s = data::load_splits(file);
    for (const auto* list : {&s.train, &s.dev, &s.test})
      for (const auto& t : *list) {
        fuzz::check(data::is_valid_task_name(t), "load_splits", "accepted an invalid task name");
        fuzz::check(!s.partition_of(t).empty(), "load_splits", "a listed task has no partition");
      }
    std::ostringstream log;
    data::print_notes(s.notes, log);
  });

  fuzz::expect_input_error("load_tasks", [&] {
    data::TaskTable t = data::load_tasks(file);
    std::set<std::string> metrics(data::known_metrics().begin(), data::known_metrics().end());
    for (std::int64_t id = 0; id < static_cast<std::int64_t>(t.size()); ++id) {
      const std::string& name = t.name(id);
      fuzz::check(t.id(name) == id && t.contains(name), "load_tasks", "name <-> id lookup disagrees");
      fuzz::check(metrics.count(t.info(name).metric) > 0, "load_tasks", "accepted an unknown metric");
      t.suggest(name + "x");
    }
    std::ostringstream log;
    data::print_notes(t.notes(), log);
  });

  fuzz::expect_input_error("load_task_metrics", [&] { data::load_task_metrics(file); });
  fuzz::expect_input_error("task_metrics", [&] { data::task_metrics(file); });

  fuzz::expect_input_error("load_ontology", [&] {
    data::Ontology o = data::load_ontology(file);
    for (const auto& [task, place] : o.place) {
      const auto& p = o.of(task);
      fuzz::check(p.top == place.top && p.sub == place.sub, "load_ontology", "of() disagrees with place");
    }
  });
  return 0;
}
