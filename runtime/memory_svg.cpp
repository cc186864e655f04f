// SVG drawing of a memory timeline.
#include "runtime/memory_svg.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/byte_size.h"
#include "core/memory_ledger.h"

namespace zs {
namespace {

constexpr double kW = 960, kH = 460, kLeft = 80, kRight = 200, kTop = 50, kBottom = 60;
constexpr const char* kColors[kMemCategoryCount] = {"#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
                                                    "#edc948", "#b07aa1", "#bab0ac", "#ff9da7", "#9c755f"};

// The axis step: the smallest 1, 2 or 5 x 10^k that cuts `span` into at most `ticks` steps.
double nice_step(double span, int ticks) {
  const double raw = span / ticks, decade = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0})
    if (m * decade >= raw * (1 - 1e-9)) return m * decade;
  return 10 * decade;
}

// Decimals that show every multiple of `step` exactly.
int decimals(double step) {
  return std::max(0, static_cast<int>(-std::floor(std::log10(step) + 1e-9)));
}

const char* band_color(const std::string& label) {
  if (label.starts_with("forward")) return "#dbe9f6";
  if (label.starts_with("backward")) return "#fde3cc";
  if (label.starts_with("step")) return "#d9d9d9";
  return "none";
}

// One panel: a timeline's stacked categories, the phase bands, the plan's total, axes and legend, drawn
// in the band [y0, y0 + kH) of the picture.
std::string panel(const nlohmann::json& tl, double planned, const nlohmann::json& marks, double t_end, double y0,
                  const std::string& title) {
  std::string svg = fmt::format("<text x=\"{}\" y=\"{}\" font-size=\"14\">{}</text>\n", kLeft, y0 + kTop - 12, title);
  if (tl.empty()) return svg + fmt::format("<text x=\"{}\" y=\"{}\">nothing recorded</text>\n", kLeft, y0 + kTop + 20);
  // Categories that ever hold memory, in ledger order, stacked from the bottom.
  std::vector<int> cats;
  for (int c = 0; c < kMemCategoryCount; ++c)
    for (const auto& p : tl)
      if (p[static_cast<std::size_t>(1 + c)].get<int64_t>() > 0) {
        cats.push_back(c);
        break;
      }
  double top = planned;
  for (const auto& p : tl) {
    double s = 0;
    for (int c : cats) s += p[static_cast<std::size_t>(1 + c)].get<double>();
    top = std::max(top, s);
  }
  top = std::max(top * 1.08, 1.0);
  const double pw = kW - kLeft - kRight, ph = kH - kTop - kBottom;
  auto X = [&](double t) { return kLeft + pw * t / t_end; };
  auto Y = [&](double b) { return y0 + kTop + ph * (1 - b / top); };
  // Phase bands, from each mark to the next (or the end).
  for (std::size_t i = 0; i < marks.size(); ++i) {
    const double a = marks[i][0].get<double>(), b = i + 1 < marks.size() ? marks[i + 1][0].get<double>() : t_end;
    const char* fill = band_color(marks[i][1].get<std::string>());
    if (std::string(fill) != "none")
      svg += fmt::format("<rect x=\"{:.1f}\" y=\"{}\" width=\"{:.2f}\" height=\"{}\" fill=\"{}\"/>\n", X(a), y0 + kTop,
                         std::max(0.0, X(b) - X(a)), ph, fill);
  }
  // Stacked step areas: each category's band between the running sum below it and that sum plus itself.
  std::vector<double> below(tl.size(), 0.0);
  for (int c : cats) {
    std::string upper, lower;
    for (std::size_t i = 0; i < tl.size(); ++i) {
      const double t = tl[i][0].get<double>(), tn = i + 1 < tl.size() ? tl[i + 1][0].get<double>() : t_end;
      const double hi = below[i] + tl[i][static_cast<std::size_t>(1 + c)].get<double>();
      upper += fmt::format("{:.1f},{:.1f} {:.1f},{:.1f} ", X(t), Y(hi), X(tn), Y(hi));
      lower = fmt::format("{:.1f},{:.1f} {:.1f},{:.1f} ", X(tn), Y(below[i]), X(t), Y(below[i])) + lower;
      below[i] = hi;
    }
    svg += fmt::format("<polygon points=\"{}{}\" fill=\"{}\" fill-opacity=\"0.85\" stroke=\"none\"/>\n", upper, lower,
                       kColors[c]);
  }
  // The plan's total, axes, ticks.
  svg += fmt::format(
      "<line x1=\"{}\" y1=\"{:.1f}\" x2=\"{}\" y2=\"{:.1f}\" stroke=\"black\" stroke-dasharray=\"6,4\"/>\n"
      "<text x=\"{}\" y=\"{:.1f}\" text-anchor=\"end\">predicted {}</text>\n",
      kLeft, Y(planned), kLeft + pw, Y(planned), kLeft + pw - 4, Y(planned) - 5, format_bytes(planned));
  svg += fmt::format("<line x1=\"{0}\" y1=\"{1}\" x2=\"{0}\" y2=\"{2}\" stroke=\"black\"/>\n", kLeft, y0 + kTop,
                     y0 + kTop + ph);
  svg += fmt::format("<line x1=\"{0}\" y1=\"{1}\" x2=\"{2}\" y2=\"{1}\" stroke=\"black\"/>\n", kLeft, y0 + kTop + ph,
                     kLeft + pw);
  // Ticks at round numbers of GiB (or MiB below 1 GiB) and of seconds.
  const double unit = top / 1.08 >= 1 << 30 ? 1 << 30 : 1 << 20, by = nice_step(top / 1.08 / unit, 5);
  for (int i = 0; i * by * unit <= top; ++i)
    svg += fmt::format("<text x=\"{}\" y=\"{:.1f}\" text-anchor=\"end\">{:.{}f} {}</text>\n", kLeft - 6,
                       Y(i * by * unit) + 4, i * by, decimals(by), unit > 1 << 20 ? "GiB" : "MiB");
  const double dt = nice_step(t_end, 5);
  for (int i = 0; i * dt <= t_end * (1 + 1e-9); ++i)
    svg += fmt::format("<text x=\"{:.1f}\" y=\"{}\" text-anchor=\"middle\">{:.{}f} s</text>\n", X(i * dt),
                       y0 + kTop + ph + 18, i * dt, decimals(dt));
  svg += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">seconds since init_params</text>\n",
                     kLeft + pw / 2, y0 + kTop + ph + 40);
  // Legend: categories (top of the stack first) with their final bytes, then the phase colours.
  double ly = y0 + kTop + 10;
  for (auto it = cats.rbegin(); it != cats.rend(); ++it, ly += 20) {
    const int c = *it;
    svg += fmt::format(
        "<rect x=\"{}\" y=\"{:.0f}\" width=\"12\" height=\"12\" fill=\"{}\"/><text x=\"{}\" y=\"{:.0f}\">{} "
        "{}</text>\n",
        kW - kRight + 16, ly, kColors[c], kW - kRight + 34, ly + 10, mem_category_name(static_cast<MemCategory>(c)),
        format_bytes(tl.back()[static_cast<std::size_t>(1 + c)].get<double>()));
  }
  ly += 10;
  for (const char* phase : {"forward", "backward", "step"}) {
    svg += fmt::format(
        "<rect x=\"{}\" y=\"{:.0f}\" width=\"12\" height=\"12\" fill=\"{}\" stroke=\"#999\"/><text x=\"{}\" "
        "y=\"{:.0f}\">{}</text>\n",
        kW - kRight + 16, ly, band_color(phase), kW - kRight + 34, ly + 10, phase);
    ly += 20;
  }
  return svg;
}

}  // namespace

