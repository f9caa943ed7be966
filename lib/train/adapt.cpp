#include "train/adapt.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>

#include "common/error.h"
#include "common/strings.h"
#include "data/layout.h"
#include "data/preprocess.h"
#include "data/task_meta.h"
#include "io/atomic_file.h"
#include "kernels/device.h"
#include "model/tlmoe_model.h"
#include "train/batching.h"
#include "train/checkpoint.h"
#include "train/evaluate.h"
#include "train/loss.h"
#include "train/optim.h"
#include "train/progress.h"
#include "train/task_data.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace tlmoe::train {

namespace {

using State = std::vector<std::pair<std::string, torch::Tensor>>;

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
  const json* train = nullptr;
  const json* dev = nullptr;
  const json* test = nullptr;
};

struct TaskPlan {
  std::string name, metric;
  int64_t id = 0;  // row in the start model's task table (-1: none)
  std::vector<SplitFiles> splits;
};

// A fixed route for a batch of B rows from a route of one row.
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

std::string fmt(double v, const char* f = "%.6f") {
  if (!std::isfinite(v)) return "nan";
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

json num(double v) { return std::isfinite(v) ? json(v) : json(nullptr); }
double from_num(const json& j) { return j.is_number() ? j.get<double>() : NAN; }

std::string closest(const std::string& name, const std::vector<std::string>& all) {
  std::string best;
  size_t bd = SIZE_MAX;
  for (const auto& c : all) {
    const size_t d = edit_distance(name, c);
    if (d < bd) bd = d, best = c;
  }
  return bd <= std::max<size_t>(2, name.size() / 3) ? best : "";
}

// Population std (numpy's default) of the finite values; NaN when none.
double stdev(const std::vector<double>& v, double mean) {
  if (v.empty() || !std::isfinite(mean)) return NAN;
  double s = 0;
  for (double x : v) s += (x - mean) * (x - mean);
  return std::sqrt(s / static_cast<double>(v.size()));
}

// Publishes a counter under `key` in the rendezvous store every second from a thread of its own,
// so that a rank busy fine-tuning still shows it is alive to rank 0.
class Heartbeat {
 public:
  Heartbeat(dist::Communicator& comm, std::string key) {
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
  ~Heartbeat() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace

model::TLMoEModel squeeze_to_dense(model::TLMoEModel& src, const std::vector<int64_t>& expert_of_layer,
                                   const Config& mcfg) {
  Config dcfg = mcfg;
  dcfg.model.experts = 1;
  const auto& so = src->options();
  model::TLMoEModel dense(model::model_options(dcfg, so.vocab_size, so.pad_id), model::router_options(dcfg),
                          model::routing_policy(dcfg), src->num_tasks());
  auto from = src->named_parameters(true);
  auto from_b = src->named_buffers(true);
  torch::NoGradGuard g;
  auto source_name = [&](const std::string& name) {
    // model.{encoder,decoder}.layers.{i}.X  ->  model.{...}.layers.{i}.experts.{e}.X when layer i is routed
    for (const char* stack : {"model.encoder.layers.", "model.decoder.layers."}) {
      const std::string pre = stack;
      if (name.rfind(pre, 0) != 0) continue;
      const size_t dot = name.find('.', pre.size());
      const int64_t i = std::stoll(name.substr(pre.size(), dot - pre.size()));
      const bool dec = pre[6] == 'd';
      const bool routed = dec ? src->model->decoder->is_routed(i) : src->model->encoder->is_routed(i);
      if (!routed) return name;
      const int64_t l = dec ? so.encoder_layers + i : i;
      return pre + std::to_string(i) + ".experts." + std::to_string(expert_of_layer[l]) + name.substr(dot);
    }
    return name;
  };
  for (auto& p : dense->named_parameters(true)) {
    if (p.key().rfind("model.", 0) != 0) continue;
    const auto* s = from.find(source_name(p.key()));
    if (!s) throw std::logic_error("squeeze: no source tensor for " + p.key());
    p.value().copy_(*s);
  }
  for (auto& b : dense->named_buffers(true))
    if (const auto* s = from_b.find(b.key())) b.value().copy_(*s);
  dense->to(src->final_logits_bias.device());
  return dense;
}

AdaptResult adapt(const AdaptOptions& opts) {
  std::ostream& user_log = opts.log ? *opts.log : std::cerr;
  const Config& cfg = opts.cfg;
  validate(cfg);
  if (opts.out_dir.empty()) throw UsageError("adapt: an output directory is required (--out)");
  const fs::path out(opts.out_dir);

  // ---- processes -----------------------------------------------------------------------------
  torch::Device dev = pick_device(cfg.device);
  if (opts.launch.distributed() && dev.is_cuda())
    dev = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(opts.launch.local_rank % torch::cuda::device_count()));
  const auto comm = dist::connect(opts.launch, cfg.dist, dev);
  const int64_t rank = comm->rank(), world = comm->size();
  const bool lead = rank == 0;  // writes sweep.json, progress.jsonl, results.csv, summary.json
  std::ostream silent(nullptr);
  std::ostream& log = lead ? user_log : silent;

  // ---- data ----------------------------------------------------------------------------------
  std::ostringstream quiet;
  if (!lead) comm->barrier();  // rank 0 preprocesses (writes the cache) alone, the others then read it
  data::preprocess(cfg, quiet);
  if (lead) comm->barrier();
  const json man = read_preprocess_manifest(cfg);
  const std::string manifest_path = (fs::path(cache_dir(cfg)) / "manifest.json").string();
  const fs::path cache = cache_dir(cfg);
  const auto metrics = task_metrics(man.at("tasks_file").get<std::string>());
  const data::TaskSplits splits = data::load_splits(man.at("splits").get<std::string>());
  const json& tok_info = man.at("tokenizer");
  const int64_t pad = tok_info.at("pad_id"), bos = tok_info.at("bos_id"), eos = tok_info.at("eos_id");
  auto tok = load_tokenizer(cfg);

  // ---- the starting model --------------------------------------------------------------------
  Start st;
  const bool bf16 = kernels::use_bf16_autocast(cfg.train.precision, dev);
  if (!opts.checkpoint.empty()) {
    LoadedModel lm = load_model(opts.checkpoint);
    if (lm.tokenizer_fingerprint != tok_info.at("fingerprint").get<std::string>())
      throw DataError((fs::path(opts.checkpoint) / "meta.json").string(), 0,
                      "the checkpoint was trained with another tokenizer than " + manifest_path + " records");
    st.kind = lm.cfg.model.experts > 1 ? "tlmoe" : "vanilla";
    st.mcfg = lm.cfg;
    st.model = lm.model;
    st.tasks = lm.tasks;
    st.tau = lm.tau;
    st.step = lm.step;
  } else {
    st.kind = "scratch";
    st.mcfg = cfg;
    TaskData td;
    for (auto it = man.at("tasks").begin(); it != man.at("tasks").end(); ++it) td.task_names.push_back(it.key());
    std::sort(td.task_names.begin(), td.task_names.end());
    td.tokenizer_fingerprint = tok_info.at("fingerprint").get<std::string>();
    torch::manual_seed(static_cast<uint64_t>(cfg.adapt.seed));
    st.model = model::TLMoEModel(model::model_options(cfg, tok_info.at("vocab_size").get<int64_t>(), pad),
                                 model::router_options(cfg), model::routing_policy(cfg),
                                 static_cast<int64_t>(td.task_names.size()));
    initialise_model(*st.model, cfg, td);
    st.tasks = td.task_names;
  }
  st.model->to(dev);
  const bool routed = st.model->options().experts > 1;
  const std::string route_mode = routed ? cfg.adapt.route : "none";
  const bool dynamic = routed && route_mode == "new_embedding";
  const bool squeeze_mode = routed && cfg.adapt.mode == "squeeze";
  if (squeeze_mode && route_mode == "average")
    throw ConfigError("", "adapt.mode", "squeeze needs hard routes; adapt.route = average is soft (use mode fixed)");
  if (squeeze_mode && dynamic)
    throw ConfigError("", "adapt.mode", "squeeze needs a fixed route; adapt.route = new_embedding learns it");
  if (routed && route_mode == "learned" && st.mcfg.task_rep.kind == "learned")
    log << "warning: the checkpoint's task table is learned (task_rep.kind = learned): rows of tasks it never "
           "trained on are their random initialisation, so adapt.route = learned gives them an arbitrary route. "
           "Use a textemb/fisher representation, or adapt.route = average / new_embedding.\n";

  // ---- tasks and splits ----------------------------------------------------------------------
  std::vector<std::string> task_names = opts.tasks.empty() ? splits.test : opts.tasks;
  if (task_names.empty()) throw DataError(splits.source, 0, "the split file lists no \"test\" tasks to adapt to");
  std::vector<TaskPlan> plans;
  for (const auto& t : task_names) {
    if (!man.at("tasks").contains(t)) {
      std::vector<std::string> all;
      for (auto it = man.at("tasks").begin(); it != man.at("tasks").end(); ++it) all.push_back(it.key());
      const std::string s = closest(t, all);
      throw UsageError("unknown task '" + t + "' (not in " + splits.source + ")" + (s.empty() ? "" : "; did you mean '" + s + "'?"));
    }
    TaskPlan p;
    p.name = t;
    auto mit = metrics.find(t);
    if (mit == metrics.end()) throw DataError(man.at("tasks_file").get<std::string>(), 0, "no metric for task '" + t + "'");
    p.metric = mit->second;
    auto id_it = std::find(st.tasks.begin(), st.tasks.end(), t);
    p.id = id_it == st.tasks.end() ? -1 : id_it - st.tasks.begin();
    if (routed && p.id < 0 && (route_mode == "learned" || dynamic))
      throw DataError((fs::path(opts.checkpoint) / "meta.json").string(), 0,
                      "task '" + t + "' is not in the checkpoint's task table; adapt.route = " + route_mode +
                          " needs it (use average or random)");
    std::map<std::string, SplitFiles> by_prefix;
    for (const json& f : man.at("tasks").at(t).at("files")) {
      if (f.at("kind") != "kshot") continue;
      const int64_t seed = f.at("seed").get<int64_t>();
      if (!cfg.adapt.splits.empty() &&
          std::find(cfg.adapt.splits.begin(), cfg.adapt.splits.end(), seed) == cfg.adapt.splits.end())
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
          throw DataError(data::task_dir(cfg.data.dir, t).string(), 0,
                          "k-shot split " + prefix + " has no " + what + " file (" + prefix + "_" + what + ".tsv)");
      p.splits.push_back(s);
    }
    if (p.splits.empty())
      throw DataError(data::task_dir(cfg.data.dir, t).string(), 0,
                      "task '" + t + "' has no k-shot splits" +
                          (cfg.adapt.splits.empty() ? std::string() : std::string(" with the seeds in adapt.splits")));
    plans.push_back(std::move(p));
  }

  // ---- the sweep's identity, resume ----------------------------------------------------------
  json identity = {{"start", st.kind},
                   {"checkpoint", opts.checkpoint},
                   {"checkpoint_step", st.step},
                   {"data_dir", cfg.data.dir},
                   {"tasks", task_names},
                   {"splits", cfg.adapt.splits},
                   {"lrs", cfg.adapt.lrs},
                   {"batch_sizes", cfg.adapt.batch_sizes},
                   {"steps", cfg.adapt.steps},
                   {"warmup_steps", cfg.adapt.warmup_steps},
                   {"eval_every", cfg.adapt.eval_every},
                   {"route", route_mode},
                   {"mode", routed ? cfg.adapt.mode : "none"},
                   {"seed", cfg.adapt.seed},
                   {"num_beams", cfg.eval.num_beams},
                   {"max_len", cfg.eval.max_len}};
  fs::create_directories(out);
  const fs::path sweep_file = out / "sweep.json";
  const fs::path progress_file = out / "progress.jsonl";
  std::map<std::string, json> done;  // key -> progress line
  auto key_of = [](const std::string& task, const std::string& prefix, double lr, int64_t bsz) {
    std::ostringstream s;
    s << task << "|" << prefix << "|" << fmt(lr, "%.17g") << "|" << bsz;
    return s.str();
  };
  auto key_of_line = [&](const json& j) {
    return key_of(j.at("task"), j.at("split"), j.at("lr").get<double>(), j.at("batch_size").get<int64_t>());
  };
  // Every rank checks that out_dir holds this sweep (or none) before anything is written.
  if (fs::exists(sweep_file)) {
    json old;
    try {
      std::ifstream f(sweep_file);
      old = json::parse(f);
    } catch (const json::exception& e) {
      throw DataError(sweep_file.string(), 0, std::string("damaged sweep file: ") + e.what());
    }
    std::vector<std::string> diff;
    for (auto it = identity.begin(); it != identity.end(); ++it)
      if (!old.contains(it.key()) || old[it.key()] != it.value()) diff.push_back(it.key());
    if (!diff.empty()) {
      std::string d;
      for (const auto& k : diff) d += (d.empty() ? "" : ", ") + k;
      throw UsageError(out.string() + " holds another sweep (" + d + " differ); use another --out or remove it");
    }
  }
  // Rank 0 collects what earlier invocations finished: progress.jsonl, and the per-rank files of a
  // distributed sweep that stopped before rank 0 merged them (a torn last line from a crash is
  // dropped); the other ranks take its account.
  std::string kept;
  if (lead) {
    if (!fs::exists(sweep_file)) io::write_file_atomic(sweep_file, identity.dump(1) + "\n");
    std::vector<fs::path> rank_files;
    for (const auto& e : fs::directory_iterator(out)) {
      const std::string n = e.path().filename().string();
      if (n.rfind("progress.rank", 0) == 0 && n.size() > 6 && n.substr(n.size() - 6) == ".jsonl") rank_files.push_back(e.path());
    }
    std::sort(rank_files.begin(), rank_files.end());
    std::vector<fs::path> sources = {progress_file};
    sources.insert(sources.end(), rank_files.begin(), rank_files.end());
    for (const auto& src : sources) {
      std::ifstream f(src);
      for (std::string line; std::getline(f, line);) {
        if (line.empty()) continue;
        try {
          json j = json::parse(line);
          if (done.emplace(key_of_line(j), j).second) kept += line + "\n";
        } catch (const json::exception&) {
          log << "adapt: dropping a torn line of " << src.string() << "\n";
        }
      }
    }
    if (fs::exists(progress_file) || !kept.empty()) io::write_file_atomic(progress_file, kept);
    for (const auto& f : rank_files) fs::remove(f);
    if (!done.empty()) log << "adapt: resuming " << out.string() << ": " << done.size() << " grid points already done\n";
  }
  if (world > 1) {
    const auto all = comm->all_gather_strings(kept);
    if (!lead) {
      std::istringstream in(all[0]);
      for (std::string line; std::getline(in, line);)
        if (!line.empty()) {
          json j = json::parse(line);
          done.emplace(key_of_line(j), j);
        }
    }
  }

  // ---- fixed routes (computed before any fine-tuning: a route that does not fit fails early) ---
  AdaptResult result;
  json route_info = json::object();
  std::vector<std::vector<model::LayerRoute>> task_route(plans.size());  // fixed route for one row
  for (size_t i = 0; i < plans.size(); ++i) {
    const auto& p = plans[i];
    if (dynamic) route_info[p.name] = {{"new_embedding", "initialised to the mean of the upstream rows"}};
    if (!routed || dynamic) continue;
    auto& route1 = task_route[i];
    const int64_t L = st.model->num_layers(), E = st.model->options().experts;
    torch::NoGradGuard ng;
    if (route_mode == "learned") {
      model::RouteContext ctx;
      ctx.training = false;
      ctx.tau = st.tau;
      route1 = st.model->routes(torch::tensor({p.id}, torch::kLong).to(dev), ctx);
    } else if (route_mode == "average") {
      for (int64_t l = 0; l < L; ++l) route1.push_back({torch::full({1, E}, 1.0 / E).to(dev), torch::Tensor(), false});
    } else {  // random
      auto gen = at::make_generator<at::CPUGeneratorImpl>(point_seed(cfg.adapt.seed, p.name, "route", 0, 0));
      for (int64_t l = 0; l < L; ++l) {
        auto idx = torch::randint(E, {1, 1}, gen, torch::kLong);
        route1.push_back({torch::zeros({1, E}).scatter_(1, idx, 1.0).to(dev), idx.to(dev), true});
      }
    }
    json layers = json::array();
    std::vector<int64_t> hard;
    for (auto& r : route1) {
      auto w = r.weights.to(torch::kCPU, torch::kDouble).contiguous();
      layers.push_back(std::vector<double>(w.data_ptr<double>(), w.data_ptr<double>() + w.numel()));
      hard.push_back(r.indices.defined() ? r.indices[0][0].item<int64_t>() : w.argmax(1).item<int64_t>());
    }
    route_info[p.name] = {{"weights", layers}, {"hard", hard}, {"sparse", !route1.empty() && route1[0].sparse}};
    if (squeeze_mode)
      for (auto& r : route1)
        if (!r.sparse || r.indices.size(1) != 1)
          throw ConfigError("", "adapt.mode", "squeeze needs top-1 hard routes; the checkpoint's routes are soft");
  }

  // ---- outputs (rank 0) ------------------------------------------------------------------------
  auto write_outputs = [&]() {
    result.rows.clear();
    json tasks = json::object();
    double sum = 0;
    int64_t n_tasks = 0;
    bool complete = true;
    for (const auto& p : plans) {
      json splits_j = json::object();
      std::vector<double> sel;
      for (const auto& s : p.splits) {
        std::vector<AdaptRow> rows;
        for (double lr : cfg.adapt.lrs)
          for (int64_t bsz : cfg.adapt.batch_sizes) {
            auto it = done.find(key_of(p.name, s.prefix, lr, bsz));
            if (it == done.end()) {
              complete = false;
              continue;
            }
            const json& j = it->second;
            AdaptRow r{p.name, s.prefix, s.seed, lr, bsz, j.at("best_step").get<int64_t>(), from_num(j.at("dev")),
                       from_num(j.at("test")), false};
            rows.push_back(r);
          }
        const bool split_done = rows.size() == cfg.adapt.lrs.size() * cfg.adapt.batch_sizes.size();
        if (split_done && !rows.empty()) {
          size_t best = 0;
          for (size_t i = 1; i < rows.size(); ++i)
            if (rows[i].dev > rows[best].dev || (std::isnan(rows[best].dev) && !std::isnan(rows[i].dev))) best = i;
          rows[best].selected = true;
          sel.push_back(rows[best].test);
          splits_j[s.prefix] = {{"seed", s.seed}, {"test", num(rows[best].test)}, {"dev", num(rows[best].dev)},
                                {"lr", rows[best].lr}, {"batch_size", rows[best].batch_size}};
        }
        for (auto& r : rows) result.rows.push_back(r);
      }
      if (sel.size() == p.splits.size()) {
        double m = 0;
        for (double v : sel) m += v;
        m /= static_cast<double>(sel.size());
        tasks[p.name] = {{"metric", p.metric}, {"mean", num(m)}, {"std", num(stdev(sel, m))},
                         {"splits", splits_j}, {"route", route_info.value(p.name, json(nullptr))}};
        if (std::isfinite(m)) sum += m, ++n_tasks;
      }
    }
    result.summary = {{"start", st.kind},     {"checkpoint", opts.checkpoint}, {"route", route_mode},
                      {"mode", routed ? cfg.adapt.mode : "none"}, {"complete", complete}, {"tasks", tasks},
                      {"mean_over_tasks", n_tasks ? json(sum / static_cast<double>(n_tasks)) : json(nullptr)},
                      {"grid", {{"lrs", cfg.adapt.lrs}, {"batch_sizes", cfg.adapt.batch_sizes},
                                {"steps", cfg.adapt.steps}, {"eval_every", cfg.adapt.eval_every}}}};
    result.complete = complete;
    if (!lead) return;
    std::ostringstream csv;
    csv << "task,split,seed,lr,bsz,best_step,dev,test,selected\n";
    for (const auto& r : result.rows)
      csv << csv_field(r.task) << "," << csv_field(r.split) << "," << r.seed << "," << fmt(r.lr, "%g") << "," << r.batch_size << ","
          << r.best_step << "," << fmt(r.dev) << "," << fmt(r.test) << "," << (r.selected ? 1 : 0) << "\n";
    io::write_file_atomic(out / "results.csv", csv.str());
    io::write_file_atomic(out / "summary.json", result.summary.dump(1) + "\n");
  };
  auto append_line = [](const fs::path& file, const json& line) {
    std::ofstream f(file, std::ios::app);
    f << line.dump() << "\n" << std::flush;
    if (!f) throw std::runtime_error("cannot append to " + file.string());
  };

  // ---- optimisation settings -------------------------------------------------------------------
  model::GenerationOptions g = generation_options(cfg, bos, eos, pad);
  g.decoder_start_id = st.mcfg.model.decoder_start == "eos" ? eos : bos;  // the start token the model was trained with
  const int64_t start_id = g.decoder_start_id;
  const auto mo = metric_options(cfg);
  const LossOptions lo = loss_options(cfg, pad);
  const AdamWOptions ao = adamw_options(cfg);

  // ---- the grid points still to run, in grid order ------------------------------------------
  struct Point {
    size_t task, split;
    double lr;
    int64_t bsz;
    std::string key;
  };
  std::vector<Point> todo;
  int64_t points_total = 0;
  for (size_t i = 0; i < plans.size(); ++i)
    for (size_t j = 0; j < plans[i].splits.size(); ++j)
      for (double lr : cfg.adapt.lrs)
        for (int64_t bsz : cfg.adapt.batch_sizes) {
          ++points_total;
          std::string key = key_of(plans[i].name, plans[i].splits[j].prefix, lr, bsz);
          if (!done.count(key)) todo.push_back({i, j, lr, bsz, std::move(key)});
        }
  result.points_total = points_total;
  result.points_reused = static_cast<int64_t>(done.size());
  const int64_t steps_total = points_total * cfg.adapt.steps;
  int64_t steps_done = static_cast<int64_t>(done.size()) * cfg.adapt.steps;
  Progress bar(log, "adapt", steps_done, steps_total, cfg.adapt.steps, opts.plain_progress);
  log << "adapt: " << st.kind << " start"
      << (opts.checkpoint.empty() ? std::string() : " (" + opts.checkpoint + ")") << ", route " << route_mode
      << (routed ? ", mode " + cfg.adapt.mode : std::string()) << "; " << plans.size() << " tasks, " << points_total
      << " grid points of " << cfg.adapt.steps << " steps"
      << (world > 1 ? "; " + std::to_string(todo.size()) + " to run, handed out to " + std::to_string(world) +
                          " processes (" + comm->backend() + ", " + opts.launch.launcher + ") one at a time"
                    : std::string())
      << "\n";

  // ---- distributed bookkeeping: grid points are claimed one at a time from a counter in the
  // rendezvous store (so fast ranks take more); every rank appends what it finishes to its own
  // progress file and publishes it in the store, where rank 0 merges it into progress.jsonl,
  // results.csv and summary.json as it comes. Waiting on the store never times out while the peers'
  // heartbeats go on; a peer silent for dist.timeout_s stops the sweep.
  const std::string ns = "tlmoe/adapt/";
  const fs::path my_progress = lead ? progress_file : out / ("progress.rank" + std::to_string(rank) + ".jsonl");
  std::unique_ptr<Heartbeat> heartbeat;
  if (world > 1) heartbeat = std::make_unique<Heartbeat>(*comm, ns + "alive/" + std::to_string(rank));
  std::vector<char> merged(todo.size(), 0);
  auto merge_published = [&]() {  // rank 0
    const int64_t claimed = std::min<int64_t>(comm->store_add(ns + "claimed", 0), static_cast<int64_t>(todo.size()));
    bool changed = false;
    for (int64_t t = 0; t < claimed; ++t) {
      if (merged[t]) continue;
      const auto v = comm->store_get(ns + "point/" + std::to_string(t));
      if (!v) continue;
      const json j = json::parse(*v);
      append_line(progress_file, j);
      done[todo[t].key] = j;
      merged[t] = 1;
      steps_done += cfg.adapt.steps;
      changed = true;
      const Point& q = todo[t];
      bar.message("adapt: rank " + std::to_string(j.value("rank", int64_t{-1})) + " finished " + plans[q.task].name + " " +
                  plans[q.task].splits[q.split].prefix + " lr " + fmt(q.lr, "%g") + " bsz " + std::to_string(q.bsz) +
                  ": dev " + fmt(from_num(j.at("dev")), "%.4f") + ", test " + fmt(from_num(j.at("test")), "%.4f"));
    }
    if (changed) write_outputs();
  };

  const State start_state = snapshot(*st.model, false);
  int64_t run_now = 0;
  size_t cur_task = SIZE_MAX, cur_split = SIZE_MAX;
  model::TLMoEModel work = st.model;
  State initial;
  torch::Tensor new_row;
  EvalSet train_set, dev_set, test_set;
  while (!(opts.stop_after_points > 0 && run_now >= opts.stop_after_points)) {
    const int64_t t = comm->store_add(ns + "claimed", 1) - 1;
    if (t >= static_cast<int64_t>(todo.size())) break;
    const Point& pt = todo[t];
    const TaskPlan& p = plans[pt.task];
    const SplitFiles& s = p.splits[pt.split];
    const double lr = pt.lr;
    const int64_t bsz = pt.bsz;
    const auto& route1 = task_route[pt.task];
    if (pt.task != cur_task) {  // the task's working model
      cur_task = pt.task;
      cur_split = SIZE_MAX;
      work = st.model;
      if (squeeze_mode) {
        work = squeeze_to_dense(st.model, route_info[p.name]["hard"].get<std::vector<int64_t>>(), st.mcfg);
        work->to(dev);
      }
      initial = work.ptr() == st.model.ptr() ? start_state : snapshot(*work, false);
      if (dynamic) {
        torch::NoGradGuard ng;
        std::vector<int64_t> up;
        for (const auto& tn : splits.train) {
          auto it = std::find(st.tasks.begin(), st.tasks.end(), tn);
          if (it != st.tasks.end()) up.push_back(it - st.tasks.begin());
        }
        new_row = up.empty() ? torch::zeros_like(st.model->task_table->weight[0])
                             : st.model->task_table->weight.index_select(0, torch::tensor(up, torch::kLong).to(dev)).mean(0);
      }
    }
    if (pt.split != cur_split) {
      cur_split = pt.split;
      const int64_t tid = std::max<int64_t>(p.id, 0);
      train_set = load_eval_set(cache, *s.train, p.name, tid, p.metric);
      dev_set = load_eval_set(cache, *s.dev, p.name, tid, p.metric);
      test_set = load_eval_set(cache, *s.test, p.name, tid, p.metric);
      if (train_set.examples.empty()) throw DataError(s.train->at("source").get<std::string>(), 0, "no examples");
    }
    // squeezed models run dense: no route
    const std::vector<model::LayerRoute> no_route;
    const auto& fixed = squeeze_mode ? no_route : route1;
    RouteFn fixed_routes = [&fixed](const torch::Tensor& ids) { return expand(fixed, ids.size(0)); };

    const auto t0 = std::chrono::steady_clock::now();
    torch::manual_seed(point_seed(cfg.adapt.seed, p.name, s.prefix, lr, bsz));
    restore(*work, initial);
    for (auto& prm : work->parameters()) prm.set_requires_grad(true);
    for (auto& np : work->named_parameters(true))
      if (np.key().rfind("router.", 0) == 0) np.value().set_requires_grad(false);
    if (dynamic) {
      torch::NoGradGuard ng;
      work->task_table->weight[p.id].copy_(new_row);
    }
    GroupSpec gs;
    gs.lr = lr;
    gs.router_lr = 0;
    gs.task_lr = dynamic ? cfg.train.task_lr : 0;
    gs.weight_decay = cfg.train.weight_decay;
    gs.freeze_task_table = !dynamic;
    gs.reference_compat = cfg.reference_compat;
    AdamW opt(build_param_groups(*work, gs), ao);
    auto clip = clip_params(opt.groups(), *work, cfg.reference_compat);
    BatchingOptions bo;
    bo.batch_size = bsz;
    bo.seed = point_seed(cfg.adapt.seed, p.name, s.prefix, lr, bsz);
    bo.length_bucketing = false;
    bo.pad_id = pad;
    bo.decoder_start_id = start_id;
    MultiTaskBatcher batcher(train_set.examples, bo);
    const RouteFn eval_routes = dynamic ? model_routes(work, st.tau, bo.seed) : fixed_routes;

    double best_dev = -INFINITY;
    int64_t best_step = 0;
    State best;
    json curve = json::array();
    work->train();
    auto tl = std::chrono::steady_clock::now();
    for (int64_t step = 1; step <= cfg.adapt.steps; ++step) {
      Batch b = batcher.next();
      b.input_ids = b.input_ids.to(dev);
      b.input_mask = b.input_mask.to(dev);
      b.decoder_input_ids = b.decoder_input_ids.to(dev);
      b.target_ids = b.target_ids.to(dev);
      b.task_ids = b.task_ids.to(dev);
      std::vector<model::LayerRoute> routes;
      if (dynamic) {
        model::RouteContext ctx;
        ctx.training = true;
        ctx.tau = st.tau;
        routes = work->routes(b.task_ids, ctx);
      } else {
        routes = expand(fixed, b.input_ids.size(0));
      }
      torch::Tensor logits;
      {
        kernels::AutocastGuard amp(bf16, dev);
        logits = work->forward(b.input_ids, b.input_mask, b.decoder_input_ids, routes);
      }
      auto r = label_smoothed_nll(logits, b.target_ids, lo);  // fp32
      const double loss = r.loss.item<double>();
      if (!std::isfinite(loss))
        throw std::runtime_error("adapt: non-finite loss for " + p.name + " " + s.prefix + " lr " + fmt(lr, "%g") +
                                 " bsz " + std::to_string(bsz) + " at step " + std::to_string(step));
      r.loss.backward();
      clip_grad_norm(clip, cfg.train.clip_norm);
      opt.step(linear_warmup_decay(step - 1, cfg.adapt.warmup_steps, cfg.adapt.steps));
      opt.zero_grad();
      ++steps_done;
      const auto now = std::chrono::steady_clock::now();
      const double dt = std::chrono::duration<double>(now - tl).count();
      tl = now;
      bar.update(steps_done, r.tokens ? loss / (lo.reduction == "sum" ? static_cast<double>(r.tokens) : 1.0) : 0.0,
                 dt > 0 ? static_cast<double>(b.target_tokens) / dt : 0.0,
                 {{"task", p.name}, {"split", std::to_string(s.seed)}, {"lr", fmt(lr, "%g")}, {"bsz", std::to_string(bsz)}});
      if (step % cfg.adapt.eval_every == 0 || step == cfg.adapt.steps) {
        auto preds = predict(*work, dev_set.examples, eval_routes, *tok, g, cfg.eval.batch_size, dev);
        const double sc = score_predictions(dev_set, preds, mo).score;
        curve.push_back({{"step", step}, {"dev", num(sc)}});
        if (sc > best_dev) {
          best_dev = sc;
          best_step = step;
          best = snapshot(*work, true);
        }
        work->train();
      }
    }
    if (!best.empty()) restore(*work, best);
    auto preds = predict(*work, test_set.examples, eval_routes, *tok, g, cfg.eval.batch_size, dev);
    const TaskScore ts = score_predictions(test_set, preds, mo);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    json line = {{"task", p.name},   {"split", s.prefix},  {"seed", s.seed},         {"lr", lr},
                 {"batch_size", bsz}, {"best_step", best_step}, {"dev", num(best_dev)}, {"test", num(ts.score)},
                 {"test_unparsable", ts.unparsable}, {"dev_curve", curve}, {"seconds", secs}, {"rank", rank}};
    append_line(my_progress, line);
    if (lead) {
      merged[t] = 1;
      done[pt.key] = line;
      write_outputs();
      if (world > 1) merge_published();
    } else {
      comm->store_set(ns + "point/" + std::to_string(t), line.dump());
    }
    ++run_now;
  }

  // ---- the end: rank 0 merges every rank's points; the others wait for that, then leave ----------
  result.points_run = run_now;
  if (world > 1) {
    if (!lead) {
      comm->store_set(ns + "finished/" + std::to_string(rank), std::to_string(run_now));
      while (!comm->store_get(ns + "merged")) std::this_thread::sleep_for(std::chrono::milliseconds(100));
      std::error_code ec;
      fs::remove(my_progress, ec);  // merged into progress.jsonl by rank 0
    } else {
      std::vector<std::string> last(static_cast<size_t>(world));
      std::vector<std::chrono::steady_clock::time_point> seen(static_cast<size_t>(world), std::chrono::steady_clock::now());
      std::vector<int64_t> finished(static_cast<size_t>(world), -1);
      while (true) {
        merge_published();
        bool all = true;
        for (int64_t r = 1; r < world; ++r) {
          if (finished[r] >= 0) continue;
          if (const auto f = comm->store_get(ns + "finished/" + std::to_string(r))) {
            finished[r] = std::stoll(*f);
            continue;
          }
          all = false;
          const auto now = std::chrono::steady_clock::now();
          const std::string beat = comm->store_get(ns + "alive/" + std::to_string(r)).value_or("");
          if (beat != last[r]) {
            last[r] = beat;
            seen[r] = now;
          } else if (std::chrono::duration<double>(now - seen[r]).count() > cfg.dist.timeout_s) {
            bar.finish();
            throw std::runtime_error(
                "adapt: rank " + std::to_string(r) + " of " + std::to_string(world) +
                " stopped answering (no heartbeat for dist.timeout_s = " + fmt(cfg.dist.timeout_s, "%g") +
                " s); this rank stops. Every grid point finished so far is kept in " + progress_file.string() +
                " and the per-rank progress files next to it: rerun the same command to continue.");
          }
        }
        if (all) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
      merge_published();  // every rank published before it said it had finished
      for (int64_t r = 1; r < world; ++r) result.points_run += finished[r];
      comm->store_set(ns + "merged", "1");
    }
    comm->barrier();  // rank 0 keeps the store up until every rank has seen the merge
  }
  bar.finish();
  write_outputs();
  return result;
}

}  // namespace tlmoe::train
