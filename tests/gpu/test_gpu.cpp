// GPU tests (run only where a CUDA device is present; tests/gpu/gpu_main.cpp skips otherwise):
// the dispatch ops on CUDA against the naive loop (the CPU tests' body) and against the CPU ops;
// the model, training with bf16 autocast, and generation on CUDA against the CPU; NCCL.
#include <torch/torch.h>

#include <catch2/catch.hpp>

#include "config/config.h"
#include "dispatch_parity.h"
#include "kernels/device.h"
#include "kernels/dispatch.h"
#include "model_util.h"
#include "model/generate.h"
#include "model/seq2seq.h"
#include "test_util.h"
#include "train/dist.h"

using namespace tlmoe;

namespace {

model::ModelOptions small_model(int64_t experts) {
  return test::small_model_options({.vocab = 61, .d_model = 32, .heads = 4, .ffn = 48, .layers = 2,
                                    .experts = experts, .max_positions = 64});
}

std::vector<model::LayerRoute> routes_for(const torch::Tensor& choice, int64_t E, bool sparse,
                                          const torch::Device& dev) {
  return test::one_hot_routes(choice, E, sparse, dev);
}

}  // namespace

TEST_CASE("dispatch parity with the naive loop on CUDA in every dtype", "[gpu]") {
  for (auto dt : {torch::kDouble, torch::kFloat, torch::kHalf, torch::kBFloat16})
    testing::check_dispatch_parity(torch::kCUDA, dt);
  testing::check_dispatch_parity(torch::kCUDA, torch::kHalf, true);
  testing::check_dispatch_parity(torch::kCUDA, torch::kBFloat16, true);
}

TEST_CASE("CUDA dispatch ops equal the CPU ops", "[gpu]") {
  auto gen = torch::Generator(at::detail::createCPUGenerator(3));
  for (int64_t K : {1, 2, 4}) {
    const int64_t B = 77, E = 4;
    INFO("K = " << K);
    auto idx = torch::randint(0, E, {B, K}, gen, torch::kLong);
    auto pc = kernels::make_plan(idx, E);
    auto pg = kernels::make_plan(idx.cuda(), E);
    CHECK(torch::equal(pc.counts, pg.counts.cpu()));
    CHECK(torch::equal(pc.offsets, pg.offsets.cpu()));
    CHECK(torch::equal(pc.rows, pg.rows.cpu()));
    CHECK(torch::equal(pc.slot_of, pg.slot_of.cpu()));
    CHECK(pc.host_offsets == pg.host_offsets);
    // rows of 2*3*5 = 30 floats (120 bytes: not a multiple of 16, the scalar path) and of 64 (vectorised)
    for (int64_t F : {30, 64}) {
      auto x = torch::randn({B, F}, gen);
      auto xc = x.clone().requires_grad_(), xg = x.cuda().requires_grad_();
      CHECK(torch::equal(kernels::gather_rows(xc, pc).detach(), kernels::gather_rows(xg, pg).detach().cpu()));
      auto ys = torch::randn({B * K, F}, gen);
      auto w = torch::rand({B, K}, gen);
      auto ysc = ys.clone().requires_grad_(), ysg = ys.cuda().requires_grad_();
      auto wc = w.clone().requires_grad_(), wg = w.cuda().requires_grad_();
      auto yc = kernels::combine_rows(ysc, wc, pc), yg = kernels::combine_rows(ysg, wg, pg);
      CHECK(torch::allclose(yc.detach(), yg.detach().cpu(), 1e-5, 1e-6));
      auto G = torch::randn({B, F}, gen);
      (yc * G).sum().backward();
      (yg * G.cuda()).sum().backward();
      CHECK(torch::allclose(ysc.grad(), ysg.grad().cpu(), 1e-5, 1e-6));
      CHECK(torch::allclose(wc.grad(), wg.grad().cpu(), 1e-4, 1e-5));
      auto sc = kernels::sum_rows(ysc.detach(), pc), sg = kernels::sum_rows(ysg.detach(), pg);
      CHECK(torch::allclose(sc, sg.cpu(), 1e-5, 1e-6));
    }
  }
}

TEST_CASE("CUDA plan rejects out-of-range experts and mismatched devices", "[gpu]") {
  auto idx = torch::tensor({0, 5, 1}, torch::kLong).view({3, 1}).cuda();
  CHECK_THROWS_WITH(kernels::make_plan(idx, 3), Catch::Contains("expert index out of range [0, 3)"));
  auto plan = kernels::make_plan(torch::tensor({0, 2, 1}, torch::kLong).view({3, 1}).cuda(), 3);
  CHECK_THROWS_WITH(kernels::gather_rows(torch::zeros({3, 4}), plan), Catch::Contains("but the plan on"));
  CHECK_THROWS_WITH(kernels::combine_rows(torch::zeros({3, 4}).cuda(), torch::ones({3, 1}), plan),
                    Catch::Contains("w on cpu"));
}

