//! Checkers 1 to 4: caps, acknowledgements, denials, idempotency keys.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{CheckOptions, Verdict};
use crate::final_state::{CapFinal, FinalState, LevelFinal};
use crate::history::{format_amount, History, Op, Pos, Request, Response, Setup};

/// An acknowledged approval: one hold the cluster said it made.
#[derive(Clone, Debug)]
pub(crate) struct Ack {
    pub id: String,
    pub session: String,
    pub key: String,
    pub tool: String,
    pub amount: u64,
    pub expires_at_ms: u64,
    pub pos: Pos,
    /// Earliest acknowledgement (monotonic ns).
    pub ack_ns: u64,
    pub op: u64,
}

/// Every acknowledged approval, once per `(authorization id, session, key)`
/// (replays of a key collapse into their first answer; a faulty cluster that
/// hands one id to two keys shows as two).
pub(crate) fn acknowledged_approvals(ops: &[Op]) -> Vec<Ack> {
    let mut out: BTreeMap<(String, String, String), Ack> = BTreeMap::new();
    for op in ops {
        let (
            Request::Authorize { session, key, tool, .. },
            Some(Response::Decision {
                approved: true,
                authorization_id: Some(id),
                amount: Some(amount),
                expires_at_ms,
                pos,
                ..
            }),
        ) = (&op.request, op.ok())
        else {
            continue;
        };
        let entry = out.entry((id.clone(), session.clone(), key.clone())).or_insert(Ack {
            id: id.clone(),
            session: session.clone(),
            key: key.clone(),
            tool: tool.clone(),
            amount: *amount,
            expires_at_ms: expires_at_ms.unwrap_or(u64::MAX),
            pos: *pos,
            ack_ns: op.complete_ns,
            op: op.id,
        });
        if op.complete_ns < entry.ack_ns {
            entry.ack_ns = op.complete_ns;
            entry.op = op.id;
        }
    }
    out.into_values().collect()
}

/// The caps an authorization of `tool` on `session` counts against, named.
fn levels(setup: &Setup, session: &str, tool: &str) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let Some(s) = setup.sessions.iter().find(|s| s.id == session) else {
        return out;
    };
    out.push((format!("session {session}"), s.cap));
    if let Some(c) = s.tool_caps.get(tool) {
        out.push((format!("session {session} tool {tool}"), *c));
    }
    let mut next = s.budget.clone();
    let mut depth = 0;
    while let Some(id) = next {
        let Some(b) = setup.budgets.iter().find(|b| b.id == id) else {
            break;
        };
        out.push((format!("budget {id}"), b.cap));
        if let Some(c) = b.tool_caps.get(tool) {
            out.push((format!("budget {id} tool {tool}"), *c));
        }
        next = b.parent.clone();
        depth += 1;
        if depth > 16 {
            break;
        }
    }
    out
}

fn check_cap(v: &mut Verdict, what: &str, c: &CapFinal) {
    if c.spent.saturating_add(c.held) > c.cap {
        v.violation(format!(
            "{what}: spent {} + held {} exceeds cap {}",
            format_amount(c.spent),
            format_amount(c.held),
            format_amount(c.cap)
        ));
    }
}

fn check_level(v: &mut Verdict, what: &str, l: &LevelFinal) {
    check_cap(v, what, &l.limit);
    if l.remaining != l.limit.cap.saturating_sub(l.limit.spent.saturating_add(l.limit.held)) {
        v.violation(format!(
            "{what}: remaining {} is not cap - spent - held",
            format_amount(l.remaining)
        ));
    }
    for (tool, c) in &l.tool_caps {
        check_cap(v, &format!("{what} tool {tool}"), c);
    }
}

