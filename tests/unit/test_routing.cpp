// Routers, selection functions, the temperature schedule, exploration and the routing baselines,
// checked against hand computations (docs/method.md §2, §3.2, §3.4, §4, §13).
#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <catch2/catch.hpp>

#include <cfloat>
#include <cmath>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "common/error.h"
#include "model/router.h"
#include "model/selection.h"
#include "model/tlmoe_model.h"
#include "evaluate/predict.h"
#include "model_util.h"

using namespace tlmoe::model;

namespace {

at::Generator seeded(uint64_t seed) { return at::make_generator<at::CPUGeneratorImpl>(seed); }

RouterOptions small_router(const std::string& kind) {
  RouterOptions o;
  o.kind = kind;
  o.d_in = 16;
  o.hidden = 8;
  o.layers = 4;
  o.experts = 3;
  return o;
}

std::map<std::string, std::vector<int64_t>> param_shapes(const torch::nn::Module& m) {
  std::map<std::string, std::vector<int64_t>> out;
  for (const auto& p : m.named_parameters()) out[p.key()] = p.value().sizes().vec();
  return out;
}

int64_t param_count(const torch::nn::Module& m) {
  int64_t n = 0;
  for (const auto& p : m.parameters()) n += p.numel();
  return n;
}

// The parameter names and shapes each router documents (router.h), written out by hand.
std::map<std::string, std::vector<int64_t>> expected_shapes(const RouterOptions& o) {
  const int64_t D = o.d_in, H = o.hidden, L = o.layers, E = o.experts;
  const std::string k = o.kind;
  const bool layer_specific = k.size() > 15 && k.substr(k.size() - 15) == "_layer_specific";
  const std::string base = layer_specific ? k.substr(0, k.size() - 15) : k;
  std::map<std::string, std::vector<int64_t>> s;
  if (k == "mlp" || k == "linear") {
    s["linear1.weight"] = {H, D};
    s["linear1.bias"] = {H};
    s["linear2.weight"] = {L * E, H};
    s["linear2.bias"] = {L * E};
    return s;
  }
  if (k == "layer_mlp" || k == "linear_layer_specific") {
    for (int64_t l = 0; l < L; ++l) {
      const std::string p = "router_units." + std::to_string(l) + ".";
      s[p + "linear1.weight"] = {H, D};
      s[p + "linear1.bias"] = {H};
      s[p + "linear2.weight"] = {E, H};
      s[p + "linear2.bias"] = {E};
    }
    return s;
  }
  if (layer_specific) {
    s["layer_specific_proj.weight"] = {L * H, D};
    s["layer_specific_proj.bias"] = {L * H};
  } else {
    s["pos_embed.weight"] = {L, D};
  }
  if (base == "rnn" || base == "gru" || base == "lstm") {
    const int64_t G = (base == "rnn" ? 1 : base == "gru" ? 3 : 4) * H;  // stacked gates
    const int64_t in = layer_specific ? H : D;
    for (const std::string suffix : {"", "_reverse"}) {
      s["rnn.weight_ih_l0" + suffix] = {G, in};
      s["rnn.weight_hh_l0" + suffix] = {G, H};
      s["rnn.bias_ih_l0" + suffix] = {G};
      s["rnn.bias_hh_l0" + suffix] = {G};
    }
    s["proj.weight"] = {E, 2 * H};
    s["proj.bias"] = {E};
  } else if (base == "transformer") {
    const int64_t W = layer_specific ? H : D, F = o.transformer_ffn;
    s["transformer.self_attn.in_proj_weight"] = {3 * W, W};
    s["transformer.self_attn.in_proj_bias"] = {3 * W};
    s["transformer.self_attn.out_proj.weight"] = {W, W};
    s["transformer.self_attn.out_proj.bias"] = {W};
    s["transformer.linear1.weight"] = {F, W};
    s["transformer.linear1.bias"] = {F};
    s["transformer.linear2.weight"] = {W, F};
    s["transformer.linear2.bias"] = {W};
    s["transformer.norm1.weight"] = {W};
    s["transformer.norm1.bias"] = {W};
    s["transformer.norm2.weight"] = {W};
    s["transformer.norm2.bias"] = {W};
    s["proj.weight"] = {E, W};
    s["proj.bias"] = {E};
  }
  return s;
}

// Parameter counts by formula.
int64_t expected_count(const RouterOptions& o) {
  const int64_t D = o.d_in, H = o.hidden, L = o.layers, E = o.experts, F = o.transformer_ffn;
  const std::string k = o.kind;
  if (k == "linear") return (D * H + H) + (H * L * E + L * E);
  if (k == "linear_layer_specific") return L * (D * H + H + H * E + E);
  const int64_t proj_in = D * L * H + L * H, pos = L * D, out = 2 * H * E + E;
  // a bidirectional 1-layer cell of g gates, input i: 2 directions x (g·H·i + g·H·H + 2·g·H)
  auto cell = [&](int64_t g, int64_t i) { return 2 * (g * H * i + g * H * H + 2 * g * H); };
  if (k == "rnn") return pos + cell(1, D) + out;
  if (k == "gru") return pos + cell(3, D) + out;
  if (k == "lstm") return pos + cell(4, D) + out;
  if (k == "rnn_layer_specific") return proj_in + cell(1, H) + out;
  if (k == "gru_layer_specific") return proj_in + cell(3, H) + out;
  if (k == "lstm_layer_specific") return proj_in + cell(4, H) + out;
  // transformer of width W: attention (in 3W·W+3W, out W·W+W), ffn (F·W+F)+(W·F+W), two LayerNorms 4W, proj W·E+E
  auto tr = [&](int64_t W) { return (3 * W * W + 3 * W) + (W * W + W) + (F * W + F) + (W * F + W) + 4 * W + (W * E + E); };
  if (k == "transformer") return pos + tr(D);
  return proj_in + tr(H);  // transformer_layer_specific
}

torch::Tensor ref_gelu(const torch::Tensor& x) { return 0.5 * x * (1 + torch::erf(x / std::sqrt(2.0))); }

torch::Tensor linear(const torch::Tensor& x, const torch::nn::Module& m, const std::string& prefix) {
  auto params = m.named_parameters();
  return torch::matmul(x, params[prefix + "weight"].t()) + params[prefix + "bias"];
}

// Hand-written softmax over the last dim.
torch::Tensor ref_softmax(const torch::Tensor& y) {
  auto e = torch::exp(y - std::get<0>(y.max(-1, true)));
  return e / e.sum(-1, true);
}

bool is_one_hot(const torch::Tensor& w /*[L,B,E]*/) {
  auto ones = w.eq(1).sum(-1), zeros = w.eq(0).sum(-1);
  return ones.eq(1).all().item<bool>() && zeros.eq(w.size(-1) - 1).all().item<bool>();
}

}  // namespace

