//! SVG charts of latency results, written as standalone files a person opens in a browser.
//!
//! Plain string formatting keeps the benchmark free of plotting dependencies. Both charts share
//! one renderer: each axis first maps data into its own "axis space" (seconds, log10
//! milliseconds, or nines) where it is linear, so the renderer only ever scales linearly to
//! pixels. Every point is checked for finiteness and clamped into the plot before it is
//! formatted, so degenerate input yields an empty but valid chart rather than `NaN` in the file.

/// One named line on a chart.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    pub name: String,
    /// (x, y) points in drawing order.
    pub points: Vec<(f64, f64)>,
}

/// Canvas size in pixels: wide enough for a legend beside a readable plot.
const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 500.0;

/// The plot rectangle; the margins hold tick labels, axis labels, title and legend.
const PLOT_LEFT: f64 = 80.0;
const PLOT_RIGHT: f64 = 700.0;
const PLOT_TOP: f64 = 50.0;
const PLOT_BOTTOM: f64 = 440.0;

/// Legend column to the right of the plot, one row per series.
const LEGEND_LEFT: f64 = 720.0;
const LEGEND_ROW: f64 = 18.0;
/// Longer names are cut so they stay on the canvas (the full name is in a tooltip).
const LEGEND_NAME_CHARS: usize = 22;

/// Distinct line colours (Tableau 10 minus the two greys), cycled when there are more series.
const PALETTE: [&str; 8] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];
/// Once the palette has been used up, later cycles are dashed so no two series look alike.
const DASHES: [&str; 3] = ["", "7 3", "2 3"];

/// Decades a log axis may span (1 ns to about 11 days, in ms): garbage such as 1e-300 must not
/// produce hundreds of tick labels.
const MIN_DECADE: i32 = -6;
const MAX_DECADE: i32 = 9;
/// Log axis range (0.1 ms to 10 ms) when there is no positive latency to scale to.
const DEFAULT_DECADES: (i32, i32) = (-1, 1);
/// Minor grid lines (2..9 × 10^k) help reading values, but crowd the plot over wide ranges.
const MINOR_GRID_MAX_DECADES: i32 = 6;
/// Tolerance for log10 of exact powers of ten (log10(1000) may come out as 2.9999999999999996),
/// so such values do not get an extra, empty decade.
const DECADE_SLACK: f64 = 1e-9;

/// Quantiles are clamped here before the nines transform, since -log10(1 - 1) is infinite.
const MAX_QUANTILE: f64 = 0.999_999;
/// The nines axis always reaches 99.9% so short runs still look like percentile spectra...
const MIN_NINES: i32 = 3;
/// ...and never beyond 99.9999%, which is where MAX_QUANTILE lands.
const MAX_NINES: i32 = 6;

/// A linear axis gets at most this many intervals before rounding out to whole steps, which
/// with 1-2-5 steps yields roughly 5 to 10 ticks.
const TARGET_INTERVALS: f64 = 8.0;
/// Spans narrower than this (in seconds) are treated as a single instant.
const MIN_LINEAR_SPAN: f64 = 1e-9;
/// Upper bound on linear ticks, a guard against pathological ranges.
const MAX_LINEAR_INTERVALS: f64 = 20.0;

/// Latency percentiles over time: x = seconds since the measured phase began, y = latency in
/// milliseconds on a log10 axis (values <= 0 are clamped to the axis minimum). One line per
/// series (e.g. "p50", "p99", "p99.9", "max"), a legend, axis labels, title.
pub fn over_time(title: &str, y_label: &str, series: &[Series]) -> String {
    let x = linear_axis(series.iter().flat_map(usable_points).map(|(x, _)| x));
    let y = log_axis(series.iter().flat_map(usable_points).map(|(_, y)| y));
    let lines = lines(series, |secs| secs, &y);
    render(&Chart {
        title,
        x_label: "seconds since start",
        y_label,
        x,
        y,
        lines,
    })
}

/// A latency distribution ("percentile spectrum", as HdrHistogram plots): x = quantile q in
/// [0, 1) drawn on a "nines" axis, i.e. position = -log10(1 - q), with tick labels
/// 0%, 90%, 99%, 99.9%, 99.99%, 99.999% (only as many as the data reaches, at least up to
/// 99.9%); y = latency in milliseconds on a log10 axis. Several series (e.g. "produce",
/// "end-to-end", or two brokers in a comparison) share the axes.
pub fn distribution(title: &str, series: &[Series]) -> String {
    let reach = series
        .iter()
        .flat_map(usable_points)
        .map(|(q, _)| nines(q))
        .fold(None, |acc: Option<f64>, p| {
            Some(acc.map_or(p, |a| a.max(p)))
        });
    let x = nines_axis(reach);
    let y = log_axis(series.iter().flat_map(usable_points).map(|(_, y)| y));
    let lines = lines(series, nines, &y);
    render(&Chart {
        title,
        x_label: "percentile",
        y_label: "latency (ms)",
        x,
        y,
        lines,
    })
}

