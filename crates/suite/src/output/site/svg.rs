//! The history chart of a benchmark page, as inline SVG written in Rust: x = one slot per run
//! (commit and date under it), y = median time per iteration with its 95% interval as an
//! error bar, the noise band (previous median ± threshold) behind each point, flagged points
//! ringed, one colour per machine. Every point is a `<g class="point">` with a `<title>`
//! (the browser's hover text), so a test can count them in the rendered page.

use std::fmt::Write as _;

use super::esc;
use crate::output::summary::unit;

/// How a point's change against the previous one was judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flag {
    None,
    Slower,
    Faster,
}

#[derive(Debug, Clone)]
pub struct Point {
    /// Index into the chart's slots.
    pub slot: usize,
    /// Seconds.
    pub median: f64,
    pub ci: Option<(f64, f64)>,
    /// The noise band around the previous point's median (seconds), when there is one.
    pub band: Option<(f64, f64)>,
    pub flag: Flag,
    /// Hover text.
    pub title: String,
    pub run: String,
}

#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<Point>,
}

const COLORS: [&str; 6] = [
    "#2458b3", "#d17a00", "#7b3fb0", "#138a8a", "#a23b72", "#4d6b1f",
];

const W: f64 = 960.0;
const H: f64 = 380.0;
const ML: f64 = 78.0;
const MR: f64 = 20.0;
const MT: f64 = 34.0;
const MB: f64 = 62.0;

/// Round tick values covering [lo, hi]: steps of 1, 2 or 5 times a power of ten.
pub fn ticks(lo: f64, hi: f64, want: usize) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite()) || hi <= lo {
        return vec![lo];
    }
    let raw = (hi - lo) / want.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let mut v = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while v <= hi + step * 1e-9 {
        out.push(v);
        v += step;
    }
    out
}

/// A tick label without trailing noise (`0.25`, `12`, `1500`).
fn tick_label(v: f64) -> String {
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.to_string()
    }
}

