// Running the grid: points claimed one at a time, each fine-tuned from the task's starting
// state, selected on dev, then decoded on test.
#include <algorithm>
#include <chrono>
#include <cmath>

#include "adapt/sweep.h"
#include "common/error.h"
#include "data/batching.h"
#include "kernels/device.h"
#include "tensorboard/event_file.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace tlmoe::adapt::detail {

// Grid points are claimed one at a time from a counter in the rendezvous store (a plain counter
// in a world of one), so fast ranks take more; every rank appends what it finishes to its own
// progress file, and rank 0 merges the others' (distributed.cpp).
void Sweep::run_points() {
  my_progress_ = lead_ ? progress_file_ : out_ / ("progress.rank" + std::to_string(rank_) + ".jsonl");
  if (world_ > 1) heartbeat_ = std::make_unique<Heartbeat>(*comm_, ns_ + "alive/" + std::to_string(rank_));
  merged_.assign(todo_.size(), 0);
  start_state_ = snapshot(*st_.model, false);
  work_ = st_.model;
  while (!(opts_.stop_after_points > 0 && run_now_ >= opts_.stop_after_points)) {
    const int64_t t = comm_->store_add(ns_ + "claimed", 1) - 1;
    if (t >= static_cast<int64_t>(todo_.size())) break;
    const Point& pt = todo_[t];
    if (pt.task != cur_task_) enter_task(pt.task);
    if (pt.split != cur_split_) enter_split(pt);
    const json line = run_point(pt);
    append_line(my_progress_, line);
    if (lead_) {
      merged_[t] = 1;
      done_[pt.key] = line;
      write_outputs();
      if (world_ > 1) merge_published();
    } else {
      comm_->store_set(ns_ + "point/" + std::to_string(t), line.dump());
    }
    ++run_now_;
  }
}

// The task's working model (the start model, or its squeezed dense copy) and its initial state.
void Sweep::enter_task(size_t task) {
  const TaskPlan& p = plans_[task];
  cur_task_ = task;
  cur_split_ = SIZE_MAX;
  work_ = st_.model;
  if (squeeze_) {
    work_ = squeeze_to_dense(st_.model, route_info_[p.name]["hard"].get<std::vector<int64_t>>(), st_.mcfg);
    work_->to(dev_);
  }
  initial_ = work_.ptr() == st_.model.ptr() ? start_state_ : snapshot(*work_, false);
  if (dynamic_) {
    torch::NoGradGuard ng;
    std::vector<int64_t> up;
    for (const auto& tn : splits_.train) {
      auto it = std::find(st_.tasks.begin(), st_.tasks.end(), tn);
      if (it != st_.tasks.end()) up.push_back(it - st_.tasks.begin());
    }
    new_row_ = up.empty() ? torch::zeros_like(st_.model->task_table->weight[0])
                          : st_.model->task_table->weight.index_select(0, torch::tensor(up, torch::kLong).to(dev_)).mean(0);
  }
}

void Sweep::enter_split(const Point& pt) {
  const TaskPlan& p = plans_[pt.task];
  const SplitFiles& s = p.splits[pt.split];
  cur_split_ = pt.split;
  const int64_t tid = std::max<int64_t>(p.id, 0);
  const int64_t V = man_.at("tokenizer").at("vocab_size").get<int64_t>();
  train_set_ = evaluate::load_eval_set(cache_, *s.train, p.name, tid, p.metric, V);
  dev_set_ = evaluate::load_eval_set(cache_, *s.dev, p.name, tid, p.metric, V);
  test_set_ = evaluate::load_eval_set(cache_, *s.test, p.name, tid, p.metric, V);
  if (train_set_.examples.empty()) throw DataError(s.train->at("source").get<std::string>(), 0, "no examples");
}

// The grid point's TensorBoard run, {out}/tensorboard/{task}/split{seed}_lr{lr}_bs{batch size}/
// (adapt.tensorboard), emptied first: a point interrupted earlier is run again from its start.
std::unique_ptr<tensorboard::EventWriter> Sweep::point_board(const Point& pt) const {
  if (!cfg_.adapt.tensorboard) return nullptr;
  const TaskPlan& p = plans_[pt.task];
  const fs::path dir = out_ / "tensorboard" / p.name /
                       ("split" + std::to_string(p.splits[pt.split].seed) + "_lr" + fmt(pt.lr, "%g") + "_bs" +
                        std::to_string(pt.bsz));
  fs::remove_all(dir);
  return std::make_unique<tensorboard::EventWriter>(dir);
}