/// A series' points that can be placed at all: NaN or infinite coordinates have no position,
/// so they are skipped rather than poisoning axis ranges or the SVG.
fn usable_points(series: &Series) -> impl Iterator<Item = (f64, f64)> + '_ {
    series
        .points
        .iter()
        .copied()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
}

/// The nines transform: 0 -> 0, 0.9 -> 1, 0.99 -> 2, ... so each extra nine of the tail gets
/// as much room as the whole body. Quantiles outside [0, MAX_QUANTILE] are clamped into it.
fn nines(q: f64) -> f64 {
    -(1.0 - q.clamp(0.0, MAX_QUANTILE)).log10()
}

/// A latency in axis space (log10 ms), clamped into the axis so that zero or negative
/// latencies (no log) sit on the bottom edge instead of vanishing.
/// Each series as a line: x positions through `x`, latencies on the log axis `y`.
fn lines<'a>(series: &'a [Series], x: impl Fn(f64) -> f64, y: &Axis) -> Vec<Line<'a>> {
    series
        .iter()
        .map(|s| Line {
            name: &s.name,
            points: usable_points(s)
                .map(|(px, ms)| (x(px), log_position(ms, y)))
                .collect(),
        })
        .collect()
}

fn log_position(ms: f64, axis: &Axis) -> f64 {
    if ms > 0.0 {
        ms.log10().clamp(axis.lo, axis.hi)
    } else {
        axis.lo
    }
}

/// One labelled tick, at a position in axis space.
struct Tick {
    at: f64,
    label: String,
}

/// An axis in its own linear "axis space" (e.g. log10 ms), covering `lo..=hi`.
struct Axis {
    lo: f64,
    hi: f64,
    ticks: Vec<Tick>,
    /// Unlabelled positions for faint grid lines (a log axis' 2..9 multiples).
    minor: Vec<f64>,
}

impl Axis {
    /// Where `v` falls between `lo` (0) and `hi` (1), clamped so stray values stay inside the
    /// plot; a degenerate axis maps everything to 0 rather than NaN.
    fn fraction(&self, v: f64) -> f64 {
        let f = (v - self.lo) / (self.hi - self.lo);
        if f.is_finite() {
            f.clamp(0.0, 1.0)
        } else {
            0.0
        }
    }

    /// Horizontal pixel of `v` when this is the x axis.
    fn x_px(&self, v: f64) -> f64 {
        PLOT_LEFT + self.fraction(v) * (PLOT_RIGHT - PLOT_LEFT)
    }

    /// Vertical pixel of `v` when this is the y axis: SVG y grows downwards, so larger values
    /// get smaller coordinates.
    fn y_px(&self, v: f64) -> f64 {
        PLOT_BOTTOM - self.fraction(v) * (PLOT_BOTTOM - PLOT_TOP)
    }
}

/// The smallest and largest finite values, or `None` if there are none.
fn finite_range(values: impl IntoIterator<Item = f64>) -> Option<(f64, f64)> {
    values
        .into_iter()
        .filter(|v| v.is_finite())
        .fold(None, |acc, v| match acc {
            None => Some((v, v)),
            Some((lo, hi)) => Some((v.min(lo), v.max(hi))),
        })
}

/// A linear axis from 0 (or the smallest value, if negative) to the largest value, rounded
/// out to "nice" ticks so labels read 0, 10, 20 rather than 0, 13.7, 27.4. Time since the
/// measured phase began is naturally read from zero, and including zero also means a run of
/// all-equal (or single) x values still has a usable span.
fn linear_axis(values: impl IntoIterator<Item = f64>) -> Axis {
    let (min, max) = finite_range(values).unwrap_or((0.0, 0.0));
    let (lo, hi) = (min.min(0.0), max.max(0.0));
    let span = hi - lo;
    if span.is_finite() && span >= MIN_LINEAR_SPAN {
        nice_linear(lo, hi)
    } else {
        nice_linear(0.0, 1.0)
    }
}