// ---- temperature --------------------------------------------------------------------------

TEST_CASE("temperature schedule matches the test vectors of docs/method.md §3.2", "[routing]") {
  // Stage 1: tau0 = 2, min 0.1, rate 3e-4.
  CHECK(temperature_at(0, 2.0, 0.1, 3e-4) == 2.0);
  CHECK(temperature_at(1000, 2.0, 0.1, 3e-4) == Approx(1.481636).margin(1e-6));
  CHECK(temperature_at(5000, 2.0, 0.1, 3e-4) == Approx(0.446260).margin(1e-6));
  CHECK(temperature_at(9900, 2.0, 0.1, 3e-4) > 0.1);
  CHECK(temperature_at(9985, 2.0, 0.1, 3e-4) > 0.1);
  CHECK(temperature_at(9986, 2.0, 0.1, 3e-4) == 0.1);  // the floor is reached at t = 9,986
  CHECK(temperature_at(10000, 2.0, 0.1, 3e-4) == 0.1);
  // Stage 2: tau0 = 300, min 1, rate 1e-4.
  CHECK(temperature_at(3000, 300.0, 1.0, 1e-4) == Approx(222.245466).margin(1e-6));
  CHECK(temperature_at(15000, 300.0, 1.0, 1e-4) == Approx(66.939048).margin(1e-6));
  CHECK(temperature_at(30000, 300.0, 1.0, 1e-4) == Approx(14.936121).margin(1e-6));
  CHECK(temperature_at(45000, 300.0, 1.0, 1e-4) == Approx(3.332699).margin(1e-6));
  CHECK(temperature_at(57038, 300.0, 1.0, 1e-4) == 1.0);
  CHECK(temperature_at(57037, 300.0, 1.0, 1e-4) > 1.0);
}

// ---- routers ------------------------------------------------------------------------------

TEST_CASE("router registry: the reference's ten types, the aliases, unknown and duplicate names", "[routing]") {
  const std::vector<std::string> ten = {"linear",  "rnn", "lstm", "gru", "transformer", "rnn_layer_specific",
                                        "lstm_layer_specific", "gru_layer_specific", "transformer_layer_specific",
                                        "linear_layer_specific"};
  CHECK(router_kinds() == ten);
  CHECK(canonical_router_kind("mlp") == "linear");
  CHECK(canonical_router_kind("layer_mlp") == "linear_layer_specific");
  CHECK(canonical_router_kind("gru") == "gru");
  // an alias builds its type, parameter for parameter
  for (const auto& [alias, kind] : std::vector<std::pair<std::string, std::string>>{{"mlp", "linear"}, {"layer_mlp", "linear_layer_specific"}}) {
    CHECK(param_shapes(*make_router(small_router(alias))) == param_shapes(*make_router(small_router(kind))));
  }
  RouterOptions o = small_router("lstm_layers");
  try {
    make_router(o);
    FAIL("an unknown router was accepted");
  } catch (const tlmoe::ConfigError& e) {
    CHECK(e.key() == "routing.router");
    CHECK(std::string(e.what()) ==
          "config error: key 'routing.router': unknown router 'lstm_layers'; valid: linear, rnn, lstm, gru, transformer, "
          "rnn_layer_specific, lstm_layer_specific, gru_layer_specific, transformer_layer_specific, linear_layer_specific");
  }
  // checkpoints of tlmoe before the reference's names: gru, lstm, transformer were layer-specific
  CHECK(legacy_router_kind("gru", true) == "gru_layer_specific");
  CHECK(legacy_router_kind("transformer", true) == "transformer_layer_specific");
  CHECK(legacy_router_kind("gru", false) == "gru");
  CHECK(legacy_router_kind("layer_mlp", true) == "layer_mlp");
  RouterRegistry r;
  r.add("x", [](const RouterOptions& ro) { return std::make_shared<MlpRouterImpl>(ro); });
  CHECK(r.contains("x"));
  CHECK_THROWS(r.add("x", [](const RouterOptions& ro) { return std::make_shared<MlpRouterImpl>(ro); }));
  CHECK(r.names() == std::vector<std::string>{"x"});
  o.kind = "x";
  CHECK(r.make(o)->forward(torch::randn({2, o.d_in})).sizes() == std::vector<int64_t>{o.layers, 2, o.experts});
}

