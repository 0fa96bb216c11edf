//! The recorded history: every operation as an invocation and a completion
//! (`ok`, `fail` or `info`), with real times, the node it went to, and the
//! log position the server returned.
//!
//! Amounts are integers of the asset's smallest unit (USDC has 6 decimals:
//! `10_000_000` is $10). Times come in two clocks: `*_ns` is monotonic since
//! the run started (for real-time order), `*_wall_ms` is Unix time (compared
//! with the cluster's log clock, which runs on the same host clock).

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

/// USDC's decimals: every session and budget of the suite uses them.
pub const DECIMALS: u8 = 6;

/// One dollar in smallest units.
pub const DOLLAR: u64 = 1_000_000;

/// Where a decision sits in the replicated log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Pos {
    pub index: u64,
    pub batch: u32,
}

impl Pos {
    pub fn new(index: u64, batch: u32) -> Pos {
        Pos { index, batch }
    }

    /// Where a linearizable read at `read_index` sits: after every command of
    /// that entry.
    pub fn read_at(read_index: u64) -> Pos {
        Pos {
            index: read_index,
            batch: u32::MAX,
        }
    }
}

impl std::fmt::Display for Pos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.batch == u32::MAX {
            write!(f, "{}/end", self.index)
        } else {
            write!(f, "{}/{}", self.index, self.batch)
        }
    }
}

/// Which workload an operation (or a session) belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Workload {
    /// The seed's: $25 caps, concurrent $10 authorizations over all nodes.
    Seed,
    /// Holds with capture, partial capture, void and expiry.
    Holds,
    /// Sessions drawing on shared team budgets.
    Hierarchy,
    /// Changes while the others run: fresh sessions (used with their own
    /// token, which is rotated, then revoked) and budget cap raises.
    Churn,
}

/// What a client asked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "snake_case")]
pub enum Request {
    Authorize {
        session: String,
        tool: String,
        amount: u64,
        key: String,
        hold_seconds: u64,
        /// The session's own bearer token; `None`: the admin token.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
    },
    Capture {
        authorization: String,
        session: String,
        /// `None` captures the whole hold.
        amount: Option<u64>,
        key: String,
    },
    Void {
        authorization: String,
        session: String,
        key: String,
    },
    /// A linearizable read of a session (`GET /v1/sessions/{id}`).
    Read { session: String },
    /// `POST /v1/sessions` with an explicit id (a retry is idempotent), no
    /// tool caps.
    CreateSession {
        session: String,
        cap: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        budget: Option<String>,
        expires_in_seconds: u64,
    },
    /// `POST /v1/sessions/{id}/revoke`.
    Revoke { session: String },
    /// `POST /v1/sessions/{id}/token`: a new session token; the old one
    /// stops working.
    RotateToken { session: String },
    /// `PATCH /v1/budgets/{id}` raising the cap from `from` (what the one
    /// raiser set last) to `cap`.
    RaiseBudget { budget: String, from: u64, cap: u64 },
}

impl Request {
    pub fn session(&self) -> &str {
        match self {
            Request::Authorize { session, .. }
            | Request::Capture { session, .. }
            | Request::Void { session, .. }
            | Request::Read { session }
            | Request::CreateSession { session, .. }
            | Request::Revoke { session }
            | Request::RotateToken { session } => session,
            // The budget stands where a session would: the checkers look
            // up what shares it.
            Request::RaiseBudget { budget, .. } => budget,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Request::Authorize { .. } => "authorize",
            Request::Capture { .. } => "capture",
            Request::Void { .. } => "void",
            Request::Read { .. } => "read",
            Request::CreateSession { .. } => "create_session",
            Request::Revoke { .. } => "revoke",
            Request::RotateToken { .. } => "rotate_token",
            Request::RaiseBudget { .. } => "raise_budget",
        }
    }

    /// The idempotency scope and key: `(session, key)` for authorizations,
    /// `(authorization, key)` for captures and voids.
    pub fn scoped_key(&self) -> Option<(&str, &str)> {
        match self {
            Request::Authorize { session, key, .. } => Some((session, key)),
            Request::Capture { authorization, key, .. } | Request::Void { authorization, key, .. } => {
                Some((authorization, key))
            }
            _ => None,
        }
    }
}

