// kernels/dispatch: plan, gather and combine against naive loops (every dtype, the shared
// parity body of tests/dispatch_parity.h); gradients by central differences in double; the ops
// called by name through the dispatcher; error messages.
#include <torch/torch.h>

#include <catch2/catch.hpp>

#include "dispatch_parity.h"
#include "kernels/dispatch.h"

using namespace tlmoe::kernels;

TEST_CASE("plan: counts, offsets and a stable expert-contiguous permutation", "[dispatch]") {
  // idx [B=4, K=2] over E=3 experts; expert 1 is never chosen (an empty expert).
  auto idx = torch::tensor({0, 2, 2, 0, 0, 2, 2, 0}, torch::kLong).view({4, 2});
  auto plan = make_plan(idx, 3);
  CHECK(torch::equal(plan.counts, torch::tensor({4, 0, 4}, torch::kLong)));
  CHECK(torch::equal(plan.offsets, torch::tensor({0, 4, 4, 8}, torch::kLong)));
  // expert 0 gets examples 0,1,2,3 in order; expert 2 gets 0,1,2,3 in order
  CHECK(torch::equal(plan.rows, torch::tensor({0, 1, 2, 3, 0, 1, 2, 3}, torch::kLong)));
  CHECK(torch::equal(plan.slot_of, torch::tensor({0, 4, 5, 1, 2, 6, 7, 3}, torch::kLong).view({4, 2})));
}

TEST_CASE("gather and combine equal naive loops", "[dispatch]") {
  torch::manual_seed(0);
  const int64_t B = 7, K = 2, E = 4, S = 3, D = 5;
  auto idx = torch::randint(0, E, {B, K}, torch::kLong);
  auto x = torch::randn({B, S, D});
  auto w = torch::rand({B, K});
  auto plan = make_plan(idx, E);
  auto xs = gather_rows(x, plan);
  REQUIRE(xs.sizes() == torch::IntArrayRef({B * K, S, D}));
  // naive: slot s holds x[rows[s]], and expert of slot s is nondecreasing
  for (int64_t s = 0; s < B * K; ++s) CHECK(torch::equal(xs[s], x[plan.rows[s].item<int64_t>()]));
  // experts transform their slice: ys = xs * (expert+1)
  auto ys = xs.clone();
  for (int64_t e = 0; e < E; ++e) {
    auto lo = plan.offsets[e].item<int64_t>(), hi = plan.offsets[e + 1].item<int64_t>();
    ys.slice(0, lo, hi).mul_(e + 1);
  }
  auto y = combine_rows(ys, w, plan);
  auto expect = torch::zeros({B, S, D});
  for (int64_t b = 0; b < B; ++b)
    for (int64_t k = 0; k < K; ++k) expect[b] += w[b][k] * x[b] * (idx[b][k].item<int64_t>() + 1);
  CHECK(torch::allclose(y, expect, 1e-5, 1e-6));
}

TEST_CASE("gather and combine gradients pass gradcheck in double precision", "[dispatch]") {
  torch::manual_seed(1);
  const int64_t B = 5, K = 3, E = 3;
  auto idx = torch::stack({torch::randperm(E, torch::kLong), torch::randperm(E, torch::kLong),
                           torch::randperm(E, torch::kLong), torch::randperm(E, torch::kLong),
                           torch::randperm(E, torch::kLong)});
  REQUIRE(idx.sizes() == torch::IntArrayRef({B, K}));
  auto plan = make_plan(idx, E);
  auto x = torch::randn({B, 2, 3}, torch::kDouble).requires_grad_();
  auto w = torch::rand({B, K}, torch::kDouble).requires_grad_();
  // f(x, w) = combine(gather(x) * per-slot scale, w); compare autograd with central differences.
  auto scale = torch::rand({B * K, 1, 1}, torch::kDouble) + 0.5;
  auto f = [&](const torch::Tensor& xx, const torch::Tensor& ww) {
    return (combine_rows(gather_rows(xx, plan) * scale, ww, plan) * torch::arange(6, torch::kDouble).view({1, 2, 3}))
        .sum();
  };
  auto out = f(x, w);
  auto grads = torch::autograd::grad({out}, {x, w});
  const double h = 1e-6;
  for (auto [param, g] : {std::pair{x, grads[0]}, std::pair{w, grads[1]}}) {
    auto flat = param.detach().reshape({-1});
    for (int64_t i = 0; i < flat.numel(); ++i) {
      auto plus = flat.clone(), minus = flat.clone();
      plus[i] += h;
      minus[i] -= h;
      double num;
      if (param.data_ptr() == x.data_ptr())
        num = (f(plus.view(x.sizes()), w.detach()) - f(minus.view(x.sizes()), w.detach())).item<double>() / (2 * h);
      else
        num = (f(x.detach(), plus.view(w.sizes())) - f(x.detach(), minus.view(w.sizes()))).item<double>() / (2 * h);
      CHECK(g.reshape({-1})[i].item<double>() == Approx(num).epsilon(1e-6).margin(1e-8));
    }
  }
}

