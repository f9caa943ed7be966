// Figures of the routing analysis (docs/method.md §12), as PNG or SVG:
//   plot_route_heatmap  tasks x (layer, expert) weights, banded by category and sub-category
//   plot_scatter        2-D points (e.g. PCA of route vectors) coloured by category
//   plot_grouped_bars   small multiples of grouped bars (e.g. P(expert | category) per layer)
//   plot_lines          series against steps (route entropy, route changes over training)
//
// Every layout is computed once and drawn on one of two canvases: PNG through a Cairo image
// surface, SVG written directly, so that each label is a <text> element (searchable, and
// counted by the tests) rather than the glyph outlines Cairo's SVG surface emits. Text is
// measured with Cairo's toy text API, font "sans-serif", in both cases. Sizes grow with the
// number of rows / legend entries so labels never overlap; the same input gives the same bytes.
//
// Colours of categories follow their first appearance in the input (qualitative_palette), so
// figures drawn from tasks in the same order colour each category the same way.
// Files are written atomically; bad inputs throw std::invalid_argument.
#pragma once

#include <cstddef>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "analysis/route_table.h"
#include "analysis/stats.h"

namespace tlmoe::analysis {

enum class ImageFormat { kPng, kSvg };

// ".png" or ".svg" (any case); anything else throws std::invalid_argument.
ImageFormat image_format_for(const std::filesystem::path& path);

struct Rgb {
  double r = 0, g = 0, b = 0;  // [0, 1]
  bool operator==(const Rgb&) const = default;
};
// Sequential white-to-dark-blue map on [0, 1] (matplotlib's "Blues": ColorBrewer's 9 anchors,
// linearly interpolated); values outside are clamped, NaN is grey.
Rgb blues(double v);
// n distinct colours: matplotlib's tab10 for n <= 10, else n hues evenly spaced in HLS
// (lightness 0.6, saturation 0.65: seaborn's hls palette, as the reference's sub-category band).
std::vector<Rgb> qualitative_palette(std::size_t n);

// PNG images are drawn at kPngScale pixels per layout unit: the layouts are sized for 96 units
// per inch, so a PNG has the detail of about 190 dpi at its layout size (a heatmap of 160 tasks
// stays legible when printed). SVG is resolution-free (1 unit = 1 user unit).
inline constexpr int kPngScale = 2;

struct FigureSize {
  int width = 0, height = 0;  // layout units: the SVG viewBox; a PNG has kPngScale x as many pixels
  bool operator==(const FigureSize&) const = default;
};

// Rows are the tasks of `routes` in table order (use ontology_order + select_tasks for the
// reference's order); columns are the experts of each layer, layers separated by lines and
// named above. Left of the cells: one colour band for `category` (qualitative_palette) and one
// for `sub_category` (HLS hues, as the reference), each per task (an empty vector draws no band),
// explained by a legend below; a white line separates runs of tasks of different categories.
struct HeatmapSpec {
  RouteTable routes;  // must pass routes.validate(): weights in [0, 1], each row sums to 1
  std::vector<std::string> category;
  std::vector<std::string> sub_category;
  std::string title;
};
FigureSize plot_route_heatmap(const HeatmapSpec& spec, const std::filesystem::path& out,
                              std::optional<ImageFormat> format = std::nullopt);
// The same figure as PNG bytes (for a TensorBoard image); *size is its layout size (the image has
// kPngScale x as many pixels).
std::string route_heatmap_png(const HeatmapSpec& spec, FigureSize* size);

// Points (x[i], y[i]) coloured by category[i] (empty: one colour, no legend), labelled with
// labels[i] when labels is not empty.
struct ScatterSpec {
  std::vector<double> x, y;
  std::vector<std::string> category;
  std::vector<std::string> labels;
  std::string title, x_label, y_label;
};
FigureSize plot_scatter(const ScatterSpec& spec, const std::filesystem::path& out,
                        std::optional<ImageFormat> format = std::nullopt);

// One panel per entry of `panels` (`columns` per row); in each panel, one group of bars per
// entry of `groups` along x and one bar per entry of `series` in each group, coloured by series.
struct GroupedBarSpec {
  struct Panel {
    std::string title;
    std::vector<double> values;  // [series, groups] row-major
  };
  std::vector<std::string> groups;  // e.g. "e1".."eE"
  std::vector<std::string> series;  // e.g. the categories (legend)
  std::vector<Panel> panels;        // e.g. one per layer
  std::string title, y_label;
  double y_max = 0;  // top of every y axis; 0 = from the data
  std::size_t columns = 4;
};
FigureSize plot_grouped_bars(const GroupedBarSpec& spec, const std::filesystem::path& out,
                             std::optional<ImageFormat> format = std::nullopt);
// Expert usage per category per layer: a panel per layer, a group per expert ("e1".."eE"), a bar
// per category with height P(expert | category), y axis [0, 1].
GroupedBarSpec expert_usage_bars(const std::vector<LayerAssociation>& layers, const std::string& title);

// Series over a shared x axis. Series with the same non-empty `group` share a colour and one
// legend entry (e.g. one line per task, coloured by its category); a series with an empty
// group gets its own colour and legend entry under its name. A series with `lo`/`hi` draws a
// translucent band between them in its colour, under every line (e.g. a category's range).
struct LineChartSpec {
  struct Series {
    std::string name;
    std::vector<double> y;  // one per x; NaN leaves a gap
    std::string group;
    std::vector<double> lo, hi;  // empty, or one per x each: the band (NaN leaves a gap)
  };
  std::vector<double> x;
  std::vector<Series> series;
  std::string title, x_label, y_label;
};
FigureSize plot_lines(const LineChartSpec& spec, const std::filesystem::path& out,
                      std::optional<ImageFormat> format = std::nullopt);

}  // namespace tlmoe::analysis
