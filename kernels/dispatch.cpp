// Checking, operator registration and autograd of the dispatch ops; the arithmetic is in
// dispatch_cpu.cpp and dispatch_cuda.cu. All registrations live here so that linking this
// object (referenced through the public functions) links every kernel it registers.
#include "kernels/dispatch.h"

#include <torch/library.h>
#include <torch/torch.h>

#include "kernels/dispatch_impl.h"

namespace tlmoe::kernels {

namespace {

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

bool supported_device(const Tensor& t) { return t.device().is_cpu() || (TLMOE_WITH_CUDA && t.is_cuda()); }

void check_device(const Tensor& t, const char* op) {
  TORCH_CHECK(supported_device(t), op, ": tensors on ", t.device(), " are not supported by this build (CUDA kernels ",
              TLMOE_WITH_CUDA ? "on" : "off", ")");
}

void check_float(const Tensor& t, const char* op, const char* what) {
  const auto s = t.scalar_type();
  TORCH_CHECK(s == torch::kFloat || s == torch::kDouble || s == torch::kHalf || s == torch::kBFloat16, op, ": ", what,
              " must be fp32, fp64, fp16 or bf16, got ", s);
}

void check_index(const Tensor& t, const char* op, const char* what, const Tensor& like) {
  TORCH_CHECK(t.scalar_type() == torch::kLong, op, ": ", what, " must be int64, got ", t.scalar_type());
  TORCH_CHECK(t.device() == like.device(), op, ": ", what, " is on ", t.device(), " but the data on ", like.device());
}

// fp64 data accumulates in fp64, everything else in fp32.
torch::ScalarType acc_type(const Tensor& ys) {
  return ys.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat;
}

// ---- operator handles (through the dispatcher: CPU, CUDA, Autograd kernels) --------------------

const auto& plan_op() {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("tlmoe::dispatch_plan", "")
                       .typed<std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor>(const Tensor&, int64_t)>();
  return op;
}
const auto& gather_op() {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("tlmoe::gather_rows", "")
                       .typed<Tensor(const Tensor&, const Tensor&)>();
  return op;
}
const auto& combine_op() {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("tlmoe::combine_rows", "")
                       .typed<Tensor(const Tensor&, const std::optional<Tensor>&, const Tensor&)>();
  return op;
}
const auto& combine_backward_op() {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("tlmoe::combine_rows_backward", "")
                       .typed<std::tuple<Tensor, Tensor>(const Tensor&, const Tensor&, const Tensor&, const Tensor&)>();
  return op;
}

// ---- checked device kernels (what the CPU and CUDA registrations run) ---------------------------

using PlanFn = detail::PlanTensors (*)(const Tensor&, int64_t);
using GatherFn = Tensor (*)(const Tensor&, const Tensor&);
using CombineFn = Tensor (*)(const Tensor&, const Tensor&, const Tensor&);
using CombineBwdFn = std::tuple<Tensor, Tensor> (*)(const Tensor&, const Tensor&, const Tensor&, const Tensor&);

template <PlanFn F>
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> plan_kernel(const Tensor& idx, int64_t num_experts) {
  TORCH_CHECK(idx.dim() == 2, "dispatch_plan: idx must be [B,K], got ", idx.sizes());
  TORCH_CHECK(idx.scalar_type() == torch::kLong, "dispatch_plan: idx must be int64, got ", idx.scalar_type());
  TORCH_CHECK(num_experts > 0, "dispatch_plan: num_experts must be positive, got ", num_experts);
  return F(idx.contiguous(), num_experts);
}

template <GatherFn F>
Tensor gather_kernel(const Tensor& x, const Tensor& rows) {
  TORCH_CHECK(x.dim() >= 1, "gather_rows: x must have a batch dimension");
  check_index(rows, "gather_rows", "rows", x);
  TORCH_CHECK(rows.dim() == 1, "gather_rows: rows must be 1-d, got ", rows.sizes());
  return F(x.contiguous(), rows.contiguous());
}

template <CombineFn F>
Tensor combine_kernel(const Tensor& ys, const std::optional<Tensor>& w, const Tensor& slot_of) {
  check_float(ys, "combine_rows", "ys");
  check_index(slot_of, "combine_rows", "slot_of", ys);
  TORCH_CHECK(slot_of.dim() == 2, "combine_rows: slot_of must be [B,K], got ", slot_of.sizes());
  TORCH_CHECK(slot_of.numel() == ys.size(0), "combine_rows: ys has ", ys.size(0), " rows, the plan ", slot_of.numel());
  Tensor wa;
  if (w && w->defined()) {
    TORCH_CHECK(w->sizes() == slot_of.sizes(), "combine_rows: w must be ", slot_of.sizes(), ", got ", w->sizes());
    TORCH_CHECK(w->scalar_type() == ys.scalar_type() || w->scalar_type() == torch::kFloat, "combine_rows: ys is ",
                ys.scalar_type(), " but w is ", w->scalar_type(), " (w must be ys's dtype or fp32)");
    TORCH_CHECK(w->device() == ys.device(), "combine_rows: ys on ", ys.device(), ", w on ", w->device());
    wa = w->to(acc_type(ys)).contiguous();
  }
  return F(ys.contiguous(), wa, slot_of.contiguous());
}

template <CombineBwdFn F>
std::tuple<Tensor, Tensor> combine_backward_kernel(const Tensor& dy, const Tensor& ys, const Tensor& w,
                                                   const Tensor& slot_of) {
  TORCH_CHECK(dy.scalar_type() == ys.scalar_type(), "combine_rows_backward: dy is ", dy.scalar_type(), " but ys is ",
              ys.scalar_type());
  TORCH_CHECK(dy.size(0) == slot_of.size(0) && dy.numel() / std::max<int64_t>(dy.size(0), 1) ==
                                                   ys.numel() / std::max<int64_t>(ys.size(0), 1),
              "combine_rows_backward: dy ", dy.sizes(), " does not match ys ", ys.sizes(), " and the plan");
  auto [dys, dw] = F(dy.contiguous(), ys.contiguous(), w.to(acc_type(ys)).contiguous(), slot_of.contiguous());
  return {dys, dw.to(w.scalar_type())};
}

// ---- autograd -------------------------------------------------------------------------------

// gather: xs = x[rows]; dx[b] = sum_k dxs[slot_of[b,k]] when the plan's slot_of is known (no
// atomics, no zero fill), else (a call by name with arbitrary rows) dx = 0, dx.index_add_(rows, dxs).
class GatherRows : public torch::autograd::Function<GatherRows> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& rows, const Tensor& slot_of) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({rows, slot_of});
    ctx->saved_data["B"] = x.size(0);
    ctx->saved_data["by_plan"] = slot_of.dim() == 2 && slot_of.size(0) == x.size(0) && slot_of.numel() == rows.numel();
    return gather_op().call(x, rows);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto s = ctx->get_saved_variables();
    const Tensor &rows = s[0], &slot_of = s[1];
    at::AutoDispatchBelowADInplaceOrView guard;
    if (ctx->saved_data["by_plan"].toBool())
      return {combine_op().call(grads[0], std::nullopt, slot_of), Tensor(), Tensor()};
    auto shape = grads[0].sizes().vec();
    shape[0] = ctx->saved_data["B"].toInt();
    return {torch::zeros(shape, grads[0].options()).index_add_(0, rows, grads[0]), Tensor(), Tensor()};
  }
};

