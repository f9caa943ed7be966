#include "train/optim.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <set>
#include <tuple>
#include <unordered_set>

#include "common/error.h"

namespace tlmoe::train {

AdamWOptions adamw_options(const Config& cfg) {
  AdamWOptions o;
  o.beta1 = cfg.train.adam_beta1;
  o.beta2 = cfg.train.adam_beta2;
  o.eps = cfg.train.adam_eps;
  return o;
}


namespace {

const char* const kStatePrefix = "adamw.";

// fp64 parameters keep fp64 state; everything else (fp32, fp16, bf16) keeps fp32 state.
torch::ScalarType state_dtype(const torch::Tensor& p) {
  return p.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat;
}

[[noreturn]] void state_error(const std::string& msg) { throw DataError("optimizer state", 0, msg); }

// Defined grads of `params`, bucketed by (device, dtype) so each bucket can take the fused
// multi-tensor path on an accelerator.
using BucketKey = std::tuple<int, int, int>;  // device type, device index, dtype
std::map<BucketKey, std::vector<torch::Tensor>> grad_buckets(const std::vector<torch::Tensor>& params) {
  std::map<BucketKey, std::vector<torch::Tensor>> out;
  for (const auto& p : params) {
    if (!p.defined() || !p.grad().defined()) continue;
    const auto& g = p.grad();
    TORCH_CHECK(!g.is_sparse(), "gradient clipping does not support sparse gradients");
    BucketKey key{static_cast<int>(g.device().type()), static_cast<int>(g.device().index()),
                  static_cast<int>(g.scalar_type())};
    out[key].push_back(g);
  }
  return out;
}

// Calls fn(full name, parameter, owning module) for every parameter of `m` and its descendants,
// depth first in registration order, each tensor once (a shared tensor under its first name).
void walk_parameters(torch::nn::Module& m, const std::string& prefix,
                     std::unordered_set<const c10::TensorImpl*>& seen,
                     const std::function<void(const std::string&, const std::string&, torch::Tensor&,
                                              torch::nn::Module&)>& fn) {
  for (auto& item : m.named_parameters(/*recurse=*/false)) {
    torch::Tensor& p = item.value();
    if (!seen.insert(p.unsafeGetTensorImpl()).second) continue;
    fn(prefix + item.key(), item.key(), p, m);
  }
  for (auto& child : m.named_children()) walk_parameters(*child.value(), prefix + child.key() + ".", seen, fn);
}

bool starts_with(const std::string& s, const std::string& prefix) {
  return !prefix.empty() && s.compare(0, prefix.size(), prefix) == 0;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// One fused pass over a CPU parameter (fp32 or fp64, state of the same dtype), element by element
// the same arithmetic as the multi-tensor path below:
//   m <- b1 m + (1-b1) g;  v <- b2 v + (1-b2) g^2;  p <- p + step_size m / (sqrt(v) + eps);
//   p <- p + (-lr wd) p
// Reads p, g, m, v and writes p, m, v once (the multi-tensor path makes eight passes).
template <typename T>
void fused_adamw_cpu(torch::Tensor& p, const torch::Tensor& g, torch::Tensor& m, torch::Tensor& v, double b1,
                     double b2, double step_size, double eps, double decay) {
  T* pp = p.data_ptr<T>();
  const T* gp = g.data_ptr<T>();
  T* mp = m.data_ptr<T>();
  T* vp = v.data_ptr<T>();
  const T tb1 = static_cast<T>(b1), tb1c = static_cast<T>(1.0 - b1), tb2 = static_cast<T>(b2),
          tb2c = static_cast<T>(1.0 - b2), ts = static_cast<T>(step_size), te = static_cast<T>(eps),
          td = static_cast<T>(decay);
  at::parallel_for(0, p.numel(), 16384, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const T gi = gp[i];
      const T mi = mp[i] * tb1 + gi * tb1c;
      const T vi = vp[i] * tb2 + gi * gi * tb2c;
      mp[i] = mi;
      vp[i] = vi;
      T pi = pp[i] + ts * (mi / (std::sqrt(vi) + te));
      if (decay != 0) pi = pi + td * pi;
      pp[i] = pi;
    }
  });
}

bool fusable_cpu(const torch::Tensor& p, const torch::Tensor& g, const torch::Tensor& m) {
  return p.device().is_cpu() && g.device().is_cpu() && p.scalar_type() == m.scalar_type() &&
         g.scalar_type() == m.scalar_type() && (p.scalar_type() == torch::kFloat || p.scalar_type() == torch::kDouble) &&
         p.is_contiguous() && g.is_contiguous() && !g.is_sparse();
}

}  // namespace

// ---- AdamW ----------------------------------------------------------------------------------