// One grid point: fine-tune from the task's initial state, keep the state of the best dev score
// (strictly better; ties keep the earlier), decode test with it. Returns its progress line.
json Sweep::run_point(const Point& pt) {
  const TaskPlan& p = plans_[pt.task];
  const SplitFiles& s = p.splits[pt.split];
  const double lr = pt.lr;
  const int64_t bsz = pt.bsz;
  const std::vector<model::LayerRoute> no_route;  // squeezed models run dense: no route
  const auto& fixed = squeeze_ ? no_route : task_route_[pt.task];
  evaluate::RouteFn fixed_routes = [&fixed](const torch::Tensor& ids) { return expand(fixed, ids.size(0)); };

  const auto t0 = std::chrono::steady_clock::now();
  torch::manual_seed(point_seed(cfg_.adapt.seed, p.name, s.prefix, lr, bsz));
  restore(*work_, initial_);
  for (auto& prm : work_->parameters()) prm.set_requires_grad(true);
  for (auto& np : work_->named_parameters(true))
    if (np.key().rfind("router.", 0) == 0) np.value().set_requires_grad(false);
  if (dynamic_) {
    torch::NoGradGuard ng;
    work_->task_table->weight[p.id].copy_(new_row_);
  }
  train::GroupSpec gs;
  gs.lr = lr;
  gs.router_lr = 0;
  gs.task_lr = dynamic_ ? cfg_.train.task_lr : 0;
  gs.weight_decay = cfg_.train.weight_decay;
  gs.freeze_task_table = !dynamic_;
  gs.reference_compat = cfg_.reference_compat;
  train::AdamW opt(train::build_param_groups(*work_, gs), ao_);
  auto clip = train::clip_params(opt.groups(), *work_, cfg_.reference_compat);
  data::BatchingOptions bo;
  bo.batch_size = bsz;
  bo.seed = point_seed(cfg_.adapt.seed, p.name, s.prefix, lr, bsz);
  bo.length_bucketing = false;
  bo.pad_id = pad_;
  bo.decoder_start_id = start_id_;
  data::MultiTaskBatcher batcher(train_set_.examples, bo);
  const evaluate::RouteFn eval_routes = dynamic_ ? evaluate::model_routes(work_, st_.tau, bo.seed) : fixed_routes;

  double best_dev = -INFINITY;
  int64_t best_step = 0, diverged_at = 0;
  State best;
  json curve = json::array();
  std::unique_ptr<tensorboard::EventWriter> board = point_board(pt);
  work_->train();
  auto tl = std::chrono::steady_clock::now();
  for (int64_t step = 1; step <= cfg_.adapt.steps; ++step) {
    data::Batch b = batcher.next();
    b.input_ids = b.input_ids.to(dev_);
    b.input_mask = b.input_mask.to(dev_);
    b.decoder_input_ids = b.decoder_input_ids.to(dev_);
    b.target_ids = b.target_ids.to(dev_);
    b.task_ids = b.task_ids.to(dev_);
    std::vector<model::LayerRoute> routes;
    if (dynamic_) {
      model::RouteContext ctx;
      ctx.training = true;
      ctx.tau = st_.tau;
      routes = work_->routes(b.task_ids, ctx);
    } else {
      routes = expand(fixed, b.input_ids.size(0));
    }
    torch::Tensor logits;
    {
      kernels::AutocastGuard amp(bf16_, dev_);
      logits = work_->forward(b.input_ids, b.input_mask, b.decoder_input_ids, routes);
    }
    auto r = train::label_smoothed_nll(logits, b.target_ids, lo_);  // fp32
    const double loss = r.loss.item<double>();
    if (!std::isfinite(loss)) {  // this point diverged: it keeps what it had, the sweep goes on
      diverged_at = step;
      *log_ << "warning: adapt: non-finite loss for " << p.name << " " << s.prefix << " lr " << fmt(lr, "%g") << " bsz "
            << bsz << " at step " << step << ": this grid point stops here "
            << (best.empty() ? "without a dev score" : "with its best dev score so far") << " (\"diverged_at\" in progress.jsonl)\n";
      break;
    }
    r.loss.backward();
    train::clip_grad_norm(clip, cfg_.train.clip_norm);
    const double mult = train::linear_warmup_decay(step - 1, cfg_.adapt.warmup_steps, cfg_.adapt.steps);
    opt.step(mult);
    opt.zero_grad();
    ++steps_done_;
    const auto now = std::chrono::steady_clock::now();
    const double dt = std::chrono::duration<double>(now - tl).count();
    tl = now;
    const double per_token = r.tokens ? loss / (lo_.reduction == "sum" ? static_cast<double>(r.tokens) : 1.0) : 0.0;
    if (board) board->scalars(step, {{"adapt/loss", per_token}, {"adapt/lr", lr * mult}});
    bar_->update(steps_done_, per_token,
                 dt > 0 ? static_cast<double>(b.target_tokens) / dt : 0.0,
                 {{"task", p.name}, {"split", std::to_string(s.seed)}, {"lr", fmt(lr, "%g")}, {"bsz", std::to_string(bsz)}});
    if (step % cfg_.adapt.eval_every == 0 || step == cfg_.adapt.steps) {
      auto preds = evaluate::predict(*work_, dev_set_.examples, eval_routes, *tok_, gen_, cfg_.eval.batch_size, dev_);
      const double sc = evaluate::score_predictions(dev_set_, preds, mo_).score;
      curve.push_back({{"step", step}, {"dev", num(sc)}});
      if (board) board->scalars(step, {{"adapt/dev_score", sc}});
      if (sc > best_dev) {
        best_dev = sc;
        best_step = step;
        best = snapshot(*work_, true);
      }
      work_->train();
    }
  }
  if (!best.empty()) restore(*work_, best);
  evaluate::TaskScore ts;
  ts.score = NAN;
  if (!diverged_at || !best.empty()) {
    auto preds = evaluate::predict(*work_, test_set_.examples, eval_routes, *tok_, gen_, cfg_.eval.batch_size, dev_);
    ts = evaluate::score_predictions(test_set_, preds, mo_);
  }
  if (board) board->scalars(best_step, {{"adapt/test_score", ts.score}, {"adapt/best_dev_score", best_dev}});
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return {{"task", p.name},   {"split", s.prefix},  {"seed", s.seed},         {"lr", lr},
          {"batch_size", bsz}, {"best_step", best_step}, {"dev", num(best_dev)}, {"test", num(ts.score)},
          {"test_unparsable", ts.unparsable}, {"dev_curve", curve}, {"seconds", secs}, {"rank", rank_},
          {"diverged_at", diverged_at ? json(diverged_at) : json(nullptr)}};
}

}  // namespace tlmoe::adapt::detail
