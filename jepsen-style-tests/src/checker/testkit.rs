//! Hand-made histories: a valid one the checkers must accept, and doctored
//! ones (an overspend, a lost acknowledgement, a stale read, a duplicate
//! hold, ...) each checker must call invalid.

use std::collections::BTreeMap;

use super::*;
use crate::final_state::{CapFinal, DigestFinal, FinalState, HoldFinal, LevelFinal, NodeFinal};
use crate::history::*;

const T0: u64 = 1_700_000_000_000;
const D: u64 = DOLLAR;

pub struct Kit {
    pub h: History,
    next: u64,
}

impl Kit {
    /// Sessions `(id, cap)` of the seed workload.
    pub fn new(sessions: &[(&str, u64)]) -> Kit {
        let setup = Setup {
            budgets: vec![],
            sessions: sessions
                .iter()
                .map(|(id, cap)| SessionSpec {
                    id: id.to_string(),
                    workload: Workload::Seed,
                    cap: *cap,
                    budget: None,
                    tool_caps: BTreeMap::new(),
                    expires_at_ms: T0 + 3_600_000,
                })
                .collect(),
            start_wall_ms: T0,
        };
        Kit {
            h: History {
                setup,
                ops: vec![],
                nemesis: vec![],
            },
            next: 0,
        }
    }

    /// An operation from `start` to `end` ms after the start.
    pub fn op(&mut self, process: u64, request: Request, start: u64, end: u64, outcome: Outcome) -> u64 {
        let id = self.next;
        self.next += 1;
        self.h.ops.push(Op {
            id,
            process,
            node: (process % 3) as u8 + 1,
            workload: Workload::Seed,
            phase: Phase::Workload,
            request,
            invoke_ns: start * 1_000_000,
            complete_ns: end * 1_000_000,
            invoke_wall_ms: T0 + start,
            complete_wall_ms: T0 + end,
            outcome,
            log_time_ms: None,
        });
        id
    }

    #[allow(clippy::too_many_arguments)]
    pub fn approve(
        &mut self,
        process: u64,
        session: &str,
        key: &str,
        amount: u64,
        id: &str,
        pos: Pos,
        remaining: u64,
        start: u64,
        end: u64,
    ) -> u64 {
        let hold_seconds = 600;
        self.op(
            process,
            auth(session, key, amount, hold_seconds),
            start,
            end,
            Outcome::Ok {
                response: Response::Decision {
                    approved: true,
                    reason: None,
                    budget_id: None,
                    authorization_id: Some(id.into()),
                    amount: Some(amount),
                    remaining: Some(remaining),
                    // Stamped in the middle of the request.
                    expires_at_ms: Some(T0 + (start + end) / 2 + hold_seconds * 1000),
                    replayed: false,
                    pos,
                },
            },
        )
    }

    #[allow(clippy::too_many_arguments)]
    pub fn deny(
        &mut self,
        process: u64,
        session: &str,
        key: &str,
        amount: u64,
        pos: Pos,
        remaining: u64,
        start: u64,
        end: u64,
    ) -> u64 {
        self.op(
            process,
            auth(session, key, amount, 600),
            start,
            end,
            Outcome::Ok {
                response: Response::Decision {
                    approved: false,
                    reason: Some("session_cap".into()),
                    budget_id: None,
                    authorization_id: None,
                    amount: None,
                    remaining: Some(remaining),
                    expires_at_ms: None,
                    replayed: false,
                    pos,
                },
            },
        )
    }

    #[allow(clippy::too_many_arguments)]
    pub fn read(&mut self, process: u64, session: &str, cap: u64, held: u64, index: u64, start: u64, end: u64) -> u64 {
        self.op(
            process,
            Request::Read {
                session: session.into(),
            },
            start,
            end,
            Outcome::Ok {
                response: Response::Read {
                    spent: 0,
                    held,
                    remaining: cap - held,
                    available: cap - held,
                    status: "active".into(),
                    read_index: index,
                },
            },
        )
    }

