//! The report's pictures, drawn server-side as inline SVG (docs/report.md): the rejection rate
//! per namespace over the last hour, and iptables rules against service ports per namespace.
//! Each chart has a `<title>`, a `<desc>` saying in words what it shows, axis labels and a
//! legend, so it reads without the picture too.
//!
//! Geometry is plain arithmetic on a fixed frame ([`Frame`]), unit-tested against coordinates
//! worked out by hand. It must not load anything (no fonts, scripts or images from elsewhere)
//! and every text it draws goes through [`esc`].

use std::fmt::Write as _;

use ipvsmig_engine::report::{Sample, Summary, history};

use super::esc;

/// Okabe–Ito colours (distinguishable with the common colour-vision deficiencies).
const PALETTE: [&str; 8] = [
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442",
];
/// Namespaces drawn at most per chart; the `<desc>` names how many were left out.
pub const MAX_SERIES: usize = 8;
/// Namespaces in the rules chart (the largest by rules).
pub const MAX_BARS: usize = 15;

/// A chart's drawing area: the SVG is `width`×`height`, the plot inside the margins.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Frame {
    /// SVG width.
    pub width: f64,
    /// SVG height.
    pub height: f64,
    /// Left margin (y-axis labels).
    pub left: f64,
    /// Right margin.
    pub right: f64,
    /// Top margin.
    pub top: f64,
    /// Bottom margin (x-axis labels).
    pub bottom: f64,
}

impl Frame {
    /// The line chart's frame.
    pub const LINE: Frame = Frame {
        width: 640.0,
        height: 260.0,
        left: 56.0,
        right: 16.0,
        top: 16.0,
        bottom: 40.0,
    };

    /// `v` in `[lo, hi]` → x pixel (left edge of the plot at `lo`).
    pub fn x(&self, v: f64, lo: f64, hi: f64) -> f64 {
        let span = if hi > lo { hi - lo } else { 1.0 };
        self.left + (v - lo) / span * (self.width - self.left - self.right)
    }

    /// `v` in `[0, max]` → y pixel (the plot's bottom at 0).
    pub fn y(&self, v: f64, max: f64) -> f64 {
        let max = if max > 0.0 { max } else { 1.0 };
        let bottom = self.height - self.bottom;
        bottom - v / max * (bottom - self.top)
    }
}

/// The smallest 1, 2 or 5 × 10^k at or above `v` (an axis maximum people can read); 1 for 0.
pub fn nice_max(v: f64) -> f64 {
    if v.is_nan() || v <= 0.0 {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|m| *m >= v * (1.0 - 1e-12))
        .unwrap_or(10.0 * mag)
}

/// Formats an axis or value number without trailing zeros.
fn num(v: f64) -> String {
    if v >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

/// One namespace's rejection rates `(unix seconds, per second)`.
pub struct Series<'a> {
    /// The namespace.
    pub namespace: &'a str,
    /// Its points.
    pub points: Vec<(u64, f64)>,
}

/// The series of the report's rejection history, the [`MAX_SERIES`] with the highest peak
/// first, then by name; and how many were left out.
pub fn rejection_series<'a>(
    rejections: &'a std::collections::BTreeMap<String, Vec<Sample>>,
) -> (Vec<Series<'a>>, usize) {
    let mut all: Vec<Series<'a>> = rejections
        .iter()
        .map(|(ns, s)| Series {
            namespace: ns,
            points: history::rates(s),
        })
        .collect();
    let peak = |s: &Series<'_>| s.points.iter().map(|p| p.1).fold(0.0, f64::max);
    all.sort_by(|a, b| {
        peak(b)
            .total_cmp(&peak(a))
            .then(a.namespace.cmp(b.namespace))
    });
    let left_out = all.len().saturating_sub(MAX_SERIES);
    all.truncate(MAX_SERIES);
    (all, left_out)
}

