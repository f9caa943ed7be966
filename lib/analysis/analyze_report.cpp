// The summary paragraph and report.md of analyze-routes (analysis_run.h), written from the
// numbers the other stages computed.
#include <numeric>
#include <sstream>

#include "analysis/analysis_run.h"

namespace tlmoe::analysis::detail {

namespace {

// NMI and ARI of a handful of points per category swing with a single task: below 3 tasks per
// category on average, say so next to them.
std::string few_per_category(std::size_t tasks, std::size_t categories) {
  if (categories == 0 || tasks >= 3 * categories) return "";
  std::ostringstream s;
  s.precision(2);
  s << " (caution: " << tasks << " tasks in " << categories << " categories, " << std::fixed
    << static_cast<double>(tasks) / static_cast<double>(categories)
    << " per category on average: with so few, moving one task changes NMI and ARI a lot; read them "
       "with the permutation test)";
  return s.str();
}

}  // namespace

std::string Analysis::summary_text() {
  std::ostringstream s;
  s << "The checkpoint (step " << lm.step << ", tau " << fmt(lm.tau) << ") routes " << n << " tasks ("
    << count_part("seen") << " seen, " << count_part("dev") << " dev, " << count_part("unseen") << " unseen) through "
    << plural(rl.names.size(), "routed layer", "routed layers") << " of " << E << " experts.";
  if (have_categories) {
    const std::size_t Ls = hard_assoc.size();
    s << " Against " << labels.num_classes() << " categories (" << cat_rows.size() << " categorised tasks), ";
    if (significant.empty()) {
      std::size_t best = 0;
      for (std::size_t l = 0; l < Ls; ++l)
        if (layer_perm_p[l] < layer_perm_p[best]) best = l;
      s << "no layer's hard expert choice is significantly associated with the category at " << kAlpha
        << " (chi-square statistic, permutation p-values; smallest p = " << fmt_p(layer_perm_p[best]) << " in "
        << hard_assoc[best].layer << ").";
    } else {
      std::vector<std::string> sig;
      std::size_t best = significant[0];
      for (std::size_t l : significant) {
        sig.push_back(hard_assoc[l].layer);
        if (hard_assoc[l].chi2.cramers_v > hard_assoc[best].chi2.cramers_v) best = l;
      }
      const auto& b = hard_assoc[best].chi2;
      s << "the hard expert choice is significantly associated with the category at " << kAlpha << " in "
        << sig.size() << " of " << Ls << " layers (" << join(sig, ", ")
        << "; chi-square statistic, permutation p-values), most strongly in " << hard_assoc[best].layer
        << " (chi2 = " << fmt(b.statistic) << ", dof " << b.dof << ", permutation p = " << fmt_p(layer_perm_p[best])
        << ", Cramér's V = " << fmt(b.cramers_v, 2) << ").";
      const std::size_t bonf = stats["association"]["significant_layers_bonferroni"].get<std::size_t>();
      if (bonf != sig.size())
        s << " With a Bonferroni correction over the " << Ls << " layers, " << bonf << " remain.";
    }
    if (!lifts.empty()) {
      std::vector<std::string> parts;
      for (const auto& t : lifts)
        parts.push_back(t.category + " → " + t.layer + ":" + expert_name(t.expert) + " (lift " + fmt(t.lift, 2) +
                        ": " + fmt(t.count) + " of its " + fmt(t.row_total) + " tasks)");
      s << " The expert each category over-uses most, by lift" << (significant.empty() ? "" : " in the significant layers")
        << ": " << join(parts, "; ") << ".";
    }
    if (clusters.ok) {
      s << " Cutting an average-linkage tree of the tau = 1 route vectors into " << labels.num_classes()
        << " clusters recovers the categories with NMI = " << fmt(clusters.nmi, 2)
        << " and ARI = " << fmt(clusters.ari, 2)
        << (clusters.ari < 0.05 ? " (chance level)" : clusters.ari < 0.3 ? " (weak agreement)"
                                                   : clusters.ari < 0.6 ? " (moderate agreement)"
                                                                        : " (strong agreement)")
        << ".";
    }
    if (perm.ok) {
      s << " Tasks of the same category " << (perm.r.p_value < kAlpha ? "have" : "do not have")
        << " significantly more similar routes than tasks of different categories (mean distance between "
        << "route vectors " << fmt(-perm.r.mean_same) << " within vs " << fmt(-perm.r.mean_different)
        << " across categories, permutation p = "
        << fmt_p(perm.r.p_value) << ", " << perm.r.permutations << " permutations).";
    }
  } else {
    s << " No task categories were found (" << meta0.category_source << "), so only the routes are shown.";
  }
  if (!dynamics_text.empty()) s << " " << dynamics_text;
  if (!compare_text.empty()) s << " " << compare_text;
  if (!cf_text.empty()) s << " " << cf_text;
  return s.str();
}

void Analysis::write_report(const std::string& summary) {
  std::ostringstream r;
  r << "# Routing analysis of `" << o.checkpoint << "`\n\n";
  const auto& health = stats["upstream_health"];
  if (health.is_object() && !health["warnings"].empty()) {
    r << "> **Caution: the routes below come from an unhealthy model**, so what they show may be noise:\n";
    for (const auto& w : health["warnings"]) r << "> - " << w.get<std::string>() << "\n";
    r << "> (training health: " << health.value("source", std::string()) << ")\n\n";
  }
  r << summary << "\n\n";
  r << "Checkpoint step " << lm.step << ", routing temperature tau = " << fmt(lm.tau) << ", selection "
    << stats["selection"].get<std::string>() << "; categories: " << meta0.category_source << ". Statistics use "
    << "the categorised tasks: the hard choice (argmax) for the association tests, the tau = 1 route vectors "
    << "(softmax of the router's logits) for clustering, the permutation test and PCA. All numbers: "
    << "[stats.json](stats.json).\n\n";
  r << "## Figures\n\n";
  for (const auto& f : out.figures) {
    r << "### " << f.title << "\n\n![" << f.title << "](" << f.paths.front() << ")\n\n";
    if (f.paths.size() > 1) {
      r << "Also as";
      for (std::size_t i = 1; i < f.paths.size(); ++i) r << " [" << f.paths[i] << "](" << f.paths[i] << ")";
      r << ".\n\n";
    }
  }
  if (have_categories) {
    r << "## Expert–category association per layer\n\n";
    r << "| layer | chi2 | dof | permutation p | asymptotic p | Cramér's V | min expected | soft chi2 "
         "(descriptive) |\n";
    r << "|---|---|---|---|---|---|---|---|\n";
    for (std::size_t l = 0; l < hard_assoc.size(); ++l) {
      const auto& c = hard_assoc[l].chi2;
      r << "| " << hard_assoc[l].layer << " | " << fmt(c.statistic) << " | " << c.dof << " | "
        << fmt_p(layer_perm_p[l]) << (layer_perm_p[l] < kAlpha ? " *" : "") << " | " << fmt_p(c.p_value) << " | "
        << fmt(c.cramers_v, 2) << " | " << fmt(c.min_expected, 2) << " | " << fmt(soft_assoc[l].chi2.statistic)
        << " |\n";
    }
    r << "\nChi-square statistic of the hard choice x category table; `*`: permutation p < " << kAlpha << " ("
      << cfg.analysis.permutations << " shuffles of the category labels, seed " << cfg.analysis.seed
      << "). The asymptotic p-value is approximate when expected counts are below 5.\n\n";
    if (!lifts.empty()) {
      r << "The expert of largest lift per category ("
        << (significant.empty() ? "all layers" : "significant layers") << ", cells of at least 2 tasks):\n\n";
      r << "| category | layer:expert | lift | P(expert given category) | tasks |\n|---|---|---|---|---|\n";
      for (const auto& t : lifts)
        r << "| " << t.category << " | " << t.layer << ":" << expert_name(t.expert) << " | " << fmt(t.lift, 3)
          << " | " << fmt(t.p_given, 2) << " | " << fmt(t.count) << " / " << fmt(t.row_total) << " |\n";
      r << "\n";
    }
    r << "## Clustering and permutation test\n\n";
    if (clusters.ok)
      r << "- Average linkage (euclidean) on the tau = 1 route vectors, cut at k = " << labels.num_classes()
        << ": NMI = " << fmt(clusters.nmi) << ", ARI = " << fmt(clusters.ari)
        << few_per_category(cat_rows.size(), labels.num_classes()) << "\n";
    if (perm.ok)
      r << "- Same-category permutation test: mean euclidean distance between tau = 1 route vectors "
        << fmt(-perm.r.mean_same) << " within categories, " << fmt(-perm.r.mean_different)
        << " across; statistic (difference of mean similarities) " << fmt(perm.r.observed)
        << ", p = " << fmt_p(perm.r.p_value)
        << " (" << perm.r.permutations << " permutations, seed " << cfg.analysis.seed << ")\n";
    if (stats.contains("by_partition"))
      for (auto it = stats["by_partition"].begin(); it != stats["by_partition"].end(); ++it) {
        const auto& v = it.value();
        r << "- " << it.key() << " tasks only (" << v["tasks"].get<std::size_t>() << "): ";
        if (v["clustering"].contains("nmi"))
          r << "NMI = " << fmt(v["clustering"]["nmi"].get<double>()) << ", ARI = "
            << fmt(v["clustering"]["ari"].get<double>())
            << few_per_category(v["tasks"].get<std::size_t>(), v["categories"].get<std::size_t>());
        else
          r << "no clustering (" << v["clustering"]["skipped"].get<std::string>() << ")";
        if (v["permutation_test"].contains("p_value"))
          r << ", permutation p = " << fmt_p(v["permutation_test"]["p_value"].get<double>());
        r << "\n";
      }
    r << "\n";
  }
  if (stats.contains("compare")) {
    r << "## Comparison with `" << o.compare << "`\n\n| layer | matching | argmax agreement | unaligned | mean TV |\n"
      << "|---|---|---|---|---|\n";
    for (const auto& l : stats["compare"]["layers"])
      r << "| " << l["layer"].get<std::string>() << " | " << join(l["matching"].get<std::vector<std::string>>(), " ")
        << " | " << fmt(l["argmax_agreement"].get<double>()) << " | "
        << fmt(l["unaligned_argmax_agreement"].get<double>()) << " | " << fmt(l["mean_total_variation"].get<double>())
        << " |\n";
    r << "\n";
  }
  r << "## Tables\n\n";
  for (const auto& t : out.tables) r << "- [" << t.path << "](" << t.path << "): " << t.title << "\n";
  r << "- [routes.json](routes.json): the routes as JSON (tasks, layer_names, routes_t1, routes, hard, task_info)\n";
  r << "- [stats.json](stats.json): every statistic above\n";
  out.write("report.md", r.str());
}

}  // namespace tlmoe::analysis::detail
