// A sweep over several processes: heartbeats, rank 0 merging the points the others publish in
// the rendezvous store, and the end of the sweep. Waiting on the store never times out while the
// peers' heartbeats go on; a peer silent for dist.timeout_s stops the sweep.
#include <algorithm>
#include <chrono>

#include "adapt/sweep.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace tlmoe::adapt::detail {

Heartbeat::Heartbeat(train::dist::Communicator& comm, std::string key) {
  thread_ = std::thread([this, &comm, key = std::move(key)] {
    std::unique_lock<std::mutex> lock(mu_);
    for (int64_t n = 1; !stop_; ++n) {
      try {
        comm.store_set(key, std::to_string(n));
      } catch (const std::exception&) {
        return;  // the store's host is gone: the main thread meets the same error and reports it
      }
      cv_.wait_for(lock, std::chrono::seconds(1), [this] { return stop_; });
    }
  });
}

Heartbeat::~Heartbeat() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

// Rank 0: every point another rank has published since the last call goes into progress.jsonl,
// and the outputs are rewritten when there was any.
void Sweep::merge_published() {
  const int64_t claimed = std::min<int64_t>(comm_->store_add(ns_ + "claimed", 0), static_cast<int64_t>(todo_.size()));
  bool changed = false;
  for (int64_t t = 0; t < claimed; ++t) {
    if (merged_[t]) continue;
    const auto v = comm_->store_get(ns_ + "point/" + std::to_string(t));
    if (!v) continue;
    const json j = json::parse(*v);
    append_line(progress_file_, j);
    done_[todo_[t].key] = j;
    merged_[t] = 1;
    steps_done_ += cfg_.adapt.steps;
    changed = true;
    const Point& q = todo_[t];
    bar_->message("adapt: rank " + std::to_string(j.value("rank", int64_t{-1})) + " finished " + plans_[q.task].name + " " +
                  plans_[q.task].splits[q.split].prefix + " lr " + fmt(q.lr, "%g") + " bsz " + std::to_string(q.bsz) +
                  ": dev " + fmt(from_num(j.at("dev")), "%.4f") + ", test " + fmt(from_num(j.at("test")), "%.4f"));
  }
  if (changed) write_outputs();
}

// The end: rank 0 merges every rank's points; the others wait for that, then leave.
void Sweep::finish() {
  if (world_ == 1) return;
  if (!lead_) {
    comm_->store_set(ns_ + "finished/" + std::to_string(rank_), std::to_string(run_now_));
    while (!comm_->store_get(ns_ + "merged")) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    std::error_code ec;
    fs::remove(my_progress_, ec);  // merged into progress.jsonl by rank 0
  } else {
    wait_for_ranks();
    comm_->store_set(ns_ + "merged", "1");
  }
  comm_->barrier();  // rank 0 keeps the store up until every rank has seen the merge
}

// Rank 0: merges until every other rank has said it finished; a rank whose heartbeat stops for
// dist.timeout_s ends the sweep with an error (what finished is kept for a rerun).
void Sweep::wait_for_ranks() {
  std::vector<std::string> last(static_cast<size_t>(world_));
  std::vector<std::chrono::steady_clock::time_point> seen(static_cast<size_t>(world_), std::chrono::steady_clock::now());
  std::vector<int64_t> finished(static_cast<size_t>(world_), -1);
  while (true) {
    merge_published();
    bool all = true;
    for (int64_t r = 1; r < world_; ++r) {
      if (finished[r] >= 0) continue;
      if (const auto f = comm_->store_get(ns_ + "finished/" + std::to_string(r))) {
        finished[r] = std::stoll(*f);
        continue;
      }
      all = false;
      const auto now = std::chrono::steady_clock::now();
      const std::string beat = comm_->store_get(ns_ + "alive/" + std::to_string(r)).value_or("");
      if (beat != last[r]) {
        last[r] = beat;
        seen[r] = now;
      } else if (std::chrono::duration<double>(now - seen[r]).count() > cfg_.dist.timeout_s) {
        bar_->finish();
        throw std::runtime_error(
            "adapt: rank " + std::to_string(r) + " of " + std::to_string(world_) +
            " stopped answering (no heartbeat for dist.timeout_s = " + fmt(cfg_.dist.timeout_s, "%g") +
            " s); this rank stops. Every grid point finished so far is kept in " + progress_file_.string() +
            " and the per-rank progress files next to it: rerun the same command to continue.");
      }
    }
    if (all) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  merge_published();  // every rank published before it said it had finished
  for (int64_t r = 1; r < world_; ++r) result_.points_run += finished[r];
}

}  // namespace tlmoe::adapt::detail
