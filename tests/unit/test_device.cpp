// kernels/device.h: precision resolution, the autocast guard, memory readings; and a sparse TL-MoE
// layer stack trained under bf16 autocast on CPU (the dispatch ops on bf16 activations with fp32
// route weights, inside a real model).
#include <torch/torch.h>

#include <catch2/catch.hpp>

#include "kernels/device.h"
#include "model/seq2seq.h"
#include "train/loss.h"

using namespace tlmoe;

TEST_CASE("train.precision resolves per device", "[device]") {
  CHECK_FALSE(kernels::use_bf16_autocast("fp32", torch::kCPU));
  CHECK_FALSE(kernels::use_bf16_autocast("fp32", torch::kCUDA));
  CHECK(kernels::use_bf16_autocast("bf16", torch::kCPU));
  CHECK_FALSE(kernels::use_bf16_autocast("auto", torch::kCPU));
  CHECK(kernels::use_bf16_autocast("auto", torch::kCUDA));
  CHECK_THROWS_WITH(kernels::use_bf16_autocast("fp8", torch::kCPU), Catch::Contains("auto, fp32 or bf16"));
}

TEST_CASE("AutocastGuard runs matmuls in bf16 inside its scope only, and nests", "[device]") {
  auto a = torch::randn({4, 8}), b = torch::randn({8, 3});
  CHECK(torch::mm(a, b).scalar_type() == torch::kFloat);
  {
    kernels::AutocastGuard outer(true, torch::kCPU);
    CHECK(torch::mm(a, b).scalar_type() == torch::kBFloat16);
    {
      kernels::AutocastGuard inner(true, torch::kCPU);
      CHECK(torch::mm(a, b).scalar_type() == torch::kBFloat16);
    }
    CHECK(torch::mm(a, b).scalar_type() == torch::kBFloat16);  // the inner guard restored "enabled"
    kernels::AutocastGuard off(false, torch::kCPU);              // a disabled guard changes nothing
    CHECK(torch::mm(a, b).scalar_type() == torch::kBFloat16);
  }
  CHECK(torch::mm(a, b).scalar_type() == torch::kFloat);
}

TEST_CASE("peak memory on CPU is the process's peak resident set", "[device]") {
  auto before = kernels::peak_memory(torch::kCPU);
  CHECK(before.kind == "cpu_peak_rss");
  CHECK(before.peak_bytes > 0);
  {
    auto big = torch::ones({64, 1024, 1024});  // 256 MiB, touched
    CHECK(big.sum().item<double>() > 0);
  }
  auto after = kernels::peak_memory(torch::kCPU);
  CHECK(after.peak_bytes >= before.peak_bytes);
  CHECK(after.peak_bytes >= int64_t{256} << 20);
}

TEST_CASE("a sparse TL-MoE trains under bf16 autocast on CPU with fp32 weights and loss", "[device]") {
  torch::manual_seed(8);
  model::ModelOptions o;
  o.vocab_size = 41;
  o.pad_id = 1;
  o.layer.d_model = 16;
  o.layer.heads = 2;
  o.layer.ffn_dim = 32;
  o.layer.dropout = o.layer.attention_dropout = o.layer.activation_dropout = 0.0;
  o.encoder_layers = 1;
  o.decoder_layers = 1;
  o.experts = 3;
  o.max_positions = 32;
  model::Seq2Seq m(o);
  m->train();
  torch::optim::Adam opt(m->parameters(), torch::optim::AdamOptions(1e-2));
  const int64_t B = 6, S = 7, T = 5;
  auto ids = torch::randint(3, o.vocab_size, {B, S}, torch::kLong);
  auto mask = torch::ones({B, S}, torch::kLong);
  auto tgt = torch::randint(3, o.vocab_size, {B, T}, torch::kLong);
  auto dec = torch::cat({torch::full({B, 1}, 2, torch::kLong), tgt.slice(1, 0, T - 1)}, 1);
  // two layers, examples spread over the experts (expert 2 of layer 0 unused)
  auto choice = torch::tensor({0, 1, 1, 0, 1, 0, 2, 2, 0, 1, 0, 2}, torch::kLong).view({2, B});
  std::vector<model::LayerRoute> routes;
  for (int64_t l = 0; l < 2; ++l)
    routes.push_back({torch::one_hot(choice[l], 3).to(torch::kFloat), choice[l].unsqueeze(1).contiguous(), true});
  train::LossOptions lo;
  lo.pad_id = 1;
  double first = 0, last = 0;
  for (int step = 0; step < 40; ++step) {
    torch::Tensor logits;
    {
      kernels::AutocastGuard amp(true, torch::kCPU);
      logits = m->forward(ids, mask, dec, routes);
    }
    if (step == 0) {  // autocast changed the arithmetic (bf16 matmuls), within bf16 accuracy
      torch::NoGradGuard ng;
      auto ref = m->forward(ids, mask, dec, routes);
      CHECK_FALSE(torch::equal(ref, logits.to(torch::kFloat)));
      CHECK(torch::allclose(ref, logits.to(torch::kFloat), 0.05, 0.05));
    }
    auto r = train::label_smoothed_nll(logits, tgt, lo);
    REQUIRE(r.loss.scalar_type() == torch::kFloat);
    opt.zero_grad();
    r.loss.backward();
    opt.step();
    (step == 0 ? first : last) = r.loss.item<double>() / static_cast<double>(r.tokens);
  }
  for (auto& p : m->parameters()) CHECK(p.scalar_type() == torch::kFloat);
  CHECK(std::isfinite(last));
  CHECK(last < 0.5 * first);  // it memorises the batch
}
