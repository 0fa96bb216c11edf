//! The results folder of a run: `history.jsonl`, `setup.json`,
//! `final-state.json`, `summary.json` (and a short `summary.txt`), and
//! `latency.svg`, latency over time with the nemesis intervals shaded.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;
use serde::Serialize;

use crate::checker::CheckReport;
use crate::history::{outcome_counts, History, Outcome, Phase, Request};

#[derive(Debug, Serialize)]
pub struct UnknownSummary {
    /// Operations whose outcome was unknown (timeouts, 504s, broken
    /// connections), reads excluded.
    pub writes_unknown: usize,
    /// Of those, resolved by a retry of the same key during the run.
    pub resolved_during_run: usize,
    /// Re-sent in the final phase after healing.
    pub resent_after_healing: usize,
    /// Of the re-sent, how many the retry showed had taken effect
    /// (`replayed: true`).
    pub turned_out_applied: usize,
    pub reads_unknown: usize,
}

/// How many authorization decisions (workload phase) were approvals, over
/// the run and in its two halves: a steady share means the run exercised
/// approvals throughout, not only denials of exhausted sessions.
#[derive(Debug, Serialize)]
pub struct ApprovalShare {
    pub decisions: u64,
    pub approved: u64,
    pub percent: f64,
    pub first_half_percent: f64,
    pub second_half_percent: f64,
}

