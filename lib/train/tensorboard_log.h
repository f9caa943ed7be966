// TensorBoard's view of training (docs/tensorboard.md): the values of metrics.jsonl as scalars,
// the route heatmap as an image. The event format itself is lib/tensorboard.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tensorboard/event_file.h"

namespace tlmoe::train {

// The scalars of one metrics.jsonl line (a training line or a dev line), tagged
//   train/loss, train/tokens_per_s, train/grad_norm, train/lr_multiplier, train/lr/{group},
//   train/tau (routed models only), system/peak_memory_mib, routes/entropy/{layer},
//   dev/loss, dev/score, dev/top_answer_share, dev/collapsed_tasks, dev/score_seconds,
//   dev_task_score/{task}, dev_task_loss/{task}.
// `layer_names` names the route-entropy layers (their index from 1 when the count differs).
// Keys it does not know and values that are not finite numbers are left out.
std::vector<tensorboard::Scalar> board_scalars(const nlohmann::json& line, bool routed,
                                               const std::vector<std::string>& layer_names);

// The heatmap of routes_json's routes at the run's temperature, as PNG bytes with its pixel size.
struct BoardImage {
  std::string png;
  int width = 0, height = 0;
};
BoardImage route_heatmap_image(const nlohmann::json& routes);

// {run}/tensorboard/: one event file per invocation of `tlmoe train`, which starts with a session
// start at the first step it trains (the step it resumes from + 1), so that TensorBoard drops what
// a killed run logged after its last checkpoint and shows one consistent curve.
class TrainBoard {
 public:
  TrainBoard(const std::filesystem::path& run_dir, std::int64_t start_step, bool routed,
             std::vector<std::string> layer_names, bool images);
  void log(const nlohmann::json& line);          // a metrics.jsonl line (its "step")
  void routes(const nlohmann::json& routes_json);  // the heatmap, when images are on

 private:
  tensorboard::EventWriter w_;
  bool routed_, images_;
  std::vector<std::string> layer_names_;
};

}  // namespace tlmoe::train
