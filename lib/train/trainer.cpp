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

#include "common/error.h"
#include "io/atomic_file.h"
#include "kernels/device.h"
#include "model/tlmoe_model.h"
#include "train/batching.h"
#include "train/checkpoint.h"
#include "train/dist.h"
#include "train/evaluate.h"
#include "data/task_meta.h"
#include "train/loss.h"
#include "train/optim.h"
#include "train/progress.h"
#include "train/task_data.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace tlmoe::train {

namespace {

Batch to_device(Batch b, const torch::Device& d) {
  if (d.is_cpu()) return b;
  b.input_ids = b.input_ids.to(d);
  b.input_mask = b.input_mask.to(d);
  b.decoder_input_ids = b.decoder_input_ids.to(d);
  b.target_ids = b.target_ids.to(d);
  b.task_ids = b.task_ids.to(d);
  return b;
}

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

// Teacher-forced loss per target token over evaluation batches (no dropout, deterministic routes).
// With several ranks, rank r takes batches r, r + W, ... and the sums are all-reduced.
double eval_loss(model::TLMoEModel& m, const std::vector<Batch>& batches, const LossOptions& lo, double tau,
                 const torch::Device& dev, dist::Communicator& comm) {
  if (batches.empty()) return NAN;
  torch::NoGradGuard g;
  m->eval();
  double nll = 0;
  int64_t tokens = 0;
  for (size_t i = static_cast<size_t>(comm.rank()); i < batches.size(); i += static_cast<size_t>(comm.size())) {
    Batch b = to_device(batches[i], dev);
    model::RouteContext ctx;
    ctx.training = false;
    ctx.tau = tau;
    auto logits = m->forward(b.input_ids, b.input_mask, b.decoder_input_ids, m->routes(b.task_ids, ctx));
    LossOptions sum = lo;
    sum.reduction = "sum";
    auto r = label_smoothed_nll(logits, b.target_ids, sum);
    nll += r.loss.item<double>();
    tokens += r.tokens;
  }
  m->train();
  if (comm.size() > 1) {
    std::vector<torch::Tensor> sums = {torch::tensor({nll, static_cast<double>(tokens)}, torch::kDouble)};
    comm.all_reduce_sum(sums);
    nll = sums[0][0].item<double>();
    tokens = static_cast<int64_t>(std::llround(sums[0][1].item<double>()));
  }
  return tokens ? nll / static_cast<double>(tokens) : NAN;
}

// argmax over experts of [n,L,E] as nested lists [n][L].
std::vector<std::vector<int64_t>> hard_list(const torch::Tensor& w) {
  auto a = w.argmax(-1).cpu().contiguous();
  std::vector<std::vector<int64_t>> v(a.size(0));
  auto acc = a.accessor<int64_t, 2>();
  for (int64_t t = 0; t < a.size(0); ++t)
    for (int64_t l = 0; l < a.size(1); ++l) v[t].push_back(acc[t][l]);
  return v;
}

// Routes of every task at the current temperature and at tau = 1, as data (SPEC §7).
json routes_json(model::TLMoEModel& m, const std::vector<std::string>& tasks, double tau, int64_t step) {
  torch::NoGradGuard g;
  json j;
  j["step"] = step;
  j["tau"] = tau;
  j["tasks"] = tasks;
  j["layers"] = m->num_layers();
  j["encoder_layers"] = m->options().encoder_layers;
  j["experts"] = m->options().experts;
  auto ids = torch::arange(static_cast<int64_t>(tasks.size()), torch::kLong).to(m->final_logits_bias.device());
  auto to_list = [](const torch::Tensor& w /*[n,L,E]*/) {
    auto c = w.to(torch::kDouble).cpu().contiguous();
    std::vector<std::vector<std::vector<double>>> v(c.size(0));
    auto a = c.accessor<double, 3>();
    for (int64_t t = 0; t < c.size(0); ++t) {
      v[t].resize(c.size(1));
      for (int64_t l = 0; l < c.size(1); ++l)
        for (int64_t e = 0; e < c.size(2); ++e) v[t][l].push_back(a[t][l][e]);
    }
    return v;
  };
  if (m->has_router()) {
    auto logits = m->router_logits(ids).permute({1, 0, 2});  // [n,L,E]
    j["kind"] = "router";
    j["routes"] = to_list(torch::softmax(logits / tau, -1));
    j["routes_t1"] = to_list(torch::softmax(logits, -1));
    j["hard"] = hard_list(logits);
  } else {
    model::RouteContext ctx;
    ctx.gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(m->policy().seed));
    auto w = m->route_weights(ids, ctx).weights.permute({1, 0, 2});
    j["kind"] = m->policy().baseline;
    j["routes"] = to_list(w);
    j["hard"] = hard_list(w);
  }
  return j;
}

