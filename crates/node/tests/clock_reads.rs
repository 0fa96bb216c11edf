//! One place reads the wall clock for log time: the leader's stamp
//! (`node/src/proposer/stamp.rs`, bounded by `node/src/clock.rs`). Log time
//! expires holds, sessions and keys on every replica, so a second reader
//! could stamp or compare time the clock policy never bounded.
//!
//! This scans every crate's non-test source for clock reads and fails on
//! any outside the allow-list below, each with its reason. Monotonic reads
//! (`Instant::now`) for durations, deadlines and metrics are fine, but are
//! listed too, so that a new one is a choice someone made.

use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Clock {
    /// Calendar time, which can jump.
    Wall,
    /// `Instant`: cannot jump; for durations and deadlines.
    Monotonic,
}

/// What a clock read looks like, by clock.
const READS: [(&str, Clock); 5] = [
    ("SystemTime::now(", Clock::Wall),
    ("Utc::now(", Clock::Wall),
    ("Local::now(", Clock::Wall),
    ("OffsetDateTime::now", Clock::Wall),
    ("Instant::now(", Clock::Monotonic),
];

/// `(file, or directory ending in '/', clock, reason)`.
type Allowed = (&'static str, Clock, &'static str);

const DURATIONS: &str = "durations and deadlines for metrics, logs and timeouts, never log time";

const ALLOWED: &[Allowed] = &[
    (
        "crates/node/src/proposer/stamp.rs",
        Clock::Wall,
        "THE wall-clock read for log time (`now_ms`), bounded by the clock policy when the leader stamps",
    ),
    (
        "crates/node/src/proposer/stamp.rs",
        Clock::Monotonic,
        "the clock policy's monotonic zero: how much real time passed since start",
    ),
    ("crates/node/src/proposer/mod.rs", Clock::Monotonic, DURATIONS),
    ("crates/node/src/proposer/forward.rs", Clock::Monotonic, DURATIONS),
    ("crates/node/src/reads.rs", Clock::Monotonic, DURATIONS),
    ("crates/node/src/peer.rs", Clock::Monotonic, DURATIONS),
    (
        "crates/node/src/node.rs",
        Clock::Monotonic,
        "rate-limits the clock-skew warning",
    ),
    (
        "crates/node/src/fault.rs",
        Clock::Monotonic,
        "how often the fault-injection clock offset is re-read (fault builds only)",
    ),
    ("crates/node/src/http/", Clock::Monotonic, DURATIONS),
    (
        "crates/storage/src/state_machine.rs",
        Clock::Wall,
        "unique names for snapshot ids and snapshot files, never compared with log time",
    ),
    ("crates/storage/src/state_machine.rs", Clock::Monotonic, DURATIONS),
    ("crates/storage/src/db.rs", Clock::Monotonic, DURATIONS),
    (
        "crates/gateway/src/pay/attempt.rs",
        Clock::Wall,
        "an EIP-3009 authorization's validity window is Unix seconds the merchant checks with its clock",
    ),
    ("crates/gateway/src/upstream.rs", Clock::Monotonic, DURATIONS),
    (
        "crates/spendcap/src/gateway_cmd.rs",
        Clock::Wall,
        "`gateway reconcile` compares payments' validBefore (Unix seconds, the merchant's clock) with now",
    ),
    (
        "crates/x402-merchant/src/config.rs",
        Clock::Wall,
        "the test merchant's own clock for payment validity windows",
    ),
    (
        "crates/bench/src/",
        Clock::Wall,
        "report timestamps of the benchmark harness, which talks to nodes only over HTTP",
    ),
    ("crates/bench/src/", Clock::Monotonic, "the benchmark's measurements"),
];

#[derive(Debug, PartialEq, Eq)]
struct Read {
    label: String,
    line: usize,
    clock: Clock,
    code: String,
}

fn workspace_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The file's lines outside `#[cfg(test)]` modules, without comments.
fn non_test_lines(text: &str) -> Vec<(usize, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim();
        let next = lines.get(i + 1).map(|l| l.trim()).unwrap_or("");
        if line == "#[cfg(test)]" && (next.starts_with("mod ") || next.starts_with("pub mod ")) {
            // Skip the module by brace depth, then keep scanning after it.
            let mut depth = 0i64;
            let mut opened = false;
            i += 1;
            while i < lines.len() {
                for c in lines[i].chars() {
                    match c {
                        '{' => {
                            depth += 1;
                            opened = true;
                        }
                        '}' => depth -= 1,
                        _ => {}
                    }
                }
                i += 1;
                if opened && depth <= 0 {
                    break;
                }
            }
            continue;
        }
        let code = match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        };
        out.push((i + 1, code.to_string()));
        i += 1;
    }
    out
}

