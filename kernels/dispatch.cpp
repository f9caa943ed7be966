// Checking and autograd wiring of the dispatch ops; the arithmetic is in dispatch_cpu.cpp.
#include "kernels/dispatch.h"

#include <torch/torch.h>

#include "kernels/dispatch_impl.h"

namespace tlmoe::kernels {

namespace {

torch::Tensor gather_impl(const torch::Tensor& x, const torch::Tensor& rows) {
#if TLMOE_WITH_CUDA
  if (x.is_cuda()) return detail::gather_rows_cuda(x, rows);
#endif
  return detail::gather_rows_cpu(x, rows);
}

torch::Tensor combine_impl(const torch::Tensor& ys, const torch::Tensor& w, const torch::Tensor& slot_of) {
#if TLMOE_WITH_CUDA
  if (ys.is_cuda()) return detail::combine_rows_cuda(ys, w, slot_of);
#endif
  return detail::combine_rows_cpu(ys, w, slot_of);
}

void check_device(const torch::Tensor& t, const char* what) {
  TORCH_CHECK(t.device().is_cpu() || (TLMOE_WITH_CUDA && t.is_cuda()), what, ": tensors on ", t.device(),
              " are not supported by this build (CUDA kernels ", TLMOE_WITH_CUDA ? "on" : "off", ")");
}

void check_plan_inputs(const torch::Tensor& idx, int64_t num_experts) {
  TORCH_CHECK(idx.dim() == 2, "make_plan: idx must be [B,K], got ", idx.sizes());
  TORCH_CHECK(idx.scalar_type() == torch::kLong, "make_plan: idx must be int64, got ", idx.scalar_type());
  TORCH_CHECK(num_experts > 0, "make_plan: num_experts must be positive, got ", num_experts);
  if (idx.numel() > 0) {
    int64_t lo = idx.min().item<int64_t>(), hi = idx.max().item<int64_t>();
    TORCH_CHECK(lo >= 0 && hi < num_experts, "make_plan: expert index out of range [0, ", num_experts,
                "): found values in [", lo, ", ", hi, "]");
  }
}

// gather: forward xs = x[rows]; backward dx = scatter_add of dxs into rows.
class GatherRows : public torch::autograd::Function<GatherRows> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& rows) {
    ctx->save_for_backward({rows});
    ctx->saved_data["B"] = x.size(0);
    return gather_impl(x, rows);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto rows = ctx->get_saved_variables()[0];
    int64_t B = ctx->saved_data["B"].toInt();
    return {detail::scatter_add_rows(grads[0].contiguous(), rows, B), torch::Tensor()};
  }
};

// combine: forward y[b] = sum_k w[b,k] ys[slot_of[b,k]].
class CombineRows : public torch::autograd::Function<CombineRows> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& ys,
                               const torch::Tensor& w, const torch::Tensor& slot_of) {
    ctx->save_for_backward({ys, w, slot_of});
    return combine_impl(ys, w, slot_of);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    auto dy = grads[0].contiguous();
    auto [dys, dw] = detail::combine_rows_backward(dy, saved[0], saved[1], saved[2]);
    return {dys, dw, torch::Tensor()};
  }
};

}  // namespace

DispatchPlan make_plan(const torch::Tensor& idx, int64_t num_experts) {
  check_plan_inputs(idx, num_experts);
  check_device(idx, "make_plan");
  if (idx.device().is_cpu()) return detail::make_plan_cpu(idx.contiguous(), num_experts);
  // The plan is O(B*K) integer work: build it on the host and move it (one small copy).
  DispatchPlan p = detail::make_plan_cpu(idx.cpu().contiguous(), num_experts);
  auto dev = idx.device();
  return {p.counts.to(dev), p.offsets.to(dev), p.rows.to(dev), p.slot_of.to(dev)};
}

torch::Tensor gather_rows(const torch::Tensor& x, const DispatchPlan& plan) {
  TORCH_CHECK(x.dim() >= 1, "gather_rows: x must have a batch dimension");
  TORCH_CHECK(x.device() == plan.rows.device(), "gather_rows: x is on ", x.device(), " but the plan on ",
              plan.rows.device());
  check_device(x, "gather_rows");
  TORCH_CHECK(x.size(0) == plan.slot_of.size(0), "gather_rows: x has ", x.size(0),
              " rows but the plan was made for ", plan.slot_of.size(0));
  return GatherRows::apply(x.contiguous(), plan.rows);
}

torch::Tensor combine_rows(const torch::Tensor& ys, const torch::Tensor& w, const DispatchPlan& plan) {
  TORCH_CHECK(w.dim() == 2 && w.sizes() == plan.slot_of.sizes(), "combine_rows: w must be ",
              plan.slot_of.sizes(), ", got ", w.sizes());
  TORCH_CHECK(ys.size(0) == plan.rows.size(0), "combine_rows: ys has ", ys.size(0), " rows, the plan ",
              plan.rows.size(0));
  TORCH_CHECK(ys.scalar_type() == w.scalar_type(), "combine_rows: ys is ", ys.scalar_type(), " but w is ",
              w.scalar_type());
  TORCH_CHECK(ys.device() == w.device() && ys.device() == plan.slot_of.device(), "combine_rows: ys on ",
              ys.device(), ", w on ", w.device(), ", plan on ", plan.slot_of.device());
  check_device(ys, "combine_rows");
  return CombineRows::apply(ys.contiguous(), w.contiguous(), plan.slot_of);
}

}  // namespace tlmoe::kernels
