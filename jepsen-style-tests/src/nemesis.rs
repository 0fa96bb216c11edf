//! Faults: partitions made with iptables inside each container's network
//! namespace (entered from the host with nsenter, so the image needs no
//! iptables), `docker kill` + start, `docker pause`/unpause, leader-targeted
//! versions of these, a full-cluster restart, and clock skew (the nodes'
//! wall clocks moved by hours or a day; containers share the host's kernel
//! clock, so this needs the fault build's clock hook, `SPENDCAP_FAULT=clock`,
//! which reads an offset from a file in the node's data dir that the nemesis
//! writes with `docker cp`); alone or combined, on a schedule.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::sync::watch;

use crate::client::Api;
use crate::compose::{docker, inspect, run_async, Compose, SERVICES};

/// The fault build's clock offset file in a node's data dir (see
/// crates/node/src/fault.rs).
const CLOCK_OFFSET_FILE: &str = "fault-clock-offset-ms";
use crate::history::NemesisInterval;
use crate::workload::Recorder;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// The leader alone on one side.
    IsolateLeader,
    /// One follower alone on one side.
    IsolateFollower,
    /// A random node against the other two.
    MajorityMinority,
    /// One-way ring: every node hears exactly one peer, so each sees a
    /// different majority.
    MajoritiesRing,
    /// Two nodes cut from each other, the third sees both.
    Bridge,
    Kill,
    KillLeader,
    Pause,
    PauseLeader,
    /// Every node killed, then started again.
    RestartAll,
    /// The leader's wall clock jumps a day ahead.
    ClockAheadLeader,
    /// The leader's wall clock jumps an hour back.
    ClockBehindLeader,
    /// The followers' wall clocks jump a day ahead (one of them is likely to
    /// lead next).
    ClockAheadFollowers,
    /// One follower an hour ahead, the other an hour behind.
    ClockSkewFollowers,
}

impl Fault {
    pub fn name(self) -> &'static str {
        match self {
            Fault::IsolateLeader => "isolate-leader",
            Fault::IsolateFollower => "isolate-follower",
            Fault::MajorityMinority => "majority-minority",
            Fault::MajoritiesRing => "majorities-ring",
            Fault::Bridge => "bridge",
            Fault::Kill => "kill",
            Fault::KillLeader => "kill-leader",
            Fault::Pause => "pause",
            Fault::PauseLeader => "pause-leader",
            Fault::RestartAll => "restart-all",
            Fault::ClockAheadLeader => "clock-ahead-leader",
            Fault::ClockBehindLeader => "clock-behind-leader",
            Fault::ClockAheadFollowers => "clock-ahead-followers",
            Fault::ClockSkewFollowers => "clock-skew-followers",
        }
    }

    /// Needs the fault build's clock hook.
    pub fn is_clock(self) -> bool {
        matches!(
            self,
            Fault::ClockAheadLeader | Fault::ClockBehindLeader | Fault::ClockAheadFollowers | Fault::ClockSkewFollowers
        )
    }

    pub fn is_partition(self) -> bool {
        matches!(
            self,
            Fault::IsolateLeader
                | Fault::IsolateFollower
                | Fault::MajorityMinority
                | Fault::MajoritiesRing
                | Fault::Bridge
        )
    }

    const ALL: [Fault; 10] = [
        Fault::IsolateLeader,
        Fault::IsolateFollower,
        Fault::MajorityMinority,
        Fault::MajoritiesRing,
        Fault::Bridge,
        Fault::Kill,
        Fault::KillLeader,
        Fault::Pause,
        Fault::PauseLeader,
        Fault::RestartAll,
    ];
}

/// One step of a schedule: faults started together, held, then healed.
#[derive(Clone, Debug, Serialize)]
pub struct Step {
    pub faults: Vec<Fault>,
    pub hold_seconds: f64,
    pub quiet_seconds: f64,
}

fn step(faults: &[Fault], hold_seconds: f64, quiet_seconds: f64) -> Step {
    Step {
        faults: faults.to_vec(),
        hold_seconds,
        quiet_seconds,
    }
}

/// Schedule names for `--schedule`.
pub const SCHEDULES: [&str; 6] = ["partitions", "crashes", "mixed", "clock", "random", "none"];

