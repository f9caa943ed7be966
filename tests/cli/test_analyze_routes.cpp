// End to end: `tlmoe analyze-routes` on a tiny TL-MoE trained on the embedded gym (report, tables,
// figures, statistics, counterfactuals), and its refusals (vanilla checkpoint, bad flags).
#include <catch2/catch.hpp>

#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "test_util.h"

namespace fs = std::filesystem;
using tlmoe::test::read_text;
using tlmoe::test::run_tlmoe;
using tlmoe::test::TempDir;
using tlmoe::test::write_text;

namespace {

// A self-contained tiny config (independent of configs/quickstart.yaml): 1 encoder and 1 decoder
// layer with 2 experts each, a learned task table, a few steps with route snapshots at 3 and 6.
std::string tiny_config(const fs::path& gym) {
  return "device: cpu\n"
         "data:\n  dir: " + gym.string() + "\n  upstream_source: full\n  max_input_len: 48\n  max_output_len: 12\n"
         "tokenizer:\n  vocab_size: 400\n"
         "model:\n  d_model: 32\n  encoder_layers: 1\n  decoder_layers: 1\n  heads: 2\n  ffn_dim: 64\n"
         "  experts: 2\n  max_positions: 64\n"
         "routing:\n  hidden: 8\n  tau0: 2.0\n  anneal_rate: 0.1\n"
         "task_rep:\n  kind: learned\n  dim: 8\n"
         "train:\n  steps: 6\n  batch_size: 8\n  eval_every: 3\n  eval_max_examples: 1\n  log_every: 3\n"
         "eval:\n  batch_size: 64\n  max_len: 6\n"
         "analysis:\n  permutations: 199\n";
}

std::vector<std::string> lines_of(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string l;
  while (std::getline(ss, l))
    if (!l.empty()) out.push_back(l);
  return out;
}

// Splits a CSV line without quoted fields (the gym's names need no quoting).
std::vector<std::string> fields(const std::string& line) {
  std::vector<std::string> out;
  std::stringstream ss(line);
  std::string f;
  while (std::getline(ss, f, ',')) out.push_back(f);
  if (!line.empty() && line.back() == ',') out.push_back("");
  return out;
}

// CSV rows as maps from the header's column names.
std::vector<std::map<std::string, std::string>> read_csv(const fs::path& p) {
  auto ls = lines_of(read_text(p));
  std::vector<std::map<std::string, std::string>> rows;
  if (ls.empty()) return rows;
  const auto head = fields(ls[0]);
  for (size_t i = 1; i < ls.size(); ++i) {
    const auto f = fields(ls[i]);
    std::map<std::string, std::string> row;
    for (size_t j = 0; j < head.size() && j < f.size(); ++j) row[head[j]] = f[j];
    rows.push_back(row);
  }
  return rows;
}

bool is_png(const fs::path& p) { return read_text(p).rfind("\x89PNG\r\n\x1a\n", 0) == 0; }
bool is_svg(const fs::path& p) {
  const auto s = read_text(p);
  return s.find("<svg") != std::string::npos && s.find("</svg>") != std::string::npos;
}

// "enc1:e2 dec1:e1" -> {"enc1": "e2", "dec1": "e1"}
std::map<std::string, std::string> route_of(const std::string& text) {
  std::map<std::string, std::string> out;
  std::stringstream ss(text);
  std::string part;
  while (ss >> part) out[part.substr(0, part.find(':'))] = part.substr(part.find(':') + 1);
  return out;
}

}  // namespace

