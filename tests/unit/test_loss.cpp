// Label-smoothed NLL (fairseq semantics): a hand-computed case, the eps = 0 limit against
// torch::nll_loss, the mean reduction, and gradients (closed form and finite differences, fp64).
// torch before Catch: c10's logging header defines a one-argument CHECK that Catch replaces.
#include <torch/torch.h>

#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

#include "train/loss.h"

using namespace tlmoe::train;

namespace {

// log p[v] of one row of logits, by hand.
std::vector<double> log_probs(const std::vector<double>& x) {
  double z = 0;
  for (double xi : x) z += std::exp(xi);
  std::vector<double> lp;
  for (double xi : x) lp.push_back(xi - std::log(z));
  return lp;
}

LossOptions opts(double eps, const std::string& reduction = "sum") {
  LossOptions o;
  o.epsilon = eps;
  o.pad_id = 1;
  o.reduction = reduction;
  return o;
}

}  // namespace

TEST_CASE("label-smoothed loss: hand-computed case with a pad position", "[loss]") {
  // V = 3, B = 1, T = 3: targets 2, 0 and a pad (id 1) that must not count.
  const std::vector<std::vector<double>> rows = {{1.0, 2.0, 3.0}, {0.5, -1.0, 2.0}, {4.0, 0.0, -2.0}};
  auto logits = torch::tensor({1.0, 2.0, 3.0, 0.5, -1.0, 2.0, 4.0, 0.0, -2.0}, torch::kDouble).view({1, 3, 3});
  auto target = torch::tensor({2, 0, 1}, torch::kLong).view({1, 3});
  const auto lp0 = log_probs(rows[0]), lp1 = log_probs(rows[1]);
  const double nll = -lp0[2] - lp1[0];
  const double smooth = -(lp0[0] + lp0[1] + lp0[2]) - (lp1[0] + lp1[1] + lp1[2]);
  const double eps = 0.1;
  const double want = (1.0 - eps) * nll + (eps / 3.0) * smooth;

  for (auto dt : {torch::kFloat, torch::kHalf, torch::kDouble}) {
    INFO("dtype " << dt);
    auto r = label_smoothed_nll(logits.to(dt), target, opts(eps));
    const double tol = dt == torch::kDouble ? 1e-12 : 1e-5;  // these logits are exact in fp16
    CHECK(r.tokens == 2);
    CHECK(r.loss.dim() == 0);
    CHECK(r.loss.scalar_type() == (dt == torch::kDouble ? torch::kDouble : torch::kFloat));
    CHECK(r.loss.item<double>() == Approx(want).epsilon(tol));
    CHECK(r.nll_sum.item<double>() == Approx(nll).epsilon(tol));
    CHECK_FALSE(r.nll_sum.requires_grad());
    auto m = label_smoothed_nll(logits.to(dt), target, opts(eps, "mean"));
    CHECK(m.loss.item<double>() == Approx(want / 2.0).epsilon(tol));
    CHECK(m.nll_sum.item<double>() == Approx(nll).epsilon(tol));
    CHECK(m.tokens == 2);
  }
}

TEST_CASE("label-smoothed loss: eps = 0 is the summed cross-entropy over non-pad targets", "[loss]") {
  torch::manual_seed(3);
  auto logits = torch::randn({2, 5, 7});
  auto target = torch::randint(0, 7, {2, 5}, torch::kLong);
  target.index_put_({0, 3}, 1);
  target.index_put_({1, 4}, 1);
  const int64_t tokens = target.ne(1).sum().item<int64_t>();
  auto ref = torch::nll_loss(torch::log_softmax(logits, -1).view({-1, 7}), target.view({-1}), {},
                             at::Reduction::Sum, /*ignore_index=*/1);
  auto r = label_smoothed_nll(logits, target, opts(0.0));
  CHECK(r.tokens == tokens);
  CHECK(r.loss.item<double>() == Approx(ref.item<double>()).epsilon(1e-6));
  CHECK(r.nll_sum.item<double>() == Approx(ref.item<double>()).epsilon(1e-6));
  auto m = label_smoothed_nll(logits, target, opts(0.0, "mean"));
  CHECK(m.loss.item<double>() == Approx(ref.item<double>() / static_cast<double>(tokens)).epsilon(1e-6));
  // with smoothing, mean is still the sum over tokens
  auto s = label_smoothed_nll(logits, target, opts(0.1));
  auto sm = label_smoothed_nll(logits, target, opts(0.1, "mean"));
  CHECK(sm.loss.item<double>() == Approx(s.loss.item<double>() / static_cast<double>(tokens)).epsilon(1e-6));
}

TEST_CASE("label-smoothed loss: gradient, closed form and finite differences in fp64", "[loss]") {
  torch::manual_seed(11);
  const int64_t B = 2, T = 3, V = 4;
  const double eps = 0.1;
  auto x0 = torch::randn({B, T, V}, torch::kDouble);
  auto target = torch::tensor({3, 0, 1, 2, 1, 0}, torch::kLong).view({B, T});  // two pads
  auto x = x0.clone().requires_grad_(true);
  label_smoothed_nll(x, target, opts(eps)).loss.backward();
  auto grad = x.grad();

  // Closed form: d/dx = softmax(x) - ((1-eps)*onehot(target) + eps/V) at non-pad positions, 0 at pads.
  auto acc = x0.accessor<double, 3>();
  auto tacc = target.accessor<int64_t, 2>();
  auto gacc = grad.accessor<double, 3>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) {
      std::vector<double> row;
      for (int64_t v = 0; v < V; ++v) row.push_back(acc[b][t][v]);
      const auto lp = log_probs(row);
      for (int64_t v = 0; v < V; ++v) {
        double want = 0;
        if (tacc[b][t] != 1) want = std::exp(lp[v]) - ((1 - eps) * (v == tacc[b][t]) + eps / V);
        INFO("b " << b << " t " << t << " v " << v);
        CHECK(gacc[b][t][v] == Approx(want).margin(1e-12));
      }
    }

  // Central finite differences of the loss value.
  const double h = 1e-6;
  auto flat = x0.view({-1});
  auto gflat = grad.reshape({-1});
  for (int64_t i = 0; i < flat.numel(); ++i) {
    auto xp = x0.clone(), xm = x0.clone();
    xp.view({-1})[i] += h;
    xm.view({-1})[i] -= h;
    const double fd = (label_smoothed_nll(xp, target, opts(eps)).loss.item<double>() -
                       label_smoothed_nll(xm, target, opts(eps)).loss.item<double>()) /
                      (2 * h);
    INFO("element " << i);
    CHECK(gflat[i].item<double>() == Approx(fd).margin(1e-7));
  }
}

TEST_CASE("label-smoothed loss: all-pad batch, bad arguments", "[loss]") {
  auto logits = torch::randn({1, 2, 3});
  auto pads = torch::ones({1, 2}, torch::kLong);
  auto r = label_smoothed_nll(logits, pads, opts(0.1, "mean"));
  CHECK(r.tokens == 0);
  CHECK(r.loss.item<double>() == 0.0);
  CHECK_THROWS(label_smoothed_nll(logits, pads, opts(0.1, "avg")));
  CHECK_THROWS(label_smoothed_nll(logits.view({2, 3}), pads, opts(0.1)));
  CHECK_THROWS(label_smoothed_nll(logits, torch::ones({1, 3}, torch::kLong), opts(0.1)));
}
