//! Checker 5: order `ok` operations by the log position the server
//! returned, check that order against real time, and replay it against the
//! sequential model, comparing every result (the design of Jepsen's
//! TigerBeetle checker: linear-ish, no search).
//!
//! Log time: an approval states its entry's time exactly (`expires_at_ms -
//! hold_seconds`); every other entry's time is bounded by its requests' real
//! times (the cluster stamps entries with the same host clock, within
//! `clock_slack_ms`) and by the times of the entries around it (the log
//! clock never runs backwards). Where a hold's deadline falls inside those
//! bounds, the model tries both sides of it.

use std::collections::{BTreeMap, HashMap};

use super::{CheckOptions, Verdict};
use crate::final_state::FinalState;
use crate::history::{History, Op, Pos, Request, Response};
use crate::model::{matches, Expected, HoldState, Model};

/// An idempotency key's identity: request kind, scope, key.
pub(crate) type KeyId<'a> = (&'static str, &'a str, &'a str);

fn key_id(r: &Request) -> Option<KeyId<'_>> {
    r.scoped_key().map(|(scope, key)| (r.name(), scope, key))
}

/// Codes that say for certain what happened to an earlier attempt of the
/// same key (a retry that got one of these resolved it).
const DEFINITE_REFUSALS: &[&str] = &[
    "already_captured",
    "already_voided",
    "authorization_expired",
    "amount_exceeds_hold",
    "unknown_authorization",
    "idempotency_conflict",
];

struct Bounds {
    /// Sorted distinct indexes with (prefix lower bound, suffix upper bound).
    indexes: Vec<u64>,
    lo: Vec<u64>,
    hi: Vec<u64>,
}

impl Bounds {
    /// Bounds of the log time of the state after entry `index`, which need
    /// not be an index of the history.
    fn after(&self, index: u64) -> (u64, u64) {
        // Entries <= index give the lower bound, entries > index the upper.
        let p = self.indexes.partition_point(|i| *i <= index);
        let lo = if p == 0 { 0 } else { self.lo[p - 1] };
        let hi = if p < self.indexes.len() { self.hi[p] } else { u64::MAX };
        (lo, hi)
    }

    fn at(&self, index: u64) -> (u64, u64) {
        match self.indexes.binary_search(&index) {
            Ok(p) => (self.lo[p], self.hi[p].max(self.lo[p])),
            Err(_) => self.after(index),
        }
    }
}

fn describe(op: &Op) -> String {
    match &op.request {
        Request::Authorize {
            session,
            amount,
            key,
            tool,
            ..
        } => format!(
            "op {} authorize {session} {} {tool} key {key}",
            op.id,
            crate::history::format_amount(*amount)
        ),
        Request::Capture {
            authorization, amount, ..
        } => format!(
            "op {} capture {authorization} {}",
            op.id,
            amount
                .map(crate::history::format_amount)
                .unwrap_or_else(|| "all".into())
        ),
        Request::Void { authorization, .. } => format!("op {} void {authorization}", op.id),
        Request::Read { session } => format!("op {} read {session}", op.id),
        other => format!("op {} {} {}", op.id, other.name(), other.session()),
    }
}

/// Tries the model at every log time in `[lo, hi]` where the outcome could
/// change; returns the smallest time that matches, or the mismatch at `lo`.
fn evaluate(model: &Model, request: &Request, response: &Response, lo: u64, hi: u64) -> (Result<u64, String>, bool) {
    let mut candidates = vec![lo];
    candidates.extend(model.change_points(lo, hi, Some(request.session())));
    let ambiguous = candidates.len() > 1;
    let mut first_error = None;
    for c in candidates {
        let result = if c == lo {
            let mut m;
            let view = if model.now_ms() < lo {
                m = model.clone();
                m.advance(lo);
                &m
            } else {
                model
            };
            matches(&view.expect(request, c), response)
        } else {
            let mut m = model.clone();
            m.advance(c);
            matches(&m.expect(request, c), response)
        };
        match result {
            Ok(()) => return (Ok(c), ambiguous),
            Err(e) => {
                if first_error.is_none() {
                    first_error = Some(e);
                }
            }
        }
    }
    (Err(first_error.unwrap_or_default()), ambiguous)
}

