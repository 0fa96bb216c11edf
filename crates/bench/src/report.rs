//! The results folder: `results.json` (every number), `report.md` (tables
//! and caveats) and `charts/*.svg`.

use std::fmt::Write as _;
use std::path::Path;

use crate::charts;
use crate::error::{BenchError, Result};
use crate::loadgen::{LoadMode, OPEN_LOOP_TIMER_SLOP_MICROS};
use crate::money::to_decimal;
use crate::peers::System;
use crate::results::{Report, RunRecord};
use crate::workload::{Workload, SEED_AMOUNT_ATOMIC, SEED_CAP_ATOMIC, SMALL_AMOUNT_ATOMIC};

pub const JSON_FILE: &str = "results.json";
pub const MARKDOWN_FILE: &str = "report.md";
pub const CHARTS_DIR: &str = "charts";

fn write_file(path: &Path, text: &str) -> Result<()> {
    // Write then rename, so a reader never sees half a file.
    let partial = path.with_extension("partial");
    std::fs::write(&partial, text)
        .and_then(|()| std::fs::rename(&partial, path))
        .map_err(|e| BenchError::io(format!("writing {}", path.display()), e))
}

pub fn write_json(report: &Report, dir: &Path) -> Result<()> {
    write_file(&dir.join(JSON_FILE), &serde_json::to_string_pretty(report)?)
}

pub fn read_json(path: &Path) -> Result<Report> {
    let text = std::fs::read_to_string(path).map_err(|e| BenchError::io(format!("reading {}", path.display()), e))?;
    Ok(serde_json::from_str(&text)?)
}

/// `results.json`, the charts and `report.md`.
pub fn write_all(report: &Report, dir: &Path) -> Result<()> {
    write_json(report, dir)?;
    charts::draw_all(report, &dir.join(CHARTS_DIR))?;
    write_file(&dir.join(MARKDOWN_FILE), &markdown(report))
}

fn ms(micros: u64) -> String {
    let ms = micros as f64 / 1000.0;
    if ms >= 100.0 {
        format!("{ms:.0}")
    } else if ms >= 10.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.2}")
    }
}

fn mib(kib: u64) -> String {
    format!("{:.0}", kib as f64 / 1024.0)
}

fn rate(per_second: f64) -> String {
    format!("{per_second:.0}")
}

fn errors(r: &RunRecord) -> String {
    let Some(result) = &r.result else {
        return "-".into();
    };
    if result.failed_items == 0 {
        return "0".into();
    }
    let kinds: Vec<String> = result.errors.iter().map(|(k, n)| format!("{k} {n}")).collect();
    format!("{} ({})", result.failed_items, kinds.join(", "))
}

fn check(r: &RunRecord) -> String {
    match &r.verification {
        Some(v) if v.ok => "ok".into(),
        Some(v) => format!("**FAILED**: {}", v.mismatches.first().cloned().unwrap_or_default()),
        None => "-".into(),
    }
}

fn runs_of(report: &Report, workload: Workload, open: bool) -> Vec<&RunRecord> {
    report
        .runs
        .iter()
        .filter(|r| r.workload == workload && matches!(r.load, LoadMode::Open { .. }) == open)
        .collect()
}

fn workload_description(workload: Workload, report: &Report) -> String {
    let s = &report.settings;
    match workload {
        Workload::Hot => format!(
            "one account with a huge cap; every client authorizes ${} on it",
            to_decimal(SMALL_AMOUNT_ATOMIC)
        ),
        Workload::Spread => format!(
            "{} accounts picked uniformly at random; ${} each",
            s.spread_accounts,
            to_decimal(SMALL_AMOUNT_ATOMIC)
        ),
        Workload::Seed => format!(
            "fresh ${} sessions for every run, ${} calls, about {} calls per session: two \
             approvals, then denials (about {}% denied). Sessions per run are sized from the \
             offered rate or the system's spread throughput (column `accounts`); a run that \
             outpaces that estimate reuses spent sessions and denies more",
            to_decimal(SEED_CAP_ATOMIC),
            to_decimal(SEED_AMOUNT_ATOMIC),
            s.seed_calls_per_session,
            100 - 200 / s.seed_calls_per_session.max(2)
        ),
        Workload::Batch => format!(
            "{} authorizations of ${} per request over the {} spread accounts \
             (latency is per request; throughput counts authorizations)",
            s.batch_items,
            to_decimal(SMALL_AMOUNT_ATOMIC),
            s.spread_accounts
        ),
    }
}

