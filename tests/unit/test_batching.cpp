// Heterogeneous batches: collation, shift-right, coverage of an epoch, determinism, resume.
#include <torch/torch.h>

#include <catch2/catch.hpp>

#include <set>

#include "data/batching.h"
#include "train/progress.h"

using namespace tlmoe::data;
using tlmoe::train::Progress;

namespace {
std::vector<Example> make_examples(int n, int tasks) {
  std::vector<Example> v;
  for (int i = 0; i < n; ++i) {
    Example e;
    e.task_id = i % tasks;
    e.input.assign(3 + i % 7, 10 + i);
    e.input.front() = 0;
    e.input.back() = 2;
    e.outputs = {{0, 100 + i, 2}};
    if (i % 5 == 0) e.outputs.push_back({0, 200 + i, 201 + i, 2});
    v.push_back(e);
  }
  return v;
}
}  // namespace

TEST_CASE("collate pads, masks and shifts the target right with the start token", "[batching]") {
  Example a{3, {0, 7, 8, 2}, {{0, 9, 2}}};
  Example b{5, {0, 6, 2}, {{0, 4, 5, 6, 2}}};
  auto batch = collate({&a, &b}, {0, 0}, /*pad*/ 1, /*start*/ 2);
  CHECK(torch::equal(batch.input_ids, torch::tensor({0, 7, 8, 2, 0, 6, 2, 1}, torch::kLong).view({2, 4})));
  CHECK(torch::equal(batch.input_mask, torch::tensor({1, 1, 1, 1, 1, 1, 1, 0}, torch::kLong).view({2, 4})));
  CHECK(torch::equal(batch.target_ids, torch::tensor({0, 9, 2, 1, 1, 0, 4, 5, 6, 2}, torch::kLong).view({2, 5})));
  // docs/method.md §1.7: decoder input = </s> <s> tok ... (target shifted right by one, start = 2)
  CHECK(torch::equal(batch.decoder_input_ids, torch::tensor({2, 0, 9, 1, 1, 2, 0, 4, 5, 6}, torch::kLong).view({2, 5})));
  CHECK(torch::equal(batch.task_ids, torch::tensor({3, 5}, torch::kLong)));
  CHECK(batch.target_tokens == 8);
}

TEST_CASE("an epoch visits every example exactly once, mixing tasks, order is seeded", "[batching]") {
  auto ex = make_examples(103, 7);
  for (bool bucketing : {false, true}) {
    BatchingOptions o;
    o.batch_size = 8;
    o.length_bucketing = bucketing;
    o.bucket_batches = 4;
    MultiTaskBatcher b(ex, o);
    REQUIRE(b.batches_per_epoch() == 13);
    std::multiset<int64_t> seen_first_tokens;
    std::set<int64_t> tasks_in_first_batch;
    for (int64_t i = 0; i < b.batches_per_epoch(); ++i) {
      auto batch = b.next();
      for (int64_t r = 0; r < batch.input_ids.size(0); ++r) seen_first_tokens.insert(batch.input_ids[r][1].item<int64_t>());
      if (i == 0)
        for (int64_t r = 0; r < batch.task_ids.size(0); ++r) tasks_in_first_batch.insert(batch.task_ids[r].item<int64_t>());
    }
    std::multiset<int64_t> expect;
    for (int i = 0; i < 103; ++i) expect.insert(10 + i);
    CHECK(seen_first_tokens == expect);
    CHECK(tasks_in_first_batch.size() > 1);
  }
  BatchingOptions o;
  o.batch_size = 8;
  MultiTaskBatcher x(ex, o), y(ex, o);
  o.seed = 7;
  MultiTaskBatcher z(ex, o);
  auto bx = x.next(), by = y.next(), bz = z.next();
  CHECK(torch::equal(bx.input_ids, by.input_ids));
  CHECK_FALSE((bx.input_ids.sizes() == bz.input_ids.sizes() && torch::equal(bx.input_ids, bz.input_ids)));
}

TEST_CASE("length bucketing reduces padding", "[batching]") {
  auto ex = make_examples(400, 5);
  auto padding = [&](bool bucketing) {
    BatchingOptions o;
    o.batch_size = 16;
    o.length_bucketing = bucketing;
    MultiTaskBatcher b(ex, o);
    int64_t pads = 0;
    for (int64_t i = 0; i < b.batches_per_epoch(); ++i) pads += (1 - b.next().input_mask).sum().item<int64_t>();
    return pads;
  };
  CHECK(padding(true) * 2 < padding(false));
}

TEST_CASE("seek restores the exact batch sequence across epochs", "[batching]") {
  auto ex = make_examples(50, 4);
  BatchingOptions o;
  o.batch_size = 8;
  MultiTaskBatcher a(ex, o);
  for (int i = 0; i < 9; ++i) a.next();  // into the second epoch (7 batches per epoch)
  MultiTaskBatcher b(ex, o);
  b.seek(a.epoch(), a.position());
  for (int i = 0; i < 10; ++i) {
    auto x = a.next(), y = b.next();
    CHECK(torch::equal(x.input_ids, y.input_ids));
    CHECK(torch::equal(x.target_ids, y.target_ids));
  }
}

TEST_CASE("temperature sampling flattens the task distribution", "[batching]") {
  // task 0 has 90 examples, task 1 has 10
  std::vector<Example> ex;
  for (int i = 0; i < 100; ++i) ex.push_back(Example{i < 90 ? 0 : 1, {0, 5, 2}, {{0, 6, 2}}});
  auto share_of_task1 = [&](double temperature) {
    BatchingOptions o;
    o.batch_size = 10;
    o.task_sampling = "temperature";
    o.sampling_temperature = temperature;
    o.length_bucketing = false;
    MultiTaskBatcher b(ex, o);
    int64_t n1 = 0, n = 0;
    for (int e = 0; e < 20; ++e)
      for (int64_t i = 0; i < b.batches_per_epoch(); ++i) {
        auto t = b.next().task_ids;
        n1 += t.sum().item<int64_t>();
        n += t.size(0);
      }
    return static_cast<double>(n1) / static_cast<double>(n);
  };
  CHECK(share_of_task1(1.0) == Approx(0.1).margin(0.02));   // proportional
  CHECK(share_of_task1(1e3) == Approx(0.5).margin(0.03));   // uniform over tasks
}

TEST_CASE("progress: plain lines every N steps with loss, throughput and ETA", "[batching]") {
  std::ostringstream out;
  Progress p(out, "train", 0, 10, 5, /*force_plain=*/true);
  for (int s = 1; s <= 10; ++s) p.update(s, 1.5, 2500, {{"τ", "0.5"}});
  p.finish();
  auto text = out.str();
  CHECK(std::count(text.begin(), text.end(), '\n') == 2);
  CHECK_THAT(text, Catch::Contains("train 5/10"));
  CHECK_THAT(text, Catch::Contains("loss 1.5000"));
  CHECK_THAT(text, Catch::Contains("2.5k tok/s"));
  CHECK_THAT(text, Catch::Contains("ETA"));
  CHECK(Progress::format_duration(3725) == "1h02m");
  CHECK(Progress::format_duration(187) == "3m07s");
}