/// Whether an unknown operation's fate is known: its key got an answer that
/// took effect (approved, captured, voided: later attempts only replay it),
/// or an attempt invoked after it got a definite answer.
pub(crate) struct Resolution<'a> {
    effect: HashMap<KeyId<'a>, ()>,
    definite_after: HashMap<KeyId<'a>, u64>,
}

impl<'a> Resolution<'a> {
    pub(crate) fn new(ops: &'a [Op]) -> Resolution<'a> {
        let mut effect = HashMap::new();
        let mut definite_after: HashMap<KeyId, u64> = HashMap::new();
        for op in ops {
            let Some(k) = key_id(&op.request) else { continue };
            let took_effect = matches!(
                op.ok(),
                Some(Response::Decision { approved: true, .. } | Response::Captured { .. } | Response::Voided { .. })
            );
            if took_effect {
                effect.insert(k, ());
            }
            if op.ok().is_some() || op.fail_code().is_some_and(|c| DEFINITE_REFUSALS.contains(&c)) {
                let e = definite_after.entry(k).or_insert(0);
                *e = (*e).max(op.invoke_ns);
            }
        }
        Resolution { effect, definite_after }
    }

    pub(crate) fn resolved(&self, op: &Op) -> bool {
        let Some(k) = key_id(&op.request) else { return true };
        self.effect.contains_key(&k) || self.definite_after.get(&k).is_some_and(|t| *t > op.invoke_ns)
    }
}

/// An `ok` answer with its log position and real-time window.
struct Item<'a> {
    op: &'a Op,
    resp: &'a Response,
    pos: Pos,
    start_ns: u64,
    start_wall_ms: u64,
}

/// A read waiting for the state it shows.
struct Pending<'a> {
    item: &'a Item<'a>,
    first_error: Option<String>,
}

/// A write known only from a replay of its key (see the replay loop).
struct Float<'a> {
    request: &'a Request,
    response: &'a Response,
    session: &'a str,
    /// Approvals: the hold id's number and the entry's exact log time.
    number: Option<u64>,
    time: Option<u64>,
    /// Lower bound of its log time: its key's first attempt began.
    earliest: u64,
    /// Its first replay: it happened before.
    deadline: Pos,
}

impl Float<'_> {
    /// Whether it could have happened at or before log time `hi`.
    fn could_precede(&self, hi: u64) -> bool {
        self.time.unwrap_or(self.earliest) <= hi
    }
}

fn apply_float(model: &mut Model, f: &Float) -> Result<(), String> {
    match f.request {
        Request::Authorize { .. } => model.apply_out_of_order(f.request, f.response),
        _ => model.apply_late(f.request, f.response),
    }
}

fn commit_floats(model: &mut Model, floats: &mut Vec<Float>, v: &mut Verdict, due: impl Fn(&Float) -> bool) {
    floats.retain(|f| {
        if !due(f) {
            return true;
        }
        if let Err(e) = apply_float(model, f) {
            v.violation(format!("{} shown by a replay at {}: {e}", f.request.name(), f.deadline));
        }
        false
    });
}

/// [`evaluate`], trying also the state with each pending float that could
/// precede this operation (and all of them); a float whose effect alone
/// explains the answer is committed. Returns how many were committed.
fn evaluate_with_floats(
    model: &mut Model,
    floats: &mut Vec<Float>,
    shares: &dyn Fn(&str, &str) -> bool,
    request: &Request,
    response: &Response,
    lo: u64,
    hi: u64,
) -> (Result<u64, String>, bool, usize) {
    let eligible: Vec<usize> = floats
        .iter()
        .enumerate()
        .filter(|(_, f)| f.could_precede(hi) && shares(f.session, request.session()))
        .map(|(k, _)| k)
        .take(4)
        .collect();
    let (first, ambiguous) = evaluate(model, request, response, lo, hi);
    if first.is_ok() || eligible.is_empty() {
        return (first, ambiguous, 0);
    }
    let mut variants: Vec<Vec<usize>> = eligible.iter().map(|k| vec![*k]).collect();
    if eligible.len() > 1 {
        variants.push(eligible.clone());
    }
    for variant in variants {
        let mut m = model.clone();
        if variant.iter().any(|k| apply_float(&mut m, &floats[*k]).is_err()) {
            continue;
        }
        let (r, amb) = evaluate(&m, request, response, lo, hi);
        if r.is_ok() {
            *model = m;
            let mut sorted = variant.clone();
            sorted.sort_unstable_by(|x, y| y.cmp(x));
            for k in sorted {
                floats.remove(k);
            }
            return (r, amb, variant.len());
        }
    }
    (first, ambiguous, 0)
}

