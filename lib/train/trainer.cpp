#include "train/trainer.h"

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>

#include "common/device.h"
#include "common/error.h"
#include "data/batching.h"
#include "data/preprocess.h"
#include "io/atomic_file.h"
#include "io/checkpoint.h"
#include "io/dir_lock.h"
#include "kernels/device.h"
#include "analysis/route_table.h"
#include "metrics/health.h"
#include "model/tlmoe_model.h"
#include "train/dev_eval.h"
#include "train/loss.h"
#include "train/model_init.h"
#include "train/optim.h"
#include "train/progress.h"
#include "train/tensorboard_log.h"
#include "train/upstream_data.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace tlmoe::train {

namespace {

// Appends one JSON line to metrics.jsonl (flushed, so a crash loses at most the line being written).
class MetricsLog {
 public:
  explicit MetricsLog(const fs::path& p) : f_(p, std::ios::app) {
    if (!f_) throw std::runtime_error("cannot open " + p.string());
  }
  void write(const json& j) { f_ << j.dump() << "\n" << std::flush; }

 private:
  std::ofstream f_;
};


// Rows [begin, end) of a batch, trimmed to their own longest input and target.
data::Batch shard_batch(const data::Batch& b, int64_t begin, int64_t end, int64_t pad) {
  const int64_t n = end - begin;
  data::Batch s;
  auto mask = b.input_mask.narrow(0, begin, n);                                   // [n,S]
  auto target = b.target_ids.narrow(0, begin, n);                                 // [n,T]
  const int64_t S = std::max<int64_t>(1, mask.sum(1).max().item<int64_t>());
  const int64_t T = std::max<int64_t>(1, target.ne(pad).sum(1).max().item<int64_t>());
  s.input_ids = b.input_ids.narrow(0, begin, n).narrow(1, 0, S).contiguous();
  s.input_mask = mask.narrow(1, 0, S).contiguous();
  s.decoder_input_ids = b.decoder_input_ids.narrow(0, begin, n).narrow(1, 0, T).contiguous();
  s.target_ids = target.narrow(1, 0, T).contiguous();
  s.task_ids = b.task_ids.narrow(0, begin, n).contiguous();
  s.target_tokens = s.target_ids.ne(pad).sum().item<int64_t>();
  return s;
}

// The routes of rows [begin, end) (weights [B,E] and indices [B,K] of every layer).
std::vector<model::LayerRoute> shard_routes(const std::vector<model::LayerRoute>& routes, int64_t begin, int64_t end) {
  std::vector<model::LayerRoute> out;
  for (const auto& r : routes)
    out.push_back({r.weights.narrow(0, begin, end - begin),
                   r.indices.defined() ? r.indices.narrow(0, begin, end - begin) : torch::Tensor(), r.sparse});
  return out;
}

// Seed of rank `rank`'s dropout stream at (step, micro-batch): distinct per rank and step.
uint64_t rank_dropout_seed(uint64_t seed, int64_t rank, int64_t step, int64_t micro) {
  uint64_t s = seed ^ (static_cast<uint64_t>(rank + 1) * 0x9E3779B97F4A7C15ULL) ^
               (static_cast<uint64_t>(step) * 0xD1B54A32D192ED03ULL) ^ static_cast<uint64_t>(micro);
  return data::splitmix64(s);
}

// What one optimizer step did, summed over its micro-batches (and, with several ranks, over the ranks).
struct StepStats {
  double loss = 0;           // summed (reduction sum) or token-weighted (mean) loss
  int64_t tokens = 0;        // target tokens
  int64_t io_tokens = 0;     // input + target tokens (throughput)
  double nonfinite = 0;      // micro-batches whose loss was not finite (several ranks)
  torch::Tensor last_weights;  // [L,B,E] routes of the last micro-batch
};

// One `tlmoe train` run, in stages: set_up() (processes, data, model, optimiser, fresh or resumed
// state), then step() / log_step() / evaluate_and_save() per optimizer step, then the last save.
class Run {
 public:
  Run(const TrainOptions& opts, json hf_source) : opts_(opts), cfg_(opts.cfg), hf_source_(std::move(hf_source)) {}
  TrainResult go();