TEST_CASE("dispatch errors are clear", "[dispatch]") {
  auto idx = torch::tensor({0, 3}, torch::kLong).view({2, 1});
  CHECK_THROWS_WITH(make_plan(idx, 3), Catch::Contains("expert index out of range [0, 3)") &&
                                          Catch::Contains("found values in [0, 3]"));
  CHECK_THROWS_WITH(make_plan(torch::tensor({-1, 0}, torch::kLong).view({2, 1}), 3),
                    Catch::Contains("expert index out of range"));
  CHECK_THROWS_WITH(make_plan(idx.to(torch::kInt), 4), Catch::Contains("must be int64"));
  CHECK_THROWS_WITH(make_plan(idx.view({2}), 4), Catch::Contains("idx must be [B,K]"));
  auto plan = make_plan(idx, 4);
  CHECK_THROWS_WITH(gather_rows(torch::zeros({3, 2}), plan), Catch::Contains("plan was made for 2"));
  auto ys = torch::zeros({2, 4});
  CHECK_THROWS_WITH(combine_rows(ys, torch::ones({2, 1}, torch::kDouble), plan), Catch::Contains("but w is"));
  CHECK_THROWS_WITH(combine_rows(ys, torch::ones({2, 2}), plan), Catch::Contains("w must be [2, 1]"));
  CHECK_THROWS_WITH(combine_rows(torch::zeros({3, 4}), torch::ones({2, 1}), plan), Catch::Contains("ys has 3 rows"));
  CHECK_THROWS_WITH(combine_rows(ys.to(torch::kLong), torch::ones({2, 1}).to(torch::kLong), plan),
                    Catch::Contains("must be fp32, fp64, fp16 or bf16"));
  // a device this build does not run (meta tensors stand in for an unsupported device)
  CHECK_THROWS_WITH(gather_rows(torch::zeros({2, 4}, torch::Device(torch::kMeta)), plan),
                    Catch::Contains("not supported by this build") || Catch::Contains("but the plan on"));
}

TEST_CASE("dispatch parity with the naive loop on CPU in every dtype", "[dispatch]") {
  for (auto dt : {torch::kDouble, torch::kFloat, torch::kHalf, torch::kBFloat16}) tlmoe::testing::check_dispatch_parity(torch::kCPU, dt);
  // mixed precision: fp16/bf16 activations with fp32 routing weights
  tlmoe::testing::check_dispatch_parity(torch::kCPU, torch::kHalf, /*w_fp32=*/true);
  tlmoe::testing::check_dispatch_parity(torch::kCPU, torch::kBFloat16, /*w_fp32=*/true);
}

TEST_CASE("dispatch ops are registered operators with autograd", "[dispatch]") {
  auto& d = c10::Dispatcher::singleton();
  for (const char* name : {"tlmoe::dispatch_plan", "tlmoe::gather_rows", "tlmoe::combine_rows",
                           "tlmoe::combine_rows_backward"})
    CHECK(d.findSchema({name, ""}).has_value());
  // by name: gather with arbitrary (repeated) rows, then a weighted combine; gradients against
  // index_select / explicit sums
  auto gather = d.findSchemaOrThrow("tlmoe::gather_rows", "").typed<torch::Tensor(const torch::Tensor&, const torch::Tensor&)>();
  auto x = torch::randn({4, 3}, torch::kDouble).requires_grad_();
  auto rows = torch::tensor({2, 0, 2, 3, 2}, torch::kLong);
  auto xs = gather.call(x, rows);
  CHECK(torch::equal(xs.detach(), x.detach().index_select(0, rows)));
  auto G = torch::randn({5, 3}, torch::kDouble);
  (xs * G).sum().backward();
  auto expect = torch::zeros({4, 3}, torch::kDouble).index_add_(0, rows, G);
  CHECK(torch::allclose(x.grad(), expect));

  auto combine = d.findSchemaOrThrow("tlmoe::combine_rows", "")
                     .typed<torch::Tensor(const torch::Tensor&, const std::optional<torch::Tensor>&, const torch::Tensor&)>();
  auto ys = torch::randn({4, 2}, torch::kDouble).requires_grad_();
  auto w = torch::rand({2, 2}, torch::kDouble).requires_grad_();
  auto slot_of = torch::tensor({3, 0, 1, 2}, torch::kLong).view({2, 2});
  auto y = combine.call(ys, w, slot_of);
  auto y0 = w[0][0] * ys[3] + w[0][1] * ys[0], y1 = w[1][0] * ys[1] + w[1][1] * ys[2];
  CHECK(torch::allclose(y.detach(), torch::stack({y0, y1}).detach()));
  auto H = torch::randn({2, 2}, torch::kDouble);
  (y * H).sum().backward();
  CHECK(torch::allclose(w.grad()[0][1], (H[0] * ys[0]).sum().detach()));
  CHECK(torch::allclose(ys.grad()[3], (w[0][0] * H[0]).detach()));
  // unit weights (None): the backward of a plan's gather
  auto z = combine.call(ys.detach().requires_grad_(), std::nullopt, slot_of);
  CHECK(torch::allclose(z[1], (ys[1] + ys[2]).detach()));
}