// The dev files the generation-based score decodes (SPEC §3.3, §11.9): per upstream task its
// {task}_full_dev.tsv (data.upstream_source = full) or its first k-shot split's dev file.
std::vector<EvalSet> upstream_dev_sets(const Config& cfg, const TaskData& data) {
  const json man = read_preprocess_manifest(cfg);
  const auto metrics = task_metrics(man.at("tasks_file").get<std::string>());
  const fs::path cache = cache_dir(cfg);
  std::vector<EvalSet> sets;
  for (const auto& task : data.upstream) {
    const int64_t id = std::lower_bound(data.task_names.begin(), data.task_names.end(), task) - data.task_names.begin();
    const json* pick = nullptr;
    for (const json& f : man.at("tasks").at(task).at("files")) {
      if (f.at("split") != "dev") continue;
      const bool full = f.at("kind") == "full";
      if (cfg.data.upstream_source == "full" ? full : !full) {
        if (!pick || (!full && f.value("prefix", "") < pick->value("prefix", ""))) pick = &f;
      }
    }
    if (!pick) continue;  // load_task_data already insists on train files; a task without dev is skipped
    auto it = metrics.find(task);
    if (it == metrics.end()) throw DataError(man.at("tasks_file").get<std::string>(), 0, "no metric for task '" + task + "'");
    sets.push_back(load_eval_set(cache, *pick, task, id, it->second, cfg.train.eval_max_examples));
  }
  return sets;
}

struct DevScore {
  double mean = NAN;
  int64_t nan_tasks = 0;
  json per_task = json::object();
};

// Mean over the dev tasks of their metric (NaN scores count as 0 and are counted). With several
// ranks, rank r decodes tasks r, r + W, ... and the per-task scores are all-reduced.
DevScore dev_score(model::TLMoEModel& m, const std::vector<EvalSet>& sets, const text::Tokenizer& tok,
                   const Config& cfg, const TaskData& data, double tau, const torch::Device& dev,
                   dist::Communicator& comm) {
  DevScore d;
  if (sets.empty()) return d;
  const auto g = generation_options(cfg, data.bos_id, data.eos_id, data.pad_id);
  const auto mo = metric_options(cfg);
  const RouteFn routes = model_routes(m, tau, static_cast<uint64_t>(cfg.train.seed));
  const int64_t n = static_cast<int64_t>(sets.size());
  auto scores = torch::zeros({2, n}, torch::kDouble);  // [0]: score (0 when NaN), [1]: 1 when finite
  for (int64_t i = comm.rank(); i < n; i += comm.size()) {
    auto preds = predict(*m, sets[i].examples, routes, tok, g, cfg.eval.batch_size, dev);
    auto sc = score_predictions(sets[i], preds, mo);
    if (std::isfinite(sc.score)) scores[0][i] = sc.score, scores[1][i] = 1.0;
  }
  if (comm.size() > 1) {
    std::vector<torch::Tensor> v = {scores};
    comm.all_reduce_sum(v);
  }
  double sum = 0;
  auto a = scores.accessor<double, 2>();
  for (int64_t i = 0; i < n; ++i) {
    const bool finite = a[1][i] > 0.5;
    if (finite) sum += a[0][i];
    else ++d.nan_tasks;
    d.per_task[sets[i].task] = finite ? json(a[0][i]) : json(nullptr);
  }
  m->train();
  d.mean = sum / static_cast<double>(sets.size());
  return d;
}

