// Routing-analysis figures (lib/analysis/plot): valid PNG (signature, IHDR size equal to the
// reported size) and SVG (well-formed, one <text> element per task label), sizes that grow
// with the number of tasks, deterministic bytes, and argument errors.
#include <catch2/catch.hpp>

#include <map>
#include <set>

#include <cstdint>
#include <string>
#include <vector>

#include "analysis/plot.h"
#include "analysis/stats.h"
#include "test_util.h"

using namespace tlmoe::analysis;
using tlmoe::test::read_text;
using tlmoe::test::TempDir;

namespace {

// The value of attribute `name` of the SVG element starting at `at`.
std::string svg_attr(const std::string& x, std::size_t at, const std::string& name) {
  const std::size_t b = x.find(name + "=\"", at) + name.size() + 2;
  return x.substr(b, x.find('"', b) - b);
}

// A PNG has 2 pixels per layout unit (about 190 dpi for layouts at 96 units per inch).
FigureSize doubled(FigureSize f) { return {2 * f.width, 2 * f.height}; }

// Width and height from a PNG's IHDR chunk (bytes 16..23, big-endian), or {-1, -1} when the
// bytes do not start with the PNG signature and an IHDR chunk.
FigureSize png_size(const std::string& b) {
  static const std::string kSignature("\x89PNG\r\n\x1a\n", 8);
  if (b.size() < 24 || b.compare(0, 8, kSignature) != 0 || b.compare(12, 4, "IHDR") != 0) return {-1, -1};
  auto be32 = [&](std::size_t at) {
    std::uint32_t v = 0;
    for (std::size_t i = 0; i < 4; ++i) v = (v << 8) | static_cast<unsigned char>(b[at + i]);
    return static_cast<int>(v);
  };
  return {be32(16), be32(20)};
}

// Occurrences of `needle` in `hay`.
std::size_t count(const std::string& hay, const std::string& needle) {
  std::size_t n = 0;
  for (std::size_t p = hay.find(needle); p != std::string::npos; p = hay.find(needle, p + needle.size())) ++n;
  return n;
}

// A small XML well-formedness check for what the SVG writer emits: an XML declaration, then
// properly nested elements with quoted attributes, text without a raw '<' or a bare '&', and one
// root. Returns "" when well-formed, else what is wrong.
std::string xml_problem(const std::string& s) {
  if (s.rfind("<?xml", 0) != 0) return "no XML declaration";
  std::size_t p = s.find("?>");
  if (p == std::string::npos) return "unterminated declaration";
  p += 2;
  std::vector<std::string> stack;
  int roots = 0;
  while (p < s.size()) {
    if (s[p] != '<') {
      std::size_t next = s.find('<', p);
      std::string text = s.substr(p, next == std::string::npos ? std::string::npos : next - p);
      for (std::size_t a = text.find('&'); a != std::string::npos; a = text.find('&', a + 1)) {
        std::size_t semi = text.find(';', a);
        if (semi == std::string::npos || semi - a > 6) return "bare '&' in text";
      }
      if (stack.empty() && text.find_first_not_of(" \n\r\t") != std::string::npos)
        return "text outside the root";
      if (next == std::string::npos) break;
      p = next;
      continue;
    }
    std::size_t end = p + 1;
    char quote = 0;
    for (; end < s.size(); ++end) {
      if (quote) {
        if (s[end] == quote)
          quote = 0;
        else if (s[end] == '<')
          return "'<' in an attribute";
      } else if (s[end] == '"' || s[end] == '\'') {
        quote = s[end];
      } else if (s[end] == '>') {
        break;
      }
    }
    if (end >= s.size()) return "unterminated tag";
    std::string tag = s.substr(p + 1, end - p - 1);
    if (!tag.empty() && tag[0] == '/') {
      std::string name = tag.substr(1);
      if (stack.empty() || stack.back() != name) return "mismatched </" + name + ">";
      stack.pop_back();
    } else {
      std::string name = tag.substr(0, tag.find_first_of(" \n\t/"));
      if (name.empty()) return "empty tag name";
      if (stack.empty()) ++roots;
      if (tag.back() != '/') stack.push_back(name);
    }
    p = end + 1;
  }
  if (!stack.empty()) return "unclosed <" + stack.back() + ">";
  if (roots != 1) return std::to_string(roots) + " root elements";
  return "";
}

// n tasks "task_00".. over 4 layers x 3 experts, routes cycling through the experts; tasks in
// two categories and three sub-categories.
HeatmapSpec heatmap_spec(std::size_t n, bool categories = true) {
  HeatmapSpec s;
  s.routes.layer_names = layer_names(2, 4);
  s.routes.experts = 3;
  for (std::size_t t = 0; t < n; ++t) {
    s.routes.tasks.push_back("task_" + std::string(t < 10 ? "0" : "") + std::to_string(t));
    for (std::size_t l = 0; l < 4; ++l)
      for (std::size_t e = 0; e < 3; ++e) s.routes.probs.push_back(e == (t + l) % 3 ? 0.8 : 0.1);
    if (categories) {
      s.category.push_back(t < n / 2 ? "classification" : "qa");
      s.sub_category.push_back(t % 3 == 0 ? "sentiment" : t % 3 == 1 ? "topic" : "extractive");
    }
  }
  s.title = "routes";
  return s;
}

}  // namespace

