#include "data/batching.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>

namespace tlmoe::data {

uint64_t splitmix64(uint64_t& s) {
  uint64_t z = (s += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

namespace {

uint64_t uniform(uint64_t& s, uint64_t n) {  // unbiased integer in [0, n)
  const uint64_t limit = UINT64_MAX - UINT64_MAX % n;
  uint64_t x;
  do x = splitmix64(s);
  while (x >= limit);
  return x % n;
}

template <class T>
void shuffle(std::vector<T>& v, uint64_t& s) {
  for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[uniform(s, i)]);
}

double unit(uint64_t& s) { return static_cast<double>(splitmix64(s) >> 11) * 0x1.0p-53; }

}  // namespace

Batch collate(const std::vector<const Example*>& ex, const std::vector<size_t>& choice, int64_t pad_id,
              int64_t decoder_start_id) {
  const int64_t B = static_cast<int64_t>(ex.size());
  int64_t S = 1, T = 1;
  for (int64_t i = 0; i < B; ++i) {
    S = std::max<int64_t>(S, ex[i]->input.size());
    T = std::max<int64_t>(T, ex[i]->outputs[choice[i]].size());
  }
  Batch b;
  b.input_ids = torch::full({B, S}, pad_id, torch::kLong);
  b.input_mask = torch::zeros({B, S}, torch::kLong);
  b.target_ids = torch::full({B, T}, pad_id, torch::kLong);
  b.decoder_input_ids = torch::full({B, T}, pad_id, torch::kLong);
  b.task_ids = torch::empty({B}, torch::kLong);
  auto in = b.input_ids.accessor<int64_t, 2>();
  auto m = b.input_mask.accessor<int64_t, 2>();
  auto tg = b.target_ids.accessor<int64_t, 2>();
  auto di = b.decoder_input_ids.accessor<int64_t, 2>();
  for (int64_t i = 0; i < B; ++i) {
    const auto& x = ex[i]->input;
    for (size_t j = 0; j < x.size(); ++j) in[i][j] = x[j], m[i][j] = 1;
    const auto& y = ex[i]->outputs[choice[i]];
    // decoder input = [start] + target[:-1] (docs/method.md §1.7: shifted right by one)
    di[i][0] = decoder_start_id;
    for (size_t j = 0; j < y.size(); ++j) {
      tg[i][j] = y[j];
      if (j + 1 < static_cast<size_t>(T) && j + 1 < y.size()) di[i][j + 1] = y[j];
    }
    b.target_tokens += static_cast<int64_t>(y.size());
    b.task_ids[i] = ex[i]->task_id;
  }
  return b;
}

MultiTaskBatcher::MultiTaskBatcher(const std::vector<Example>& examples, BatchingOptions opts)
    : examples_(examples), o_(std::move(opts)) {
  TORCH_CHECK(!examples_.empty(), "no training examples");
  build_epoch(0);
}

void MultiTaskBatcher::build_epoch(int64_t epoch) {
  uint64_t s = o_.seed * 0x9E3779B97F4A7C15ULL + static_cast<uint64_t>(epoch) + 1;
  std::vector<size_t> order;
  const size_t N = examples_.size();
  if (o_.task_sampling == "temperature") {
    // p(task) ∝ n_task^(1/T); N draws per epoch: a task, then an example of it uniformly.
    std::map<int64_t, std::vector<size_t>> by_task;
    for (size_t i = 0; i < N; ++i) by_task[examples_[i].task_id].push_back(i);
    std::vector<const std::vector<size_t>*> lists;
    std::vector<double> cdf;
    double total = 0;
    for (auto& [t, v] : by_task) {
      total += std::pow(static_cast<double>(v.size()), 1.0 / o_.sampling_temperature);
      cdf.push_back(total);
      lists.push_back(&v);
    }
    for (size_t i = 0; i < N; ++i) {
      double u = unit(s) * total;
      size_t k = std::min(lists.size() - 1, static_cast<size_t>(std::upper_bound(cdf.begin(), cdf.end(), u) - cdf.begin()));
      order.push_back((*lists[k])[uniform(s, lists[k]->size())]);
    }
  } else {
    order.resize(N);
    std::iota(order.begin(), order.end(), 0);
    shuffle(order, s);
  }
  epoch_batches_.clear();
  const size_t bs = static_cast<size_t>(o_.batch_size);
  if (o_.length_bucketing) {
    const size_t bucket = bs * static_cast<size_t>(o_.bucket_batches);
    for (size_t start = 0; start < order.size(); start += bucket) {
      auto first = order.begin() + start, last = order.begin() + std::min(order.size(), start + bucket);
      std::stable_sort(first, last, [&](size_t a, size_t b) { return examples_[a].input.size() < examples_[b].input.size(); });
    }
  }
  for (size_t start = 0; start < order.size(); start += bs)
    epoch_batches_.emplace_back(order.begin() + start, order.begin() + std::min(order.size(), start + bs));
  if (o_.length_bucketing) shuffle(epoch_batches_, s);  // buckets must not come in length order
  epoch_ = epoch;
  pos_ = 0;
}

void MultiTaskBatcher::seek(int64_t epoch, int64_t position) {
  build_epoch(epoch);
  TORCH_CHECK(position >= 0 && position <= batches_per_epoch(), "batcher position ", position, " out of range");
  pos_ = position;
}

Batch MultiTaskBatcher::next() {
  if (pos_ >= batches_per_epoch()) build_epoch(epoch_ + 1);
  const auto& idx = epoch_batches_[pos_];
  // which gold answer each example uses: a pure function of (seed, epoch, batch, slot)
  uint64_t s = o_.seed ^ (static_cast<uint64_t>(epoch_) << 32) ^ static_cast<uint64_t>(pos_) * 0xD1B54A32D192ED03ULL;
  std::vector<const Example*> ex;
  std::vector<size_t> choice;
  for (size_t i : idx) {
    ex.push_back(&examples_[i]);
    choice.push_back(examples_[i].outputs.size() > 1 ? uniform(s, examples_[i].outputs.size()) : 0);
  }
  ++pos_;
  return collate(ex, choice, o_.pad_id, o_.decoder_start_id);
}

std::vector<Batch> eval_batches(const std::vector<Example>& examples, int64_t batch_size, int64_t pad_id,
                                int64_t decoder_start_id) {
  std::vector<Batch> out;
  for (size_t start = 0; start < examples.size(); start += batch_size) {
    std::vector<const Example*> ex;
    for (size_t i = start; i < std::min(examples.size(), start + batch_size); ++i) ex.push_back(&examples[i]);
    out.push_back(collate(ex, std::vector<size_t>(ex.size(), 0), pad_id, decoder_start_id));
  }
  return out;
}

}  // namespace tlmoe::data
