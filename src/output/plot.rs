//! PNG plots (plotters, bitmap backend) with an embedded font, so no system font lookup is
//! needed. The font is registered for every binary that links plotters, criterion's SVG
//! plots included.

use std::path::Path;

use plotters::prelude::*;

use crate::error::{Error, Result};

static FONT: &[u8] = include_bytes!("../../fixtures/fonts/DejaVuSans.ttf");

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

/// A line per series of (x, y) points, log-scale x. Written atomically as PNG.
pub fn lines_png(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<()> {
    register_fonts();
    let pts: Vec<(f64, f64)> = series.iter().flat_map(|(_, v)| v.iter().copied()).collect();
    if pts.is_empty() {
        return Err(Error::Report("plot: no points".into()));
    }
    let (xmin, xmax) = pts
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let ymax = pts.iter().fold(0f64, |a, p| a.max(p.1)) * 1.15;
    // The image encoder picks the format from the extension: keep `.png` last.
    let tmp = path.with_extension("tmp.png");
    {
        let root = BitMapBackend::new(&tmp, (900, 560)).into_drawing_area();
        root.fill(&WHITE).map_err(perr)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 24))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(80)
            .build_cartesian_2d((xmin * 0.8..xmax * 1.25).log_scale(), 0f64..ymax.max(1.0))
            .map_err(perr)?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .x_label_formatter(&|x| format!("{x:.0}"))
            .draw()
            .map_err(perr)?;
        let colors = [RED, BLUE, GREEN, MAGENTA, CYAN, BLACK];
        for (i, (name, v)) in series.iter().enumerate() {
            let c = colors[i % colors.len()];
            chart
                .draw_series(LineSeries::new(v.iter().copied(), c.stroke_width(2)))
                .map_err(perr)?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                });
            chart
                .draw_series(v.iter().map(|&p| Circle::new(p, 4, c.filled())))
                .map_err(perr)?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(perr)?;
        root.present().map_err(perr)?;
    }
    std::fs::rename(&tmp, path).map_err(Error::io(path))
}

/// A trend: a line per series of (x, y) points on linear axes (x: the position in time
/// order), e.g. tok/s per hardware across runs. Written atomically as PNG.
pub fn trend_png(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<()> {
    register_fonts();
    let pts: Vec<(f64, f64)> = series.iter().flat_map(|(_, v)| v.iter().copied()).collect();
    if pts.is_empty() {
        return Err(Error::Report("plot: no points".into()));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
    }
    let xmax = pts.iter().fold(1f64, |a, p| a.max(p.0));
    let ymax = pts.iter().fold(0f64, |a, p| a.max(p.1)) * 1.15;
    let tmp = path.with_extension("tmp.png");
    {
        let root = BitMapBackend::new(&tmp, (900, 560)).into_drawing_area();
        root.fill(&WHITE).map_err(perr)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(80)
            .build_cartesian_2d(0f64..xmax + 1.0, 0f64..ymax.max(1e-9))
            .map_err(perr)?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            // Runs are whole numbers: label only the integer ticks.
            .x_label_formatter(&|x| {
                if (x - x.round()).abs() < 1e-9 {
                    format!("{x:.0}")
                } else {
                    String::new()
                }
            })
            .draw()
            .map_err(perr)?;
        let colors = [RED, BLUE, GREEN, MAGENTA, CYAN, BLACK];
        for (i, (name, v)) in series.iter().enumerate() {
            let c = colors[i % colors.len()];
            chart
                .draw_series(LineSeries::new(v.iter().copied(), c.stroke_width(2)))
                .map_err(perr)?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                });
            chart
                .draw_series(v.iter().map(|&p| Circle::new(p, 4, c.filled())))
                .map_err(perr)?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(perr)?;
        root.present().map_err(perr)?;
    }
    std::fs::rename(&tmp, path).map_err(Error::io(path))
}

/// Two panels side by side, linear x from 0: prefill tok/s and decode tok/s against
/// KV-cache depth, one line per model. Written atomically as PNG.
pub fn depth_png(
    path: &Path,
    title: &str,
    prefill: &[(String, Vec<(f64, f64)>)],
    decode: &[(String, Vec<(f64, f64)>)],
) -> Result<()> {
    register_fonts();
    if prefill.iter().chain(decode).all(|(_, v)| v.is_empty()) {
        return Err(Error::Report("plot: no points".into()));
    }
    let tmp = path.with_extension("tmp.png");
    {
        let root = BitMapBackend::new(&tmp, (1400, 600)).into_drawing_area();
        root.fill(&WHITE).map_err(perr)?;
        let root = root.titled(title, ("sans-serif", 24)).map_err(perr)?;
        let (left, right) = root.split_horizontally(700);
        for (area, caption, series) in [
            (&left, "prefill tok/s", prefill),
            (&right, "decode tok/s", decode),
        ] {
            let pts: Vec<(f64, f64)> = series.iter().flat_map(|(_, v)| v.iter().copied()).collect();
            let xmax = pts.iter().fold(1f64, |a, p| a.max(p.0));
            let ymax = pts.iter().fold(0f64, |a, p| a.max(p.1)) * 1.15;
            let mut chart = ChartBuilder::on(area)
                .caption(caption, ("sans-serif", 20))
                .margin(16)
                .x_label_area_size(48)
                .y_label_area_size(80)
                .build_cartesian_2d(0f64..xmax * 1.05, 0f64..ymax.max(1e-9))
                .map_err(perr)?;
            chart
                .configure_mesh()
                .x_desc("KV-cache depth (tokens)")
                .y_desc(caption)
                .x_label_formatter(&|x| format!("{x:.0}"))
                .draw()
                .map_err(perr)?;
            let colors = [RED, BLUE, GREEN, MAGENTA, CYAN, BLACK];
            for (i, (name, v)) in series.iter().enumerate() {
                let c = colors[i % colors.len()];
                chart
                    .draw_series(LineSeries::new(v.iter().copied(), c.stroke_width(2)))
                    .map_err(perr)?
                    .label(name.as_str())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                    });
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
        }
        root.present().map_err(perr)?;
    }
    std::fs::rename(&tmp, path).map_err(Error::io(path))
}
