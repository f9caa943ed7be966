// The stages of one `tlmoe adapt` run (adapt.h), internal to lib/adapt: adapt() builds a Sweep
// and runs it. Each stage is a method over the state the stages share:
//
//   open()            processes, data, the starting model, the task plans   (sweep.cpp)
//   resume()          sweep.json identity, the grid points earlier runs finished
//   fixed_routes()    each task's route, before any fine-tuning
//   run_points()      grid points claimed one at a time, each run by run_point() (grid_point.cpp)
//   write_outputs()   select on dev, summarise, write results.csv + summary.json (results.cpp)
//   finish()          the distributed end: rank 0 merges every rank's points (distributed.cpp)
#pragma once

#include <torch/torch.h>

#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <ostream>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "adapt/adapt.h"
#include "data/task_meta.h"
#include "evaluate/predict.h"
#include "io/dir_lock.h"
#include "model/tlmoe_model.h"
#include "text/tokenizer.h"
#include "train/dist.h"
#include "train/loss.h"
#include "train/optim.h"
#include "train/progress.h"

namespace tlmoe::tensorboard {
class EventWriter;
}

namespace tlmoe::adapt::detail {

using State = std::vector<std::pair<std::string, torch::Tensor>>;

// Copies of a module's tensors (all, or the trainable parameters only), and putting them back.
State snapshot(torch::nn::Module& m, bool trainable_only);
void restore(torch::nn::Module& m, const State& s);

// The model every grid point of a task starts from.
struct Start {
  std::string kind;  // tlmoe | vanilla | scratch
  Config mcfg;       // the config its model, routing and task_rep sections come from
  model::TLMoEModel model{nullptr};
  std::vector<std::string> tasks;  // rows of its task table
  double tau = 1.0;
  int64_t step = 0;
};

struct SplitFiles {
  std::string prefix;
  int64_t seed = 0;
  const nlohmann::json* train = nullptr;
  const nlohmann::json* dev = nullptr;
  const nlohmann::json* test = nullptr;
};

struct TaskPlan {
  std::string name, metric;
  int64_t id = 0;  // row in the start model's task table (-1: none)
  std::vector<SplitFiles> splits;
};

// One grid point still to run.
struct Point {
  size_t task, split;
  double lr;
  int64_t bsz;
  std::string key;
};

// A fixed route for a batch of B rows from a route of one row.
std::vector<model::LayerRoute> expand(const std::vector<model::LayerRoute>& one, int64_t B);
uint64_t point_seed(int64_t seed, const std::string& task, const std::string& prefix, double lr, int64_t bsz);
// The key of a grid point in progress.jsonl and in the map of finished points.
std::string point_key(const std::string& task, const std::string& prefix, double lr, int64_t bsz);
std::string point_key(const nlohmann::json& progress_line);
std::string fmt(double v, const char* f = "%.6f");
nlohmann::json num(double v);  // null for NaN / inf
double from_num(const nlohmann::json& j);
// Population std (numpy's default) of the values; NaN when none.
double stdev(const std::vector<double>& v, double mean);
void append_line(const std::filesystem::path& file, const nlohmann::json& line);

// Publishes a counter under `key` in the rendezvous store every second from a thread of its own,
// so that a rank busy fine-tuning still shows it is alive to rank 0.
class Heartbeat {
 public:
  Heartbeat(train::dist::Communicator& comm, std::string key);
  ~Heartbeat();

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

class Sweep {
 public:
  explicit Sweep(const AdaptOptions& opts);
  AdaptResult run();

 private:
  // sweep.cpp
  void open();
  void load_start();
  void check_modes();
  void plan_tasks();
  TaskPlan plan_task(const std::string& t);
  void resume();
  void collect_done();
  void fixed_routes();
  void fixed_route(size_t i);
  void plan_points();
  // grid_point.cpp
  void run_points();
  void enter_task(size_t task);
  void enter_split(const Point& pt);
  nlohmann::json run_point(const Point& pt);
  std::unique_ptr<tensorboard::EventWriter> point_board(const Point& pt) const;
  // results.cpp
  void write_outputs();
  // distributed.cpp
  void merge_published();
  void finish();
  void wait_for_ranks();

  const AdaptOptions& opts_;
  const Config& cfg_;
  std::filesystem::path out_;
  // processes
  torch::Device dev_ = torch::kCPU;
  std::unique_ptr<train::dist::Communicator> comm_;
  int64_t rank_ = 0, world_ = 1;
  bool lead_ = true;  // writes sweep.json, progress.jsonl, results.csv, summary.json
  std::ostream silent_{nullptr};
  std::ostream* log_ = nullptr;
  std::optional<io::DirLock> lock_;
  // data
  nlohmann::json man_;
  std::vector<std::string> non_finite_weights_;  // of the start checkpoint (reported, recorded in summary.json)
  std::string manifest_path_;
  std::filesystem::path cache_;
  std::map<std::string, std::string> metrics_;
  data::TaskSplits splits_;
  int64_t pad_ = 1, bos_ = 0, eos_ = 2;
  std::unique_ptr<text::Tokenizer> tok_;
  // the starting model and what is adapted
  Start st_;
  bool bf16_ = false, routed_ = false, dynamic_ = false, squeeze_ = false;
  std::string route_mode_;
  std::vector<std::string> task_names_;
  std::vector<TaskPlan> plans_;
  // the sweep's identity and the grid points finished so far (key -> progress line)
  nlohmann::json identity_;
  std::filesystem::path sweep_file_, progress_file_, my_progress_;
  std::map<std::string, nlohmann::json> done_;
  std::string kept_;
  // fixed routes (one row per task) and what summary.json says of them
  nlohmann::json route_info_ = nlohmann::json::object();
  nlohmann::json upstream_health_;  // metrics::report_upstream_health of the starting checkpoint
  std::vector<std::vector<model::LayerRoute>> task_route_;
  // settings of every grid point
  model::GenerationOptions gen_;
  int64_t start_id_ = 0;
  metrics::MetricOptions mo_;
  train::LossOptions lo_;
  train::AdamWOptions ao_;
  // the grid points still to run, and the progress over all of them
  std::vector<Point> todo_;
  std::vector<char> merged_;
  int64_t points_total_ = 0, steps_done_ = 0, run_now_ = 0;
  std::optional<train::Progress> bar_;
  std::unique_ptr<Heartbeat> heartbeat_;
  const std::string ns_ = "tlmoe/adapt/";
  // the working model of the current task and split
  State start_state_, initial_;
  size_t cur_task_ = SIZE_MAX, cur_split_ = SIZE_MAX;
  model::TLMoEModel work_{nullptr};
  torch::Tensor new_row_;
  evaluate::EvalSet train_set_, dev_set_, test_set_;
  AdaptResult result_;
};

}  // namespace tlmoe::adapt::detail
