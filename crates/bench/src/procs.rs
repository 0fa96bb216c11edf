//! Server processes the harness starts, and what they cost: CPU time from
//! `/proc/<pid>/stat` (and `schedstat`, see [`cpu_nanos`]), peak RSS from `VmHWM` in `/proc/<pid>/status` (reset
//! at the start of each measured window through `clear_refs`), and sampled
//! PSS from `/proc/<pid>/smaps_rollup`, summed over each server's process
//! tree (PostgreSQL forks a backend per connection).

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{BenchError, Result};

/// How long a server gets to exit after its stop signal before SIGKILL.
pub const STOP_GRACE_SECONDS: u64 = 10;
/// Log lines quoted when a server dies early.
const LOG_TAIL_LINES: usize = 20;
/// How often the PSS sampler looks at the servers.
const PSS_SAMPLE_INTERVAL_MILLIS: u64 = 250;

/// A server process the harness started; stopped (signal, then SIGKILL) on
/// drop. It also gets SIGTERM if the harness dies first.
#[derive(Debug)]
pub struct ServerProcess {
    pub label: String,
    pub log_path: PathBuf,
    child: Child,
    stop_signal: libc::c_int,
    stopped: bool,
}

/// Which user a server runs as (PostgreSQL refuses to run as root).
#[derive(Clone, Copy, Debug)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
}

impl ServerProcess {
    /// Starts `command` as this user, logging to `<log_dir>/<label>.log`,
    /// stopped with SIGTERM: how the peers' servers are started.
    pub fn start(label: impl Into<String>, command: Command, log_dir: &Path) -> Result<Self> {
        let label = label.into();
        let log_path = log_dir.join(format!("{label}.log"));
        Self::spawn(label, command, &log_path, None, libc::SIGTERM)
    }