AdamW::AdamW(std::vector<ParamGroup> groups, AdamWOptions opts) : groups_(std::move(groups)), opts_(opts) {
  TORCH_CHECK(opts_.beta1 >= 0 && opts_.beta1 < 1, "AdamW: beta1 must be in [0, 1), got ", opts_.beta1);
  TORCH_CHECK(opts_.beta2 >= 0 && opts_.beta2 < 1, "AdamW: beta2 must be in [0, 1), got ", opts_.beta2);
  TORCH_CHECK(opts_.eps >= 0, "AdamW: eps must be >= 0, got ", opts_.eps);
  std::set<std::string> names;
  std::unordered_set<const c10::TensorImpl*> tensors;
  torch::NoGradGuard no_grad;
  for (const auto& g : groups_) {
    TORCH_CHECK(g.params.size() == g.param_names.size(), "AdamW: group '", g.name, "' has ", g.params.size(),
                " parameters but ", g.param_names.size(), " names");
    TORCH_CHECK(g.lr >= 0, "AdamW: group '", g.name, "' has a negative lr ", g.lr);
    TORCH_CHECK(g.weight_decay >= 0, "AdamW: group '", g.name, "' has a negative weight_decay ", g.weight_decay);
    std::vector<State> st;
    st.reserve(g.params.size());
    for (size_t i = 0; i < g.params.size(); ++i) {
      const auto& p = g.params[i];
      const auto& name = g.param_names[i];
      TORCH_CHECK(p.defined(), "AdamW: parameter '", name, "' is undefined");
      TORCH_CHECK(p.is_floating_point(), "AdamW: parameter '", name, "' has dtype ", p.scalar_type(),
                  "; only floating-point parameters can be optimised");
      TORCH_CHECK(names.insert(name).second, "AdamW: parameter name '", name, "' appears twice");
      TORCH_CHECK(tensors.insert(p.unsafeGetTensorImpl()).second, "AdamW: parameter '", name,
                  "' is the same tensor as another parameter");
      // State starts as zeros at step 0, as HF's lazily created state; created here so that every
      // parameter has saveable state even before its first gradient.
      auto o = p.options().dtype(state_dtype(p));
      st.push_back({0, torch::zeros(p.sizes(), o), torch::zeros(p.sizes(), o)});
    }
    state_.push_back(std::move(st));
  }
}

void AdamW::step(double lr_multiplier) {
  torch::NoGradGuard no_grad;
  const double b1 = opts_.beta1, b2 = opts_.beta2;
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    const auto& group = groups_[gi];
    const double lr = group.lr * lr_multiplier;
    std::vector<torch::Tensor> work, grads, exp_avg, exp_avg_sq;
    std::vector<std::pair<torch::Tensor, torch::Tensor>> write_back;  // (parameter, fp32 copy)
    std::vector<c10::Scalar> step_sizes;
    for (size_t i = 0; i < group.params.size(); ++i) {
      const auto& p = group.params[i];
      const auto& g = p.grad();
      if (!g.defined()) continue;
      TORCH_CHECK(!g.is_sparse(), "AdamW does not support sparse gradients (parameter '", group.param_names[i],
                  "')");
      State& s = state_[gi][i];
      const auto dt = s.exp_avg.scalar_type();
      if (fusable_cpu(p, g, s.exp_avg)) {
        s.step += 1;
        const double bc1 = 1.0 - std::pow(b1, static_cast<double>(s.step));
        const double bc2 = 1.0 - std::pow(b2, static_cast<double>(s.step));
        const double step_size = -(lr * std::sqrt(bc2) / bc1);
        torch::Tensor pw = p;  // shares storage: the update is in place
        if (dt == torch::kDouble)
          fused_adamw_cpu<double>(pw, g, s.exp_avg, s.exp_avg_sq, b1, b2, step_size, opts_.eps, -lr * group.weight_decay);
        else
          fused_adamw_cpu<float>(pw, g, s.exp_avg, s.exp_avg_sq, b1, b2, step_size, opts_.eps, -lr * group.weight_decay);
        continue;
      }
      torch::Tensor w = p;
      if (p.scalar_type() != dt) {
        w = p.to(dt);
        write_back.emplace_back(p, w);
      }
      work.push_back(w);
      grads.push_back(g.scalar_type() == dt ? g : g.to(dt));
      exp_avg.push_back(s.exp_avg);
      exp_avg_sq.push_back(s.exp_avg_sq);
      s.step += 1;
      // As HF: the bias corrections are folded into one step size computed in double.
      const double bc1 = 1.0 - std::pow(b1, static_cast<double>(s.step));
      const double bc2 = 1.0 - std::pow(b2, static_cast<double>(s.step));
      step_sizes.emplace_back(-(lr * std::sqrt(bc2) / bc1));
    }
    if (work.empty()) continue;
    // m <- b1*m + (1-b1)*g ; v <- b2*v + (1-b2)*g*g
    at::_foreach_mul_(exp_avg, b1);
    at::_foreach_add_(exp_avg, grads, 1.0 - b1);
    at::_foreach_mul_(exp_avg_sq, b2);
    at::_foreach_addcmul_(exp_avg_sq, grads, grads, 1.0 - b2);
    // p <- p - step_size * m / (sqrt(v) + eps)
    auto denom = at::_foreach_sqrt(exp_avg_sq);
    at::_foreach_add_(denom, opts_.eps);
    at::_foreach_addcdiv_(work, exp_avg, denom, step_sizes);
    // p <- p + (-lr*wd) * p, on the p just updated (HF order)
    if (group.weight_decay > 0) at::_foreach_add_(work, work, -lr * group.weight_decay);
    for (auto& [p, w] : write_back) p.copy_(w);
  }
}

