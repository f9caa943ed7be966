// Heterogeneous multi-task batches (docs/method.md §6.1): tasks mixed within a batch, each batch trimmed
// to its longest input and target, optional length bucketing, uniform-over-examples or
// temperature-scaled task sampling. The order is a pure function of (seed, epoch, batch index),
// so resuming needs only (epoch, batch index).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <vector>

namespace tlmoe::data {

// One tokenized example: ids include <s> ... </s>.
struct Example {
  int64_t task_id = 0;
  std::vector<int32_t> input;
  std::vector<std::vector<int32_t>> outputs;  // every gold answer; one is sampled when drawn
};

struct Batch {
  torch::Tensor input_ids;          // [B,S] int64, padded with pad
  torch::Tensor input_mask;         // [B,S] int64, 1 = token
  torch::Tensor decoder_input_ids;  // [B,T] int64: start token, then target[:-1]
  torch::Tensor target_ids;         // [B,T] int64, padded with pad (excluded from the loss)
  torch::Tensor task_ids;           // [B] int64
  int64_t target_tokens = 0;        // non-pad target tokens
};

struct BatchingOptions {
  int64_t batch_size = 16;
  uint64_t seed = 42;
  bool length_bucketing = true;
  int64_t bucket_batches = 50;         // a bucket = this many batches, sorted by length inside
  std::string task_sampling = "examples";  // examples | temperature
  double sampling_temperature = 1.0;
  int64_t pad_id = 1;
  int64_t decoder_start_id = 2;
};

// Builds padded tensors from examples; `choice[i]` picks the output of example i.
Batch collate(const std::vector<const Example*>& examples, const std::vector<size_t>& choice, int64_t pad_id,
              int64_t decoder_start_id);

class MultiTaskBatcher {
 public:
  MultiTaskBatcher(const std::vector<Example>& examples, BatchingOptions opts);
  // Batches per epoch (the last partial batch is kept).
  int64_t batches_per_epoch() const { return static_cast<int64_t>(epoch_batches_.size()); }
  // The batch at the current position, then advances (rolling over to the next epoch).
  Batch next();
  int64_t epoch() const { return epoch_; }
  int64_t position() const { return pos_; }
  void seek(int64_t epoch, int64_t position);  // restore a saved position

 private:
  void build_epoch(int64_t epoch);
  const std::vector<Example>& examples_;
  BatchingOptions o_;
  std::vector<std::vector<size_t>> epoch_batches_;  // example indices of each batch
  int64_t epoch_ = -1, pos_ = 0;
};

// Deterministic evaluation batches in file order (no shuffling, first output as target).
std::vector<Batch> eval_batches(const std::vector<Example>& examples, int64_t batch_size, int64_t pad_id,
                                int64_t decoder_start_id);

// SplitMix64: the project's deterministic generator for data order (identical on every platform).
uint64_t splitmix64(uint64_t& state);

}  // namespace tlmoe::data