TEST_CASE("every router: shape, parameter names and counts, gradients", "[routing]") {
  torch::manual_seed(7);
  for (const auto& kind : router_kinds()) {
    DYNAMIC_SECTION(kind) {
      const RouterOptions o = small_router(kind);
      auto r = make_router(o);
      auto z = torch::randn({5, o.d_in});
      auto logits = r->forward(z);
      CHECK(logits.sizes() == std::vector<int64_t>{o.layers, 5, o.experts});
      CHECK(param_shapes(*r) == expected_shapes(o));
      CHECK(param_count(*r) == expected_count(o));

      (logits * torch::randn_like(logits)).sum().backward();
      for (const auto& p : r->named_parameters()) {
        INFO(p.key());
        REQUIRE(p.value().grad().defined());
        CHECK(p.value().grad().abs().sum().item<double>() > 0.0);
      }
      // Examples are routed independently: one example's logits do not depend on another's z.
      r->eval();
      torch::NoGradGuard ng;
      auto a = r->forward(z), b = r->forward(z.slice(0, 2, 3));
      CHECK(torch::allclose(a.slice(1, 2, 3), b, 1e-5, 1e-6));
    }
  }
}

TEST_CASE("layer_mlp parameter counts match docs/method.md §1.9", "[routing]") {
  RouterOptions o;  // defaults: layer_mlp, hidden 64, 12 layers, 3 experts
  o.d_in = 128;
  CHECK(param_count(*make_router(o)) == 12 * (128 * 64 + 64 + 64 * 3 + 3));
  CHECK(param_count(*make_router(o)) == 101412);
  o.d_in = 768;
  CHECK(param_count(*make_router(o)) == 592932);
}

TEST_CASE("router initialisation: Linear N(0, init_std) with zero bias, RNN defaults", "[routing]") {
  torch::manual_seed(11);
  for (const auto& kind : router_kinds()) {
    DYNAMIC_SECTION(kind) {
      RouterOptions o;  // 768 -> 64, 12 layers: big enough for stable statistics
      o.kind = kind;
      o.init_std = 0.05;
      auto r = make_router(o);
      auto params = r->named_parameters();
      for (const auto& p : params) {
        const auto& name = p.key();
        INFO(name);
        const bool rnn = name.rfind("rnn.", 0) == 0;
        const bool norm_weight = name.find("norm") != std::string::npos && name.find("weight") != std::string::npos;
        if (rnn) {
          // LibTorch default: U(-1/sqrt(H), 1/sqrt(H)).
          const double bound = 1.0 / std::sqrt(64.0);
          CHECK(p.value().abs().max().item<double>() <= bound);
          CHECK(p.value().std().item<double>() == Approx(bound / std::sqrt(3.0)).epsilon(0.1));
        } else if (norm_weight) {
          CHECK(torch::equal(p.value(), torch::ones_like(p.value())));
        } else if (name.size() >= 4 && name.compare(name.size() - 4, 4, "bias") == 0) {
          CHECK(p.value().abs().max().item<double>() == 0.0);
        }
      }
      // A big Linear weight: mean ~ 0, std ~ init_std.
      const bool layer_specific = kind.find("_layer_specific") != std::string::npos;
      const std::string big = kind == "linear"                  ? "linear1.weight"
                              : kind == "linear_layer_specific" ? "router_units.5.linear1.weight"
                              : layer_specific                  ? "layer_specific_proj.weight"
                                                                : "pos_embed.weight";  // N(0, init_std) as HF's Embedding
      auto w = params[big];
      CHECK(w.mean().item<double>() == Approx(0.0).margin(0.002));
      CHECK(w.std().item<double>() == Approx(0.05).epsilon(0.02));
      if (kind.rfind("transformer", 0) == 0) {
        const double W = layer_specific ? 64.0 : 768.0;  // the layer's width: hidden, or d_in
        CHECK(params["transformer.self_attn.out_proj.weight"].std().item<double>() == Approx(0.05).epsilon(0.1));
        CHECK(params["transformer.linear1.weight"].std().item<double>() == Approx(0.05).epsilon(0.1));
        // The packed in_proj is not a Linear: xavier-uniform, bound sqrt(6 / (W + 3W)).
        const double bound = std::sqrt(6.0 / (W + 3 * W));
        auto ip = params["transformer.self_attn.in_proj_weight"];
        CHECK(ip.abs().max().item<double>() <= bound);
        CHECK(ip.std().item<double>() == Approx(bound / std::sqrt(3.0)).epsilon(0.05));
      }
    }
  }
}