/// The clock reads in one file's non-test source.
fn reads_in(label: &str, text: &str) -> Vec<Read> {
    let mut out = Vec::new();
    for (line, code) in non_test_lines(text) {
        for (pattern, clock) in READS {
            if code.contains(pattern) {
                out.push(Read {
                    label: label.to_string(),
                    line,
                    clock,
                    code: code.trim().to_string(),
                });
            }
        }
    }
    out
}

fn covers(entry: &Allowed, read: &Read) -> bool {
    let (path, clock, _) = entry;
    let place = if path.ends_with('/') {
        read.label.starts_with(path)
    } else {
        read.label == *path
    };
    place && *clock == read.clock
}

/// Reads no entry allows.
fn violations(reads: &[Read], allowed: &[Allowed]) -> Vec<String> {
    reads
        .iter()
        .filter(|r| !allowed.iter().any(|a| covers(a, r)))
        .map(|r| format!("{}:{}: {:?} clock read in `{}`", r.label, r.line, r.clock, r.code))
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every clock read in `crates/*/src`.
fn workspace_reads() -> (Vec<Read>, usize) {
    let root = workspace_dir();
    let mut files = Vec::new();
    for krate in std::fs::read_dir(root.join("crates")).expect("crates/").flatten() {
        rust_files(&krate.path().join("src"), &mut files);
    }
    files.sort();
    let mut reads = Vec::new();
    for file in &files {
        let label = file
            .strip_prefix(&root)
            .expect("under the workspace")
            .to_string_lossy()
            .replace('\\', "/");
        let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
        reads.extend(reads_in(&label, &text));
    }
    (reads, files.len())
}

#[test]
fn every_clock_read_is_allowed_with_a_reason() {
    let (reads, files) = workspace_reads();
    assert!(files > 50, "scanned only {files} files");
    assert!(ALLOWED.iter().all(|(_, _, why)| !why.is_empty()));
    let found = violations(&reads, ALLOWED);
    assert!(
        found.is_empty(),
        "clock reads outside the allow-list (read log time through node::proposer::stamp; \
         allow a monotonic read for durations with a reason):\n{}",
        found.join("\n")
    );
    // An entry nothing needs any more would allow the next read unseen.
    let stale: Vec<_> = ALLOWED
        .iter()
        .filter(|a| !reads.iter().any(|r| covers(a, r)))
        .map(|(path, clock, _)| format!("{path} ({clock:?})"))
        .collect();
    assert!(stale.is_empty(), "allow-list entries with no read left: {stale:?}");
}

#[test]
fn the_node_reads_the_wall_clock_in_one_place_and_the_ledger_reads_none() {
    let node_wall: Vec<&str> = ALLOWED
        .iter()
        .filter(|(path, clock, _)| path.starts_with("crates/node/") && *clock == Clock::Wall)
        .map(|(path, _, _)| *path)
        .collect();
    assert_eq!(node_wall, vec!["crates/node/src/proposer/stamp.rs"]);
    assert!(!ALLOWED.iter().any(|(path, _, _)| path.starts_with("crates/ledger/")));
    let (reads, _) = workspace_reads();
    let stamp_reads = reads
        .iter()
        .filter(|r| r.label == "crates/node/src/proposer/stamp.rs" && r.clock == Clock::Wall)
        .count();
    assert_eq!(stamp_reads, 1, "one wall-clock read: `now_ms`");
}

#[test]
fn the_scanner_catches_a_planted_read() {
    let planted = "fn stamp() -> u64 {\n\
                   // SystemTime::now() in a comment is not a read\n\
                   let t = std::time::SystemTime::now();\n\
                   let d = Instant::now();\n\
                   }\n\
                   #[cfg(test)]\n\
                   mod tests {\n\
                   fn t() { let _ = SystemTime::now(); }\n\
                   }\n\
                   fn later() { chrono::Utc::now(); }\n";
    let reads = reads_in("crates/node/src/http/handlers.rs", planted);
    let lines: Vec<(usize, Clock)> = reads.iter().map(|r| (r.line, r.clock)).collect();
    assert_eq!(lines, vec![(3, Clock::Wall), (4, Clock::Monotonic), (10, Clock::Wall)]);
    // The monotonic read is allowed there; the wall-clock reads are not.
    let found = violations(&reads, ALLOWED);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found[0].starts_with("crates/node/src/http/handlers.rs:3:"), "{found:?}");
    // The same wall-clock read in the stamping module is the allowed one.
    let stamp = reads_in("crates/node/src/proposer/stamp.rs", "let t = SystemTime::now();\n");
    assert!(violations(&stamp, ALLOWED).is_empty());
    // A monotonic read in a file not listed is caught too.
    let ledger = reads_in("crates/ledger/src/state.rs", "let t = Instant::now();\n");
    assert_eq!(violations(&ledger, ALLOWED).len(), 1);
}