    /// A final state that holds every acknowledged approval, on three nodes
    /// that agree.
    pub fn final_state(&self) -> FinalState {
        let mut holds = BTreeMap::new();
        for op in &self.h.ops {
            if let (
                Request::Authorize { session, key, tool, .. },
                Some(Response::Decision {
                    approved: true,
                    authorization_id: Some(id),
                    amount: Some(amount),
                    expires_at_ms: Some(e),
                    ..
                }),
            ) = (&op.request, op.ok())
            {
                holds.insert(
                    id.clone(),
                    HoldFinal {
                        session: session.clone(),
                        tool: tool.clone(),
                        amount: *amount,
                        status: "held".into(),
                        captured: 0,
                        key: Some(key.clone()),
                        expires_at_ms: *e,
                    },
                );
            }
        }
        final_with(&self.h.setup, holds)
    }
}

/// Three agreeing nodes with these holds; session totals follow from them.
pub fn final_with(setup: &Setup, holds: BTreeMap<String, HoldFinal>) -> FinalState {
    let mut sessions = BTreeMap::new();
    for s in &setup.sessions {
        let held: u64 = holds
            .values()
            .filter(|h| h.session == s.id && h.status == "held")
            .map(|h| h.amount)
            .sum();
        let spent: u64 = holds.values().filter(|h| h.session == s.id).map(|h| h.captured).sum();
        sessions.insert(
            s.id.clone(),
            LevelFinal {
                limit: CapFinal {
                    cap: s.cap,
                    spent,
                    held,
                },
                remaining: s.cap.saturating_sub(spent + held),
                tool_caps: BTreeMap::new(),
            },
        );
    }
    let node = |n: u8| NodeFinal {
        node: n,
        holds: holds.clone(),
        sessions: sessions.clone(),
        budgets: BTreeMap::new(),
        errors: vec![],
    };
    FinalState {
        read_start_wall_ms: T0 + 60_000,
        read_end_wall_ms: T0 + 61_000,
        nodes: vec![node(1), node(2), node(3)],
        digests: (1..=3)
            .map(|n| {
                (
                    n,
                    DigestFinal {
                        applied_index: Some(100),
                        digest: "ab".repeat(32),
                    },
                )
            })
            .collect(),
        digests_aligned: true,
    }
}

pub fn auth(session: &str, key: &str, amount: u64, hold_seconds: u64) -> Request {
    Request::Authorize {
        session: session.into(),
        tool: "search".into(),
        amount,
        key: key.into(),
        hold_seconds,
        token: None,
    }
}

/// The seed scenario done right: three concurrent $10 authorizations on a
/// $25 cap over three nodes; two approved, one denied; then a read.
pub fn valid_seed() -> Kit {
    let mut k = Kit::new(&[("s1", 25 * D)]);
    k.approve(0, "s1", "k0", 10 * D, "au_0", Pos::new(5, 0), 15 * D, 0, 20);
    k.approve(1, "s1", "k1", 10 * D, "au_1", Pos::new(5, 1), 5 * D, 0, 20);
    k.deny(2, "s1", "k2", 10 * D, Pos::new(6, 0), 5 * D, 2, 30);
    k.read(3, "s1", 25 * D, 20 * D, 6, 40, 45);
    k
}

fn verdict<'a>(r: &'a CheckReport, name: &str) -> &'a Verdict {
    r.verdicts.iter().find(|v| v.checker == name).expect("checker present")
}

fn check(k: &Kit, fs: &FinalState) -> CheckReport {
    check_all(&k.h, Some(fs), CheckOptions::default())
}

#[test]
fn the_valid_history_passes_every_checker() {
    let k = valid_seed();
    let r = check(&k, &k.final_state());
    for v in &r.verdicts {
        assert!(v.valid, "{} flagged a valid history: {:?}", v.checker, v.violations);
    }
    assert!(r.valid);
    let linear = verdict(&r, "linearizable");
    assert_eq!(linear.stats["stateright_sessions_checked"], 1);
}

#[test]
fn an_overspend_is_invalid() {
    let mut k = valid_seed();
    // A third $10 approval while the first two are held: $30 on a $25 cap.
    k.approve(4, "s1", "k3", 10 * D, "au_2", Pos::new(7, 0), 0, 50, 60);
    let r = check(&k, &k.final_state());
    assert!(!r.valid);
    let v = verdict(&r, "no-overspend");
    assert!(!v.valid);
    assert!(
        v.violations
            .iter()
            .any(|x| x.contains("session s1") && x.contains("over cap")),
        "{:?}",
        v.violations
    );
    assert!(!verdict(&r, "linearizable").valid);
}

