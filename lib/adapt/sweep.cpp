// Setting a sweep up: processes, data, the starting model, task plans, resume, fixed routes.
#include "adapt/sweep.h"

#include <algorithm>
#include <cmath>
#include <fstream>

#include "common/device.h"
#include "common/error.h"
#include "common/strings.h"
#include "data/layout.h"
#include "data/preprocess.h"
#include "io/atomic_file.h"
#include "metrics/health.h"
#include "kernels/device.h"
#include "model/load_model.h"
#include "train/model_init.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace tlmoe::adapt::detail {

namespace {

std::string closest(const std::string& name, const std::vector<std::string>& all) {
  std::string best;
  size_t bd = SIZE_MAX;
  for (const auto& c : all) {
    const size_t d = edit_distance(name, c);
    if (d < bd) bd = d, best = c;
  }
  return bd <= std::max<size_t>(2, name.size() / 3) ? best : "";
}

}  // namespace

State snapshot(torch::nn::Module& m, bool trainable_only) {
  State s;
  torch::NoGradGuard g;
  for (auto& p : m.named_parameters(true))
    if (!trainable_only || p.value().requires_grad()) s.emplace_back(p.key(), p.value().detach().clone());
  if (!trainable_only)
    for (auto& b : m.named_buffers(true)) s.emplace_back(b.key(), b.value().detach().clone());
  return s;
}

void restore(torch::nn::Module& m, const State& s) {
  torch::NoGradGuard g;
  auto params = m.named_parameters(true);
  auto buffers = m.named_buffers(true);
  for (const auto& [name, t] : s) {
    if (auto* p = params.find(name)) p->copy_(t);
    else if (auto* b = buffers.find(name)) b->copy_(t);
    else throw std::logic_error("restore: no tensor " + name);
  }
}

std::vector<model::LayerRoute> expand(const std::vector<model::LayerRoute>& one, int64_t B) {
  std::vector<model::LayerRoute> r;
  for (const auto& l : one)
    r.push_back({l.weights.expand({B, l.weights.size(1)}).contiguous(),
                 l.indices.defined() ? l.indices.expand({B, l.indices.size(1)}).contiguous() : l.indices, l.sparse});
  return r;
}

uint64_t point_seed(int64_t seed, const std::string& task, const std::string& prefix, double lr, int64_t bsz) {
  std::ostringstream s;
  s << seed << "|" << task << "|" << prefix << "|" << lr << "|" << bsz;
  return std::stoull(io::fnv1a64_hex(s.str()), nullptr, 16) & 0x7fffffffffffffffULL;
}

std::string point_key(const std::string& task, const std::string& prefix, double lr, int64_t bsz) {
  std::ostringstream s;
  s << task << "|" << prefix << "|" << fmt(lr, "%.17g") << "|" << bsz;
  return s.str();
}

std::string point_key(const json& j) {
  return point_key(j.at("task"), j.at("split"), j.at("lr").get<double>(), j.at("batch_size").get<int64_t>());
}