/// The chart; `slots` are (first label line, second label line) per run, oldest first.
pub fn chart(slots: &[(String, String)], series: &[Series], y_desc: &str) -> String {
    let mut lo = f64::INFINITY;
    let mut hi: f64 = 0.0;
    for p in series.iter().flat_map(|s| &s.points) {
        for v in [Some(p.median), p.ci.map(|c| c.0), p.ci.map(|c| c.1)]
            .into_iter()
            .chain([p.band.map(|b| b.0), p.band.map(|b| b.1)])
            .flatten()
        {
            lo = lo.min(v);
            hi = hi.max(v);
        }
    }
    if !lo.is_finite() {
        lo = 0.0;
        hi = 1.0;
    }
    let (f, u) = unit(hi);
    // Start the axis at 0 unless the data sit far above it (then a margin below).
    let pad = (hi - lo).max(hi * 0.02) * 0.12;
    let y0 = if lo - pad < hi * 0.35 { 0.0 } else { lo - pad };
    let y1 = hi + pad;
    let tk = ticks(y0 * f, y1 * f, 6);
    let (y0, y1) = (
        tk.first().copied().unwrap_or(y0 * f).min(y0 * f) / f,
        y1.max(tk.last().copied().unwrap_or(0.0) / f),
    );
    let pw = W - ML - MR;
    let ph = H - MT - MB;
    let n = slots.len().max(1) as f64;
    let slot_w = pw / n;
    let xs = |slot: usize, k: usize, of: usize| {
        let off = if of > 1 {
            (k as f64 - (of - 1) as f64 / 2.0) * (slot_w * 0.18 / of as f64).min(8.0)
        } else {
            0.0
        };
        ML + slot_w * (slot as f64 + 0.5) + off
    };
    let ys = |v: f64| MT + ph - (v - y0) / (y1 - y0) * ph;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-label="{}">"#,
        esc(y_desc)
    );
    // Grid and y ticks.
    for t in &tk {
        let y = ys(t / f);
        let _ = write!(
            s,
            r#"<line class="grid" x1="{ML}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            W - MR,
            ML - 6.0,
            y + 4.0,
            tick_label(*t)
        );
    }
    let _ = write!(
        s,
        r#"<line class="axis" x1="{ML}" x2="{ML}" y1="{MT}" y2="{:.1}"/><line class="axis" x1="{ML}" x2="{:.1}" y1="{:.1}" y2="{:.1}"/>"#,
        MT + ph,
        W - MR,
        MT + ph,
        MT + ph
    );
    let _ = write!(
        s,
        r#"<text x="16" y="{:.1}" transform="rotate(-90 16 {:.1})" text-anchor="middle">{} ({u})</text>"#,
        MT + ph / 2.0,
        MT + ph / 2.0,
        esc(y_desc)
    );
    // X labels: every slot while they fit, else every k-th.
    let every = ((n * 70.0 / pw).ceil() as usize).max(1);
    for (i, (a, b)) in slots.iter().enumerate() {
        if i % every != 0 && i + 1 != slots.len() {
            continue;
        }
        let x = xs(i, 0, 1);
        let _ = write!(
            s,
            r#"<text class="xlabel" x="{x:.1}" y="{:.1}" text-anchor="middle"><tspan class="mono">{}</tspan><tspan x="{x:.1}" dy="15">{}</tspan></text>"#,
            MT + ph + 18.0,
            esc(a),
            esc(b)
        );
    }
    // Legend.
    let mut lx = ML;
    for (k, se) in series.iter().enumerate() {
        let c = COLORS[k % COLORS.len()];
        let _ = write!(
            s,
            r#"<g class="legend"><circle cx="{:.1}" cy="16" r="5" fill="{c}"/><text x="{:.1}" y="20">{}</text></g>"#,
            lx + 5.0,
            lx + 14.0,
            esc(&se.name)
        );
        lx += 24.0 + se.name.chars().count() as f64 * 6.6;
    }
    let of = series.len();
    // Bands first (behind), then lines, then points.
    for (k, se) in series.iter().enumerate() {
        for p in &se.points {
            if let Some((a, b)) = p.band {
                let x = xs(p.slot, k, of);
                let w = (slot_w * 0.5).clamp(6.0, 40.0);
                let _ = write!(
                    s,
                    r#"<rect class="band" x="{:.1}" y="{:.1}" width="{w:.1}" height="{:.1}"><title>noise band: previous median ± threshold, {} to {} {u}</title></rect>"#,
                    x - w / 2.0,
                    ys(b),
                    (ys(a) - ys(b)).max(1.0),
                    tick_label(a * f),
                    tick_label(b * f)
                );
            }
        }
    }
    for (k, se) in series.iter().enumerate() {
        let c = COLORS[k % COLORS.len()];
        if se.points.len() > 1 {
            let pts: Vec<String> = se
                .points
                .iter()
                .map(|p| format!("{:.1},{:.1}", xs(p.slot, k, of), ys(p.median)))
                .collect();
            let _ = write!(
                s,
                r#"<polyline fill="none" stroke="{c}" stroke-width="1.5" stroke-opacity="0.6" points="{}"/>"#,
                pts.join(" ")
            );
        }
    }
    for (k, se) in series.iter().enumerate() {
        let c = COLORS[k % COLORS.len()];
        for p in &se.points {
            let x = xs(p.slot, k, of);
            let class = match p.flag {
                Flag::None => "point",
                Flag::Slower => "point flagged slower",
                Flag::Faster => "point flagged faster",
            };
            let _ = write!(
                s,
                r#"<g class="{class}" data-run="{}" data-series="{}"><title>{}</title>"#,
                esc(&p.run),
                esc(&se.name),
                esc(&p.title)
            );
            if let Some((a, b)) = p.ci {
                let _ = write!(
                    s,
                    r#"<path class="errorbar" d="M{x:.1} {:.1}V{:.1}M{:.1} {:.1}h8M{:.1} {:.1}h8" stroke="{c}" stroke-width="1.5" fill="none"/>"#,
                    ys(a),
                    ys(b),
                    x - 4.0,
                    ys(a),
                    x - 4.0,
                    ys(b)
                );
            }
            if p.flag != Flag::None {
                let _ = write!(
                    s,
                    r#"<circle class="ring" cx="{x:.1}" cy="{:.1}" r="9"/>"#,
                    ys(p.median)
                );
            }
            let _ = write!(
                s,
                r#"<circle cx="{x:.1}" cy="{:.1}" r="5" fill="{c}"/></g>"#,
                ys(p.median)
            );
        }
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(ticks(0.0, 10.0, 5), vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        let t = ticks(13.2, 17.9, 6);
        assert_eq!(t.first(), Some(&14.0));
        assert!(*t.last().unwrap() <= 17.9);
        assert_eq!(tick_label(0.30000000000000004), "0.3");
        assert_eq!(tick_label(1500.0), "1500");
    }

    #[test]
    fn every_point_is_drawn_once_with_its_hover_text() {
        let p = |slot, flag| Point {
            slot,
            median: 0.01 + slot as f64 * 0.001,
            ci: Some((0.009, 0.012)),
            band: (slot > 0).then_some((0.008, 0.012)),
            flag,
            title: format!("run {slot} <x>"),
            run: format!("r{slot}"),
        };
        let svg = chart(
            &[("a".into(), "1".into()), ("b".into(), "2".into())],
            &[Series {
                name: "m".into(),
                points: vec![p(0, Flag::None), p(1, Flag::Slower)],
            }],
            "median time",
        );
        assert_eq!(svg.matches("<g class=\"point").count(), 2);
        assert_eq!(svg.matches("class=\"point flagged slower\"").count(), 1);
        assert_eq!(svg.matches("class=\"band\"").count(), 1);
        assert!(svg.contains("run 1 &lt;x&gt;"));
    }
}