#[test]
fn an_overspend_is_caught_without_log_positions() {
    // A faulty cluster deciding locally: each node approves $10 twice and
    // returns made-up positions. The real-time sweep needs none.
    let mut k = Kit::new(&[("s1", 25 * D)]);
    for n in 0..3u64 {
        for j in 0..2u64 {
            let id = format!("au_{}", j);
            k.approve(
                n,
                "s1",
                &format!("k{n}{j}"),
                10 * D,
                &id,
                Pos::new(3, j as u32),
                15 * D - j * 10 * D,
                n * 5 + j,
                n * 5 + j + 100,
            );
        }
    }
    let v = check_overspend(&k.h, Some(&k.final_state()), CheckOptions::default());
    assert!(!v.valid);
}

#[test]
fn a_lost_acknowledgement_is_invalid() {
    let k = valid_seed();
    let mut fs = k.final_state();
    // node2 lost au_1 (and its session total with it).
    fs.nodes[1].holds.remove("au_1");
    if let Some(s) = fs.nodes[1].sessions.get_mut("s1") {
        s.limit.held = 10 * D;
        s.remaining = 15 * D;
    }
    let r = check(&k, &fs);
    let v = verdict(&r, "no-lost-acknowledgement");
    assert!(!v.valid);
    assert!(
        v.violations
            .iter()
            .any(|x| x.contains("au_1") && x.contains("missing on node2")),
        "{:?}",
        v.violations
    );
}

#[test]
fn a_lost_capture_is_invalid() {
    let mut k = valid_seed();
    k.op(
        5,
        Request::Capture {
            authorization: "au_0".into(),
            session: "s1".into(),
            amount: Some(4 * D),
            key: "c0".into(),
        },
        50,
        60,
        Outcome::Ok {
            response: Response::Captured {
                authorization_id: "au_0".into(),
                captured: 4 * D,
                released: 6 * D,
                replayed: false,
                pos: Pos::new(8, 0),
            },
        },
    );
    // The final state never heard of the capture.
    let fs = k.final_state();
    let r = check(&k, &fs);
    let v = verdict(&r, "no-lost-acknowledgement");
    assert!(!v.valid);
    assert!(
        v.violations
            .iter()
            .any(|x| x.contains("captured") && x.contains("au_0")),
        "{:?}",
        v.violations
    );
}

#[test]
fn diverging_digests_are_invalid() {
    let k = valid_seed();
    let mut fs = k.final_state();
    if let Some(d) = fs.digests.get_mut(&3) {
        d.digest = "cd".repeat(32);
    }
    let v = check_lost_acks(&k.h, Some(&fs));
    assert!(!v.valid);
    assert!(
        v.violations.iter().any(|x| x.contains("digests differ")),
        "{:?}",
        v.violations
    );
}

#[test]
fn a_stale_read_is_invalid() {
    let mut k = valid_seed();
    // Invoked after both approvals returned, yet it reads the state before
    // them, at an older index.
    k.read(7, "s1", 25 * D, 0, 4, 50, 55);
    let r = check(&k, &k.final_state());
    let v = verdict(&r, "linearizable");
    assert!(!v.valid);
    assert!(
        v.violations.iter().any(|x| x.contains("real-time order")),
        "{:?}",
        v.violations
    );
    assert!(
        v.violations.iter().any(|x| x.contains("stateright")),
        "{:?}",
        v.violations
    );
}

#[test]
fn a_read_that_misses_a_write_at_its_own_index_is_invalid() {
    let mut k = valid_seed();
    // Claims index 6 (after both approvals) but shows only one hold.
    k.read(7, "s1", 25 * D, 10 * D, 6, 50, 55);
    let r = check(&k, &k.final_state());
    let v = verdict(&r, "linearizable");
    assert!(!v.valid);
    assert!(v.violations.iter().any(|x| x.contains("read s1")), "{:?}", v.violations);
}

#[test]
fn a_duplicate_hold_for_one_key_is_invalid() {
    let mut k = Kit::new(&[("s1", 25 * D)]);
    k.approve(0, "s1", "k0", 5 * D, "au_0", Pos::new(5, 0), 20 * D, 0, 20);
    // Its retry made a second hold instead of replaying the first.
    k.approve(1, "s1", "k0", 5 * D, "au_1", Pos::new(6, 0), 15 * D, 30, 40);
    let r = check(&k, &k.final_state());
    let v = verdict(&r, "one-hold-per-key");
    assert!(!v.valid);
    assert!(v.violations.iter().any(|x| x.contains("key k0")), "{:?}", v.violations);
    assert!(!verdict(&r, "linearizable").valid);
}