// Rows [begin, end) of a batch, trimmed to their own longest input and target.
Batch shard_batch(const Batch& b, int64_t begin, int64_t end, int64_t pad) {
  const int64_t n = end - begin;
  Batch s;
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
  return splitmix64(s);
}

}  // namespace

TrainResult train(const TrainOptions& opts) {
  std::ostream& user_log = opts.log ? *opts.log : std::cerr;
  const Config& cfg = opts.cfg;
  validate(cfg);  // library callers get the same cross-field checks as the CLI
  if (opts.run_dir.empty()) throw UsageError("train: a run directory is required (--run-dir)");
  const fs::path run(opts.run_dir);
  if (!opts.resume && fs::exists(run / "last"))
    throw UsageError("run directory " + run.string() + " already holds a run; use --resume to continue it or another --run-dir");
  if (opts.resume && !fs::exists(run / "last"))
    throw UsageError("--resume: no checkpoint at " + (run / "last").string());
  fs::create_directories(run);

  // ---- processes ------------------------------------------------------------------------------
  // Every rank has passed the run-directory checks above before the rendezvous lets rank 0 on.
  torch::Device dev = pick_device(cfg.device);
  if (opts.launch.distributed() && dev.is_cuda())
    dev = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(opts.launch.local_rank % torch::cuda::device_count()));
  const auto comm = dist::connect(opts.launch, cfg.dist, dev);
  const int64_t rank = comm->rank(), world = comm->size();
  const bool lead = rank == 0;  // writes config, metrics, routes and checkpoints
  std::ostream quiet(nullptr);  // the other ranks stay silent (their errors still reach the caller)
  std::ostream& log = lead ? user_log : quiet;
  if (world > 1)
    log << "distributed: " << world << " processes (" << comm->backend() << ", " << opts.launch.launcher
        << "), global batch " << cfg.train.batch_size << " split over the ranks; rank 0 writes " << run.string() << "\n";

  // ---- data ---------------------------------------------------------------------------------
  if (!lead) comm->barrier();  // rank 0 preprocesses (writes the cache) alone, the others then read it
  TaskData data = load_task_data(cfg, log);
  if (lead) comm->barrier();
  const int64_t pad = data.pad_id;
  const int64_t start_id = cfg.model.decoder_start == "eos" ? data.eos_id : data.bos_id;

  // ---- model --------------------------------------------------------------------------------
  torch::manual_seed(static_cast<uint64_t>(cfg.train.seed));
  model::TLMoEModel m(model::model_options(cfg, data.vocab_size, pad), model::router_options(cfg),
                      model::routing_policy(cfg), static_cast<int64_t>(data.task_names.size()));
  initialise_model(*m, cfg, data);
  m->to(dev);
  m->train();
  const bool bf16 = kernels::use_bf16_autocast(cfg.train.precision, dev);
  log << "device " << dev.str() << (bf16 ? ", bf16 autocast" : ", fp32") << "\n";

  // ---- optimisation ---------------------------------------------------------------------------
  GroupSpec gs;
  gs.lr = cfg.train.lr;
  gs.router_lr = cfg.train.router_lr;
  gs.task_lr = cfg.train.task_lr;
  gs.weight_decay = cfg.train.weight_decay;
  gs.freeze_task_table = cfg.task_rep.freeze;
  gs.reference_compat = cfg.reference_compat;
  const AdamWOptions ao = adamw_options(cfg);
  AdamW opt(build_param_groups(*m, gs), ao);
  auto clip = clip_params(opt.groups(), *m, cfg.reference_compat);
  const int64_t total = cfg.train.steps;
  const int64_t warmup = warmup_steps(cfg.train.warmup_ratio, total);
  const LossOptions lo = loss_options(cfg, pad);

  BatchingOptions bo;
  bo.batch_size = cfg.train.batch_size;
  bo.seed = static_cast<uint64_t>(cfg.train.seed);
  bo.length_bucketing = cfg.train.length_bucketing;
  bo.task_sampling = cfg.train.task_sampling;
  bo.sampling_temperature = cfg.train.sampling_temperature;
  bo.pad_id = pad;
  bo.decoder_start_id = start_id;
  MultiTaskBatcher batcher(data.train, bo);
  const auto dev_batches = eval_batches(data.dev, cfg.eval.batch_size, pad, start_id);
  const bool by_score = cfg.train.select_by == "score";
  std::vector<EvalSet> dev_sets;
  std::unique_ptr<text::Tokenizer> tok;
  if (by_score) {
    dev_sets = upstream_dev_sets(cfg, data);
    tok = load_tokenizer(cfg);
    int64_t n = 0;
    for (const auto& s : dev_sets) n += static_cast<int64_t>(s.examples.size());
    log << "dev score: " << dev_sets.size() << " tasks, " << n << " examples decoded per evaluation\n";
  }

  // ---- state (fresh or resumed) ------------------------------------------------------------------
  int64_t step = 0;
  double best_dev = INFINITY;
  double best_score = -INFINITY;
  int64_t best_step = 0;
  if (opts.resume) {
    auto ck = load_checkpoint(run / "last");
    load_into(*m, ck.model, (run / "last/model.safetensors").string());
    if (ck.meta.value("tasks", std::vector<std::string>{}) != data.task_names)
      throw DataError((run / "last/meta.json").string(), 0, "the checkpoint was trained on another task list");
    if (ck.meta.value("tokenizer_fingerprint", "") != data.tokenizer_fingerprint)
      throw DataError((run / "last/meta.json").string(), 0,
                      "the checkpoint was trained with another tokenizer (fingerprint differs)");
    opt.load_state_tensors(ck.optimizer);
    const json& t = ck.meta.at("trainer");
    step = t.at("step").get<int64_t>();
    best_dev = t.value("best_dev_loss", INFINITY);
    best_score = t.contains("best_dev_score") && t["best_dev_score"].is_number() ? t["best_dev_score"].get<double>() : -INFINITY;
    best_step = t.value("best_step", 0);
    batcher.seek(t.at("epoch").get<int64_t>(), t.at("position").get<int64_t>());
    auto it = ck.optimizer.find("rng.cpu");
    if (it == ck.optimizer.end()) throw DataError((run / "last").string(), 0, "checkpoint has no RNG state");
    at::Generator cpu_gen = at::detail::getDefaultCPUGenerator();
    cpu_gen.set_state(it->second);
    log << "resuming " << run.string() << " at step " << step << "\n";
  } else if (lead) {
    io::write_file_atomic(run / "config.resolved.yaml", to_yaml(cfg));
  }
  std::vector<torch::Tensor> trainable;  // the gradients all-reduced every step (a tied tensor once)
  std::set<const void*> seen;
  for (const auto& p : m->parameters())
    if (p.requires_grad() && seen.insert(p.unsafeGetTensorImpl()).second) trainable.push_back(p);
  std::unique_ptr<dist::GradReducer> reducer;
  if (world > 1) {  // identical start: rank 0's parameters and buffers everywhere
    std::vector<torch::Tensor> state;
    for (auto& [name, t] : module_state(*m)) state.push_back(t);
    comm->broadcast(state);
    reducer = std::make_unique<dist::GradReducer>(
        trainable, *comm, static_cast<int64_t>(cfg.dist.bucket_mb * static_cast<double>(1 << 20)));
  }
  std::optional<MetricsLog> metrics;
  if (lead) metrics.emplace(run / "metrics.jsonl");
  at::Generator rng = at::globalContext().defaultGenerator(dev);  // dropout and gumbel noise

  auto save = [&](const fs::path& dir) {
    if (!lead) return;
    CheckpointData ck;
    ck.model = module_state(*m);
    ck.optimizer = opt.state_tensors();
    ck.optimizer.emplace_back("rng.cpu", at::detail::getDefaultCPUGenerator().get_state());
    ck.meta["step"] = step;
    ck.meta["tasks"] = data.task_names;
    ck.meta["tokenizer_fingerprint"] = data.tokenizer_fingerprint;
    ck.meta["tokenizer_model"] = data.tokenizer_model;
    ck.meta["config"] = to_yaml(cfg);
    ck.meta["trainer"] = {{"step", step},         {"epoch", batcher.epoch()}, {"position", batcher.position()},
                          {"best_dev_loss", best_dev}, {"best_step", best_step},
                          {"best_dev_score", std::isfinite(best_score) ? json(best_score) : json(nullptr)},
                          {"world_size", world}};
    save_checkpoint(dir, ck);
  };

  auto tau_at = [&](int64_t s) {
    return model::temperature_at(s, cfg.routing.tau0, cfg.routing.tau_min, cfg.routing.anneal_rate);
  };

  TrainResult result;
  Progress bar(log, "train", step, total, cfg.train.log_every, opts.plain_progress);
  const int64_t stop_at = opts.stop_after > 0 ? std::min(total, step + opts.stop_after) : total;
  auto t_last = std::chrono::steady_clock::now();
  int64_t last_saved = -1;
  int64_t tokens_since = 0;
  if (lead) fs::create_directories(run / "routes");

  while (step < stop_at) {
    const double tau = tau_at(step);
    double step_loss = 0;
    int64_t step_tokens = 0;
    torch::Tensor last_weights;
    int64_t step_io_tokens = 0;  // input + target tokens of this step (throughput)
    double nonfinite = 0;        // micro-batches whose loss was not finite (several ranks)
    for (int64_t micro = 0; micro < cfg.train.grad_accum; ++micro) {
      // the last backward of the step: gradient buckets start their all-reduce as they complete
      if (reducer && cfg.dist.overlap && micro == cfg.train.grad_accum - 1) reducer->arm();
      Batch b = to_device(batcher.next(), dev);
      model::RouteContext ctx;
      ctx.training = true;
      ctx.tau = tau;
      // Routes of the whole (global) batch: every rank draws the same noise, as one process would.
      auto routes = m->routes(b.task_ids, ctx);
      if (!routes.empty()) {
        std::vector<torch::Tensor> w;
        for (auto& lr : routes) w.push_back(lr.weights.detach());
        last_weights = torch::stack(w);  // [L,B,E]
      }
      if (world == 1) {
        torch::Tensor logits;
        {
          kernels::AutocastGuard amp(bf16, dev);
          logits = m->forward(b.input_ids, b.input_mask, b.decoder_input_ids, routes);
        }
        auto r = label_smoothed_nll(logits, b.target_ids, lo);  // in fp32 whatever the logits' dtype
        torch::Tensor loss = r.loss;
        if (cfg.train.loss_reduction == "mean") loss = loss / static_cast<double>(cfg.train.grad_accum);
        if (cfg.model.expert_reg > 0 && m->routed_layers() > 0) loss = loss + cfg.model.expert_reg * m->expert_difference();
        const double value = r.loss.item<double>();
        if (!std::isfinite(value)) {
          bar.finish();
          throw std::runtime_error("non-finite loss at step " + std::to_string(step + 1) +
                                   "; training stopped. The last good checkpoint is " + (run / "last").string() +
                                   (fs::exists(run / "last") ? "" : " (none written yet)"));
        }
        loss.backward();
        step_loss += cfg.train.loss_reduction == "mean" ? value * static_cast<double>(r.tokens) : value;
        step_tokens += r.tokens;
        step_io_tokens += b.target_tokens + b.input_mask.sum().item<int64_t>();
        continue;
      }
      // Several ranks: this rank's rows of the global batch. The loss is the rows' share of the
      // one-process loss (sum: their sum; mean: their sum over the global batch's target
      // tokens), so the all-reduced gradient is the one-process gradient.
      const auto [begin, end] = dist::shard_rows(b.task_ids.size(0), rank, world);
      torch::Tensor loss;
      if (end > begin) {
        const Batch sb = shard_batch(b, begin, end, pad);
        const int64_t global_tokens = b.target_ids.ne(pad).sum().item<int64_t>();
        // dropout draws from a stream of this rank's own; the shared stream (routes) resumes after
        const torch::Tensor shared_rng = rng.get_state();
        rng.set_current_seed(rank_dropout_seed(static_cast<uint64_t>(cfg.train.seed), rank, step, micro));
        torch::Tensor logits;
        {
          kernels::AutocastGuard amp(bf16, dev);
          logits = m->forward(sb.input_ids, sb.input_mask, sb.decoder_input_ids, shard_routes(routes, begin, end));
        }
        LossOptions sum_lo = lo;
        sum_lo.reduction = "sum";
        auto r = label_smoothed_nll(logits, sb.target_ids, sum_lo);
        loss = r.loss;
        if (cfg.train.loss_reduction == "mean")
          loss = loss / static_cast<double>(std::max<int64_t>(1, global_tokens) * cfg.train.grad_accum);
        const double value = r.loss.item<double>();
        if (!std::isfinite(value)) nonfinite += 1;
        step_loss += value;
        step_tokens += r.tokens;
        step_io_tokens += sb.target_tokens + sb.input_mask.sum().item<int64_t>();
        if (cfg.model.expert_reg > 0 && m->routed_layers() > 0)
          loss = loss + (cfg.model.expert_reg / static_cast<double>(world)) * m->expert_difference();
        if (std::isfinite(value)) loss.backward();
        rng.set_state(shared_rng);
      } else if (cfg.model.expert_reg > 0 && m->routed_layers() > 0) {
        loss = (cfg.model.expert_reg / static_cast<double>(world)) * m->expert_difference();
        loss.backward();
      }
    }
    if (world > 1) {
      // The gradients first (their buckets may have started during backward: every rank issues
      // its collectives in the same order), then one all-reduce for the step's statistics; every
      // rank then takes the same decisions.
      reducer->finish();
      std::vector<torch::Tensor> stats = {torch::tensor(
          {step_loss, static_cast<double>(step_tokens), static_cast<double>(step_io_tokens), nonfinite}, torch::kDouble)};
      comm->all_reduce_sum(stats);
      auto a = stats[0].accessor<double, 1>();
      step_loss = a[0];
      step_tokens = static_cast<int64_t>(std::llround(a[1]));
      step_io_tokens = static_cast<int64_t>(std::llround(a[2]));
      if (a[3] > 0) {
        bar.finish();
        throw std::runtime_error("non-finite loss at step " + std::to_string(step + 1) + " (on " +
                                 std::to_string(static_cast<int64_t>(a[3])) +
                                 " rank micro-batches); training stopped. The last good checkpoint is " +
                                 (run / "last").string() + (fs::exists(run / "last") ? "" : " (none written yet)"));
      }
    }
    tokens_since += step_io_tokens;
    const double grad_norm = clip_grad_norm(clip, cfg.train.clip_norm);
    if (!std::isfinite(grad_norm)) {
      bar.finish();
      throw std::runtime_error("non-finite gradient norm at step " + std::to_string(step + 1) +
                               "; training stopped. The last good checkpoint is " + (run / "last").string());
    }
    const double mult = linear_warmup_decay(step, warmup, total);
    opt.step(mult);
    opt.zero_grad();
    ++step;
    const double per_token = step_tokens ? step_loss / static_cast<double>(step_tokens) : 0.0;
    result.step_losses.push_back(per_token);

    const auto now = std::chrono::steady_clock::now();
    const double dt = std::chrono::duration<double>(now - t_last).count();
    const double tps = dt > 0 ? static_cast<double>(tokens_since) / dt : 0.0;
    char tau_s[32];
    std::snprintf(tau_s, sizeof tau_s, "%.3g", tau_at(step));
    bar.update(step, per_token, tps, {{"τ", tau_s}});
    if (step % cfg.train.log_every == 0 || step == stop_at) {
      json line = {{"step", step}, {"loss", per_token}, {"tokens_per_s", tps}, {"tau", tau_at(step)},
                   {"grad_norm", grad_norm}, {"lr_multiplier", mult}};
      json lrs;
      for (const auto& g : opt.groups()) lrs[g.name] = g.lr * mult;
      line["lr"] = lrs;
      const auto mem = kernels::peak_memory(dev);
      line["peak_memory_bytes"] = mem.peak_bytes;
      line["peak_memory_kind"] = mem.kind;
      kernels::reset_peak_memory(dev);
      if (last_weights.defined()) {
        auto ent = model::route_entropy(last_weights).to(torch::kCPU, torch::kDouble).contiguous();
        line["route_entropy"] = std::vector<double>(ent.data_ptr<double>(), ent.data_ptr<double>() + ent.numel());
      }
      if (world > 1) {
        line["world_size"] = world;
        // rank 0's gradient buckets, and how many of them started their all-reduce during backward
        line["grad_buckets"] = reducer->buckets();
        line["grad_buckets_overlapped"] = reducer->started_during_backward();
      }
      if (lead) metrics->write(line);
      t_last = now;
      tokens_since = 0;
    }

    const bool eval_now = (cfg.train.eval_every > 0 && step % cfg.train.eval_every == 0 && step >= cfg.train.eval_from) ||
                          step == total;
    if (eval_now) {
      const double dev_loss = eval_loss(m, dev_batches, lo, tau_at(step), dev, *comm);
      json line = {{"step", step}, {"dev_loss", dev_loss}};
      DevScore score;
      if (by_score) {
        const auto t_score = std::chrono::steady_clock::now();
        score = dev_score(m, dev_sets, *tok, cfg, data, tau_at(step), dev, *comm);
        line["dev_score"] = score.mean;
        line["dev_score_seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_score).count();
        line["dev_score_nan_tasks"] = score.nan_tasks;
        line["dev_task_scores"] = score.per_task;
      }
      if (lead) metrics->write(line);
      if (lead && m->options().experts > 1) {
        char name[32];
        std::snprintf(name, sizeof name, "step_%07lld.json", static_cast<long long>(step));
        io::write_file_atomic(run / "routes" / name, routes_json(m, data.task_names, tau_at(step), step).dump() + "\n");
      }
      std::ostringstream msg;
      msg << "step " << step << ": dev loss " << dev_loss;
      if (by_score) msg << ", dev score " << score.mean;
      const bool better = by_score ? score.mean > best_score : dev_loss < best_dev;
      best_dev = std::min(best_dev, dev_loss);
      if (by_score && score.mean > best_score) best_score = score.mean;
      if (better) {
        best_step = step;
        save(run / "best");
        msg << " (best)";
      }
      bar.message(msg.str());
      save(run / "last");
      last_saved = step;
    }
    if (cfg.train.save_every > 0 && step % cfg.train.save_every == 0) save(run / ("step_" + std::to_string(step)));
  }
  bar.finish();
  if (last_saved != step) save(run / "last");  // the state to resume from (also after stop_after)
  result.step = step;
  result.best_dev_loss = best_dev;
  result.best_dev_score = best_score;
  result.best_step = best_step;
  result.stopped_early = step < total;
  return result;
}

}  // namespace tlmoe::train