TEST_CASE("Plot: image format from the extension", "[analysis][plot]") {
  CHECK(image_format_for("a/b.png") == ImageFormat::kPng);
  CHECK(image_format_for("b.SVG") == ImageFormat::kSvg);
  CHECK_THROWS_WITH(image_format_for("b.jpg"),
                    "figure 'b.jpg': unknown image type '.jpg' (valid: .png, .svg)");
  CHECK_THROWS_AS(image_format_for("noext"), std::invalid_argument);
}

TEST_CASE("Plot: Blues colour map and qualitative palettes", "[analysis][plot]") {
  CHECK(blues(0) == Rgb{0xf7 / 255.0, 0xfb / 255.0, 0xff / 255.0});
  CHECK(blues(1) == Rgb{0x08 / 255.0, 0x30 / 255.0, 0x6b / 255.0});
  CHECK(blues(-3) == blues(0));
  CHECK(blues(7) == blues(1));
  // Halfway is ColorBrewer's 5th anchor, #6baed6.
  CHECK(blues(0.5).r == Approx(0x6b / 255.0));
  CHECK(blues(0.5).b == Approx(0xd6 / 255.0));
  // Darker as the weight grows.
  auto lum = [](Rgb c) { return 0.2126 * c.r + 0.7152 * c.g + 0.0722 * c.b; };
  for (int i = 1; i <= 20; ++i) CHECK(lum(blues(i / 20.0)) < lum(blues((i - 1) / 20.0)));

  auto p4 = qualitative_palette(4);
  REQUIRE(p4.size() == 4);
  CHECK(p4[0] == Rgb{0x1f / 255.0, 0x77 / 255.0, 0xb4 / 255.0});  // tab10 blue
  CHECK(p4[3] == Rgb{0xd6 / 255.0, 0x27 / 255.0, 0x28 / 255.0});  // tab10 red
  auto p15 = qualitative_palette(15);
  REQUIRE(p15.size() == 15);
  for (std::size_t i = 0; i < 15; ++i)
    for (std::size_t j = i + 1; j < 15; ++j) CHECK_FALSE(p15[i] == p15[j]);
}

TEST_CASE("Plot: route heatmap as PNG and SVG, one label per task", "[analysis][plot]") {
  TempDir d;
  HeatmapSpec s = heatmap_spec(12);
  FigureSize png = plot_route_heatmap(s, d / "h.png");
  const std::string bytes = read_text(d / "h.png");
  CHECK(png_size(bytes) == doubled(png));
  CHECK(png.width > 200);
  CHECK(png.height > 12 * 14);

  FigureSize svg = plot_route_heatmap(s, d / "h.svg");
  CHECK(svg == png);  // one layout for both
  const std::string x = read_text(d / "h.svg");
  CHECK(xml_problem(x).empty());
  CHECK(x.find("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + std::to_string(svg.width) +
               "\" height=\"" + std::to_string(svg.height) + "\"") != std::string::npos);
  for (const auto& t : s.routes.tasks) {
    INFO(t);
    CHECK(count(x, ">" + t + "</text>") == 1);
  }
  for (const auto& l : s.routes.layer_names) CHECK(count(x, ">" + l + "</text>") == 1);
  // The legends name each category and sub-category once.
  for (const char* c : {"classification", "qa", "sentiment", "topic", "extractive"})
    CHECK(count(x, std::string(">") + c + "</text>") == 1);
  // 12 tasks x 12 columns of cells, 2 bands of 12 rows.
  CHECK(count(x, "<rect") >= 12 * 12 + 2 * 12);

  // An explicit format wins over the extension; the same input gives the same bytes.
  plot_route_heatmap(s, d / "h2.out", ImageFormat::kPng);
  CHECK(read_text(d / "h2.out") == bytes);
  plot_route_heatmap(s, d / "h2.svg");
  CHECK(read_text(d / "h2.svg") == x);
}

