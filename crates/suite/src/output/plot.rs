//! PNG plots (plotters, bitmap backend) with an embedded font, so no system font lookup is
//! needed. The font is registered for every binary that links plotters, criterion's SVG
//! plots included.

use std::path::Path;

use plotters::coord::ranged1d::ValueFormatter;
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::error::{Error, Result};

static FONT: &[u8] = include_bytes!("../../../../fixtures/fonts/DejaVuSans.ttf");

/// Registers the embedded DejaVu Sans as `sans-serif` (idempotent).
pub fn register_fonts() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        for family in ["sans-serif", "serif", "monospace"] {
            let _ = plotters::style::register_font(family, FontStyle::Normal, FONT);
            let _ = plotters::style::register_font(family, FontStyle::Bold, FONT);
        }
    });
}

fn perr(e: impl std::fmt::Display) -> Error {
    Error::Report(format!("plot: {e}"))
}

/// Series of (x, y) points, one line each, with a name for the legend.
type Series = [(String, Vec<(f64, f64)>)];

/// Draws into a `size` PNG at a temporary path beside `path` (the image encoder picks the
/// format from the extension: `.png` stays last), then renames it over `path`.
fn write_png(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<BitMapBackend, Shift>) -> Result<()>,
) -> Result<()> {
    let tmp = path.with_extension("tmp.png");
    {
        let root = BitMapBackend::new(&tmp, size).into_drawing_area();
        root.fill(&WHITE).map_err(perr)?;
        draw(&root)?;
        root.present().map_err(perr)?;
    }
    std::fs::rename(&tmp, path).map_err(Error::io(path))
}

/// A chart on `area` with every plot's margins and label areas.
fn chart_on<'a, 'b, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    caption: &str,
    caption_size: u32,
) -> ChartBuilder<'a, 'b, DB> {
    let mut b = ChartBuilder::on(area);
    b.caption(caption, ("sans-serif", caption_size))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(80);
    b
}

/// The mesh with axis descriptions, then a line and its points per series, and the legend.
fn draw_lines<'a, DB, X>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<X, RangedCoordf64>>,
    (x_desc, y_desc): (&str, &str),
    x_label: &dyn Fn(&f64) -> String,
    series: &Series,
) -> Result<()>
where
    DB: DrawingBackend + 'a,
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_label_formatter(x_label)
        .draw()
        .map_err(perr)?;
    let colors = [RED, BLUE, GREEN, MAGENTA, CYAN, BLACK];
    for (i, (name, v)) in series.iter().enumerate() {
        let c = colors[i % colors.len()];
        chart
            .draw_series(LineSeries::new(v.iter().copied(), c.stroke_width(2)))
            .map_err(perr)?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        chart
            .draw_series(v.iter().map(|&p| Circle::new(p, 4, c.filled())))
            .map_err(perr)?;
    }
    if !series.is_empty() {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(perr)?;
    }
    Ok(())
}

/// Every point of every series; an error when there is none.
fn points(series: &Series) -> Result<Vec<(f64, f64)>> {
    let pts: Vec<(f64, f64)> = series.iter().flat_map(|(_, v)| v.iter().copied()).collect();
    if pts.is_empty() {
        return Err(Error::Report("plot: no points".into()));
    }
    Ok(pts)
}

/// The x axis of a line chart.
#[derive(Clone, Copy)]
enum XAxis {
    /// Log scale, from 0.8x the smallest x to 1.25x the largest.
    Log,
    /// Linear from 0 to one past the largest x, integer ticks labelled (runs in time order).
    Runs,
}

/// A line per series of (x, y) points, log-scale x. Written atomically as PNG.
pub fn lines_png(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &Series,
) -> Result<()> {
    line_chart(path, title, (x_label, y_label), series, XAxis::Log)
}

/// A trend: a line per series of (x, y) points on linear axes (x: the position in time
/// order), e.g. tok/s per hardware across runs; `(x label, y label)`. Written atomically as
/// PNG, its folder created.
pub fn trend_png(path: &Path, title: &str, labels: (&str, &str), series: &Series) -> Result<()> {
    points(series)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
    }
    line_chart(path, title, labels, series, XAxis::Runs)
}

fn line_chart(
    path: &Path,
    title: &str,
    labels: (&str, &str),
    series: &Series,
    x: XAxis,
) -> Result<()> {
    register_fonts();
    let pts = points(series)?;
    let (xmin, xmax) = pts
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let ymax = pts.iter().fold(0f64, |a, p| a.max(p.1)) * 1.15;
    write_png(path, (900, 560), |root| match x {
        XAxis::Log => {
            let mut chart = chart_on(root, title, 24)
                .build_cartesian_2d((xmin * 0.8..xmax * 1.25).log_scale(), 0f64..ymax.max(1.0))
                .map_err(perr)?;
            draw_lines(&mut chart, labels, &|x| format!("{x:.0}"), series)
        }
        XAxis::Runs => {
            let mut chart = chart_on(root, title, 22)
                .build_cartesian_2d(0f64..xmax.max(1.0) + 1.0, 0f64..ymax.max(1e-9))
                .map_err(perr)?;
            // Runs are whole numbers: label only the integer ticks.
            let whole = |x: &f64| {
                if (x - x.round()).abs() < 1e-9 {
                    format!("{x:.0}")
                } else {
                    String::new()
                }
            };
            draw_lines(&mut chart, labels, &whole, series)
        }
    })
}

/// Two panels side by side, linear x from 0: prefill tok/s and decode tok/s against
/// KV-cache depth, one line per model. Written atomically as PNG.
pub fn depth_png(path: &Path, title: &str, prefill: &Series, decode: &Series) -> Result<()> {
    register_fonts();
    if prefill.iter().chain(decode).all(|(_, v)| v.is_empty()) {
        return Err(Error::Report("plot: no points".into()));
    }
    write_png(path, (1400, 600), |root| {
        let root = root.titled(title, ("sans-serif", 24)).map_err(perr)?;
        let (left, right) = root.split_horizontally(700);
        for (area, caption, series) in [
            (&left, "prefill tok/s", prefill),
            (&right, "decode tok/s", decode),
        ] {
            let pts: Vec<(f64, f64)> = series.iter().flat_map(|(_, v)| v.iter().copied()).collect();
            let xmax = pts.iter().fold(1f64, |a, p| a.max(p.0));
            let ymax = pts.iter().fold(0f64, |a, p| a.max(p.1)) * 1.15;
            let mut chart = chart_on(area, caption, 20)
                .build_cartesian_2d(0f64..xmax * 1.05, 0f64..ymax.max(1e-9))
                .map_err(perr)?;
            draw_lines(
                &mut chart,
                ("KV-cache depth (tokens)", caption),
                &|x| format!("{x:.0}"),
                series,
            )?;
        }
        Ok(())
    })
}
