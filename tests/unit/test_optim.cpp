// AdamW (HF semantics), the linear warmup/decay schedule, global-norm clipping and the
// parameter groups, each against an independent reference written out here in doubles.
// torch before Catch: c10's logging header defines a one-argument CHECK that Catch replaces.
#include <torch/torch.h>

#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "common/error.h"
#include "train/optim.h"

using namespace tlmoe::train;

namespace {

// Hugging Face transformers.AdamW on one parameter, element by element in double:
//   t += 1; m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2
//   p = p - lr*sqrt(1-b2^t)/(1-b1^t) * m/(sqrt(v)+eps);  then  p = p - lr*wd*p
struct HfAdamW {
  std::vector<double> p, m, v;
  int t = 0;
  double b1 = 0.9, b2 = 0.999, eps = 1e-8;
  explicit HfAdamW(std::vector<double> p0) : p(std::move(p0)), m(p.size(), 0.0), v(p.size(), 0.0) {}
  void step(const std::vector<double>& g, double lr, double wd) {
    t += 1;
    const double step_size = lr * std::sqrt(1.0 - std::pow(b2, t)) / (1.0 - std::pow(b1, t));
    for (size_t i = 0; i < p.size(); ++i) {
      m[i] = b1 * m[i] + (1.0 - b1) * g[i];
      v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
      p[i] = p[i] - step_size * m[i] / (std::sqrt(v[i]) + eps);
      if (wd > 0) p[i] = p[i] - lr * wd * p[i];
    }
  }
};

torch::Tensor vec(const std::vector<double>& x, torch::ScalarType dt = torch::kFloat) {
  return torch::tensor(x, torch::kDouble).to(dt);
}

std::vector<double> to_vec(const torch::Tensor& t) {
  auto d = t.detach().to(torch::kDouble).contiguous();
  return std::vector<double>(d.data_ptr<double>(), d.data_ptr<double>() + d.numel());
}

torch::Tensor param(const std::vector<double>& x, torch::ScalarType dt = torch::kFloat) {
  return vec(x, dt).requires_grad_(true);
}

void set_grad(torch::Tensor& p, const std::vector<double>& g) { p.mutable_grad() = vec(g, p.scalar_type()); }

ParamGroup one_group(const std::string& name, std::vector<torch::Tensor> ps, std::vector<std::string> names, double lr,
                     double wd) {
  ParamGroup g;
  g.name = name;
  g.params = std::move(ps);
  g.param_names = std::move(names);
  g.lr = lr;
  g.weight_decay = wd;
  return g;
}

void require_close(const std::vector<double>& got, const std::vector<double>& want, double tol) {
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    INFO("element " << i << ": got " << got[i] << ", want " << want[i]);
    CHECK(std::abs(got[i] - want[i]) <= tol * (1.0 + std::abs(want[i])));
  }
}

}  // namespace

// ---- AdamW ------------------------------------------------------------------------------------

TEST_CASE("AdamW: one step matches the HF formula, with and without weight decay", "[optim]") {
  const std::vector<double> p0 = {1.0, -2.0, 0.5}, g = {0.1, -0.2, 0.3};
  const double lr = 0.1;
  for (double wd : {0.0, 0.01, 0.5}) {
    INFO("weight decay " << wd);
    auto p = param(p0);
    AdamW opt({one_group("g", {p}, {"p"}, lr, wd)}, AdamWOptions{});
    set_grad(p, g);
    opt.step(1.0);
    // Step 1 by hand: m = 0.1 g, v = 0.001 g^2, step size = lr*sqrt(0.001)/0.1, so
    // m/(sqrt(v)+eps) * step size = lr * |g| / (|g| + eps/sqrt(0.001)) * sign(g).
    std::vector<double> want;
    for (size_t i = 0; i < 3; ++i) {
      const double m = 0.1 * g[i], v = 0.001 * g[i] * g[i];
      const double step_size = lr * std::sqrt(1.0 - 0.999) / (1.0 - 0.9);
      double pi = p0[i] - step_size * m / (std::sqrt(v) + 1e-8);
      pi = pi - lr * wd * pi;  // decay after the Adam step, on the updated value
      want.push_back(pi);
    }
    require_close(to_vec(p), want, 1e-6);
    // The first Adam step moves each element by about lr against the sign of its gradient.
    for (size_t i = 0; i < 3; ++i) {
      const double adam_only = p0[i] - lr * (g[i] > 0 ? 1.0 : -1.0);
      CHECK(std::abs(to_vec(p)[i] - adam_only * (1.0 - lr * wd)) < 1e-5);
    }
  }
}