TEST_CASE("Plot: heatmap height grows with the number of tasks", "[analysis][plot]") {
  TempDir d;
  FigureSize small = plot_route_heatmap(heatmap_spec(5, false), d / "a.png");
  FigureSize big = plot_route_heatmap(heatmap_spec(40, false), d / "b.png");
  CHECK(png_size(read_text(d / "b.png")) == doubled(big));
  // At least 14 px per extra row: rows of 11 px labels never overlap.
  CHECK(big.height - small.height >= 35 * 14);
  CHECK(big.width == small.width);  // same label lengths, same columns
  // More experts: wider.
  HeatmapSpec wide = heatmap_spec(5, false);
  wide.routes.experts = 6;
  wide.routes.probs.clear();
  for (std::size_t i = 0; i < 5 * 4; ++i)
    for (int e = 0; e < 6; ++e) wide.routes.probs.push_back(1.0 / 6);
  CHECK(plot_route_heatmap(wide, d / "c.png").width > small.width);
}

TEST_CASE("Plot: labels are escaped in SVG and drawn in PNG", "[analysis][plot]") {
  TempDir d;
  HeatmapSpec s = heatmap_spec(3);
  s.routes.tasks[1] = "a<b&c \"q\"";
  s.category[0] = "x&y";
  plot_route_heatmap(s, d / "e.svg");
  const std::string x = read_text(d / "e.svg");
  CHECK(xml_problem(x).empty());
  CHECK(count(x, ">a&lt;b&amp;c &quot;q&quot;</text>") == 1);
  CHECK(count(x, ">x&amp;y</text>") == 1);
  // Invalid UTF-8 does not stop Cairo from drawing (it is replaced).
  s.routes.tasks[2] = std::string("bad\xff\xfe");
  FigureSize f = plot_route_heatmap(s, d / "e.png");
  CHECK(png_size(read_text(d / "e.png")) == doubled(f));
  plot_route_heatmap(s, d / "e2.svg");
  CHECK(count(read_text(d / "e2.svg"), ">bad?\?</text>") == 1);
}

TEST_CASE("Plot: heatmap argument errors write nothing", "[analysis][plot]") {
  TempDir d;
  HeatmapSpec s = heatmap_spec(4);
  s.category.pop_back();
  CHECK_THROWS_WITH(plot_route_heatmap(s, d / "x.png"), "heatmap: 3 categories for 4 tasks");
  s = heatmap_spec(4);
  s.routes.probs[0] = 0.5;  // row no longer sums to 1
  CHECK_THROWS_AS(plot_route_heatmap(s, d / "x.png"), std::invalid_argument);
  CHECK_THROWS_AS(plot_route_heatmap(heatmap_spec(4), d / "x.gif"), std::invalid_argument);
  CHECK_FALSE(std::filesystem::exists(d / "x.png"));
  CHECK_FALSE(std::filesystem::exists(d / "x.gif"));
}

TEST_CASE("Plot: PCA scatter coloured by category with point labels", "[analysis][plot]") {
  TempDir d;
  ScatterSpec s;
  s.title = "PCA of route vectors";
  s.x_label = "PC1 (62%)";
  s.y_label = "PC2 (20%)";
  for (int i = 0; i < 9; ++i) {
    s.x.push_back(i * 0.37 - 1);
    s.y.push_back((i % 3) * 0.5 - 0.4);
    s.category.push_back(i < 3 ? "classification" : i < 6 ? "qa" : "other");
    s.labels.push_back("pt" + std::to_string(i));
  }
  FigureSize png = plot_scatter(s, d / "s.png");
  CHECK(png_size(read_text(d / "s.png")) == doubled(png));
  FigureSize svg = plot_scatter(s, d / "s.svg");
  CHECK(svg == png);
  const std::string x = read_text(d / "s.svg");
  CHECK(xml_problem(x).empty());
  CHECK(count(x, "<circle") == 9 + 3);  // points and legend dots
  for (const auto& l : s.labels) CHECK(count(x, ">" + l + "</text>") == 1);
  for (const char* c : {"classification", "qa", "other"})
    CHECK(count(x, std::string(">") + c + "</text>") == 1);
  CHECK(count(x, ">PC1 (62%)</text>") == 1);

  // Without categories or labels: no legend, no point text; a single point still has axes.
  ScatterSpec bare;
  bare.x = {1};
  bare.y = {1};
  plot_scatter(bare, d / "b.svg");
  const std::string b = read_text(d / "b.svg");
  CHECK(xml_problem(b).empty());
  CHECK(count(b, "<circle") == 1);
  // A long title widens the figure rather than being cut off.
  ScatterSpec titled = bare;
  titled.title = std::string(150, 'W');
  CHECK(plot_scatter(titled, d / "t.png").width > plot_scatter(bare, d / "b.png").width + 500);
  s.labels.pop_back();
  CHECK_THROWS_AS(plot_scatter(s, d / "z.png"), std::invalid_argument);
  s = bare;
  s.x[0] = NAN;
  CHECK_THROWS_AS(plot_scatter(s, d / "z.png"), std::invalid_argument);
}