 private:
  void check_run_dir();
  void connect();
  void set_up_model();
  void set_up_optimisation();
  void restore();
  void set_up_ranks();
  StepStats step(double tau);
  void micro_batch_one_rank(int64_t micro, const data::Batch& b, const std::vector<model::LayerRoute>& routes,
                            StepStats& st);
  void micro_batch_sharded(int64_t micro, const data::Batch& b, const std::vector<model::LayerRoute>& routes,
                           StepStats& st);
  void reduce_over_ranks(StepStats& st);
  void log_step(const StepStats& st, double grad_norm, double mult, double per_token);
  void evaluate_and_save();
  std::string record_dev_score(const DevScore& score, json& line, std::ostringstream& msg);
  void finish_health();
  nlohmann::json health() const;
  void save(const fs::path& dir);
  double tau_at(int64_t s) const {
    return model::temperature_at(s, cfg_.routing.tau0, cfg_.routing.tau_min, cfg_.routing.anneal_rate);
  }
  [[noreturn]] void stop(const std::string& what);
  void hold_alternating();

  const TrainOptions& opts_;
  const Config& cfg_;
  std::optional<io::DirLock> lock_;  // one writer per run directory (rank 0 holds it); released last
  const json hf_source_;  // the Hugging Face model the run starts from (meta.json's hf_source), or null
  fs::path run_;
  // processes
  torch::Device dev_ = torch::kCPU;
  std::unique_ptr<dist::Communicator> comm_;
  int64_t rank_ = 0, world_ = 1;
  bool lead_ = true;  // writes config, metrics, routes and checkpoints
  std::ostream quiet_{nullptr};  // the other ranks stay silent (their errors still reach the caller)
  std::ostream* log_ = nullptr;
  // data and model
  UpstreamData data_;
  int64_t pad_ = 1, start_id_ = 0;
  model::TLMoEModel m_{nullptr};
  bool bf16_ = false;
  // optimisation
  std::optional<AdamW> opt_;
  std::vector<torch::Tensor> clip_;
  int64_t total_ = 0, warmup_ = 0;
  LossOptions lo_;
  std::optional<data::MultiTaskBatcher> batcher_;
  std::vector<data::Batch> dev_batches_;
  bool by_score_ = false;
  std::vector<evaluate::EvalSet> dev_sets_;
  std::vector<json> evals_;  // the dev evaluations so far (metrics.jsonl's dev lines), for the health summary
  std::unique_ptr<text::Tokenizer> tok_;
  // state
  int64_t step_ = 0;
  double best_dev_ = INFINITY, best_score_ = -INFINITY;
  int64_t best_step_ = 0;
  std::unique_ptr<dist::GradReducer> reducer_;
  std::optional<MetricsLog> metrics_;
  std::optional<TrainBoard> board_;  // TensorBoard (train.tensorboard)
  std::optional<at::Generator> rng_;  // dropout and gumbel noise
  std::optional<Progress> bar_;
  int64_t stop_at_ = 0, last_saved_ = -1, tokens_since_ = 0;
  bool fresh_start_ = false;  // --resume of a run that stopped before its first checkpoint
  std::chrono::steady_clock::time_point t_last_;
  TrainResult result_;
};

TrainResult Run::go() {
  validate(cfg_);  // library callers get the same cross-field checks as the CLI
  check_run_dir();
  connect();
  set_up_model();
  set_up_optimisation();
  restore();
  set_up_ranks();
  bar_.emplace(*log_, "train", step_, total_, cfg_.train.log_every, opts_.plain_progress);
  stop_at_ = opts_.stop_after > 0 ? std::min(total_, step_ + opts_.stop_after) : total_;
  t_last_ = std::chrono::steady_clock::now();
  if (lead_) fs::create_directories(run_ / "routes");

  while (step_ < stop_at_) {
    StepStats st = step(tau_at(step_));
    tokens_since_ += st.io_tokens;
    const double grad_norm = clip_grad_norm(clip_, cfg_.train.clip_norm);
    if (!std::isfinite(grad_norm))
      stop("non-finite gradient norm at step " + std::to_string(step_ + 1) +
           "; training stopped. The last good checkpoint is " + (run_ / "last").string());
    const double mult = linear_warmup_decay(step_, warmup_, total_);
    hold_alternating();
    opt_->step(mult);
    opt_->zero_grad();
    ++step_;
    const double per_token = st.tokens ? st.loss / static_cast<double>(st.tokens) : 0.0;
    result_.step_losses.push_back(per_token);
    log_step(st, grad_norm, mult, per_token);
    const bool eval_now =
        (cfg_.train.eval_every > 0 && step_ % cfg_.train.eval_every == 0 && step_ >= cfg_.train.eval_from) ||
        step_ == total_;
    if (eval_now) evaluate_and_save();
    if (cfg_.train.save_every > 0 && step_ % cfg_.train.save_every == 0) save(run_ / ("step_" + std::to_string(step_)));
  }
  bar_->finish();
  if (last_saved_ != step_) save(run_ / "last");  // the state to resume from (also after stop_after)
  finish_health();
  result_.step = step_;
  result_.best_dev_loss = best_dev_;
  result_.best_dev_score = best_score_;
  result_.best_step = best_step_;
  result_.stopped_early = step_ < total_;
  return result_;
}

// train.alternate_every = K: the step about to be taken, s = step_ + 1, holds the router and the
// task table when floor(s / K) is odd, else the backbone (the reference's schedule, after the
// clip). Held parameters lose their gradient, so AdamW leaves them (moments included) as they are;
// with reference_compat their gradient is zeroed instead, as the reference does, and AdamW's
// momentum and weight decay still move them.
void Run::hold_alternating() {
  const int64_t k = cfg_.train.alternate_every;
  if (k <= 0) return;
  const bool hold_router = ((step_ + 1) / k) % 2 == 1;
  for (const auto& g : opt_->groups()) {
    const bool router_side = g.name == "router" || g.name == "router_no_decay" || g.name == "task_table";
    if (router_side != hold_router) continue;
    for (auto p : g.params) {
      if (!p.grad().defined()) continue;
      if (cfg_.reference_compat) p.mutable_grad().zero_();
      else p.mutable_grad().reset();
    }
  }
}

void Run::stop(const std::string& what) {
  bar_->finish();
  throw std::runtime_error(what);
}

void Run::check_run_dir() {
  if (opts_.run_dir.empty()) throw UsageError("train: a run directory is required (--run-dir)");
  run_ = opts_.run_dir;
  std::ostream& log = opts_.log ? *opts_.log : std::cerr;
  if (opts_.launch.rank == 0 && fs::is_directory(run_)) {
    // Holding the lock, no other writer exists: a checkpoint commit that a kill interrupted is
    // finished (or rolled back) before anything looks for last/ (io/atomic_file.h).
    lock_.emplace(run_, log);
    for (const char* d : {"last", "best"})
      if (const std::string a = io::recover_staged(run_ / d, /*all_leftovers=*/true); !a.empty()) log << "train: " << a << "\n";
  }
  // an earlier run that died before its first checkpoint left its config and log, nothing to resume
  const bool traces = fs::exists(run_ / "config.resolved.yaml") || fs::exists(run_ / "metrics.jsonl");
  if (!opts_.resume && (fs::exists(run_ / "last") || traces))
    throw UsageError("run directory " + run_.string() + " already holds a run" +
                     (fs::exists(run_ / "last") ? "" : " (stopped before its first checkpoint)") +
                     "; use --resume to continue it or another --run-dir");
  if (opts_.resume && !fs::exists(run_ / "last")) {
    if (!traces) throw UsageError("--resume: no checkpoint at " + (run_ / "last").string());
    fresh_start_ = true;  // nothing was saved: --resume starts it over from step 0
  }
  if (opts_.launch.rank == 0 && !lock_) lock_.emplace(run_, log);  // creates run_
}

// Every rank has passed the run-directory checks before the rendezvous lets rank 0 on.
void Run::connect() {
  dev_ = pick_device(cfg_.device);
  if (opts_.launch.distributed() && dev_.is_cuda())
    dev_ = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(opts_.launch.local_rank % torch::cuda::device_count()));
  comm_ = dist::connect(opts_.launch, cfg_.dist, dev_);
  rank_ = comm_->rank();
  world_ = comm_->size();
  lead_ = rank_ == 0;
  log_ = lead_ ? (opts_.log ? opts_.log : &std::cerr) : &quiet_;
  if (world_ > 1)
    *log_ << "distributed: " << world_ << " processes (" << comm_->backend() << ", " << opts_.launch.launcher
          << "), global batch " << cfg_.train.batch_size << " split over the ranks; rank 0 writes " << run_.string() << "\n";
}