TEST_CASE("AdamW: two steps match the HF formula (fp32 and fp64 parameters)", "[optim]") {
  const std::vector<double> p0 = {1.0, -2.0, 0.5};
  const std::vector<double> g1 = {0.1, -0.2, 0.3}, g2 = {-0.05, 0.4, 0.0};
  for (auto dt : {torch::kFloat, torch::kDouble}) {
    for (double wd : {0.0, 0.01}) {
      INFO("dtype " << dt << ", weight decay " << wd);
      auto p = param(p0, dt);
      AdamW opt({one_group("g", {p}, {"p"}, 0.05, wd)}, AdamWOptions{});
      HfAdamW ref(p0);
      set_grad(p, g1);
      opt.step(1.0);
      ref.step(g1, 0.05, wd);
      set_grad(p, g2);
      opt.step(0.5);  // lr multiplier: lr_g = 0.05 * 0.5
      ref.step(g2, 0.025, wd);
      require_close(to_vec(p), ref.p, dt == torch::kDouble ? 1e-13 : 1e-6);
      auto st = opt.state_tensors();
      std::map<std::string, torch::Tensor> s(st.begin(), st.end());
      CHECK(s.at("adamw.p.step").item<int64_t>() == 2);
      CHECK(s.at("adamw.p.step").dim() == 0);
      CHECK(s.at("adamw.p.step").scalar_type() == torch::kLong);
      CHECK(s.at("adamw.p.exp_avg").scalar_type() == dt);
      require_close(to_vec(s.at("adamw.p.exp_avg")), ref.m, dt == torch::kDouble ? 1e-13 : 1e-6);
      require_close(to_vec(s.at("adamw.p.exp_avg_sq")), ref.v, dt == torch::kDouble ? 1e-13 : 1e-6);
    }
  }
}

TEST_CASE("AdamW: decay after the Adam step differs from torch::optim::AdamW's order", "[optim]") {
  // torch::optim::AdamW: p <- p*(1-lr*wd) first, then p <- p - lr/(1-b1^t) * m/(sqrt(v)/sqrt(1-b2^t)+eps).
  // HF: Adam step first, then p <- p - lr*wd*p on the updated p. After one step with g != 0 the
  // two differ by about lr*wd*lr*sign(g) = 0.1*0.5*0.1 = 0.005.
  const std::vector<double> p0 = {1.0, -2.0, 0.5}, g = {0.1, -0.2, 0.3};
  const double lr = 0.1, wd = 0.5;
  auto ours = param(p0);
  AdamW opt({one_group("g", {ours}, {"p"}, lr, wd)}, AdamWOptions{});
  set_grad(ours, g);
  opt.step(1.0);

  auto theirs = param(p0);
  torch::optim::AdamW topt({theirs}, torch::optim::AdamWOptions(lr).betas({0.9, 0.999}).eps(1e-8).weight_decay(wd));
  set_grad(theirs, g);
  topt.step();

  HfAdamW hf(p0);
  hf.step(g, lr, wd);
  std::vector<double> torch_order;  // torch's order, by hand
  for (size_t i = 0; i < 3; ++i) {
    double p = p0[i] * (1.0 - lr * wd);
    const double m = 0.1 * g[i], v = 0.001 * g[i] * g[i];
    p -= lr / (1.0 - 0.9) * m / (std::sqrt(v) / std::sqrt(1.0 - 0.999) + 1e-8);
    torch_order.push_back(p);
  }
  require_close(to_vec(ours), hf.p, 1e-6);
  require_close(to_vec(theirs), torch_order, 1e-6);
  for (size_t i = 0; i < 3; ++i) {
    INFO("element " << i);
    CHECK(std::abs(to_vec(ours)[i] - to_vec(theirs)[i]) == Approx(lr * wd * lr).margin(1e-5));
  }
}

