//! Apply never panics: the ledger's non-test source (and the decimal codec
//! it parses amounts with, and the storage state machine, which applies
//! entries for the node) may not call anything that panics on a bad value. Every failed check is a typed refusal instead.

use std::path::{Path, PathBuf};

/// Calls that panic when their value is not what the code hoped for.
const FORBIDDEN: [&str; 6] = [
    ".expect(",
    ".unwrap(",
    "panic!",
    "unreachable!",
    "unimplemented!",
    "todo!",
];

/// `(file, trimmed line, reason)`: the only forbidden calls allowed to stay.
/// Add one only when the call truly cannot be avoided, and say why.
const POISON: &str = "a poisoned state lock means an apply panicked half-way (which the ledger no longer can): \
the in-memory state is then untrustworthy, and stopping beats serving it; not reachable from any input";
const ALLOWED: [(&str, &str, &str); 2] = [
    (
        "crates/storage/src/state_machine.rs",
        "self.state.read().expect(\"state lock poisoned: apply panicked\")",
        POISON,
    ),
    (
        "crates/storage/src/state_machine.rs",
        "let mut state = self.state.write().expect(\"state lock poisoned: apply panicked\");",
        POISON,
    ),
];

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The file's lines up to its `#[cfg(test)]` module, without comments.
fn non_test_lines(text: &str) -> Vec<(usize, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim();
        let next = lines.get(i + 1).map(|l| l.trim()).unwrap_or("");
        if line == "#[cfg(test)]" && (next.starts_with("mod ") || next.starts_with("pub mod ")) {
            // Test modules sit at the end of each file in this crate: skip
            // the module by brace depth, then keep scanning after it.
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

fn scan(path: &Path, label: &str, findings: &mut Vec<String>) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    for (n, code) in non_test_lines(&text) {
        for pattern in FORBIDDEN {
            if code.contains(pattern) && !ALLOWED.iter().any(|(f, l, _)| *f == label && code.trim() == *l) {
                findings.push(format!("{label}:{n}: `{pattern}` in `{}`", code.trim()));
            }
        }
    }
}

/// The `.rs` files under `dir`, recursively, in a fixed order.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.unwrap_or_else(|e| panic!("read {}: {e}", dir.display())).path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

#[test]
fn no_panicking_calls_on_the_apply_path() {
    let dir = crate_dir();
    let mut findings = Vec::new();
    let mut scanned = 0;
    // Every source file of the ledger, however the modules are split.
    let src = dir.join("src");
    for path in rust_files(&src) {
        let rel = path
            .strip_prefix(&src)
            .unwrap_or(&path)
            .to_string_lossy()
            .replace('\\', "/");
        scan(&path, &format!("crates/ledger/src/{rel}"), &mut findings);
        scanned += 1;
    }
    // The decimal codec parses amounts inside apply (`AmountInput::resolve`).
    scan(
        &dir.join("../decimal/src/lib.rs"),
        "crates/decimal/src/lib.rs",
        &mut findings,
    );
    scanned += 1;
    let sm = dir.join("../storage/src/state_machine.rs");
    if sm.exists() {
        scan(&sm, "crates/storage/src/state_machine.rs", &mut findings);
        scanned += 1;
    }
    // lib.rs, the modules and the state's files: a wrong path scans nothing.
    assert!(scanned >= 14, "scanned only {scanned} files");
    assert!(ALLOWED.iter().all(|(_, _, why)| !why.is_empty()));
    assert!(
        findings.is_empty(),
        "panicking calls on the apply path:\n{}",
        findings.join("\n")
    );
}

#[test]
fn the_scanner_finds_what_it_looks_for() {
    let sample = "fn a() { x.unwrap(); }\n// y.expect(\"comment\")\n#[cfg(test)]\nmod tests {\n  fn t() { z.unwrap(); }\n}\nfn b() { panic!(\"no\") }\n";
    let lines = non_test_lines(sample);
    let hits: Vec<usize> = lines
        .iter()
        .filter(|(_, code)| FORBIDDEN.iter().any(|p| code.contains(p)))
        .map(|(n, _)| *n)
        .collect();
    assert_eq!(hits, vec![1, 7]);
}
