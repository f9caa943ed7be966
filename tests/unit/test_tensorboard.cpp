// The TensorBoard event format's pieces against independent references: CRC-32C against the test
// vectors of RFC 3720 (B.4), the masked CRC and a whole TFRecord against the bytes of TensorBoard's
// own Python writer (tensorboard 2.21: pywrap_tensorflow.masked_crc32c, RecordWriter), and the
// scalars a metrics.jsonl line becomes (docs/tensorboard.md's table).
// torch before Catch: c10's logging header defines its own CHECK, which must not replace Catch's
#include <torch/torch.h>

#include <catch2/catch.hpp>

#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "tensorboard/event_file.h"
#include "test_util.h"
#include "tiny_data.h"
#include "train/tensorboard_log.h"

namespace fs = std::filesystem;
using nlohmann::json;
using tlmoe::tensorboard::crc32c;

TEST_CASE("tensorboard: CRC-32C of the RFC 3720 test vectors", "[tensorboard]") {
  CHECK(crc32c(std::string(32, '\0')) == 0x8A9136AAu);
  CHECK(crc32c(std::string(32, '\xff')) == 0x62A8AB43u);
  std::string up, down;
  for (int i = 0; i < 32; ++i) {
    up.push_back(static_cast<char>(i));
    down.push_back(static_cast<char>(31 - i));
  }
  CHECK(crc32c(up) == 0x46DD794Eu);
  CHECK(crc32c(down) == 0x113FDB5Cu);
  CHECK(crc32c("123456789") == 0xE3069283u);
  // continuing a CRC over a second piece equals the CRC of the whole
  CHECK(crc32c("6789", crc32c("12345")) == 0xE3069283u);
}

TEST_CASE("tensorboard: masked CRC and a TFRecord byte for byte as TensorBoard's Python writer", "[tensorboard]") {
  CHECK(tlmoe::tensorboard::masked_crc32c("123456789") == 0xc78ab0e5u);
  CHECK(tlmoe::tensorboard::masked_crc32c("") == 0xa282ead8u);
  const std::string rec = tlmoe::tensorboard::tf_record("hello tlmoe");
  std::string hex;
  for (unsigned char c : rec) {
    char b[3];
    std::snprintf(b, sizeof b, "%02x", c);
    hex += b;
  }
  CHECK(hex == "0b000000000000008615f50468656c6c6f20746c6d6f65ec1c3944");
}

TEST_CASE("tensorboard: the scalars of metrics.jsonl lines", "[tensorboard]") {
  const json train = json::parse(R"({"step": 20, "loss": 2.5, "tokens_per_s": 1000, "tau": 0.5, "grad_norm": 1.25,
      "lr_multiplier": 0.5, "lr": {"backbone": 0.001, "router": 0.002}, "peak_memory_bytes": 3145728,
      "peak_memory_kind": "cpu", "route_entropy": [0.25, 0.75], "world_size": 2})");
  auto to_map = [](const std::vector<tlmoe::tensorboard::Scalar>& v) {
    std::map<std::string, double> m;
    for (const auto& s : v) m[s.tag] = s.value;
    return m;
  };
  const std::map<std::string, double> want = {
      {"train/loss", 2.5},        {"train/tokens_per_s", 1000},       {"train/tau", 0.5},
      {"train/grad_norm", 1.25},  {"train/lr_multiplier", 0.5},       {"train/lr/backbone", 0.001},
      {"train/lr/router", 0.002}, {"system/peak_memory_mib", 3.0},    {"routes/entropy/enc1", 0.25},
      {"routes/entropy/dec1", 0.75}};
  CHECK(to_map(tlmoe::train::board_scalars(train, true, {"enc1", "dec1"})) == want);
  // a vanilla model has no temperature; layer names that do not fit become indices
  auto vanilla = to_map(tlmoe::train::board_scalars(train, false, {}));
  CHECK(vanilla.count("train/tau") == 0);
  CHECK(vanilla.at("routes/entropy/2") == 0.75);

  const json dev = json::parse(R"({"step": 20, "dev_loss": 1.5, "dev_score": null, "dev_top_share": 0.5,
      "collapsed_tasks": ["a", "b"], "dev_task_scores": {"a": 0.25, "b": null}, "dev_task_losses": {"a": 1.0}})");
  const std::map<std::string, double> want_dev = {{"dev/loss", 1.5},           {"dev/top_answer_share", 0.5},
                                                  {"dev/collapsed_tasks", 2},  {"dev_task_score/a", 0.25},
                                                  {"dev_task_loss/a", 1.0}};
  CHECK(to_map(tlmoe::train::board_scalars(dev, true, {})) == want_dev);
}

TEST_CASE("tensorboard: an unwritable directory is a filesystem error naming it", "[tensorboard]") {
  tlmoe::test::TempDir d;
  tlmoe::test::write_text(d / "file", "x");
  CHECK_THROWS_AS(tlmoe::tensorboard::EventWriter(d / "file" / "tb"), fs::filesystem_error);
}

TEST_CASE("tensorboard: train.tensorboard false writes no event file, true writes one per invocation", "[tensorboard]") {
  tlmoe::test::Tiny t;
  auto cfg = t.config();
  cfg.train.steps = 4;
  cfg.train.tensorboard = false;
  tlmoe::test::run(cfg, t.dir / "off");
  CHECK(fs::exists(t.dir / "off/metrics.jsonl"));
  CHECK_FALSE(fs::exists(t.dir / "off/tensorboard"));
  cfg.train.tensorboard = true;
  tlmoe::test::run(cfg, t.dir / "on", false, 2);
  tlmoe::test::run(cfg, t.dir / "on", true);
  size_t files = 0;
  for (const auto& e : fs::directory_iterator(t.dir / "on/tensorboard"))
    files += e.path().filename().string().rfind("events.out.tfevents.", 0) == 0;
  CHECK(files == 2);
}