/// A definite answer from the server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    Decision {
        approved: bool,
        reason: Option<String>,
        budget_id: Option<String>,
        authorization_id: Option<String>,
        amount: Option<u64>,
        remaining: Option<u64>,
        expires_at_ms: Option<u64>,
        replayed: bool,
        pos: Pos,
    },
    Captured {
        authorization_id: String,
        captured: u64,
        released: u64,
        replayed: bool,
        pos: Pos,
    },
    Voided {
        authorization_id: String,
        released: u64,
        replayed: bool,
        pos: Pos,
    },
    Read {
        spent: u64,
        held: u64,
        remaining: u64,
        available: u64,
        status: String,
        read_index: u64,
    },
    SessionCreated {
        expires_at_ms: u64,
        /// The entry that created it (or, when it existed, the read index).
        index: u64,
        existed: bool,
        /// The session's bearer token (absent when it existed).
        token: Option<String>,
    },
    /// The session is revoked as of entry `index`.
    Revoked {
        index: u64,
    },
    TokenRotated {
        token: String,
    },
    BudgetUpdated {
        cap: u64,
    },
}

impl Response {
    /// The log position of a write, or the read position of a read.
    pub fn pos(&self) -> Pos {
        match self {
            Response::Decision { pos, .. } | Response::Captured { pos, .. } | Response::Voided { pos, .. } => *pos,
            Response::Read { read_index, .. } => Pos::read_at(*read_index),
            Response::SessionCreated { index, .. } | Response::Revoked { index } => Pos::read_at(*index),
            Response::TokenRotated { .. } | Response::BudgetUpdated { .. } => Pos::new(0, 0),
        }
    }

    /// An answer to a change of a session or budget.
    pub fn is_admin(&self) -> bool {
        matches!(
            self,
            Response::SessionCreated { .. }
                | Response::Revoked { .. }
                | Response::TokenRotated { .. }
                | Response::BudgetUpdated { .. }
        )
    }

    pub fn replayed(&self) -> bool {
        match self {
            Response::Decision { replayed, .. }
            | Response::Captured { replayed, .. }
            | Response::Voided { replayed, .. } => *replayed,
            _ => false,
        }
    }

    pub fn is_read(&self) -> bool {
        matches!(self, Response::Read { .. })
    }
}

/// How an operation ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Outcome {
    /// The server answered: the operation took effect as stated (a denial
    /// is an `ok` answer too).
    Ok { response: Response },
    /// Definitely did not take effect (`503 no_leader`, a refusal such as
    /// `409 already_captured`, a connection that never opened).
    Fail { status: u16, code: String },
    /// Unknown: a timeout, `504 outcome_unknown`, a broken connection.
    Info { reason: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Under the nemesis.
    Workload,
    /// After healing: unknown operations re-sent with their idempotency key.
    Resolve,
}

/// One operation: its invocation and its completion.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    pub id: u64,
    /// The logical client; it changes after an `info` (a client whose
    /// operation timed out continues under a new identity).
    pub process: u64,
    /// 1-based node id the request went to.
    pub node: u8,
    pub workload: Workload,
    pub phase: Phase,
    pub request: Request,
    pub invoke_ns: u64,
    pub complete_ns: u64,
    pub invoke_wall_ms: u64,
    pub complete_wall_ms: u64,
    pub outcome: Outcome,
    /// The log time of the entry that decided it, when the server said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_time_ms: Option<u64>,
}

impl Op {
    pub fn ok(&self) -> Option<&Response> {
        match &self.outcome {
            Outcome::Ok { response } => Some(response),
            _ => None,
        }
    }

    pub fn is_info(&self) -> bool {
        matches!(self.outcome, Outcome::Info { .. })
    }

    pub fn fail_code(&self) -> Option<&str> {
        match &self.outcome {
            Outcome::Fail { code, .. } => Some(code),
            _ => None,
        }
    }

    pub fn outcome_name(&self) -> &'static str {
        match self.outcome {
            Outcome::Ok { .. } => "ok",
            Outcome::Fail { .. } => "fail",
            Outcome::Info { .. } => "info",
        }
    }

    pub fn latency_ms(&self) -> f64 {
        self.complete_ns.saturating_sub(self.invoke_ns) as f64 / 1e6
    }
}