struct ReadCtx<'a, 'b> {
    floats: &'a mut Vec<Float<'b>>,
    shares: &'a dyn Fn(&str, &str) -> bool,
    v: &'a mut Verdict,
    ambiguous_ops: &'a mut usize,
    late_reads: &'a mut usize,
    shown_by_answers: &'a mut usize,
}

/// Checks the reads waiting for a state: the model is now the state after
/// every entry up to `state_index`. A read that matches no state up to the
/// first entry surely after it (`cutoff_ns`; None: the end) is a violation.
fn check_reads(
    model: &mut Model,
    pending: &mut Vec<Pending>,
    bounds: &Bounds,
    slack: u64,
    state_index: u64,
    cutoff_ns: Option<u64>,
    ctx: &mut ReadCtx,
) {
    let (lo, hi_state) = bounds.after(state_index);
    model.advance(lo);
    pending.retain_mut(|p| {
        let hi = hi_state.min(p.item.op.complete_wall_ms.saturating_add(slack)).max(lo);
        let (result, ambiguous, shown) =
            evaluate_with_floats(model, ctx.floats, ctx.shares, &p.item.op.request, p.item.resp, lo, hi);
        *ctx.shown_by_answers += shown;
        if ambiguous {
            *ctx.ambiguous_ops += 1;
        }
        match result {
            Ok(_) => {
                if p.first_error.is_some() {
                    *ctx.late_reads += 1;
                }
                false
            }
            Err(e) => {
                let first = p.first_error.get_or_insert(e).clone();
                let surely_after = cutoff_ns.is_none_or(|c| c > p.item.op.complete_ns);
                if surely_after {
                    ctx.v.violation(format!(
                        "{} on node{} at read index {}: {first}",
                        describe(p.item.op),
                        p.item.op.node,
                        p.item.pos.index
                    ));
                    false
                } else {
                    true
                }
            }
        }
    });
}