/// How far the clock faults move a wall clock.
const DAY_MS: i64 = 24 * 3600 * 1000;
const HOUR_MS: i64 = 3600 * 1000;

/// The named schedules; each runs about a minute. `random` draws steps
/// (one or two faults each) until `run_seconds` is used, for soaks.
pub fn schedule(name: &str, run_seconds: f64, rng: &mut StdRng) -> anyhow::Result<Vec<Step>> {
    use Fault::*;
    Ok(match name {
        "partitions" => vec![
            step(&[IsolateLeader], 7.0, 4.0),
            step(&[IsolateFollower], 6.0, 4.0),
            step(&[MajoritiesRing], 7.0, 4.0),
            step(&[Bridge], 6.0, 4.0),
            step(&[MajorityMinority], 6.0, 4.0),
        ],
        "crashes" => vec![
            step(&[KillLeader], 5.0, 5.0),
            step(&[Pause], 5.0, 4.0),
            step(&[Kill], 5.0, 5.0),
            step(&[PauseLeader], 5.0, 5.0),
            step(&[RestartAll], 2.0, 8.0),
        ],
        "mixed" => vec![
            step(&[IsolateFollower, KillLeader], 6.0, 5.0),
            step(&[PauseLeader, MajoritiesRing], 6.0, 5.0),
            step(&[Bridge, Kill], 6.0, 5.0),
            step(&[IsolateLeader, Pause], 6.0, 5.0),
            step(&[RestartAll], 2.0, 8.0),
        ],
        // About 45 s; needs the fault image with SPENDCAP_FAULT=clock (or
        // clock-unbounded, which it must find invalid). A clock is never
        // skewed across a restart of its node: a process that starts with a
        // wrong clock is outside what the bound covers (docs/ARCHITECTURE.md).
        "clock" => vec![
            step(&[ClockAheadLeader], 7.0, 3.0),
            step(&[ClockAheadFollowers, KillLeader], 7.0, 3.0),
            step(&[ClockBehindLeader], 5.0, 3.0),
            step(&[ClockAheadLeader, IsolateLeader], 6.0, 3.0),
            step(&[ClockSkewFollowers], 4.0, 1.0),
        ],
        "random" => {
            let mut out = Vec::new();
            let mut used = 0.0;
            // Bounded: at most one step per 4 s of run time.
            let steps_max = (run_seconds / 4.0).ceil().max(1.0) as usize;
            while used < run_seconds && out.len() < steps_max {
                let first = *Fault::ALL.choose(rng).unwrap_or(&Kill);
                let mut faults = vec![first];
                if rng.random_bool(0.4) && first != RestartAll {
                    let second = *Fault::ALL.choose(rng).unwrap_or(&Pause);
                    if second != RestartAll && second.is_partition() != first.is_partition() {
                        faults.push(second);
                    }
                }
                let hold = rng.random_range(3.0..8.0);
                let quiet = rng.random_range(3.0..6.0);
                used += hold + quiet;
                out.push(step(&faults, hold, quiet));
            }
            out
        }
        "none" => vec![],
        other => bail!("unknown schedule {other:?}; one of {}", SCHEDULES.join(", ")),
    })
}

/// Does the faults to the project's own containers, and undoes them.
pub struct Nemesis {
    api: Api,
    containers: [String; 3],
    rng: StdRng,
    /// Where clock offset files are written before `docker cp`.
    scratch: std::path::PathBuf,
    /// Whether any clock was moved (healing then puts every clock back).
    clock_touched: bool,
}

impl Nemesis {
    pub fn new(compose: &Compose, api: Api, seed: u64, scratch: &std::path::Path) -> anyhow::Result<Nemesis> {
        let containers = [
            compose.container(SERVICES[0])?,
            compose.container(SERVICES[1])?,
            compose.container(SERVICES[2])?,
        ];
        Ok(Nemesis {
            api,
            containers,
            rng: StdRng::seed_from_u64(seed ^ 0x6e656d65),
            scratch: scratch.to_path_buf(),
            clock_touched: false,
        })
    }

