#include "analysis/plot.h"

#include <cairo.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <stdexcept>
#include <utility>

#include "io/atomic_file.h"

namespace tlmoe::analysis {

namespace {

constexpr double kPi = 3.14159265358979323846;
constexpr int kMaxSide = 32767;  // Cairo image surfaces are at most this many pixels a side
constexpr double kMargin = 12;
const Rgb kWhite{1, 1, 1};
const Rgb kInk{0.13, 0.13, 0.13};
const Rgb kGrid{0.88, 0.88, 0.88};
const Rgb kAxis{0.35, 0.35, 0.35};

void require(bool ok, const std::string& msg) {
  if (!ok) throw std::invalid_argument(msg);
}

// ---- text ------------------------------------------------------------------------------------

// Valid UTF-8 without control characters: invalid bytes become '?', controls a space (Cairo's
// toy API refuses invalid UTF-8, XML forbids most controls).
std::string clean_text(const std::string& s) {
  std::string out;
  for (std::size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    std::size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    bool ok = len > 0 && i + len <= s.size();
    for (std::size_t k = 1; ok && k < len; ++k) ok = (static_cast<unsigned char>(s[i + k]) >> 6) == 0x2;
    if (!ok) {
      out += '?';
      ++i;
    } else if (len == 1 && (c < 0x20 || c == 0x7F)) {
      out += ' ';
      ++i;
    } else {
      out.append(s, i, len);
      i += len;
    }
  }
  return out;
}

std::string xml_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&apos;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

void set_font(cairo_t* cr, double size, bool bold) {
  cairo_select_font_face(cr, "sans-serif", CAIRO_FONT_SLANT_NORMAL,
                         bold ? CAIRO_FONT_WEIGHT_BOLD : CAIRO_FONT_WEIGHT_NORMAL);
  cairo_set_font_size(cr, size);
}

// Unhinted metrics and grey antialiasing: measurements do not depend on the pixel grid, and
// the output does not depend on the machine's font rendering settings.
void set_font_options(cairo_t* cr) {
  cairo_font_options_t* o = cairo_font_options_create();
  cairo_font_options_set_antialias(o, CAIRO_ANTIALIAS_GRAY);
  cairo_font_options_set_hint_style(o, CAIRO_HINT_STYLE_NONE);
  cairo_font_options_set_hint_metrics(o, CAIRO_HINT_METRICS_OFF);
  cairo_set_font_options(cr, o);
  cairo_font_options_destroy(o);
}

// Text widths through Cairo's toy API: the layout of both canvases.
class TextMeasure {
 public:
  TextMeasure()
      : surface_(cairo_image_surface_create(CAIRO_FORMAT_RGB24, 1, 1)), cr_(cairo_create(surface_)) {
    set_font_options(cr_);
  }
  ~TextMeasure() {
    cairo_destroy(cr_);
    cairo_surface_destroy(surface_);
  }
  TextMeasure(const TextMeasure&) = delete;
  TextMeasure& operator=(const TextMeasure&) = delete;

  double width(const std::string& s, double size, bool bold = false) {
    set_font(cr_, size, bold);
    cairo_text_extents_t e;
    cairo_text_extents(cr_, clean_text(s).c_str(), &e);
    return e.x_advance;
  }
  double max_width(const std::vector<std::string>& items, double size, bool bold = false) {
    double w = 0;
    for (const auto& s : items) w = std::max(w, width(s, size, bold));
    return w;
  }

 private:
  cairo_surface_t* surface_;
  cairo_t* cr_;
};

// ---- canvases --------------------------------------------------------------------------------

enum class Align { kLeft, kCenter, kRight };

struct TextStyle {
  double size = 11;
  bool bold = false;
  Rgb color = kInk;
};

// Baseline offset that centres text of `size` vertically on y (half the cap height of sans fonts).
double baseline_offset(double size) { return 0.36 * size; }

// What the layouts draw on. Coordinates in pixels, y down. text(): (x, y) is the anchor: x the
// start, middle or end of the text per `align`, y its vertical middle; `angle` rotates the text
// clockwise (degrees) about the anchor.
class Canvas {
 public:
  virtual ~Canvas() = default;
  virtual void fill_rect(double x, double y, double w, double h, Rgb c) = 0;
  virtual void stroke_rect(double x, double y, double w, double h, Rgb c, double lw) = 0;
  virtual void line(double x0, double y0, double x1, double y1, Rgb c, double lw) = 0;
  virtual void polyline(const std::vector<std::pair<double, double>>& pts, Rgb c, double lw) = 0;
  virtual void circle(double cx, double cy, double r, Rgb fill, Rgb stroke) = 0;
  virtual void fill_polygon(const std::vector<std::pair<double, double>>& pts, Rgb c, double opacity) = 0;
  virtual void text(double x, double y, const std::string& s, const TextStyle& st, Align align,
                    double angle = 0) = 0;
  virtual std::string finish() = 0;  // the file's bytes
};

cairo_status_t append_to_string(void* closure, const unsigned char* data, unsigned int length) {
  static_cast<std::string*>(closure)->append(reinterpret_cast<const char*>(data), length);
  return CAIRO_STATUS_SUCCESS;
}

class PngCanvas final : public Canvas {
 public:
  // A w x h layout drawn at `scale` pixels per unit.
  PngCanvas(int w, int h, int scale)
      : surface_(cairo_image_surface_create(CAIRO_FORMAT_RGB24, w * scale, h * scale)), cr_(cairo_create(surface_)) {
    cairo_scale(cr_, scale, scale);
    set_font_options(cr_);
    set(kWhite);
    cairo_paint(cr_);
  }
  ~PngCanvas() override {
    cairo_destroy(cr_);
    cairo_surface_destroy(surface_);
  }
  PngCanvas(const PngCanvas&) = delete;
  PngCanvas& operator=(const PngCanvas&) = delete;