#[test]
fn a_replayed_retry_is_one_hold() {
    let mut k = Kit::new(&[("s1", 25 * D)]);
    // The first attempt timed out; its retry got the first answer back.
    k.op(
        0,
        auth("s1", "k0", 5 * D, 600),
        0,
        2000,
        Outcome::Info {
            reason: "timeout".into(),
        },
    );
    let id = k.op(
        9,
        auth("s1", "k0", 5 * D, 600),
        2100,
        2110,
        Outcome::Ok {
            response: Response::Decision {
                approved: true,
                reason: None,
                budget_id: None,
                authorization_id: Some("au_0".into()),
                amount: Some(5 * D),
                remaining: Some(20 * D),
                expires_at_ms: Some(T0 + 500 + 600_000),
                replayed: true,
                pos: Pos::new(5, 0),
            },
        },
    );
    let r = check(&k, &k.final_state());
    for v in &r.verdicts {
        assert!(v.valid, "{} flagged op {id}: {:?}", v.checker, v.violations);
    }
}

/// A replay decided at its own log position (the node's semantics), and an
/// approval known only from such a replay (its first attempt timed out),
/// with a read in between that already sees it.
#[test]
fn replays_at_their_own_position_and_floating_approvals_pass() {
    let mut k = Kit::new(&[("s1", 25 * D)]);
    let replay = |id: &str, pos: Pos, expires: u64| Outcome::Ok {
        response: Response::Decision {
            approved: true,
            reason: None,
            budget_id: None,
            authorization_id: Some(id.into()),
            amount: Some(5 * D),
            remaining: Some(20 * D),
            expires_at_ms: Some(expires),
            replayed: true,
            pos,
        },
    };
    // First attempt: unknown; applied at entry 5 (t = 500 ms) unseen.
    k.op(
        0,
        auth("s1", "k0", 5 * D, 600),
        490,
        2490,
        Outcome::Info {
            reason: "timeout".into(),
        },
    );
    // A read at index 6 sees it.
    k.read(1, "s1", 25 * D, 5 * D, 6, 600, 620);
    // Another approval at index 7 (au_1): after au_0.
    k.approve(2, "s1", "k1", 10 * D, "au_1", Pos::new(7, 0), 10 * D, 700, 720);
    // The retry, answered from the stored result at its own entry 9.
    k.op(
        3,
        auth("s1", "k0", 5 * D, 600),
        2500,
        2510,
        replay("au_0", Pos::new(9, 0), T0 + 500 + 600_000),
    );
    // And once more, at entry 10.
    k.op(
        4,
        auth("s1", "k0", 5 * D, 600),
        2600,
        2610,
        replay("au_0", Pos::new(10, 0), T0 + 500 + 600_000),
    );
    let r = check(&k, &k.final_state());
    for v in &r.verdicts {
        assert!(v.valid, "{} flagged it: {:?}", v.checker, v.violations);
    }
    let linear = verdict(&r, "linearizable");
    assert_eq!(linear.stats["writes_known_only_from_replays"], 1);
    // A replay that names another hold than the key's first answer is caught.
    let mut k2 = k;
    k2.op(
        5,
        auth("s1", "k0", 5 * D, 600),
        2700,
        2710,
        replay("au_1", Pos::new(11, 0), T0 + 500 + 600_000),
    );
    let r = check(&k2, &k2.final_state());
    assert!(
        !verdict(&r, "linearizable").valid,
        "a replay with another hold id passed"
    );
    assert!(!verdict(&r, "one-hold-per-key").valid);
}

