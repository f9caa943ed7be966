#include "train/progress.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <iostream>
#include <sstream>

namespace tlmoe::train {

Progress::Progress(std::ostream& out, std::string label, int64_t start, int64_t total, int64_t plain_every,
                   bool force_plain)
    : out_(out), label_(std::move(label)), start_(start), total_(total), plain_every_(std::max<int64_t>(1, plain_every)) {
  tty_ = !force_plain && (&out == &std::cerr ? ::isatty(2) : (&out == &std::cout ? ::isatty(1) : false));
  t0_ = std::chrono::steady_clock::now();
}

std::string Progress::format_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  char buf[32];
  long t = std::lround(s);
  if (t >= 3600) std::snprintf(buf, sizeof buf, "%ldh%02ldm", t / 3600, (t % 3600) / 60);
  else if (t >= 60) std::snprintf(buf, sizeof buf, "%ldm%02lds", t / 60, t % 60);
  else std::snprintf(buf, sizeof buf, "%lds", t);
  return buf;
}

void Progress::update(int64_t step, double loss, double tokens_per_s,
                      const std::vector<std::pair<std::string, std::string>>& extra) {
  const bool last = step >= total_;
  if (!tty_ && !last && step % plain_every_ != 0) return;
  double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
  double done = static_cast<double>(step - start_);
  double eta = done > 0 ? elapsed / done * static_cast<double>(total_ - step) : NAN;
  std::ostringstream line;
  line << label_ << " " << step << "/" << total_;
  if (tty_) {
    const int width = 24;
    int fill = total_ > 0 ? static_cast<int>(width * static_cast<double>(step) / static_cast<double>(total_)) : 0;
    line << " [" << std::string(fill, '=') << (fill < width ? ">" : "") << std::string(std::max(0, width - fill - 1), ' ')
         << "]";
  }
  char buf[64];
  std::snprintf(buf, sizeof buf, " loss %.4f", loss);
  line << buf;
  if (tokens_per_s >= 1000) std::snprintf(buf, sizeof buf, " | %.1fk tok/s", tokens_per_s / 1000);
  else std::snprintf(buf, sizeof buf, " | %.0f tok/s", tokens_per_s);
  line << buf;
  for (const auto& [k, v] : extra) line << " | " << k << " " << v;
  line << " | ETA " << format_duration(eta);
  if (tty_) {
    out_ << "\r\033[K" << line.str() << std::flush;
    bar_open_ = true;
  } else {
    out_ << line.str() << "\n" << std::flush;
  }
}

void Progress::message(const std::string& line) {
  if (bar_open_) out_ << "\r\033[K";
  out_ << line << "\n" << std::flush;
  bar_open_ = false;
}

void Progress::finish() {
  if (bar_open_) out_ << "\n" << std::flush;
  bar_open_ = false;
}

}  // namespace tlmoe::train