/// A nemesis action with its real-time interval.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NemesisInterval {
    pub fault: String,
    /// What exactly was done (`isolate node2`, `kill node1 (leader)`).
    pub detail: String,
    pub start_ns: u64,
    pub end_ns: u64,
}

/// What the run created before the workload started (budgets and sessions
/// with their caps); the checkers' initial state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Setup {
    pub budgets: Vec<BudgetSpec>,
    pub sessions: Vec<SessionSpec>,
    /// Unix ms at the run's monotonic zero.
    pub start_wall_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetSpec {
    pub id: String,
    pub cap: u64,
    pub parent: Option<String>,
    pub tool_caps: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSpec {
    pub id: String,
    pub workload: Workload,
    pub cap: u64,
    pub budget: Option<String>,
    pub tool_caps: BTreeMap<String, u64>,
    pub expires_at_ms: u64,
}

/// The whole record of a run, as the checkers see it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    pub setup: Setup,
    pub ops: Vec<Op>,
    pub nemesis: Vec<NemesisInterval>,
}

/// One line of `history.jsonl`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Line {
    Invoke {
        op: u64,
        process: u64,
        node: u8,
        workload: Workload,
        phase: Phase,
        time_ns: u64,
        wall_ms: u64,
        request: Request,
    },
    Complete {
        op: u64,
        process: u64,
        node: u8,
        time_ns: u64,
        wall_ms: u64,
        latency_ms: f64,
        outcome: Outcome,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        log_time_ms: Option<u64>,
    },
    Nemesis {
        fault: String,
        detail: String,
        start_ns: u64,
        end_ns: u64,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("history I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("history line {line}: {source}")]
    Parse { line: usize, source: serde_json::Error },
    #[error("history line {line}: completion of operation {op} that was never invoked")]
    Orphan { line: usize, op: u64 },
}

impl History {
    /// Writes the history as JSON lines in real-time order: an `invoke` and
    /// a completion per operation, and the nemesis intervals.
    pub fn write_jsonl(&self, path: &Path) -> Result<(), HistoryError> {
        let mut lines: Vec<(u64, u8, Line)> = Vec::with_capacity(self.ops.len() * 2 + self.nemesis.len());
        for op in &self.ops {
            lines.push((
                op.invoke_ns,
                0,
                Line::Invoke {
                    op: op.id,
                    process: op.process,
                    node: op.node,
                    workload: op.workload,
                    phase: op.phase,
                    time_ns: op.invoke_ns,
                    wall_ms: op.invoke_wall_ms,
                    request: op.request.clone(),
                },
            ));
            lines.push((
                op.complete_ns,
                1,
                Line::Complete {
                    op: op.id,
                    process: op.process,
                    node: op.node,
                    time_ns: op.complete_ns,
                    wall_ms: op.complete_wall_ms,
                    latency_ms: op.latency_ms(),
                    outcome: op.outcome.clone(),
                    log_time_ms: op.log_time_ms,
                },
            ));
        }
        for n in &self.nemesis {
            lines.push((
                n.start_ns,
                2,
                Line::Nemesis {
                    fault: n.fault.clone(),
                    detail: n.detail.clone(),
                    start_ns: n.start_ns,
                    end_ns: n.end_ns,
                },
            ));
        }
        lines.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
        let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
        for (_, _, line) in &lines {
            serde_json::to_writer(&mut out, line).map_err(std::io::Error::other)?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
        Ok(())
    }

    /// Reads a `history.jsonl` back (the setup is stored apart). Operations
    /// invoked but never completed in the file count as `info`.
    pub fn read_jsonl(path: &Path, setup: Setup) -> Result<History, HistoryError> {
        let file = std::io::BufReader::new(std::fs::File::open(path)?);
        let mut open: BTreeMap<u64, Op> = BTreeMap::new();
        let mut ops = Vec::new();
        let mut nemesis = Vec::new();
        for (n, line) in file.lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let parsed: Line =
                serde_json::from_str(&line).map_err(|source| HistoryError::Parse { line: n + 1, source })?;
            match parsed {
                Line::Invoke {
                    op,
                    process,
                    node,
                    workload,
                    phase,
                    time_ns,
                    wall_ms,
                    request,
                } => {
                    open.insert(
                        op,
                        Op {
                            id: op,
                            process,
                            node,
                            workload,
                            phase,
                            request,
                            invoke_ns: time_ns,
                            complete_ns: time_ns,
                            invoke_wall_ms: wall_ms,
                            complete_wall_ms: wall_ms,
                            outcome: Outcome::Info {
                                reason: "never completed".into(),
                            },
                            log_time_ms: None,
                        },
                    );
                }
                Line::Complete {
                    op,
                    time_ns,
                    wall_ms,
                    outcome,
                    log_time_ms,
                    ..
                } => {
                    let mut o = open.remove(&op).ok_or(HistoryError::Orphan { line: n + 1, op })?;
                    o.complete_ns = time_ns;
                    o.complete_wall_ms = wall_ms;
                    o.outcome = outcome;
                    o.log_time_ms = log_time_ms;
                    ops.push(o);
                }
                Line::Nemesis {
                    fault,
                    detail,
                    start_ns,
                    end_ns,
                } => nemesis.push(NemesisInterval {
                    fault,
                    detail,
                    start_ns,
                    end_ns,
                }),
            }
        }
        ops.extend(open.into_values());
        ops.sort_by_key(|o| o.id);
        Ok(History { setup, ops, nemesis })
    }
}

/// Counts of operations by kind and outcome, for the summary.
pub fn outcome_counts(ops: &[Op]) -> BTreeMap<String, BTreeMap<String, u64>> {
    let mut out: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for op in ops {
        let kind = match (op.request.name(), op.ok()) {
            ("authorize", Some(Response::Decision { approved: true, .. })) => "ok-approved",
            ("authorize", Some(Response::Decision { approved: false, .. })) => "ok-denied",
            _ => op.outcome_name(),
        };
        *out.entry(op.request.name().to_string())
            .or_default()
            .entry(kind.to_string())
            .or_default() += 1;
        *out.entry("all".into())
            .or_default()
            .entry(op.outcome_name().to_string())
            .or_default() += 1;
    }
    out
}

/// Parses a decimal amount of the suite's asset into smallest units.
pub fn parse_amount(text: &str) -> Option<u64> {
    let units = ledger::amount::parse_decimal(text, DECIMALS).ok()?;
    u64::try_from(units.units()).ok()
}

/// Formats smallest units as dollars (`10.50`).
pub fn format_amount(units: u64) -> String {
    ledger::Amount(u128::from(units)).to_decimal_string(DECIMALS)
}

/// The numeric part of an authorization id `au_<n>`.
pub fn hold_number(id: &str) -> Option<u64> {
    id.strip_prefix("au_")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_round_trip() {
        assert_eq!(parse_amount("25.00"), Some(25 * DOLLAR));
        assert_eq!(parse_amount("0.000001"), Some(1));
        assert_eq!(parse_amount("-1"), None);
        assert_eq!(format_amount(10 * DOLLAR + DOLLAR / 2), "10.50");
    }

    #[test]
    fn jsonl_round_trips_and_unfinished_ops_are_info() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("history.jsonl");
        let op = Op {
            id: 7,
            process: 3,
            node: 2,
            workload: Workload::Seed,
            phase: Phase::Workload,
            request: Request::Read { session: "s1".into() },
            invoke_ns: 10,
            complete_ns: 20,
            invoke_wall_ms: 1000,
            complete_wall_ms: 1001,
            outcome: Outcome::Ok {
                response: Response::Read {
                    spent: 1,
                    held: 2,
                    remaining: 3,
                    available: 3,
                    status: "active".into(),
                    read_index: 9,
                },
            },
            log_time_ms: None,
        };
        let h = History {
            setup: Setup::default(),
            ops: vec![op.clone()],
            nemesis: vec![NemesisInterval {
                fault: "kill".into(),
                detail: "kill node1".into(),
                start_ns: 15,
                end_ns: 30,
            }],
        };
        h.write_jsonl(&path).expect("write");
        let back = History::read_jsonl(&path, Setup::default()).expect("read");
        assert_eq!(back.ops, vec![op.clone()]);
        assert_eq!(back.nemesis.len(), 1);

        // Cut the completion off: the op comes back as info.
        let text = std::fs::read_to_string(&path).expect("read text");
        let first = text.lines().next().expect("a line");
        std::fs::write(&path, format!("{first}\n")).expect("write");
        let back = History::read_jsonl(&path, Setup::default()).expect("read");
        assert!(back.ops[0].is_info());
    }
}