/// A void whose attempts timed out, seen taking effect by a read, and
/// confirmed by its replay much later.
#[test]
fn a_floating_void_is_placed_by_the_read_that_shows_it() {
    let build = |replayed: bool| {
        let mut k = Kit::new(&[("s1", 25 * D)]);
        k.approve(0, "s1", "k0", 10 * D, "au_0", Pos::new(5, 0), 15 * D, 0, 20);
        let void = Request::Void {
            authorization: "au_0".into(),
            session: "s1".into(),
            key: "v0".into(),
        };
        k.op(
            1,
            void.clone(),
            100,
            1600,
            Outcome::Info {
                reason: "timeout".into(),
            },
        );
        k.read(2, "s1", 25 * D, 0, 8, 2000, 2010);
        k.approve(3, "s1", "k1", 10 * D, "au_1", Pos::new(9, 0), 15 * D, 2100, 2120);
        if replayed {
            k.op(
                4,
                void,
                5000,
                5010,
                Outcome::Ok {
                    response: Response::Voided {
                        authorization_id: "au_0".into(),
                        released: 10 * D,
                        replayed: true,
                        pos: Pos::new(20, 0),
                    },
                },
            );
        }
        let mut fs = k.final_state();
        for n in &mut fs.nodes {
            if let Some(h) = n.holds.get_mut("au_0") {
                h.status = "voided".into();
            }
            if let Some(s) = n.sessions.get_mut("s1") {
                s.limit.held = 10 * D;
                s.remaining = 15 * D;
            }
        }
        check(&k, &fs)
    };
    let r = build(true);
    for v in &r.verdicts {
        assert!(v.valid, "{} flagged it: {:?}", v.checker, v.violations);
    }
    assert_eq!(verdict(&r, "linearizable").stats["of_those_placed_by_later_answers"], 1);
    // Without the replay nothing explains the read: invalid.
    let r = build(false);
    assert!(!verdict(&r, "linearizable").valid);
}

#[test]
fn an_unresolved_unknown_is_invalid() {
    let mut k = valid_seed();
    k.op(
        8,
        auth("s1", "k9", D, 600),
        50,
        2050,
        Outcome::Info {
            reason: "timeout".into(),
        },
    );
    let r = check(&k, &k.final_state());
    let v = verdict(&r, "linearizable");
    assert!(!v.valid);
    assert!(
        v.violations.iter().any(|x| x.contains("never resolved")),
        "{:?}",
        v.violations
    );
}

/// The shape a CI run once produced: a first attempt of `k2` times out (it
/// sits in an isolated node's queue), its retry elsewhere is denied, money
/// is freed, and then the first attempt arrives at the leader. A denial
/// binds its key, so the late attempt must get the denial again: a hold
/// from `k2` is invalid; without one, the retry's stale figures (those of
/// the first decision, unseen in the history) are valid.
fn late_first_attempt(left_a_hold: bool) -> CheckReport {
    let mut k = Kit::new(&[("s1", 25 * D)]);
    k.approve(0, "s1", "k0", 10 * D, "au_0", Pos::new(5, 0), 15 * D, 0, 20);
    k.approve(1, "s1", "k1", 10 * D, "au_1", Pos::new(5, 1), 5 * D, 0, 20);
    k.op(
        2,
        auth("s1", "k2", 10 * D, 600),
        30,
        1530,
        Outcome::Info {
            reason: "client timeout".into(),
        },
    );
    k.op(
        3,
        Request::Void {
            authorization: "au_0".into(),
            session: "s1".into(),
            key: "v0".into(),
        },
        1600,
        1610,
        Outcome::Ok {
            response: Response::Voided {
                authorization_id: "au_0".into(),
                released: 10 * D,
                replayed: false,
                pos: Pos::new(7, 0),
            },
        },
    );
    // The retry, decided at 8 but answering the first decision (5 left).
    k.deny(4, "s1", "k2", 10 * D, Pos::new(8, 0), 5 * D, 1700, 1710);
    let mut fs = k.final_state();
    for n in &mut fs.nodes {
        if let Some(h) = n.holds.get_mut("au_0") {
            h.status = "voided".into();
        }
        if left_a_hold {
            n.holds.insert(
                "au_2".into(),
                HoldFinal {
                    session: "s1".into(),
                    tool: "search".into(),
                    amount: 10 * D,
                    status: "held".into(),
                    captured: 0,
                    key: Some("k2".into()),
                    expires_at_ms: T0 + 600_000,
                },
            );
        }
        if let Some(s) = n.sessions.get_mut("s1") {
            s.limit.held = if left_a_hold { 20 * D } else { 10 * D };
            s.remaining = 25 * D - s.limit.held;
        }
    }
    check(&k, &fs)
}

#[test]
fn a_denial_binds_its_key_for_a_late_first_attempt() {
    let r = late_first_attempt(false);
    for v in &r.verdicts {
        assert!(v.valid, "{} flagged it: {:?}", v.checker, v.violations);
    }
    let r = late_first_attempt(true);
    let v = verdict(&r, "denial-left-nothing");
    assert!(!v.valid);
    assert!(
        v.violations.iter().any(|x| x.contains("left by a denied")),
        "{:?}",
        v.violations
    );
}