std::string fmt(double v, const char* f) {
  if (!std::isfinite(v)) return "nan";
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

json num(double v) { return std::isfinite(v) ? json(v) : json(nullptr); }
double from_num(const json& j) { return j.is_number() ? j.get<double>() : NAN; }

double stdev(const std::vector<double>& v, double mean) {
  if (v.empty() || !std::isfinite(mean)) return NAN;
  double s = 0;
  for (double x : v) s += (x - mean) * (x - mean);
  return std::sqrt(s / static_cast<double>(v.size()));
}

void append_line(const fs::path& file, const json& line) {
  std::ofstream f(file, std::ios::app);
  f << line.dump() << "\n" << std::flush;
  if (!f) throw std::runtime_error("cannot append to " + file.string());
}

Sweep::Sweep(const AdaptOptions& opts) : opts_(opts), cfg_(opts.cfg) {}

AdaptResult Sweep::run() {
  validate(cfg_);
  if (opts_.out_dir.empty()) throw UsageError("adapt: an output directory is required (--out)");
  out_ = opts_.out_dir;
  open();
  upstream_health_ = metrics::report_upstream_health(opts_.checkpoint, *log_);
  resume();
  fixed_routes();
  plan_points();
  run_points();
  result_.points_run = run_now_;
  finish();
  bar_->finish();
  write_outputs();
  return result_;
}

// Processes, data and the starting model.
void Sweep::open() {
  dev_ = pick_device(cfg_.device);
  if (opts_.launch.distributed() && dev_.is_cuda())
    dev_ = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(opts_.launch.local_rank % torch::cuda::device_count()));
  comm_ = train::dist::connect(opts_.launch, cfg_.dist, dev_);
  rank_ = comm_->rank();
  world_ = comm_->size();
  lead_ = rank_ == 0;
  log_ = lead_ ? (opts_.log ? opts_.log : &std::cerr) : &silent_;

  std::ostringstream quiet;
  if (!lead_) comm_->barrier();  // rank 0 preprocesses (writes the cache) alone, the others then read it
  data::preprocess(cfg_, quiet);
  if (lead_) comm_->barrier();
  man_ = data::read_preprocess_manifest(cfg_);
  manifest_path_ = (fs::path(cache_dir(cfg_)) / "manifest.json").string();
  cache_ = cache_dir(cfg_);
  metrics_ = data::task_metrics(man_.at("tasks_file").get<std::string>());
  splits_ = data::load_splits(man_.at("splits").get<std::string>());
  const json& tok_info = man_.at("tokenizer");
  pad_ = tok_info.at("pad_id");
  bos_ = tok_info.at("bos_id");
  eos_ = tok_info.at("eos_id");
  tok_ = data::load_tokenizer(cfg_);

  bf16_ = kernels::use_bf16_autocast(cfg_.train.precision, dev_);
  load_start();
  check_modes();
  plan_tasks();
}

void Sweep::load_start() {
  const json& tok_info = man_.at("tokenizer");
  if (!opts_.checkpoint.empty()) {
    model::LoadedModel lm = model::load_model(opts_.checkpoint);
    if (const auto w = model::non_finite_warning(lm, opts_.checkpoint); !w.empty()) *log_ << "warning: " << w << "\n";
    non_finite_weights_ = lm.non_finite;
    model::use_evaluation_tau(lm, cfg_);
    if (lm.tokenizer_fingerprint != tok_info.at("fingerprint").get<std::string>())
      throw DataError((fs::path(opts_.checkpoint) / "meta.json").string(), 0,
                      "the checkpoint was trained with another tokenizer than " + manifest_path_ + " records");
    st_.kind = lm.cfg.model.experts > 1 ? "tlmoe" : "vanilla";
    st_.mcfg = lm.cfg;
    st_.model = lm.model;
    st_.tasks = lm.tasks;
    st_.tau = lm.tau;
    st_.step = lm.step;
  } else {
    st_.kind = "scratch";
    st_.mcfg = cfg_;
    train::UpstreamData td;
    for (auto it = man_.at("tasks").begin(); it != man_.at("tasks").end(); ++it) td.task_names.push_back(it.key());
    std::sort(td.task_names.begin(), td.task_names.end());
    td.tokenizer_fingerprint = tok_info.at("fingerprint").get<std::string>();
    torch::manual_seed(static_cast<uint64_t>(cfg_.adapt.seed));
    st_.model = model::TLMoEModel(model::model_options(cfg_, tok_info.at("vocab_size").get<int64_t>(), pad_),
                                  model::router_options(cfg_), model::routing_policy(cfg_),
                                  static_cast<int64_t>(td.task_names.size()));
    train::initialise_model(*st_.model, cfg_, td);
    st_.tasks = td.task_names;
  }
  st_.model->to(dev_);
}