/// Checker 1: no overspend, at any moment and at the end.
pub fn check_overspend(history: &History, final_state: Option<&FinalState>, options: CheckOptions) -> Verdict {
    let mut v = Verdict::new("no-overspend");
    let slack_ns = options.clock_slack_ms.saturating_mul(1_000_000);
    let start_wall = history.setup.start_wall_ms;

    // When a hold surely stopped counting: its first capture or void was
    // sent, or its deadline passed. Captured amounts count from the
    // capture's acknowledgement on.
    let mut release_ns: HashMap<(&str, &str), u64> = HashMap::new();
    let mut captured: HashMap<(&str, &str), (u64, u64)> = HashMap::new();
    for op in &history.ops {
        if let Request::Capture {
            authorization, session, ..
        }
        | Request::Void {
            authorization, session, ..
        } = &op.request
        {
            let slot = release_ns.entry((authorization, session)).or_insert(u64::MAX);
            *slot = (*slot).min(op.invoke_ns);
            if let Some(Response::Captured { captured: c, .. }) = op.ok() {
                let slot = captured.entry((authorization, session)).or_insert((u64::MAX, *c));
                if op.complete_ns < slot.0 {
                    *slot = (op.complete_ns, *c);
                }
            }
        }
    }

    let acks = acknowledged_approvals(&history.ops);
    // level -> (cap, events of (ns, delta, what))
    type Sweep = (u64, Vec<(u64, i128, String)>);
    let mut sweeps: BTreeMap<String, Sweep> = BTreeMap::new();
    for a in &acks {
        let expiry_ns = a
            .expires_at_ms
            .saturating_sub(start_wall)
            .saturating_mul(1_000_000)
            .saturating_sub(slack_ns);
        let released = release_ns
            .get(&(a.id.as_str(), a.session.as_str()))
            .copied()
            .unwrap_or(u64::MAX)
            .min(expiry_ns);
        let capture = captured.get(&(a.id.as_str(), a.session.as_str())).copied();
        for (level, cap) in levels(&history.setup, &a.session, &a.tool) {
            let entry = sweeps.entry(level).or_insert_with(|| (cap, Vec::new()));
            if released > a.ack_ns {
                let what = format!("{} {} (op {})", a.id, format_amount(a.amount), a.op);
                entry.1.push((a.ack_ns, i128::from(a.amount), what));
                if released != u64::MAX {
                    entry.1.push((released, -i128::from(a.amount), String::new()));
                }
            }
            if let Some((ns, c)) = capture {
                entry
                    .1
                    .push((ns, i128::from(c), format!("{} captured {}", a.id, format_amount(c))));
            }
        }
    }
    // A budget raise counts from its invocation (it may apply any time
    // after), also when its outcome is unknown: as room given back.
    for op in &history.ops {
        if let Request::RaiseBudget { budget, from, cap } = &op.request {
            if op.fail_code().is_some() {
                continue;
            }
            let Some(b) = history.setup.budgets.iter().find(|b| &b.id == budget) else {
                continue;
            };
            let level = format!("budget {budget}");
            let entry = sweeps.entry(level).or_insert_with(|| (b.cap, Vec::new()));
            let raise = i128::from(cap.saturating_sub(*from));
            entry.1.push((op.invoke_ns, -raise, String::new()));
        }
    }
    let mut peak_ratio: f64 = 0.0;
    for (level, (cap, mut events)) in sweeps {
        events.sort_by(|x, y| x.0.cmp(&y.0).then(x.1.cmp(&y.1)));
        let mut sum: i128 = 0;
        let mut live: Vec<&str> = Vec::new();
        for (ns, delta, what) in &events {
            sum += delta;
            if *delta > 0 {
                live.push(what);
            }
            if cap > 0 {
                peak_ratio = peak_ratio.max(sum as f64 / cap as f64);
            }
            if sum > i128::from(cap) {
                v.violation(format!(
                    "{level}: acknowledged approvals reach {} over cap {} at {:.3}s (approvals so far include {})",
                    format_amount(u64::try_from(sum).unwrap_or(u64::MAX)),
                    format_amount(cap),
                    *ns as f64 / 1e9,
                    live.iter().rev().take(6).copied().collect::<Vec<_>>().join(", ")
                ));
                break;
            }
        }
    }
    v.stat("acknowledged_approvals", acks.len());
    v.stat("peak_use_of_a_cap", (peak_ratio * 1000.0).round() / 1000.0);

    // Every read obeys its cap and its own arithmetic.
    let caps: HashMap<&str, u64> = history.setup.sessions.iter().map(|s| (s.id.as_str(), s.cap)).collect();
    let mut reads = 0u64;
    for op in &history.ops {
        let (
            Request::Read { session },
            Some(Response::Read {
                spent,
                held,
                remaining,
                available,
                read_index,
                ..
            }),
        ) = (&op.request, op.ok())
        else {
            continue;
        };
        reads += 1;
        let Some(cap) = caps.get(session.as_str()).copied() else {
            continue;
        };
        let committed = spent.saturating_add(*held);
        if committed > cap {
            v.violation(format!(
                "read of {session} at index {read_index} (op {}): spent {} + held {} exceeds cap {}",
                op.id,
                format_amount(*spent),
                format_amount(*held),
                format_amount(cap)
            ));
        } else if *remaining != cap - committed || available > remaining {
            v.violation(format!(
                "read of {session} at index {read_index} (op {}): remaining {} / available {} disagree with cap {} - spent {} - held {}",
                op.id,
                format_amount(*remaining),
                format_amount(*available),
                format_amount(cap),
                format_amount(*spent),
                format_amount(*held)
            ));
        }
    }
    v.stat("reads_checked", reads);

    match final_state {
        None => v.violation("no final state was read"),
        Some(fs) => {
            for n in &fs.nodes {
                for (id, s) in &n.sessions {
                    check_level(&mut v, &format!("final state on node{}: session {id}", n.node), s);
                }
                for (id, b) in &n.budgets {
                    check_level(&mut v, &format!("final state on node{}: budget {id}", n.node), b);
                }
            }
        }
    }
    v
}

