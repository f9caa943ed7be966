#include "bench/common.h"

#include <algorithm>
#include <string>
#include <thread>
#include <vector>

#include "common/device.h"

namespace tlmoe::bench {

int64_t count_params(torch::nn::Module& m) {
  int64_t n = 0;
  for (auto& p : m.parameters()) n += p.numel();
  return n;
}

void sync(const torch::Device& d) {
  if (d.is_cuda()) torch::cuda::synchronize();
}

// The model shape and the machine's threads, shared by every bench report.
void describe_setup(nlohmann::json& rep, const Config& base) {
  rep["model"] = {{"d_model", base.model.d_model},
                  {"layers", std::to_string(base.model.encoder_layers) + "+" + std::to_string(base.model.decoder_layers)},
                  {"ffn_dim", base.model.ffn_dim},
                  {"experts", base.model.experts}};
  rep["device"] = pick_device(base.device).str();
  rep["threads"] = torch::get_num_threads();
  rep["hardware_threads"] = std::thread::hardware_concurrency();
}

// Model FLOPs of one training step (forward + backward = 3 x forward, 2 FLOPs per multiply-add)
// of an encoder-decoder with B examples of S source and T target tokens. Counted: every
// projection, the feed-forward blocks, the attention products (QK^T and AV) and the LM head;
// not counted: layer norms, softmax, embeddings lookups, the router. A routed layer runs one
// expert per example (top-1 sparse, vanilla) or all m of them (dense).
double train_step_flops(const model::ModelOptions& mo, int64_t B, int64_t S, int64_t T, bool dense) {
  const double d = static_cast<double>(mo.layer.d_model), F = static_cast<double>(mo.layer.ffn_dim);
  const double s = static_cast<double>(S), t = static_cast<double>(T), V = static_cast<double>(mo.vocab_size);
  auto runs = [&](const std::vector<int64_t>& vanilla, int64_t l) {
    const bool routed = mo.experts > 1 && std::find(vanilla.begin(), vanilla.end(), l) == vanilla.end();
    return dense && routed ? static_cast<double>(mo.experts) : 1.0;
  };
  double macs = 0;
  for (int64_t l = 0; l < mo.encoder_layers; ++l)
    macs += runs(mo.vanilla_encoder_layers, l) * s * (4 * d * d + 2 * d * F + 2 * s * d);
  for (int64_t l = 0; l < mo.decoder_layers; ++l)
    macs += runs(mo.vanilla_decoder_layers, l) *
            (t * (4 * d * d + 2 * t * d + 2 * d * d + 2 * s * d + 2 * d * F) + s * 2 * d * d);
  macs += t * d * V;
  return 3.0 * 2.0 * static_cast<double>(B) * macs;
}

}  // namespace tlmoe::bench