void Sweep::check_modes() {
  routed_ = st_.model->options().experts > 1;
  route_mode_ = routed_ ? cfg_.adapt.route : "none";
  dynamic_ = routed_ && route_mode_ == "new_embedding";
  squeeze_ = routed_ && cfg_.adapt.mode == "squeeze";
  if (squeeze_ && route_mode_ == "average")
    throw ConfigError("", "adapt.mode", "squeeze needs hard routes; adapt.route = average is soft (use mode fixed)");
  if (squeeze_ && dynamic_)
    throw ConfigError("", "adapt.mode", "squeeze needs a fixed route; adapt.route = new_embedding learns it");
  if (routed_ && route_mode_ == "learned" && st_.mcfg.task_rep.kind == "learned")
    *log_ << "warning: the checkpoint's task table is learned (task_rep.kind = learned): rows of tasks it never "
             "trained on are their random initialisation, so adapt.route = learned gives them an arbitrary route. "
             "Use a textemb/fisher representation, or adapt.route = average / new_embedding.\n";
}

void Sweep::plan_tasks() {
  task_names_ = opts_.tasks.empty() ? splits_.test : opts_.tasks;
  if (task_names_.empty()) throw DataError(splits_.source, 0, "the split file lists no \"test\" tasks to adapt to");
  for (const auto& t : task_names_) plans_.push_back(plan_task(t));
}

// The task's k-shot splits (those of adapt.splits), each with its train, dev and test file.
TaskPlan Sweep::plan_task(const std::string& t) {
  if (!man_.at("tasks").contains(t)) {
    std::vector<std::string> all;
    for (auto it = man_.at("tasks").begin(); it != man_.at("tasks").end(); ++it) all.push_back(it.key());
    const std::string s = closest(t, all);
    throw UsageError("unknown task '" + t + "' (not in " + splits_.source + ")" + (s.empty() ? "" : "; did you mean '" + s + "'?"));
  }
  TaskPlan p;
  p.name = t;
  auto mit = metrics_.find(t);
  if (mit == metrics_.end()) throw DataError(man_.at("tasks_file").get<std::string>(), 0, "no metric for task '" + t + "'");
  p.metric = mit->second;
  auto id_it = std::find(st_.tasks.begin(), st_.tasks.end(), t);
  p.id = id_it == st_.tasks.end() ? -1 : id_it - st_.tasks.begin();
  if (routed_ && p.id < 0 && (route_mode_ == "learned" || dynamic_))
    throw DataError((fs::path(opts_.checkpoint) / "meta.json").string(), 0,
                    "task '" + t + "' is not in the checkpoint's task table; adapt.route = " + route_mode_ +
                        " needs it (use average or random)");
  std::map<std::string, SplitFiles> by_prefix;
  for (const json& f : man_.at("tasks").at(t).at("files")) {
    if (f.at("kind") != "kshot") continue;
    const int64_t seed = f.at("seed").get<int64_t>();
    if (!cfg_.adapt.splits.empty() &&
        std::find(cfg_.adapt.splits.begin(), cfg_.adapt.splits.end(), seed) == cfg_.adapt.splits.end())
      continue;
    SplitFiles& s = by_prefix[f.at("prefix").get<std::string>()];
    s.prefix = f.at("prefix");
    s.seed = seed;
    const std::string split = f.at("split");
    (split == "train" ? s.train : split == "dev" ? s.dev : s.test) = &f;
  }
  for (auto& [prefix, s] : by_prefix) {
    for (auto [f, what] : {std::pair{s.train, "train"}, std::pair{s.dev, "dev"}, std::pair{s.test, "test"}})
      if (!f)
        throw DataError(data::task_dir(cfg_.data.dir, t).string(), 0,
                        "k-shot split " + prefix + " has no " + what + " file (" + prefix + "_" + what + ".tsv)");
    p.splits.push_back(s);
  }
  if (p.splits.empty())
    throw DataError(data::task_dir(cfg_.data.dir, t).string(), 0,
                    "task '" + t + "' has no k-shot splits" +
                        (cfg_.adapt.splits.empty() ? std::string() : std::string(" with the seeds in adapt.splits")));
  return p;
}