    /// Starts `command` with stdout and stderr appended to `log_path`.
    pub fn spawn(
        label: impl Into<String>,
        mut command: Command,
        log_path: &Path,
        run_as: Option<RunAs>,
        stop_signal: libc::c_int,
    ) -> Result<Self> {
        let label = label.into();
        let log = File::options()
            .create(true)
            .append(true)
            .open(log_path)
            .map_err(|e| BenchError::io(format!("opening {}", log_path.display()), e))?;
        let log_err = log
            .try_clone()
            .map_err(|e| BenchError::io("duplicating a log handle", e))?;
        command.stdin(Stdio::null()).stdout(log).stderr(log_err);
        if let Some(user) = run_as {
            command.uid(user.uid).gid(user.gid);
        }
        // SAFETY: the closure runs in the child between fork and exec and
        // only calls prctl, which is async-signal-safe. std runs it after
        // switching uid, so the setting survives the credential change.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let program = PathBuf::from(command.get_program());
        let child = command.spawn().map_err(|source| BenchError::Spawn {
            what: label.clone(),
            program,
            source,
        })?;
        Ok(Self {
            label,
            log_path: log_path.to_path_buf(),
            child,
            stop_signal,
            stopped: false,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails, quoting the log, if the process has exited.
    pub fn check_running(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => {
                self.stopped = true;
                Err(BenchError::Exited {
                    what: self.label.clone(),
                    status: status.to_string(),
                    log_tail: log_tail(&self.log_path),
                })
            }
            Err(e) => Err(BenchError::io(format!("waiting for {}", self.label), e)),
        }
    }

    /// The exit status if the process has exited.
    pub fn exit_status(&mut self) -> Result<Option<std::process::ExitStatus>> {
        let status = self
            .child
            .try_wait()
            .map_err(|e| BenchError::io(format!("waiting for {}", self.label), e))?;
        if status.is_some() {
            self.stopped = true;
        }
        Ok(status)
    }

    /// Sends the stop signal, waits up to the grace period, then kills.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: plain syscall on a child we have not yet reaped, so
            // the pid still names it.
            unsafe {
                libc::kill(pid, self.stop_signal);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(STOP_GRACE_SECONDS);
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The last lines of a log file, for error messages.
pub fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(LOG_TAIL_LINES);
    lines[start..].join("\n")
}

/// One line of `/proc/<pid>/stat`, the fields the harness needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcStat {
    pub ppid: u32,
    /// utime + stime + cutime + cstime, in clock ticks: the process's own
    /// CPU time plus that of the children it has reaped.
    pub cpu_ticks: u64,
    /// cutime + cstime alone.
    pub children_ticks: u64,
}

/// Parses `/proc/<pid>/stat` text. The command name sits in parentheses and
/// may itself hold spaces and parentheses, so fields are counted from the
/// last `)`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let after = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the name: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14).
    let num = |i: usize| fields.get(i)?.parse::<i64>().ok();
    let ticks = [num(11)?, num(12)?, num(13)?, num(14)?];
    let ticks = ticks.map(|t| t.max(0) as u64);
    Some(ProcStat {
        ppid: u32::try_from(num(1)?).ok()?,
        cpu_ticks: ticks.iter().sum(),
        children_ticks: ticks[2] + ticks[3],
    })
}

pub fn read_stat(pid: u32) -> Option<ProcStat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// A `kB` field of `/proc/<pid>/status` or `smaps_rollup` text.
pub fn parse_kib_field(text: &str, field: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

pub fn read_hwm_kib(pid: u32) -> Option<u64> {
    parse_kib_field(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?, "VmHWM")
}

pub fn read_pss_kib(pid: u32) -> Option<u64> {
    parse_kib_field(
        &std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?,
        "Pss",
    )
}

/// Resets the process's peak RSS to its current RSS (Linux 4.0+; needs
/// root or the same user).
pub fn reset_hwm(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// Busy clock ticks of the whole machine (every CPU state but idle and
/// iowait), from the first line of `/proc/stat` text.
pub fn parse_busy_ticks(proc_stat: &str) -> Option<u64> {
    let line = proc_stat.lines().next()?.strip_prefix("cpu ")?;
    let ticks: Vec<u64> = line.split_whitespace().filter_map(|f| f.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest time is already
    // inside user and nice).
    let (idle, iowait) = (*ticks.get(3)?, *ticks.get(4)?);
    let all: u64 = ticks.iter().take(8).sum();
    Some(all.saturating_sub(idle + iowait))
}

fn machine_busy_ticks() -> u64 {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|t| parse_busy_ticks(&t))
        .unwrap_or(0)
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`).
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as u64
    } else {
        100
    }
}

/// Each root with all its live descendants.
pub fn process_trees(roots: &[u32]) -> BTreeMap<u32, Vec<u32>> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(stat) = read_stat(pid) {
                children.entry(stat.ppid).or_default().push(pid);
            }
        }
    }
    roots
        .iter()
        .map(|&root| {
            let mut tree = vec![root];
            let mut next = 0;
            while next < tree.len() {
                if let Some(kids) = children.get(&tree[next]) {
                    tree.extend(kids.iter().copied());
                }
                next += 1;
            }
            (root, tree)
        })
        .collect()
}

/// A process's CPU time in nanoseconds, its own plus its reaped
/// children's.
///
/// `/proc/<pid>/stat` counts in clock ticks (10 ms) and truncates: a
/// PostgreSQL backend that ran 7 ms reads 0, so fifty lightly loaded
/// backends can hide a third of a second. A single-threaded process's own
/// time is therefore read in nanoseconds from `/proc/<pid>/schedstat`
/// (which covers only one thread, hence not for multi-threaded servers,
/// whose own times are large enough for ticks). Reaped children's time
/// exists only in ticks, in the parent's `stat`.
pub fn cpu_nanos(pid: u32, nanos_per_tick: u64) -> Option<u64> {
    let stat = read_stat(pid)?;
    let children = stat.children_ticks * nanos_per_tick;
    let own_ticks = (stat.cpu_ticks - stat.children_ticks) * nanos_per_tick;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let single_threaded = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .is_some_and(|n| n.trim() == "1");
    let own = if single_threaded {
        std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
            .ok()
            .and_then(|t| t.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(own_ticks)
    } else {
        own_ticks
    };
    Some(children + own)
}

/// CPU nanoseconds of each root's tree.
fn tree_nanos(trees: &BTreeMap<u32, Vec<u32>>) -> BTreeMap<u32, u64> {
    let per_tick = 1_000_000_000 / clock_ticks_per_second();
    trees
        .iter()
        .map(|(&root, pids)| (root, pids.iter().filter_map(|&p| cpu_nanos(p, per_tick)).sum()))
        .collect()
}

/// What one server process (with its children) used in a window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessUsage {
    pub label: String,
    pub pid: u32,
    pub processes: usize,
    pub cpu_seconds: f64,
    /// Sum of VmHWM over the tree (shared pages count once per process).
    pub peak_rss_kib: u64,
}

/// What all of a system's server processes used in a window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourceUsage {
    pub cpu_seconds: f64,
    pub peak_rss_kib: u64,
    /// Highest sampled sum of PSS over all the system's processes (shared
    /// pages split between the processes that map them).
    pub peak_pss_kib: u64,
    /// False when VmHWM could not be reset (then peak RSS is since start).
    pub rss_window_reset: bool,
    /// CPU the load generator itself used (it shares the machine).
    pub harness_cpu_seconds: f64,
    /// CPU everything else on the machine used meanwhile: a disturbed run
    /// shows here.
    pub other_cpu_seconds: f64,
    pub processes: Vec<ProcessUsage>,
}

/// Measures a window: start it when the measured window starts, finish it
/// when it ends.
pub struct ResourceMeter {
    roots: Vec<(String, u32)>,
    start_nanos: BTreeMap<u32, u64>,
    start_self_ticks: u64,
    start_busy_ticks: u64,
    reset_ok: bool,
    peak_pss_kib: Arc<AtomicU64>,
    sampling: Arc<AtomicBool>,
    sampler: Option<tokio::task::JoinHandle<()>>,
}

impl ResourceMeter {
    pub fn start(roots: Vec<(String, u32)>) -> Self {
        let pids: Vec<u32> = roots.iter().map(|r| r.1).collect();
        let trees = process_trees(&pids);
        let mut reset_ok = true;
        for pid in trees.values().flatten() {
            reset_ok &= reset_hwm(*pid);
        }
        let start_nanos = tree_nanos(&trees);
        let peak_pss_kib = Arc::new(AtomicU64::new(0));
        let sampling = Arc::new(AtomicBool::new(true));
        let sampler = {
            let peak = peak_pss_kib.clone();
            let sampling = sampling.clone();
            tokio::task::spawn_blocking(move || {
                // Bounded: the meter clears `sampling` when it finishes or
                // is dropped, and the loop re-checks it every interval.
                while sampling.load(Ordering::Relaxed) {
                    let total: u64 = process_trees(&pids)
                        .values()
                        .flatten()
                        .filter_map(|&p| read_pss_kib(p))
                        .sum();
                    peak.fetch_max(total, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(PSS_SAMPLE_INTERVAL_MILLIS));
                }
            })
        };
        Self {
            roots,
            start_nanos,
            start_self_ticks: read_stat(std::process::id()).map_or(0, |s| s.cpu_ticks),
            start_busy_ticks: machine_busy_ticks(),
            reset_ok,
            peak_pss_kib,
            sampling,
            sampler: Some(sampler),
        }
    }

    pub async fn finish(mut self) -> ResourceUsage {
        self.sampling.store(false, Ordering::Relaxed);
        if let Some(sampler) = self.sampler.take() {
            let _ = sampler.await;
        }
        let hz = clock_ticks_per_second() as f64;
        let pids: Vec<u32> = self.roots.iter().map(|r| r.1).collect();
        let trees = process_trees(&pids);
        let end_nanos = tree_nanos(&trees);
        let mut usage = ResourceUsage {
            rss_window_reset: self.reset_ok,
            peak_pss_kib: self.peak_pss_kib.load(Ordering::Relaxed),
            ..ResourceUsage::default()
        };
        for (label, pid) in &self.roots {
            let tree = trees.get(pid).cloned().unwrap_or_default();
            let before = self.start_nanos.get(pid).copied().unwrap_or(0);
            let after = end_nanos.get(pid).copied().unwrap_or(before);
            let p = ProcessUsage {
                label: label.clone(),
                pid: *pid,
                processes: tree.len(),
                cpu_seconds: after.saturating_sub(before) as f64 / 1e9,
                peak_rss_kib: tree.iter().filter_map(|&p| read_hwm_kib(p)).sum(),
            };
            usage.cpu_seconds += p.cpu_seconds;
            usage.peak_rss_kib += p.peak_rss_kib;
            usage.processes.push(p);
        }
        let self_ticks = read_stat(std::process::id()).map_or(0, |s| s.cpu_ticks);
        usage.harness_cpu_seconds = self_ticks.saturating_sub(self.start_self_ticks) as f64 / hz;
        let busy = machine_busy_ticks().saturating_sub(self.start_busy_ticks) as f64 / hz;
        usage.other_cpu_seconds = (busy - usage.cpu_seconds - usage.harness_cpu_seconds).max(0.0);
        usage
    }
}

impl Drop for ResourceMeter {
    fn drop(&mut self) {
        self.sampling.store(false, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_awkward_names() {
        let line = "1234 (post (gres) x) S 77 1234 1234 0 -1 4194560 100 0 0 0 \
                    250 50 7 3 20 0 1 0 100 1000000 200 18446744073709551615";
        let s = parse_stat(line).unwrap();
        assert_eq!(s.ppid, 77);
        assert_eq!(s.cpu_ticks, 250 + 50 + 7 + 3);
        assert_eq!(s.children_ticks, 7 + 3);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn parses_kib_fields() {
        let status = "Name:\tredis\nVmPeak:\t  9000 kB\nVmHWM:\t    4321 kB\nVmRSS:\t 100 kB\n";
        assert_eq!(parse_kib_field(status, "VmHWM"), Some(4321));
        assert_eq!(parse_kib_field(status, "Pss"), None);
        let rollup = "55d0-7ff [rollup]\nRss:  2000 kB\nPss:  1500 kB\nPss_Anon: 1000 kB\n";
        assert_eq!(parse_kib_field(rollup, "Pss"), Some(1500));
    }

    #[test]
    fn parses_machine_busy_ticks() {
        let stat = "cpu  100 5 50 1000 20 3 2 1 0 0\ncpu0 50 2 25 500 10 1 1 0 0 0\n";
        assert_eq!(parse_busy_ticks(stat), Some(100 + 5 + 50 + 3 + 2 + 1));
        assert_eq!(parse_busy_ticks("intr 1 2 3"), None);
    }

    #[test]
    fn reads_own_process() {
        let me = std::process::id();
        assert!(read_stat(me).is_some());
        assert!(read_hwm_kib(me).unwrap() > 0);
        let trees = process_trees(&[me]);
        assert_eq!(trees[&me][0], me);
    }

    #[tokio::test]
    async fn measures_a_child_and_stops_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg("i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; sleep 30");
        let mut p = ServerProcess::spawn("sh", cmd, &dir.path().join("sh.log"), None, libc::SIGTERM).unwrap();
        let meter = ResourceMeter::start(vec![("sh".into(), p.pid())]);
        tokio::time::sleep(Duration::from_millis(600)).await;
        let usage = meter.finish().await;
        assert_eq!(usage.processes.len(), 1);
        assert!(usage.cpu_seconds > 0.0, "{usage:?}");
        assert!(usage.peak_rss_kib > 0, "{usage:?}");
        assert!(usage.peak_pss_kib > 0, "{usage:?}");
        p.check_running().unwrap();
        let started = Instant::now();
        p.stop();
        assert!(started.elapsed() < Duration::from_secs(STOP_GRACE_SECONDS));
    }
}