void AdamW::zero_grad() {
  for (auto& g : groups_)
    for (auto& p : g.params)
      if (p.grad().defined()) p.mutable_grad().reset();
}

std::vector<std::pair<std::string, torch::Tensor>> AdamW::state_tensors() const {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    for (size_t i = 0; i < groups_[gi].params.size(); ++i) {
      const std::string base = kStatePrefix + groups_[gi].param_names[i];
      const State& s = state_[gi][i];
      out.emplace_back(base + ".step", torch::scalar_tensor(s.step, torch::kLong));
      out.emplace_back(base + ".exp_avg", s.exp_avg.detach());
      out.emplace_back(base + ".exp_avg_sq", s.exp_avg_sq.detach());
    }
  }
  return out;
}

void AdamW::load_state_tensors(const std::map<std::string, torch::Tensor>& state) {
  // Check everything before changing anything: a failed load leaves the optimizer as it was.
  std::set<std::string> expected;
  struct Planned {
    State* dst;
    int64_t step;
    const torch::Tensor* exp_avg;
    const torch::Tensor* exp_avg_sq;
  };
  std::vector<Planned> plan;
  auto find = [&](const std::string& key) -> const torch::Tensor& {
    auto it = state.find(key);
    if (it == state.end() || !it->second.defined()) state_error("entry '" + key + "' is missing");
    return it->second;
  };
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    for (size_t i = 0; i < groups_[gi].params.size(); ++i) {
      const auto& p = groups_[gi].params[i];
      const std::string base = kStatePrefix + groups_[gi].param_names[i];
      for (const char* suffix : {".step", ".exp_avg", ".exp_avg_sq"}) expected.insert(base + suffix);
      const auto& st = find(base + ".step");
      if (st.numel() != 1 || st.is_floating_point() || st.is_complex() || st.scalar_type() == torch::kBool)
        state_error("entry '" + base + ".step' must be one integer, got shape " + c10::str(st.sizes()) +
                    " dtype " + c10::str(st.scalar_type()));
      const int64_t step = st.item<int64_t>();
      if (step < 0) state_error("entry '" + base + ".step' is negative (" + std::to_string(step) + ")");
      const torch::Tensor* moments[2];
      int k = 0;
      for (const char* suffix : {".exp_avg", ".exp_avg_sq"}) {
        const auto& t = find(base + suffix);
        if (t.sizes() != p.sizes())
          state_error("entry '" + base + suffix + "' has shape " + c10::str(t.sizes()) + ", the parameter " +
                      c10::str(p.sizes()));
        if (!t.is_floating_point())
          state_error("entry '" + base + suffix + "' has dtype " + c10::str(t.scalar_type()) +
                      ", not a floating-point type");
        moments[k++] = &t;
      }
      plan.push_back({&state_[gi][i], step, moments[0], moments[1]});
    }
  }
  for (const auto& [key, t] : state) {
    if (starts_with(key, kStatePrefix) && !expected.count(key))
      state_error("entry '" + key + "' names no parameter of this optimizer (was the model or the group "
                  "layout changed?)");
  }
  torch::NoGradGuard no_grad;
  for (const auto& pl : plan) {
    pl.dst->step = pl.step;
    pl.dst->exp_avg.copy_(*pl.exp_avg);
    pl.dst->exp_avg_sq.copy_(*pl.exp_avg_sq);
  }
}

// ---- schedule -------------------------------------------------------------------------------

double linear_warmup_decay(int64_t step, int64_t warmup, int64_t total) {
  if (step < warmup) return static_cast<double>(step) / static_cast<double>(std::max<int64_t>(1, warmup));
  return std::max(0.0, static_cast<double>(total - step) / static_cast<double>(std::max<int64_t>(1, total - warmup)));
}