pub fn approval_share(history: &History) -> ApprovalShare {
    let decisions: Vec<(u64, bool)> = history
        .ops
        .iter()
        .filter(|o| o.phase == Phase::Workload)
        .filter_map(|o| match o.ok() {
            Some(crate::history::Response::Decision { approved, .. }) => Some((o.invoke_ns, *approved)),
            _ => None,
        })
        .collect();
    let end = decisions.iter().map(|d| d.0).max().unwrap_or(0);
    let pct = |it: &mut dyn Iterator<Item = &(u64, bool)>| {
        let (mut n, mut a) = (0u64, 0u64);
        for (_, ok) in it {
            n += 1;
            a += u64::from(*ok);
        }
        if n == 0 {
            0.0
        } else {
            (a as f64 * 1000.0 / n as f64).round() / 10.0
        }
    };
    let approved = decisions.iter().filter(|d| d.1).count() as u64;
    ApprovalShare {
        decisions: decisions.len() as u64,
        approved,
        percent: pct(&mut decisions.iter()),
        first_half_percent: pct(&mut decisions.iter().filter(|d| d.0 <= end / 2)),
        second_half_percent: pct(&mut decisions.iter().filter(|d| d.0 > end / 2)),
    }
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub valid: bool,
    /// The run was against a fault build and had to be found invalid.
    pub expect_invalid: bool,
    /// Whether the run met its expectation.
    pub passed: bool,
    pub schedule: String,
    pub image: String,
    pub project: String,
    pub fault_env: Option<String>,
    pub clients: usize,
    pub duration_seconds: f64,
    pub operations: BTreeMap<String, BTreeMap<String, u64>>,
    pub approvals: ApprovalShare,
    pub unknown: UnknownSummary,
    pub faults: Vec<FaultSummary>,
    pub checkers: CheckReport,
    pub notes: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct FaultSummary {
    pub fault: String,
    pub detail: String,
    pub start_seconds: f64,
    pub end_seconds: f64,
}

pub fn unknown_summary(history: &History) -> UnknownSummary {
    let mut s = UnknownSummary {
        writes_unknown: 0,
        resolved_during_run: 0,
        resent_after_healing: 0,
        turned_out_applied: 0,
        reads_unknown: 0,
    };
    let key = |r: &Request| r.scoped_key().map(|(a, b)| (r.name(), a.to_string(), b.to_string()));
    // The latest invocation of each key that got an answer during the run.
    let mut last_ok: BTreeMap<(&'static str, String, String), u64> = BTreeMap::new();
    for op in &history.ops {
        if op.phase == Phase::Workload && matches!(op.outcome, Outcome::Ok { .. }) {
            if let Some(k) = key(&op.request) {
                let e = last_ok.entry(k).or_insert(0);
                *e = (*e).max(op.invoke_ns);
            }
        }
    }
    for op in &history.ops {
        match (&op.request, &op.outcome, op.phase) {
            (Request::Read { .. }, Outcome::Info { .. }, _) => s.reads_unknown += 1,
            (_, Outcome::Info { .. }, Phase::Workload) => {
                s.writes_unknown += 1;
                if key(&op.request)
                    .and_then(|k| last_ok.get(&k))
                    .is_some_and(|t| *t > op.invoke_ns)
                {
                    s.resolved_during_run += 1;
                }
            }
            (_, Outcome::Ok { response }, Phase::Resolve) if !matches!(&op.request, Request::Authorize { session, .. } if session == crate::workload::TICK_SESSION) =>
            {
                s.resent_after_healing += 1;
                if response.replayed() {
                    s.turned_out_applied += 1;
                }
            }
            (_, Outcome::Fail { .. }, Phase::Resolve) => s.resent_after_healing += 1,
            _ => {}
        }
    }
    s
}

pub fn fault_summary(history: &History) -> Vec<FaultSummary> {
    history
        .nemesis
        .iter()
        .map(|n| FaultSummary {
            fault: n.fault.clone(),
            detail: n.detail.clone(),
            start_seconds: (n.start_ns as f64 / 1e7).round() / 100.0,
            end_seconds: (n.end_ns as f64 / 1e7).round() / 100.0,
        })
        .collect()
}

pub fn counts(history: &History) -> BTreeMap<String, BTreeMap<String, u64>> {
    outcome_counts(&history.ops)
}

/// Writes `summary.json` and `summary.txt`; returns the text.
pub fn write_summary(dir: &Path, summary: &Summary) -> anyhow::Result<String> {
    std::fs::write(dir.join("summary.json"), serde_json::to_vec_pretty(summary)?)?;
    let mut t = String::new();
    t.push_str(&format!(
        "valid: {}{}\nschedule: {}  image: {}  clients: {}  {:.0} s\n",
        summary.valid,
        if summary.expect_invalid {
            format!(
                " (expected invalid: {})",
                if summary.passed { "caught" } else { "NOT CAUGHT" }
            )
        } else {
            String::new()
        },
        summary.schedule,
        summary.image,
        summary.clients,
        summary.duration_seconds
    ));
    for (kind, by) in &summary.operations {
        t.push_str(&format!(
            "  {kind:10} {}\n",
            by.iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let a = &summary.approvals;
    t.push_str(&format!(
        "approvals: {} of {} decisions ({}%; first half {}%, second half {}%)\n",
        a.approved, a.decisions, a.percent, a.first_half_percent, a.second_half_percent
    ));
    let u = &summary.unknown;
    t.push_str(&format!(
        "unknown writes: {} ({} resolved by a retry during the run, {} re-sent after healing, {} of those had taken effect); unknown reads: {}\n",
        u.writes_unknown, u.resolved_during_run, u.resent_after_healing, u.turned_out_applied, u.reads_unknown
    ));
    t.push_str(&format!("faults: {}\n", summary.faults.len()));
    for f in &summary.faults {
        t.push_str(&format!(
            "  {:6.1}-{:6.1}s {:18} {}\n",
            f.start_seconds, f.end_seconds, f.fault, f.detail
        ));
    }
    for v in &summary.checkers.verdicts {
        t.push_str(&format!(
            "checker {:26} {}{}\n",
            v.checker,
            if v.valid { "valid" } else { "INVALID" },
            if v.valid {
                String::new()
            } else {
                format!(" ({} violations)", v.violation_count)
            }
        ));
        for x in v.violations.iter().take(5) {
            t.push_str(&format!("    - {x}\n"));
        }
    }
    for n in &summary.notes {
        t.push_str(&format!("note: {n}\n"));
    }
    std::fs::write(dir.join("summary.txt"), &t)?;
    Ok(t)
}

/// Points drawn per outcome; more are thinned out evenly.
const CHART_POINTS_PER_SERIES_MAX: usize = 20_000;

fn fault_color(fault: &str) -> RGBColor {
    match fault {
        f if f.contains("isolate") || f.contains("majorit") || f.contains("bridge") => RGBColor(70, 110, 220),
        f if f.contains("pause") => RGBColor(150, 90, 200),
        f if f.contains("restart") => RGBColor(60, 60, 60),
        _ => RGBColor(220, 60, 60),
    }
}

/// Latency of every operation over time, by outcome, with the nemesis
/// intervals shaded (SVG, no fonts needed).
pub fn latency_chart(path: &Path, history: &History, title: &str) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (1400, 720)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let t_max = history
        .ops
        .iter()
        .map(|o| o.complete_ns as f64 / 1e9)
        .fold(1.0f64, f64::max);
    let y_max = history.ops.iter().map(|o| o.latency_ms()).fold(10.0f64, f64::max) * 1.5;
    let y_min = 0.1f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..t_max, (y_min..y_max).log_scale())
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    chart
        .configure_mesh()
        .x_desc("seconds since start")
        .y_desc("latency (ms, log)")
        .draw()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let mut labelled = std::collections::BTreeSet::new();
    for n in &history.nemesis {
        let color = fault_color(&n.fault);
        let (s, e) = (n.start_ns as f64 / 1e9, n.end_ns as f64 / 1e9);
        let series = chart
            .draw_series(std::iter::once(Rectangle::new(
                [(s, y_min), (e, y_max)],
                color.mix(0.12).filled(),
            )))
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        if labelled.insert(n.fault.clone()) {
            series
                .label(n.fault.clone())
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.mix(0.4).filled()));
        }
    }
    let styles = [
        ("ok", RGBColor(40, 160, 70)),
        ("fail", RGBColor(210, 50, 50)),
        ("info", RGBColor(240, 150, 20)),
    ];
    for (name, color) in styles {
        let selected: Vec<&crate::history::Op> = history.ops.iter().filter(|o| o.outcome_name() == name).collect();
        let count = selected.len();
        // Long soaks: keep the file small by drawing every k-th point.
        let stride = count.div_ceil(CHART_POINTS_PER_SERIES_MAX).max(1);
        let points: Vec<(f64, f64)> = selected
            .iter()
            .step_by(stride)
            .map(|o| (o.invoke_ns as f64 / 1e9, o.latency_ms().max(y_min)))
            .collect();
        chart
            .draw_series(points.into_iter().map(|p| Circle::new(p, 2, color.mix(0.7).filled())))
            .map_err(|e| anyhow::anyhow!("{e:?}"))?
            .label(format!("{name} ({count})"))
            .legend(move |(x, y)| Circle::new((x + 6, y), 4, color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    root.present()
        .map_err(|e| anyhow::anyhow!("{e:?}"))
        .context("writing the chart")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::NemesisInterval;

    #[test]
    fn chart_has_points_and_shaded_faults() {
        let mut k = crate::checker::testkit::valid_seed();
        k.h.nemesis.push(NemesisInterval {
            fault: "kill-leader".into(),
            detail: "kill node1 (leader)".into(),
            start_ns: 5_000_000,
            end_ns: 25_000_000,
        });
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("latency.svg");
        latency_chart(&path, &k.h, "test").expect("chart");
        let svg = std::fs::read_to_string(&path).expect("svg");
        assert!(svg.contains("<circle"), "no points");
        assert!(svg.contains("kill-leader"), "no legend for the fault");
        assert!(svg.contains("ok (4)"), "no outcome legend");
    }
}
