// Progress reporting of long jobs: a one-line bar redrawn in place on a terminal, plain
// periodic lines otherwise (logs, CI). Shows step, loss, throughput, extra fields and ETA.
#pragma once

#include <chrono>
#include <cstdint>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

namespace tlmoe::train {

class Progress {
 public:
  // `total` steps starting at `start` (resumed runs start > 0). `plain_every`: in plain mode,
  // print every N steps (and at the end). `force_plain` for tests.
  Progress(std::ostream& out, std::string label, int64_t start, int64_t total, int64_t plain_every,
           bool force_plain = false);
  // Records step `step` (1-based count of steps done) with its fields, e.g. {"loss", "2.31"}.
  void update(int64_t step, double loss, double tokens_per_s,
              const std::vector<std::pair<std::string, std::string>>& extra = {});
  void message(const std::string& line);  // a line that does not break the bar
  void finish();

  static std::string format_duration(double seconds);  // "1h02m", "3m07s", "12s"

 private:
  std::ostream& out_;
  std::string label_;
  int64_t start_, total_, plain_every_;
  bool tty_;
  bool bar_open_ = false;
  std::chrono::steady_clock::time_point t0_;
};

}  // namespace tlmoe::train