TEST_CASE("linear and linear_layer_specific routers (mlp, layer_mlp) compute the documented function", "[routing]") {
  torch::manual_seed(3);
  auto z = torch::randn({5, 16});
  {
    RouterOptions o = small_router("mlp");
    auto r = make_router(o);
    for (auto& p : r->parameters()) p.data().normal_(0.0, 0.3);  // non-zero biases too
    auto y = linear(ref_gelu(linear(z, *r, "linear1.")), *r, "linear2.");  // [B, L·E]
    auto got = r->forward(z);                                               // [L,B,E]
    for (int64_t l = 0; l < o.layers; ++l)
      for (int64_t e = 0; e < o.experts; ++e)
        CHECK(torch::allclose(got.select(0, l).select(1, e), y.select(1, l * o.experts + e), 1e-5, 1e-6));
  }
  {
    RouterOptions o = small_router("layer_mlp");
    auto r = make_router(o);
    for (auto& p : r->parameters()) p.data().normal_(0.0, 0.3);
    auto got = r->forward(z);
    for (int64_t l = 0; l < o.layers; ++l) {
      const std::string p = "router_units." + std::to_string(l) + ".";
      auto y = linear(ref_gelu(linear(z, *r, p + "linear1.")), *r, p + "linear2.");  // [B,E]
      CHECK(torch::allclose(got.select(0, l), y, 1e-5, 1e-6));
    }
  }
}

TEST_CASE("transformer routers: the reference's 4 heads and width 64, legacy heads, heads that do not divide", "[routing]") {
  torch::manual_seed(104);
  CHECK(legacy_transformer_router_heads(64) == 4);
  CHECK(legacy_transformer_router_heads(6) == 3);
  CHECK(legacy_transformer_router_heads(10) == 2);
  CHECK(legacy_transformer_router_heads(7) == 1);
  RouterOptions o = small_router("transformer_layer_specific");
  auto r = make_router(o);
  auto attn = r->named_modules()["transformer.self_attn"]->as<torch::nn::MultiheadAttention>();
  REQUIRE(attn);
  CHECK(attn->options.num_heads() == 4);
  CHECK(r->named_parameters()["transformer.linear1.weight"].sizes() == std::vector<int64_t>{64, o.hidden});
  o.hidden = 6;  // a width 4 heads do not divide: the config check names the key (test_config.cpp)
  CHECK_THROWS(make_router(o));
  o.transformer_heads = 3;
  r = make_router(o);
  CHECK(r->forward(torch::randn({3, o.d_in})).sizes() == std::vector<int64_t>{o.layers, 3, o.experts});
  CHECK_THROWS(r->forward(torch::randn({3, o.d_in + 1})));
}

// ---- selection ----------------------------------------------------------------------------

TEST_CASE("softmax selection matches a hand computation, temperature flattens it", "[routing]") {
  torch::manual_seed(103);
  auto logits = torch::tensor({1.0, 2.0, 3.0}, torch::kDouble).view({1, 1, 3});
  SelectionOptions o;
  o.kind = "softmax";
  o.tau = 2.0;
  auto r = select_routes(logits, o);
  const double a = std::exp(0.5), b = std::exp(1.0), c = std::exp(1.5), s = a + b + c;
  CHECK(!r.hard);
  CHECK(!r.indices.defined());
  CHECK(r.weights[0][0][0].item<double>() == Approx(a / s).epsilon(1e-12));
  CHECK(r.weights[0][0][1].item<double>() == Approx(b / s).epsilon(1e-12));
  CHECK(r.weights[0][0][2].item<double>() == Approx(c / s).epsilon(1e-12));

  auto x = torch::randn({4, 6, 3});
  double previous = -1.0;
  for (double tau : {0.1, 1.0, 10.0, 300.0}) {
    o.tau = tau;
    const double h = route_entropy(select_routes(x, o).weights).mean().item<double>();
    CHECK(h > previous);
    previous = h;
  }
  CHECK(previous == Approx(std::log(3.0)).epsilon(1e-3));  // τ = 300: almost average routing
}