TEST_CASE("Plot: scatter labels never overlap, crowded points get numbers and a key", "[analysis][plot]") {
  TempDir d;
  ScatterSpec s;
  // 160 points: a crowded clump of 60 and 100 spread on a grid
  for (int i = 0; i < 160; ++i) {
    s.x.push_back(i < 60 ? 0.001 * i : (i % 10));
    s.y.push_back(i < 60 ? 0.001 * (i % 7) : (i / 10));
    s.labels.push_back("task_" + std::to_string(i));
  }
  const FigureSize crowd = plot_scatter(s, d / "crowd.svg");
  ScatterSpec few = s;  // the first 40 points: the plot area grows with the square root of the count
  few.x.resize(40), few.y.resize(40), few.labels.resize(40);
  const FigureSize small = plot_scatter(few, d / "few.svg");
  CHECK(crowd.width >= small.width + 500);
  CHECK(crowd.height >= small.height + 400);
  const std::string x = read_text(d / "crowd.svg");
  CHECK(xml_problem(x).empty());
  struct Label {
    double x, y, size;
    std::string text;
  };
  std::vector<Label> placed;  // labels and numbers
  size_t keyed = 0, numbers = 0;
  for (std::size_t at = x.find("<text x=\""); at != std::string::npos; at = x.find("<text x=\"", at + 1)) {
    auto attr = [&](const std::string& name) { return std::stod(svg_attr(x, at, name)); };
    const std::size_t gt = x.find('>', at) + 1;
    const std::string text = x.substr(gt, x.find("</text>", gt) - gt);
    const bool bold = x.substr(at, gt - at).find("font-weight=\"bold\"") != std::string::npos;
    if (text.rfind("task_", 0) == 0) placed.push_back({attr("x"), attr("y"), attr("font-size"), text});
    if (text.find("  task_") != std::string::npos) ++keyed;  // "N  task_i" in the key
    // a crowded point's number beside it (bold digits; the axis ticks are not bold)
    if (bold && !text.empty() && text.find_first_not_of("0123456789") == std::string::npos) {
      placed.push_back({attr("x"), attr("y"), attr("font-size"), text});
      ++numbers;
    }
  }
  CHECK(placed.size() - numbers + keyed == 160);  // every label once, on the plot or in the key
  CHECK(numbers <= keyed);                        // a keyed label's number beside its point where there is room
  CHECK(numbers > 0);                             // ... which even this clump has for some
  CHECK(keyed > 0);                               // the clump cannot hold 60 labels
  CHECK(placed.size() - numbers > 60);
  // boxes with a lower bound of the glyph width (0.45 em) and 0.8 em of height: no two labels or
  // numbers may overlap (numbers included: "8" beside "35" would read "835")
  for (std::size_t i = 0; i < placed.size(); ++i)
    for (std::size_t j = i + 1; j < placed.size(); ++j) {
      const auto& a = placed[i];
      const auto& b = placed[j];
      const double wa = 0.45 * a.size * static_cast<double>(a.text.size()), wb = 0.45 * b.size * static_cast<double>(b.text.size());
      const bool overlap = a.x < b.x + wb && b.x < a.x + wa && std::abs(a.y - b.y) < 0.8 * a.size;
      INFO(a.text << " and " << b.text);
      CHECK_FALSE(overlap);
    }
}

TEST_CASE("Plot: expert usage per category per layer as grouped bars", "[analysis][plot]") {
  TempDir d;
  HeatmapSpec h = heatmap_spec(12);
  auto assoc = expert_category_associations(h.routes, encode_labels(h.category), Counting::kSoft);
  GroupedBarSpec s = expert_usage_bars(assoc, "expert usage");
  CHECK(s.groups == std::vector<std::string>{"e1", "e2", "e3"});
  CHECK(s.series == std::vector<std::string>{"classification", "qa"});
  REQUIRE(s.panels.size() == 4);
  CHECK(s.panels[2].title == "dec1");
  CHECK(s.panels[0].values == assoc[0].p_expert_given_category);

  FigureSize png = plot_grouped_bars(s, d / "u.png");
  CHECK(png_size(read_text(d / "u.png")) == doubled(png));
  CHECK(plot_grouped_bars(s, d / "u.svg") == png);
  const std::string x = read_text(d / "u.svg");
  CHECK(xml_problem(x).empty());
  for (const auto& l : h.routes.layer_names) CHECK(count(x, ">" + l + "</text>") == 1);
  CHECK(count(x, ">e1</text>") == 4);  // one group label per panel
  CHECK(count(x, ">P(expert | category)</text>") == 1);
  // More panels per row: wider and lower.
  s.columns = 2;
  FigureSize two = plot_grouped_bars(s, d / "u2.png");
  CHECK(two.width < png.width);
  CHECK(two.height > png.height);
  s.panels[0].values.pop_back();
  CHECK_THROWS_AS(plot_grouped_bars(s, d / "u3.png"), std::invalid_argument);
}