TEST_CASE("AdamW: an undefined grad skips the parameter, a zero grad still steps", "[optim]") {
  const std::vector<double> a0 = {1.0, 2.0, 3.0}, b0 = {-1.0, 0.5, 4.0};
  auto a = param(a0), b = param(b0);
  AdamW opt({one_group("g", {a, b}, {"a", "b"}, 0.1, 0.01)}, AdamWOptions{});
  HfAdamW ra(a0), rb(b0);
  const std::vector<double> ga = {0.3, -0.1, 0.2}, gb = {0.5, 0.5, -0.5}, zero = {0.0, 0.0, 0.0};

  set_grad(a, ga);  // b has no grad
  opt.step(1.0);
  ra.step(ga, 0.1, 0.01);
  require_close(to_vec(a), ra.p, 1e-6);
  CHECK(torch::equal(b, vec(b0)));
  {
    auto st = opt.state_tensors();
    std::map<std::string, torch::Tensor> s(st.begin(), st.end());
    CHECK(s.at("adamw.a.step").item<int64_t>() == 1);
    CHECK(s.at("adamw.b.step").item<int64_t>() == 0);
    CHECK(s.at("adamw.b.exp_avg").abs().max().item<double>() == 0.0);
    CHECK(s.at("adamw.b.exp_avg_sq").abs().max().item<double>() == 0.0);
  }

  opt.zero_grad();
  CHECK_FALSE(a.grad().defined());
  // Now b takes its first step (its own t = 1) while a gets an all-zero grad (its t = 2):
  // momentum and decay still move a.
  set_grad(a, zero);
  set_grad(b, gb);
  opt.step(1.0);
  ra.step(zero, 0.1, 0.01);
  rb.step(gb, 0.1, 0.01);
  require_close(to_vec(a), ra.p, 1e-6);
  require_close(to_vec(b), rb.p, 1e-6);
  auto st = opt.state_tensors();
  std::map<std::string, torch::Tensor> s(st.begin(), st.end());
  CHECK(s.at("adamw.a.step").item<int64_t>() == 2);
  CHECK(s.at("adamw.b.step").item<int64_t>() == 1);
}

TEST_CASE("AdamW: a restored optimizer continues bit-identically", "[optim]") {
  torch::manual_seed(7);
  const auto w0 = torch::randn({4, 3}), bias0 = torch::randn({3});
  std::vector<std::array<torch::Tensor, 2>> grads;
  for (int i = 0; i < 6; ++i) grads.push_back({torch::randn({4, 3}), torch::randn({3})});
  const std::vector<double> mult = {0.0, 0.25, 0.5, 1.0, 0.8, 0.6};

  auto make = [&](const torch::Tensor& w, const torch::Tensor& b) {
    return std::vector<ParamGroup>{one_group("decay", {w}, {"layer.weight"}, 0.01, 0.1),
                                   one_group("no_decay", {b}, {"layer.bias"}, 0.02, 0.0)};
  };
  auto run = [&](AdamW& opt, torch::Tensor& w, torch::Tensor& b, int from, int to) {
    for (int i = from; i < to; ++i) {
      w.mutable_grad() = grads[i][0].clone();
      // the bias has no gradient on step 2: its step count falls behind the weight's
      if (i != 2) b.mutable_grad() = grads[i][1].clone();
      opt.step(mult[i]);
      opt.zero_grad();
    }
  };

  auto wa = w0.clone().requires_grad_(true), ba = bias0.clone().requires_grad_(true);
  AdamW a(make(wa, ba), AdamWOptions{});
  run(a, wa, ba, 0, 6);

  auto wb = w0.clone().requires_grad_(true), bb = bias0.clone().requires_grad_(true);
  AdamW b(make(wb, bb), AdamWOptions{});
  run(b, wb, bb, 0, 3);
  // "Save": deep copies of the state and the parameters, as a checkpoint file would hold.
  std::map<std::string, torch::Tensor> saved;
  for (auto& [k, t] : b.state_tensors()) saved[k] = t.clone();
  saved["rng.cpu"] = torch::zeros({8}, torch::kByte);  // other state in the same file is ignored
  CHECK(saved.size() == 7);
  auto wc = wb.detach().clone().requires_grad_(true), bc = bb.detach().clone().requires_grad_(true);
  run(b, wb, bb, 3, 6);  // the original keeps going; the restored copy must not share its state

  AdamW c(make(wc, bc), AdamWOptions{});
  c.load_state_tensors(saved);
  run(c, wc, bc, 3, 6);
  CHECK(torch::equal(wc, wa));
  CHECK(torch::equal(bc, ba));
  CHECK(torch::equal(wb, wa));
  auto sa = a.state_tensors(), sc = c.state_tensors();
  REQUIRE(sa.size() == sc.size());
  for (size_t i = 0; i < sa.size(); ++i) {
    INFO(sa[i].first);
    CHECK(sa[i].first == sc[i].first);
    CHECK(torch::equal(sa[i].second, sc[i].second));
  }
}