// The sweep's identity (sweep.json): every rank checks that out_dir holds this sweep (or none)
// before anything is written; then the points earlier invocations finished.
void Sweep::resume() {
  identity_ = {{"start", st_.kind},
               {"checkpoint", opts_.checkpoint},
               {"checkpoint_step", st_.step},
               {"data_dir", cfg_.data.dir},
               {"tasks", task_names_},
               {"splits", cfg_.adapt.splits},
               {"lrs", cfg_.adapt.lrs},
               {"batch_sizes", cfg_.adapt.batch_sizes},
               {"steps", cfg_.adapt.steps},
               {"warmup_steps", cfg_.adapt.warmup_steps},
               {"eval_every", cfg_.adapt.eval_every},
               {"route", route_mode_},
               {"mode", routed_ ? cfg_.adapt.mode : "none"},
               {"seed", cfg_.adapt.seed},
               {"num_beams", cfg_.eval.num_beams},
               {"max_len", cfg_.eval.max_len}};
  if (lead_) lock_.emplace(out_, *log_);  // one sweep writes this folder at a time (creates it)
  fs::create_directories(out_);
  sweep_file_ = out_ / "sweep.json";
  progress_file_ = out_ / "progress.jsonl";
  if (fs::exists(sweep_file_)) {
    json old;
    try {
      std::ifstream f(sweep_file_);
      old = json::parse(f);
    } catch (const json::exception& e) {
      throw DataError(sweep_file_.string(), 0, std::string("damaged sweep file: ") + e.what());
    }
    std::vector<std::string> diff;
    for (auto it = identity_.begin(); it != identity_.end(); ++it)
      if (!old.contains(it.key()) || old[it.key()] != it.value()) diff.push_back(it.key());
    if (!diff.empty()) {
      std::string d;
      for (const auto& k : diff) d += (d.empty() ? "" : ", ") + k;
      throw UsageError(out_.string() + " holds another sweep (" + d + " differ); use another --out or remove it");
    }
  }
  if (lead_) collect_done();
  if (world_ > 1) {  // the other ranks take rank 0's account
    const auto all = comm_->all_gather_strings(kept_);
    if (!lead_) {
      std::istringstream in(all[0]);
      for (std::string line; std::getline(in, line);)
        if (!line.empty()) {
          json j = json::parse(line);
          done_.emplace(point_key(j), j);
        }
    }
  }
}

// Rank 0 collects what earlier invocations finished: progress.jsonl, and the per-rank files of a
// distributed sweep that stopped before rank 0 merged them (a torn last line from a crash is
// dropped).
void Sweep::collect_done() {
  if (!fs::exists(sweep_file_)) io::write_file_atomic(sweep_file_, identity_.dump(1) + "\n");
  std::vector<fs::path> rank_files;
  for (const auto& e : fs::directory_iterator(out_)) {
    const std::string n = e.path().filename().string();
    if (n.rfind("progress.rank", 0) == 0 && n.size() > 6 && n.substr(n.size() - 6) == ".jsonl") rank_files.push_back(e.path());
  }
  std::sort(rank_files.begin(), rank_files.end());
  std::vector<fs::path> sources = {progress_file_};
  sources.insert(sources.end(), rank_files.begin(), rank_files.end());
  for (const auto& src : sources) {
    std::ifstream f(src);
    for (std::string line; std::getline(f, line);) {
      if (line.empty()) continue;
      try {
        json j = json::parse(line);
        if (done_.emplace(point_key(j), j).second) kept_ += line + "\n";
      } catch (const json::exception&) {
        *log_ << "adapt: dropping a torn line of " << src.string() << "\n";
      }
    }
  }
  if (fs::exists(progress_file_) || !kept_.empty()) io::write_file_atomic(progress_file_, kept_);
  for (const auto& f : rank_files) fs::remove(f);
  if (!done_.empty()) *log_ << "adapt: resuming " << out_.string() << ": " << done_.size() << " grid points already done\n";
}

// Fixed routes, computed before any fine-tuning (a route that does not fit fails early).
void Sweep::fixed_routes() {
  task_route_.resize(plans_.size());
  for (size_t i = 0; i < plans_.size(); ++i) fixed_route(i);
}