TEST_CASE("gumbel_st: one-hot forward, gradient of the soft sample, deterministic eval", "[routing]") {
  torch::manual_seed(5);
  const double tau = 0.7;
  auto base = torch::randn({4, 6, 3}, torch::kDouble);
  auto l1 = base.clone().requires_grad_(true);
  SelectionOptions o;  // gumbel_st, training
  o.tau = tau;
  auto r = select_routes(l1, o, seeded(123));
  REQUIRE(r.hard);
  CHECK(r.indices.sizes() == std::vector<int64_t>{4, 6, 1});
  CHECK(is_one_hot(r.weights));
  CHECK(torch::equal(r.indices.squeeze(-1), r.weights.argmax(-1)));

  // The same noise, built by hand from the documented recipe.
  auto gen = seeded(123);
  auto u = torch::rand({4, 6, 3}, gen, torch::kDouble).clamp_min(DBL_MIN);
  auto g = -torch::log(-torch::log(u));
  auto l2 = base.clone().requires_grad_(true);
  auto soft = ref_softmax((l2 + g) / tau);
  CHECK(torch::equal(r.indices.squeeze(-1), soft.argmax(-1)));

  auto upstream = torch::randn({4, 6, 3}, torch::kDouble);
  (r.weights * upstream).sum().backward();
  (soft * upstream).sum().backward();
  CHECK(l1.grad().abs().sum().item<double>() > 0.0);
  CHECK(torch::allclose(l1.grad(), l2.grad(), 1e-10, 1e-12));

  // Eval: argmax of the logits, no noise, same every time.
  o.training = false;
  auto e1 = select_routes(base, o, seeded(1)), e2 = select_routes(base, o, seeded(2));
  CHECK(e1.hard);
  CHECK(torch::equal(e1.indices.squeeze(-1), base.argmax(-1)));
  CHECK(torch::equal(e1.weights, e2.weights));
  CHECK(is_one_hot(e1.weights));

  // Eval with sample_at_eval (the reference): noisy draws; flat logits pick different experts.
  o.sample_at_eval = true;
  auto flat = torch::zeros({1, 64, 3});
  auto s1 = select_routes(flat, o, seeded(9));
  CHECK(is_one_hot(s1.weights));
  CHECK(s1.indices.min().item<int64_t>() != s1.indices.max().item<int64_t>());
  CHECK(torch::equal(s1.weights, select_routes(flat, o, seeded(9)).weights));
}

TEST_CASE("gumbel-max sampling frequencies follow softmax(logits)", "[routing]") {
  // Gumbel-max trick: argmax(l + g) ~ Categorical(softmax(l)); an independent check of the noise.
  const std::vector<double> p = {0.2, 0.3, 0.5};
  auto logits = torch::tensor({std::log(p[0]), std::log(p[1]), std::log(p[2])}).view({1, 1, 3}).expand({4, 50000, 3});
  SelectionOptions o;
  auto r = select_routes(logits, o, seeded(77));
  auto freq = r.weights.sum(torch::IntArrayRef{0, 1}) / (4.0 * 50000.0);
  for (int e = 0; e < 3; ++e) CHECK(freq[e].item<double>() == Approx(p[e]).margin(0.005));
}

TEST_CASE("gumbel (soft): sums to one, seeded and reproducible, deterministic at eval", "[routing]") {
  torch::manual_seed(100);
  auto logits = torch::randn({3, 8, 4});
  SelectionOptions o;
  o.kind = "gumbel";
  o.tau = 0.5;
  auto a = select_routes(logits, o, seeded(1)), b = select_routes(logits, o, seeded(1)),
       c = select_routes(logits, o, seeded(2));
  CHECK(!a.hard);
  CHECK(torch::allclose(a.weights.sum(-1), torch::ones({3, 8}), 1e-5, 1e-6));
  CHECK(a.weights.gt(0).all().item<bool>());
  CHECK(torch::equal(a.weights, b.weights));
  CHECK(!torch::allclose(a.weights, c.weights));
  // The noise is the documented one.
  auto gen = seeded(1);
  auto g = -torch::log(-torch::log(torch::rand({3, 8, 4}, gen, torch::kFloat).clamp_min(FLT_MIN)));
  CHECK(torch::allclose(a.weights, ref_softmax((logits + g) / 0.5), 1e-5, 1e-6));
  o.training = false;
  CHECK(torch::allclose(select_routes(logits, o, seeded(3)).weights, ref_softmax(logits / 0.5), 1e-5, 1e-6));
}