#[test]
fn a_denial_that_left_a_hold_is_invalid() {
    let k = valid_seed();
    let mut holds = k.final_state().nodes[0].holds.clone();
    holds.insert(
        "au_2".into(),
        HoldFinal {
            session: "s1".into(),
            tool: "search".into(),
            amount: 10 * D,
            status: "held".into(),
            captured: 0,
            key: Some("k2".into()),
            expires_at_ms: T0 + 600_000,
        },
    );
    let fs = final_with(&k.h.setup, holds);
    let r = check(&k, &fs);
    let v = verdict(&r, "denial-left-nothing");
    assert!(!v.valid);
    assert!(
        v.violations.iter().any(|x| x.contains("left by a denied")),
        "{:?}",
        v.violations
    );
}

#[test]
fn capture_near_a_deadline_is_judged_by_log_time() {
    // A 2 s hold, captured at 1.9-2.1 s: the capture's entry time is within
    // the slack of the deadline, so either side is possible and a success is
    // fine; captured at 5 s it must have expired.
    let build = |start: u64, end: u64| {
        let mut k = Kit::new(&[("s1", 25 * D)]);
        k.op(
            0,
            auth("s1", "k0", 10 * D, 2),
            0,
            10,
            Outcome::Ok {
                response: Response::Decision {
                    approved: true,
                    reason: None,
                    budget_id: None,
                    authorization_id: Some("au_0".into()),
                    amount: Some(10 * D),
                    remaining: Some(15 * D),
                    expires_at_ms: Some(T0 + 5 + 2000),
                    replayed: false,
                    pos: Pos::new(5, 0),
                },
            },
        );
        k.op(
            1,
            Request::Capture {
                authorization: "au_0".into(),
                session: "s1".into(),
                amount: None,
                key: "c".into(),
            },
            start,
            end,
            Outcome::Ok {
                response: Response::Captured {
                    authorization_id: "au_0".into(),
                    captured: 10 * D,
                    released: 0,
                    replayed: false,
                    pos: Pos::new(9, 0),
                },
            },
        );
        let mut holds = k.final_state().nodes[0].holds.clone();
        if let Some(h) = holds.get_mut("au_0") {
            h.status = "captured".into();
            h.captured = 10 * D;
        }
        let fs = final_with(&k.h.setup, holds);
        check(&k, &fs)
    };
    let near = build(1900, 2100);
    let v = verdict(&near, "linearizable");
    assert!(v.valid, "{:?}", v.violations);
    assert_eq!(v.stats["operations_with_uncertain_log_time"], 1);
    let late = build(5000, 5010);
    let v = verdict(&late, "linearizable");
    assert!(!v.valid);
    assert!(
        v.violations.iter().any(|x| x.contains("authorization_expired")),
        "{:?}",
        v.violations
    );
}

#[test]
fn stateright_rejects_what_real_time_forbids() {
    let mut k = Kit::new(&[("s1", 25 * D)]);
    k.approve(0, "s1", "k0", 10 * D, "au_0", Pos::new(5, 0), 15 * D, 0, 10);
    k.read(1, "s1", 25 * D, 0, 5, 20, 30);
    let ops: Vec<&Op> = k.h.ops.iter().collect();
    assert!(matches!(
        cross::check_session(25 * D, &ops),
        Err(cross::CrossError::Invalid(_))
    ));
    // The same read concurrent with the approval is fine.
    let mut k = Kit::new(&[("s1", 25 * D)]);
    k.approve(0, "s1", "k0", 10 * D, "au_0", Pos::new(5, 0), 15 * D, 0, 10);
    k.read(1, "s1", 25 * D, 0, 4, 5, 30);
    let ops: Vec<&Op> = k.h.ops.iter().collect();
    assert_eq!(cross::check_session(25 * D, &ops), Ok(()));
}

