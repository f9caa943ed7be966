// TensorBoard event files read back by TensorBoard itself (tests/golden/check_tensorboard.py, the
// EventAccumulator of PyPI's tensorboard): a training run, a run killed after its last checkpoint
// and resumed (TensorBoard must show the uninterrupted run's curves), and an adapt sweep.
// torch before Catch: c10's logging header defines its own CHECK, which must not replace Catch's
#include <torch/torch.h>

#include <catch2/catch.hpp>

#include <filesystem>
#include <sstream>

#include "adapt/adapt.h"
#include "hf_test_util.h"
#include "test_util.h"
#include "tiny_data.h"

namespace fs = std::filesystem;

namespace {

int check(const std::string& args) {
  std::string out;
  const int rc = tlmoe::test::run_python(
      "'" + (fs::path(tlmoe::test::source_dir()) / "tests/golden/check_tensorboard.py").string() + "' " + args, &out);
  INFO(out);
  WARN(out);
  return rc;
}

std::string q(const fs::path& p) { return "'" + p.string() + "'"; }

}  // namespace

TEST_CASE("tensorboard: train and a killed-then-resumed run read back by TensorBoard equal metrics.jsonl", "[tensorboard]") {
  tlmoe::test::Tiny t;
  auto cfg = t.config();
  cfg.train.save_every = 10;
  const fs::path a = t.dir / "a", b = t.dir / "b";
  tlmoe::test::run(cfg, a);
  CHECK(check("train " + q(a) + " " + q(a / "metrics.jsonl")) == 0);

  // Killed after logging step 30 but before its checkpoint: last/ is step 20's state, the event
  // file holds steps 21-30 of the dead run. The resumed run's TensorBoard view must be the
  // uninterrupted run's, value for value.
  fs::copy(a, b, fs::copy_options::recursive);
  fs::remove_all(b / "last");
  fs::rename(b / "step_20", b / "last");
  tlmoe::test::run(cfg, b, /*resume=*/true);
  size_t files = 0;
  for (const auto& e : fs::directory_iterator(b / "tensorboard")) files += e.path().filename().string().rfind("events.out.tfevents.", 0) == 0;
  CHECK(files == 2);
  CHECK(check("train " + q(b) + " " + q(a / "metrics.jsonl")) == 0);

  // adapt: one TensorBoard run per grid point
  auto ac = t.config();
  ac.adapt.lrs = {3e-3};
  ac.adapt.batch_sizes = {4};
  ac.adapt.steps = 8;
  ac.adapt.warmup_steps = 2;
  ac.adapt.eval_every = 4;
  std::ostringstream log;
  tlmoe::adapt::AdaptOptions o;
  o.cfg = ac;
  o.checkpoint = (a / "best").string();
  o.out_dir = (t.dir / "ad").string();
  o.log = &log;
  o.plain_progress = true;
  REQUIRE(tlmoe::adapt::adapt(o).complete);
  CHECK(check("adapt " + q(t.dir / "ad")) == 0);
}