std::string memory_timeline_svg(const nlohmann::json& r) {
  const nlohmann::json none = nlohmann::json::array();
  const auto& tl = r.at("timeline");
  const auto& host = r.contains("host_timeline") ? r["host_timeline"] : none;
  const auto& marks = r.contains("marks") ? r["marks"] : none;
  // The device's panel, then (when the host holds anything: offload, Gloo's staging) the host's, on one time axis.
  double t_end = 1e-9;
  for (const nlohmann::json* t : {&tl, &host})
    if (!t->empty()) t_end = std::max(t_end, t->back()[0].get<double>());
  if (!marks.empty()) t_end = std::max(t_end, marks.back()[0].get<double>());
  const bool two = !host.empty();
  std::string svg = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" font-family=\"sans-serif\" "
      "font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
      kW, two ? 2 * kH : kH);
  svg += fmt::format(
      "<text x=\"{}\" y=\"20\" font-size=\"16\">Memory of rank {} of {} (ZeRO-{}, {}) by ledger category</text>\n",
      kLeft, r.value("rank", 0), r.value("world", 1), r.value("stage", 0), r.value("device", "cpu"));
  svg += panel(tl, r.value("planned_total", 0.0), marks, t_end, 0, "device");
  if (two) svg += panel(host, r.value("host_planned_total", 0.0), marks, t_end, kH, "host (offloaded state, staging)");
  return svg + "</svg>\n";
}

}  // namespace zs