TEST_CASE("AdamW: loading bad state throws naming the entry and changes nothing", "[optim]") {
  auto w = param({1, 2, 3});
  AdamW opt({one_group("g", {w}, {"w"}, 0.1, 0.0)}, AdamWOptions{});
  auto good = [] {
    return std::map<std::string, torch::Tensor>{{"adamw.w.step", torch::scalar_tensor(3, torch::kLong)},
                                                {"adamw.w.exp_avg", torch::ones({3})},
                                                {"adamw.w.exp_avg_sq", torch::ones({3})}};
  };
  auto expect_throw = [&](std::map<std::string, torch::Tensor> s, const std::string& needle) {
    try {
      opt.load_state_tensors(s);
      FAIL("no exception; expected one mentioning " << needle);
    } catch (const tlmoe::DataError& e) {
      INFO(e.what());
      CHECK(std::string(e.what()).find(needle) != std::string::npos);
    }
  };
  auto s = good();
  s.erase("adamw.w.exp_avg_sq");
  expect_throw(s, "adamw.w.exp_avg_sq");
  s = good();
  s["adamw.w.exp_avg"] = torch::ones({4});
  expect_throw(s, "adamw.w.exp_avg");
  s = good();
  s["adamw.other.step"] = torch::scalar_tensor(1, torch::kLong);
  expect_throw(s, "adamw.other.step");
  s = good();
  s["adamw.w.step"] = torch::scalar_tensor(1.5);
  expect_throw(s, "adamw.w.step");
  auto st = opt.state_tensors();
  std::map<std::string, torch::Tensor> now(st.begin(), st.end());
  CHECK(now.at("adamw.w.step").item<int64_t>() == 0);
  CHECK(now.at("adamw.w.exp_avg").abs().max().item<double>() == 0.0);
  opt.load_state_tensors(good());
  st = opt.state_tensors();
  now = std::map<std::string, torch::Tensor>(st.begin(), st.end());
  CHECK(now.at("adamw.w.step").item<int64_t>() == 3);
  CHECK(torch::equal(now.at("adamw.w.exp_avg"), torch::ones({3})));
}

TEST_CASE("AdamW: rejects duplicate names and mismatched groups", "[optim]") {
  auto a = param({1}), b = param({2});
  CHECK_THROWS(AdamW({one_group("g", {a, b}, {"x", "x"}, 0.1, 0)}, AdamWOptions{}));
  CHECK_THROWS(AdamW({one_group("g", {a, a}, {"x", "y"}, 0.1, 0)}, AdamWOptions{}));
  CHECK_THROWS(AdamW({one_group("g", {a, b}, {"x"}, 0.1, 0)}, AdamWOptions{}));
}

TEST_CASE("AdamW: half-precision parameters keep fp32 state", "[optim]") {
  const std::vector<double> p0 = {1.0, -2.0, 0.5}, g = {0.1, -0.2, 0.3};
  auto p = param(p0, torch::kHalf);
  AdamW opt({one_group("g", {p}, {"p"}, 0.1, 0.0)}, AdamWOptions{});
  set_grad(p, g);
  opt.step(1.0);
  HfAdamW ref(p0);
  ref.step(g, 0.1, 0.0);
  CHECK(p.scalar_type() == torch::kHalf);
  require_close(to_vec(p), ref.p, 1e-3);
  auto st = opt.state_tensors();
  CHECK(st[1].second.scalar_type() == torch::kFloat);
}

// ---- schedule -----------------------------------------------------------------------------------