TEST_CASE("topk: K renormalised weights, sorted indices, k = E is softmax", "[routing]") {
  auto logits = torch::tensor({0.5, -1.0, 2.0, 1.5, 0.0}).view({1, 1, 5});
  SelectionOptions o;
  o.kind = "topk";
  o.top_k = 2;
  o.tau = 1.0;
  auto r = select_routes(logits, o);
  REQUIRE(r.hard);
  CHECK(r.indices.sizes() == std::vector<int64_t>{1, 1, 2});
  CHECK(r.indices[0][0][0].item<int64_t>() == 2);
  CHECK(r.indices[0][0][1].item<int64_t>() == 3);
  const double a = std::exp(2.0), b = std::exp(1.5);
  CHECK(r.weights[0][0][2].item<double>() == Approx(a / (a + b)).epsilon(1e-6));
  CHECK(r.weights[0][0][3].item<double>() == Approx(b / (a + b)).epsilon(1e-6));
  CHECK(r.weights[0][0][0].item<double>() == 0.0);
  CHECK(r.weights[0][0][1].item<double>() == 0.0);
  CHECK(r.weights[0][0][4].item<double>() == 0.0);

  torch::manual_seed(2);
  auto x = torch::randn({3, 10, 5}, torch::kDouble).requires_grad_(true);
  o.top_k = 3;
  auto rk = select_routes(x, o);
  CHECK(rk.weights.ne(0).sum(-1).eq(3).all().item<bool>());
  CHECK(torch::allclose(rk.weights.sum(-1), torch::ones({3, 10}, torch::kDouble)));
  // indices are the 3 largest logits, in descending order of weight
  auto sorted = std::get<1>(x.detach().sort(-1, /*descending=*/true)).slice(-1, 0, 3);
  CHECK(torch::equal(rk.indices, sorted));
  CHECK(torch::equal(rk.weights.gather(-1, rk.indices), std::get<0>(rk.weights.sort(-1, true)).slice(-1, 0, 3)));
  // gradient reaches exactly the kept logits
  (rk.weights * torch::randn_like(rk.weights)).sum().backward();
  auto kept = torch::zeros_like(x, torch::kBool).scatter_(-1, rk.indices, true);
  CHECK(x.grad().masked_select(kept.logical_not()).abs().max().item<double>() == 0.0);
  CHECK(x.grad().masked_select(kept).abs().gt(0).all().item<bool>());

  o.top_k = 5;
  o.tau = 1.7;
  SelectionOptions sm;
  sm.kind = "softmax";
  sm.tau = 1.7;
  CHECK(torch::allclose(select_routes(x, o).weights, select_routes(x, sm).weights, 1e-12, 1e-14));

  o.top_k = 6;
  CHECK_THROWS_AS(select_routes(x, o), tlmoe::ConfigError);
  o.top_k = 0;
  CHECK_THROWS_AS(select_routes(x, o), tlmoe::ConfigError);
}

TEST_CASE("unknown selection kind names the valid ones", "[routing]") {
  SelectionOptions o;
  o.kind = "sparsemax";
  try {
    select_routes(torch::zeros({1, 1, 3}), o);
    FAIL("an unknown selection was accepted");
  } catch (const tlmoe::ConfigError& e) {
    CHECK(e.key() == "routing.selection");
    CHECK(std::string(e.what()).find("unknown selection 'sparsemax'; valid: softmax, gumbel, gumbel_st, topk") !=
          std::string::npos);
  }
  CHECK(selection_kinds() == std::vector<std::string>{"softmax", "gumbel", "gumbel_st", "topk"});
  o.kind = "softmax";
  o.tau = 0.0;
  CHECK_THROWS(select_routes(torch::zeros({1, 1, 3}), o));
}

// ---- exploration --------------------------------------------------------------------------

TEST_CASE("exploration: eps 0 unchanged, eps 1 all replaced, frequency ~ eps", "[routing]") {
  torch::manual_seed(101);
  const int64_t L = 4, B = 50, E = 3;
  auto soft = Routes{torch::softmax(torch::randn({L, B, E}), -1), torch::Tensor(), false};

  auto same = explore(soft, 0.0, 2, false, seeded(1));
  CHECK(torch::equal(same.weights, soft.weights));
  CHECK(!same.hard);

  auto all = explore(soft, 1.0, 2, false, seeded(1));
  CHECK(is_one_hot(all.weights));
  CHECK(!all.hard);  // a soft input stays a soft Routes

  // reference_compat: encoder rows random one-hot, decoder rows uniform 1/E.
  auto compat = explore(soft, 1.0, 2, true, seeded(1));
  CHECK(is_one_hot(compat.weights.slice(0, 0, 2)));
  CHECK(torch::allclose(compat.weights.slice(0, 2, 4), torch::full({2, B, E}, 1.0 / 3.0)));
  CHECK(!compat.hard);

  // Hard input (gumbel_st) stays hard and its indices follow the replacement.
  SelectionOptions st;
  auto hard = select_routes(torch::randn({L, B, E}), st, seeded(4));
  auto ex = explore(hard, 1.0, 2, false, seeded(8));
  CHECK(ex.hard);
  CHECK(is_one_hot(ex.weights));
  CHECK(torch::equal(ex.indices.squeeze(-1), ex.weights.argmax(-1)));
  CHECK(!explore(hard, 1.0, 2, true, seeded(8)).hard);  // decoder rows became uniform

  // Top-2 input: a replaced route lists its expert first and another expert with weight 0.
  SelectionOptions tk;
  tk.kind = "topk";
  tk.top_k = 2;
  auto top2 = explore(select_routes(torch::randn({L, B, E}), tk), 1.0, 2, false, seeded(3));
  CHECK(top2.hard);
  CHECK(torch::equal(top2.indices.select(-1, 0), top2.weights.argmax(-1)));
  CHECK(top2.indices.select(-1, 0).ne(top2.indices.select(-1, 1)).all().item<bool>());
  CHECK(top2.weights.gather(-1, top2.indices.slice(-1, 1, 2)).eq(0).all().item<bool>());

  // Frequency on a large tensor; routes start at exactly 1/E, so a one-hot row was replaced.
  auto uniform = average_routes(10, 20000, E);
  auto f = explore(uniform, 0.3, 5, false, seeded(21));
  auto replaced = f.weights.eq(1).any(-1);  // [L,B]
  CHECK(replaced.to(torch::kDouble).mean().item<double>() == Approx(0.3).margin(0.005));
  auto picks = f.weights.masked_select(replaced.unsqueeze(-1)).view({-1, E}).argmax(-1);
  for (int64_t e = 0; e < E; ++e)
    CHECK(picks.eq(e).to(torch::kDouble).mean().item<double>() == Approx(1.0 / 3.0).margin(0.01));
  // Same seed, same exploration.
  CHECK(torch::equal(f.weights, explore(uniform, 0.3, 5, false, seeded(21)).weights));
}