void Run::set_up_model() {
  if (!lead_) comm_->barrier();  // rank 0 preprocesses (writes the cache) alone, the others then read it
  data_ = load_upstream_data(cfg_, *log_);
  if (lead_) comm_->barrier();
  pad_ = data_.pad_id;
  start_id_ = cfg_.model.decoder_start == "eos" ? data_.eos_id : data_.bos_id;
  torch::manual_seed(static_cast<uint64_t>(cfg_.train.seed));
  m_ = model::TLMoEModel(model::model_options(cfg_, data_.vocab_size, pad_), model::router_options(cfg_),
                         model::routing_policy(cfg_), static_cast<int64_t>(data_.task_names.size()));
  initialise_model(*m_, cfg_, data_);
  m_->to(dev_);
  m_->train();
  bf16_ = kernels::use_bf16_autocast(cfg_.train.precision, dev_);
  *log_ << "device " << dev_.str() << (bf16_ ? ", bf16 autocast" : ", fp32") << "\n";
}

void Run::set_up_optimisation() {
  GroupSpec gs;
  gs.lr = cfg_.train.lr;
  gs.router_lr = cfg_.train.router_lr;
  gs.task_lr = cfg_.train.task_lr;
  gs.weight_decay = cfg_.train.weight_decay;
  gs.freeze_task_table = cfg_.task_rep.freeze;
  gs.reference_compat = cfg_.reference_compat;
  const AdamWOptions ao = adamw_options(cfg_);
  opt_.emplace(build_param_groups(*m_, gs), ao);
  clip_ = clip_params(opt_->groups(), *m_, cfg_.reference_compat);
  total_ = cfg_.train.steps;
  warmup_ = warmup_steps(cfg_.train.warmup_ratio, total_);
  lo_ = loss_options(cfg_, pad_);

  data::BatchingOptions bo;
  bo.batch_size = cfg_.train.batch_size;
  bo.seed = static_cast<uint64_t>(cfg_.train.seed);
  bo.length_bucketing = cfg_.train.length_bucketing;
  bo.task_sampling = cfg_.train.task_sampling;
  bo.sampling_temperature = cfg_.train.sampling_temperature;
  bo.pad_id = pad_;
  bo.decoder_start_id = start_id_;
  batcher_.emplace(data_.train, bo);
  dev_batches_ = data::eval_batches(data_.dev, cfg_.eval.batch_size, pad_, start_id_);
  by_score_ = cfg_.train.select_by == "score";
  if (dev_batches_.empty())
    *log_ << "warning: no dev examples, so the dev loss and dev score are n/a and best/ is the last evaluation; "
             "give the upstream tasks dev files (docs/train.md, Dev data)\n";
  if (by_score_ || cfg_.train.diagnostics) {
    dev_sets_ = upstream_dev_sets(cfg_, data_);
    tok_ = data::load_tokenizer(cfg_);
    int64_t n = 0;
    for (const auto& s : dev_sets_) n += static_cast<int64_t>(s.examples.size());
    *log_ << "dev score: " << dev_sets_.size() << " tasks, " << n << " examples decoded per evaluation\n";
  }
}