TEST_CASE("analyze-routes end to end on a tiny gym TL-MoE: report, figures, statistics, counterfactuals",
          "[cli][e2e][analysis]") {
  TempDir d;
  auto r = run_tlmoe("gym --out " + (d / "gym").string() + " --seed 42");
  REQUIRE(r.exit_code == 0);
  write_text(d / "tiny.yaml", tiny_config(d / "gym"));
  const std::string cfg = " --config " + (d / "tiny.yaml").string();
  r = run_tlmoe("preprocess" + cfg);
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  r = run_tlmoe("train --plain" + cfg + " --run-dir " + (d / "run").string());
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  REQUIRE(fs::exists(d / "run/routes/step_0000006.json"));

  const fs::path out = d / "analysis";
  // Counterfactual tasks: two of each partition.
  const std::string tasks = "add_digits,person_city,company_product,delete_word,rc_owner,reverse_list";
  r = run_tlmoe("analyze-routes --checkpoint " + (d / "run/last").string() + " --out " + out.string() +
                " --ablate enc1:1 --force rc_owner=add_digits --tasks " + tasks + " --max-examples 3" +
                " --compare " + (d / "run/last").string() + " --dynamics-tasks add_digits");
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.output, Catch::Contains("NMI"));
  CHECK_THAT(r.output, Catch::Contains("report: "));

  // report.md links every figure and table, and each exists.
  const std::string report = read_text(out / "report.md");
  // a --dynamics-tasks name the checkpoint does not know: exit 2, nothing written
  const auto bad = run_tlmoe("analyze-routes --checkpoint " + (d / "run/last").string() + " --out " +
                             (d / "bad").string() + " --dynamics-tasks add_digitz");
  CHECK(bad.exit_code == 2);
  CHECK_THAT(bad.output, Catch::Contains("--dynamics-tasks") && Catch::Contains("add_digitz"));
  CHECK_FALSE(fs::exists(d / "bad"));
  CHECK_THAT(report, Catch::Contains("# Routing analysis"));
  CHECK_THAT(report, Catch::Contains("NMI = "));
  CHECK_THAT(report, Catch::Contains("permutation p = "));
  for (const std::string stem : {"heatmap_tau1", "heatmap_tau", "pca", "expert_usage", "dynamics_entropy",
                                 "dynamics_changes"}) {
    INFO(stem);
    const fs::path png = out / "figures" / (stem + ".png"), svg = out / "figures" / (stem + ".svg");
    REQUIRE(fs::exists(png));
    REQUIRE(fs::exists(svg));
    CHECK(is_png(png));
    CHECK(is_svg(svg));
    CHECK_THAT(report, Catch::Contains("figures/" + stem + ".png"));
    CHECK_THAT(report, Catch::Contains("figures/" + stem + ".svg"));
  }
  for (const std::string t : {"routes.csv", "routes.json", "stats.json", "tables/layer_tests.csv",
                              "tables/association.csv", "tables/clusters.csv", "tables/pca.csv", "tables/dynamics.csv",
                              "tables/ablation.csv", "tables/force.csv", "tables/compare.csv"}) {
    INFO(t);
    CHECK(fs::exists(out / t));
    CHECK_THAT(report, Catch::Contains("(" + t + ")"));
  }

  // The heatmap names every task of the table (77 in the gym).
  const auto splits = nlohmann::json::parse(read_text(d / "gym/splits.json"));
  const auto all = splits.at("all").get<std::vector<std::string>>();
  const std::string heat = read_text(out / "figures/heatmap_tau1.svg");
  for (const auto& t : all) {
    INFO(t);
    CHECK(heat.find(">" + t) != std::string::npos);
  }

  // routes.csv: one row per (task, layer), weights that sum to 1 at both temperatures.
  const auto routes = read_csv(out / "routes.csv");
  CHECK(routes.size() == all.size() * 2);
  std::map<std::string, std::map<std::string, std::string>> hard;  // task -> layer -> "e1"
  for (const auto& row : routes) {
    const double s1 = std::stod(row.at("tau1_e1")) + std::stod(row.at("tau1_e2"));
    const double st = std::stod(row.at("tau_e1")) + std::stod(row.at("tau_e2"));
    CHECK(s1 == Approx(1.0).epsilon(1e-9));
    CHECK(st == Approx(1.0).epsilon(1e-9));
    hard[row.at("task")][row.at("layer")] = "e" + row.at("hard");
  }
  CHECK(hard.at("add_digits").size() == 2);

  // stats.json: numbers in range.
  const auto stats = nlohmann::json::parse(read_text(out / "stats.json"));
  CHECK(stats.at("layers") == nlohmann::json({"enc1", "dec1"}));
  CHECK(stats.at("categories").size() == 6);
  // NMI/ARI on a subset with fewer than 3 tasks per category carry a caution in report.md
  int cautioned = 0;
  for (const std::string part : {"seen", "unseen"}) {
    const auto& bp = stats.at("by_partition").at(part);
    const auto tasks = bp.at("tasks").get<std::size_t>(), cats = bp.at("categories").get<std::size_t>();
    const auto at = report.find("- " + part + " tasks only (");
    REQUIRE(at != std::string::npos);
    const std::string line = report.substr(at, report.find('\n', at) - at);
    INFO(line);
    const bool few = tasks < 3 * cats;
    CHECK((line.find("caution: " + std::to_string(tasks) + " tasks in " + std::to_string(cats) + " categories") !=
           std::string::npos) == few);
    cautioned += few;
  }
  CHECK(cautioned == 1);  // the 17 unseen tasks in 6 categories; the 51 seen ones are enough
  const double nmi = stats.at("clustering").at("nmi"), ari = stats.at("clustering").at("ari");
  CHECK(nmi >= 0.0);
  CHECK(nmi <= 1.0);
  CHECK(ari >= -1.0);
  CHECK(ari <= 1.0);
  const double p = stats.at("permutation_test").at("p_value");
  CHECK(p > 0.0);
  CHECK(p <= 1.0);
  CHECK(stats.at("permutation_test").at("permutations") == 199);
  for (const auto& l : stats.at("association").at("layers")) {
    const double lp = l.at("hard").at("p_value");
    CHECK(lp >= 0.0);
    CHECK(lp <= 1.0);
  }
  CHECK(stats.at("dynamics").at("steps") == nlohmann::json({3, 6}));
  // dynamics_entropy: one mean line and band per category, and the task asked for by name;
  // dynamics_changes: only the second snapshot has changes to show (no point at step 3)
  const std::string ent = read_text(out / "figures/dynamics_entropy.svg");
  CHECK(std::count(ent.begin(), ent.end(), '\n') > 0);
  std::size_t bands = 0;
  for (std::size_t at = ent.find("<polygon"); at != std::string::npos; at = ent.find("<polygon", at + 1)) ++bands;
  CHECK(bands == stats.at("categories").size());
  CHECK(ent.find(">add_digits (arithmetic)</text>") != std::string::npos);
  CHECK(ent.find(">extractive (mean)</text>") != std::string::npos);
  CHECK(ent.find(">person_city</text>") == std::string::npos);  // no per-task lines otherwise
  CHECK_FALSE(stats.at("summary").get<std::string>().empty());
  // A run compared with itself: the experts align to themselves and every route agrees.
  for (const auto& l : stats.at("compare").at("layers")) {
    CHECK(l.at("matching") == nlohmann::json({"e1->e1", "e2->e2"}));
    CHECK(l.at("argmax_agreement") == 1.0);
    CHECK(l.at("mean_total_variation") == 0.0);
  }

  // Ablation of enc1:e1: exactly the tasks that used it change, and only in enc1, to e2.
  const auto ablation = read_csv(out / "tables/ablation.csv");
  REQUIRE(ablation.size() == 6);
  for (const auto& row : ablation) {
    INFO(row.at("task"));
    const auto before = route_of(row.at("route_before")), after = route_of(row.at("route_after"));
    CHECK(before == std::map<std::string, std::string>(hard.at(row.at("task")).begin(), hard.at(row.at("task")).end()));
    const bool used = before.at("enc1") == "e1";
    CHECK(row.at("route_changed") == (used ? "1" : "0"));
    CHECK(after.at("enc1") == "e2");
    CHECK(after.at("dec1") == before.at("dec1"));
    if (!used) CHECK(row.at("change") == "0");
  }
  // Forcing rc_owner onto add_digits's route.
  const auto force = read_csv(out / "tables/force.csv");
  REQUIRE(force.size() == 1);
  CHECK(force[0].at("task") == "rc_owner");
  CHECK(route_of(force[0].at("route_after")) ==
        std::map<std::string, std::string>(hard.at("add_digits").begin(), hard.at("add_digits").end()));

  // Attribution over every expert, SVG only, on three tasks.
  const fs::path out2 = d / "attribution";
  r = run_tlmoe("analyze-routes --checkpoint " + (d / "run/best").string() + " --out " + out2.string() +
                " --attribution --tasks add_digits,rc_owner,delete_word --max-examples 2 --set analysis.formats=svg");
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(is_svg(out2 / "figures/attribution.svg"));
  CHECK_FALSE(fs::exists(out2 / "figures/heatmap_tau1.png"));
  const auto attr = read_csv(out2 / "tables/attribution.csv");
  REQUIRE(attr.size() == 3);
  const auto routes2 = read_csv(out2 / "routes.csv");
  std::map<std::string, std::map<std::string, std::string>> hard2;
  for (const auto& row : routes2) hard2[row.at("task")][row.at("layer")] = "e" + row.at("hard");
  for (const auto& row : attr) {
    for (const std::string layer : {"enc1", "dec1"})
      for (const std::string e : {"e1", "e2"}) {
        INFO(row.at("task") << " " << layer << ":" << e);
        REQUIRE(row.count("drop_" + layer + ":" + e));
        // An expert the task does not use: its route and so its score are unchanged.
        if (hard2.at(row.at("task")).at(layer) != e) CHECK(row.at("drop_" + layer + ":" + e) == "0");
      }
  }
  CHECK_THAT(read_text(out2 / "report.md"), Catch::Contains("tables/attribution.csv"));

  // Refusals: exit 2 with a message naming the problem; nothing half-analysed.
  r = run_tlmoe("analyze-routes --checkpoint " + (d / "run/last").string() + " --out " + (d / "bad").string() +
                " --ablate enc3:1");
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.output, Catch::Contains("--ablate"));
  r = run_tlmoe("analyze-routes --checkpoint " + (d / "run/last").string() + " --out " + (d / "bad").string() +
                " --force rc_ownr=add_digits");
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.output, Catch::Contains("did you mean 'rc_owner'"));
  r = run_tlmoe("analyze-routes --checkpoint " + (d / "run/last").string() + " --out " + (d / "bad").string() +
                " --tasks rc_owner");
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.output, Catch::Contains("--tasks"));
  CHECK_FALSE(fs::exists(d / "bad"));
  r = run_tlmoe("analyze-routes --checkpoint " + (d / "nowhere").string() + " --out " + (d / "bad").string());
  CHECK(r.exit_code == 2);

  // A vanilla checkpoint has no routes.
  r = run_tlmoe("train --plain" + cfg + " --set model.experts=1 --set train.steps=1 --set train.eval_every=0" +
                " --run-dir " + (d / "vanilla").string());
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  r = run_tlmoe("analyze-routes --checkpoint " + (d / "vanilla/last").string() + " --out " + (d / "v").string());
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.output, Catch::Contains("vanilla"));
}
