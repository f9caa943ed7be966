// One parity test body for the dispatch ops on any device (STYLE.md §5): the CPU unit tests and
// the GPU tests run the same cases. The reference is a naive loop in double precision on the
// host, written from the definitions in kernels/dispatch.h, not from the kernels.
#pragma once

#include <torch/torch.h>

#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "kernels/dispatch.h"

namespace tlmoe::testing {

struct DispatchCase {
  std::string name;
  torch::Tensor idx;                 // [B,K] int64 on the host
  int64_t experts;
  std::vector<int64_t> feature_shape;  // x is [B, feature_shape...]
  bool non_contiguous = false;         // x and w passed as strided views
};

// Cases: empty experts, K = 1, K = m, uneven counts, every example on one expert, a single
// example, rows that are not a multiple of 16 bytes, non-contiguous inputs.
inline std::vector<DispatchCase> dispatch_cases() {
  std::vector<DispatchCase> v;
  auto t = [](std::vector<int64_t> vals, int64_t B, int64_t K) {
    return torch::tensor(vals, torch::kLong).view({B, K});
  };
  v.push_back({"K=1, uneven, expert 1 empty", t({0, 2, 2, 0, 0, 2, 0}, 7, 1), 3, {5, 8}});
  v.push_back({"K=m=3, every expert once per example", t({2, 0, 1, 0, 1, 2, 1, 2, 0, 0, 2, 1}, 4, 3), 3, {3, 4}});
  v.push_back({"K=2 of m=4, uneven", t({3, 1, 1, 3, 0, 3, 3, 0, 1, 0}, 5, 2), 4, {2, 3, 4}});
  v.push_back({"all examples on one expert", t({1, 1, 1, 1, 1, 1}, 6, 1), 3, {16}});
  v.push_back({"one example", t({2}, 1, 1), 3, {7}});
  v.push_back({"odd row size (3 elements)", t({1, 0, 1, 1, 0}, 5, 1), 2, {3}});
  v.push_back({"non-contiguous inputs", t({0, 1, 1, 0, 2, 2, 0, 1}, 4, 2), 3, {6, 8}, true});
  {  // a larger random case: 64 examples, top-2 of 5 (duplicates allowed, as sampled routes can give)
    auto g = torch::Generator(at::detail::createCPUGenerator(7));
    v.push_back({"random 64x2 over 5", torch::randint(0, 5, {64, 2}, g, torch::kLong), 5, {4, 24}});
  }
  return v;
}

// Naive reference in double: y[b] = sum_k w[b,k] * f(x[b], e=idx[b,k]) with the expert
// transform f(x, e) = x * (e + 1) + e (so a wrong slot or expert is visible), and the
// gradients of L = sum(y * G) for a fixed G.
struct NaiveDispatch {
  torch::Tensor y, dx, dw;
};

inline NaiveDispatch naive_dispatch(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& idx,
                                    const torch::Tensor& G) {
  auto xd = x.to(torch::kCPU, torch::kDouble), wd = w.to(torch::kCPU, torch::kDouble),
       gd = G.to(torch::kCPU, torch::kDouble);
  auto ic = idx.to(torch::kCPU);
  const int64_t B = ic.size(0), K = ic.size(1);
  NaiveDispatch r{torch::zeros_like(xd), torch::zeros_like(xd), torch::zeros_like(wd)};
  for (int64_t b = 0; b < B; ++b)
    for (int64_t k = 0; k < K; ++k) {
      const double e = static_cast<double>(ic[b][k].item<int64_t>());
      const double wk = wd[b][k].item<double>();
      auto f = xd[b] * (e + 1) + e;
      r.y[b] += wk * f;
      r.dx[b] += wk * (e + 1) * gd[b];
      r.dw[b][k] = (gd[b] * f).sum();
    }
  return r;
}

// The same computation through the ops: plan, gather, per-expert transform on contiguous
// slices, weighted combine; gradients by autograd.
inline NaiveDispatch ops_dispatch(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& idx,
                                  int64_t experts, const torch::Tensor& G) {
  auto xr = x.detach().requires_grad_();
  auto wr = w.detach().requires_grad_();
  auto plan = kernels::make_plan(idx, experts);
  auto xs = kernels::gather_rows(xr, plan);
  std::vector<torch::Tensor> parts;
  for (int64_t e = 0; e < experts; ++e) {
    const int64_t lo = plan.host_offsets[e], hi = plan.host_offsets[e + 1];
    if (hi > lo) parts.push_back(xs.slice(0, lo, hi) * static_cast<double>(e + 1) + static_cast<double>(e));
  }
  auto ys = torch::cat(parts, 0);
  auto y = kernels::combine_rows(ys, wr, plan);
  (y.to(torch::kDouble) * G.to(y.device(), torch::kDouble)).sum().backward();
  return {y.detach(), xr.grad(), wr.grad()};
}

inline double tolerance(torch::ScalarType t) {
  switch (t) {
    case torch::kDouble: return 1e-12;
    case torch::kFloat: return 1e-5;
    case torch::kHalf: return 2e-3;
    default: return 1.6e-2;  // bf16
  }
}

// Checks plan invariants, gather (exact), combine and both gradients against the naive loop,
// for one device and dtype. w is fp32 for half types when w_fp32 (the mixed-precision path).
inline void check_dispatch_parity(const torch::Device& dev, torch::ScalarType dtype, bool w_fp32 = false) {
  for (const auto& c : dispatch_cases()) {
    INFO("case: " << c.name << ", dtype " << dtype << ", device " << dev << (w_fp32 ? ", w fp32" : ""));
    const int64_t B = c.idx.size(0), K = c.idx.size(1);
    auto gen = torch::Generator(at::detail::createCPUGenerator(11));
    std::vector<int64_t> xshape = {B};
    xshape.insert(xshape.end(), c.feature_shape.begin(), c.feature_shape.end());
    auto x = torch::randn(xshape, gen, torch::kDouble).to(dtype);
    auto w = torch::rand({B, K}, gen, torch::kDouble).to(w_fp32 ? torch::kFloat : dtype);
    auto G = torch::randn(xshape, gen, torch::kDouble);
    auto idx = c.idx.to(dev);
    auto xd = x.to(dev), wd = w.to(dev);
    if (c.non_contiguous) {
      // the same values behind strided views: transposed twice over, and w through a column slice
      xd = xd.transpose(-1, -2).contiguous().transpose(-1, -2);
      wd = torch::stack({wd, wd}, 2).reshape({B, 2 * K}).slice(1, 0, 2 * K, 2);
      REQUIRE_FALSE(xd.is_contiguous());
      REQUIRE_FALSE(wd.is_contiguous());
    }
    // plan: counts, offsets, stable expert-contiguous order, slot_of inverse of rows
    auto plan = kernels::make_plan(idx, c.experts);
    auto counts = plan.counts.cpu(), rows = plan.rows.cpu(), slot_of = plan.slot_of.cpu();
    auto ic = c.idx;
    for (int64_t e = 0; e < c.experts; ++e) {
      CHECK(counts[e].item<int64_t>() == ic.eq(e).sum().item<int64_t>());
      CHECK(plan.host_offsets[e + 1] - plan.host_offsets[e] == counts[e].item<int64_t>());
      // slots of expert e list its examples in (b,k) order
      int64_t s = plan.host_offsets[e];
      for (int64_t b = 0; b < B; ++b)
        for (int64_t k = 0; k < K; ++k)
          if (ic[b][k].item<int64_t>() == e) {
            CHECK(slot_of[b][k].item<int64_t>() == s);
            CHECK(rows[s].item<int64_t>() == b);
            ++s;
          }
    }
    // gather is an exact copy
    auto xs = kernels::gather_rows(xd, plan).cpu();
    for (int64_t s = 0; s < B * K; ++s) CHECK(torch::equal(xs[s], x[rows[s].item<int64_t>()]));
    // combine and gradients
    auto ref = naive_dispatch(x, w, c.idx, G);
    auto got = ops_dispatch(xd, wd, idx, c.experts, G);
    const double tol = tolerance(dtype);
    CHECK(got.y.scalar_type() == dtype);
    CHECK(torch::allclose(got.y.cpu().to(torch::kDouble), ref.y, tol, tol));
    CHECK(torch::allclose(got.dx.cpu().to(torch::kDouble), ref.dx, tol, tol));
    REQUIRE(got.dw.defined());
    CHECK(got.dw.scalar_type() == w.scalar_type());
    // dw is a dot product over the whole row: scale the tolerance with its length
    const double n = static_cast<double>(x.numel() / B);
    CHECK(torch::allclose(got.dw.cpu().to(torch::kDouble), ref.dw, tol * n, tol * std::sqrt(n)));
  }
}

}  // namespace tlmoe::testing