// The state of a resumed run (weights, optimizer, batcher position, RNG), or a fresh run's config.
void Run::restore() {
  if (!opts_.resume || fresh_start_) {
    if (lead_) io::write_file_atomic(run_ / "config.resolved.yaml", to_yaml(cfg_));
    if (lead_ && fresh_start_) {
      metrics::truncate_metrics_log(run_ / "metrics.jsonl", 0);
      *log_ << "--resume: " << run_.string() << " stopped before its first checkpoint; starting it over from step 0\n";
    }
    return;
  }
  auto ck = io::load_checkpoint(run_ / "last");
  io::load_into(*m_, ck.model, (run_ / "last/model.safetensors").string());
  if (ck.meta.value("tasks", std::vector<std::string>{}) != data_.task_names)
    throw DataError((run_ / "last/meta.json").string(), 0, "the checkpoint was trained on another task list");
  if (ck.meta.value("tokenizer_fingerprint", "") != data_.tokenizer_fingerprint)
    throw DataError((run_ / "last/meta.json").string(), 0,
                    "the checkpoint was trained with another tokenizer (fingerprint differs)");
  opt_->load_state_tensors(ck.optimizer);
  if (!ck.meta.contains("trainer"))
    throw DataError((run_ / "last/meta.json").string(), 0, "holds no trainer state (\"trainer\"): it cannot resume training");
  const json& t = ck.meta.at("trainer");
  step_ = t.at("step").get<int64_t>();
  // none yet (a checkpoint before the first evaluation) is saved as null
  best_dev_ = t.contains("best_dev_loss") && t["best_dev_loss"].is_number() ? t["best_dev_loss"].get<double>() : INFINITY;
  best_score_ = t.contains("best_dev_score") && t["best_dev_score"].is_number() ? t["best_dev_score"].get<double>() : -INFINITY;
  best_step_ = t.value("best_step", 0);
  if (lead_) {
    const size_t dropped = metrics::truncate_metrics_log(run_ / "metrics.jsonl", step_);
    if (dropped > 0)
      *log_ << "metrics.jsonl: dropped " << dropped << " line(s) logged after the checkpoint's step " << step_ << "\n";
  }
  comm_->barrier();  // the other ranks read the cut file
  for (auto& e : metrics::read_dev_evaluations(run_ / "metrics.jsonl"))
    if (e.at("step").get<int64_t>() <= step_) evals_.push_back(std::move(e));
  batcher_->seek(t.at("epoch").get<int64_t>(), t.at("position").get<int64_t>());
  auto it = ck.optimizer.find("rng.cpu");
  const std::string opt_file = (run_ / "last/optimizer.safetensors").string();
  if (it == ck.optimizer.end()) throw DataError(opt_file, 0, "no tensor rng.cpu: the checkpoint has no RNG state");
  at::Generator cpu_gen = at::detail::getDefaultCPUGenerator();
  const auto now = cpu_gen.get_state();
  if (it->second.scalar_type() != now.scalar_type() || it->second.numel() != now.numel())
    throw DataError(opt_file, 0, "tensor rng.cpu is not a CPU generator state (" + std::to_string(now.numel()) + " bytes of U8 expected)");
  try {
    cpu_gen.set_state(it->second);
  } catch (const c10::Error& e) {
    throw DataError(opt_file, 0, "tensor rng.cpu is a damaged generator state: " + std::string(e.what_without_backtrace()));
  }
  *log_ << "resuming " << run_.string() << " at step " << step_ << "\n";
}