    /// Sets node `x`'s wall clock offset (the fault build's clock hook reads
    /// it within 50 ms). Works on stopped containers too.
    async fn set_clock(&mut self, x: usize, offset_ms: i64) -> anyhow::Result<()> {
        self.clock_touched = true;
        let file = self.scratch.join(format!("clock-offset-{}", SERVICES[x]));
        std::fs::write(&file, format!("{offset_ms}\n")).with_context(|| format!("writing {}", file.display()))?;
        let dest = format!("{}:/data/{CLOCK_OFFSET_FILE}", self.containers[x]);
        let src = file.to_string_lossy().into_owned();
        run_async(
            docker(&["cp", &src, &dest]),
            format!("docker cp clock offset to {}", SERVICES[x]),
        )
        .await?;
        Ok(())
    }

    /// The leader most nodes name, as an index 0..3.
    pub async fn leader(&self) -> Option<usize> {
        let mut votes: BTreeMap<u64, usize> = BTreeMap::new();
        for n in 1..=3u8 {
            if let Ok(s) = self.api.status(n, Duration::from_millis(800)).await {
                if let Some(l) = s.leader_id {
                    *votes.entry(l).or_default() += 1;
                }
            }
        }
        let (id, _) = votes.into_iter().max_by_key(|(_, c)| *c)?;
        (1..=3).contains(&id).then(|| (id - 1) as usize)
    }

    fn pick(&mut self, avoid: &[usize]) -> usize {
        let choices: Vec<usize> = (0..3).filter(|i| !avoid.contains(i)).collect();
        *choices.choose(&mut self.rng).unwrap_or(&0)
    }

    async fn leader_or_random(&mut self, avoid: &[usize]) -> (usize, &'static str) {
        match self.leader().await {
            Some(l) if !avoid.contains(&l) => (l, " (leader)"),
            _ => (self.pick(avoid), " (no leader seen: random)"),
        }
    }

    async fn follower(&mut self, avoid: &[usize]) -> usize {
        let leader = self.leader().await;
        let mut skip = avoid.to_vec();
        if let Some(l) = leader {
            skip.push(l);
        }
        if skip.len() >= 3 {
            return self.pick(avoid);
        }
        self.pick(&skip)
    }

    /// `victim` drops every packet from `from`.
    async fn drop_from(&self, victim: usize, from: usize) -> anyhow::Result<()> {
        let v = inspect(&self.containers[victim]).await?;
        let f = inspect(&self.containers[from]).await?;
        if v.pid == 0 || f.ip.is_empty() {
            // Not running: nothing to cut.
            return Ok(());
        }
        let mut cmd = std::process::Command::new("nsenter");
        cmd.args([
            "-t",
            &v.pid.to_string(),
            "-n",
            "iptables",
            "-w",
            "5",
            "-A",
            "INPUT",
            "-s",
            &f.ip,
            "-j",
            "DROP",
        ]);
        run_async(cmd, format!("iptables in {}", SERVICES[victim])).await?;
        Ok(())
    }

    async fn cut(&self, pairs: &[(usize, usize)]) -> anyhow::Result<()> {
        for (victim, from) in pairs {
            self.drop_from(*victim, *from).await?;
        }
        Ok(())
    }

    async fn isolate(&self, x: usize) -> anyhow::Result<()> {
        let mut pairs = Vec::new();
        for y in (0..3).filter(|y| *y != x) {
            pairs.push((x, y));
            pairs.push((y, x));
        }
        self.cut(&pairs).await
    }