int64_t warmup_steps(double ratio, int64_t total) {
  TORCH_CHECK(ratio >= 0 && std::isfinite(ratio), "warmup ratio must be finite and >= 0, got ", ratio);
  TORCH_CHECK(total >= 0, "total steps must be >= 0, got ", total);
  return static_cast<int64_t>(ratio * static_cast<double>(total));  // truncates toward zero, as int()
}

// ---- clipping -------------------------------------------------------------------------------

double clip_grad_norm(const std::vector<torch::Tensor>& params, double max_norm) {
  torch::NoGradGuard no_grad;
  auto buckets = grad_buckets(params);
  if (buckets.empty()) return 0.0;
  std::vector<torch::Tensor> norms;  // fp64 scalars on one device
  torch::Device dev = buckets.begin()->second.front().device();
  for (auto& [key, grads] : buckets) {
    const auto dt = static_cast<torch::ScalarType>(std::get<2>(key));
    // Per-tensor norms accumulate in fp32 (fp64 for fp64 grads), never in half precision.
    auto part = at::_foreach_norm(grads, 2, dt == torch::kDouble ? torch::kDouble : torch::kFloat);
    for (auto& n : part) norms.push_back(n.to(dev, torch::kDouble));
  }
  const double norm = torch::stack(norms).norm().item<double>();
  if (max_norm > 0 && std::isfinite(norm)) {
    const double coef = max_norm / (norm + 1e-6);
    if (coef < 1.0)
      for (auto& [key, grads] : buckets) at::_foreach_mul_(grads, coef);
  }
  return norm;
}

bool grads_finite(const std::vector<torch::Tensor>& params) {
  torch::NoGradGuard no_grad;
  auto buckets = grad_buckets(params);
  if (buckets.empty()) return true;
  torch::Device dev = buckets.begin()->second.front().device();
  std::vector<torch::Tensor> ok;
  for (auto& [key, grads] : buckets)
    for (auto& g : grads) ok.push_back(torch::isfinite(g).all().to(dev));
  return torch::stack(ok).all().item<bool>();
}

// ---- parameter groups -------------------------------------------------------------------------

std::vector<ParamGroup> build_param_groups(torch::nn::Module& model, const GroupSpec& spec) {
  ParamGroup backbone{"backbone", {}, {}, spec.lr, spec.weight_decay};
  ParamGroup backbone_nd{"backbone_no_decay", {}, {}, spec.lr, 0.0};
  ParamGroup router{"router", {}, {}, spec.router_lr, spec.weight_decay};
  ParamGroup router_nd{"router_no_decay", {}, {}, spec.router_lr, 0.0};
  ParamGroup task{"task_table", {}, {}, spec.task_lr, spec.weight_decay};
  auto add = [](ParamGroup& g, const std::string& name, const torch::Tensor& p) {
    g.params.push_back(p);
    g.param_names.push_back(name);
  };
  std::unordered_set<const c10::TensorImpl*> seen;
  walk_parameters(model, "", seen,
                  [&](const std::string& name, const std::string& local, torch::Tensor& p, torch::nn::Module& owner) {
                    if (starts_with(name, spec.task_table_prefix)) {
                      if (spec.freeze_task_table) {
                        p.set_requires_grad(false);
                        return;
                      }
                      if (p.requires_grad()) add(task, name, p);
                      return;
                    }
                    if (!p.requires_grad()) return;
                    bool no_decay;
                    if (spec.reference_compat) {
                      no_decay = name.find("bias") != std::string::npos ||
                                 name.find("LayerNorm.weight") != std::string::npos;
                    } else {
                      no_decay = local == "bias" || ends_with(local, "_bias") ||
                                 dynamic_cast<torch::nn::LayerNormImpl*>(&owner) != nullptr;
                    }
                    const bool is_router = starts_with(name, spec.router_prefix);
                    add(is_router ? (no_decay ? router_nd : router) : (no_decay ? backbone_nd : backbone), name, p);
                  });
  std::vector<ParamGroup> out;
  for (auto* g : {&backbone, &backbone_nd, &router, &router_nd, &task})
    if (!g->params.empty()) out.push_back(std::move(*g));
  return out;
}

std::vector<torch::Tensor> clip_params(const std::vector<ParamGroup>& groups, torch::nn::Module& model,
                                       bool reference_compat) {
  std::vector<torch::Tensor> out;
  if (reference_compat) {
    std::unordered_set<const c10::TensorImpl*> seen;
    walk_parameters(model, "", seen,
                    [&](const std::string&, const std::string&, torch::Tensor& p, torch::nn::Module&) {
                      out.push_back(p);
                    });
    return out;
  }
  for (const auto& g : groups) {
    if (!(g.lr > 0)) continue;
    for (const auto& p : g.params)
      if (p.requires_grad()) out.push_back(p);
  }
  return out;
}

}  // namespace tlmoe::train