// Several ranks start from rank 0's parameters and buffers and reduce gradients in buckets.
void Run::set_up_ranks() {
  std::vector<torch::Tensor> trainable;  // the gradients all-reduced every step (a tied tensor once)
  std::set<const void*> seen;
  for (const auto& p : m_->parameters())
    if (p.requires_grad() && seen.insert(p.unsafeGetTensorImpl()).second) trainable.push_back(p);
  if (world_ > 1) {
    std::vector<torch::Tensor> state;
    for (auto& [name, t] : io::module_state(*m_)) state.push_back(t);
    comm_->broadcast(state);
    reducer_ = std::make_unique<dist::GradReducer>(
        trainable, *comm_, static_cast<int64_t>(cfg_.dist.bucket_mb * static_cast<double>(1 << 20)));
  }
  if (lead_) metrics_.emplace(run_ / "metrics.jsonl");
  if (lead_ && cfg_.train.tensorboard) {
    const auto& mo = m_->options();
    board_.emplace(run_, step_, m_->routed_layers() > 0, analysis::layer_names(mo.encoder_layers, m_->num_layers()),
                   cfg_.train.tensorboard_images && mo.experts > 1);
  }
  rng_ = at::globalContext().defaultGenerator(dev_);
}

// The micro-batches of one optimizer step, their gradients accumulated (and reduced over the ranks).
StepStats Run::step(double tau) {
  StepStats st;
  for (int64_t micro = 0; micro < cfg_.train.grad_accum; ++micro) {
    // the last backward of the step: gradient buckets start their all-reduce as they complete
    if (reducer_ && cfg_.dist.overlap && micro == cfg_.train.grad_accum - 1) reducer_->arm();
    data::Batch b = to_device(batcher_->next(), dev_);
    model::RouteContext ctx;
    ctx.training = true;
    ctx.tau = tau;
    // Routes of the whole (global) batch: every rank draws the same noise, as one process would.
    auto routes = m_->routes(b.task_ids, ctx);
    if (!routes.empty()) {
      std::vector<torch::Tensor> w;
      for (auto& lr : routes) w.push_back(lr.weights.detach());
      st.last_weights = torch::stack(w);  // [L,B,E]
    }
    if (world_ == 1) micro_batch_one_rank(micro, b, routes, st);
    else micro_batch_sharded(micro, b, routes, st);
  }
  if (world_ > 1) reduce_over_ranks(st);
  return st;
}