    /// Starts one fault; `touched` are the nodes earlier faults of the same
    /// step use (a combined step affects different nodes). Says what it did.
    pub async fn start(&mut self, fault: Fault, touched: &mut Vec<usize>) -> anyhow::Result<String> {
        let name = |i: usize| SERVICES[i];
        Ok(match fault {
            Fault::IsolateLeader => {
                let (l, how) = self.leader_or_random(&[]).await;
                self.isolate(l).await?;
                touched.push(l);
                format!("isolate {}{how}", name(l))
            }
            Fault::IsolateFollower => {
                let f = self.follower(&[]).await;
                self.isolate(f).await?;
                touched.push(f);
                format!("isolate {} (follower)", name(f))
            }
            Fault::MajorityMinority => {
                let x = self.pick(&[]);
                self.isolate(x).await?;
                touched.push(x);
                let rest: Vec<&str> = (0..3).filter(|y| *y != x).map(name).collect();
                format!("{} | {}", name(x), rest.join(" "))
            }
            Fault::MajoritiesRing => {
                // Node i hears only node i+1 (one-way drops).
                let pairs = ring_pairs(self.rng.random_range(0..3usize));
                self.cut(&pairs).await?;
                format!(
                    "ring: {}",
                    pairs
                        .iter()
                        .map(|(v, f)| format!("{} deaf to {}", name(*v), name(*f)))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
            Fault::Bridge => {
                let b = self.pick(&[]);
                let (a, c) = ((b + 1) % 3, (b + 2) % 3);
                self.cut(&[(a, c), (c, a)]).await?;
                format!("{} and {} cut, {} bridges", name(a), name(c), name(b))
            }
            Fault::Kill | Fault::KillLeader => {
                let (x, how) = if fault == Fault::KillLeader {
                    self.leader_or_random(touched).await
                } else {
                    (self.pick(touched), "")
                };
                touched.push(x);
                run_async(
                    docker(&["kill", &self.containers[x]]),
                    format!("docker kill {}", name(x)),
                )
                .await?;
                format!("kill {}{how}", name(x))
            }
            Fault::Pause | Fault::PauseLeader => {
                let (x, how) = if fault == Fault::PauseLeader {
                    self.leader_or_random(touched).await
                } else {
                    (self.pick(touched), "")
                };
                touched.push(x);
                run_async(
                    docker(&["pause", &self.containers[x]]),
                    format!("docker pause {}", name(x)),
                )
                .await?;
                format!("pause {}{how}", name(x))
            }
            Fault::RestartAll => {
                for (i, c) in self.containers.iter().enumerate() {
                    run_async(docker(&["kill", c]), format!("docker kill {}", name(i))).await?;
                }
                for (i, c) in self.containers.iter().enumerate() {
                    run_async(docker(&["start", c]), format!("docker start {}", name(i))).await?;
                }
                "kill node1 node2 node3, start them again".to_string()
            }
            Fault::ClockAheadLeader | Fault::ClockBehindLeader => {
                let (l, how) = self.leader_or_random(touched).await;
                touched.push(l);
                let offset = if fault == Fault::ClockAheadLeader {
                    DAY_MS
                } else {
                    -HOUR_MS
                };
                self.set_clock(l, offset).await?;
                format!("{} clock {offset:+} ms{how}", name(l))
            }
            Fault::ClockAheadFollowers | Fault::ClockSkewFollowers => {
                let leader = self.leader().await;
                let followers: Vec<usize> = (0..3).filter(|i| Some(*i) != leader).take(2).collect();
                let mut out = Vec::new();
                for (k, f) in followers.iter().enumerate() {
                    let offset = match (fault, k) {
                        (Fault::ClockAheadFollowers, _) => DAY_MS,
                        (_, 0) => HOUR_MS,
                        _ => -HOUR_MS,
                    };
                    self.set_clock(*f, offset).await?;
                    touched.push(*f);
                    out.push(format!("{} clock {offset:+} ms", name(*f)));
                }
                out.join(", ")
            }
        })
    }

    /// Undoes everything: every clock back (before a stopped node starts
    /// again, so it never starts with a skewed clock), unpause, start what is
    /// stopped, flush the partition rules.
    pub async fn heal(&mut self) -> anyhow::Result<()> {
        if self.clock_touched {
            for i in 0..3 {
                self.set_clock(i, 0).await?;
            }
        }
        for (i, c) in self.containers.iter().enumerate() {
            let s = inspect(c).await?;
            if s.paused {
                run_async(docker(&["unpause", c]), format!("docker unpause {}", SERVICES[i])).await?;
            }
            if !s.running {
                run_async(docker(&["start", c]), format!("docker start {}", SERVICES[i])).await?;
            }
        }
        for (i, c) in self.containers.iter().enumerate() {
            let s = inspect(c).await?;
            if s.pid == 0 {
                bail!("{} is not running after healing", SERVICES[i]);
            }
            let mut cmd = std::process::Command::new("nsenter");
            cmd.args(["-t", &s.pid.to_string(), "-n", "iptables", "-w", "5", "-F", "INPUT"]);
            run_async(cmd, format!("flush iptables in {}", SERVICES[i]))
                .await
                .with_context(|| format!("healing {}", SERVICES[i]))?;
        }
        Ok(())
    }
}

/// One-way drops `(victim, from)` of a majorities ring of three: every node
/// drops exactly one peer, so each hears a different majority (itself and
/// one peer).
fn ring_pairs(shift: usize) -> Vec<(usize, usize)> {
    (0..3).map(|i| ((i + shift) % 3, (i + shift + 2) % 3)).collect()
}

/// Sleeps up to `seconds`, waking early when the run is cancelled.
/// Returns false when cancelled.
pub async fn pause_for(seconds: f64, cancel: &mut watch::Receiver<bool>) -> bool {
    if *cancel.borrow() {
        return false;
    }
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_secs_f64(seconds.max(0.0))) => true,
        _ = cancel.changed() => !*cancel.borrow(),
    }
}