TEST_CASE("Plot: route dynamics as line charts", "[analysis][plot]") {
  TempDir d;
  LineChartSpec s;
  s.title = "route entropy";
  s.x_label = "step";
  s.y_label = "mean entropy (nats)";
  s.x = {0, 500, 1000, 1500, 2000};
  const char* groups[] = {"classification", "qa", "qa"};
  for (int t = 0; t < 3; ++t) {
    LineChartSpec::Series series;
    series.name = "task" + std::to_string(t);
    series.group = groups[t];
    for (int i = 0; i < 5; ++i) series.y.push_back(1.1 - 0.2 * i + 0.05 * t);
    s.series.push_back(series);
  }
  s.series[2].y[2] = NAN;  // a gap
  FigureSize png = plot_lines(s, d / "l.png");
  CHECK(png_size(read_text(d / "l.png")) == doubled(png));
  CHECK(plot_lines(s, d / "l.svg") == png);
  std::string x = read_text(d / "l.svg");
  CHECK(xml_problem(x).empty());
  // Legend by group: each category once, no task names.
  CHECK(count(x, ">classification</text>") == 1);
  CHECK(count(x, ">qa</text>") == 1);
  CHECK(count(x, ">task0</text>") == 0);
  CHECK(count(x, "<polyline") == 4);  // the gap splits one series in two
  CHECK(count(x, ">2000</text>") == 1);

  // Ungrouped series: one legend entry each, under its name.
  LineChartSpec c;
  c.x = {100, 200, 300};
  c.series = {{"route changes", {0, 3, 1}, ""}, {"tasks", {5, 5, 5}, ""}};
  plot_lines(c, d / "c.svg");
  x = read_text(d / "c.svg");
  CHECK(xml_problem(x).empty());
  CHECK(count(x, ">route changes</text>") == 1);
  CHECK(count(x, ">tasks</text>") == 1);
  c.series[0].y.pop_back();
  CHECK_THROWS_AS(plot_lines(c, d / "c.png"), std::invalid_argument);

  // Two series that coincide stay visible: at each point, two markers of different sizes.
  LineChartSpec same;
  same.x = {100, 200, 300};
  same.series = {{"a", {1, 2, 3}, ""}, {"b", {1, 2, 3}, ""}};
  plot_lines(same, d / "same.svg");
  x = read_text(d / "same.svg");
  std::map<std::string, std::set<std::string>> radii;  // "cx,cy" -> marker radii there
  for (std::size_t at = x.find("<circle cx=\""); at != std::string::npos; at = x.find("<circle cx=\"", at + 1))
    radii[svg_attr(x, at, "cx") + "," + svg_attr(x, at, "cy")].insert(svg_attr(x, at, "r"));
  int doubled_points = 0;
  for (const auto& [where, rs] : radii) doubled_points += rs.size() == 2;
  CHECK(doubled_points == 3);

  // A band: one translucent polygon per run of finite values, under the lines; its values count
  // for the y axis (5 is above every line).
  LineChartSpec band;
  band.x = {1, 2, 3, 4};
  band.series = {{"mean", {1, 2, 2, 1}, "", {0.5, 1, NAN, 0.5}, {1.5, 5, 3, 1.5}}};
  plot_lines(band, d / "band.svg");
  x = read_text(d / "band.svg");
  CHECK(xml_problem(x).empty());
  CHECK(count(x, "<polygon") == 1);  // the NaN at x = 3 leaves one run of two points and one of one
  CHECK(x.find("fill-opacity=\"0.18\"") != std::string::npos);
  CHECK(x.find("<polygon") < x.find("<polyline"));
  CHECK(count(x, ">5</text>") == 1);
  band.series[0].hi.pop_back();
  CHECK_THROWS_AS(plot_lines(band, d / "band.png"), std::invalid_argument);
}