/// The report as Markdown.
pub fn markdown(report: &Report) -> String {
    let mut md = String::new();
    let s = &report.settings;
    let m = &report.machine;
    let _ = writeln!(md, "# spendcap comparison, {}\n", report.started_at);
    let _ = writeln!(md, "Command: `{}`\n", report.command.join(" "));
    let _ = writeln!(
        md,
        "Machine: {} ({} cores), {:.1} GiB memory, {}, kernel {}; load average at start {}. \
         Data on {}; one 8 KiB write + fdatasync there: p50 {} ms, p99 {} ms.\n",
        m.cpu_model,
        m.cores,
        m.memory_total_kib as f64 / 1024.0 / 1024.0,
        m.os,
        m.kernel,
        m.load_average,
        m.data_filesystem,
        m.fsync.as_ref().map_or("-".into(), |f| ms(f.p50_us)),
        m.fsync.as_ref().map_or("-".into(), |f| ms(f.p99_us)),
    );
    let _ = writeln!(
        md,
        "Each run: {} s warm-up, then {} s measured; request timeout {} s. Closed loop at {:?} \
         concurrent clients; open loop at {:?} offered authorizations/s (at most {} in flight).{}\n",
        s.warmup_seconds,
        s.measure_seconds,
        s.request_timeout_seconds,
        s.concurrency_levels,
        s.open_rates_per_second,
        s.open_inflight_max,
        if s.quick {
            " **Quick smoke run: numbers are indicative only.**"
        } else {
            ""
        }
    );

    md.push_str("## Read this first\n\n");
    md.push_str(
        "- **PostgreSQL and Redis are single, unreplicated nodes; spendcap and etcd replicate every \
         write to three members.** All three members run on this one machine, sharing its cores and \
         its one disk, so a replicated write costs three fsyncs on the same device; on real hardware \
         each member has its own.\n",
    );
    md.push_str(
        "- Every system is durable: PostgreSQL `fsync=on`, `synchronous_commit=on`; Redis \
         `appendonly yes`, `appendfsync always`; etcd and spendcap fsync their logs.\n",
    );
    md.push_str(
        "- The load generator runs on the same machine; its CPU time is in the tables \
         (`gen CPU s`). `other CPU s` is what the rest of the machine used during the window: \
         kernel threads working for the servers (the file system's journal, loopback \
         networking) and any unrelated program. Compare it with the window's capacity \
         (cores × seconds): when it is large, the run shared the machine and its numbers are \
         lower than the system can do.\n",
    );
    md.push_str(
        "- etcd is driven through its JSON gateway (HTTP/1.1 and JSON, converted to gRPC inside \
         etcd), which costs etcd CPU that a native gRPC client would not (the Rust gRPC client, \
         etcd-client, runs `protoc` in its build script; the harness builds without it).\n",
    );
    let _ = writeln!(
        md,
        "- Open-loop latency is measured from each request's scheduled send time \
         (coordinated-omission correction); a request that starts within {} ms of its slot is \
         measured from its actual send (the timer's resolution). `unsent` counts requests the \
         window ended before sending: the system could not keep up with the offered rate.",
        OPEN_LOOP_TIMER_SLOP_MICROS as f64 / 1000.0
    );
    md.push_str(
        "- Every count, rate and latency covers the requests that finished inside the measured \
         window. Latency percentiles cover answered requests (an approval or a denial); failed \
         requests are counted under `errors`.\n",
    );
    md.push_str(
        "- `check`: after every run the harness reads each account back from the system and \
         requires spent ≤ cap and spent = the sum of the approvals it saw (spendcap: spent + held, \
         since approvals stay held), allowing only for requests whose outcome is unknown.\n",
    );
    let _ = writeln!(
        md,
        "- CPU and peak memory are those of the server processes the harness started, over the \
         measured window, summed over each system's processes (PostgreSQL: the postmaster and its \
         backends). RSS is the sum of VmHWM (shared pages count once per process); PSS is the \
         highest sampled sum of PSS (shared pages split).\n"
    );

    md.push_str("## Systems\n\n| system | topology | version | status |\n|---|---|---|---|\n");
    for sys in &report.systems {
        let name = sys.system.map_or("?", System::name);
        let status = match &sys.error {
            Some(e) => format!("**error**: {}", e.replace('\n', " ")),
            None => "ran".into(),
        };
        let _ = writeln!(md, "| {name} | {} | {} | {status} |", sys.topology, sys.version);
    }
    md.push('\n');

    md.push_str("## Best closed-loop throughput (authorizations/s, at concurrency)\n\n");
    let systems: Vec<System> = report.systems.iter().filter_map(|s| s.system).collect();
    let _ = writeln!(
        md,
        "| system | {} |\n|---|{}",
        s.workloads.iter().map(|w| w.name()).collect::<Vec<_>>().join(" | "),
        "---|".repeat(s.workloads.len())
    );
    for &system in &systems {
        let cells: Vec<String> = s
            .workloads
            .iter()
            .map(|&w| {
                report
                    .runs
                    .iter()
                    .filter(|r| r.system == system && r.workload == w)
                    .filter_map(|r| match (r.load, &r.result) {
                        (LoadMode::Closed { concurrency }, Some(x)) => Some((x.authorizations_per_second, concurrency)),
                        _ => None,
                    })
                    .max_by(|a, b| a.0.total_cmp(&b.0))
                    .map_or("-".into(), |(t, c)| format!("{} @ {c}", rate(t)))
            })
            .collect();
        let _ = writeln!(md, "| {} | {} |", system.name(), cells.join(" | "));
    }
    md.push('\n');

    for &workload in &s.workloads {
        let w = workload.name();
        let _ = writeln!(md, "## Workload `{w}`\n\n{}.\n", workload_description(workload, report));
        let closed = runs_of(report, workload, false);
        if !closed.is_empty() {
            md.push_str("### Closed loop\n\n");
            md.push_str(
                "| system | clients | accounts | auth/s | req/s | p50 ms | p99 ms | p99.9 ms | approved | \
                 denied | errors | server CPU s | CPU ms / 1k auth | RSS MiB | PSS MiB | gen CPU s | \
                 other CPU s | check |\n",
            );
            md.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---|\n");
            for r in closed {
                let LoadMode::Closed { concurrency } = r.load else {
                    continue;
                };
                row(&mut md, r, &concurrency.to_string(), false);
            }
            md.push('\n');
        }
        let open = runs_of(report, workload, true);
        if !open.is_empty() {
            md.push_str("### Open loop\n\n");
            md.push_str(
                "| system | offered/s | accounts | auth/s | req/s | p50 ms | p99 ms | p99.9 ms | service p99 ms | \
                 unsent | late | approved | denied | errors | server CPU s | RSS MiB | check |\n",
            );
            md.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|\n");
            for r in open {
                let LoadMode::Open { rate_per_second, .. } = r.load else {
                    continue;
                };
                row(&mut md, r, &rate_per_second.to_string(), true);
            }
            md.push('\n');
        }
        let _ = writeln!(md, "![throughput]({CHARTS_DIR}/throughput-{w}.svg)\n");
        let _ = writeln!(md, "![latency]({CHARTS_DIR}/latency-{w}.svg)\n");
        if !s.open_rates_per_second.is_empty() {
            let _ = writeln!(md, "![open loop]({CHARTS_DIR}/open-loop-{w}.svg)\n");
        }
    }

    let failed: Vec<&RunRecord> = report
        .runs
        .iter()
        .filter(|r| r.error.is_some() || r.verification.as_ref().is_some_and(|v| !v.ok))
        .collect();
    if !failed.is_empty() {
        md.push_str("## Problems\n\n");
        for r in failed {
            let _ = writeln!(
                md,
                "- {} {} {}: {}{}",
                r.system.name(),
                r.workload.name(),
                r.load.label(),
                r.error.clone().unwrap_or_default(),
                r.verification
                    .as_ref()
                    .filter(|v| !v.ok)
                    .map(|v| format!(" check failed: {}", v.mismatches.join("; ")))
                    .unwrap_or_default()
            );
        }
    }
    md
}