TEST_CASE("linear warmup/decay schedule: Appendix B values", "[optim]") {
  // Stage 1: W = 1800, T = 30000.
  CHECK(linear_warmup_decay(0, 1800, 30000) == 0.0);
  CHECK(linear_warmup_decay(900, 1800, 30000) == 0.5);
  CHECK(linear_warmup_decay(1800, 1800, 30000) == 1.0);
  CHECK(linear_warmup_decay(1, 1800, 30000) == Approx(1.0 / 1800.0));
  CHECK(linear_warmup_decay(15900, 1800, 30000) == Approx((30000.0 - 15900.0) / 28200.0));
  CHECK(linear_warmup_decay(15900, 1800, 30000) == Approx(0.5));
  CHECK(linear_warmup_decay(29999, 1800, 30000) == Approx(1.0 / 28200.0));
  CHECK(linear_warmup_decay(30000, 1800, 30000) == 0.0);
  CHECK(linear_warmup_decay(31000, 1800, 30000) == 0.0);
  // Few-shot fine-tuning: W = 100, T = 1000.
  CHECK(linear_warmup_decay(0, 100, 1000) == 0.0);
  CHECK(linear_warmup_decay(50, 100, 1000) == 0.5);
  CHECK(linear_warmup_decay(100, 100, 1000) == 1.0);
  CHECK(linear_warmup_decay(550, 100, 1000) == Approx(0.5));
  CHECK(linear_warmup_decay(1000, 100, 1000) == 0.0);
  CHECK(linear_warmup_decay(5000, 100, 1000) == 0.0);
  // No warmup: the first step already uses the full rate.
  CHECK(linear_warmup_decay(0, 0, 10) == 1.0);
  CHECK(linear_warmup_decay(5, 0, 10) == 0.5);
}

TEST_CASE("warmup_steps truncates like Python int()", "[optim]") {
  CHECK(warmup_steps(0.06, 30000) == 1800);
  CHECK(warmup_steps(0.06, 1000) == 60);
  CHECK(warmup_steps(0.1, 15) == 1);   // 1.5 -> 1
  CHECK(warmup_steps(0.19, 10) == 1);  // 1.9 -> 1
  CHECK(warmup_steps(0.0, 1000) == 0);
  CHECK_THROWS(warmup_steps(-0.1, 10));
}

// ---- clipping -----------------------------------------------------------------------------------

TEST_CASE("clip_grad_norm: global norm and torch's max_norm/(norm+1e-6) scaling", "[optim]") {
  auto a = param({0, 0}), b = param({0}), c = param({5});  // c has no grad: ignored
  auto reset = [&] {
    set_grad(a, {3, 4});
    set_grad(b, {12});
  };
  reset();
  // sqrt(3^2 + 4^2 + 12^2) = 13 > 1: grads scaled by 1/(13 + 1e-6)
  CHECK(clip_grad_norm({a, b, c}, 1.0) == Approx(13.0).epsilon(1e-12));
  const double s = 1.0 / (13.0 + 1e-6);
  require_close(to_vec(a.grad()), {3 * s, 4 * s}, 1e-7);
  require_close(to_vec(b.grad()), {12 * s}, 1e-7);
  CHECK_FALSE(c.grad().defined());
  // below the limit: untouched
  reset();
  CHECK(clip_grad_norm({a, b}, 20.0) == Approx(13.0));
  CHECK(torch::equal(a.grad(), vec({3, 4})));
  // max_norm <= 0: the norm only
  reset();
  CHECK(clip_grad_norm({a, b}, 0.0) == Approx(13.0));
  CHECK(torch::equal(b.grad(), vec({12})));
  // no grads at all
  CHECK(clip_grad_norm({c}, 1.0) == 0.0);
  // fp64 and fp16 grads accumulate together
  auto d = param({0, 0}, torch::kDouble), h = param({0}, torch::kHalf);
  set_grad(d, {3, 4});
  set_grad(h, {12});
  CHECK(clip_grad_norm({d, h}, 0.0) == Approx(13.0).epsilon(1e-12));
}

