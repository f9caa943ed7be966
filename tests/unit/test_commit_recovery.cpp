// A directory commit (io::StagingDir) interrupted at every step, as a kill would interrupt it, is
// finished or rolled back by io::recover_staged, and a training run killed inside a checkpoint
// commit resumes to exactly the uninterrupted run.
#include <torch/torch.h>  // before catch.hpp: c10 defines CHECK too

#include <catch2/catch.hpp>

#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "test_util.h"
#include "tiny_data.h"

namespace fs = std::filesystem;
using tlmoe::test::metrics_without_timings;
using tlmoe::test::read_text;
using tlmoe::test::run;
using tlmoe::test::TempDir;
using tlmoe::test::Tiny;
using tlmoe::test::write_text;

namespace {

// Names in `dir` other than `keep`.
std::vector<std::string> others(const fs::path& dir, const std::string& keep) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename() != keep) out.push_back(e.path().filename().string());
  return out;
}

// A hook that "kills" the process at `step` of the `nth` commit into a directory named `target`.
void crash_at(const std::string& target, int nth, int step, int* seen) {
  *seen = 0;
  auto begun = std::make_shared<bool>(false);
  tlmoe::io::set_commit_hook([=](int s, const fs::path& final_path) {
    if (final_path.filename() != target) return;
    if (s == 1 || (s == 2 && !*begun)) ++*seen, *begun = true;  // a commit begins (replacing, or a first one)
    if (*seen == nth && s == step) throw tlmoe::io::SimulatedCrash("killed");
    if (s == 4) *begun = false;
  });
}

struct HookOff {
  ~HookOff() { tlmoe::io::set_commit_hook(nullptr); }
};

void check_same_weights(const fs::path& a, const fs::path& b) {
  auto x = tlmoe::io::load_safetensors(a), y = tlmoe::io::load_safetensors(b);
  REQUIRE(x.names == y.names);
  for (const auto& n : x.names) {
    INFO(n);
    CHECK(torch::equal(x.tensors.at(n), y.tensors.at(n)));
  }
}

}  // namespace

TEST_CASE("a directory commit killed at each step is finished or rolled back by recover_staged", "[io][recovery]") {
  HookOff off;
  // step -> what `final` holds after recovery: killed before the old one moved aside, the old
  // one; killed once the new one is complete and the old one aside (no `final` at all), the new one
  for (int step = 1; step <= 4; ++step) {
    TempDir d;
    const fs::path final_path = d / "last";
    write_text(final_path / "v", "old");
    {
      tlmoe::io::StagingDir staging(final_path);
      write_text(staging.path() / "v", "new");
      int seen = 0;
      crash_at("last", 1, step, &seen);
      CHECK_THROWS_AS(staging.commit(), tlmoe::io::SimulatedCrash);
      tlmoe::io::set_commit_hook(nullptr);
    }  // a killed process runs no destructor: the staged directory stays where it was
    INFO("killed at step " << step);
    if (step == 2) {
      CHECK_FALSE(fs::exists(final_path));  // the window: two complete directories, no `final`
      CHECK(others(d.path(), "last").size() == 2);
    }
    // a live writer's leftovers are not touched
    if (step != 4) CHECK(tlmoe::io::recover_staged(final_path, /*all_leftovers=*/false).empty());
    const std::string action = tlmoe::io::recover_staged(final_path, /*all_leftovers=*/true);
    CHECK(read_text(final_path / "v") == (step == 1 ? "old" : "new"));
    CHECK(others(d.path(), "last").empty());
    if (step == 2) CHECK_THAT(action, Catch::Contains("finished an interrupted commit"));
    if (step == 4) CHECK(action.empty());
  }
  SECTION("the old directory alone (the staged one lost) is rolled back") {
    TempDir d;
    write_text(d / "best.tmp-999999-ab.old/v", "old");
    CHECK_THAT(tlmoe::io::recover_staged(d / "best", true), Catch::Contains("rolled back"));
    CHECK(read_text(d / "best/v") == "old");
  }
  SECTION("a first commit killed before its rename leaves no `final`: the staged directory goes") {
    TempDir d;
    {
      tlmoe::io::StagingDir staging(d / "best");
      write_text(staging.path() / "v", "new");
      int seen = 0;
      crash_at("best", 1, 2, &seen);
      CHECK_THROWS_AS(staging.commit(), tlmoe::io::SimulatedCrash);
      tlmoe::io::set_commit_hook(nullptr);
    }
    CHECK_THAT(tlmoe::io::recover_staged(d / "best", true), Catch::Contains("removed 1 leftover"));
    CHECK_FALSE(fs::exists(d / "best"));
    CHECK(others(d.path(), "").empty());
  }
}

TEST_CASE("train killed inside a checkpoint commit, at every step, resumes to the uninterrupted run", "[train][recovery]") {
  HookOff off;
  Tiny t;
  auto cfg = t.config();
  cfg.train.tensorboard = false;
  run(cfg, t.dir / "a");  // evaluations (and commits of last/) at steps 10, 20, 30
  const auto want = metrics_without_timings(t.dir / "a/metrics.jsonl");
  int crashes = 0;
  for (const std::string target : {"last", "best"}) {
    for (int step = 1; step <= 4; ++step) {
      const fs::path dir = t.dir / (target + std::to_string(step));
      int seen = 0;
      crash_at(target, target == "last" ? 2 : 1, step, &seen);
      bool crashed = false;
      try {
        run(cfg, dir);
      } catch (const tlmoe::io::SimulatedCrash&) {
        crashed = true;
      }
      tlmoe::io::set_commit_hook(nullptr);
      if (!crashed) continue;  // step 1 and 3 do not occur in a first commit
      ++crashes;
      INFO(target << ", killed at step " << step << " of its commit");
      if (target == "last" && step == 2) CHECK_FALSE(fs::exists(dir / "last"));
      run(cfg, dir, /*resume=*/true);
      check_same_weights(t.dir / "a/last/model.safetensors", dir / "last/model.safetensors");
      check_same_weights(t.dir / "a/best/model.safetensors", dir / "best/model.safetensors");
      CHECK(metrics_without_timings(dir / "metrics.jsonl") == want);
      for (const auto& name : others(dir, "")) CHECK(name.find(".tmp-") == std::string::npos);
    }
  }
  CHECK(crashes >= 6);  // last/: all four steps; best/: at least its first commit's two
}