void Run::micro_batch_one_rank(int64_t micro, const data::Batch& b, const std::vector<model::LayerRoute>& routes,
                               StepStats& st) {
  torch::Tensor logits;
  {
    kernels::AutocastGuard amp(bf16_, dev_);
    logits = m_->forward(b.input_ids, b.input_mask, b.decoder_input_ids, routes);
  }
  auto r = label_smoothed_nll(logits, b.target_ids, lo_);  // in fp32 whatever the logits' dtype
  torch::Tensor loss = r.loss;
  if (cfg_.train.loss_reduction == "mean") loss = loss / static_cast<double>(cfg_.train.grad_accum);
  if (cfg_.model.expert_reg > 0 && m_->routed_layers() > 0) loss = loss + cfg_.model.expert_reg * m_->expert_difference();
  const double value = r.loss.item<double>();
  if (!std::isfinite(value))
    stop("non-finite loss at step " + std::to_string(step_ + 1) + "; training stopped. The last good checkpoint is " +
         (run_ / "last").string() + (fs::exists(run_ / "last") ? "" : " (none written yet)"));
  loss.backward();
  st.loss += cfg_.train.loss_reduction == "mean" ? value * static_cast<double>(r.tokens) : value;
  st.tokens += r.tokens;
  st.io_tokens += b.target_tokens + b.input_mask.sum().item<int64_t>();
}

// Several ranks: this rank's rows of the global batch. The loss is the rows' share of the
// one-process loss (sum: their sum; mean: their sum over the global batch's target tokens), so
// the all-reduced gradient is the one-process gradient.
void Run::micro_batch_sharded(int64_t micro, const data::Batch& b, const std::vector<model::LayerRoute>& routes,
                              StepStats& st) {
  const auto [begin, end] = dist::shard_rows(b.task_ids.size(0), rank_, world_);
  torch::Tensor loss;
  if (end > begin) {
    const data::Batch sb = shard_batch(b, begin, end, pad_);
    const int64_t global_tokens = b.target_ids.ne(pad_).sum().item<int64_t>();
    // dropout draws from a stream of this rank's own; the shared stream (routes) resumes after
    const torch::Tensor shared_rng = rng_->get_state();
    rng_->set_current_seed(rank_dropout_seed(static_cast<uint64_t>(cfg_.train.seed), rank_, step_, micro));
    torch::Tensor logits;
    {
      kernels::AutocastGuard amp(bf16_, dev_);
      logits = m_->forward(sb.input_ids, sb.input_mask, sb.decoder_input_ids, shard_routes(routes, begin, end));
    }
    LossOptions sum_lo = lo_;
    sum_lo.reduction = "sum";
    auto r = label_smoothed_nll(logits, sb.target_ids, sum_lo);
    loss = r.loss;
    if (cfg_.train.loss_reduction == "mean")
      loss = loss / static_cast<double>(std::max<int64_t>(1, global_tokens) * cfg_.train.grad_accum);
    const double value = r.loss.item<double>();
    if (!std::isfinite(value)) st.nonfinite += 1;
    st.loss += value;
    st.tokens += r.tokens;
    st.io_tokens += sb.target_tokens + sb.input_mask.sum().item<int64_t>();
    if (cfg_.model.expert_reg > 0 && m_->routed_layers() > 0)
      loss = loss + (cfg_.model.expert_reg / static_cast<double>(world_)) * m_->expert_difference();
    if (std::isfinite(value)) loss.backward();
    rng_->set_state(shared_rng);
  } else if (cfg_.model.expert_reg > 0 && m_->routed_layers() > 0) {
    loss = (cfg_.model.expert_reg / static_cast<double>(world_)) * m_->expert_difference();
    loss.backward();
  }
}

// The gradients first (their buckets may have started during backward: every rank issues its
// collectives in the same order), then one all-reduce for the step's statistics; every rank then
// takes the same decisions.
void Run::reduce_over_ranks(StepStats& st) {
  reducer_->finish();
  std::vector<torch::Tensor> stats = {torch::tensor(
      {st.loss, static_cast<double>(st.tokens), static_cast<double>(st.io_tokens), st.nonfinite}, torch::kDouble)};
  comm_->all_reduce_sum(stats);
  auto a = stats[0].accessor<double, 1>();
  st.loss = a[0];
  st.tokens = static_cast<int64_t>(std::llround(a[1]));
  st.io_tokens = static_cast<int64_t>(std::llround(a[2]));
  if (a[3] > 0)
    stop("non-finite loss at step " + std::to_string(step_ + 1) + " (on " + std::to_string(static_cast<int64_t>(a[3])) +
         " rank micro-batches); training stopped. The last good checkpoint is " + (run_ / "last").string() +
         (fs::exists(run_ / "last") ? "" : " (none written yet)"));
}