TEST_CASE("clip_grad_norm and grads_finite on non-finite grads", "[optim]") {
  auto a = param({0, 0}), b = param({0});
  set_grad(a, {3, 4});
  set_grad(b, {12});
  CHECK(grads_finite({a, b}));
  set_grad(b, {std::numeric_limits<double>::quiet_NaN()});
  CHECK_FALSE(grads_finite({a, b}));
  CHECK(std::isnan(clip_grad_norm({a, b}, 1.0)));
  CHECK(torch::equal(a.grad(), vec({3, 4})));  // not scaled
  set_grad(b, {std::numeric_limits<double>::infinity()});
  CHECK_FALSE(grads_finite({a, b}));
  CHECK(std::isinf(clip_grad_norm({a, b}, 1.0)));
  CHECK(grads_finite({param({1})}));  // no grad defined
}

// ---- parameter groups ---------------------------------------------------------------------------

namespace {

struct RouterImpl : torch::nn::Module {
  RouterImpl() {
    proj = register_module("proj", torch::nn::Linear(4, 2));
    norm = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({2})));
  }
  torch::nn::Linear proj{nullptr};
  torch::nn::LayerNorm norm{nullptr};
};
TORCH_MODULE(Router);

// Names: fc.{weight,bias}, ln.{weight,bias} (LayerNorm), LayerNorm.{weight,bias} (LayerNorm
// named as in HF BERT, which the reference's name rule does match), emb.weight, frozen.{weight,
// bias} (requires_grad=false), router.proj.{weight,bias}, router.norm.{weight,bias},
// task_table.weight.
struct TinyImpl : torch::nn::Module {
  TinyImpl() {
    fc = register_module("fc", torch::nn::Linear(4, 4));
    ln = register_module("ln", torch::nn::LayerNorm(torch::nn::LayerNormOptions({4})));
    hf_ln = register_module("LayerNorm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({4})));
    emb = register_module("emb", torch::nn::Embedding(10, 4));
    frozen = register_module("frozen", torch::nn::Linear(4, 4));
    for (auto& p : frozen->parameters()) p.set_requires_grad(false);
    router = register_module("router", Router());
    task_table = register_module("task_table", torch::nn::Embedding(3, 4));
  }
  torch::nn::Linear fc{nullptr}, frozen{nullptr};
  torch::nn::LayerNorm ln{nullptr}, hf_ln{nullptr};
  torch::nn::Embedding emb{nullptr}, task_table{nullptr};
  Router router{nullptr};
};
TORCH_MODULE(Tiny);

using Names = std::set<std::string>;

std::map<std::string, Names> names_by_group(const std::vector<ParamGroup>& groups) {
  std::map<std::string, Names> out;
  for (const auto& g : groups) {
    REQUIRE(g.params.size() == g.param_names.size());
    out[g.name] = Names(g.param_names.begin(), g.param_names.end());
  }
  return out;
}

std::vector<std::string> group_names(const std::vector<ParamGroup>& groups) {
  std::vector<std::string> v;
  for (const auto& g : groups) v.push_back(g.name);
  return v;
}

std::set<const void*> impls(const std::vector<torch::Tensor>& ts) {
  std::set<const void*> s;
  for (const auto& t : ts) s.insert(t.unsafeGetTensorImpl());
  return s;
}

GroupSpec spec() {
  GroupSpec s;
  s.lr = 1e-4;
  s.router_lr = 1e-3;
  s.task_lr = 1e-2;
  s.weight_decay = 0.01;
  return s;
}

}  // namespace

TEST_CASE("parameter groups: LayerNorm found by module type by default", "[optim]") {
  Tiny m;
  auto groups = build_param_groups(*m, spec());
  CHECK(group_names(groups) ==
        std::vector<std::string>{"backbone", "backbone_no_decay", "router", "router_no_decay", "task_table"});
  auto n = names_by_group(groups);
  CHECK(n["backbone"] == Names{"fc.weight", "emb.weight"});
  CHECK(n["backbone_no_decay"] == Names{"fc.bias", "ln.weight", "ln.bias", "LayerNorm.weight", "LayerNorm.bias"});
  CHECK(n["router"] == Names{"router.proj.weight"});
  CHECK(n["router_no_decay"] == Names{"router.proj.bias", "router.norm.weight", "router.norm.bias"});
  CHECK(n["task_table"] == Names{"task_table.weight"});
  // lr and weight decay per group
  std::map<std::string, std::pair<double, double>> lw;
  for (const auto& g : groups) lw[g.name] = {g.lr, g.weight_decay};
  CHECK(lw["backbone"] == std::pair<double, double>{1e-4, 0.01});
  CHECK(lw["backbone_no_decay"] == std::pair<double, double>{1e-4, 0.0});
  CHECK(lw["router"] == std::pair<double, double>{1e-3, 0.01});
  CHECK(lw["router_no_decay"] == std::pair<double, double>{1e-3, 0.0});
  CHECK(lw["task_table"] == std::pair<double, double>{1e-2, 0.01});
  // the tensors are the model's own
  CHECK(groups[0].params.size() == 2);
  for (const auto& g : groups)
    for (size_t i = 0; i < g.params.size(); ++i) {
      INFO(g.param_names[i]);
      CHECK(g.params[i].is_same(m->named_parameters()[g.param_names[i]]));
    }
}