TEST_CASE("exploration: replaced routes carry no gradient, the others keep theirs", "[routing]") {
  torch::manual_seed(102);
  auto logits = torch::randn({3, 400, 3}, torch::kDouble).requires_grad_(true);
  SelectionOptions o;
  o.kind = "softmax";
  auto r = explore(select_routes(logits, o), 0.5, 3, false, seeded(6));
  (r.weights * torch::randn_like(r.weights)).sum().backward();
  auto replaced = r.weights.eq(1).any(-1);                 // [L,B]
  auto row_grad = logits.grad().abs().sum(-1);             // [L,B]
  CHECK(row_grad.masked_select(replaced).max().item<double>() == 0.0);
  CHECK(row_grad.masked_select(replaced.logical_not()).gt(0).all().item<bool>());
}

// ---- baselines ----------------------------------------------------------------------------

TEST_CASE("average routing is 1/E everywhere", "[routing]") {
  auto r = average_routes(12, 5, 3);
  CHECK(r.weights.sizes() == std::vector<int64_t>{12, 5, 3});
  CHECK(!r.hard);
  CHECK(torch::equal(r.weights, torch::full({12, 5, 3}, 1.0f / 3.0f)));
}

TEST_CASE("task-level random table: n experts of weight 1/n, seeded, uniform usage", "[routing]") {
  for (int64_t n : {1, 2}) {
    auto t = task_random_table(20, 12, 3, n, 42);
    CHECK(t.sizes() == std::vector<int64_t>{20, 12, 3});
    CHECK(t.ne(0).sum(-1).eq(n).all().item<bool>());
    CHECK(t.masked_select(t.ne(0)).eq(1.0f / static_cast<float>(n)).all().item<bool>());
    CHECK(!t.requires_grad());
    CHECK(torch::equal(t, task_random_table(20, 12, 3, n, 42)));
    CHECK(!torch::equal(t, task_random_table(20, 12, 3, n, 43)));
  }
  // Expert usage across many tasks: each expert is chosen with probability n/E.
  auto many = task_random_table(3000, 12, 4, 2, 7);
  auto usage = many.ne(0).to(torch::kDouble).mean(torch::IntArrayRef{0, 1});  // [E]
  for (int64_t e = 0; e < 4; ++e) CHECK(usage[e].item<double>() == Approx(0.5).margin(0.01));
  // All 6 unordered pairs of 4 experts appear about equally often (without replacement, uniform).
  auto chosen = many.ne(0).view({-1, 4});
  std::map<std::pair<int, int>, int64_t> pairs;
  auto acc = chosen.accessor<bool, 2>();
  for (int64_t i = 0; i < chosen.size(0); ++i) {
    std::vector<int> c;
    for (int e = 0; e < 4; ++e)
      if (acc[i][e]) c.push_back(e);
    pairs[{c[0], c[1]}]++;
  }
  CHECK(pairs.size() == 6);
  for (const auto& [pair, count] : pairs)
    CHECK(static_cast<double>(count) / chosen.size(0) == Approx(1.0 / 6.0).margin(0.01));
  CHECK_THROWS(task_random_table(2, 12, 3, 0, 1));
  CHECK_THROWS(task_random_table(2, 12, 3, 4, 1));
}

TEST_CASE("routes_from_table picks each example's task row", "[routing]") {
  auto table1 = task_random_table(5, 4, 3, 1, 42);
  auto ids = torch::tensor({2, 0, 2, 4}, torch::kLong);
  auto r = routes_from_table(table1, ids);
  CHECK(r.weights.sizes() == std::vector<int64_t>{4, 4, 3});
  for (int64_t b = 0; b < 4; ++b) CHECK(torch::equal(r.weights.select(1, b), table1[ids[b].item<int64_t>()]));
  REQUIRE(r.hard);
  CHECK(torch::equal(r.indices.squeeze(-1), r.weights.argmax(-1)));

  auto table2 = task_random_table(5, 4, 3, 2, 42);
  auto r2 = routes_from_table(table2, ids);
  CHECK(!r2.hard);
  CHECK(!r2.indices.defined());
  CHECK(torch::equal(r2.weights.select(1, 3), table2[4]));
  CHECK_THROWS(routes_from_table(table2, torch::tensor({5}, torch::kLong)));
}