// The progress bar every step; a metrics.jsonl line every train.log_every steps.
void Run::log_step(const StepStats& st, double grad_norm, double mult, double per_token) {
  const auto now = std::chrono::steady_clock::now();
  const double dt = std::chrono::duration<double>(now - t_last_).count();
  const double tps = dt > 0 ? static_cast<double>(tokens_since_) / dt : 0.0;
  char tau_s[32];
  std::snprintf(tau_s, sizeof tau_s, "%.3g", tau_at(step_));
  if (m_->routed_layers() > 0) bar_->update(step_, per_token, tps, {{"τ", tau_s}});
  else bar_->update(step_, per_token, tps, {});  // a vanilla model has no temperature
  if (!(step_ % cfg_.train.log_every == 0 || step_ == stop_at_)) return;
  json line = {{"step", step_}, {"loss", per_token}, {"tokens_per_s", tps}, {"tau", tau_at(step_)},
               {"grad_norm", grad_norm}, {"lr_multiplier", mult}};
  json lrs;
  for (const auto& g : opt_->groups()) lrs[g.name] = g.lr * mult;
  line["lr"] = lrs;
  const auto mem = kernels::peak_memory(dev_);
  line["peak_memory_bytes"] = mem.peak_bytes;
  line["peak_memory_kind"] = mem.kind;
  kernels::reset_peak_memory(dev_);
  if (st.last_weights.defined()) {
    auto ent = model::route_entropy(st.last_weights).to(torch::kCPU, torch::kDouble).contiguous();
    line["route_entropy"] = std::vector<double>(ent.data_ptr<double>(), ent.data_ptr<double>() + ent.numel());
  }
  if (world_ > 1) {
    line["world_size"] = world_;
    // rank 0's gradient buckets, and how many of them started their all-reduce during backward
    line["grad_buckets"] = reducer_->buckets();
    line["grad_buckets_overlapped"] = reducer_->started_during_backward();
  }
  if (lead_) metrics_->write(line);
  if (board_) board_->log(line);
  t_last_ = now;
  tokens_since_ = 0;
}

