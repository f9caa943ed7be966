// What the benchmarks share (internal to lib/bench).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <nlohmann/json.hpp>

#include "config/config.h"
#include "model/tlmoe_model.h"

namespace tlmoe::bench {

int64_t count_params(torch::nn::Module& m);
// Waits for the device's queued work (CUDA); nothing on the CPU.
void sync(const torch::Device& d);
// The model shape and the machine's threads, shared by every bench report.
void describe_setup(nlohmann::json& rep, const Config& base);
// Model FLOPs of one training step (bench_train, "model TFLOP/s" and MFU).
double train_step_flops(const model::ModelOptions& mo, int64_t B, int64_t S, int64_t T, bool dense);

}  // namespace tlmoe::bench
