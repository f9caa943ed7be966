#include "train/tensorboard_log.h"

#include <cmath>

#include "analysis/plot.h"
#include "analysis/route_table.h"

using nlohmann::json;

namespace tlmoe::train {

namespace {

void add(std::vector<tensorboard::Scalar>& out, const std::string& tag, const json& v, double scale = 1.0) {
  if (v.is_number() && std::isfinite(v.get<double>())) out.push_back({tag, v.get<double>() * scale});
}

void add_train(std::vector<tensorboard::Scalar>& out, const json& line, bool routed,
               const std::vector<std::string>& layer_names) {
  add(out, "train/loss", line["loss"]);
  if (line.contains("tokens_per_s")) add(out, "train/tokens_per_s", line["tokens_per_s"]);
  if (line.contains("grad_norm")) add(out, "train/grad_norm", line["grad_norm"]);
  if (line.contains("lr_multiplier")) add(out, "train/lr_multiplier", line["lr_multiplier"]);
  if (routed && line.contains("tau")) add(out, "train/tau", line["tau"]);
  if (line.contains("lr") && line["lr"].is_object())
    for (const auto& [group, v] : line["lr"].items()) add(out, "train/lr/" + group, v);
  if (line.contains("peak_memory_bytes")) add(out, "system/peak_memory_mib", line["peak_memory_bytes"], 1.0 / (1 << 20));
  if (line.contains("route_entropy") && line["route_entropy"].is_array()) {
    const auto& ent = line["route_entropy"];
    for (size_t l = 0; l < ent.size(); ++l)
      add(out, "routes/entropy/" + (ent.size() == layer_names.size() ? layer_names[l] : std::to_string(l + 1)), ent[l]);
  }
}

void add_dev(std::vector<tensorboard::Scalar>& out, const json& line) {
  add(out, "dev/loss", line["dev_loss"]);
  if (line.contains("dev_score")) add(out, "dev/score", line["dev_score"]);
  if (line.contains("dev_top_share")) add(out, "dev/top_answer_share", line["dev_top_share"]);
  if (line.contains("collapsed_tasks") && line["collapsed_tasks"].is_array())
    out.push_back({"dev/collapsed_tasks", static_cast<double>(line["collapsed_tasks"].size())});
  if (line.contains("dev_score_seconds")) add(out, "dev/score_seconds", line["dev_score_seconds"]);
  for (const char* key : {"dev_task_scores", "dev_task_losses"}) {
    if (!line.contains(key) || !line[key].is_object()) continue;
    const std::string prefix = std::string(key) == "dev_task_scores" ? "dev_task_score/" : "dev_task_loss/";
    for (const auto& [task, v] : line[key].items()) add(out, prefix + task, v);
  }
}

}  // namespace

std::vector<tensorboard::Scalar> board_scalars(const json& line, bool routed, const std::vector<std::string>& layer_names) {
  std::vector<tensorboard::Scalar> out;
  if (line.contains("loss")) add_train(out, line, routed, layer_names);
  if (line.contains("dev_loss")) add_dev(out, line);
  return out;
}

BoardImage route_heatmap_image(const json& routes) {
  analysis::HeatmapSpec spec;
  spec.routes = analysis::route_table_from_json(nlohmann::ordered_json::parse(routes.dump()), "routes", "routes");
  char title[96];
  std::snprintf(title, sizeof title, "Routes at step %lld (tau = %.3g)",
                static_cast<long long>(routes.value("step", 0LL)), routes.value("tau", 1.0));
  spec.title = title;
  analysis::FigureSize size;
  BoardImage img;
  img.png = analysis::route_heatmap_png(spec, &size);
  img.width = size.width * analysis::kPngScale;
  img.height = size.height * analysis::kPngScale;
  return img;
}

TrainBoard::TrainBoard(const std::filesystem::path& run_dir, std::int64_t start_step, bool routed,
                       std::vector<std::string> layer_names, bool images)
    : w_(run_dir / "tensorboard"), routed_(routed), images_(images), layer_names_(std::move(layer_names)) {
  w_.session_start(start_step + 1);  // the first step this invocation logs
}

void TrainBoard::log(const json& line) {
  w_.scalars(line.at("step").get<std::int64_t>(), board_scalars(line, routed_, layer_names_));
}

void TrainBoard::routes(const json& routes_json) {
  if (!images_) return;
  const BoardImage img = route_heatmap_image(routes_json);
  w_.image(routes_json.at("step").get<std::int64_t>(), "routes/heatmap", img.png, img.width, img.height);
}

}  // namespace tlmoe::train