#[test]
fn a_hard_cross_check_ends_inconclusive_not_hung() {
    // Four unknown authorizations, fourteen concurrent denials of a full
    // session, and a read no order can explain: the search must give up
    // within its step budget instead of trying every interleaving.
    let mut k = Kit::new(&[("s1", 25 * D)]);
    k.approve(0, "s1", "k0", 25 * D, "au_0", Pos::new(2, 0), 0, 0, 10);
    for p in 1..5u64 {
        k.op(
            p,
            auth("s1", &format!("k{p}"), D, 600),
            20,
            10_000,
            Outcome::Info {
                reason: "timeout".into(),
            },
        );
    }
    for p in 5..19u64 {
        k.deny(p, "s1", &format!("k{p}"), D, Pos::new(3 + p, 0), 0, 20, 9_000);
    }
    k.read(99, "s1", 25 * D, 7 * D, 30, 20, 9_000);
    let ops: Vec<&Op> = k.h.ops.iter().collect();
    let started = std::time::Instant::now();
    let r = cross::check_session(25 * D, &ops);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    assert!(r.is_err());
}

fn denied(reason: &str, budget: Option<&str>, remaining: Option<u64>, pos: Pos) -> Outcome {
    Outcome::Ok {
        response: Response::Decision {
            approved: false,
            reason: Some(reason.into()),
            budget_id: budget.map(str::to_string),
            authorization_id: None,
            amount: None,
            remaining,
            expires_at_ms: None,
            replayed: false,
            pos,
        },
    }
}

#[test]
fn log_time_ahead_of_real_time_beyond_the_slack_is_an_early_expiry() {
    let mut k = valid_seed();
    // The server states its log time: within the slack it passes.
    k.h.ops[0].log_time_ms = Some(T0 + 20 + 200);
    let r = check(&k, &k.final_state());
    assert!(
        verdict(&r, "no-early-expiry").valid,
        "{:?}",
        verdict(&r, "no-early-expiry").violations
    );
    // A day ahead (a leader's clock that jumped, stamped unbounded).
    k.h.ops[2].log_time_ms = Some(T0 + 86_400_000);
    let r = check(&k, &k.final_state());
    let v = verdict(&r, "no-early-expiry");
    assert!(!v.valid);
    assert!(v.violations[0].contains("ahead of the real time"), "{:?}", v.violations);
    assert!(r.found_safety_violation());
    // A wider slack (the clock schedule's) still flags a day.
    let wide = CheckOptions {
        clock_slack_ms: 2_250,
        ..CheckOptions::default()
    };
    assert!(!verdict(&check_all(&k.h, Some(&k.final_state()), wide), "no-early-expiry").valid);
}

#[test]
fn a_session_denied_as_expired_before_its_expiry_is_invalid() {
    let mut k = valid_seed();
    k.op(
        5,
        auth("s1", "k9", D, 600),
        50,
        60,
        denied("session_expired", None, None, Pos::new(7, 0)),
    );
    let r = check(&k, &k.final_state());
    let v = verdict(&r, "no-early-expiry");
    assert!(!v.valid);
    assert!(
        v.violations.iter().any(|x| x.contains("denied as expired")),
        "{:?}",
        v.violations
    );
}

#[test]
fn a_hold_expired_before_its_deadline_is_invalid() {
    let k = valid_seed();
    let mut fs = k.final_state();
    for n in &mut fs.nodes {
        if let Some(h) = n.holds.get_mut("au_0") {
            h.status = "expired".into();
        }
    }
    let v = check_early_expiry(&k.h, Some(&fs), CheckOptions::default());
    assert!(!v.valid);
    assert!(v.violations[0].contains("expired"), "{:?}", v.violations);
    // A capture refused as expired long before the deadline too.
    let mut k = valid_seed();
    k.op(
        6,
        Request::Capture {
            authorization: "au_0".into(),
            session: "s1".into(),
            amount: None,
            key: "c".into(),
        },
        100,
        110,
        Outcome::Fail {
            status: 409,
            code: "authorization_expired".into(),
        },
    );
    let v = check_early_expiry(&k.h, Some(&k.final_state()), CheckOptions::default());
    assert!(!v.valid, "{:?}", v.violations);
}