/// Ticks every 1, 2 or 5 × 10^k covering `lo..=hi`; the caller guarantees a finite, positive
/// span.
fn nice_linear(lo: f64, hi: f64) -> Axis {
    let (step, exponent) = nice_step((hi - lo) / TARGET_INTERVALS);
    let first = (lo / step).floor();
    let intervals = ((hi / step).ceil() - first).clamp(1.0, MAX_LINEAR_INTERVALS);
    // Whole multiples of the step avoid accumulating error; the decimals shown are those
    // the step needs (0.5 -> one decimal), and `+ 0.0` turns -0 into 0 for the label.
    let decimals = usize::try_from(-exponent).unwrap_or(0);
    let ticks = (0..=intervals as usize)
        .map(|i| {
            let at = (first + i as f64) * step;
            Tick {
                at,
                label: format!("{:.*}", decimals, at + 0.0),
            }
        })
        .collect();
    Axis {
        lo: first * step,
        hi: (first + intervals) * step,
        ticks,
        minor: Vec::new(),
    }
}

/// The smallest 1, 2 or 5 × 10^k step at least `raw`, with its exponent k (raw must be
/// positive and finite).
fn nice_step(raw: f64) -> (f64, i32) {
    let exponent = raw.log10().floor() as i32;
    let base = 10f64.powi(exponent);
    for mantissa in [1.0, 2.0, 5.0] {
        // The slack keeps a raw step of exactly 2 × 10^k from being bumped to 5 × 10^k by
        // rounding in log10/powi.
        if mantissa * base >= raw * (1.0 - 1e-9) {
            return (mantissa * base, exponent);
        }
    }
    (10f64.powi(exponent + 1), exponent + 1)
}

/// A log10 axis over whole decades enclosing the positive values (ticks at powers of ten),
/// so a reader can compare orders of magnitude at a glance.
fn log_axis(values: impl IntoIterator<Item = f64>) -> Axis {
    let positive = values.into_iter().filter(|v| *v > 0.0);
    let (lo, hi) = match finite_range(positive) {
        Some((min, max)) => decade_range(min, max),
        None => DEFAULT_DECADES,
    };
    let ticks = (lo..=hi)
        .map(|e| Tick {
            at: f64::from(e),
            label: decade_label(e),
        })
        .collect();
    let minor = if hi - lo <= MINOR_GRID_MAX_DECADES {
        (lo..hi)
            .flat_map(|e| (2..=9).map(move |m| f64::from(e) + f64::from(m).log10()))
            .collect()
    } else {
        Vec::new()
    };
    Axis {
        lo: f64::from(lo),
        hi: f64::from(hi),
        ticks,
        minor,
    }
}

/// The decade exponents enclosing `min..=max` (both positive), at least one decade apart and
/// kept within MIN_DECADE..=MAX_DECADE.
fn decade_range(min: f64, max: f64) -> (i32, i32) {
    let clamp = |e: f64| (e as i32).clamp(MIN_DECADE, MAX_DECADE);
    let lo = clamp((min.log10() + DECADE_SLACK).floor());
    let hi = clamp((max.log10() - DECADE_SLACK).ceil());
    if hi > lo {
        (lo, hi)
    } else if lo < MAX_DECADE {
        (lo, lo + 1)
    } else {
        (lo - 1, lo)
    }
}

/// "0.01", "0.1", "1", "10", "100": built from digits rather than float formatting, which
/// would print 1e-5 as "0.000009999999999999999" at some precisions.
fn decade_label(exponent: i32) -> String {
    let zeros = exponent.unsigned_abs() as usize;
    if exponent >= 0 {
        format!("1{}", "0".repeat(zeros))
    } else {
        format!("0.{}1", "0".repeat(zeros - 1))
    }
}

/// A nines axis from 0% to the deepest nine the data reaches (at least 99.9%).
fn nines_axis(reach: Option<f64>) -> Axis {
    let reached = reach.map_or(0, |p| (p - DECADE_SLACK).ceil() as i32);
    let top = reached.clamp(MIN_NINES, MAX_NINES);
    let ticks = (0..=top)
        .map(|n| Tick {
            at: f64::from(n),
            label: nines_label(n),
        })
        .collect();
    Axis {
        lo: 0.0,
        hi: f64::from(top),
        ticks,
        minor: Vec::new(),
    }
}

/// "0%", "90%", "99%", "99.9%", ... for n nines.
fn nines_label(n: i32) -> String {
    match n {
        ..=0 => "0%".to_string(),
        1 => "90%".to_string(),
        2 => "99%".to_string(),
        _ => format!("99.{}%", "9".repeat((n - 2).unsigned_abs() as usize)),
    }
}

/// One series mapped into axis space, ready to scale to pixels.
struct Line<'a> {
    name: &'a str,
    points: Vec<(f64, f64)>,
}

/// Everything the renderer needs, already in axis space.
struct Chart<'a> {
    title: &'a str,
    x_label: &'a str,
    y_label: &'a str,
    x: Axis,
    y: Axis,
    lines: Vec<Line<'a>>,
}