/// Checker 2: every acknowledged approval, capture and void is in the final
/// state of every node, the nodes agree, and their digests match.
pub fn check_lost_acks(history: &History, final_state: Option<&FinalState>) -> Verdict {
    let mut v = Verdict::new("no-lost-acknowledgement");
    let Some(fs) = final_state else {
        v.violation("no final state was read");
        return v;
    };
    if fs.nodes.is_empty() {
        v.violation("the final read reached no node");
        return v;
    }
    for n in &fs.nodes {
        for e in &n.errors {
            v.violation(format!("final read on node{} failed: {e}", n.node));
        }
    }
    let acks = acknowledged_approvals(&history.ops);
    for a in &acks {
        for n in &fs.nodes {
            match n.holds.get(&a.id) {
                None => v.violation(format!(
                    "acknowledged approval {} ({} key {}, {} at {}, op {}) is missing on node{}",
                    a.id,
                    a.session,
                    a.key,
                    format_amount(a.amount),
                    a.pos,
                    a.op,
                    n.node
                )),
                Some(h) if h.session != a.session || h.amount != a.amount || h.key.as_deref() != Some(a.key.as_str()) => {
                    v.violation(format!(
                        "acknowledged approval {} ({} key {}, {}, op {}) is a different hold on node{}: {} key {:?}, {}",
                        a.id,
                        a.session,
                        a.key,
                        format_amount(a.amount),
                        a.op,
                        n.node,
                        h.session,
                        h.key,
                        format_amount(h.amount)
                    ))
                }
                Some(_) => {}
            }
        }
    }
    let mut resolutions = 0usize;
    for op in &history.ops {
        let (authorization, expect_status, expect_captured) = match (&op.request, op.ok()) {
            (Request::Capture { authorization, .. }, Some(Response::Captured { captured, .. })) => {
                (authorization, "captured", Some(*captured))
            }
            (Request::Void { authorization, .. }, Some(Response::Voided { .. })) => (authorization, "voided", None),
            _ => continue,
        };
        resolutions += 1;
        for n in &fs.nodes {
            match n.holds.get(authorization) {
                None => v.violation(format!(
                    "acknowledged {expect_status} of {authorization} (op {}) is missing on node{}: no such hold",
                    op.id, n.node
                )),
                Some(h) => {
                    if h.status != expect_status || expect_captured.is_some_and(|c| c != h.captured) {
                        v.violation(format!(
                            "acknowledged {expect_status}{} of {authorization} (op {}) is lost on node{}: the hold is {} with {} captured",
                            expect_captured.map(|c| format!(" of {}", format_amount(c))).unwrap_or_default(),
                            op.id,
                            n.node,
                            h.status,
                            format_amount(h.captured)
                        ));
                    }
                }
            }
        }
    }
    // Nodes agree with each other.
    let first = &fs.nodes[0];
    for n in &fs.nodes[1..] {
        let diffs = [
            ("holds", diff_keys(&first.holds, &n.holds)),
            ("sessions", diff_keys(&first.sessions, &n.sessions)),
            ("budgets", diff_keys(&first.budgets, &n.budgets)),
        ];
        for (what, diff) in diffs {
            if let Some(key) = diff {
                v.violation(format!(
                    "node{} and node{} disagree on {what} (first difference: {key})",
                    first.node, n.node
                ));
            }
        }
    }
    if !fs.digests_aligned {
        v.violation(format!(
            "the nodes never reported one applied index together; last seen: {}",
            fs.digests
                .iter()
                .map(|(n, d)| format!("node{n}@{:?}", d.applied_index))
                .collect::<Vec<_>>()
                .join(" ")
        ));
    } else {
        let distinct: BTreeSet<&str> = fs.digests.values().map(|d| d.digest.as_str()).collect();
        if distinct.len() > 1 {
            v.violation(format!(
                "state digests differ at applied index {:?}: {}",
                fs.digests.values().next().and_then(|d| d.applied_index),
                fs.digests
                    .iter()
                    .map(|(n, d)| format!("node{n}={}", &d.digest[..d.digest.len().min(16)]))
                    .collect::<Vec<_>>()
                    .join(" ")
            ));
        }
    }
    if fs.digests.len() < fs.nodes.len() {
        v.violation(format!(
            "only {} of {} nodes reported a digest",
            fs.digests.len(),
            fs.nodes.len()
        ));
    }
    v.stat("approvals_checked", acks.len());
    v.stat("captures_and_voids_checked", resolutions);
    v.stat("holds_in_final_state", first.holds.len());
    v
}

