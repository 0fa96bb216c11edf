//! The workloads and the clients that run them, the recorder that writes
//! every operation down, the setup before and the final phase after.
//!
//! (a) seed: many sessions with $25 caps; each gets a burst of six
//!     concurrent authorizations ($10, $10, $5, $10, $10, $10) and two reads
//!     spread over the nodes; (b) holds: authorize, then capture, partial
//!     capture, void or let expire, with idempotent retries; (c) hierarchy:
//!     sessions drawing on two team budgets under one org budget with a
//!     per-tool cap; (d) linearizable reads of what is left; (e) churn, while
//!     the rest runs: a session factory creates fresh sessions for (a)-(c)
//!     (so approvals stay a steady share instead of every session running
//!     dry), one raiser raises the team and org caps (`PATCH` budget), and
//!     clients now and then take a private session through its own token,
//!     a token rotation (the old token must then be refused) and a
//!     revocation (then denied `session_revoked`).

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use api::{CreateBudgetRequest, CreateSessionRequest, CreateSessionResponse};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;

use crate::client::Api;
use crate::final_state::{DigestFinal, FinalState, NodeFinal};
use crate::history::{
    hold_number, BudgetSpec, NemesisInterval, Op, Outcome, Phase, Request, Response, SessionSpec, Setup, Workload,
    DOLLAR,
};