// Dev loss (and dev score), the routes of every task, best/ when better, last/ always.
void Run::evaluate_and_save() {
  const DevLoss dl = eval_loss(m_, dev_batches_, lo_, tau_at(step_), dev_, *comm_,
                               static_cast<int64_t>(data_.task_names.size()));
  const double dev_loss = dl.mean;
  json line = {{"step", step_}, {"dev_loss", dev_loss}};
  json task_losses = json::object();
  for (size_t t = 0; t < dl.per_task.size(); ++t)
    if (std::isfinite(dl.per_task[t])) task_losses[data_.task_names[t]] = dl.per_task[t];
  if (!task_losses.empty()) line["dev_task_losses"] = task_losses;
  std::ostringstream msg;
  msg << "step " << step_ << ": dev loss " << (std::isfinite(dev_loss) ? std::to_string(dev_loss) : "n/a (no dev examples)");
  DevScore score;
  std::string warning;
  if (!dev_sets_.empty()) {
    const auto t_score = std::chrono::steady_clock::now();
    score = dev_score(m_, dev_sets_, *tok_, cfg_, data_, tau_at(step_), dev_, *comm_);
    line["dev_score_seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_score).count();
    warning = record_dev_score(score, line, msg);
  }
  if (lead_) metrics_->write(line);
  if (board_) board_->log(line);
  evals_.push_back(line);
  if (lead_ && m_->options().experts > 1) {
    char name[32];
    std::snprintf(name, sizeof name, "step_%07lld.json", static_cast<long long>(step_));
    const json rj = routes_json(m_, data_.task_names, tau_at(step_), step_);
    io::write_file_atomic(run_ / "routes" / name, rj.dump() + "\n");
    if (board_) board_->routes(rj);
  }
  // by score where there is one, else by loss; with neither (no dev data) every evaluation is the best
  const bool score_ok = by_score_ && std::isfinite(score.mean), loss_ok = std::isfinite(dev_loss);
  const bool better = score_ok ? score.mean > best_score_ : loss_ok ? dev_loss < best_dev_ : true;
  if (loss_ok) best_dev_ = std::min(best_dev_, dev_loss);
  if (score_ok && score.mean > best_score_) best_score_ = score.mean;
  if (better) {
    best_step_ = step_;
    save(run_ / "best");
    msg << " (best)";
  }
  if (!warning.empty()) msg << "\nwarning: step " << step_ << ": " << warning;
  bar_->message(msg.str());
  save(run_ / "last");
  last_saved_ = step_;
}

// The dev score and the spread of the predictions into the metrics line and the progress message;
// returns the warning for collapsed tasks ("" when none).
std::string Run::record_dev_score(const DevScore& score, json& line, std::ostringstream& msg) {
  line["dev_score"] = score.mean;
  line["dev_score_nan_tasks"] = score.nan_tasks;
  line["dev_task_scores"] = score.per_task;
  line["dev_top_share"] = score.mean_top_share;
  line["dev_task_spread"] = score.spread;
  line["collapsed_tasks"] = score.collapsed;
  msg << ", dev score " << score.mean << ", top answer share " << std::lround(100 * score.mean_top_share)
      << "% (mean over tasks)";
  if (score.collapsed.empty()) return "";
  std::ostringstream w;
  w << "predictions collapsed on " << score.collapsed.size() << " of " << dev_sets_.size() << " dev tasks:";
  size_t shown = 0;
  for (const auto& t : score.collapsed) {
    if (shown++ == 4) { w << " …"; break; }
    const json& sp = score.spread.at(t);
    w << " " << t << " (" << std::lround(100 * sp.at("top_share").get<double>()) << "%";
    if (sp.contains("top")) w << " '" << sp.at("top").get<std::string>() << "'";
    w << ", gold " << std::lround(100 * sp.at("gold_top_share").get<double>()) << "%)";
  }
  line["warnings"] = json::array({w.str()});
  return w.str();
}

json Run::health() const {
  metrics::HealthOptions ho;
  ho.plateau_tolerance = cfg_.train.plateau_tolerance;
  ho.final_step = total_;
  ho.by_loss = !by_score_;
  return metrics::assess_health(evals_, ho);
}

// {run}/health.json and the summary at the end of the log (docs/train.md, Training health).
void Run::finish_health() {
  if (!lead_) return;
  json h = health();
  h["step"] = step_;
  h["final"] = step_ >= total_;
  io::write_file_atomic(run_ / "health.json", h.dump(1) + "\n");
  *log_ << "health: " << h.at("verdict").get<std::string>() << (step_ < total_ ? " (so far: stopped before train.steps)" : "")
        << " (" << (run_ / "health.json").string() << ")\n";
  for (const auto& m : h.at("messages")) *log_ << "  " << m.get<std::string>() << "\n";
  result_.health = h;
}

void Run::save(const fs::path& dir) {
  if (!lead_) return;
  io::CheckpointData ck;
  ck.model = io::module_state(*m_);
  ck.optimizer = opt_->state_tensors();
  ck.optimizer.emplace_back("rng.cpu", at::detail::getDefaultCPUGenerator().get_state());
  ck.meta["step"] = step_;
  ck.meta["tasks"] = data_.task_names;
  ck.meta["tokenizer_fingerprint"] = data_.tokenizer_fingerprint;
  ck.meta["tokenizer_model"] = data_.tokenizer_model;
  ck.meta["config"] = to_yaml(cfg_);
  if (!hf_source_.is_null()) ck.meta["hf_source"] = hf_source_;
  ck.meta["health"] = health();  // as of this checkpoint's evaluation
  ck.meta["trainer"] = {{"step", step_},         {"epoch", batcher_->epoch()}, {"position", batcher_->position()},
                        {"best_dev_loss", best_dev_}, {"best_step", best_step_},
                        {"best_dev_score", std::isfinite(best_score_) ? json(best_score_) : json(nullptr)},
                        {"world_size", world_}};
  io::save_checkpoint(dir, ck);
}

}  // namespace

TrainResult train(const TrainOptions& opts) {
  TrainOptions o = opts;
  std::ostream quiet(nullptr);
  std::ostream& log = o.launch.rank > 0 ? quiet : o.log ? *o.log : std::cerr;
  const json hf_source = adopt_start_model(o.cfg, log);
  Run run(o, hf_source);
  return run.go();
}

}  // namespace tlmoe::train