fn diff_keys<V: PartialEq>(a: &BTreeMap<String, V>, b: &BTreeMap<String, V>) -> Option<String> {
    for (k, x) in a {
        match b.get(k) {
            None => return Some(format!("{k} only on the first")),
            Some(y) if y != x => return Some(k.clone()),
            _ => {}
        }
    }
    b.keys()
        .find(|k| !a.contains_key(*k))
        .map(|k| format!("{k} only on the second"))
}

/// Checker 3: a denial left nothing behind.
pub fn check_denials(history: &History, final_state: Option<&FinalState>) -> Verdict {
    let mut v = Verdict::new("denial-left-nothing");
    let mut by_key: HashMap<(&str, &str), Vec<&Op>> = HashMap::new();
    let mut approved_ids: BTreeSet<&str> = BTreeSet::new();
    let mut denials = 0usize;
    for op in &history.ops {
        let Request::Authorize { session, key, .. } = &op.request else {
            continue;
        };
        by_key.entry((session, key)).or_default().push(op);
        match op.ok() {
            Some(Response::Decision {
                approved: true,
                authorization_id: Some(id),
                ..
            }) => {
                approved_ids.insert(id);
            }
            Some(Response::Decision {
                approved: false,
                authorization_id,
                ..
            }) => {
                denials += 1;
                if let Some(id) = authorization_id {
                    v.violation(format!("denial (op {}) names authorization {id}", op.id));
                }
            }
            _ => {}
        }
    }
    // An approval of a key must not sit before a denial of it in the log:
    // the denial should have replayed the approval.
    for ((session, key), ops) in &by_key {
        let approved: Option<Pos> = ops
            .iter()
            .filter_map(|o| match o.ok() {
                Some(Response::Decision {
                    approved: true, pos, ..
                }) => Some(*pos),
                _ => None,
            })
            .min();
        if let Some(ap) = approved {
            for o in ops {
                if let Some(Response::Decision {
                    approved: false, pos, ..
                }) = o.ok()
                {
                    if *pos > ap {
                        v.violation(format!(
                            "{session} key {key}: approved at {ap} yet denied afresh at {pos} (op {})",
                            o.id
                        ));
                    }
                }
            }
        }
    }
    match final_state {
        None => v.violation("no final state was read"),
        Some(fs) => {
            for n in &fs.nodes {
                let mut sums: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
                for (id, h) in &n.holds {
                    let slot = sums.entry(h.session.as_str()).or_default();
                    match h.status.as_str() {
                        "held" => slot.1 += h.amount,
                        "captured" => slot.0 += h.captured,
                        _ => {}
                    }
                    if approved_ids.contains(id.as_str()) {
                        continue;
                    }
                    let attempts = h
                        .key
                        .as_deref()
                        .and_then(|k| by_key.get(&(h.session.as_str(), k)))
                        .map(Vec::as_slice)
                        .unwrap_or(&[]);
                    // A denial binds its key: no attempt of it, not even an
                    // unknown one still in flight, may leave a hold after.
                    let denied = attempts
                        .iter()
                        .any(|o| matches!(o.ok(), Some(Response::Decision { approved: false, .. })));
                    if !denied && attempts.iter().any(|o| o.is_info()) {
                        // An unknown outcome that took effect: checker 5
                        // reports it when no retry resolved it.
                        continue;
                    }
                    if denied {
                        v.violation(format!(
                            "node{}: hold {id} ({} key {:?}, {}) was left by a denied authorization",
                            n.node,
                            h.session,
                            h.key,
                            format_amount(h.amount)
                        ));
                    } else {
                        v.violation(format!(
                            "node{}: hold {id} ({} key {:?}, {}) comes from no operation of the history",
                            n.node,
                            h.session,
                            h.key,
                            format_amount(h.amount)
                        ));
                    }
                }
                for (sid, s) in &n.sessions {
                    let (spent, held) = sums.get(sid.as_str()).copied().unwrap_or_default();
                    if (s.limit.spent, s.limit.held) != (spent, held) {
                        v.violation(format!(
                            "node{}: session {sid} shows spent {} held {}, its holds add up to spent {} held {}",
                            n.node,
                            format_amount(s.limit.spent),
                            format_amount(s.limit.held),
                            format_amount(spent),
                            format_amount(held)
                        ));
                    }
                }
            }
        }
    }
    v.stat("denials", denials);
    v
}

