//! SVG charts of a comparison (plotters): throughput against concurrency,
//! and latency percentiles against concurrency and against offered rate,
//! one line per system.

use std::path::{Path, PathBuf};

use plotters::coord::ranged1d::{SegmentValue, SegmentedCoord};
use plotters::coord::types::RangedCoordi32;
use plotters::prelude::*;

use crate::error::{BenchError, Result};
use crate::loadgen::LoadMode;
use crate::peers::System;
use crate::results::{Report, RunRecord};
use crate::workload::Workload;

const WIDTH_PX: u32 = 900;
const HEIGHT_PX: u32 = 520;
const PANEL_WIDTH_PX: u32 = 480;

/// One line: a system's values at each x category (`None` = no data).
struct Series {
    system: System,
    values: Vec<Option<f64>>,
}

fn color(system: System) -> RGBColor {
    match system {
        System::Spendcap => RGBColor(31, 119, 180),
        System::SpendcapLeader => RGBColor(23, 190, 207),
        System::Etcd => RGBColor(44, 160, 44),
        System::Postgres => RGBColor(255, 127, 14),
        System::PostgresForUpdate => RGBColor(140, 86, 75),
        System::Redis => RGBColor(214, 39, 40),
    }
}

fn chart_error(name: &str, e: impl std::fmt::Display) -> BenchError {
    BenchError::Chart {
        name: name.to_string(),
        detail: e.to_string(),
    }
}