TEST_CASE("instance-level random routes are independent uniform one-hots", "[routing]") {
  auto r = instance_random_routes(12, 4000, 3, seeded(10));
  REQUIRE(r.hard);
  CHECK(is_one_hot(r.weights));
  CHECK(torch::equal(r.indices.squeeze(-1), r.weights.argmax(-1)));
  auto usage = r.weights.to(torch::kDouble).mean(torch::IntArrayRef{0, 1});
  for (int64_t e = 0; e < 3; ++e) CHECK(usage[e].item<double>() == Approx(1.0 / 3.0).margin(0.01));
  CHECK(torch::equal(r.weights, instance_random_routes(12, 4000, 3, seeded(10)).weights));
  CHECK(!torch::equal(r.weights, instance_random_routes(12, 4000, 3, seeded(11)).weights));
}

TEST_CASE("route entropy per layer", "[routing]") {
  auto w = torch::zeros({2, 2, 4});
  w[0][0][1] = 1.0;                                             // entropy 0
  w[0][1] = torch::full({4}, 0.25);                             // entropy log 4
  w[1][0] = torch::tensor({0.5f, 0.5f, 0.0f, 0.0f});           // log 2
  w[1][1] = torch::tensor({0.7f, 0.1f, 0.1f, 0.1f});
  auto h = route_entropy(w);
  CHECK(h.sizes() == std::vector<int64_t>{2});
  const double h11 = -(0.7 * std::log(0.7) + 3 * 0.1 * std::log(0.1));
  CHECK(h[0].item<double>() == Approx(0.5 * std::log(4.0)).epsilon(1e-6));
  CHECK(h[1].item<double>() == Approx(0.5 * (std::log(2.0) + h11)).epsilon(1e-6));
}

// ---- evaluation routes under reference_compat ---------------------------------------------

TEST_CASE("reference_compat evaluation: one Gumbel draw per task, soft gumbel decodes its argmax expert", "[routing]") {
  auto make = [](const std::string& selection, bool compat) {
    torch::manual_seed(17);
    RouterOptions r;
    r.kind = "linear_layer_specific";
    r.d_in = 8;
    r.hidden = 8;
    r.layers = 4;
    r.experts = 3;
    RoutingPolicy p;
    p.selection = selection;
    p.sample_at_eval = true;  // Gumbel noise at evaluation (reference_compat turns it on)
    p.reference_compat = compat;
    auto m = TLMoEModel(tlmoe::test::small_model_options({}), r, p, 2);
    m->eval();
    return m;
  };
  torch::NoGradGuard ng;
  auto ids = torch::tensor(std::vector<int64_t>(40, 0));
  ids[7] = 1;
  ids[30] = 1;
  auto rows_equal = [](const std::vector<LayerRoute>& r, int64_t a, int64_t b) {
    for (const auto& l : r)
      if (!torch::equal(l.weights[a], l.weights[b])) return false;
    return true;
  };
  {
    auto fn = tlmoe::evaluate::model_routes(make("gumbel_st", true), 3.0, 5);
    const auto r = fn(ids);
    for (int64_t b = 1; b < 40; ++b)
      if (b != 7 && b != 30) CHECK(rows_equal(r, 0, b));  // task 0: one draw for all of its rows
    CHECK(rows_equal(r, 7, 30));
    const auto again = fn(torch::tensor({0, 1}));  // later calls of the same evaluation reuse the draws
    for (size_t l = 0; l < r.size(); ++l) {
      CHECK(torch::equal(again[l].weights[0], r[l].weights[0]));
      CHECK(torch::equal(again[l].weights[1], r[l].weights[7]));
    }
  }
  {
    // without reference_compat every example draws its own route: 40 draws at tau 3 are not all equal
    const auto r = tlmoe::evaluate::model_routes(make("gumbel_st", false), 3.0, 5)(ids);
    bool all_same = true;
    for (int64_t b = 1; b < 40; ++b)
      if (b != 7 && b != 30) all_same = all_same && rows_equal(r, 0, b);
    CHECK_FALSE(all_same);
  }
  {
    // soft gumbel: the drawn weights' argmax expert alone, weight 1, decoded sparsely
    const auto r = tlmoe::evaluate::model_routes(make("gumbel", true), 3.0, 5)(ids);
    for (const auto& l : r) {
      CHECK(l.sparse);
      CHECK(is_one_hot(l.weights.unsqueeze(0)));
      CHECK(torch::equal(l.indices.squeeze(1), l.weights.argmax(-1)));
    }
  }
}
