//! What the numbers were measured on: CPU, memory, kernel, the file system
//! under the data directories, how long an fsync takes there, and the
//! versions of the servers.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::latency::{Latencies, LatencySummary};

/// 8 KiB writes, each followed by fdatasync, that the fsync probe makes.
const FSYNC_PROBE_WRITES: usize = 100;
const FSYNC_PROBE_BYTES: usize = 8192;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MachineInfo {
    pub cpu_model: String,
    pub cores: usize,
    pub memory_total_kib: u64,
    pub kernel: String,
    pub os: String,
    /// `/proc/loadavg` when the comparison started: other work on the
    /// machine disturbs the numbers.
    pub load_average: String,
    pub data_dir: String,
    /// Mount point, device and type of the file system holding the data.
    pub data_filesystem: String,
    /// One 8 KiB write + fdatasync, in the data directory.
    pub fsync: Option<LatencySummary>,
    pub versions: BTreeMap<String, String>,
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or("").trim().to_string()
}

/// The first line a program prints for `args` (stdout, else stderr).
pub fn program_version(program: &Path, args: &[&str]) -> String {
    match Command::new(program).args(args).output() {
        Ok(out) => {
            let line = first_line(&String::from_utf8_lossy(&out.stdout));
            if line.is_empty() {
                first_line(&String::from_utf8_lossy(&out.stderr))
            } else {
                line
            }
        }
        Err(e) => format!("unavailable ({e})"),
    }
}

/// The mount entry with the longest mount point containing `path`.
fn filesystem_of(path: &Path) -> String {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    mounts
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            (f.len() >= 3 && path.starts_with(f[1])).then(|| (f[1].len(), format!("{} on {} ({})", f[0], f[1], f[2])))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, text)| text)
        .unwrap_or_default()
}

fn fsync_probe(dir: &Path) -> Option<LatencySummary> {
    let path = dir.join("fsync-probe");
    let mut file = std::fs::File::create(&path).ok()?;
    let block = vec![0x5au8; FSYNC_PROBE_BYTES];
    let mut latencies = Latencies::new();
    for _ in 0..FSYNC_PROBE_WRITES {
        let started = Instant::now();
        file.write_all(&block).ok()?;
        file.sync_data().ok()?;
        latencies.record(started.elapsed());
    }
    let _ = std::fs::remove_file(&path);
    Some(latencies.summary())
}

impl MachineInfo {
    pub fn collect(data_dir: &Path, versions: BTreeMap<String, String>) -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")
                    .and_then(|r| r.split_once(':'))
                    .map(|(_, m)| m.trim().to_string())
            })
            .unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let os_release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
        Self {
            cpu_model,
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            memory_total_kib: crate::procs::parse_kib_field(&meminfo, "MemTotal").unwrap_or(0),
            kernel: first_line(&std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default()),
            os: os_release
                .lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .unwrap_or("")
                .trim_matches('"')
                .to_string(),
            load_average: first_line(&std::fs::read_to_string("/proc/loadavg").unwrap_or_default()),
            data_dir: data_dir.display().to_string(),
            data_filesystem: filesystem_of(data_dir),
            fsync: fsync_probe(data_dir),
            versions,
        }
    }
}

/// `YYYYMMDDTHHMMSSZ` for a moment (UTC).
pub fn utc_stamp(at: SystemTime) -> String {
    let seconds = at.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs();
    let (days, rest) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// Gregorian date of a day count since 1970-01-01, by counting 400-year
/// eras of 146,097 days whose years start in March (so leap days fall at
/// the end of a year).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let shifted = days + 719_468; // days from 0000-03-01 to 1970-01-01
    let era = shifted / 146_097;
    let day_of_era = shifted % 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_known_moments() {
        let at = |s: u64| UNIX_EPOCH + Duration::from_secs(s);
        assert_eq!(utc_stamp(at(0)), "19700101T000000Z");
        assert_eq!(utc_stamp(at(951_782_400)), "20000229T000000Z");
        assert_eq!(utc_stamp(at(1_709_251_199)), "20240229T235959Z");
        assert_eq!(utc_stamp(at(1_798_761_600)), "20270101T000000Z");
    }

    #[test]
    fn collects_something_real() {
        let dir = tempfile::tempdir().unwrap();
        let info = MachineInfo::collect(dir.path(), BTreeMap::new());
        assert!(info.cores >= 1);
        assert!(info.memory_total_kib > 0);
        assert!(!info.data_filesystem.is_empty());
        assert_eq!(info.fsync.unwrap().count, FSYNC_PROBE_WRITES as u64);
    }
}