/// Contiguous stretches of present values, for drawing lines with gaps.
fn stretches(values: &[Option<f64>]) -> Vec<Vec<(i32, f64)>> {
    let mut out: Vec<Vec<(i32, f64)>> = Vec::new();
    let mut current = Vec::new();
    for (i, v) in values.iter().enumerate() {
        match v {
            Some(y) if y.is_finite() => current.push((i as i32, *y)),
            _ => {
                if !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                }
            }
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

fn label_at(labels: &[String], v: &SegmentValue<i32>) -> String {
    match v {
        SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => usize::try_from(*i)
            .ok()
            .and_then(|i| labels.get(i))
            .cloned()
            .unwrap_or_default(),
        SegmentValue::Last => String::new(),
    }
}

/// Height of the legend strip under the plots.
const LEGEND_HEIGHT_PX: u32 = 40;

/// One legend for the whole figure, in a strip of its own so that it never
/// hides a point.
fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    systems: &[System],
) -> std::result::Result<(), String> {
    let (width, height) = area.dim_in_pixel();
    let slot = (width as i32 / systems.len().max(1) as i32).min(200);
    let start = (width as i32 - slot * systems.len() as i32) / 2;
    let y = height as i32 / 2;
    for (i, &system) in systems.iter().enumerate() {
        let x = start + slot * i as i32;
        let c = color(system);
        area.draw(&PathElement::new(vec![(x, y), (x + 24, y)], c.stroke_width(3)))
            .map_err(|e| e.to_string())?;
        area.draw(&Circle::new((x + 12, y), 4, c.filled()))
            .map_err(|e| e.to_string())?;
        area.draw(&Text::new(system.name(), (x + 30, y - 7), ("sans-serif", 14)))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The systems that have at least one value, in order.
fn present(series: &[Series]) -> Vec<System> {
    let mut out = Vec::new();
    for s in series {
        if s.values.iter().any(Option::is_some) && !out.contains(&s.system) {
            out.push(s.system);
        }
    }
    out
}

/// Draws each system's values as lines with a dot at each value, broken
/// where values are missing; `floor` lifts lower values to it (a log axis
/// has no room for them).
fn draw_lines<Y: Ranged<ValueType = f64>>(
    chart: &mut ChartContext<'_, SVGBackend<'_>, Cartesian2d<SegmentedCoord<RangedCoordi32>, Y>>,
    series: &[Series],
    floor: Option<f64>,
    name: &str,
) -> Result<()> {
    for s in series {
        let c = color(s.system);
        for stretch in stretches(&s.values) {
            let points: Vec<(SegmentValue<i32>, f64)> = stretch
                .iter()
                .map(|&(i, y)| (SegmentValue::CenterOf(i), floor.map_or(y, |low| y.max(low))))
                .collect();
            chart
                .draw_series(LineSeries::new(points.clone(), c.stroke_width(2)))
                .map_err(|e| chart_error(name, e))?;
            chart
                .draw_series(points.into_iter().map(|p| Circle::new(p, 4, c.filled())))
                .map_err(|e| chart_error(name, e))?;
        }
    }
    Ok(())
}

/// A linear-scale chart starting at zero.
fn draw_linear(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    labels: &[String],
    series: &[Series],
) -> Result<()> {
    let name = path.display().to_string();
    let top = series
        .iter()
        .flat_map(|s| s.values.iter().flatten())
        .fold(0.0f64, |a, &b| a.max(b));
    let top = if top > 0.0 { top * 1.1 } else { 1.0 };
    let root = SVGBackend::new(path, (WIDTH_PX, HEIGHT_PX + LEGEND_HEIGHT_PX)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| chart_error(&name, e))?;
    let (plot, legend) = root.split_vertically(HEIGHT_PX);
    draw_legend(&legend, &present(series)).map_err(|e| chart_error(&name, e))?;
    let last = (labels.len() as i32 - 1).max(1);
    let mut chart = ChartBuilder::on(&plot)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(75)
        .build_cartesian_2d((0..last).into_segmented(), 0.0..top)
        .map_err(|e| chart_error(&name, e))?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_labels(labels.len().max(1))
        .x_label_formatter(&|v| label_at(labels, v))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .light_line_style(WHITE)
        .draw()
        .map_err(|e| chart_error(&name, e))?;
    draw_lines(&mut chart, series, None, &name)?;
    root.present().map_err(|e| chart_error(&name, e))?;
    Ok(())
}

/// Side-by-side panels with a log-scale y axis (latencies in ms).
fn draw_log_panels(
    path: &Path,
    title: &str,
    x_desc: &str,
    labels: &[String],
    panels: &[(String, Vec<Series>)],
) -> Result<()> {
    let name = path.display().to_string();
    let all = panels
        .iter()
        .flat_map(|(_, s)| s.iter())
        .flat_map(|s| s.values.iter().flatten().copied())
        .filter(|v| v.is_finite() && *v > 0.0);
    let (low, high) = all.fold((f64::MAX, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (low, high) = if high > 0.0 {
        (low / 1.5, high * 1.5)
    } else {
        (0.1, 10.0)
    };
    let width = PANEL_WIDTH_PX * panels.len().max(1) as u32;
    let root = SVGBackend::new(path, (width, HEIGHT_PX + LEGEND_HEIGHT_PX)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| chart_error(&name, e))?;
    let (plots, legend) = root.split_vertically(HEIGHT_PX);
    let systems = present(
        &panels
            .iter()
            .flat_map(|(_, s)| s.iter())
            .map(|s| Series {
                system: s.system,
                values: s.values.clone(),
            })
            .collect::<Vec<_>>(),
    );
    draw_legend(&legend, &systems).map_err(|e| chart_error(&name, e))?;
    let plots = plots
        .titled(title, ("sans-serif", 20))
        .map_err(|e| chart_error(&name, e))?;
    let areas = plots.split_evenly((1, panels.len().max(1)));
    let last = (labels.len() as i32 - 1).max(1);
    for (area, (panel_title, series)) in areas.iter().zip(panels) {
        let mut chart = ChartBuilder::on(area)
            .caption(panel_title, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(65)
            .build_cartesian_2d((0..last).into_segmented(), (low..high).log_scale())
            .map_err(|e| chart_error(&name, e))?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc("latency (ms, log scale)")
            .x_labels(labels.len().max(1))
            .x_label_formatter(&|v| label_at(labels, v))
            .y_labels(8)
            .light_line_style(WHITE)
            .y_label_formatter(&|y| {
                if *y >= 10.0 {
                    format!("{y:.0}")
                } else {
                    format!("{y:.2}")
                }
            })
            .draw()
            .map_err(|e| chart_error(&name, e))?;
        draw_lines(&mut chart, series, Some(low), &name)?;
    }
    root.present().map_err(|e| chart_error(&name, e))?;
    Ok(())
}

/// The systems present in the report, in the order they were run.
fn systems_of(report: &Report) -> Vec<System> {
    let mut out: Vec<System> = Vec::new();
    for r in &report.runs {
        if !out.contains(&r.system) {
            out.push(r.system);
        }
    }
    out
}

fn find(report: &Report, system: System, workload: Workload, load: LoadMode) -> Option<&RunRecord> {
    report
        .runs
        .iter()
        .find(|r| r.system == system && r.workload == workload && r.load == load)
}

/// Draws every chart of the report into `dir`; returns the files written.
pub fn draw_all(report: &Report, dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| BenchError::io(format!("creating {}", dir.display()), e))?;
    let systems = systems_of(report);
    let settings = &report.settings;
    let mut written = Vec::new();
    let closed: Vec<LoadMode> = settings
        .concurrency_levels
        .iter()
        .map(|&concurrency| LoadMode::Closed { concurrency })
        .collect();
    let open: Vec<LoadMode> = settings
        .open_rates_per_second
        .iter()
        .map(|&rate_per_second| LoadMode::Open {
            rate_per_second,
            inflight_max: settings.open_inflight_max,
        })
        .collect();
    let pick = |workload: Workload, modes: &[LoadMode], system: System, f: &dyn Fn(&RunRecord) -> Option<f64>| {
        modes
            .iter()
            .map(|&m| find(report, system, workload, m).and_then(f))
            .collect::<Vec<_>>()
    };
    let percentile = |which: usize| {
        move |r: &RunRecord| {
            let l = &r.result.as_ref()?.latency;
            if l.count == 0 {
                return None;
            }
            let us = [l.p50_us, l.p99_us, l.p999_us][which];
            Some(us as f64 / 1000.0)
        }
    };
    let names = ["p50", "p99", "p99.9"];
    // One panel a percentile, each with a line a system over `modes`.
    let latency_panels = |workload: Workload, modes: &[LoadMode]| -> Vec<(String, Vec<Series>)> {
        (0..3)
            .map(|k| {
                let series = systems
                    .iter()
                    .map(|&system| Series {
                        system,
                        values: pick(workload, modes, system, &percentile(k)),
                    })
                    .collect();
                (names[k].to_string(), series)
            })
            .collect()
    };
    for &workload in &settings.workloads {
        let w = workload.name();
        let unit = if workload == Workload::Batch {
            format!(" ({} per request)", settings.batch_items)
        } else {
            String::new()
        };
        if !closed.is_empty() {
            let labels: Vec<String> = settings.concurrency_levels.iter().map(|c| c.to_string()).collect();
            let series: Vec<Series> = systems
                .iter()
                .map(|&system| Series {
                    system,
                    values: pick(workload, &closed, system, &|r| {
                        r.result.as_ref().map(|x| x.authorizations_per_second)
                    }),
                })
                .collect();
            let path = dir.join(format!("throughput-{w}.svg"));
            draw_linear(
                &path,
                &format!("{w}: throughput vs concurrency (closed loop){unit}"),
                "concurrent clients",
                "authorizations / s",
                &labels,
                &series,
            )?;
            written.push(path);
            let panels = latency_panels(workload, &closed);
            let path = dir.join(format!("latency-{w}.svg"));
            draw_log_panels(
                &path,
                &format!("{w}: request latency vs concurrency (closed loop){unit}"),
                "concurrent clients",
                &labels,
                &panels,
            )?;
            written.push(path);
        }
        if !open.is_empty() {
            let labels: Vec<String> = settings.open_rates_per_second.iter().map(|r| r.to_string()).collect();
            let panels = latency_panels(workload, &open);
            let path = dir.join(format!("open-loop-{w}.svg"));
            draw_log_panels(
                &path,
                &format!("{w}: latency from scheduled send vs offered rate (open loop){unit}"),
                "offered authorizations / s",
                &labels,
                &panels,
            )?;
            written.push(path);
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stretches_split_at_gaps() {
        let v = [Some(1.0), Some(2.0), None, Some(3.0), Some(f64::NAN), Some(4.0)];
        assert_eq!(
            stretches(&v),
            vec![vec![(0, 1.0), (1, 2.0)], vec![(3, 3.0)], vec![(5, 4.0)]]
        );
    }
}