TEST_CASE("the model on CUDA equals the model on CPU, sparse and dense", "[gpu]") {
  torch::manual_seed(4);
  auto o = small_model(3);
  model::Seq2Seq cpu(o);
  cpu->eval();
  model::Seq2Seq gpu(o);
  gpu->eval();
  {
    torch::NoGradGuard ng;
    auto src = cpu->named_parameters(), dst = gpu->named_parameters();
    for (auto& p : src) dst[p.key()].copy_(p.value());
    auto bsrc = cpu->named_buffers(), bdst = gpu->named_buffers();
    for (auto& b : bsrc) bdst[b.key()].copy_(b.value());
  }
  gpu->to(torch::kCUDA);
  const int64_t B = 9, S = 11, T = 5;
  auto ids = torch::randint(3, o.vocab_size, {B, S}, torch::kLong);
  auto mask = torch::ones({B, S}, torch::kLong);
  mask[2].slice(0, 7).zero_();
  auto dec = torch::randint(3, o.vocab_size, {B, T}, torch::kLong);
  auto choice = torch::randint(0, 3, {4, B}, torch::kLong);
  choice[1].fill_(2);  // a layer where every example takes one expert (the no-gather path)
  for (bool sparse : {true, false}) {
    INFO("sparse " << sparse);
    auto lc = cpu->forward(ids, mask, dec, routes_for(choice, 3, sparse, torch::kCPU));
    auto lg = gpu->forward(ids.cuda(), mask.cuda(), dec.cuda(), routes_for(choice, 3, sparse, torch::kCUDA));
    CHECK(torch::allclose(lc, lg.cpu(), 1e-4, 1e-4));
  }
  // greedy and beam generation with one hard route for the batch (as eval decodes a task): the same tokens
  auto one = torch::tensor({2, 0, 1, 2}, torch::kLong).view({4, 1}).expand({4, B}).contiguous();
  for (int64_t beams : {1, 3}) {
    model::GenerationOptions g;
    g.max_len = 8;
    g.num_beams = beams;
    auto tc = model::generate(*cpu, ids, mask, routes_for(one, 3, true, torch::kCPU), g);
    auto tg = model::generate(*gpu, ids.cuda(), mask.cuda(), routes_for(one, 3, true, torch::kCUDA), g);
    CHECK(tc == tg);
  }
}

TEST_CASE("bf16 autocast training on CUDA keeps fp32 weights, a fp32 loss, and learns", "[gpu]") {
  torch::manual_seed(5);
  model::Seq2Seq m(small_model(3));
  auto choice = torch::randint(0, 3, {4, 8}, torch::kLong);
  kernels::reset_peak_memory(torch::kCUDA);
  auto run = test::memorise_with_autocast(m, torch::kCUDA, choice, 3, 60, 3e-3);
  CHECK_FALSE(torch::equal(run.logits_fp32, run.logits_autocast));
  CHECK(torch::allclose(run.logits_fp32, run.logits_autocast, 0.05, 0.05));
  CHECK(run.loss_fp32);
  for (auto& p : m->parameters()) CHECK(p.scalar_type() == torch::kFloat);
  CHECK(std::isfinite(run.last));
  CHECK(run.last < 0.5 * run.first);  // memorising one batch
  auto mem = kernels::peak_memory(torch::kCUDA);
  CHECK(mem.kind == "cuda_peak_allocated");
  CHECK(mem.peak_bytes > 0);
  WARN("peak CUDA memory of 60 bf16 autocast training steps of the small model: " << mem.peak_bytes << " bytes");
}

TEST_CASE("NCCL: a one-rank group on the GPU reduces, broadcasts and buckets gradients through the real backend",
          "[gpu][nccl]") {
  REQUIRE(train::dist::nccl_available());
  auto cfg = Config::defaults().dist;
  cfg.backend = "nccl";
  cfg.timeout_s = 60;
  train::dist::LaunchEnv env;
  env.launcher = "torchrun";
  env.master_addr = "127.0.0.1";
  env.master_port = test::free_port();
  auto comm = train::dist::connect_group(env, cfg, torch::Device(torch::kCUDA, 0));
  REQUIRE(comm->backend() == "nccl");
  REQUIRE(comm->size() == 1);
  auto gen = torch::Generator(at::detail::createCPUGenerator(11));
  // host tensors (staged through the device) and device tensors of several dtypes
  auto f = torch::randn({1000}, gen), bf = torch::randn({37}, gen).to(torch::kBFloat16);
  auto l = torch::randint(-5, 5, {9}, gen, torch::kLong), d = torch::randn({5, 7}, gen).cuda();
  std::vector<torch::Tensor> v = {f.clone(), bf.clone(), l.clone(), d.clone()};
  comm->all_reduce_sum(v);  // a world of one: the sum is the tensor itself, moved through NCCL
  CHECK(torch::equal(v[0], f));
  CHECK(torch::equal(v[1], bf));
  CHECK(torch::equal(v[2], l));
  CHECK(v[3].is_cuda());
  CHECK(torch::equal(v[3], d));
  comm->broadcast(v);
  CHECK(torch::equal(v[0], f));
  auto flat = torch::arange(4096, torch::kFloat);
  comm->start_all_reduce_sum(flat)->wait();
  CHECK(torch::equal(flat, torch::arange(4096, torch::kFloat)));
  comm->barrier();
  CHECK(comm->all_gather_strings("rank zero") == std::vector<std::string>{"rank zero"});
  comm->store_set("k", "v");
  CHECK(comm->store_get("k") == std::optional<std::string>("v"));
  CHECK(comm->store_add("n", 3) == 3);
  // gradients bucketed during backward (hooks) on CUDA parameters, one of them unused
  auto p0 = torch::randn({300}, gen).cuda().requires_grad_(), p1 = torch::randn({20, 10}, gen).cuda().requires_grad_();
  auto unused = torch::zeros({4}).cuda().requires_grad_();
  train::dist::GradReducer reducer({unused, p0, p1}, *comm, 1024);
  reducer.arm();
  ((p0 * p0).sum() + (p1 * 3).sum()).backward();
  reducer.finish();
  CHECK(torch::allclose(p0.grad(), 2 * p0.detach()));
  CHECK(torch::equal(p1.grad(), torch::full({20, 10}, 3.0f).cuda()));
  CHECK_FALSE(unused.grad().defined());
  CHECK(reducer.buckets() >= 2);
}
