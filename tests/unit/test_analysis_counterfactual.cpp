// Counterfactual routes of the routing analysis (analysis/analyze.h): naming experts on the
// command line, ablating an expert (only that layer's routes of the tasks that used it change,
// to the next best expert by logit), and forcing one task onto another's route.
#include <torch/torch.h>

#include <catch2/catch.hpp>

#include <limits>

#include "analysis/analyze.h"
#include "common/error.h"
#include "model/tlmoe_model.h"

using tlmoe::analysis::ablate_experts;
using tlmoe::analysis::ExpertRef;
using tlmoe::analysis::parse_expert_ref;

namespace {

constexpr int64_t kTasks = 12, kEnc = 2, kDec = 2, kExperts = 3;

tlmoe::model::TLMoEModel tiny_model(const std::string& selection, int64_t top_k = 1,
                                    const std::string& baseline = "none") {
  torch::manual_seed(7);
  tlmoe::model::ModelOptions mo;
  mo.vocab_size = 40;
  mo.layer.d_model = 16;
  mo.layer.heads = 2;
  mo.layer.ffn_dim = 32;
  mo.encoder_layers = kEnc;
  mo.decoder_layers = kDec;
  mo.experts = kExperts;
  mo.max_positions = 32;
  tlmoe::model::RouterOptions ro;
  ro.kind = "mlp";
  ro.d_in = 8;
  ro.hidden = 16;
  ro.layers = kEnc + kDec;
  ro.experts = kExperts;
  ro.init_std = 1.0;  // well-separated logits: no ties
  tlmoe::model::RoutingPolicy p;
  p.selection = selection;
  p.top_k = top_k;
  p.baseline = baseline;
  tlmoe::model::TLMoEModel m(mo, ro, p, kTasks);
  m->eval();
  return m;
}

std::vector<tlmoe::model::LayerRoute> eval_routes(tlmoe::model::TLMoEModel& m, const torch::Tensor& ids, double tau) {
  tlmoe::model::RouteContext ctx;
  ctx.training = false;
  ctx.tau = tau;
  return m->routes(ids, ctx);
}

bool same_route(const tlmoe::model::LayerRoute& a, const tlmoe::model::LayerRoute& b) {
  if (!torch::equal(a.weights, b.weights) || a.sparse != b.sparse) return false;
  if (a.indices.defined() != b.indices.defined()) return false;
  return !a.indices.defined() || torch::equal(a.indices, b.indices);
}

}  // namespace

TEST_CASE("analyze: --ablate and --force values name layers by name or index and experts 1-based", "[analysis]") {
  const std::vector<std::string> layers = {"enc1", "enc2", "dec1", "dec2"};
  CHECK(parse_expert_ref("enc1:2", layers, 3, "--ablate") == ExpertRef{0, 1});
  CHECK(parse_expert_ref("dec2:3", layers, 3, "--ablate") == ExpertRef{3, 2});
  CHECK(parse_expert_ref("3:e1", layers, 3, "--ablate") == ExpertRef{2, 0});
  CHECK(tlmoe::analysis::expert_ref_name({2, 0}, layers) == "dec1:e1");
  for (const char* bad : {"enc3:1", "enc1:4", "enc1:0", "5:1", "0:1", "enc1", "enc1:2:3", ":1", "enc1:", "x:y"}) {
    INFO(bad);
    CHECK_THROWS_AS(parse_expert_ref(bad, layers, 3, "--ablate"), tlmoe::UsageError);
  }
  try {
    parse_expert_ref("enc9:1", layers, 3, "--ablate");
  } catch (const tlmoe::UsageError& e) {
    CHECK_THAT(e.what(), Catch::Contains("--ablate"));
    CHECK_THAT(e.what(), Catch::Contains("enc1, enc2, dec1, dec2"));
  }
}

TEST_CASE("analyze: ablating an expert changes only its layer, for the tasks that used it, to the next best expert",
          "[analysis]") {
  auto m = tiny_model("gumbel_st");
  torch::NoGradGuard g;
  auto ids = torch::arange(kTasks, torch::kLong);
  const double tau = 0.5;
  const auto base = eval_routes(m, ids, tau);
  const auto logits = m->router_logits(ids);  // [L,n,E]
  REQUIRE(base.size() == static_cast<size_t>(kEnc + kDec));

  for (int64_t layer = 0; layer < kEnc + kDec; ++layer) {
    // The expert task 0 uses in this layer: at least one task is affected.
    const int64_t expert = base[layer].indices[0][0].item<int64_t>();
    const auto ab = ablate_experts(*m, ids, base, {{layer, expert}}, tau);
    REQUIRE(ab.size() == base.size());
    for (int64_t l = 0; l < kEnc + kDec; ++l)
      if (l != layer) CHECK(same_route(ab[l], base[l]));
    const auto& r = ab[layer];
    CHECK(r.sparse);
    REQUIRE(r.indices.defined());
    int64_t changed = 0;
    for (int64_t t = 0; t < kTasks; ++t) {
      INFO("layer " << layer << " task " << t);
      const int64_t before = base[layer].indices[t][0].item<int64_t>();
      const int64_t after = r.indices[t][0].item<int64_t>();
      if (before != expert) {
        CHECK(after == before);
        CHECK(torch::equal(r.weights[t], base[layer].weights[t]));
        continue;
      }
      ++changed;
      // The next best expert by logit.
      auto row = logits[layer][t].clone();
      row[expert] = -std::numeric_limits<float>::infinity();
      CHECK(after == row.argmax().item<int64_t>());
      CHECK(after != expert);
      CHECK(r.weights[t][after].item<float>() == 1.0f);
      CHECK(r.weights[t].sum().item<float>() == 1.0f);
      CHECK(r.weights[t][expert].item<float>() == 0.0f);
    }
    CHECK(changed >= 1);
  }
}