  void fill_rect(double x, double y, double w, double h, Rgb c) override {
    set(c);
    cairo_rectangle(cr_, x, y, w, h);
    cairo_fill(cr_);
  }
  void stroke_rect(double x, double y, double w, double h, Rgb c, double lw) override {
    set(c);
    cairo_set_line_width(cr_, lw);
    cairo_rectangle(cr_, x, y, w, h);
    cairo_stroke(cr_);
  }
  void line(double x0, double y0, double x1, double y1, Rgb c, double lw) override {
    set(c);
    cairo_set_line_width(cr_, lw);
    cairo_move_to(cr_, x0, y0);
    cairo_line_to(cr_, x1, y1);
    cairo_stroke(cr_);
  }
  void polyline(const std::vector<std::pair<double, double>>& pts, Rgb c, double lw) override {
    if (pts.size() < 2) return;
    set(c);
    cairo_set_line_width(cr_, lw);
    cairo_set_line_join(cr_, CAIRO_LINE_JOIN_ROUND);
    cairo_move_to(cr_, pts[0].first, pts[0].second);
    for (std::size_t i = 1; i < pts.size(); ++i) cairo_line_to(cr_, pts[i].first, pts[i].second);
    cairo_stroke(cr_);
  }
  void fill_polygon(const std::vector<std::pair<double, double>>& pts, Rgb c, double opacity) override {
    if (pts.size() < 3) return;
    cairo_set_source_rgba(cr_, c.r, c.g, c.b, opacity);
    cairo_move_to(cr_, pts[0].first, pts[0].second);
    for (std::size_t i = 1; i < pts.size(); ++i) cairo_line_to(cr_, pts[i].first, pts[i].second);
    cairo_close_path(cr_);
    cairo_fill(cr_);
  }
  void circle(double cx, double cy, double r, Rgb fill, Rgb stroke) override {
    cairo_new_sub_path(cr_);
    cairo_arc(cr_, cx, cy, r, 0, 2 * kPi);
    set(fill);
    cairo_fill_preserve(cr_);
    set(stroke);
    cairo_set_line_width(cr_, 0.8);
    cairo_stroke(cr_);
  }
  void text(double x, double y, const std::string& s, const TextStyle& st, Align align,
            double angle) override {
    const std::string t = clean_text(s);
    set_font(cr_, st.size, st.bold);
    cairo_text_extents_t e;
    cairo_text_extents(cr_, t.c_str(), &e);
    const double dx = align == Align::kLeft ? 0 : align == Align::kCenter ? -e.x_advance / 2 : -e.x_advance;
    cairo_save(cr_);
    cairo_translate(cr_, x, y);
    cairo_rotate(cr_, angle * kPi / 180);
    set(st.color);
    cairo_move_to(cr_, dx, baseline_offset(st.size));
    cairo_show_text(cr_, t.c_str());
    cairo_restore(cr_);
  }
  std::string finish() override {
    cairo_surface_flush(surface_);
    if (cairo_status(cr_) != CAIRO_STATUS_SUCCESS)
      throw std::runtime_error(std::string("cairo: ") + cairo_status_to_string(cairo_status(cr_)));
    std::string bytes;
    cairo_status_t st = cairo_surface_write_to_png_stream(surface_, append_to_string, &bytes);
    if (st != CAIRO_STATUS_SUCCESS)
      throw std::runtime_error(std::string("cairo PNG: ") + cairo_status_to_string(st));
    return bytes;
  }

 private:
  void set(Rgb c) { cairo_set_source_rgb(cr_, c.r, c.g, c.b); }
  cairo_surface_t* surface_;
  cairo_t* cr_;
};

// Two decimals at most, no trailing zeros, no "-0".
std::string num(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.2f", v);
  std::string s = buf;
  if (s.find('.') != std::string::npos) {
    while (s.back() == '0') s.pop_back();
    if (s.back() == '.') s.pop_back();
  }
  return s == "-0" ? "0" : s;
}

std::string hex(Rgb c) {
  auto byte = [](double v) { return static_cast<int>(std::lround(std::clamp(v, 0.0, 1.0) * 255)); };
  char buf[8];
  std::snprintf(buf, sizeof buf, "#%02x%02x%02x", byte(c.r), byte(c.g), byte(c.b));
  return buf;
}

// "x,y x,y ..." for a polyline's or polygon's points attribute.
std::string points_attr(const std::vector<std::pair<double, double>>& pts) {
  std::string out;
  for (std::size_t i = 0; i < pts.size(); ++i) {
    if (i) out += ' ';
    out.append(num(pts[i].first)).append(",").append(num(pts[i].second));
  }
  return out;
}

class SvgCanvas final : public Canvas {
 public:
  SvgCanvas(int w, int h) {
    out_ = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" +
           std::to_string(w) + "\" height=\"" + std::to_string(h) + "\" viewBox=\"0 0 " + std::to_string(w) +
           " " + std::to_string(h) + "\" font-family=\"sans-serif\">\n";
    fill_rect(0, 0, w, h, kWhite);
  }
  void fill_rect(double x, double y, double w, double h, Rgb c) override {
    out_ += "<rect x=\"" + num(x) + "\" y=\"" + num(y) + "\" width=\"" + num(w) + "\" height=\"" + num(h) +
            "\" fill=\"" + hex(c) + "\" shape-rendering=\"crispEdges\"/>\n";
  }
  void stroke_rect(double x, double y, double w, double h, Rgb c, double lw) override {
    out_ += "<rect x=\"" + num(x) + "\" y=\"" + num(y) + "\" width=\"" + num(w) + "\" height=\"" + num(h) +
            "\" fill=\"none\" stroke=\"" + hex(c) + "\" stroke-width=\"" + num(lw) + "\"/>\n";
  }
  void line(double x0, double y0, double x1, double y1, Rgb c, double lw) override {
    out_ += "<line x1=\"" + num(x0) + "\" y1=\"" + num(y0) + "\" x2=\"" + num(x1) + "\" y2=\"" + num(y1) +
            "\" stroke=\"" + hex(c) + "\" stroke-width=\"" + num(lw) + "\"/>\n";
  }
  void polyline(const std::vector<std::pair<double, double>>& pts, Rgb c, double lw) override {
    if (pts.size() < 2) return;
    out_ += "<polyline points=\"" + points_attr(pts) + "\" fill=\"none\" stroke=\"" + hex(c) + "\" stroke-width=\"" + num(lw) +
            "\" stroke-linejoin=\"round\"/>\n";
  }
  void fill_polygon(const std::vector<std::pair<double, double>>& pts, Rgb c, double opacity) override {
    if (pts.size() < 3) return;
    out_ += "<polygon points=\"" + points_attr(pts) + "\" fill=\"" + hex(c) + "\" fill-opacity=\"" + num(opacity) + "\" stroke=\"none\"/>\n";
  }
  void circle(double cx, double cy, double r, Rgb fill, Rgb stroke) override {
    out_ += "<circle cx=\"" + num(cx) + "\" cy=\"" + num(cy) + "\" r=\"" + num(r) + "\" fill=\"" + hex(fill) +
            "\" stroke=\"" + hex(stroke) + "\" stroke-width=\"0.8\"/>\n";
  }
  void text(double x, double y, const std::string& s, const TextStyle& st, Align align,
            double angle) override {
    out_ += "<text x=\"" + num(x) + "\" y=\"" + num(y + baseline_offset(st.size)) + "\" font-size=\"" +
            num(st.size) + "\"";
    if (st.bold) out_ += " font-weight=\"bold\"";
    if (align != Align::kLeft)
      out_ += align == Align::kCenter ? " text-anchor=\"middle\"" : " text-anchor=\"end\"";
    if (!(st.color == kInk)) out_ += " fill=\"" + hex(st.color) + "\"";
    if (angle != 0) out_ += " transform=\"rotate(" + num(angle) + " " + num(x) + " " + num(y) + ")\"";
    out_ += ">" + xml_escape(clean_text(s)) + "</text>\n";
  }
  std::string finish() override { return out_ + "</svg>\n"; }

