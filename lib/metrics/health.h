// Training health (docs/train.md, "Training health"): did an upstream run converge, and did its
// predictions collapse? Computed from the dev evaluations in metrics.jsonl (the lines with a
// "dev_loss"), written by `tlmoe train` to {run}/health.json and into every checkpoint's meta.json,
// and read back by every report built on a checkpoint (eval, adapt, analyze-routes). Pure C++.
#pragma once

#include <filesystem>
#include <ostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace tlmoe::metrics {

struct HealthOptions {
  double plateau_tolerance = 0.05;  // converged: the last half improved the best by less than this share
  int64_t final_step = 0;           // the run's last step (train.steps)
  bool by_loss = false;             // judge by the dev loss even where there is a dev score (select_by: loss)
};

// The dev-evaluation lines of a metrics.jsonl (those with "dev_loss"), one per step in step order
// (a step logged twice, as after a resume, keeps its last line). A missing file gives none; a line
// that is not JSON throws DataError naming the file and line.
std::vector<nlohmann::json> read_dev_evaluations(const std::filesystem::path& metrics_jsonl);

// Cuts a metrics.jsonl back to its lines of step <= `step` (what a killed run logged after its last
// checkpoint goes, and a torn or unreadable line with it), rewriting the file atomically only when
// something goes, so that a resumed run's file equals an uninterrupted run's. Returns the number
// of lines dropped (0 also for a missing file).
std::size_t truncate_metrics_log(const std::filesystem::path& metrics_jsonl, std::int64_t step);

// The health of a run from its dev evaluations:
//   {"metric": "dev score" | "dev loss", "evaluations": n, "converged": true | false | null,
//    "trend": {"first_half_best", "first_half_step", "last_half_best", "last_half_step", "change"},
//    "collapsed_last": [tasks], "collapsed_best": [tasks], "best_step": s,
//    "verdict": "ok" | "not converged" | "collapsed" | "unknown", "messages": [lines]}.
// The metric is the dev score where the lines have one (and not by_loss), else the dev loss, so that
// the best step is the one best/ holds. Converged is null with
// fewer than 3 evaluations or no finite metric; change is relative to the first half's best.
nlohmann::json assess_health(const std::vector<nlohmann::json>& evaluations, const HealthOptions& o);

// What a checkpoint says of its run's health: the run's health.json next to the checkpoint
// (a sibling of best/ and last/) when present, else the "health" of its meta.json (the state at the
// checkpoint's own evaluation), else null (a checkpoint from before health was recorded, or not
// from `tlmoe train`).
nlohmann::json checkpoint_health(const std::filesystem::path& checkpoint_dir);

// One line per problem that a report built on this checkpoint must carry (empty when healthy or
// unknown): "upstream model not converged: ...", "upstream model collapsed on N tasks: ...".
std::vector<std::string> health_warnings(const nlohmann::json& health);

// What a report built on `checkpoint` carries of its health: {"verdict", "converged", "collapsed",
// "warnings", "source"}, each warning also written to `log` as "warning: ..."; null for no
// checkpoint, a Hugging Face directory (hf:DIR) or a checkpoint without a health record.
nlohmann::json report_upstream_health(const std::string& checkpoint, std::ostream& log);

}  // namespace tlmoe::metrics