/// The polyline's `points` attribute for `points` on `frame` over `[t0, t1]` and `[0, max]`.
pub fn polyline(frame: &Frame, points: &[(u64, f64)], t0: u64, t1: u64, max: f64) -> String {
    let mut out = String::new();
    for (t, v) in points.iter().filter(|(t, _)| *t >= t0 && *t <= t1) {
        if !out.is_empty() {
            out.push(' ');
        }
        let _ = write!(
            out,
            "{},{}",
            num1(frame.x(*t as f64, t0 as f64, t1 as f64)),
            num1(frame.y(*v, max))
        );
    }
    out
}

/// A pixel coordinate with one decimal at most.
fn num1(v: f64) -> String {
    let r = (v * 10.0).round() / 10.0;
    if r.fract() == 0.0 {
        format!("{r:.0}")
    } else {
        format!("{r:.1}")
    }
}

/// The shortest time axis, seconds: a history of a few samples still spreads out.
pub const MIN_SPAN: u64 = 120;

/// The start of the time axis: the last hour, or less when the history is younger (it
/// starts empty with the daemon), but at least [`MIN_SPAN`].
pub fn axis_start(series: &[Series<'_>], now: u64) -> u64 {
    let first = series
        .iter()
        .filter_map(|s| s.points.first().map(|p| p.0))
        .min()
        .unwrap_or(now);
    let span = now.saturating_sub(first).clamp(MIN_SPAN, history::WINDOW);
    now.saturating_sub(span)
}

/// "−2 min", "−90 s", "now".
fn age(secs: u64) -> String {
    match secs {
        0 => "now".to_owned(),
        s if s % 60 == 0 => format!("−{} min", s / 60),
        s => format!("−{s} s"),
    }
}

/// The span in words: "hour", or "5m0s".
fn span_words(span: u64) -> String {
    if span >= history::WINDOW {
        "hour".to_owned()
    } else {
        crate::migrate::human(span)
    }
}

/// The rejection-rate chart over [`axis_start`]`..now`.
pub fn rejection_chart(series: &[Series<'_>], left_out: usize, now: u64) -> String {
    let f = Frame::LINE;
    let t0 = axis_start(series, now);
    let span = now - t0;
    let peak = series
        .iter()
        .flat_map(|s| s.points.iter().filter(|p| p.0 >= t0).map(|p| p.1))
        .fold(0.0, f64::max);
    let max = nice_max(peak);
    let legend_rows = series.len().div_ceil(4).max(1);
    let height = f.height + 20.0 * legend_rows as f64;
    let mut desc = if series.is_empty() {
        "No probe samples in the last hour: no namespace is being probed, or the daemon started recently (its history is kept in memory and restarts empty).".to_owned()
    } else {
        format!(
            "Rejected probes per second over the last {} for {}; the highest rate is {}/s.",
            span_words(span),
            series
                .iter()
                .map(|s| s.namespace)
                .collect::<Vec<_>>()
                .join(", "),
            num(peak)
        )
    };
    if left_out > 0 {
        let _ = write!(
            desc,
            " {left_out} namespace(s) with lower rates are not drawn."
        );
    }
    let mut o = String::new();
    let _ = write!(
        o,
        r##"<svg class="chart" id="chart-rejections" role="img" aria-labelledby="chart-rejections-title chart-rejections-desc" viewBox="0 0 {w} {height}" width="{w}" height="{height}"><title id="chart-rejections-title">Rejection rate per namespace, last hour</title><desc id="chart-rejections-desc">{d}</desc>"##,
        w = f.width,
        d = esc(&desc)
    );
    axes(&mut o, &f, max, "rejected probes / s");
    // Five x ticks over the span, labelled by age.
    for k in (0..=4u64).rev() {
        let back = span * k / 4;
        let x = num1(f.x((now - back) as f64, t0 as f64, now as f64));
        let yb = f.height - f.bottom;
        let _ = write!(
            o,
            r##"<line x1="{x}" y1="{yb}" x2="{x}" y2="{y2}" stroke="#444"/><text x="{x}" y="{ty}" text-anchor="middle">{label}</text>"##,
            y2 = yb + 4.0,
            ty = yb + 16.0,
            label = age(back)
        );
    }
    let _ = write!(
        o,
        r##"<text x="{x}" y="{y}" text-anchor="middle">time (last {w})</text>"##,
        w = span_words(span),
        x = f.x(0.5, 0.0, 1.0),
        y = f.height - 4.0
    );
    for (i, s) in series.iter().enumerate() {
        let c = PALETTE[i % PALETTE.len()];
        let pts = polyline(&f, &s.points, t0, now, max);
        let _ = write!(
            o,
            r##"<polyline class="series" data-namespace="{ns}" fill="none" stroke="{c}" stroke-width="2" points="{pts}"/>"##,
            ns = esc(s.namespace)
        );
        // A lone point draws no line: mark every point.
        for p in pts.split(' ').filter(|p| !p.is_empty()) {
            if let Some((x, y)) = p.split_once(',') {
                let _ = write!(o, r##"<circle cx="{x}" cy="{y}" r="2.5" fill="{c}"/>"##);
            }
        }
    }
    legend(&mut o, series.iter().map(|s| s.namespace), f.height + 4.0);
    if series.is_empty() {
        let _ = write!(
            o,
            r##"<text x="{x}" y="{y}" text-anchor="middle">no probe samples in the last hour</text>"##,
            x = f.x(0.5, 0.0, 1.0),
            y = f.y(0.5, 1.0)
        );
    }
    o.push_str("</svg>");
    o
}

fn axes(o: &mut String, f: &Frame, max: f64, ylabel: &str) {
    let (xl, xr, yt, yb) = (f.left, f.width - f.right, f.top, f.height - f.bottom);
    let _ = write!(
        o,
        r##"<rect x="{xl}" y="{yt}" width="{w}" height="{h}" fill="#fafafa" stroke="#bbb"/>"##,
        w = xr - xl,
        h = yb - yt
    );
    for k in 0..=4 {
        let v = max * f64::from(k) / 4.0;
        let y = num1(f.y(v, max));
        let _ = write!(
            o,
            r##"<line x1="{xl}" y1="{y}" x2="{xr}" y2="{y}" stroke="#ddd"/><text x="{tx}" y="{y}" dy="4" text-anchor="end">{v}</text>"##,
            tx = xl - 6.0,
            v = num(v)
        );
    }
    let _ = write!(
        o,
        r##"<text transform="translate(14 {cy}) rotate(-90)" text-anchor="middle">{l}</text>"##,
        cy = (yt + yb) / 2.0,
        l = esc(ylabel)
    );
}

fn legend<'a>(o: &mut String, names: impl Iterator<Item = &'a str>, y: f64) {
    for (i, n) in names.enumerate() {
        let (col, row) = (i % 4, i / 4);
        let x = 56.0 + 150.0 * col as f64;
        let y = y + 20.0 * row as f64;
        let _ = write!(
            o,
            r##"<rect x="{x}" y="{y}" width="12" height="12" fill="{c}"/><text x="{tx}" y="{ty}">{n}</text>"##,
            c = PALETTE[i % PALETTE.len()],
            tx = x + 16.0,
            ty = y + 10.0,
            n = esc(&short(n, 20))
        );
    }
}

/// `s` cut to `max` characters with an ellipsis.
fn short(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(max - 1).collect();
        t.push('…');
        t
    }
}

/// Iptables rules against service ports for the [`MAX_BARS`] namespaces with the most rules.
pub fn rules_chart(summary: &Summary) -> String {
    let mut rows: Vec<(&String, usize, usize)> = summary
        .per_namespace
        .iter()
        .map(|(ns, c)| (ns, c.iptables_rules, c.service_ports))
        .collect();
    rows.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let left_out = rows.len().saturating_sub(MAX_BARS);
    rows.truncate(MAX_BARS);
    let max = nice_max(rows.first().map_or(0, |r| r.1) as f64);
    let f = Frame {
        width: 640.0,
        height: 56.0 + 26.0 * rows.len().max(1) as f64,
        left: 150.0,
        right: 60.0,
        top: 8.0,
        bottom: 48.0,
    };
    let mut desc = format!(
        "iptables rules placing each namespace's service ports, against its service ports, for the {} namespace(s) with the most rules; the node has {} KUBE-* rules for {} service ports in all.",
        rows.len(),
        summary.kube_rules,
        summary.service_ports
    );
    if left_out > 0 {
        let _ = write!(desc, " {left_out} smaller namespace(s) are not drawn.");
    }
    let mut o = String::new();
    let _ = write!(
        o,
        r##"<svg class="chart" id="chart-rules" role="img" aria-labelledby="chart-rules-title chart-rules-desc" viewBox="0 0 {w} {h}" width="{w}" height="{h}"><title id="chart-rules-title">iptables rules vs service ports per namespace</title><desc id="chart-rules-desc">{d}</desc>"##,
        w = f.width,
        h = f.height,
        d = esc(&desc)
    );
    let (xl, xr, yb) = (f.left, f.width - f.right, f.height - f.bottom);
    for k in 0..=4 {
        let v = max * f64::from(k) / 4.0;
        let x = num1(f.x(v, 0.0, max));
        let _ = write!(
            o,
            r##"<line x1="{x}" y1="{t}" x2="{x}" y2="{yb}" stroke="#ddd"/><text x="{x}" y="{ty}" text-anchor="middle">{v}</text>"##,
            t = f.top,
            ty = yb + 14.0,
            v = num(v)
        );
    }
    let _ = write!(
        o,
        r##"<text x="{x}" y="{y}" text-anchor="middle">count</text>"##,
        x = (xl + xr) / 2.0,
        y = yb + 28.0
    );
    for (i, (ns, rules, ports)) in rows.iter().enumerate() {
        let y = f.top + 26.0 * i as f64;
        let wr = f.x(*rules as f64, 0.0, max) - xl;
        let wp = f.x(*ports as f64, 0.0, max) - xl;
        let _ = write!(
            o,
            r##"<g class="bar" data-namespace="{n}"><text x="{tx}" y="{ty}" text-anchor="end">{label}</text><rect x="{xl}" y="{y}" width="{wr}" height="11" fill="{c0}"/><rect x="{xl}" y="{y2}" width="{wp}" height="11" fill="{c1}"/><text x="{vx}" y="{ty}">{rules} / {ports}</text></g>"##,
            n = esc(ns),
            tx = xl - 6.0,
            ty = y + 15.0,
            label = esc(&short(ns, 22)),
            wr = num1(wr),
            wp = num1(wp.max(if *ports > 0 { 1.0 } else { 0.0 })),
            y2 = y + 11.0,
            c0 = PALETTE[1],
            c1 = PALETTE[0],
            vx = num1(xl + wr + 4.0),
        );
    }
    let ly = yb + 34.0;
    let _ = write!(
        o,
        r##"<rect x="{xl}" y="{ly}" width="12" height="12" fill="{c0}"/><text x="{t0}" y="{ty}">iptables rules</text><rect x="{x1}" y="{ly}" width="12" height="12" fill="{c1}"/><text x="{t1}" y="{ty}">service ports</text>"##,
        c0 = PALETTE[1],
        c1 = PALETTE[0],
        t0 = xl + 16.0,
        x1 = xl + 130.0,
        t1 = xl + 146.0,
        ty = ly + 10.0
    );
    o.push_str("</svg>");
    o
}

#[cfg(test)]
mod tests;