/// The whole SVG document, drawn back to front: background, grid, frame, labels, lines,
/// legend.
fn render(chart: &Chart) -> String {
    let mut out = String::with_capacity(16 * 1024);
    out.push_str(&format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"{WIDTH}\" \
         height=\"{HEIGHT}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" font-family=\"sans-serif\" \
         font-size=\"12\">\n"
    ));
    // The document title names the browser tab.
    out.push_str(&format!("<title>{}</title>\n", escape(chart.title)));
    out.push_str(&format!(
        "<rect x=\"0\" y=\"0\" width=\"{WIDTH}\" height=\"{HEIGHT}\" fill=\"white\"/>\n"
    ));
    draw_grid(&mut out, chart);
    out.push_str(&format!(
        "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#333\"/>\n",
        px(PLOT_LEFT),
        px(PLOT_TOP),
        px(PLOT_RIGHT - PLOT_LEFT),
        px(PLOT_BOTTOM - PLOT_TOP)
    ));
    draw_tick_labels(&mut out, chart);
    draw_labels(&mut out, chart);
    for (index, line) in chart.lines.iter().enumerate() {
        draw_line(&mut out, index, line, chart);
    }
    draw_legend(&mut out, &chart.lines);
    if chart.lines.iter().all(|l| l.points.is_empty()) {
        out.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"#888\" \
             font-size=\"16\">no data</text>\n",
            px((PLOT_LEFT + PLOT_RIGHT) / 2.0),
            px((PLOT_TOP + PLOT_BOTTOM) / 2.0)
        ));
    }
    out.push_str("</svg>");
    out
}

/// Grid lines at every tick (and faint ones at minor positions) so values can be read off.
fn draw_grid(out: &mut String, chart: &Chart) {
    out.push_str("<g stroke=\"#eee\" stroke-width=\"1\">\n");
    for &at in &chart.y.minor {
        horizontal_line(out, chart.y.y_px(at));
    }
    out.push_str("</g>\n<g stroke=\"#ccc\" stroke-width=\"1\">\n");
    for tick in &chart.x.ticks {
        let x = px(chart.x.x_px(tick.at));
        out.push_str(&format!(
            "<line x1=\"{x}\" y1=\"{}\" x2=\"{x}\" y2=\"{}\"/>\n",
            px(PLOT_TOP),
            px(PLOT_BOTTOM)
        ));
    }
    for tick in &chart.y.ticks {
        horizontal_line(out, chart.y.y_px(tick.at));
    }
    out.push_str("</g>\n");
}

/// A grid line across the plot at pixel height `y`.
fn horizontal_line(out: &mut String, y: f64) {
    let y = px(y);
    out.push_str(&format!(
        "<line x1=\"{}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\"/>\n",
        px(PLOT_LEFT),
        px(PLOT_RIGHT)
    ));
}

/// Numbers under the x axis and left of the y axis.
fn draw_tick_labels(out: &mut String, chart: &Chart) {
    out.push_str("<g fill=\"#333\" font-size=\"11\">\n");
    for tick in &chart.x.ticks {
        out.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
            px(chart.x.x_px(tick.at)),
            px(PLOT_BOTTOM + 16.0),
            escape(&tick.label)
        ));
    }
    for tick in &chart.y.ticks {
        out.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\n",
            px(PLOT_LEFT - 6.0),
            px(chart.y.y_px(tick.at) + 4.0),
            escape(&tick.label)
        ));
    }
    out.push_str("</g>\n");
}

/// Title above the plot, x label below it, y label turned up the left edge.
fn draw_labels(out: &mut String, chart: &Chart) {
    let centre_x = px((PLOT_LEFT + PLOT_RIGHT) / 2.0);
    let centre_y = px((PLOT_TOP + PLOT_BOTTOM) / 2.0);
    out.push_str(&format!(
        "<text x=\"{centre_x}\" y=\"{}\" text-anchor=\"middle\" font-size=\"18\" \
         font-weight=\"bold\">{}</text>\n",
        px(PLOT_TOP - 20.0),
        escape(chart.title)
    ));
    out.push_str(&format!(
        "<text x=\"{centre_x}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
        px(PLOT_BOTTOM + 40.0),
        escape(chart.x_label)
    ));
    out.push_str(&format!(
        "<text transform=\"translate({} {centre_y}) rotate(-90)\" \
         text-anchor=\"middle\">{}</text>\n",
        px(PLOT_LEFT - 55.0),
        escape(chart.y_label)
    ));
}

/// Colour and dash pattern of the series at `index`.
fn style(index: usize) -> (&'static str, &'static str) {
    let colour = PALETTE[index % PALETTE.len()];
    let dash = DASHES[(index / PALETTE.len()) % DASHES.len()];
    (colour, dash)
}

/// ` stroke-dasharray="…"` for dashed styles, nothing for solid ones.
fn dash_attribute(dash: &str) -> String {
    if dash.is_empty() {
        String::new()
    } else {
        format!(" stroke-dasharray=\"{dash}\"")
    }
}