TEST_CASE("parameter groups: reference_compat uses the reference's name rule", "[optim]") {
  Tiny m;
  auto s = spec();
  s.reference_compat = true;
  auto n = names_by_group(build_param_groups(*m, s));
  // "ln.weight" and "router.norm.weight" contain neither "bias" nor "LayerNorm.weight": decayed.
  CHECK(n["backbone"] == Names{"fc.weight", "ln.weight", "emb.weight"});
  CHECK(n["backbone_no_decay"] == Names{"fc.bias", "ln.bias", "LayerNorm.weight", "LayerNorm.bias"});
  CHECK(n["router"] == Names{"router.proj.weight", "router.norm.weight"});
  CHECK(n["router_no_decay"] == Names{"router.proj.bias", "router.norm.bias"});
  CHECK(n["task_table"] == Names{"task_table.weight"});
}

TEST_CASE("parameter groups: frozen task table, empty groups, shared tensors", "[optim]") {
  SECTION("freeze_task_table leaves the table out and freezes it") {
    Tiny m;
    auto s = spec();
    s.freeze_task_table = true;
    auto groups = build_param_groups(*m, s);
    CHECK(group_names(groups) == std::vector<std::string>{"backbone", "backbone_no_decay", "router", "router_no_decay"});
    CHECK_FALSE(m->task_table->weight.requires_grad());
  }
  SECTION("a model without router or table has two groups") {
    torch::nn::Sequential seq(torch::nn::Linear(3, 3), torch::nn::LayerNorm(torch::nn::LayerNormOptions({3})));
    auto n = names_by_group(build_param_groups(*seq, spec()));
    CHECK(n == std::map<std::string, Names>{{"backbone", {"0.weight"}},
                                            {"backbone_no_decay", {"0.bias", "1.weight", "1.bias"}}});
  }
  SECTION("a tensor registered twice is optimised once, under its first name") {
    Tiny m;
    m->router->register_parameter("tied", m->emb->weight);
    auto groups = build_param_groups(*m, spec());
    size_t count = 0;
    for (const auto& g : groups)
      for (const auto& p : g.params) count += p.is_same(m->emb->weight);
    CHECK(count == 1);
    CHECK(names_by_group(groups)["backbone"].count("emb.weight") == 1);
    CHECK_NOTHROW(AdamW(groups, AdamWOptions{}));
  }
}

TEST_CASE("clip_params: trainable only by default, every model parameter with reference_compat", "[optim]") {
  Tiny m;
  auto s = spec();
  s.router_lr = 0.0;  // a router held fixed by lr 0 (stage 2)
  auto groups = build_param_groups(*m, s);
  auto by_default = impls(clip_params(groups, *m, false));
  auto compat = impls(clip_params(groups, *m, true));
  auto np = m->named_parameters();
  auto has = [&](const std::set<const void*>& set, const std::string& name) {
    return set.count(np[name].unsafeGetTensorImpl()) == 1;
  };
  for (const char* name : {"fc.weight", "fc.bias", "ln.weight", "emb.weight", "task_table.weight"}) {
    INFO(name);
    CHECK(has(by_default, name));
    CHECK(has(compat, name));
  }
  for (const char* name : {"router.proj.weight", "router.norm.bias", "frozen.weight", "frozen.bias"}) {
    INFO(name);
    CHECK_FALSE(has(by_default, name));
    CHECK(has(compat, name));
  }
  CHECK(compat.size() == np.size());
  CHECK(by_default.size() == np.size() - 6);  // 4 router + 2 frozen
}