pub fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Writes every operation down with its real times.
pub struct Recorder {
    start: Instant,
    pub start_wall_ms: u64,
    ops: Mutex<Vec<Op>>,
    nemesis: Mutex<Vec<NemesisInterval>>,
    next_op: AtomicU64,
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder {
            start: Instant::now(),
            start_wall_ms: wall_ms(),
            ops: Mutex::new(Vec::new()),
            nemesis: Mutex::new(Vec::new()),
            next_op: AtomicU64::new(0),
        }
    }

    pub fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    pub fn operations(&self) -> u64 {
        self.next_op.load(Ordering::Relaxed)
    }

    pub fn nemesis(&self, interval: NemesisInterval) {
        if let Ok(mut n) = self.nemesis.lock() {
            n.push(interval);
        }
    }

    pub fn snapshot(&self) -> (Vec<Op>, Vec<NemesisInterval>) {
        let ops = self.ops.lock().map(|o| o.clone()).unwrap_or_default();
        let nemesis = self.nemesis.lock().map(|n| n.clone()).unwrap_or_default();
        (ops, nemesis)
    }

    /// Sends one request and records it: invoke, then ok / fail / info.
    pub async fn run(
        &self,
        api: &Api,
        process: u64,
        node: u8,
        workload: Workload,
        phase: Phase,
        request: Request,
    ) -> Outcome {
        let id = self.next_op.fetch_add(1, Ordering::Relaxed);
        let invoke_ns = self.now_ns();
        let invoke_wall_ms = wall_ms();
        let (outcome, log_time_ms) = api.execute(node, &request).await;
        let op = Op {
            id,
            process,
            node,
            workload,
            phase,
            request,
            invoke_ns,
            complete_ns: self.now_ns(),
            invoke_wall_ms,
            complete_wall_ms: wall_ms(),
            outcome: outcome.clone(),
            log_time_ms,
        };
        if let Ok(mut ops) = self.ops.lock() {
            ops.push(op);
        }
        outcome
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

#[derive(Clone, Debug)]
pub struct WorkloadConfig {
    pub clients: usize,
    pub seed_sessions: usize,
    pub operations_max: u64,
    /// Retries of an unknown operation during the run (same key).
    pub unknown_retries_max: u32,
    pub seed: u64,
}

const HOLD_SESSIONS: usize = 16;
const TEAM_SESSIONS: usize = 16;
/// Fresh sessions the factory makes per second for the holds and the
/// hierarchy workloads each (the newest `HOLD_SESSIONS` / `TEAM_SESSIONS`
/// are in use).
const FRESH_SESSIONS_PER_SECOND: u64 = 8;
/// Fresh seed sessions the factory keeps ready ahead of the seed bursts.
const FRESH_SEED_LEAD: u64 = 40;
/// Seed bursts whose session is remembered (the latest ones).
const SEED_BURSTS_REMEMBERED_MAX: usize = 4096;
/// Fresh sessions made in one run, at most (per kind).
const FRESH_SESSIONS_MAX: u64 = 20_000;
/// How often the raiser raises the team and org caps, and by how much.
const RAISE_INTERVAL: Duration = Duration::from_millis(500);
const TEAM_RAISE: u64 = 20 * DOLLAR;
const ORG_RAISE: u64 = 40 * DOLLAR;
/// Share (percent) of client iterations that run the churn flow.
const CHURN_PERCENT: u8 = 4;
/// Lifetime of every session of the run: far past its end, so any
/// `session_expired` is an early expiry.
pub const SESSION_LIFETIME_SECONDS: u64 = 7200;
const SEED_CAP: u64 = 25 * DOLLAR;
/// Operations per seed session: six authorizations, two reads.
const SEED_BURST: u64 = 8;
const LONG_HOLD_SECONDS: u64 = 600;
/// The session the final phase writes to once, so that an entry stamped
/// after every short deadline exists (and expiry has been applied).
pub const TICK_SESSION: &str = "tick";

/// Creates the budgets and sessions; retried until the cluster takes them
/// (creation with an explicit id is idempotent).
pub async fn setup(api: &Api, config: &WorkloadConfig, deadline: Instant) -> anyhow::Result<Setup> {
    let budgets = vec![
        BudgetSpec {
            id: "org:jepsen".into(),
            cap: 400 * DOLLAR,
            parent: None,
            tool_caps: BTreeMap::from([("llm".to_string(), 250 * DOLLAR)]),
        },
        BudgetSpec {
            id: "team:a".into(),
            cap: 150 * DOLLAR,
            parent: Some("org:jepsen".into()),
            tool_caps: BTreeMap::new(),
        },
        BudgetSpec {
            id: "team:b".into(),
            cap: 150 * DOLLAR,
            parent: Some("org:jepsen".into()),
            tool_caps: BTreeMap::new(),
        },
    ];
    for b in &budgets {
        let body = CreateBudgetRequest {
            id: b.id.clone(),
            cap: crate::history::format_amount(b.cap),
            asset: None,
            decimals: None,
            tool_caps: b
                .tool_caps
                .iter()
                .map(|(t, c)| (t.clone(), crate::history::format_amount(*c)))
                .collect(),
            parent: b.parent.clone(),
            blocked_tools: Default::default(),
        };
        retry_until(deadline, |node| {
            let body = body.clone();
            async move {
                api.post::<serde_json::Value>(node, "/v1/budgets", &body, None)
                    .await
                    .map(|_| ())
            }
        })
        .await
        .map_err(|e| anyhow::anyhow!("creating budget {}: {e}", b.id))?;
    }

    // (id, workload, cap, budget, tool caps)
    type Wanted = (String, Workload, u64, Option<String>, BTreeMap<String, u64>);
    let mut wanted: Vec<Wanted> = Vec::new();
    wanted.push((
        TICK_SESSION.into(),
        Workload::Seed,
        1000 * DOLLAR,
        None,
        BTreeMap::new(),
    ));
    for i in 0..config.seed_sessions {
        wanted.push((format!("seed-{i}"), Workload::Seed, SEED_CAP, None, BTreeMap::new()));
    }
    for i in 0..HOLD_SESSIONS {
        wanted.push((
            format!("hold-{i}"),
            Workload::Holds,
            100 * DOLLAR,
            None,
            BTreeMap::new(),
        ));
    }
    for i in 0..TEAM_SESSIONS {
        let team = if i % 2 == 0 { "team:a" } else { "team:b" };
        wanted.push((
            format!("team-{i}"),
            Workload::Hierarchy,
            60 * DOLLAR,
            Some(team.into()),
            BTreeMap::from([("llm".to_string(), 40 * DOLLAR)]),
        ));
    }
    // A few at a time.
    let mut sessions = Vec::with_capacity(wanted.len());
    for chunk in wanted.chunks(16) {
        let mut set = tokio::task::JoinSet::new();
        for (id, workload, cap, budget, tool_caps) in chunk.iter().cloned() {
            let api = api.clone();
            set.spawn(async move {
                let body = CreateSessionRequest {
                    id: Some(id.clone()),
                    cap: crate::history::format_amount(cap),
                    asset: None,
                    decimals: None,
                    expires_in_seconds: Some(SESSION_LIFETIME_SECONDS),
                    agent_id: format!("jepsen-{id}"),
                    wallet_address: None,
                    tool_caps: tool_caps
                        .iter()
                        .map(|(t, c)| (t.clone(), crate::history::format_amount(*c)))
                        .collect(),
                    budget: budget.clone(),
                    tools: None,
                    // The suite's model does not count live holds: keep the
                    // per-session limit out of the schedule's reach.
                    live_holds_max: Some(100_000),
                    // Chosen here, so the retries below are replays of one
                    // create (same id, parameters and token), not 409s.
                    token: Some(format!(
                        "sct_{:032x}{:032x}",
                        rand::random::<u128>(),
                        rand::random::<u128>()
                    )),
                };
                let r: CreateSessionResponse = retry_until(deadline, |node| {
                    let body = body.clone();
                    let api = api.clone();
                    async move { api.post(node, "/v1/sessions", &body, None).await }
                })
                .await
                .map_err(|e| anyhow::anyhow!("creating session {id}: {e}"))?;
                if r.session.decimals != crate::history::DECIMALS {
                    anyhow::bail!("session {id} has {} decimals, the suite assumes 6", r.session.decimals);
                }
                Ok(SessionSpec {
                    id,
                    workload,
                    cap,
                    budget,
                    tool_caps,
                    expires_at_ms: r.session.expires_at_ms,
                })
            });
        }
        while let Some(r) = set.join_next().await {
            sessions.push(r??);
        }
    }
    sessions.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(Setup {
        budgets,
        sessions,
        start_wall_ms: 0,
    })
}

/// Calls `f(node)` on node 1, 2, 3, 1, ... until it succeeds or `deadline`.
async fn retry_until<T, F, Fut>(deadline: Instant, mut f: F) -> Result<T, String>
where
    F: FnMut(u8) -> Fut,
    Fut: std::future::Future<Output = Result<T, crate::client::CallError>>,
{
    let mut attempt = 0u64;
    loop {
        let node = (attempt % 3) as u8 + 1;
        match f(node).await {
            Ok(v) => return Ok(v),
            Err(e) => {
                if Instant::now() >= deadline {
                    return Err(format!("{e} (after {} attempts)", attempt + 1));
                }
            }
        }
        attempt += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What the clients share.
pub struct Ctx {
    pub api: Api,
    pub recorder: Arc<Recorder>,
    pub config: WorkloadConfig,
    pub deadline: tokio::time::Instant,
    pub cancel: watch::Receiver<bool>,
    seed_ticket: AtomicU64,
    next_key: AtomicU64,
    stopped: AtomicBool,
    /// Fresh sessions whose creation was acknowledged, by kind, in order.
    fresh_seed: Mutex<Vec<String>>,
    fresh_holds: Mutex<Vec<String>>,
    fresh_teams: Mutex<Vec<String>>,
    /// Seed bursts and their session; how many fresh ones were handed out.
    seed_assigned: Mutex<(BTreeMap<u64, String>, usize)>,
    next_churn: AtomicU64,
}

impl Ctx {
    pub fn new(
        api: Api,
        recorder: Arc<Recorder>,
        config: WorkloadConfig,
        deadline: tokio::time::Instant,
        cancel: watch::Receiver<bool>,
    ) -> Ctx {
        Ctx {
            api,
            recorder,
            config,
            deadline,
            cancel,
            seed_ticket: AtomicU64::new(0),
            next_key: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
            fresh_seed: Mutex::new(Vec::new()),
            fresh_holds: Mutex::new(Vec::new()),
            fresh_teams: Mutex::new(Vec::new()),
            seed_assigned: Mutex::new((BTreeMap::new(), 0)),
            next_churn: AtomicU64::new(0),
        }
    }

    /// The session of seed burst `burst`: the setup's first, then the next
    /// unused fresh one (decided by the burst's first ticket, so the whole
    /// burst shares it), else one of the setup's again (exhausted).
    fn seed_session(&self, burst: u64) -> String {
        let sessions = self.config.seed_sessions.max(1) as u64;
        if burst < sessions {
            return format!("seed-{burst}");
        }
        let fallback = format!("seed-{}", burst % sessions);
        let Ok(mut a) = self.seed_assigned.lock() else {
            return fallback;
        };
        if let Some(id) = a.0.get(&burst) {
            return id.clone();
        }
        let next = a.1;
        let fresh = self.fresh_seed.lock().ok().and_then(|f| f.get(next).cloned());
        let id = match fresh {
            Some(id) => {
                a.1 += 1;
                id
            }
            None => fallback,
        };
        a.0.insert(burst, id.clone());
        // Bursts far behind are done.
        while a.0.len() > SEED_BURSTS_REMEMBERED_MAX {
            a.0.pop_first();
        }
        id
    }

    /// Fresh seed sessions handed to bursts so far.
    fn fresh_seed_used(&self) -> u64 {
        self.seed_assigned.lock().map(|a| a.1 as u64).unwrap_or(0)
    }

    /// One of the newest `window` sessions: the setup's `prefix-i`, then the
    /// fresh ones.
    fn recent_session(&self, fresh: &Mutex<Vec<String>>, prefix: &str, window: usize, rng: &mut StdRng) -> String {
        let k = rng.random_range(0..window);
        let made = fresh.lock().map(|f| {
            let n = f.len();
            (n > k).then(|| f[n - 1 - k].clone())
        });
        match made {
            Ok(Some(id)) => id,
            _ => format!("{prefix}-{k}"),
        }
    }

    fn stop(&self) -> bool {
        if self.stopped.load(Ordering::Relaxed) {
            return true;
        }
        let stop = tokio::time::Instant::now() >= self.deadline
            || *self.cancel.borrow()
            || self.recorder.operations() >= self.config.operations_max;
        if stop {
            self.stopped.store(true, Ordering::Relaxed);
        }
        stop
    }

    fn key(&self, prefix: &str) -> String {
        format!("{prefix}{}", self.next_key.fetch_add(1, Ordering::Relaxed))
    }
}

/// One logical client. Its identity (`process`) changes after an unknown
/// outcome.
struct Client {
    ctx: Arc<Ctx>,
    process: u64,
    rng: StdRng,
}

impl Client {
    fn node(&mut self) -> u8 {
        self.rng.random_range(1..=3u8)
    }

    async fn exec(&mut self, workload: Workload, request: Request) -> Outcome {
        let node = self.node();
        let out = self
            .ctx
            .recorder
            .run(&self.ctx.api, self.process, node, workload, Phase::Workload, request)
            .await;
        if matches!(out, Outcome::Info { .. }) {
            self.process += self.ctx.config.clients as u64;
        }
        out
    }

    /// Sends a request; while the outcome is unknown, sends it again with
    /// the same idempotency key (bounded), under the new identity.
    async fn exec_retrying(&mut self, workload: Workload, request: Request) -> Outcome {
        let mut out = self.exec(workload, request.clone()).await;
        let mut retries = 0;
        while retries < self.ctx.config.unknown_retries_max {
            let again = match &out {
                Outcome::Info { .. } => true,
                Outcome::Fail { code, .. } => code == "no_leader" || code == "connect" || code == "overloaded",
                Outcome::Ok { .. } => false,
            };
            if !again || self.ctx.stop() {
                break;
            }
            retries += 1;
            let wait = self.rng.random_range(100..400u64);
            tokio::time::sleep(Duration::from_millis(wait)).await;
            out = self.exec(workload, request.clone()).await;
        }
        out
    }

    async fn seed_burst_op(&mut self) {
        let ticket = self.ctx.seed_ticket.fetch_add(1, Ordering::Relaxed);
        let session = self.ctx.seed_session(ticket / SEED_BURST);
        let slot = ticket % SEED_BURST;
        let request = if slot < 6 {
            Request::Authorize {
                session,
                tool: "search".into(),
                amount: if slot == 2 { 5 * DOLLAR } else { 10 * DOLLAR },
                key: format!("seed{ticket}"),
                hold_seconds: LONG_HOLD_SECONDS,
                token: None,
            }
        } else {
            Request::Read { session }
        };
        self.exec_retrying(Workload::Seed, request).await;
    }

    async fn holds_flow(&mut self) {
        let session = self
            .ctx
            .recent_session(&self.ctx.fresh_holds, "hold", HOLD_SESSIONS, &mut self.rng);
        // Quarter dollars from $1 to $20: halves stay exact.
        let amount = self.rng.random_range(4..=80u64) * DOLLAR / 4;
        let hold_seconds = *[1u64, 2, 3, LONG_HOLD_SECONDS].choose(&mut self.rng).unwrap_or(&2);
        let authorize = Request::Authorize {
            session: session.clone(),
            tool: "api".into(),
            amount,
            key: self.ctx.key("h"),
            hold_seconds,
            token: None,
        };
        let out = self.exec_retrying(Workload::Holds, authorize.clone()).await;
        let Some((id, expires_at_ms)) = approved(&out) else {
            return;
        };
        if self.rng.random_bool(0.1) {
            // Retry of an approved key: must replay, not hold again.
            self.exec_retrying(Workload::Holds, authorize).await;
        }
        let action = self.rng.random_range(0..4u8);
        let action = if action == 3 && hold_seconds == LONG_HOLD_SECONDS {
            2
        } else {
            action
        };
        let resolve = match action {
            0 | 1 => Request::Capture {
                authorization: id.clone(),
                session: session.clone(),
                amount: if action == 0 { None } else { Some(amount / 2) },
                key: self.ctx.key("c"),
            },
            2 => Request::Void {
                authorization: id.clone(),
                session: session.clone(),
                key: self.ctx.key("v"),
            },
            _ => {
                // Let it expire, then try to capture it.
                let wait_ms = expires_at_ms.saturating_sub(crate::workload::wall_ms()) + 300;
                let wait = Duration::from_millis(wait_ms.min(hold_seconds * 1000 + 1000));
                let left = self.ctx.deadline.saturating_duration_since(tokio::time::Instant::now());
                if wait >= left {
                    return;
                }
                tokio::time::sleep(wait).await;
                Request::Capture {
                    authorization: id.clone(),
                    session: session.clone(),
                    amount: None,
                    key: self.ctx.key("c"),
                }
            }
        };
        let out = self.exec_retrying(Workload::Holds, resolve.clone()).await;
        if matches!(out, Outcome::Ok { .. }) {
            if self.rng.random_bool(0.2) {
                self.exec_retrying(Workload::Holds, resolve.clone()).await;
            }
            if self.rng.random_bool(0.2) {
                // Resolving it a second time must be refused.
                let second = match resolve {
                    Request::Capture { .. } => Request::Void {
                        authorization: id,
                        session,
                        key: self.ctx.key("v"),
                    },
                    _ => Request::Capture {
                        authorization: id,
                        session,
                        amount: None,
                        key: self.ctx.key("c"),
                    },
                };
                self.exec_retrying(Workload::Holds, second).await;
            }
        }
    }

    async fn hierarchy_flow(&mut self) {
        let session = self
            .ctx
            .recent_session(&self.ctx.fresh_teams, "team", TEAM_SESSIONS, &mut self.rng);
        let tool = *["llm", "search"].choose(&mut self.rng).unwrap_or(&"llm");
        let amount = *[5 * DOLLAR, 10 * DOLLAR].choose(&mut self.rng).unwrap_or(&DOLLAR);
        let authorize = Request::Authorize {
            session: session.clone(),
            tool: tool.into(),
            amount,
            key: self.ctx.key("t"),
            hold_seconds: LONG_HOLD_SECONDS,
            token: None,
        };
        let out = self.exec_retrying(Workload::Hierarchy, authorize).await;
        let Some((id, _)) = approved(&out) else { return };
        let roll = self.rng.random_range(0..10u8);
        let resolve = if roll < 5 {
            Request::Void {
                authorization: id,
                session,
                key: self.ctx.key("v"),
            }
        } else if roll < 8 {
            Request::Capture {
                authorization: id,
                session,
                amount: Some(self.rng.random_range(1..=4u64) * DOLLAR / 2),
                key: self.ctx.key("c"),
            }
        } else {
            return;
        };
        self.exec_retrying(Workload::Hierarchy, resolve).await;
    }

    async fn read_op(&mut self) {
        let session = match self.rng.random_range(0..3u8) {
            0 => self
                .ctx
                .recent_session(&self.ctx.fresh_holds, "hold", HOLD_SESSIONS, &mut self.rng),
            1 => self
                .ctx
                .recent_session(&self.ctx.fresh_teams, "team", TEAM_SESSIONS, &mut self.rng),
            _ => {
                // A seed session that is busy now.
                let t = self.ctx.seed_ticket.load(Ordering::Relaxed) / SEED_BURST;
                self.ctx.seed_session(t)
            }
        };
        let workload = if session.starts_with("hold") {
            Workload::Holds
        } else if session.starts_with("team") {
            Workload::Hierarchy
        } else {
            Workload::Seed
        };
        self.exec(workload, Request::Read { session }).await;
    }

    /// A private session through its own token, a rotation and a
    /// revocation (see the module documentation).
    async fn churn_flow(&mut self) {
        let n = self.ctx.next_churn.fetch_add(1, Ordering::Relaxed);
        if n >= FRESH_SESSIONS_MAX {
            return;
        }
        let session = format!("churn-{n}");
        let create = Request::CreateSession {
            session: session.clone(),
            cap: 30 * DOLLAR,
            budget: None,
            expires_in_seconds: SESSION_LIFETIME_SECONDS,
        };
        // A retry after a lost answer finds it existing, without its token:
        // then the session is left alone.
        let out = self.exec_retrying(Workload::Churn, create).await;
        let Some(Response::SessionCreated { token: Some(first), .. }) = ok(&out) else {
            return;
        };
        let first = first.clone();
        let mut holds = Vec::new();
        for _ in 0..2 {
            let out = self
                .exec_retrying(Workload::Churn, self.churn_authorize(&session, 10 * DOLLAR, &first))
                .await;
            if let Some((id, _)) = approved(&out) {
                holds.push(id);
            }
        }
        for (i, id) in holds.into_iter().enumerate() {
            let resolve = if i == 0 {
                Request::Capture {
                    authorization: id,
                    session: session.clone(),
                    amount: None,
                    key: self.ctx.key("c"),
                }
            } else {
                Request::Void {
                    authorization: id,
                    session: session.clone(),
                    key: self.ctx.key("v"),
                }
            };
            self.exec_retrying(Workload::Churn, resolve).await;
        }
        // Not retried: a second rotation would be another change.
        let out = self
            .exec(
                Workload::Churn,
                Request::RotateToken {
                    session: session.clone(),
                },
            )
            .await;
        let Some(Response::TokenRotated { token: second }) = ok(&out) else {
            return;
        };
        let second = second.clone();
        // The old token must be refused now (checker `superseded-tokens`).
        self.exec(Workload::Churn, self.churn_authorize(&session, 5 * DOLLAR, &first))
            .await;
        self.exec_retrying(Workload::Churn, self.churn_authorize(&session, 5 * DOLLAR, &second))
            .await;
        let out = self
            .exec_retrying(
                Workload::Churn,
                Request::Revoke {
                    session: session.clone(),
                },
            )
            .await;
        if ok(&out).is_some() {
            // Denied `session_revoked` (or refused): never approved.
            self.exec_retrying(Workload::Churn, self.churn_authorize(&session, DOLLAR, &second))
                .await;
        }
    }

    fn churn_authorize(&self, session: &str, amount: u64, token: &str) -> Request {
        Request::Authorize {
            session: session.into(),
            tool: "api".into(),
            amount,
            key: self.ctx.key("x"),
            hold_seconds: LONG_HOLD_SECONDS,
            token: Some(token.into()),
        }
    }

    async fn run(mut self) {
        while !self.ctx.stop() {
            match self.rng.random_range(0..100u8) {
                0..40 => self.seed_burst_op().await,
                40..62 => self.holds_flow().await,
                62..82 => self.hierarchy_flow().await,
                x if x < 82 + CHURN_PERCENT => self.churn_flow().await,
                _ => self.read_op().await,
            }
        }
    }
}

fn ok(out: &Outcome) -> Option<&Response> {
    match out {
        Outcome::Ok { response } => Some(response),
        _ => None,
    }
}

/// Creates fresh sessions while the clients run: seed sessions ahead of
/// the bursts, holds and team sessions at a steady rate. Process ids from
/// `3_000_000` on.
async fn session_factory(ctx: Arc<Ctx>) {
    let mut rng = StdRng::seed_from_u64(ctx.config.seed ^ 0x66616374);
    let tick = Duration::from_millis(1000 / FRESH_SESSIONS_PER_SECOND);
    let mut next_steady = tokio::time::Instant::now();
    let (mut made_seed, mut made_holds, mut made_teams) = (0u64, 0u64, 0u64);
    let mut process = 3_000_000u64;
    while !ctx.stop() {
        let burst = ctx.seed_ticket.load(Ordering::Relaxed) / SEED_BURST;
        // Start when the setup's sessions are nearly used; then stay ahead.
        let started = burst + FRESH_SEED_LEAD >= ctx.config.seed_sessions as u64;
        let wanted = if started {
            ctx.fresh_seed_used() + FRESH_SEED_LEAD
        } else {
            0
        };
        if tokio::time::Instant::now() > next_steady + Duration::from_secs(1) {
            // Far behind (a fault stalled creation): no burst to catch up.
            next_steady = tokio::time::Instant::now();
        }
        let ready = ctx.fresh_seed.lock().map(|l| l.len() as u64).unwrap_or(0);
        let (request, list, kind) = if ready < wanted && made_seed < FRESH_SESSIONS_MAX {
            made_seed += 1;
            let id = format!("seedx-{}", made_seed - 1);
            (fresh_session(&id, SEED_CAP, None), &ctx.fresh_seed, Workload::Seed)
        } else if tokio::time::Instant::now() >= next_steady && made_holds < FRESH_SESSIONS_MAX {
            next_steady += tick;
            if made_holds <= made_teams {
                made_holds += 1;
                let id = format!("holdx-{}", made_holds - 1);
                (
                    fresh_session(&id, 100 * DOLLAR, None),
                    &ctx.fresh_holds,
                    Workload::Holds,
                )
            } else {
                made_teams += 1;
                let id = format!("teamx-{}", made_teams - 1);
                let team = if made_teams % 2 == 0 { "team:a" } else { "team:b" };
                (
                    fresh_session(&id, 60 * DOLLAR, Some(team)),
                    &ctx.fresh_teams,
                    Workload::Hierarchy,
                )
            }
        } else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let node = rng.random_range(1..=3u8);
        let mut out = ctx
            .recorder
            .run(&ctx.api, process, node, kind, Phase::Workload, request.clone())
            .await;
        // A lost answer: the same id again (idempotent), bounded.
        for attempt in 0..ctx.config.unknown_retries_max {
            if !matches!(out, Outcome::Info { .. }) || ctx.stop() {
                break;
            }
            process += 1;
            let node = ((u32::from(node) + attempt) % 3) as u8 + 1;
            out = ctx
                .recorder
                .run(&ctx.api, process, node, kind, Phase::Workload, request.clone())
                .await;
        }
        process += 1;
        if let (Some(Response::SessionCreated { .. }), Ok(mut l)) = (ok(&out), list.lock()) {
            l.push(request.session().to_string());
        }
    }
}

fn fresh_session(id: &str, cap: u64, budget: Option<&str>) -> Request {
    Request::CreateSession {
        session: id.to_string(),
        cap,
        budget: budget.map(str::to_string),
        expires_in_seconds: SESSION_LIFETIME_SECONDS,
    }
}

/// Raises the team and org caps at a steady pace: one raiser, so each
/// budget's cap only grows (`from` is what it set last). Process ids from
/// `4_000_000` on.
async fn budget_raiser(ctx: Arc<Ctx>, budgets: Vec<BudgetSpec>) {
    let mut caps: BTreeMap<String, u64> = budgets.iter().map(|b| (b.id.clone(), b.cap)).collect();
    let mut process = 4_000_000u64;
    let mut round = 0u64;
    while !ctx.stop() {
        tokio::time::sleep(RAISE_INTERVAL).await;
        round += 1;
        for (id, cap) in caps.iter_mut() {
            if ctx.stop() {
                return;
            }
            let step = if id.starts_with("org") { ORG_RAISE } else { TEAM_RAISE };
            let request = Request::RaiseBudget {
                budget: id.clone(),
                from: *cap,
                cap: *cap + step,
            };
            let node = (round % 3) as u8 + 1;
            let out = ctx
                .recorder
                .run(&ctx.api, process, node, Workload::Churn, Phase::Workload, request)
                .await;
            process += 1;
            match out {
                // Raised, or maybe (unknown): the next raise starts above it.
                Outcome::Ok { .. } | Outcome::Info { .. } => *cap += step,
                Outcome::Fail { .. } => {}
            }
        }
    }
}

fn approved(out: &Outcome) -> Option<(String, u64)> {
    match out {
        Outcome::Ok {
            response:
                Response::Decision {
                    approved: true,
                    authorization_id: Some(id),
                    expires_at_ms,
                    ..
                },
        } => Some((id.clone(), expires_at_ms.unwrap_or(0))),
        _ => None,
    }
}

/// Runs the clients (and the session factory and the budget raiser) until
/// the deadline, the operation budget, or a cancel.
pub async fn run_clients(ctx: Arc<Ctx>, budgets: Vec<BudgetSpec>) {
    let mut set = tokio::task::JoinSet::new();
    set.spawn(session_factory(ctx.clone()));
    set.spawn(budget_raiser(ctx.clone(), budgets));
    for i in 0..ctx.config.clients {
        let client = Client {
            ctx: ctx.clone(),
            process: i as u64,
            rng: StdRng::seed_from_u64(ctx.config.seed.wrapping_mul(1000).wrapping_add(i as u64)),
        };
        set.spawn(client.run());
    }
    while set.join_next().await.is_some() {}
}

/// Waits until every node answers and they agree on one leader.
pub async fn wait_for_cluster(api: &Api, deadline: Instant) -> anyhow::Result<u64> {
    let mut last = String::new();
    while Instant::now() < deadline {
        let mut leaders = HashSet::new();
        let mut answered = 0;
        for n in 1..=3u8 {
            match api.status(n, Duration::from_millis(800)).await {
                Ok(s) => {
                    answered += 1;
                    leaders.insert(s.leader_id);
                    last = format!("node{n}: role {} leader {:?} term {}", s.role, s.leader_id, s.term);
                }
                Err(e) => last = format!("node{n}: {e}"),
            }
        }
        if answered == 3 && leaders.len() == 1 {
            if let Some(Some(l)) = leaders.into_iter().next() {
                return Ok(l);
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    anyhow::bail!("the cluster did not agree on a leader in time; last: {last}")
}

/// After healing: re-sends every unknown operation with its key until a
/// definite answer (bounded), so none is assumed absent.
pub async fn resolve_unknowns(api: &Api, recorder: &Recorder, deadline: Instant) -> (usize, usize) {
    let (ops, _) = recorder.snapshot();
    let key_of = |r: &Request| {
        r.scoped_key()
            .map(|(s, k)| (r.name().to_string(), s.to_string(), k.to_string()))
    };
    let resolution = crate::checker::Resolution::new(&ops);
    let unknown: Vec<&Op> = ops
        .iter()
        .filter(|op| op.is_info() && !matches!(op.request, Request::Read { .. }) && !resolution.resolved(op))
        .collect();
    let mut seen = HashSet::new();
    let (mut resolved, mut tried) = (0usize, 0usize);
    let process_base = 1_000_000u64;
    for (i, op) in unknown.iter().enumerate() {
        if Instant::now() >= deadline {
            break;
        }
        let Some(k) = key_of(&op.request) else { continue };
        if !seen.insert(k) {
            continue;
        }
        tried += 1;
        // With the admin token: a session token may have been rotated since,
        // and a 401 would resolve nothing.
        let mut request = op.request.clone();
        if let Request::Authorize { token, .. } = &mut request {
            *token = None;
        }
        let mut attempt = 0u64;
        loop {
            let node = ((i as u64 + attempt) % 3) as u8 + 1;
            let out = recorder
                .run(
                    api,
                    process_base + i as u64 * 100 + attempt,
                    node,
                    op.workload,
                    Phase::Resolve,
                    request.clone(),
                )
                .await;
            let done = match &out {
                Outcome::Ok { .. } => true,
                Outcome::Fail { code, .. } => !(code == "no_leader" || code == "connect" || code == "overloaded"),
                Outcome::Info { .. } => false,
            };
            if done {
                resolved += 1;
                break;
            }
            attempt += 1;
            if attempt >= 10 || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    (tried, resolved)
}

/// Waits past the deadline of every short hold, then writes once so that an
/// entry stamped after all of them exists: the final state has no hold
/// whose expiry is still pending.
pub async fn settle_expiry(api: &Api, recorder: &Recorder, wait_max: Duration) {
    let (ops, _) = recorder.snapshot();
    let last_short_deadline = ops
        .iter()
        .filter_map(|o| match (&o.request, o.ok()) {
            (
                Request::Authorize { hold_seconds, .. },
                Some(Response::Decision {
                    approved: true,
                    expires_at_ms: Some(e),
                    ..
                }),
            ) if *hold_seconds < LONG_HOLD_SECONDS => Some(*e),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    let now = wall_ms();
    if last_short_deadline + 500 > now {
        let wait = Duration::from_millis(last_short_deadline + 500 - now).min(wait_max);
        tokio::time::sleep(wait).await;
    }
    for attempt in 0..10u64 {
        let out = recorder
            .run(
                api,
                2_000_000 + attempt,
                (attempt % 3) as u8 + 1,
                Workload::Seed,
                Phase::Resolve,
                Request::Authorize {
                    session: TICK_SESSION.into(),
                    tool: "tick".into(),
                    amount: DOLLAR / 100,
                    key: format!("tick-{attempt}"),
                    hold_seconds: LONG_HOLD_SECONDS,
                    token: None,
                },
            )
            .await;
        if matches!(out, Outcome::Ok { .. }) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Holds read past the last known id before the enumeration stops.
const HOLDS_BEYOND_KNOWN: u64 = 32;
/// Not-found ids in a row that end the enumeration wherever it is.
const HOLDS_MISSING_IN_A_ROW_MAX: u64 = 512;

/// Reads every hold, session and budget from every node, then their digests.
pub async fn final_read(api: &Api, setup: &Setup, recorder: &Recorder) -> FinalState {
    let timeout = Duration::from_secs(3);
    let (ops, _) = recorder.snapshot();
    let known: Vec<u64> = ops
        .iter()
        .filter_map(|o| match o.ok() {
            Some(Response::Decision {
                authorization_id: Some(id),
                ..
            }) => hold_number(id),
            _ => None,
        })
        .collect();
    // Ids are handed out in order from 0, so a cluster made at most one per
    // approval the history saw, plus unknowns: bound the walk by that (a
    // faulty node may hand out ids far away).
    let ids_max = (ops.len() as u64).saturating_mul(2).saturating_add(1024);
    let max_known = known.iter().copied().filter(|n| *n < ids_max).max();
    let read_start_wall_ms = wall_ms();
    let mut nodes = Vec::new();
    for n in 1..=3u8 {
        let mut node = NodeFinal {
            node: n,
            ..NodeFinal::default()
        };
        // Holds au_0, au_1, ... in parallel chunks, until well past the last
        // id the history knows and a run of not-found.
        let mut next = 0u64;
        let mut misses_in_a_row = 0u64;
        while next < ids_max {
            let chunk: Vec<u64> = (next..next + 32).collect();
            next += 32;
            let mut set = tokio::task::JoinSet::new();
            for i in chunk {
                let api = api.clone();
                set.spawn(async move {
                    let id = format!("au_{i}");
                    let mut last = None;
                    for _ in 0..3 {
                        match api.hold(n, &id, timeout).await {
                            Ok(h) => return (i, id, Ok(Some(h))),
                            Err(e) if e.is_not_found() => return (i, id, Ok(None)),
                            Err(e) => last = Some(e.to_string()),
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    (i, id, Err(last.unwrap_or_default()))
                });
            }
            let mut results = Vec::new();
            while let Some(r) = set.join_next().await {
                if let Ok(r) = r {
                    results.push(r);
                }
            }
            results.sort_by_key(|r| r.0);
            for (_, id, r) in results {
                match r {
                    Ok(Some(h)) => {
                        misses_in_a_row = 0;
                        node.holds.insert(id, h);
                    }
                    Ok(None) => misses_in_a_row += 1,
                    Err(e) => node.errors.push(format!("{id}: {e}")),
                }
            }
            let past_known = max_known.is_none_or(|m| next > m);
            if (past_known && misses_in_a_row >= HOLDS_BEYOND_KNOWN)
                || misses_in_a_row >= HOLDS_MISSING_IN_A_ROW_MAX
                || node.errors.len() > 20
            {
                break;
            }
        }
        // A node that keeps failing is not read further (bounded time).
        let failing = |node: &NodeFinal| node.errors.len() > 20;
        for s in &setup.sessions {
            if failing(&node) {
                break;
            }
            match api.session_final(n, &s.id, timeout).await {
                Ok(l) => {
                    node.sessions.insert(s.id.clone(), l);
                }
                Err(e) => node.errors.push(format!("session {}: {e}", s.id)),
            }
        }
        for b in &setup.budgets {
            if failing(&node) {
                break;
            }
            match api.budget_final(n, &b.id, timeout).await {
                Ok(l) => {
                    node.budgets.insert(b.id.clone(), l);
                }
                Err(e) => node.errors.push(format!("budget {}: {e}", b.id)),
            }
        }
        nodes.push(node);
    }
    let read_end_wall_ms = wall_ms();

    // Digests at one applied index on all nodes (bounded polling).
    let mut digests = BTreeMap::new();
    let mut aligned = false;
    for _ in 0..60 {
        digests.clear();
        for n in 1..=3u8 {
            if let Ok(d) = api.digest(n, timeout).await {
                digests.insert(
                    n,
                    DigestFinal {
                        applied_index: d.applied_index,
                        digest: d.digest,
                    },
                );
            }
        }
        let indexes: HashSet<Option<u64>> = digests.values().map(|d| d.applied_index).collect();
        if digests.len() == 3 && indexes.len() == 1 {
            aligned = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    FinalState {
        read_start_wall_ms,
        read_end_wall_ms,
        nodes,
        digests,
        digests_aligned: aligned,
    }
}