/// A series as a polyline, or as a dot when it has only one distinct pixel position (a
/// one-point polyline is invisible).
fn draw_line(out: &mut String, index: usize, line: &Line, chart: &Chart) {
    let (colour, dash) = style(index);
    // Consecutive points on the same pixel add bytes but nothing visible.
    let mut coords: Vec<String> = Vec::with_capacity(line.points.len());
    for &(x, y) in &line.points {
        let coord = format!("{},{}", px(chart.x.x_px(x)), px(chart.y.y_px(y)));
        if coords.last() != Some(&coord) {
            coords.push(coord);
        }
    }
    match coords.as_slice() {
        [] => {}
        [only] => {
            let (cx, cy) = only.split_once(',').unwrap_or(("0", "0"));
            out.push_str(&format!(
                "<circle cx=\"{cx}\" cy=\"{cy}\" r=\"3\" fill=\"{colour}\"/>\n"
            ));
        }
        _ => out.push_str(&format!(
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" \
             stroke-linejoin=\"round\"{} points=\"{}\"/>\n",
            dash_attribute(dash),
            coords.join(" ")
        )),
    }
}

/// Series names beside the plot, each with a sample of its line; rows that would run off
/// the canvas are summarised as "+N more".
fn draw_legend(out: &mut String, lines: &[Line]) {
    let rows = ((PLOT_BOTTOM - PLOT_TOP) / LEGEND_ROW) as usize;
    let shown = if lines.len() > rows {
        rows.saturating_sub(1)
    } else {
        lines.len()
    };
    for (index, line) in lines.iter().enumerate().take(shown) {
        let (colour, dash) = style(index);
        let y = PLOT_TOP + 10.0 + index as f64 * LEGEND_ROW;
        out.push_str(&format!(
            "<g><title>{}</title><line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" \
             stroke=\"{colour}\" stroke-width=\"2\"{}/><text x=\"{}\" y=\"{}\">{}</text></g>\n",
            escape(line.name),
            px(LEGEND_LEFT),
            px(y),
            px(LEGEND_LEFT + 24.0),
            px(y),
            dash_attribute(dash),
            px(LEGEND_LEFT + 30.0),
            px(y + 4.0),
            escape(&shorten(line.name))
        ));
    }
    if shown < lines.len() {
        out.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" fill=\"#555\">+{} more</text>\n",
            px(LEGEND_LEFT),
            px(PLOT_TOP + 14.0 + shown as f64 * LEGEND_ROW),
            lines.len() - shown
        ));
    }
}

/// `name` cut to the legend's width, by characters so multi-byte text is never split.
fn shorten(name: &str) -> String {
    if name.chars().count() <= LEGEND_NAME_CHARS {
        name.to_string()
    } else {
        let mut short: String = name.chars().take(LEGEND_NAME_CHARS - 1).collect();
        short.push('…');
        short
    }
}

/// A pixel coordinate with one decimal (plenty at this size); anything non-finite, which the
/// clamping above should make impossible, becomes 0 rather than corrupting the file.
fn px(v: f64) -> String {
    let v = if v.is_finite() { v } else { 0.0 };
    format!("{:.1}", v + 0.0)
}