void Sweep::fixed_route(size_t i) {
  const auto& p = plans_[i];
  if (dynamic_) route_info_[p.name] = {{"new_embedding", "initialised to the mean of the upstream rows"}};
  if (!routed_ || dynamic_) return;
  auto& route1 = task_route_[i];
  const int64_t L = st_.model->num_layers(), E = st_.model->options().experts;
  torch::NoGradGuard ng;
  if (route_mode_ == "learned") {
    model::RouteContext ctx;
    ctx.training = false;
    ctx.tau = st_.tau;
    route1 = st_.model->routes(torch::tensor({p.id}, torch::kLong).to(dev_), ctx);
  } else if (route_mode_ == "average") {
    for (int64_t l = 0; l < L; ++l) route1.push_back({torch::full({1, E}, 1.0 / E).to(dev_), torch::Tensor(), false});
  } else {  // random
    auto gen = at::make_generator<at::CPUGeneratorImpl>(point_seed(cfg_.adapt.seed, p.name, "route", 0, 0));
    for (int64_t l = 0; l < L; ++l) {
      auto idx = torch::randint(E, {1, 1}, gen, torch::kLong);
      route1.push_back({torch::zeros({1, E}).scatter_(1, idx, 1.0).to(dev_), idx.to(dev_), true});
    }
  }
  json layers = json::array();
  std::vector<int64_t> hard;
  for (auto& r : route1) {
    auto w = r.weights.to(torch::kCPU, torch::kDouble).contiguous();
    layers.push_back(std::vector<double>(w.data_ptr<double>(), w.data_ptr<double>() + w.numel()));
    hard.push_back(r.indices.defined() ? r.indices[0][0].item<int64_t>() : w.argmax(1).item<int64_t>());
  }
  route_info_[p.name] = {{"weights", layers}, {"hard", hard}, {"sparse", !route1.empty() && route1[0].sparse}};
  if (squeeze_)
    for (auto& r : route1)
      if (!r.sparse || r.indices.size(1) != 1)
        throw ConfigError("", "adapt.mode", "squeeze needs top-1 hard routes; the checkpoint's routes are soft");
}

// The settings every grid point shares, and the points still to run, in grid order.
void Sweep::plan_points() {
  gen_ = evaluate::generation_options(cfg_, bos_, eos_, pad_);
  gen_.decoder_start_id = st_.mcfg.model.decoder_start == "eos" ? eos_ : bos_;  // the start token the model was trained with
  start_id_ = gen_.decoder_start_id;
  mo_ = evaluate::metric_options(cfg_);
  lo_ = train::loss_options(cfg_, pad_);
  ao_ = train::adamw_options(cfg_);
  for (size_t i = 0; i < plans_.size(); ++i)
    for (size_t j = 0; j < plans_[i].splits.size(); ++j)
      for (double lr : cfg_.adapt.lrs)
        for (int64_t bsz : cfg_.adapt.batch_sizes) {
          ++points_total_;
          std::string key = point_key(plans_[i].name, plans_[i].splits[j].prefix, lr, bsz);
          if (!done_.count(key)) todo_.push_back({i, j, lr, bsz, std::move(key)});
        }
  result_.points_total = points_total_;
  result_.points_reused = static_cast<int64_t>(done_.size());
  const int64_t steps_total = points_total_ * cfg_.adapt.steps;
  steps_done_ = static_cast<int64_t>(done_.size()) * cfg_.adapt.steps;
  bar_.emplace(*log_, "adapt", steps_done_, steps_total, cfg_.adapt.steps, opts_.plain_progress);
  *log_ << "adapt: " << st_.kind << " start"
        << (opts_.checkpoint.empty() ? std::string() : " (" + opts_.checkpoint + ")") << ", route " << route_mode_
        << (routed_ ? ", mode " + cfg_.adapt.mode : std::string()) << "; " << plans_.size() << " tasks, " << points_total_
        << " grid points of " << cfg_.adapt.steps << " steps"
        << (world_ > 1 ? "; " + std::to_string(todo_.size()) + " to run, handed out to " + std::to_string(world_) +
                             " processes (" + comm_->backend() + ", " + opts_.launch.launcher + ") one at a time"
                       : std::string())
        << "\n";
}

}  // namespace tlmoe::adapt::detail