pub fn check_linearizable(history: &History, final_state: Option<&FinalState>, options: CheckOptions) -> Verdict {
    let mut v = Verdict::new("linearizable");
    let slack = options.clock_slack_ms;
    let ops = &history.ops;
    // Budget raises that took or may have taken effect, with the answer
    // they give the model.
    let raise_answers: Vec<(&Op, Response)> = ops
        .iter()
        .filter_map(|op| match (&op.request, op.ok()) {
            (Request::RaiseBudget { .. }, Some(r @ Response::BudgetUpdated { .. })) => Some((op, r.clone())),
            (Request::RaiseBudget { cap, .. }, None) if op.is_info() => {
                Some((op, Response::BudgetUpdated { cap: *cap }))
            }
            _ => None,
        })
        .collect();

    // The first attempt of every key: a replayed answer took effect after it.
    let mut first_invoke: HashMap<KeyId, (u64, u64, u64)> = HashMap::new();
    for op in ops {
        if let Some(k) = key_id(&op.request) {
            let e = first_invoke
                .entry(k)
                .or_insert((op.invoke_ns, op.invoke_wall_ms, op.id));
            if op.invoke_ns < e.0 {
                *e = (op.invoke_ns, op.invoke_wall_ms, op.id);
            }
        }
    }

    // Unknown outcomes must have been resolved by a later attempt of the
    // same key (the final phase re-sends each one).
    let mut unknown = 0usize;
    let mut unresolved = 0usize;
    let resolution = Resolution::new(ops);
    for op in ops {
        if !op.is_info() || matches!(op.request, Request::Read { .. }) {
            continue;
        }
        unknown += 1;
        if !resolution.resolved(op) {
            unresolved += 1;
            v.violation(format!(
                "{} on node{}: outcome unknown and never resolved by a retry of its key",
                describe(op),
                op.node
            ));
        }
    }
    v.stat("unknown_operations", unknown);
    v.stat("unknown_unresolved", unresolved);

    // Writes and reads with their log positions and real-time windows.
    // Where each key's first (fresh) answer sits. A replay may come back at
    // that position (the first decision again) or at its own (decided anew
    // from the stored result); both are accepted.
    let mut fresh_pos: HashMap<KeyId, Pos> = HashMap::new();
    for op in ops {
        if let (Some(resp), Some(k)) = (op.ok(), key_id(&op.request)) {
            if !resp.replayed() && !resp.is_read() {
                let e = fresh_pos.entry(k).or_insert(resp.pos());
                *e = (*e).min(resp.pos());
            }
        }
    }
    let mut writes: Vec<Item> = Vec::new();
    let mut reads: Vec<Item> = Vec::new();
    let mut revocations: Vec<(u64, &str)> = Vec::new();
    for op in ops {
        let Some(resp) = op.ok() else { continue };
        let (start_ns, start_wall_ms) = if resp.replayed() {
            let k = key_id(&op.request);
            let first = k.and_then(|k| first_invoke.get(&k)).copied();
            if first.is_some_and(|f| f.2 == op.id) {
                v.violation(format!(
                    "{} answered as a replay, but no earlier attempt of its key exists",
                    describe(op)
                ));
            }
            // Either the first decision again (at its position, after the
            // key's first attempt began) or decided anew at its own; the
            // earlier start covers both.
            match first {
                Some((ns, wall, _)) => (ns, wall),
                None => (op.invoke_ns, op.invoke_wall_ms),
            }
        } else {
            (op.invoke_ns, op.invoke_wall_ms)
        };
        let item = Item {
            op,
            resp,
            pos: resp.pos(),
            start_ns,
            start_wall_ms,
        };
        if resp.is_admin() {
            // Not in the log order of decisions: revocations are applied at
            // their entry, raises float (below), the rest change no money.
            if let (Request::Revoke { session }, Response::Revoked { index }) = (&op.request, resp) {
                revocations.push((*index, session.as_str()));
            }
            continue;
        }
        if resp.is_read() {
            reads.push(item);
        } else {
            writes.push(item);
        }
    }
    writes.sort_by(|a, b| a.pos.cmp(&b.pos).then(a.op.id.cmp(&b.op.id)));
    reads.sort_by(|a, b| a.pos.cmp(&b.pos).then(a.op.id.cmp(&b.op.id)));

    // 1. Log order against real time. Ops sharing a position are one event:
    // it happened inside all their windows.
    {
        let mut all: Vec<&Item> = writes.iter().chain(reads.iter()).collect();
        all.sort_by(|a, b| a.pos.cmp(&b.pos).then(a.op.id.cmp(&b.op.id)));
        // Groups: (pos, latest start, its op, earliest end, its op).
        let mut groups: Vec<(Pos, u64, u64, u64, u64)> = Vec::new();
        let mut i = 0;
        while i < all.len() {
            let mut j = i;
            let (mut start, mut start_op, mut end, mut end_op) = (0u64, 0u64, u64::MAX, 0u64);
            while j < all.len() && all[j].pos == all[i].pos {
                if all[j].start_ns >= start {
                    start = all[j].start_ns;
                    start_op = all[j].op.id;
                }
                if all[j].op.complete_ns < end {
                    end = all[j].op.complete_ns;
                    end_op = all[j].op.id;
                }
                j += 1;
            }
            if !all[i].resp.is_read() && start > end {
                v.violation(format!(
                    "ops {start_op} and {end_op} share log position {} but op {end_op} ended at {:.3}s before op {start_op} began at {:.3}s",
                    all[i].pos,
                    end as f64 / 1e9,
                    start as f64 / 1e9
                ));
            }
            groups.push((all[i].pos, start, start_op, end, end_op));
            i = j;
        }
        let mut min_end_after = (u64::MAX, 0u64, Pos::new(0, 0));
        let mut order_violations = 0usize;
        for g in groups.iter().rev() {
            let (pos, start, start_op, end, end_op) = *g;
            if min_end_after.0 < start {
                order_violations += 1;
                v.violation(format!(
                    "real-time order: op {} at log position {} ended at {:.3}s, before op {start_op} at earlier position {pos} began at {:.3}s",
                    min_end_after.1,
                    min_end_after.2,
                    min_end_after.0 as f64 / 1e9,
                    start as f64 / 1e9
                ));
            }
            if end < min_end_after.0 {
                min_end_after = (end, end_op, pos);
            }
        }
        v.stat("real_time_order_violations", order_violations);
    }

    // 2. Log time bounds per index.
    // index -> (lower bound, upper bound, exact time and the op that gave it)
    type IndexTime = (u64, u64, Option<(u64, u64)>);
    let mut per_index: BTreeMap<u64, IndexTime> = BTreeMap::new();
    for w in &writes {
        let exact = match (&w.op.request, w.resp) {
            (
                Request::Authorize { hold_seconds, .. },
                Response::Decision {
                    approved: true,
                    expires_at_ms: Some(e),
                    replayed: false,
                    ..
                },
            ) => Some(e.saturating_sub(hold_seconds.saturating_mul(1000))),
            _ => None,
        };
        // The server's own word on its entry's time wins.
        let exact = w.op.log_time_ms.or(exact);
        let lo = exact.unwrap_or(w.start_wall_ms.saturating_sub(slack));
        let hi = exact.unwrap_or(w.op.complete_wall_ms.saturating_add(slack));
        let e = per_index.entry(w.pos.index).or_insert((0, u64::MAX, None));
        e.0 = e.0.max(lo);
        e.1 = e.1.min(hi);
        if let Some(t) = exact {
            match e.2 {
                Some((other, op)) if other != t => v.violation(format!(
                    "log entry {} has two times: {other} (op {op}) and {t} (op {})",
                    w.pos.index, w.op.id
                )),
                _ => e.2 = Some((t, w.op.id)),
            }
        }
    }
    let mut last_exact: Option<(u64, u64, u64)> = None;
    for (index, (_, _, exact)) in &per_index {
        if let Some((t, op)) = exact {
            if let Some((li, lt, lop)) = last_exact {
                if *t < lt {
                    v.violation(format!(
                        "log clock ran backwards: entry {li} (op {lop}) at {lt} ms, later entry {index} (op {op}) at {t} ms"
                    ));
                }
            }
            last_exact = Some((*index, *t, *op));
        }
    }
    let indexes: Vec<u64> = per_index.keys().copied().collect();
    let mut lo = Vec::with_capacity(indexes.len());
    let mut running = 0u64;
    for e in per_index.values() {
        running = running.max(e.0);
        lo.push(running);
    }
    let mut hi = vec![u64::MAX; indexes.len()];
    let mut running = u64::MAX;
    for (k, e) in per_index.values().enumerate().rev() {
        running = running.min(e.1);
        hi[k] = running;
    }
    let mut clock_conflicts = 0usize;
    for k in 0..indexes.len() {
        if hi[k] < lo[k] {
            clock_conflicts += 1;
        }
    }
    v.stat("clock_bound_conflicts", clock_conflicts);
    let bounds = Bounds { indexes, lo, hi };

    // 3. Replay in log order.
    let mut model = Model::from_setup(&history.setup);
    let mut ambiguous_ops = 0usize;
    let mut late_reads = 0usize;
    let mut pending: Vec<Pending> = Vec::new();
    let mut next_read = 0usize;

    // The caps each session counts against: itself and its budgets.
    let mut levels: HashMap<&str, Vec<&str>> = HashMap::new();
    for s in &history.setup.sessions {
        let mut l = vec![s.id.as_str()];
        let mut next = s.budget.as_deref();
        while let Some(b) = next {
            if l.len() > 16 {
                break;
            }
            l.push(b);
            next = history
                .setup
                .budgets
                .iter()
                .find(|x| x.id == b)
                .and_then(|x| x.parent.as_deref());
        }
        levels.insert(s.id.as_str(), l);
    }
    // A budget (the "session" of a raise) stands for itself.
    let shares = |a: &str, b: &str| {
        let x = levels.get(a).map(|l| l.as_slice()).unwrap_or(std::slice::from_ref(&a));
        let y = levels.get(b).map(|l| l.as_slice()).unwrap_or(std::slice::from_ref(&b));
        a == b || x.iter().any(|l| y.contains(l))
    };

    // Writes seen only as replays: the first attempt's outcome was unknown,
    // and a later attempt of the key showed it had taken effect at some
    // earlier, unknown position. Each floats until an answer shows it
    // (an operation whose result only the float's effect explains) or until
    // it must have happened (its first replay; for an approval also a log
    // time past its own or a newer hold id).
    let mut floats: Vec<Float> = Vec::new();
    for w in &writes {
        if !w.resp.replayed() {
            continue;
        }
        let Some(k) = key_id(&w.op.request) else { continue };
        if fresh_pos.contains_key(&k) || floats.iter().any(|f| key_id(f.request) == Some(k)) {
            continue;
        }
        let earliest = first_invoke
            .get(&k)
            .map(|f| f.1)
            .unwrap_or(w.start_wall_ms)
            .saturating_sub(slack);
        let (number, time) = match (&w.op.request, w.resp) {
            (
                Request::Authorize { hold_seconds, .. },
                Response::Decision {
                    approved: true,
                    authorization_id: Some(id),
                    expires_at_ms: Some(e),
                    ..
                },
            ) => (
                crate::history::hold_number(id),
                Some(e.saturating_sub(hold_seconds.saturating_mul(1000))),
            ),
            (Request::Authorize { .. }, _) => continue,
            _ => (None, None),
        };
        floats.push(Float {
            request: &w.op.request,
            response: w.resp,
            session: w.op.request.session(),
            number,
            time,
            earliest,
            deadline: w.pos,
        });
    }
    // Budget raises answer with no log position: each floats from its
    // invocation until the first decision invoked after it was acknowledged
    // (surely later in the log), or until an answer needs it. A raise whose
    // outcome is unknown floats to the end.
    for (op, resp) in &raise_answers {
        let deadline = match op.ok() {
            Some(_) => writes
                .iter()
                .filter(|w| w.start_ns > op.complete_ns)
                .map(|w| w.pos)
                .min()
                .unwrap_or(Pos::new(u64::MAX, u32::MAX)),
            None => Pos::new(u64::MAX, u32::MAX),
        };
        floats.push(Float {
            request: &op.request,
            response: resp,
            session: op.request.session(),
            number: None,
            time: None,
            earliest: op.invoke_wall_ms.saturating_sub(slack),
            deadline,
        });
    }
    revocations.sort_unstable();
    let mut next_revocation = 0usize;
    let floats_total = floats.len();
    let mut shown_by_answers = 0usize;

    // The earliest unknown attempt of each key. A denial of a key that had
    // an earlier unknown attempt may be that attempt's decision replayed
    // (a denial binds its key), taken at an earlier log position the history
    // does not show: its figures are not checked against the model here,
    // only its binding of the key is kept.
    let mut unknown_since: HashMap<KeyId, u64> = HashMap::new();
    for op in ops {
        if let (true, Some(k)) = (op.is_info(), key_id(&op.request)) {
            let e = unknown_since.entry(k).or_insert(op.invoke_ns);
            *e = (*e).min(op.invoke_ns);
        }
    }

    let mut i = 0usize;
    let mut replayed_ops = 0usize;
    while i < writes.len() {
        let index = writes[i].pos.index;
        let mut j = i;
        let mut group_start = u64::MAX;
        while j < writes.len() && writes[j].pos.index == index {
            group_start = group_start.min(writes[j].start_ns);
            j += 1;
        }
        while next_read < reads.len() && reads[next_read].pos.index < index {
            pending.push(Pending {
                item: &reads[next_read],
                first_error: None,
            });
            next_read += 1;
        }
        let (lo, hi) = bounds.at(index);
        // Floating approvals whose log time is surely before this entry.
        commit_floats(&mut model, &mut floats, &mut v, |f| f.time.is_some_and(|t| t < lo));
        if !pending.is_empty() {
            let mut ctx = ReadCtx {
                floats: &mut floats,
                shares: &shares,
                v: &mut v,
                ambiguous_ops: &mut ambiguous_ops,
                late_reads: &mut late_reads,
                shown_by_answers: &mut shown_by_answers,
            };
            check_reads(
                &mut model,
                &mut pending,
                &bounds,
                slack,
                index.saturating_sub(1),
                Some(group_start),
                &mut ctx,
            );
        }
        model.advance(lo);
        // Revocations in earlier entries (a revoked session's own operations
        // are sequential, so none shares the revocation's entry), after the
        // reads before this entry were checked (the workload reads no
        // session it revokes).
        while next_revocation < revocations.len() && revocations[next_revocation].0 < index {
            model.revoke(revocations[next_revocation].1);
            next_revocation += 1;
        }
        let mut a = i;
        while a < j {
            let mut b = a;
            while b < j && writes[b].pos == writes[a].pos {
                b += 1;
            }
            let group = &writes[a..b];
            let fresh: Vec<&Item> = group.iter().filter(|w| !w.resp.replayed()).collect();
            if fresh.len() > 1 {
                v.violation(format!(
                    "log position {} answered as a fresh decision twice: {} and {}",
                    group[0].pos,
                    describe(fresh[0].op),
                    describe(fresh[1].op)
                ));
            }
            let primary = fresh.first().copied().unwrap_or(&group[0]);
            let fresh_number = match primary.resp {
                Response::Decision {
                    approved: true,
                    replayed: false,
                    authorization_id: Some(id),
                    ..
                } => crate::history::hold_number(id),
                _ => None,
            };
            commit_floats(&mut model, &mut floats, &mut v, |f| {
                primary.pos >= f.deadline || (fresh_number.is_some() && f.number.is_some() && fresh_number > f.number)
            });
            let denial_after_unknown = matches!(primary.resp, Response::Decision { approved: false, .. })
                && !model.knows_key(&primary.op.request)
                && key_id(&primary.op.request)
                    .and_then(|k| unknown_since.get(&k))
                    .is_some_and(|since| *since < primary.op.invoke_ns);
            let (result, ambiguous, shown) = if denial_after_unknown {
                (Ok(lo), true, 0)
            } else {
                evaluate_with_floats(
                    &mut model,
                    &mut floats,
                    &shares,
                    &primary.op.request,
                    primary.resp,
                    lo,
                    hi,
                )
            };
            shown_by_answers += shown;
            if ambiguous {
                ambiguous_ops += 1;
            }
            replayed_ops += 1;
            match result {
                Ok(t) => {
                    model.advance(t);
                    if let Err(e) = model.apply(&primary.op.request, primary.resp) {
                        v.violation(format!("{} at {}: {e}", describe(primary.op), primary.pos));
                    }
                }
                Err(e) => {
                    v.violation(format!(
                        "{} on node{} at log position {}: {e}",
                        describe(primary.op),
                        primary.op.node,
                        primary.pos
                    ));
                    // Trust the server's answer from here on, so that one
                    // wrong answer is reported once.
                    let _ = model.apply(&primary.op.request, primary.resp);
                }
            }
            for other in group {
                if std::ptr::eq(other, primary) {
                    continue;
                }
                if key_id(&other.op.request) != key_id(&primary.op.request) {
                    v.violation(format!(
                        "log position {} answered to different requests: {} and {}",
                        other.pos,
                        describe(primary.op),
                        describe(other.op)
                    ));
                    continue;
                }
                if let Err(e) = matches(&Expected::Replay(strip(primary.resp)), other.resp) {
                    v.violation(format!("{} at {}: {e}", describe(other.op), other.pos));
                }
            }
            a = b;
        }
        i = j;
    }
    commit_floats(&mut model, &mut floats, &mut v, |_| true);
    while next_read < reads.len() {
        pending.push(Pending {
            item: &reads[next_read],
            first_error: None,
        });
        next_read += 1;
    }
    if !pending.is_empty() {
        let mut ctx = ReadCtx {
            floats: &mut floats,
            shares: &shares,
            v: &mut v,
            ambiguous_ops: &mut ambiguous_ops,
            late_reads: &mut late_reads,
            shown_by_answers: &mut shown_by_answers,
        };
        check_reads(&mut model, &mut pending, &bounds, slack, u64::MAX, None, &mut ctx);
    }
    v.stat("writes_known_only_from_replays", floats_total);
    v.stat("of_those_placed_by_later_answers", shown_by_answers);
    v.stat("writes_replayed", replayed_ops);
    v.stat("reads_checked", reads.len());
    v.stat("reads_matching_a_later_state", late_reads);
    v.stat("operations_with_uncertain_log_time", ambiguous_ops);

    // 4. The final state is the model's.
    if let Some(fs) = final_state {
        if let Some(node) = fs.nodes.first() {
            let lo = fs.read_start_wall_ms.saturating_sub(slack);
            let hi = fs.read_end_wall_ms.saturating_add(slack);
            model.advance(lo);
            let mut compared = 0usize;
            for (id, h) in model.holds() {
                let Some(f) = node.holds.get(id) else { continue };
                compared += 1;
                let maybe_expired = h.state == HoldState::Held && h.expires_at_ms <= hi;
                if f.key.as_deref() != Some(h.key.as_str()) || f.session != h.session || f.amount != h.amount {
                    v.violation(format!(
                        "final state on node{}: {id} is {} key {:?} {}; the history approved it for {} key {} {}",
                        node.node,
                        f.session,
                        f.key,
                        crate::history::format_amount(f.amount),
                        h.session,
                        h.key,
                        crate::history::format_amount(h.amount)
                    ));
                    continue;
                }
                let ok = (f.status == h.state.as_str() && f.captured == h.captured)
                    || (maybe_expired && f.status == "expired");
                if !ok {
                    v.violation(format!(
                        "final state on node{}: {id} is {} with {} captured; the history makes it {} with {}",
                        node.node,
                        f.status,
                        crate::history::format_amount(f.captured),
                        h.state.as_str(),
                        crate::history::format_amount(h.captured)
                    ));
                }
            }
            for s in &history.setup.sessions {
                let (Some(m), Some(f)) = (model.session_usage(&s.id), node.sessions.get(&s.id)) else {
                    continue;
                };
                let uncertain: u64 = model
                    .holds()
                    .filter(|(_, h)| h.session == s.id && h.state == HoldState::Held && h.expires_at_ms <= hi)
                    .map(|(_, h)| h.amount)
                    .sum();
                let held_ok = f.limit.held <= m.held && f.limit.held + uncertain >= m.held;
                if f.limit.spent != m.spent || !held_ok {
                    v.violation(format!(
                        "final state on node{}: session {} spent {} held {}; the history gives spent {} held {}",
                        node.node,
                        s.id,
                        crate::history::format_amount(f.limit.spent),
                        crate::history::format_amount(f.limit.held),
                        crate::history::format_amount(m.spent),
                        crate::history::format_amount(m.held)
                    ));
                }
            }
            for b in &history.setup.budgets {
                let (Some(m), Some(f)) = (model.budget_usage(&b.id), node.budgets.get(&b.id)) else {
                    continue;
                };
                // Holds near their deadline make `held` uncertain; spent is not.
                let uncertain: u64 = model
                    .holds()
                    .filter(|(_, h)| h.state == HoldState::Held && h.expires_at_ms <= hi)
                    .map(|(_, h)| h.amount)
                    .sum();
                let held_ok = f.limit.held <= m.held && f.limit.held + uncertain >= m.held;
                if f.limit.spent != m.spent || !held_ok {
                    v.violation(format!(
                        "final state on node{}: budget {} spent {} held {}; the history gives spent {} held {}",
                        node.node,
                        b.id,
                        crate::history::format_amount(f.limit.spent),
                        crate::history::format_amount(f.limit.held),
                        crate::history::format_amount(m.spent),
                        crate::history::format_amount(m.held)
                    ));
                }
            }
            v.stat("final_holds_compared", compared);
        }
    }
    v
}

fn strip(r: &Response) -> Response {
    let mut r = r.clone();
    match &mut r {
        Response::Decision { replayed, .. }
        | Response::Captured { replayed, .. }
        | Response::Voided { replayed, .. } => *replayed = false,
        _ => {}
    }
    r
}