/// Text safe inside XML elements and double-quoted attributes: markup characters become
/// entities, line breaks become spaces (labels are one line) and characters XML 1.0 forbids
/// (other control characters, U+FFFE/U+FFFF) become U+FFFD.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(' '),
            '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}' => {
                out.push(c)
            }
            _ => out.push('\u{FFFD}'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks the subset of XML this module emits, strictly enough to catch real mistakes:
    /// one root `<svg>` element spanning the whole document, properly nested and closed
    /// tags, `name="value"` attributes without duplicates or raw `<`, and every `&` starting a
    /// known entity.
    fn assert_well_formed(svg: &str) {
        assert!(svg.starts_with("<svg"), "must start with <svg: {svg:.40}");
        assert!(svg.ends_with("</svg>"), "must end with </svg>");
        let mut stack: Vec<String> = Vec::new();
        let mut rest = svg;
        let mut first = true;
        while let Some(open) = rest.find('<') {
            assert_text(&rest[..open]);
            assert!(
                first || !stack.is_empty(),
                "content after the root element: {rest:.60}"
            );
            first = false;
            let after = &rest[open + 1..];
            let end = tag_end(after);
            let tag = &after[..end];
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(stack.pop().as_deref(), Some(name), "mismatched </{name}>");
            } else {
                let (name, self_closing) = parse_start_tag(tag);
                if !self_closing {
                    stack.push(name);
                }
            }
            rest = &after[end + 1..];
        }
        assert!(rest.is_empty(), "trailing text: {rest:?}");
        assert!(stack.is_empty(), "unclosed elements: {stack:?}");
    }

    /// Index of the `>` ending the tag at the start of `s`, skipping quoted attribute values.
    fn tag_end(s: &str) -> usize {
        let mut quoted = false;
        for (i, c) in s.char_indices() {
            match c {
                '"' => quoted = !quoted,
                '>' if !quoted => return i,
                '<' => panic!("raw < inside a tag: {s:.60}"),
                _ => {}
            }
        }
        panic!("unterminated tag: {s:.60}");
    }

    /// Element name and whether it is self-closing; asserts attribute syntax.
    fn parse_start_tag(tag: &str) -> (String, bool) {
        let (body, self_closing) = match tag.strip_suffix('/') {
            Some(body) => (body, true),
            None => (tag, false),
        };
        let name_end = body.find(char::is_whitespace).unwrap_or(body.len());
        let name = &body[..name_end];
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric()),
            "bad element name {name:?}"
        );
        let mut seen: Vec<&str> = Vec::new();
        let mut attrs = body[name_end..].trim_start();
        while !attrs.is_empty() {
            let eq = attrs.find('=').expect("attribute without =");
            let attr = &attrs[..eq];
            assert!(
                !attr.is_empty()
                    && attr
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ':'),
                "bad attribute name {attr:?} in <{name}>"
            );
            assert!(
                !seen.contains(&attr),
                "duplicate attribute {attr} in <{name}>"
            );
            seen.push(attr);
            let value = attrs[eq + 1..]
                .strip_prefix('"')
                .expect("unquoted attribute");
            let close = value.find('"').expect("unterminated attribute value");
            assert_text(&value[..close]);
            attrs = value[close + 1..].trim_start();
        }
        (name.to_string(), self_closing)
    }

    /// Character data: no raw markup, every `&` an entity.
    fn assert_text(text: &str) {
        assert!(
            !text.contains('<') && !text.contains('>'),
            "raw markup in {text:?}"
        );
        for (i, _) in text.match_indices('&') {
            let entity = &text[i..];
            assert!(
                ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"]
                    .iter()
                    .any(|e| entity.starts_with(e)),
                "bare & in {text:?}"
            );
        }
    }

    /// Well-formed and free of non-finite numbers.
    fn assert_sane(svg: &str) {
        assert_well_formed(svg);
        assert!(!svg.contains("NaN"), "NaN in output");
        assert!(!svg.contains("inf"), "inf in output");
    }

    /// The pixel coordinates of every polyline, in document order.
    fn polylines(svg: &str) -> Vec<Vec<(f64, f64)>> {
        svg.split("<polyline")
            .skip(1)
            .map(|rest| {
                let start = rest.find("points=\"").expect("points") + "points=\"".len();
                let end = start + rest[start..].find('"').expect("end of points");
                rest[start..end]
                    .split(' ')
                    .map(|pair| {
                        let (x, y) = pair.split_once(',').expect("x,y");
                        (x.parse().expect("x"), y.parse().expect("y"))
                    })
                    .collect()
            })
            .collect()
    }

    fn series(name: &str, points: &[(f64, f64)]) -> Series {
        Series {
            name: name.to_string(),
            points: points.to_vec(),
        }
    }

    fn labels(axis: &Axis) -> Vec<&str> {
        axis.ticks.iter().map(|t| t.label.as_str()).collect()
    }

    /// Every degenerate input the charts promise to survive.
    fn degenerate_inputs() -> Vec<Vec<Series>> {
        vec![
            vec![],
            vec![series("empty", &[])],
            vec![series("one", &[(1.0, 5.0)])],
            vec![series("one at zero", &[(0.0, 0.0)])],
            vec![series("flat", &[(1.0, 2.0), (2.0, 2.0), (3.0, 2.0)])],
            vec![series("same x", &[(4.0, 1.0), (4.0, 3.0)])],
            vec![series("zero and negative", &[(0.0, 0.0), (1.0, -3.0)])],
            vec![series(
                "nan and unbounded",
                &[
                    (f64::NAN, 1.0),
                    (1.0, f64::NAN),
                    (f64::INFINITY, 1.0),
                    (2.0, f64::INFINITY),
                    (3.0, f64::NEG_INFINITY),
                ],
            )],
            vec![series("only nan", &[(f64::NAN, f64::NAN)])],
            vec![series("extreme", &[(-1e308, 1e-300), (1e308, 1e300)])],
            vec![series("subnormal", &[(1e-320, 5e-324), (2e-320, 1e-310)])],
            vec![series(
                "quantiles out of range",
                &[(-0.5, 1.0), (1.0, 2.0), (7.0, 3.0)],
            )],
            vec![series("empty", &[]), series("one", &[(0.5, 1.0)])],
        ]
    }

    #[test]
    fn degenerate_inputs_give_sane_svg() {
        for input in degenerate_inputs() {
            assert_sane(&over_time("t", "latency (ms)", &input));
            assert_sane(&distribution("t", &input));
        }
    }

    #[test]
    fn normal_charts_are_well_formed() {
        let data = [
            series("p50", &[(0.0, 0.8), (1.0, 0.9), (2.0, 1.1)]),
            series("p99", &[(0.0, 3.0), (1.0, 4.5), (2.0, 12.0)]),
        ];
        let svg = over_time("Produce latency", "latency (ms)", &data);
        assert_sane(&svg);
        assert!(svg.contains("width=\"900\" height=\"500\" viewBox=\"0 0 900 500\""));
        assert_eq!(polylines(&svg).len(), 2);
        assert!(
            svg.contains("#1f77b4") && svg.contains("#ff7f0e"),
            "distinct colours"
        );
        assert!(!svg.contains(">no data<"));
    }

    #[test]
    fn empty_chart_says_no_data() {
        assert!(over_time("t", "y", &[]).contains(">no data</text>"));
        assert!(distribution("t", &[series("a", &[(f64::NAN, 1.0)])]).contains(">no data<"));
    }

    #[test]
    fn text_is_escaped() {
        let name = "a<b> & \"c\" 'd'";
        let svg = over_time(name, name, &[series(name, &[(0.0, 1.0), (1.0, 2.0)])]);
        assert_well_formed(&svg);
        assert!(!svg.contains(name));
        assert!(svg.contains("a&lt;b&gt; &amp; &quot;c&quot; &apos;d&apos;"));
        let svg = distribution(name, &[series(name, &[(0.5, 1.0)])]);
        assert_well_formed(&svg);
        assert!(!svg.contains("a<b"));
    }

    #[test]
    fn control_characters_do_not_break_xml() {
        assert_eq!(
            escape("a\u{0}b\u{1b}\nc\u{FFFF}"),
            "a\u{FFFD}b\u{FFFD} c\u{FFFD}"
        );
    }

    #[test]
    fn long_names_are_shortened_on_char_boundaries() {
        let name = "é".repeat(40);
        let short = shorten(&name);
        assert_eq!(short.chars().count(), LEGEND_NAME_CHARS);
        assert!(short.ends_with('…'));
        let svg = over_time("t", "y", &[series(&name, &[(0.0, 1.0)])]);
        assert!(
            svg.contains(&format!("<title>{name}</title>")),
            "full name in tooltip"
        );
    }

    #[test]
    fn nines_transform_spaces_each_nine_equally() {
        assert!((nines(0.9) - 1.0).abs() < 1e-9);
        assert!((nines(0.99) - 2.0).abs() < 1e-9);
        assert!((nines(0.999) - 3.0).abs() < 1e-9);
        assert_eq!(nines(0.0), 0.0);
        assert!((nines(1.0) - 6.0).abs() < 1e-6, "clamped to 0.999999");
        assert!(nines(-1.0).abs() < 1e-12, "negative quantiles clamp to 0");

        let axis = nines_axis(Some(3.0));
        let at = |q: f64| axis.x_px(nines(q));
        let (zero, ninety, ninety_nine) = (at(0.0), at(0.9), at(0.99));
        assert!(ninety > zero);
        assert!(((ninety_nine - zero) - 2.0 * (ninety - zero)).abs() < 1e-9);
    }

    #[test]
    fn nines_transform_in_rendered_distribution() {
        let svg = distribution("d", &[series("s", &[(0.0, 1.0), (0.9, 2.0), (0.99, 3.0)])]);
        let line = &polylines(&svg)[0];
        let (zero, ninety, ninety_nine) = (line[0].0, line[1].0, line[2].0);
        assert!(((ninety_nine - zero) - 2.0 * (ninety - zero)).abs() < 0.2);
    }

    #[test]
    fn nines_axis_reaches_as_deep_as_the_data_and_at_least_three_nines() {
        let expected = ["0%", "90%", "99%", "99.9%"];
        assert_eq!(labels(&nines_axis(None)), expected);
        assert_eq!(labels(&nines_axis(Some(nines(0.5)))), expected);
        assert_eq!(labels(&nines_axis(Some(nines(0.999)))), expected);
        assert_eq!(
            labels(&nines_axis(Some(nines(0.99999)))),
            ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"]
        );
        assert_eq!(labels(&nines_axis(Some(nines(0.9999)))).len(), 5);
        assert_eq!(
            labels(&nines_axis(Some(nines(1.0)))).last(),
            Some(&"99.9999%")
        );
    }

    #[test]
    fn log_ticks_cover_the_data_in_whole_decades() {
        let axis = log_axis([0.3, 2.0, 45.0]);
        assert_eq!(labels(&axis), ["0.1", "1", "10", "100"]);
        let svg = over_time("t", "y", &[series("s", &[(0.0, 0.3), (1.0, 45.0)])]);
        for label in ["0.1", "1", "10", "100"] {
            assert!(
                svg.contains(&format!(">{label}</text>")),
                "missing tick {label}"
            );
        }
        assert!(!svg.contains(">1000</text>") && !svg.contains(">0.01</text>"));
    }

    #[test]
    fn exact_powers_of_ten_do_not_add_a_decade() {
        assert_eq!(labels(&log_axis([1.0, 1000.0])), ["1", "10", "100", "1000"]);
        assert_eq!(labels(&log_axis([0.001, 0.01])), ["0.001", "0.01"]);
        assert_eq!(labels(&log_axis([5.0])), ["1", "10"]);
        assert_eq!(labels(&log_axis([10.0, 10.0])), ["10", "100"]);
        assert_eq!(labels(&log_axis([0.0, -1.0])), ["0.1", "1", "10"]);
        assert_eq!(log_axis([1e-300, 1e300]).ticks.len(), 16, "clamped decades");
    }

    #[test]
    fn linear_ticks_are_nice_and_cover_the_data() {
        for max in [0.004, 0.7, 1.0, 7.0, 13.0, 60.0, 99.0, 250.0, 3600.0, 1e6] {
            let axis = linear_axis([0.0, max]);
            let count = axis.ticks.len();
            assert!((5..=11).contains(&count), "{count} ticks for max {max}");
            assert!(axis.hi >= max && axis.lo <= 0.0);
            let step = axis.ticks[1].at - axis.ticks[0].at;
            let mantissa = step / 10f64.powi(step.log10().floor() as i32);
            assert!(
                [1.0, 2.0, 5.0].iter().any(|m| (mantissa - m).abs() < 1e-6),
                "step {step} for max {max}"
            );
        }
        assert_eq!(
            labels(&linear_axis([0.0, 60.0])),
            ["0", "10", "20", "30", "40", "50", "60"]
        );
        assert_eq!(labels(&linear_axis([1.5]))[..3], ["0.0", "0.2", "0.4"]);
        assert_eq!(labels(&linear_axis([-12.0, 30.0]))[0], "-20");
    }

    #[test]
    fn larger_latency_is_drawn_higher() {
        let svg = over_time("t", "y", &[series("s", &[(0.0, 1.0), (10.0, 100.0)])]);
        let line = &polylines(&svg)[0];
        assert!(line[1].1 < line[0].1, "{line:?}");
        assert!(line[1].0 > line[0].0, "later time drawn further right");

        let svg = distribution("d", &[series("s", &[(0.5, 2.0), (0.999, 30.0)])]);
        let line = &polylines(&svg)[0];
        assert!(line[1].1 < line[0].1, "{line:?}");
    }

    #[test]
    fn non_positive_latency_sits_on_the_axis_minimum() {
        let svg = over_time(
            "t",
            "y",
            &[series("s", &[(0.0, 0.0), (1.0, -5.0), (2.0, 3.0)])],
        );
        let line = &polylines(&svg)[0];
        assert_eq!(line[0].1, PLOT_BOTTOM);
        assert_eq!(line[1].1, PLOT_BOTTOM);
        assert!(line[2].1 < PLOT_BOTTOM);
    }

    #[test]
    fn single_point_is_drawn_as_a_dot() {
        let svg = over_time("t", "y", &[series("s", &[(3.0, 2.0)])]);
        assert!(svg.contains("<circle"));
        assert!(polylines(&svg).is_empty());
    }

    #[test]
    fn nan_points_are_skipped_not_drawn() {
        let svg = over_time(
            "t",
            "y",
            &[series("s", &[(0.0, 1.0), (1.0, f64::NAN), (2.0, 4.0)])],
        );
        assert_eq!(polylines(&svg)[0].len(), 2);
    }

    #[test]
    fn many_series_cycle_styles_and_fit_the_legend() {
        let many: Vec<Series> = (0..40)
            .map(|i| series(&format!("s{i}"), &[(0.0, 1.0), (1.0, f64::from(i) + 1.0)]))
            .collect();
        let svg = over_time("t", "y", &many);
        assert_sane(&svg);
        assert_eq!(polylines(&svg).len(), 40);
        assert!(
            svg.contains("stroke-dasharray=\"7 3\""),
            "second palette cycle dashed"
        );
        assert!(svg.contains("more</text>"), "overflowing legend summarised");
        assert_ne!(style(0), style(8));
    }
}