/// Runs a schedule until it ends, `deadline` passes, or the run is
/// cancelled; records each step's interval; heals after every step.
pub async fn run_schedule(
    nemesis: &mut Nemesis,
    steps: &[Step],
    recorder: Arc<Recorder>,
    deadline: tokio::time::Instant,
    mut cancel: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    // Let the workload start under a healthy cluster first.
    if !pause_for(3.0, &mut cancel).await {
        return Ok(());
    }
    for s in steps {
        if tokio::time::Instant::now() >= deadline || *cancel.borrow() {
            break;
        }
        let start_ns = recorder.now_ns();
        let mut touched = Vec::new();
        let mut details = Vec::new();
        for f in &s.faults {
            match nemesis.start(*f, &mut touched).await {
                Ok(d) => details.push((*f, d)),
                Err(e) => details.push((*f, format!("failed: {e:#}"))),
            }
        }
        for (f, d) in &details {
            eprintln!("[{:7.2}s] nemesis {}: {d}", start_ns as f64 / 1e9, f.name());
        }
        let left = deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .as_secs_f64();
        let keep_going = pause_for(s.hold_seconds.min(left), &mut cancel).await;
        let heal = nemesis.heal().await;
        let end_ns = recorder.now_ns();
        eprintln!("[{:7.2}s] nemesis healed", end_ns as f64 / 1e9);
        for (f, d) in details {
            recorder.nemesis(NemesisInterval {
                fault: f.name().to_string(),
                detail: d,
                start_ns,
                end_ns,
            });
        }
        heal?;
        if !keep_going {
            break;
        }
        let left = deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .as_secs_f64();
        if !pause_for(s.quiet_seconds.min(left), &mut cancel).await {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_leaves_each_node_one_peer_and_different_majorities() {
        for shift in 0..3 {
            let pairs = ring_pairs(shift);
            let mut majorities = std::collections::BTreeSet::new();
            for node in 0..3 {
                let deaf: Vec<usize> = pairs.iter().filter(|(v, _)| *v == node).map(|(_, f)| *f).collect();
                assert_eq!(deaf.len(), 1, "node {node} must drop exactly one peer");
                assert_ne!(deaf[0], node);
                let hears: Vec<usize> = (0..3).filter(|p| !deaf.contains(p)).collect();
                majorities.insert(hears);
            }
            assert_eq!(majorities.len(), 3, "each node sees a different majority");
        }
    }

    #[test]
    fn schedules_are_bounded_and_named() {
        let mut rng = StdRng::seed_from_u64(7);
        for name in SCHEDULES {
            let steps = schedule(name, 60.0, &mut rng).expect("known schedule");
            let total: f64 = steps.iter().map(|s| s.hold_seconds + s.quiet_seconds).sum();
            assert!(total <= 75.0, "{name} takes {total} s");
            // Only the clock schedule needs the fault build's clock hook.
            let clock = steps.iter().any(|s| s.faults.iter().any(|f| f.is_clock()));
            assert_eq!(clock, name == "clock", "{name}");
            if name == "clock" {
                assert!(total + 3.0 <= 45.0, "the clock schedule takes {total} s");
            }
        }
        let soak = schedule("random", 600.0, &mut rng).expect("random");
        assert!(soak.len() <= 150 && !soak.is_empty());
        assert!(soak.iter().all(|s| !s.faults.is_empty() && s.faults.len() <= 2));
        assert!(schedule("nope", 60.0, &mut rng).is_err());
    }
}