fn row(md: &mut String, r: &RunRecord, x: &str, open: bool) {
    let name = r.system.name();
    let x = format!("{x} | {}", r.accounts);
    let Some(result) = &r.result else {
        let _ = writeln!(
            md,
            "| {name} | {x} | {} |",
            r.error.clone().unwrap_or_else(|| "no result".into()).replace('\n', " ")
        );
        return;
    };
    let l = &result.latency;
    let res = r.resources.clone().unwrap_or_default();
    let answered = result.approved + result.denied;
    let cpu_per_k = if answered > 0 {
        format!("{:.1}", res.cpu_seconds * 1000.0 * 1000.0 / answered as f64)
    } else {
        "-".into()
    };
    if open {
        let service = result.service_latency.as_ref().map_or("-".into(), |s| ms(s.p99_us));
        let _ = writeln!(
            md,
            "| {name} | {x} | {} | {} | {} | {} | {} | {service} | {} | {} | {} | {} | {} | {:.2} | {} | {} |",
            rate(result.authorizations_per_second),
            rate(result.requests_per_second),
            ms(l.p50_us),
            ms(l.p99_us),
            ms(l.p999_us),
            result.unsent,
            result.late_starts,
            result.approved,
            result.denied,
            errors(r),
            res.cpu_seconds,
            mib(res.peak_rss_kib),
            check(r),
        );
    } else {
        let _ = writeln!(
            md,
            "| {name} | {x} | {} | {} | {} | {} | {} | {} | {} | {} | {:.2} | {cpu_per_k} | {} | {} | {:.2} | {:.2} | {} |",
            rate(result.authorizations_per_second),
            rate(result.requests_per_second),
            ms(l.p50_us),
            ms(l.p99_us),
            ms(l.p999_us),
            result.approved,
            result.denied,
            errors(r),
            res.cpu_seconds,
            mib(res.peak_rss_kib),
            mib(res.peak_pss_kib),
            res.harness_cpu_seconds,
            res.other_cpu_seconds,
            check(r),
        );
    }
}