/// Checker 4: one hold per idempotency key.
pub fn check_one_hold_per_key(history: &History, final_state: Option<&FinalState>) -> Verdict {
    let mut v = Verdict::new("one-hold-per-key");
    let mut ids: HashMap<(&str, &str), BTreeSet<&str>> = HashMap::new();
    // A capture or void key must always answer the same amounts (a replay
    // may sit at its own log position).
    // (kind, authorization, key) -> the (captured, released) answers seen
    type Answers<'a> = HashMap<(&'static str, &'a str, &'a str), BTreeSet<(u64, u64)>>;
    let mut resolutions: Answers = HashMap::new();
    for op in &history.ops {
        match (&op.request, op.ok()) {
            (
                Request::Authorize { session, key, .. },
                Some(Response::Decision {
                    approved: true,
                    authorization_id: Some(id),
                    ..
                }),
            ) => {
                ids.entry((session, key)).or_default().insert(id);
            }
            (Request::Capture { authorization, key, .. }, Some(Response::Captured { captured, released, .. })) => {
                resolutions
                    .entry(("capture", authorization, key))
                    .or_default()
                    .insert((*captured, *released));
            }
            (Request::Void { authorization, key, .. }, Some(Response::Voided { released, .. })) => {
                resolutions
                    .entry(("void", authorization, key))
                    .or_default()
                    .insert((0, *released));
            }
            _ => {}
        }
    }
    for ((session, key), set) in &ids {
        if set.len() > 1 {
            v.violation(format!(
                "{session} key {key} was approved as {} different holds: {}",
                set.len(),
                set.iter().copied().collect::<Vec<_>>().join(", ")
            ));
        }
    }
    for ((what, authorization, key), set) in &resolutions {
        if set.len() > 1 {
            v.violation(format!(
                "{what} of {authorization} key {key} answered differently: {}",
                set.iter()
                    .map(|(c, r)| format!("captured {} released {}", format_amount(*c), format_amount(*r)))
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        }
    }
    match final_state {
        None => v.violation("no final state was read"),
        Some(fs) => {
            for n in &fs.nodes {
                let mut per_key: BTreeMap<(&str, &str), Vec<&str>> = BTreeMap::new();
                for (id, h) in &n.holds {
                    if let Some(k) = &h.key {
                        per_key.entry((h.session.as_str(), k.as_str())).or_default().push(id);
                    }
                }
                for ((session, key), holds) in per_key {
                    if holds.len() > 1 {
                        v.violation(format!(
                            "node{}: {session} key {key} has {} holds: {}",
                            n.node,
                            holds.len(),
                            holds.join(", ")
                        ));
                    }
                }
            }
        }
    }
    v.stat("keys_approved", ids.len());
    v
}