// combine: y[b] = sum_k w[b,k] ys[slot_of[b,k]]; the fused backward kernel gives dys and dw.
class CombineRows : public torch::autograd::Function<CombineRows> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& ys, const Tensor& w, const Tensor& slot_of) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({ys, w, slot_of});
    return combine_op().call(ys, w, slot_of);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto s = ctx->get_saved_variables();
    auto [dys, dw] = combine_backward_op().call(grads[0], s[0], s[1], s[2]);
    return {dys, dw, Tensor()};
  }
};

// sum: y[b] = sum_k ys[slot_of[b,k]] (unit weights); dys = dy[rows].
class SumRows : public torch::autograd::Function<SumRows> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& ys, const Tensor& slot_of, const Tensor& rows) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({rows});
    return combine_op().call(ys, std::nullopt, slot_of);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return {gather_op().call(grads[0], ctx->get_saved_variables()[0]), Tensor(), Tensor()};
  }
};

// The Autograd kernels of the registered ops (a call by name records the graph too); rows is
// recovered from slot_of for the unit-weight backward of combine_rows.
Tensor rows_from_slots(const Tensor& slot_of) {
  auto b = torch::arange(slot_of.size(0), slot_of.options()).unsqueeze(1).expand_as(slot_of).reshape({-1});
  return torch::empty_like(b).index_put_({slot_of.reshape({-1})}, b);
}