 private:
  std::string out_;
};

std::unique_ptr<Canvas> make_canvas(ImageFormat f, double w, double h) {
  const int iw = static_cast<int>(std::ceil(w)), ih = static_cast<int>(std::ceil(h));
  const int scale = f == ImageFormat::kPng ? kPngScale : 1;
  require(iw * scale <= kMaxSide && ih * scale <= kMaxSide,
          "figure of " + std::to_string(iw * scale) + " x " + std::to_string(ih * scale) + " pixels is larger than " +
              std::to_string(kMaxSide) + " a side");
  if (f == ImageFormat::kPng) return std::make_unique<PngCanvas>(iw, ih, scale);
  return std::make_unique<SvgCanvas>(iw, ih);
}

FigureSize size_of(double w, double h) {
  return {static_cast<int>(std::ceil(w)), static_cast<int>(std::ceil(h))};
}

ImageFormat resolve(const std::filesystem::path& out, std::optional<ImageFormat> f) {
  return f ? *f : image_format_for(out);
}

// ---- legends ---------------------------------------------------------------------------------

struct Legend {
  std::string title;
  std::vector<std::pair<std::string, Rgb>> entries;
  bool circles = false;  // swatches as dots (scatter) or squares
};

constexpr double kLegendRow = 16, kSwatch = 10, kLegendFont = 11;

// A legend's entries laid out in `columns` columns of `column_width`.
struct LegendLayout {
  std::size_t columns = 1;
  double column_width = 0, width = 0, height = 0;
};

// As many columns as fit in `max_width` (at least one), or a single column when max_width <= 0.
LegendLayout layout_legend(TextMeasure& m, const Legend& lg, double max_width) {
  LegendLayout l;
  double entry = 0;
  for (const auto& [name, c] : lg.entries) entry = std::max(entry, m.width(name, kLegendFont));
  l.column_width = kSwatch + 6 + entry + 16;
  const std::size_t n = lg.entries.size();
  if (max_width > 0)
    l.columns = std::clamp<std::size_t>(static_cast<std::size_t>(max_width / l.column_width), 1,
                                        std::max<std::size_t>(n, 1));
  const std::size_t rows = n == 0 ? 0 : (n + l.columns - 1) / l.columns;
  l.width = std::max(static_cast<double>(l.columns) * l.column_width, m.width(lg.title, kLegendFont, true));
  l.height = (lg.title.empty() ? 0 : kLegendRow) + static_cast<double>(rows) * kLegendRow;
  return l;
}

void draw_legend(Canvas& c, const Legend& lg, const LegendLayout& l, double x, double y) {
  if (!lg.title.empty()) {
    c.text(x, y + kLegendRow / 2, lg.title, {kLegendFont, true, kInk}, Align::kLeft);
    y += kLegendRow;
  }
  const std::size_t rows = lg.entries.empty() ? 0 : (lg.entries.size() + l.columns - 1) / l.columns;
  for (std::size_t i = 0; i < lg.entries.size(); ++i) {
    const double ex = x + static_cast<double>(i / std::max<std::size_t>(rows, 1)) * l.column_width;
    const double ey =
        y + static_cast<double>(i % std::max<std::size_t>(rows, 1)) * kLegendRow + kLegendRow / 2;
    if (lg.circles)
      c.circle(ex + kSwatch / 2, ey, kSwatch / 2 - 1, lg.entries[i].second, kInk);
    else
      c.fill_rect(ex, ey - kSwatch / 2, kSwatch, kSwatch, lg.entries[i].second);
    c.text(ex + kSwatch + 6, ey, lg.entries[i].first, {kLegendFont, false, kInk}, Align::kLeft);
  }
}

// Colours by first appearance, and the legend listing them in that order.
struct Coloring {
  std::vector<Rgb> per_item;
  Legend legend;
};
std::vector<Rgb> hls_palette(std::size_t n);

Coloring color_by(const std::vector<std::string>& keys, const std::string& title, bool circles,
                  bool hls = false) {
  Labeling lab = encode_labels(keys);
  std::vector<Rgb> pal = hls ? hls_palette(lab.num_classes()) : qualitative_palette(lab.num_classes());
  Coloring c;
  for (int id : lab.ids) c.per_item.push_back(pal[static_cast<std::size_t>(id)]);
  c.legend.title = title;
  c.legend.circles = circles;
  for (std::size_t i = 0; i < lab.num_classes(); ++i)
    c.legend.entries.emplace_back(lab.names[i].empty() ? "(none)" : lab.names[i], pal[i]);
  return c;
}

// ---- axes ------------------------------------------------------------------------------------

struct Axis {
  double lo = 0, hi = 1;
  std::vector<double> ticks;
  int decimals = 0;
  std::vector<std::string> labels() const {
    std::vector<std::string> out;
    for (double t : ticks) {
      char buf[64];
      std::snprintf(buf, sizeof buf, "%.*f", decimals, t);
      std::string s = buf;
      out.push_back(s.find_first_not_of("-0.") == std::string::npos ? "0" : s);
    }
    return out;
  }
};

// An axis over [lo, hi] extended to multiples of a 1-2-5 step giving about 5 intervals.
Axis nice_axis(double lo, double hi) {
  if (!std::isfinite(lo) || !std::isfinite(hi)) lo = 0, hi = 1;
  if (hi < lo) std::swap(lo, hi);
  if (hi - lo < 1e-12 * std::max(1.0, std::abs(hi))) {
    const double pad = std::max(0.5, std::abs(lo) * 0.1);
    lo -= pad;
    hi += pad;
  }
  const double raw = (hi - lo) / 5, mag = std::pow(10.0, std::floor(std::log10(raw))), r = raw / mag;
  const double step = (r < 1.5 ? 1 : r < 3 ? 2 : r < 7 ? 5 : 10) * mag;
  Axis a;
  a.lo = std::floor(lo / step + 1e-9) * step;
  a.hi = std::ceil(hi / step - 1e-9) * step;
  for (int i = 0;; ++i) {
    const double t = a.lo + i * step;
    if (t > a.hi + step * 1e-6) break;
    a.ticks.push_back(std::abs(t) < step * 1e-9 ? 0 : t);
  }
  a.decimals = std::max(0, -static_cast<int>(std::floor(std::log10(step) + 1e-9)));
  return a;
}

// Range of the finite values in v ([0, 1] when there is none).
std::pair<double, double> finite_range(const std::vector<double>& v) {
  double lo = INFINITY, hi = -INFINITY;
  for (double x : v)
    if (std::isfinite(x)) lo = std::min(lo, x), hi = std::max(hi, x);
  if (lo > hi) return {0, 1};
  return {lo, hi};
}

// A rectangular plot area with a y axis on the left and an x axis below.
struct PlotFrame {
  double x = 0, y = 0, w = 0, h = 0;
  Axis ax, ay;
  double px(double v) const { return x + (v - ax.lo) / (ax.hi - ax.lo) * w; }
  double py(double v) const { return y + h - (v - ay.lo) / (ay.hi - ay.lo) * h; }
};

constexpr double kTickFont = 10, kAxisLabelFont = 11, kTitleFont = 14;

// Room left of the frame for y tick labels and the y axis label.
double y_axis_room(TextMeasure& m, const Axis& ay, const std::string& y_label) {
  return m.max_width(ay.labels(), kTickFont) + 8 + (y_label.empty() ? 0 : kAxisLabelFont + 10);
}
// Room below the frame for x tick labels and the x axis label.
double x_axis_room(const std::string& x_label) { return 20 + (x_label.empty() ? 0 : kAxisLabelFont + 10); }

void draw_frame(Canvas& c, const PlotFrame& f, const std::string& x_label, const std::string& y_label,
                double y_room) {
  const auto xl = f.ax.labels(), yl = f.ay.labels();
  for (std::size_t i = 0; i < f.ay.ticks.size(); ++i) {
    const double y = f.py(f.ay.ticks[i]);
    c.line(f.x, y, f.x + f.w, y, kGrid, 1);
    c.text(f.x - 6, y, yl[i], {kTickFont, false, kInk}, Align::kRight);
  }
  for (std::size_t i = 0; i < f.ax.ticks.size(); ++i) {
    const double x = f.px(f.ax.ticks[i]);
    c.line(x, f.y + f.h, x, f.y + f.h + 4, kAxis, 1);
    c.text(x, f.y + f.h + 12, xl[i], {kTickFont, false, kInk}, Align::kCenter);
  }
  c.stroke_rect(f.x, f.y, f.w, f.h, kAxis, 1);
  if (!x_label.empty())
    c.text(f.x + f.w / 2, f.y + f.h + 30, x_label, {kAxisLabelFont, false, kInk}, Align::kCenter);
  if (!y_label.empty())
    c.text(f.x - y_room + kAxisLabelFont / 2 + 2, f.y + f.h / 2, y_label, {kAxisLabelFont, false, kInk},
           Align::kCenter, -90);
}

double title_room(const std::string& title) { return title.empty() ? 0 : 26; }

// A figure at least as wide as its title.
double fit_title(TextMeasure& m, const std::string& title, double width) {
  return std::max(width, m.width(title, kTitleFont, true) + 2 * kMargin);
}

void draw_title(Canvas& c, const std::string& title, double width) {
  if (!title.empty()) c.text(width / 2, kMargin + 8, title, {kTitleFont, true, kInk}, Align::kCenter);
}

Rgb darker(Rgb c) { return {c.r * 0.6, c.g * 0.6, c.b * 0.6}; }

Rgb hls_to_rgb(double h, double l, double s) {
  // colorsys.hls_to_rgb
  auto v = [](double m1, double m2, double hue) {
    hue = hue - std::floor(hue);
    if (hue < 1.0 / 6) return m1 + (m2 - m1) * hue * 6;
    if (hue < 0.5) return m2;
    if (hue < 2.0 / 3) return m1 + (m2 - m1) * (2.0 / 3 - hue) * 6;
    return m1;
  };
  if (s == 0) return {l, l, l};
  const double m2 = l <= 0.5 ? l * (1 + s) : l + s - l * s, m1 = 2 * l - m2;
  return {v(m1, m2, h + 1.0 / 3), v(m1, m2, h), v(m1, m2, h - 1.0 / 3)};
}

// seaborn's hls_palette(n, h=.01, l=.6, s=.65): n hues evenly spaced around the circle.
std::vector<Rgb> hls_palette(std::size_t n) {
  std::vector<Rgb> out;
  for (std::size_t i = 0; i < n; ++i)
    out.push_back(hls_to_rgb(0.01 + static_cast<double>(i) / static_cast<double>(n), 0.6, 0.65));
  return out;
}

void write(const std::filesystem::path& out, Canvas& c) { io::write_file_atomic(out, c.finish()); }

}  // namespace

ImageFormat image_format_for(const std::filesystem::path& path) {
  std::string ext = path.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
  if (ext == ".png") return ImageFormat::kPng;
  if (ext == ".svg") return ImageFormat::kSvg;
  throw std::invalid_argument("figure '" + path.string() + "': unknown image type '" + ext +
                              "' (valid: .png, .svg)");
}

Rgb blues(double v) {
  static const Rgb kAnchors[9] = {
      {0xf7 / 255.0, 0xfb / 255.0, 0xff / 255.0}, {0xde / 255.0, 0xeb / 255.0, 0xf7 / 255.0},
      {0xc6 / 255.0, 0xdb / 255.0, 0xef / 255.0}, {0x9e / 255.0, 0xca / 255.0, 0xe1 / 255.0},
      {0x6b / 255.0, 0xae / 255.0, 0xd6 / 255.0}, {0x42 / 255.0, 0x92 / 255.0, 0xc6 / 255.0},
      {0x21 / 255.0, 0x71 / 255.0, 0xb5 / 255.0}, {0x08 / 255.0, 0x51 / 255.0, 0x9c / 255.0},
      {0x08 / 255.0, 0x30 / 255.0, 0x6b / 255.0}};
  if (std::isnan(v)) return {0.75, 0.75, 0.75};
  const double t = std::clamp(v, 0.0, 1.0) * 8;
  const auto i = std::min<std::size_t>(static_cast<std::size_t>(t), 7);
  const double f = t - static_cast<double>(i);
  const Rgb a = kAnchors[i], b = kAnchors[i + 1];
  return {a.r + (b.r - a.r) * f, a.g + (b.g - a.g) * f, a.b + (b.b - a.b) * f};
}

std::vector<Rgb> qualitative_palette(std::size_t n) {
  static const unsigned kTab10[10] = {0x1f77b4, 0xff7f0e, 0x2ca02c, 0xd62728, 0x9467bd,
                                      0x8c564b, 0xe377c2, 0x7f7f7f, 0xbcbd22, 0x17becf};
  std::vector<Rgb> out;
  for (std::size_t i = 0; i < n; ++i) {
    if (n <= 10) {
      const unsigned c = kTab10[i];
      out.push_back({((c >> 16) & 0xff) / 255.0, ((c >> 8) & 0xff) / 255.0, (c & 0xff) / 255.0});
    }
  }
  return n <= 10 ? out : hls_palette(n);
}

// ---- heatmap ---------------------------------------------------------------------------------

namespace {

// The heatmap's file bytes in `fmt`; its layout size in *size.
std::string draw_route_heatmap(const HeatmapSpec& spec, ImageFormat fmt, FigureSize* size) {
  const RouteTable& r = spec.routes;
  r.validate(1e-3);
  const std::size_t n = r.num_tasks(), L = r.num_layers(), E = r.num_experts();
  require(n > 0, "heatmap: no task");
  require(
      spec.category.empty() || spec.category.size() == n,
      "heatmap: " + std::to_string(spec.category.size()) + " categories for " + std::to_string(n) + " tasks");
  require(spec.sub_category.empty() || spec.sub_category.size() == n,
          "heatmap: " + std::to_string(spec.sub_category.size()) + " sub-categories for " +
              std::to_string(n) + " tasks");
  TextMeasure m;

  constexpr double kRowH = 16, kLabelFont = 11, kLayerFont = 10, kExpertFont = 8, kBandW = 12, kBandGap = 2;
  constexpr double kBarW = 14, kBarFont = 9;
  // Columns: wide enough for the layer names above each group of E cells.
  const double cell_w =
      std::max(14.0, std::ceil((m.max_width(r.layer_names, kLayerFont, true) + 6) / static_cast<double>(E)));
  std::vector<const std::vector<std::string>*> bands;
  if (!spec.category.empty()) bands.push_back(&spec.category);
  if (!spec.sub_category.empty()) bands.push_back(&spec.sub_category);

  const double label_w = m.max_width(r.tasks, kLabelFont);
  const double header_h = 34;
  const double top = kMargin + title_room(spec.title);
  const double cells_y = top + header_h;
  const double bands_x = kMargin + label_w + 6;
  const double cells_x =
      bands_x + static_cast<double>(bands.size()) * (kBandW + kBandGap) + (bands.empty() ? 0 : 6);
  const double cells_w = static_cast<double>(L * E) * cell_w, cells_h = static_cast<double>(n) * kRowH;
  const std::vector<std::string> bar_ticks = {"0", "0.25", "0.5", "0.75", "1"};
  const double bar_x = cells_x + cells_w + 18;
  const double bar_h = std::clamp(cells_h, 100.0, 240.0);
  const double right =
      bar_x + std::max(kBarW + 5 + m.max_width(bar_ticks, kBarFont), m.width("weight", kBarFont));
  double width = right + kMargin;

  std::vector<Coloring> band_colors;
  const char* band_titles[2] = {"category", "sub-category"};
  for (std::size_t b = 0; b < bands.size(); ++b) {
    const bool is_sub = bands[b] == &spec.sub_category;
    band_colors.push_back(color_by(*bands[b], is_sub ? band_titles[1] : band_titles[0], false, is_sub));
  }
  std::vector<LegendLayout> legend_layouts;
  for (auto& bc : band_colors) {
    legend_layouts.push_back(layout_legend(m, bc.legend, width - 2 * kMargin));
    width = std::max(width, legend_layouts.back().width + 2 * kMargin);
  }
  width = fit_title(m, spec.title, width);
  double legend_y = cells_y + std::max(cells_h, bar_h + 14) + 18;
  double height = legend_y;
  for (const auto& ll : legend_layouts) height += ll.height + 10;
  height += kMargin;

  auto canvas = make_canvas(fmt, width, height);
  Canvas& c = *canvas;
  draw_title(c, spec.title, width);

  // Layer names and expert numbers above the cells; band names above the bands.
  for (std::size_t l = 0; l < L; ++l) {
    const double gx = cells_x + static_cast<double>(l * E) * cell_w;
    c.text(gx + static_cast<double>(E) * cell_w / 2, top + 9, r.layer_names[l], {kLayerFont, true, kInk},
           Align::kCenter);
    for (std::size_t e = 0; e < E; ++e)
      c.text(gx + (static_cast<double>(e) + 0.5) * cell_w, top + 25, std::to_string(e + 1),
             {kExpertFont, false, kAxis}, Align::kCenter);
  }
  for (std::size_t b = 0; b < bands.size(); ++b)
    c.text(bands_x + static_cast<double>(b) * (kBandW + kBandGap) + kBandW / 2, cells_y - 3,
           bands[b] == &spec.sub_category ? "sub" : "cat", {kExpertFont, false, kAxis}, Align::kLeft, -90);

  // Rows: label, bands, cells.
  for (std::size_t t = 0; t < n; ++t) {
    const double y = cells_y + static_cast<double>(t) * kRowH;
    c.text(bands_x - 6, y + kRowH / 2, r.tasks[t], {kLabelFont, false, kInk}, Align::kRight);
    for (std::size_t b = 0; b < bands.size(); ++b)
      c.fill_rect(bands_x + static_cast<double>(b) * (kBandW + kBandGap), y, kBandW, kRowH,
                  band_colors[b].per_item[t]);
    for (std::size_t l = 0; l < L; ++l)
      for (std::size_t e = 0; e < E; ++e)
        c.fill_rect(cells_x + static_cast<double>(l * E + e) * cell_w, y, cell_w, kRowH,
                    blues(r.at(t, l, e)));
  }
  // Separators: between layers, and between runs of tasks of different (first band) category.
  for (std::size_t l = 1; l < L; ++l) {
    const double x = cells_x + static_cast<double>(l * E) * cell_w;
    c.line(x, top + 18, x, cells_y + cells_h, kAxis, 1.5);
  }
  if (!bands.empty())
    for (std::size_t t = 1; t < n; ++t)
      if ((*bands[0])[t] != (*bands[0])[t - 1]) {
        const double y = cells_y + static_cast<double>(t) * kRowH;
        c.line(bands_x, y, cells_x + cells_w, y, kWhite, 1.5);
      }
  c.stroke_rect(cells_x, cells_y, cells_w, cells_h, kAxis, 1);

  // Colour bar.
  constexpr int kSteps = 100;
  for (int i = 0; i < kSteps; ++i) {
    const double v0 = static_cast<double>(i) / kSteps;
    c.fill_rect(bar_x, cells_y + bar_h * (1 - v0 - 1.0 / kSteps), kBarW, bar_h / kSteps + 0.5,
                blues(v0 + 0.5 / kSteps));
  }
  c.stroke_rect(bar_x, cells_y, kBarW, bar_h, kAxis, 1);
  for (std::size_t i = 0; i < bar_ticks.size(); ++i) {
    const double y = cells_y + bar_h * (1 - static_cast<double>(i) / 4);
    c.line(bar_x + kBarW, y, bar_x + kBarW + 3, y, kAxis, 1);
    c.text(bar_x + kBarW + 5, y, bar_ticks[i], {kBarFont, false, kInk}, Align::kLeft);
  }
  c.text(bar_x, cells_y + bar_h + 10, "weight", {kBarFont, false, kInk}, Align::kLeft);

  double y = legend_y;
  for (std::size_t b = 0; b < band_colors.size(); ++b) {
    draw_legend(c, band_colors[b].legend, legend_layouts[b], kMargin, y);
    y += legend_layouts[b].height + 10;
  }
  *size = size_of(width, height);
  return c.finish();
}

}  // namespace

FigureSize plot_route_heatmap(const HeatmapSpec& spec, const std::filesystem::path& out,
                              std::optional<ImageFormat> format) {
  FigureSize size;
  const std::string bytes = draw_route_heatmap(spec, resolve(out, format), &size);
  io::write_file_atomic(out, bytes);
  return size;
}

std::string route_heatmap_png(const HeatmapSpec& spec, FigureSize* size) {
  return draw_route_heatmap(spec, ImageFormat::kPng, size);
}

// ---- scatter ---------------------------------------------------------------------------------

namespace {

struct Box {
  double x0, y0, x1, y1;
  bool overlaps(const Box& o) const { return x0 < o.x1 && o.x0 < x1 && y0 < o.y1 && o.y0 < y1; }
};

// Where a point's label goes: its box's left and vertical middle, a leader line when it is away
// from the point, or number > 0 when no place is free (the label goes into a numbered key and the
// number, at x/y, beside the point).
struct LabelPlace {
  double x = 0, y = 0;
  bool leader = false;
  int number = 0;
  bool number_drawn = false;  // false: a clump too dense even for numbers (the key still lists it)
};

// The first free spot for a w x h box near point (px, py): 8 directions at each distance (right of
// the point first), inside the plot area, clear of every box taken; taken on success.
std::optional<LabelPlace> free_spot(const PlotFrame& f, std::vector<Box>& taken, double px, double py, double w,
                                    double h, std::initializer_list<double> distances) {
  const std::pair<double, double> dirs[] = {{1, 0}, {-1, 0}, {0, -1}, {0, 1}, {1, -1}, {-1, -1}, {1, 1}, {-1, 1}};
  const double nearest = *distances.begin();
  for (double dist : distances)
    for (const auto& [dx, dy] : dirs) {
      const double cx = px + dx * dist, cy = py + dy * dist;
      const double x0 = dx > 0 ? cx : dx < 0 ? cx - w : cx - w / 2;
      const double y0 = dy > 0 ? cy : dy < 0 ? cy - h : cy - h / 2;
      const Box b{x0, y0, x0 + w, y0 + h};
      if (b.x0 < f.x || b.x1 > f.x + f.w || b.y0 < f.y || b.y1 > f.y + f.h) continue;
      if (std::any_of(taken.begin(), taken.end(), [&](const Box& t) { return t.overlaps(b); })) continue;
      taken.push_back(b);
      return LabelPlace{x0, y0 + h / 2, dist > nearest, 0};
    }
  return std::nullopt;
}

// Greedy placement, points in order: each label takes a free spot near its point, clear of every
// point and every label placed before; a label with no free spot becomes a number (placed the same
// way, with a leader line when away; in a clump too dense for that, only in the key) with a key below.
std::vector<LabelPlace> place_labels(TextMeasure& m, const PlotFrame& f, const std::vector<double>& px,
                                     const std::vector<double>& py, const std::vector<std::string>& labels,
                                     double r, double font) {
  std::vector<Box> taken;
  for (std::size_t i = 0; i < px.size(); ++i) taken.push_back({px[i] - r, py[i] - r, px[i] + r, py[i] + r});
  std::vector<LabelPlace> out(labels.size());
  std::vector<std::size_t> unplaced;
  for (std::size_t i = 0; i < labels.size(); ++i) {
    if (auto p = free_spot(f, taken, px[i], py[i], m.width(labels[i], font), font + 2, {r + 3, r + 12, r + 24, r + 40}))
      out[i] = *p;
    else
      unplaced.push_back(i);
  }
  int numbered = 0;
  for (std::size_t i : unplaced) {
    const std::string num = std::to_string(++numbered);
    auto p = free_spot(f, taken, px[i], py[i], m.width(num, font - 1, true), font,
                       {r + 1, r + 6, r + 12, r + 20, r + 30, r + 42, r + 56, r + 72, r + 90});
    out[i] = p.value_or(LabelPlace{0, 0, false, 0});
    out[i].number = numbered;
    out[i].number_drawn = p.has_value();
  }
  return out;
}

}  // namespace

FigureSize plot_scatter(const ScatterSpec& spec, const std::filesystem::path& out,
                        std::optional<ImageFormat> format) {
  const std::size_t n = spec.x.size();
  require(spec.y.size() == n,
          "scatter: " + std::to_string(n) + " x and " + std::to_string(spec.y.size()) + " y values");
  require(spec.category.empty() || spec.category.size() == n,
          "scatter: " + std::to_string(spec.category.size()) + " categories for " + std::to_string(n) +
              " points");
  require(spec.labels.empty() || spec.labels.size() == n,
          "scatter: " + std::to_string(spec.labels.size()) + " labels for " + std::to_string(n) + " points");
  for (std::size_t i = 0; i < n; ++i)
    require(std::isfinite(spec.x[i]) && std::isfinite(spec.y[i]),
            "scatter: point " + std::to_string(i) + " is not finite");
  const ImageFormat fmt = resolve(out, format);
  TextMeasure m;
  constexpr double kPointR = 4, kPointFont = 9;

  // The plot area grows with the number of points (its side with their square root, from 40 points
  // on) so that labels of up to about 160 tasks find room: 560 x 420 up to 1120 x 840.
  PlotFrame f;
  f.w = std::clamp(560.0 * std::sqrt(static_cast<double>(n) / 40.0), 560.0, 1120.0);
  f.h = 0.75 * f.w;
  auto pad = [](std::pair<double, double> r) {
    const double p = 0.05 * (r.second - r.first);
    return std::make_pair(r.first - p, r.second + p);
  };
  auto [xlo, xhi] = pad(finite_range(spec.x));
  auto [ylo, yhi] = pad(finite_range(spec.y));
  f.ax = nice_axis(xlo, xhi);
  f.ay = nice_axis(ylo, yhi);
  const double y_room = y_axis_room(m, f.ay, spec.y_label);
  f.x = kMargin + y_room;
  f.y = kMargin + title_room(spec.title);

  Coloring colors =
      color_by(spec.category.empty() ? std::vector<std::string>(n) : spec.category, "category", true);
  if (spec.category.empty()) colors.legend.entries.clear();
  std::vector<double> px, py;
  for (std::size_t i = 0; i < n; ++i) px.push_back(f.px(spec.x[i])), py.push_back(f.py(spec.y[i]));
  const auto places = place_labels(m, f, px, py, spec.labels, kPointR, kPointFont);
  std::vector<std::string> key;  // "N  label" of the points that got a number
  for (std::size_t i = 0; i < places.size(); ++i)
    if (places[i].number) key.push_back(std::to_string(places[i].number) + "  " + spec.labels[i]);
  const LegendLayout ll = layout_legend(m, colors.legend, 0);
  const double legend_x = f.x + f.w + 16;
  double key_w = 0;
  for (const auto& k : key) key_w = std::max(key_w, m.width(k, kPointFont) + 16);
  const std::size_t key_cols = key.empty() ? 1 : std::max<std::size_t>(1, static_cast<std::size_t>(f.w / key_w));
  const double key_h = key.empty() ? 0 : 6 + static_cast<double>((key.size() + key_cols - 1) / key_cols) * (kPointFont + 3);
  const double width = fit_title(
      m, spec.title, (colors.legend.entries.empty() ? f.x + f.w : legend_x + ll.width) + kMargin);
  const double key_y = f.y + f.h + x_axis_room(spec.x_label);
  const double height = std::max(key_y + key_h, f.y + ll.height) + kMargin;

  auto canvas = make_canvas(fmt, width, height);
  Canvas& c = *canvas;
  draw_title(c, spec.title, width);
  draw_frame(c, f, spec.x_label, spec.y_label, y_room);
  for (std::size_t i = 0; i < n; ++i)
    c.circle(f.px(spec.x[i]), f.py(spec.y[i]), kPointR, colors.per_item[i], darker(colors.per_item[i]));
  for (std::size_t i = 0; i < places.size(); ++i) {
    const LabelPlace& lp = places[i];
    if (lp.number) {  // a small number beside the point (a leader line when away), the label in the key below
      if (!lp.number_drawn) continue;
      if (lp.leader) c.line(px[i], py[i], lp.x, lp.y, Rgb{0.6, 0.6, 0.6}, 0.6);
      c.text(lp.x, lp.y, std::to_string(lp.number), {kPointFont - 1, true, kAxis}, Align::kLeft);
      continue;
    }
    if (lp.leader) {
      const double lx = std::clamp(px[i], lp.x, lp.x + m.width(spec.labels[i], kPointFont));
      c.line(px[i], py[i], lx, lp.y, Rgb{0.6, 0.6, 0.6}, 0.6);
    }
    c.text(lp.x, lp.y, spec.labels[i], {kPointFont, false, kAxis}, Align::kLeft);
  }
  for (std::size_t k = 0; k < key.size(); ++k)
    c.text(f.x + static_cast<double>(k % key_cols) * key_w,
           key_y + 6 + static_cast<double>(k / key_cols) * (kPointFont + 3) + kPointFont / 2, key[k],
           {kPointFont, false, kAxis}, Align::kLeft);
  if (!colors.legend.entries.empty()) draw_legend(c, colors.legend, ll, legend_x, f.y);
  write(out, c);
  return size_of(width, height);
}

// ---- grouped bars ----------------------------------------------------------------------------

FigureSize plot_grouped_bars(const GroupedBarSpec& spec, const std::filesystem::path& out,
                             std::optional<ImageFormat> format) {
  const std::size_t G = spec.groups.size(), S = spec.series.size(), P = spec.panels.size();
  require(G > 0 && S > 0 && P > 0, "grouped bars: needs groups, series and panels (got " + std::to_string(G) +
                                       ", " + std::to_string(S) + ", " + std::to_string(P) + ")");
  require(spec.columns > 0, "grouped bars: columns must be > 0");
  double vmin = 0, vmax = 0;
  for (const auto& p : spec.panels) {
    require(p.values.size() == S * G, "grouped bars: panel '" + p.title + "' has " +
                                          std::to_string(p.values.size()) + " values for " +
                                          std::to_string(S) + " series x " + std::to_string(G) + " groups");
    for (double v : p.values)
      if (std::isfinite(v)) vmin = std::min(vmin, v), vmax = std::max(vmax, v);
  }
  const ImageFormat fmt = resolve(out, format);
  TextMeasure m;
  constexpr double kPanelTitleFont = 11;

  Axis ay = nice_axis(vmin, spec.y_max > 0 ? spec.y_max : (vmax > vmin ? vmax : vmin + 1));
  if (spec.y_max > 0 && vmin >= 0) {  // exactly [0, y_max]
    ay = nice_axis(0, spec.y_max);
    ay.hi = spec.y_max;
    while (!ay.ticks.empty() && ay.ticks.back() > spec.y_max + 1e-12) ay.ticks.pop_back();
  }
  const double tick_w = m.max_width(ay.labels(), kTickFont) + 8;
  const double pw = std::max(160.0, static_cast<double>(G * S) * 8 + static_cast<double>(G) * 10);
  const double ph = 140;
  const double cell_w = tick_w + pw + 16, cell_h = 20 + ph + 22 + 8;
  const std::size_t cols = std::min(spec.columns, P), rows = (P + cols - 1) / cols;
  const double y_label_room = spec.y_label.empty() ? 0 : kAxisLabelFont + 10;
  const double top = kMargin + title_room(spec.title);
  const double grid_w = static_cast<double>(cols) * cell_w, grid_h = static_cast<double>(rows) * cell_h;

  Coloring colors = color_by(spec.series, "", false);
  const LegendLayout ll = layout_legend(m, colors.legend, 0);
  const double legend_x = kMargin + y_label_room + grid_w + 8;
  const double width = fit_title(m, spec.title, legend_x + ll.width + kMargin);
  const double height = top + std::max(grid_h, ll.height) + kMargin;

  auto canvas = make_canvas(fmt, width, height);
  Canvas& c = *canvas;
  draw_title(c, spec.title, width);
  if (!spec.y_label.empty())
    c.text(kMargin + kAxisLabelFont / 2 + 2, top + grid_h / 2, spec.y_label, {kAxisLabelFont, false, kInk},
           Align::kCenter, -90);
  const auto tick_labels = ay.labels();
  for (std::size_t p = 0; p < P; ++p) {
    PlotFrame f;
    f.ay = ay;
    f.ax.lo = 0;
    f.ax.hi = 1;
    f.x = kMargin + y_label_room + static_cast<double>(p % cols) * cell_w + tick_w;
    f.y = top + static_cast<double>(p / cols) * cell_h + 20;
    f.w = pw;
    f.h = ph;
    c.text(f.x + f.w / 2, f.y - 10, spec.panels[p].title, {kPanelTitleFont, true, kInk}, Align::kCenter);
    for (std::size_t i = 0; i < ay.ticks.size(); ++i) {
      const double y = f.py(ay.ticks[i]);
      c.line(f.x, y, f.x + f.w, y, kGrid, 1);
      c.text(f.x - 6, y, tick_labels[i], {kTickFont, false, kInk}, Align::kRight);
    }
    const double gw = pw / static_cast<double>(G), bw = gw * 0.8 / static_cast<double>(S);
    const double base = f.py(std::clamp(0.0, ay.lo, ay.hi));
    for (std::size_t g = 0; g < G; ++g) {
      for (std::size_t s = 0; s < S; ++s) {
        const double v = spec.panels[p].values[s * G + g];
        if (!std::isfinite(v)) continue;
        const double top_y = f.py(std::clamp(v, ay.lo, ay.hi));
        c.fill_rect(f.x + static_cast<double>(g) * gw + gw * 0.1 + static_cast<double>(s) * bw,
                    std::min(top_y, base), bw, std::abs(base - top_y), colors.per_item[s]);
      }
      c.text(f.x + (static_cast<double>(g) + 0.5) * gw, f.y + f.h + 11, spec.groups[g],
             {kTickFont, false, kInk}, Align::kCenter);
    }
    c.stroke_rect(f.x, f.y, f.w, f.h, kAxis, 1);
  }
  draw_legend(c, colors.legend, ll, legend_x, top + 20);
  write(out, c);
  return size_of(width, height);
}

GroupedBarSpec expert_usage_bars(const std::vector<LayerAssociation>& layers, const std::string& title) {
  require(!layers.empty(), "expert_usage_bars: no layer");
  GroupedBarSpec s;
  s.title = title;
  s.y_label = "P(expert | category)";
  s.y_max = 1;
  s.series = layers.front().categories;
  for (std::size_t e = 0; e < layers.front().experts; ++e)
    s.groups.push_back(std::string("e").append(std::to_string(e + 1)));
  for (const auto& a : layers) {
    require(a.categories == s.series && a.experts == s.groups.size(),
            "expert_usage_bars: layer " + a.layer + " has other categories or experts than layer " +
                layers.front().layer);
    s.panels.push_back({a.layer, a.p_expert_given_category});
  }
  return s;
}

// ---- lines -----------------------------------------------------------------------------------

namespace {

// A series' band (lo..hi) as translucent polygons, one per run of finite values.
void draw_band(Canvas& c, const PlotFrame& f, const std::vector<double>& x, const LineChartSpec::Series& s, Rgb col) {
  if (s.lo.empty()) return;
  std::vector<std::pair<double, double>> top, bottom;
  auto flush = [&] {
    if (top.size() >= 2) {
      std::vector<std::pair<double, double>> poly(top);
      poly.insert(poly.end(), bottom.rbegin(), bottom.rend());
      c.fill_polygon(poly, col, 0.18);
    }
    top.clear();
    bottom.clear();
  };
  for (std::size_t i = 0; i < x.size(); ++i) {
    if (!std::isfinite(s.lo[i]) || !std::isfinite(s.hi[i])) {
      flush();
      continue;
    }
    top.emplace_back(f.px(x[i]), f.py(s.hi[i]));
    bottom.emplace_back(f.px(x[i]), f.py(s.lo[i]));
  }
  flush();
}

}  // namespace

FigureSize plot_lines(const LineChartSpec& spec, const std::filesystem::path& out,
                      std::optional<ImageFormat> format) {
  const std::size_t n = spec.x.size();
  require(n > 0 && !spec.series.empty(), "lines: needs x values and series");
  for (double x : spec.x) require(std::isfinite(x), "lines: x values must be finite");
  std::vector<double> all_y;
  std::vector<std::string> keys;
  for (const auto& s : spec.series) {
    require(s.y.size() == n, "lines: series '" + s.name + "' has " + std::to_string(s.y.size()) +
                                 " values for " + std::to_string(n) + " x values");
    require(s.lo.size() == s.hi.size() && (s.lo.empty() || s.lo.size() == n),
            "lines: series '" + s.name + "': the band needs lo and hi with one value per x");
    all_y.insert(all_y.end(), s.y.begin(), s.y.end());
    all_y.insert(all_y.end(), s.lo.begin(), s.lo.end());
    all_y.insert(all_y.end(), s.hi.begin(), s.hi.end());
    keys.push_back(s.group.empty() ? "\x01" + s.name
                                   : s.group);  // "\x01": a series' own name never equals a group
  }
  const ImageFormat fmt = resolve(out, format);
  TextMeasure m;

  PlotFrame f;
  f.w = 640;
  f.h = 360;
  auto [xlo, xhi] = finite_range(spec.x);
  auto [ylo, yhi] = finite_range(all_y);
  f.ax = nice_axis(xlo, xhi);
  f.ay = nice_axis(ylo, yhi);
  const double y_room = y_axis_room(m, f.ay, spec.y_label);
  f.x = kMargin + y_room;
  f.y = kMargin + title_room(spec.title);

  Coloring colors = color_by(keys, "", false);
  for (auto& [name, rgb] : colors.legend.entries)
    if (!name.empty() && name[0] == '\x01') name = name.substr(1);
  const LegendLayout ll = layout_legend(m, colors.legend, 0);
  const double legend_x = f.x + f.w + 16;
  const double width = fit_title(m, spec.title, legend_x + ll.width + kMargin);
  const double height = std::max(f.y + f.h + x_axis_room(spec.x_label), f.y + ll.height) + kMargin;

  auto canvas = make_canvas(fmt, width, height);
  Canvas& c = *canvas;
  draw_title(c, spec.title, width);
  draw_frame(c, f, spec.x_label, spec.y_label, y_room);
  const bool few = spec.series.size() <= 10;  // many series: thinner lines, no markers
  const bool markers = few && n <= 40;
  for (std::size_t si = 0; si < spec.series.size(); ++si) draw_band(c, f, spec.x, spec.series[si], colors.per_item[si]);
  for (std::size_t si = 0; si < spec.series.size(); ++si) {
    const auto& s = spec.series[si];
    const Rgb col = colors.per_item[si];
    std::vector<std::pair<double, double>> run;
    auto flush = [&] {
      c.polyline(run, col, few ? 1.5 : 0.8);
      run.clear();
    };
    for (std::size_t i = 0; i < n; ++i) {
      if (!std::isfinite(s.y[i])) {
        flush();
        continue;
      }
      run.emplace_back(f.px(spec.x[i]), f.py(s.y[i]));
    }
    flush();
    // Markers shrink with the series index, so the points of series that coincide show as
    // concentric rings rather than hiding each other.
    const double r = 2.0 + 1.0 * static_cast<double>(spec.series.size() - 1 - si);
    if (markers)
      for (std::size_t i = 0; i < n; ++i)
        if (std::isfinite(s.y[i])) c.circle(f.px(spec.x[i]), f.py(s.y[i]), r, col, kWhite);
  }
  draw_legend(c, colors.legend, ll, legend_x, f.y);
  write(out, c);
  return size_of(width, height);
}

}  // namespace tlmoe::analysis
