// kernels/device.h: precision resolution, the autocast guard, memory readings; and a sparse TL-MoE
// layer stack trained under bf16 autocast on CPU (the dispatch ops on bf16 activations with fp32
// route weights, inside a real model).
#include <torch/torch.h>

#include <catch2/catch.hpp>

#include "kernels/device.h"
#include "model_util.h"
#include "model/seq2seq.h"

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
  model::Seq2Seq m(test::small_model_options(
      {.vocab = 41, .d_model = 16, .heads = 2, .ffn = 32, .layers = 1, .experts = 3, .max_positions = 32}));
  // two layers, six examples spread over the experts (expert 2 of layer 0 unused)
  auto choice = torch::tensor({0, 1, 1, 0, 1, 0, 2, 2, 0, 1, 0, 2}, torch::kLong).view({2, 6});
  auto run = test::memorise_with_autocast(m, torch::kCPU, choice, 3, 40, 1e-2);
  // autocast changed the arithmetic (bf16 matmuls), within bf16 accuracy
  CHECK_FALSE(torch::equal(run.logits_fp32, run.logits_autocast));
  CHECK(torch::allclose(run.logits_fp32, run.logits_autocast, 0.05, 0.05));
  CHECK(run.loss_fp32);
  for (auto& p : m->parameters()) CHECK(p.scalar_type() == torch::kFloat);
  CHECK(std::isfinite(run.last));
  CHECK(run.last < 0.5 * run.first);  // it memorises the batch
}