// A call by name has no plan: an empty slot_of selects the index_add_ backward.
Tensor gather_autograd(const Tensor& x, const Tensor& rows) {
  return GatherRows::apply(x, rows, torch::empty({0}, rows.options()));
}
Tensor combine_autograd(const Tensor& ys, const std::optional<Tensor>& w, const Tensor& slot_of) {
  if (w && w->defined()) return CombineRows::apply(ys, *w, slot_of);
  return SumRows::apply(ys, slot_of, rows_from_slots(slot_of));
}
std::tuple<Tensor, Tensor> combine_backward_autograd(const Tensor& dy, const Tensor& ys, const Tensor& w,
                                                     const Tensor& slot_of) {
  at::AutoDispatchBelowADInplaceOrView guard;
  return combine_backward_op().call(dy, ys, w, slot_of);
}

}  // namespace

// ---- registration ---------------------------------------------------------------------------

TORCH_LIBRARY(tlmoe, m) {
  m.def("dispatch_plan(Tensor idx, int num_experts) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def("gather_rows(Tensor x, Tensor rows) -> Tensor");
  m.def("combine_rows(Tensor ys, Tensor? w, Tensor slot_of) -> Tensor");
  m.def("combine_rows_backward(Tensor dy, Tensor ys, Tensor w, Tensor slot_of) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(tlmoe, CPU, m) {
  m.impl("dispatch_plan", &plan_kernel<&detail::plan_cpu>);
  m.impl("gather_rows", &gather_kernel<&detail::gather_rows_cpu>);
  m.impl("combine_rows", &combine_kernel<&detail::combine_rows_cpu>);
  m.impl("combine_rows_backward", &combine_backward_kernel<&detail::combine_rows_backward_cpu>);
}

#if TLMOE_WITH_CUDA
TORCH_LIBRARY_IMPL(tlmoe, CUDA, m) {
  m.impl("dispatch_plan", &plan_kernel<&detail::plan_cuda>);
  m.impl("gather_rows", &gather_kernel<&detail::gather_rows_cuda>);
  m.impl("combine_rows", &combine_kernel<&detail::combine_rows_cuda>);
  m.impl("combine_rows_backward", &combine_backward_kernel<&detail::combine_rows_backward_cuda>);
}
#endif

TORCH_LIBRARY_IMPL(tlmoe, Autograd, m) {
  m.impl("gather_rows", &gather_autograd);
  m.impl("combine_rows", &combine_autograd);
  m.impl("combine_rows_backward", &combine_backward_autograd);
}

// ---- public functions -------------------------------------------------------------------------

bool DispatchPlan::single_expert() const {
  if (slot_of.dim() != 2 || slot_of.size(1) != 1) return false;
  for (size_t e = 0; e + 1 < host_offsets.size(); ++e)
    if (host_offsets[e + 1] - host_offsets[e] == slot_of.size(0)) return true;
  return false;
}

DispatchPlan make_plan(const torch::Tensor& idx, int64_t num_experts) {
  check_device(idx, "make_plan");
  TORCH_CHECK(idx.dim() == 2, "make_plan: idx must be [B,K], got ", idx.sizes());
  TORCH_CHECK(idx.scalar_type() == torch::kLong, "make_plan: idx must be int64, got ", idx.scalar_type());
  TORCH_CHECK(num_experts > 0, "make_plan: num_experts must be positive, got ", num_experts);
  auto [counts, offsets, rows, slot_of, invalid] = plan_op().call(idx, num_experts);
  // One device-to-host copy: the offsets and the number of out-of-range indices.
  auto host = torch::cat({offsets, invalid.view({1})}).to(torch::kCPU);
  const int64_t* h = host.data_ptr<int64_t>();
  if (h[num_experts + 1] != 0) {
    auto c = idx.to(torch::kCPU);
    TORCH_CHECK(false, "make_plan: expert index out of range [0, ", num_experts, "): ", h[num_experts + 1],
                " of ", idx.numel(), " values, found values in [", c.min().item<int64_t>(), ", ",
                c.max().item<int64_t>(), "]");
  }
  return {counts, offsets, rows, slot_of, std::vector<int64_t>(h, h + num_experts + 1)};
}

torch::Tensor gather_rows(const torch::Tensor& x, const DispatchPlan& plan) {
  TORCH_CHECK(x.dim() >= 1, "gather_rows: x must have a batch dimension");
  check_device(x, "gather_rows");
  TORCH_CHECK(x.device() == plan.rows.device(), "gather_rows: x is on ", x.device(), " but the plan on ",
              plan.rows.device());
  TORCH_CHECK(x.size(0) == plan.slot_of.size(0), "gather_rows: x has ", x.size(0),
              " rows but the plan was made for ", plan.slot_of.size(0));
  return GatherRows::apply(x, plan.rows, plan.slot_of);
}

torch::Tensor combine_rows(const torch::Tensor& ys, const torch::Tensor& w, const DispatchPlan& plan) {
  check_device(ys, "combine_rows");
  TORCH_CHECK(w.dim() == 2 && w.sizes() == plan.slot_of.sizes(), "combine_rows: w must be ", plan.slot_of.sizes(),
              ", got ", w.sizes());
  TORCH_CHECK(ys.dim() >= 1 && ys.size(0) == plan.rows.size(0), "combine_rows: ys has ", ys.dim() ? ys.size(0) : 0,
              " rows, the plan ", plan.rows.size(0));
  TORCH_CHECK(ys.scalar_type() == w.scalar_type() || w.scalar_type() == torch::kFloat, "combine_rows: ys is ",
              ys.scalar_type(), " but w is ", w.scalar_type(), " (w must be ys's dtype or fp32)");
  TORCH_CHECK(ys.device() == w.device() && ys.device() == plan.slot_of.device(), "combine_rows: ys on ", ys.device(),
              ", w on ", w.device(), ", plan on ", plan.slot_of.device());
  return CombineRows::apply(ys, w, plan.slot_of);
}

torch::Tensor sum_rows(const torch::Tensor& ys, const DispatchPlan& plan) {
  check_device(ys, "sum_rows");
  TORCH_CHECK(ys.dim() >= 1 && ys.size(0) == plan.rows.size(0), "sum_rows: ys has ", ys.dim() ? ys.size(0) : 0,
              " rows, the plan ", plan.rows.size(0));
  TORCH_CHECK(ys.device() == plan.slot_of.device(), "sum_rows: ys on ", ys.device(), ", plan on ",
              plan.slot_of.device());
  return SumRows::apply(ys, plan.slot_of, plan.rows);
}

}  // namespace tlmoe::kernels