/// A private session created, used with its token, rotated, then the old
/// token tried again with `outcome`.
fn rotated(outcome_of_old_token: Outcome) -> Kit {
    let mut k = valid_seed();
    let create = Request::CreateSession {
        session: "p".into(),
        cap: 30 * D,
        budget: None,
        expires_in_seconds: 7200,
    };
    k.op(
        7,
        create,
        50,
        60,
        Outcome::Ok {
            response: Response::SessionCreated {
                expires_at_ms: T0 + 7_200_055,
                index: 7,
                existed: false,
                token: Some("t1".into()),
            },
        },
    );
    let with_token = |key: &str, token: &str| {
        let mut r = auth("p", key, 5 * D, 600);
        if let Request::Authorize { token: t, .. } = &mut r {
            *t = Some(token.into());
        }
        r
    };
    let first = with_token("p0", "t1");
    let old = with_token("p1", "t1");
    k.approve(7, "p", "p0", 5 * D, "au_2", Pos::new(8, 0), 25 * D, 70, 80);
    if let Some(op) = k.h.ops.last_mut() {
        op.request = first;
    }
    k.op(
        7,
        Request::RotateToken { session: "p".into() },
        90,
        100,
        Outcome::Ok {
            response: Response::TokenRotated { token: "t2".into() },
        },
    );
    k.op(7, old, 110, 120, outcome_of_old_token);
    k
}

#[test]
fn a_token_accepted_after_its_rotation_is_invalid() {
    let refused = rotated(Outcome::Fail {
        status: 401,
        code: "unauthorized".into(),
    });
    let r = check(&refused, &refused.final_state());
    for v in &r.verdicts {
        assert!(v.valid, "{} flagged a valid history: {:?}", v.checker, v.violations);
    }
    let accepted = rotated(denied("session_cap", None, Some(25 * D), Pos::new(9, 0)));
    let r = check(&accepted, &accepted.final_state());
    let v = verdict(&r, "superseded-tokens");
    assert!(!v.valid);
    assert!(
        v.violations[0].contains("after a rotation replaced it"),
        "{:?}",
        v.violations
    );
}

#[test]
fn a_revoked_session_is_denied_and_an_approval_after_revocation_is_invalid() {
    let revoked = |later: Outcome| {
        let mut k = valid_seed();
        k.op(
            5,
            Request::Revoke { session: "s1".into() },
            50,
            60,
            Outcome::Ok {
                response: Response::Revoked { index: 7 },
            },
        );
        k.op(5, auth("s1", "k9", D, 600), 70, 80, later);
        k
    };
    let k = revoked(denied("session_revoked", None, None, Pos::new(8, 0)));
    let r = check(&k, &k.final_state());
    assert!(
        verdict(&r, "linearizable").valid,
        "{:?}",
        verdict(&r, "linearizable").violations
    );
    let mut k = revoked(denied("session_revoked", None, None, Pos::new(8, 0)));
    // The same request approved instead.
    k.h.ops.pop();
    k.approve(5, "s1", "k9", D, "au_2", Pos::new(8, 0), 4 * D, 70, 80);
    let r = check(&k, &k.final_state());
    let v = verdict(&r, "linearizable");
    assert!(!v.valid);
    assert!(
        v.violations.iter().any(|x| x.contains("session_revoked")),
        "{:?}",
        v.violations
    );
}

/// A $20 team budget over a $100 session: $15 approved, the budget raised
/// to $40 (or not), then $15 more approved.
fn raised(with_raise: bool) -> Kit {
    let mut k = Kit::new(&[("s1", 100 * D)]);
    k.h.setup.budgets.push(BudgetSpec {
        id: "team".into(),
        cap: 20 * D,
        parent: None,
        tool_caps: BTreeMap::new(),
    });
    k.h.setup.sessions[0].budget = Some("team".into());
    k.approve(0, "s1", "k0", 15 * D, "au_0", Pos::new(5, 0), 85 * D, 0, 20);
    if with_raise {
        k.op(
            9,
            Request::RaiseBudget {
                budget: "team".into(),
                from: 20 * D,
                cap: 40 * D,
            },
            30,
            40,
            Outcome::Ok {
                response: Response::BudgetUpdated { cap: 40 * D },
            },
        );
    }
    k.approve(1, "s1", "k1", 15 * D, "au_1", Pos::new(7, 0), 70 * D, 50, 60);
    k
}

#[test]
fn a_budget_raise_explains_approvals_above_the_old_cap() {
    let k = raised(true);
    let r = check(&k, &k.final_state());
    for name in ["no-overspend", "linearizable"] {
        assert!(verdict(&r, name).valid, "{name}: {:?}", verdict(&r, name).violations);
    }
    let k = raised(false);
    let r = check(&k, &k.final_state());
    assert!(!verdict(&r, "no-overspend").valid);
    assert!(!verdict(&r, "linearizable").valid);
}