TEST_CASE("analyze: ablation under softmax routing renormalises over the remaining experts", "[analysis]") {
  auto m = tiny_model("softmax");
  torch::NoGradGuard g;
  auto ids = torch::arange(kTasks, torch::kLong);
  const double tau = 2.0;
  const auto base = eval_routes(m, ids, tau);
  const auto logits = m->router_logits(ids);  // [L,n,E]
  const auto ab = ablate_experts(*m, ids, base, {{1, 2}, {3, 0}}, tau);
  for (int64_t l : {0, 2}) CHECK(same_route(ab[l], base[l]));
  for (auto [l, e] : {std::pair<int64_t, int64_t>{1, 2}, {3, 0}}) {
    INFO("layer " << l);
    CHECK_FALSE(ab[l].indices.defined());
    CHECK_FALSE(ab[l].sparse);
    auto keep = torch::ones({kExperts}, torch::kBool);
    keep[e] = false;
    // The remaining experts' weights, renormalised: softmax of their logits at tau.
    auto expect = torch::softmax(logits[l].index({torch::indexing::Slice(), keep}) / tau, -1);
    CHECK(torch::allclose(ab[l].weights.index({torch::indexing::Slice(), keep}), expect, 1e-5, 1e-6));
    CHECK(ab[l].weights.select(1, e).abs().max().item<float>() == 0.0f);
    CHECK(torch::allclose(base[l].weights.index({torch::indexing::Slice(), keep}) /
                              base[l].weights.index({torch::indexing::Slice(), keep}).sum(1, true),
                          expect, 1e-5, 1e-6));
  }
}

TEST_CASE("analyze: top-k ablation never selects the ablated expert", "[analysis]") {
  auto m = tiny_model("topk", 2);
  torch::NoGradGuard g;
  auto ids = torch::arange(kTasks, torch::kLong);
  const auto base = eval_routes(m, ids, 1.0);
  const auto ab = ablate_experts(*m, ids, base, {{0, 1}}, 1.0);
  REQUIRE(ab[0].indices.defined());
  CHECK(ab[0].indices.size(1) == 2);
  CHECK((ab[0].indices != 1).all().item<bool>());
  CHECK(torch::allclose(ab[0].weights.sum(1), torch::ones({kTasks})));
  for (int64_t l = 1; l < kEnc + kDec; ++l) CHECK(same_route(ab[l], base[l]));
}

TEST_CASE("analyze: ablation rejects removing every expert of a layer and models without a router", "[analysis]") {
  auto m = tiny_model("gumbel_st");
  torch::NoGradGuard g;
  auto ids = torch::arange(kTasks, torch::kLong);
  const auto base = eval_routes(m, ids, 1.0);
  CHECK_THROWS_AS(ablate_experts(*m, ids, base, {{0, 0}, {0, 1}, {0, 2}}, 1.0), std::invalid_argument);
  CHECK_THROWS_AS(ablate_experts(*m, ids, base, {{4, 0}}, 1.0), std::invalid_argument);
  CHECK_THROWS_AS(ablate_experts(*m, ids, base, {{0, 3}}, 1.0), std::invalid_argument);
  const auto none = ablate_experts(*m, ids, base, {}, 1.0);
  for (size_t l = 0; l < base.size(); ++l) CHECK(same_route(none[l], base[l]));

  auto random = tiny_model("gumbel_st", 1, "task_random");
  REQUIRE_FALSE(random->has_router());
  const auto random_base = eval_routes(random, ids, 1.0);
  CHECK_THROWS_AS(ablate_experts(*random, ids, random_base, {{0, 0}}, 1.0), std::invalid_argument);
}

TEST_CASE("analyze: a forced task gets the eval route of its source task", "[analysis]") {
  auto m = tiny_model("gumbel_st");
  torch::NoGradGuard g;
  auto ids = torch::arange(kTasks, torch::kLong);
  const auto base = eval_routes(m, ids, 0.5);
  const auto forced = tlmoe::analysis::task_routes(*m, 5, 3, torch::kCPU, 0.5, 0);
  REQUIRE(forced.size() == base.size());
  for (size_t l = 0; l < base.size(); ++l) {
    CHECK(forced[l].weights.size(0) == 3);
    for (int64_t b = 0; b < 3; ++b) {
      CHECK(torch::equal(forced[l].weights[b], base[l].weights[5]));
      CHECK(torch::equal(forced[l].indices[b], base[l].indices[5]));
    }
  }
}
