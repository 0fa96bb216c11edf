#!/usr/bin/env python3
"""The monitoring checks behind cluster/test-monitoring.sh.

Subcommands (the shell script starts and stops every process; this file only
talks HTTP to 127.0.0.1 and runs Chromium):

  static   Offline checks: the dashboard JSON (structure, metric names), the
           alert rules' metric names, the Grafana provisioning files, the
           console page (self-contained, uses only documented routes), and
           docs/operations.md naming every metric.
  live     Drives a known workload against a running three-node cluster that
           a real Prometheus scrapes, then checks PromQL answers against what
           was done, runs every dashboard query, checks the alert rules as
           Prometheus evaluates them, and a negative self-test.
  console  Loads GET /console from a node in headless Chromium: without a
           token, with a wrong one, and with the admin token; checks the
           rendered DOM against the API and keeps a screenshot.
  leader   Prints the leader's node id found by `live`.
  failover After the script has killed that leader: checks that Prometheus
           sees the node down, a new leader, and the alert states.

Standard library only, plus PyYAML for the YAML files. Every wait polls for
a condition with a deadline; every request loop is bounded.
"""

import argparse
import html.parser
import json
import math
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

USDC = 1_000_000  # smallest units per USDC (6 decimals)


class Failed(Exception):
    pass


def log(msg):
    print(f"  {msg}", flush=True)


# --------------------------------------------------------------------------
# HTTP (127.0.0.1 only)


def _local(url):
    host = urllib.parse.urlsplit(url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise Failed(f"refusing to send a request off this machine: {url}")


def http(method, url, token=None, body=None, timeout=10.0):
    """Returns (status, parsed JSON or text, headers)."""
    _local(url)
    data = None
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as res:
            raw, status, hdrs = res.read(), res.status, res.headers
    except urllib.error.HTTPError as e:
        raw, status, hdrs = e.read(), e.code, e.headers
    text = raw.decode("utf-8", "replace")
    try:
        return status, json.loads(text), hdrs
    except ValueError:
        return status, text, hdrs


def wait_for(what, fn, timeout, interval=0.25):
    """Polls fn() until it returns something other than None/False; raises
    with the last observation at the deadline."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            got = fn()
        except Failed as e:
            got, last = None, str(e)
        if got not in (None, False):
            return got
        if got is not None:
            last = got
        if time.monotonic() >= deadline:
            raise Failed(f"timed out after {timeout:.0f}s waiting for {what} (last: {last})")
        time.sleep(interval)


class Prom:
    def __init__(self, url):
        self.url = url.rstrip("/")

    def query(self, q):
        """An instant query: a list of (labels, value); scalars as one item."""
        status, body, _ = http("GET", f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": q}))
        if status != 200 or not isinstance(body, dict) or body.get("status") != "success":
            raise Failed(f"query failed ({status}): {q}: {body}")
        data = body["data"]
        if data["resultType"] == "vector":
            return [(r["metric"], float(r["value"][1])) for r in data["result"]]
        if data["resultType"] == "scalar":
            return [({}, float(data["result"][1]))]
        raise Failed(f"unexpected result type {data['resultType']} for {q}")

    def one(self, q):
        """The single value of q, or None when q has no result."""
        rows = self.query(q)
        if len(rows) > 1:
            raise Failed(f"expected at most one series from {q}, got {len(rows)}: {rows}")
        return rows[0][1] if rows else None

    def api(self, path):
        status, body, _ = http("GET", f"{self.url}{path}")
        if status != 200 or body.get("status") != "success":
            raise Failed(f"GET {path}: {status} {body}")
        return body["data"]


def same(a, b):
    return a is not None and b is not None and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


class Checks:
    """Records named PromQL checks; prints each; fails at the end if any failed."""

    def __init__(self, prom, title, negative=False):
        self.prom = prom
        self.title = title
        self.negative = negative  # every check is expected to fail
        self.passed = 0
        self.failures = []

    def _record(self, ok, desc, detail):
        if self.negative:
            if ok:
                self.passed += 1
                log(f"FAIL a wrong expectation passed: {desc}")
            else:
                self.failures.append(desc)
                log(f"ok   rejected, as it should be: {desc} ({detail})")
            return ok
        if ok:
            self.passed += 1
            log(f"ok   {desc}")
        else:
            self.failures.append(f"{desc}: {detail}")
            log(f"FAIL {desc}: {detail}")
        return ok

    def eq(self, desc, q, expected):
        try:
            got = self.prom.one(q)
        except Failed as e:
            return self._record(False, desc, str(e))
        return self._record(same(got, expected), desc, f"{q} = {got}, expected {expected}")

    def cmp(self, desc, q, op, bound):
        try:
            got = self.prom.one(q)
        except Failed as e:
            return self._record(False, desc, str(e))
        ok = got is not None and not math.isnan(got) and {
            "<=": got <= bound, ">=": got >= bound, "<": got < bound, ">": got > bound}[op]
        return self._record(ok, desc, f"{q} = {got}, expected {op} {bound}")

    def each(self, desc, q, expected, count):
        """q returns exactly `count` series, each equal to `expected`."""
        try:
            rows = self.prom.query(q)
        except Failed as e:
            return self._record(False, desc, str(e))
        ok = len(rows) == count and all(same(v, expected) for _, v in rows)
        return self._record(ok, desc, f"{q} -> {[(m.get('instance'), v) for m, v in rows]}, "
                                      f"expected {count} series of {expected}")

    def empty(self, desc, q):
        try:
            rows = self.prom.query(q)
        except Failed as e:
            return self._record(False, desc, str(e))
        return self._record(not rows, desc, f"{q} -> {rows}, expected no series")

    def truth(self, desc, ok, detail=""):
        return self._record(bool(ok), desc, detail)

    def finish(self):
        print(f"{self.title}: {self.passed} passed, {len(self.failures)} failed", flush=True)
        if self.failures:
            raise Failed(f"{len(self.failures)} check(s) failed:\n  " + "\n  ".join(self.failures))


# --------------------------------------------------------------------------
# Metric names: crates/metric-names/src/lib.rs is the single source of truth.

PROCESS_METRICS = {
    "process_cpu_seconds_total", "process_resident_memory_bytes", "process_virtual_memory_bytes",
    "process_virtual_memory_max_bytes", "process_open_fds", "process_max_fds", "process_threads",
    "process_start_time_seconds",
}
PROMETHEUS_BUILTIN = {"up", "ALERTS", "ALERTS_FOR_STATE", "scrape_duration_seconds", "scrape_samples_scraped"}


def metric_constants(root):
    """{CONSTANT: name} from crates/metric-names/src/lib.rs."""
    text = open(os.path.join(root, "crates/metric-names/src/lib.rs")).read()
    found = dict(re.findall(r'pub const ([A-Z0-9_]+): &str = "([a-z0-9_:]+)";', text))
    if len(found) < 20:
        raise Failed(f"found only {len(found)} metric constants in crates/metric-names/src/lib.rs")
    return found


def known_series(root):
    names = set(metric_constants(root).values())
    series = set(names)
    for n in names:
        if n.endswith("_seconds") or n == "spendcap_batch_commands":  # histograms
            series |= {n + "_bucket", n + "_sum", n + "_count"}
    return series | PROCESS_METRICS | PROMETHEUS_BUILTIN


def metric_names_in(expr):
    """The metric-looking identifiers in a PromQL expression."""
    no_strings = re.sub(r'"[^"]*"', '""', expr)
    return set(re.findall(r"\b((?:spendcap|process)_[a-z0-9_]+|up|ALERTS)\b", no_strings))


# --------------------------------------------------------------------------
# static


def dashboard_targets(dash):
    for p in dash["panels"]:
        for t in p.get("targets", []):
            yield p, t


def substitute(expr, job):
    """Grafana's variables, as they would be for the test cluster."""
    return (expr.replace("$__rate_interval", "15s").replace("$job", job).replace("$top", "10"))


def check_dashboard(root, errors):
    path = os.path.join(root, "cluster/grafana/spendcap-dashboard.json")
    dash = json.load(open(path))
    known = known_series(root)
    for key in ("uid", "title", "panels", "templating", "schemaVersion"):
        if key not in dash:
            errors.append(f"dashboard: no {key!r}")
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    for name in ("datasource", "job", "top"):
        if name not in variables:
            errors.append(f"dashboard: no ${name} variable")
    if variables.get("datasource", {}).get("query") != "prometheus":
        errors.append("dashboard: $datasource must select Prometheus data sources")
    ids = [p["id"] for p in dash["panels"]]
    if len(ids) != len(set(ids)):
        errors.append("dashboard: panel ids are not unique")
    # No two panels overlap on the 24-column grid.
    cells = {}
    for p in dash["panels"]:
        g = p["gridPos"]
        if g["x"] < 0 or g["x"] + g["w"] > 24:
            errors.append(f"dashboard: panel {p['title']!r} leaves the grid")
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                if (x, y) in cells:
                    errors.append(f"dashboard: {p['title']!r} overlaps {cells[(x, y)]!r}")
                    break
                cells[(x, y)] = p["title"]
            else:
                continue
            break
    titles = {p["title"] for p in dash["panels"]}
    # What the issue asks the dashboard to show.
    for wanted in ("Nodes up", "Leader", "Authorizations per second by outcome", "Denials per second by reason",
                   "Authorize latency (end to end)", "Commit latency at the leader",
                   "Budgets: used of cap (top $top)", "Replication lag per follower (entries)",
                   "fsync latency p99 per node"):
        if wanted not in titles:
            errors.append(f"dashboard: no panel {wanted!r}")
    exprs = 0
    for p, t in dashboard_targets(dash):
        exprs += 1
        where = f"dashboard panel {p['title']!r} target {t.get('refId')}"
        if t.get("datasource", {}).get("uid") != "${datasource}" or p.get("datasource", {}).get("uid") != "${datasource}":
            errors.append(f"{where}: datasource must be ${{datasource}}")
        expr = t.get("expr", "")
        if not expr:
            errors.append(f"{where}: no expr")
            continue
        if 'job="$job"' not in expr:
            errors.append(f"{where}: does not select job=\"$job\"")
        for name in metric_names_in(expr):
            if name not in known:
                errors.append(f"{where}: unknown metric {name!r} (not in crates/metric-names/src/lib.rs)")
        if expr.count("(") != expr.count(")") or expr.count("{") != expr.count("}"):
            errors.append(f"{where}: unbalanced brackets")
    refs = [(p["id"], t["refId"]) for p, t in dashboard_targets(dash)]
    if len(refs) != len(set(refs)):
        errors.append("dashboard: duplicate refId within a panel")
    log(f"dashboard: {len(dash['panels'])} panels, {exprs} queries")
    return dash


def check_alert_names(root, errors):
    import yaml
    rules = yaml.safe_load(open(os.path.join(root, "cluster/alerts.yml")))
    known = known_series(root)
    names = []
    for group in rules["groups"]:
        for r in group["rules"]:
            names.append(r["alert"])
            for name in metric_names_in(r["expr"]):
                if name not in known:
                    errors.append(f"alert {r['alert']}: unknown metric {name!r}")
            if r.get("labels", {}).get("severity") not in ("critical", "warning"):
                errors.append(f"alert {r['alert']}: severity must be critical or warning")
            anchor = r.get("annotations", {}).get("runbook", "").split("#")[-1]
            if anchor != r["alert"].lower():
                errors.append(f"alert {r['alert']}: runbook must point at docs/operations.md#{r['alert'].lower()}")
    for wanted in ("SpendcapNoLeader", "SpendcapNodeFailed", "SpendcapReplicationLagHigh", "SpendcapFsyncLatencyHigh", "SpendcapBudgetNearCap"):
        if wanted not in names:
            errors.append(f"alerts.yml: no {wanted}")
    tests = open(os.path.join(root, "cluster/monitoring-tests/alerts.test.yml")).read()
    for n in names:
        if f"alertname: {n}" not in tests:
            errors.append(f"alerts.test.yml: no test for {n}")
    return names


def check_provisioning(root, errors):
    import yaml
    ds = yaml.safe_load(open(os.path.join(root, "cluster/grafana/provisioning/datasources/prometheus.yml")))
    d = ds["datasources"][0]
    if d["type"] != "prometheus" or not d["url"].startswith("http://prometheus:9090"):
        errors.append("grafana datasource: must be the compose prometheus service")
    prov = yaml.safe_load(open(os.path.join(root, "cluster/grafana/provisioning/dashboards/spendcap.yml")))
    path = prov["providers"][0]["options"]["path"]
    compose_path = os.path.join(root, "docker-compose.yml")
    if os.path.exists(compose_path):
        compose = yaml.safe_load(open(compose_path))
        g = compose.get("services", {}).get("grafana")
        if not g:
            errors.append("docker-compose.yml: no grafana service")
        else:
            if "monitoring" not in g.get("profiles", []):
                errors.append("docker-compose.yml: grafana must be in the monitoring profile")
            mounts = [v.split(":")[:2] for v in g.get("volumes", [])]
            if not any(src.endswith("spendcap-dashboard.json") and dst.startswith(path + "/") for src, dst in mounts):
                errors.append(f"docker-compose.yml: the dashboard is not mounted under the provider's path {path}")
            for sub in ("datasources", "dashboards"):
                if not any(src.endswith(f"provisioning/{sub}") for src, _ in mounts):
                    errors.append(f"docker-compose.yml: provisioning/{sub} is not mounted")
            for src, _ in mounts:
                if src.startswith("./") and not os.path.exists(os.path.join(root, src)):
                    errors.append(f"docker-compose.yml: grafana mounts a missing path {src}")


CONSOLE_ROUTES = ["/v1/cluster/status", "/healthz", "/v1/decisions/recent", "/v1/budgets", "/v1/sessions"]


def check_console_source(root, errors):
    page = open(os.path.join(root, "crates/node/src/http/console.html")).read()
    # Self-contained: nothing loaded from elsewhere.
    for pattern, what in ((r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", "an external src/href"),
                          (r"@import", "a CSS @import"),
                          (r"url\(\s*['\"]?(?:https?:)?//", "an external url()"),
                          (r"<script[^>]+src=", "an external script"),
                          (r"<link[^>]+rel=[\"']?stylesheet", "an external stylesheet"),
                          (r"""fetch\(\s*["'`](?:https?:)?//""", "a fetch off this origin")):
        if re.search(pattern, page, re.I):
            errors.append(f"console.html: {what}")
    openapi = json.load(open(os.path.join(root, "crates/node/src/http/openapi.json")))
    for route in CONSOLE_ROUTES:
        if route not in openapi["paths"]:
            errors.append(f"console.html reads {route}, which openapi.json does not document")
        if f'"{route}' not in page:
            errors.append(f"console.html does not read {route}")
    if "sessionStorage" not in page or "#token=" not in page and "get(\"token\")" not in page:
        errors.append("console.html: token handling (fragment + sessionStorage) missing")
    if "innerHTML" in page or "insertAdjacentHTML" in page or "document.write" in page:
        errors.append("console.html: inserts markup; API values must go in as text")


def check_docs(root, errors):
    path = os.path.join(root, "docs/operations.md")
    text = open(path).read()
    for const, name in sorted(metric_constants(root).items()):
        if f"`{name}`" not in text:
            errors.append(f"docs/operations.md does not describe {name} ({const})")
    for heading in ("## Metrics", "## Alerts", "## Console", "## Backup and restore", "## Rolling restarts",
                    "## Node replacement"):
        if heading not in text:
            errors.append(f"docs/operations.md: no {heading!r} section")
    import yaml
    rules = yaml.safe_load(open(os.path.join(root, "cluster/alerts.yml")))
    for group in rules["groups"]:
        for r in group["rules"]:
            if f"### {r['alert']}" not in text:
                errors.append(f"docs/operations.md: no '### {r['alert']}' (the alert's runbook)")


def cmd_static(a):
    try:
        import yaml  # noqa: F401
    except ImportError:
        raise Failed("PyYAML is missing: apt-get install python3-yaml (or pip install pyyaml)")
    errors = []
    check_dashboard(a.root, errors)
    check_alert_names(a.root, errors)
    check_provisioning(a.root, errors)
    check_console_source(a.root, errors)
    check_docs(a.root, errors)
    for e in errors:
        log(f"FAIL {e}")
    if errors:
        raise Failed(f"{len(errors)} static check(s) failed")
    log("dashboard, alert names, provisioning, console source and docs: ok")


def cmd_selftest_static(a):
    """The static checks must catch a typo'd metric name in the dashboard."""
    import shutil
    import tempfile
    tmp = tempfile.mkdtemp(prefix="spendcap-static-selftest-")
    try:
        for rel in ("crates/metric-names/src", "cluster/grafana"):
            shutil.copytree(os.path.join(a.root, rel), os.path.join(tmp, rel))
        path = os.path.join(tmp, "cluster/grafana/spendcap-dashboard.json")
        text = open(path).read()
        assert "spendcap_decisions_total" in text
        open(path, "w").write(text.replace("spendcap_decisions_total", "spendcap_decision_total", 1))
        errors = []
        check_dashboard(tmp, errors)
        if not any("spendcap_decision_total" in e for e in errors):
            raise Failed("negative self-test: a typo'd metric name in the dashboard was not caught")
        log("negative self-test: a typo'd dashboard metric name is caught")
    finally:
        shutil.rmtree(tmp)


# --------------------------------------------------------------------------
# live: workload + PromQL


class Cluster:
    def __init__(self, apis, token):
        self.apis = apis  # node id (1-based) -> base URL
        self.token = token

    def url(self, node, path):
        return self.apis[node] + path

    def call(self, node, method, path, body=None, expect=(200, 201)):
        # 503 (no leader, overloaded) means nothing was applied: retry a few
        # times. Anything else unexpected fails the test.
        for attempt in range(5):
            status, res, _ = http(method, self.url(node, path), self.token, body)
            if status != 503:
                break
            time.sleep(0.5)
        if status not in expect:
            raise Failed(f"{method} {path} on node {node}: {status} {res}")
        return res

    def status(self, node):
        return self.call(node, "GET", "/v1/cluster/status")


class Workload:
    """Known traffic; counts every answer it gets."""

    def __init__(self, cluster):
        self.c = cluster
        self.n = len(cluster.apis)
        self.rr = 0
        self.approved = 0
        self.denied = {}
        self.authorized_units = 0
        self.authorize_requests = 0
        self.captures = 0
        self.voids = 0
        self.captured_units = 0
        self.sessions = 0
        self.budgets = 0
        self.holds = {}  # session -> [authorization ids]

    def node(self):
        self.rr = self.rr % self.n + 1
        return self.rr

    def budget(self, bid, cap, parent=None):
        body = {"id": bid, "cap": cap}
        if parent:
            body["parent"] = parent
        self.c.call(self.node(), "POST", "/v1/budgets", body, expect=(201,))
        self.budgets += 1

    def session(self, sid, cap, budget=None, tool_caps=None):
        body = {"id": sid, "cap": cap, "agent_id": f"agent-{sid}"}
        if budget:
            body["budget"] = budget
        if tool_caps:
            body["tool_caps"] = tool_caps
        self.c.call(self.node(), "POST", "/v1/sessions", body, expect=(201,))
        self.sessions += 1

    def authorize(self, node, sid, amount, tool="search", hold_seconds=None):
        body = {"amount": amount, "tool": tool}
        if hold_seconds:
            body["hold_seconds"] = hold_seconds
        d = self.c.call(node, "POST", f"/v1/sessions/{sid}/authorizations", body, expect=(200,))
        return d

    def tally(self, d, amount):
        self.authorize_requests += 1
        if d["decision"] == "approved":
            self.approved += 1
            self.authorized_units += round(float(amount) * USDC)
            self.holds.setdefault(d["session_id"], []).append(d["authorization_id"])
        else:
            self.denied[d["reason"]] = self.denied.get(d["reason"], 0) + 1
        return d

    def capture(self, hold, amount):
        r = self.c.call(self.node(), "POST", f"/v1/authorizations/{hold}/capture",
                        {"amount": amount, "receipt": {"transaction_hash": f"0x{hold}"}})
        self.captures += 1
        self.captured_units += round(float(r["captured"]) * USDC)

    def void(self, hold):
        self.c.call(self.node(), "POST", f"/v1/authorizations/{hold}/void")
        self.voids += 1


PHASE_A_SESSIONS = 8


def run_workload(w):
    """The plan, with what it must produce (checked against the answers):
    A  8 sessions, cap 25: three concurrent 10.00 each, through three nodes
       -> 16 approved, 8 session_cap
    B  budget team:hot cap 100: 50 + 45 approved, then 10 -> budget_cap
    C  a session with a 5.00 cap on tool gpu: gpu 4 ok, gpu 4 tool_cap, search 4 ok
    D  two authorizations for a session that does not exist -> unknown_session
    E  captures (7.50, 10.00, 2.50) and two voids
    F  one 1.00 hold for 1 s, which expires
    """
    w.budget("org:mon", "1000")
    w.budget("team:hot", "100", parent="org:mon")
    w.budget("team:cool", "500", parent="org:mon")
    for i in range(1, PHASE_A_SESSIONS + 1):
        w.session(f"cap-{i}", "25", budget="team:cool")
    w.session("hot-1", "60", budget="team:hot")
    w.session("hot-2", "60", budget="team:hot")
    w.session("tool-1", "50", budget="team:cool", tool_caps={"gpu": "5.00"})
    w.session("exp-1", "10", budget="team:cool")

    # A: 24 requests in flight together; each session's three go to three nodes.
    jobs = [(n, f"cap-{i}") for i in range(1, PHASE_A_SESSIONS + 1) for n in range(1, w.n + 1)]
    with ThreadPoolExecutor(max_workers=12) as pool:
        answers = list(pool.map(lambda job: w.authorize(job[0], job[1], "10.00"), jobs))
    for d in answers:
        w.tally(d, "10.00")
    # B (in order: deterministic)
    w.tally(w.authorize(w.node(), "hot-1", "50.00"), "50.00")
    w.tally(w.authorize(w.node(), "hot-2", "45.00"), "45.00")
    w.tally(w.authorize(w.node(), "hot-2", "10.00"), "10.00")
    # C
    w.tally(w.authorize(w.node(), "tool-1", "4.00", tool="gpu"), "4.00")
    w.tally(w.authorize(w.node(), "tool-1", "4.00", tool="gpu"), "4.00")
    w.tally(w.authorize(w.node(), "tool-1", "4.00", tool="search"), "4.00")
    # D
    for _ in range(2):
        w.tally(w.authorize(w.node(), "ghost-1", "1.00"), "1.00")
    # E
    w.capture(w.holds["cap-1"][0], "7.50")
    w.capture(w.holds["cap-2"][0], "10.00")
    w.capture(w.holds["cap-3"][0], "2.50")
    for hold in w.holds["cap-4"]:
        w.void(hold)
    # F
    w.tally(w.authorize(w.node(), "exp-1", "1.00", hold_seconds=1), "1.00")

    expected = {"approved": 16 + 2 + 2 + 1,
                "denied": {"session_cap": 8, "budget_cap": 1, "tool_cap": 1, "unknown_session": 2},
                "authorized_units": (16 * 10 + 50 + 45 + 4 + 4 + 1) * USDC,
                "captures": 3, "voids": 2, "captured_units": 20 * USDC}
    got = {"approved": w.approved, "denied": w.denied, "authorized_units": w.authorized_units,
           "captures": w.captures, "voids": w.voids, "captured_units": w.captured_units}
    if got != expected:
        raise Failed(f"the cluster's answers differ from the plan: got {got}, planned {expected}")
    log(f"workload: {w.authorize_requests} authorizations ({w.approved} approved, denied {w.denied}), "
        f"{w.captures} captures, {w.voids} voids, {w.sessions} sessions, {w.budgets} budgets")


def sessions_limit(root):
    """The default bound on exported sessions, from crates/node/src/config.rs."""
    m = re.search(r"metrics_sessions_max: (\d+)", open(os.path.join(root, "crates/node/src/config.rs")).read())
    if not m:
        raise Failed("cannot find the default metrics_sessions_max in crates/node/src/config.rs")
    return int(m.group(1))


def cmd_live(a):
    apis = {i + 1: u for i, u in enumerate(a.apis.split(","))}
    c = Cluster(apis, a.token)
    prom = Prom(a.prom)
    job = "spendcap"
    n = len(apis)

    # Prometheus scrapes every node.
    wait_for("Prometheus to scrape all nodes",
             lambda: prom.one(f'count(up{{job="{job}"}} == 1)') == n or None, a.timeout)
    wait_for("a leader seen by every node",
             lambda: all(c.status(i)["leader_id"] is not None for i in apis) or None, a.timeout)

    w = Workload(c)
    run_workload(w)
    # The 1 s hold expires by log time: wait until the ledger says so.
    wait_for("the 1-second hold to expire",
             lambda: c.call(1, "GET", "/v1/sessions/exp-1")["held"] in ("0", "0.00") or None, a.timeout)
    # More sessions than the exported bound (cardinality).
    limit = a.sessions_limit or sessions_limit(a.root)
    extra = limit + 5 - w.sessions
    for i in range(max(0, extra)):
        w.session(f"idle-{i:03d}", "1")
    leader = c.status(1)["leader_id"]
    # Every node has applied everything the leader committed.
    leader_commit = c.status(leader)["committed_index"]
    wait_for("every node to apply the last entry",
             lambda: all((c.status(i)["applied_index"] or 0) >= leader_commit for i in apis) or None, a.timeout)
    t_end = time.time()

    # Poll until every target has been scraped after the workload ended.
    wait_for("a scrape of every node after the workload",
             lambda: (prom.one(f'count(timestamp(up{{job="{job}"}}) > {t_end:.3f})') == n) or None, a.timeout)

    ck = Checks(prom, "monitoring live")
    J = f'job="{job}"'
    # -- decisions, counted at the node that took each request
    ck.eq("approvals = approved answers", f'sum(spendcap_decisions_total{{{J},outcome="approved"}})', w.approved)
    for reason, count in sorted(w.denied.items()):
        ck.eq(f"{reason} denials = {reason} answers",
              f'sum(spendcap_decisions_total{{{J},outcome="denied",reason="{reason}"}})', count)
    ck.eq("every decision counted once",
          f'sum(spendcap_decisions_total{{{J}}})', w.authorize_requests)
    ck.eq("authorized amount (USDC units)",
          f'sum(spendcap_authorized_units_total{{{J},asset="USDC"}})', w.authorized_units)
    ck.eq("captures", f'sum(spendcap_captures_total{{{J}}})', w.captures)
    ck.eq("voids", f'sum(spendcap_voids_total{{{J}}})', w.voids)
    ck.eq("captured amount (USDC units)", f'sum(spendcap_captured_units_total{{{J},asset="USDC"}})', w.captured_units)
    ck.each("the expiry was applied on every replica", f'spendcap_hold_expiries_total{{{J}}}', 1, n)
    ck.eq("authorize latency observations = authorize requests",
          f'sum(spendcap_authorize_duration_seconds_count{{{J}}})', w.authorize_requests)
    ck.cmp("authorize p99 is a real latency (0 < p99 <= 10 s)",
           f'histogram_quantile(0.99, sum by (le) (spendcap_authorize_duration_seconds_bucket{{{J}}}))', "<=", 10)
    ck.cmp("authorize latency sum > 0", f'sum(spendcap_authorize_duration_seconds_sum{{{J}}})', ">", 0)
    ck.cmp("commit latency observed at the leader",
           f'sum(spendcap_commit_duration_seconds_count{{{J}}} * on (instance) (spendcap_raft_is_leader{{{J}}} == 1))',
           ">=", 1)
    ck.cmp("batches recorded", f'sum(spendcap_batch_commands_count{{{J}}})', ">=", 1)
    ck.cmp("every authorize command went through a batch",
           f'sum(spendcap_batch_commands_sum{{{J}}})', ">=", w.authorize_requests)
    ck.cmp("followers forwarded writes to the leader",
           f'sum(spendcap_forwarded_requests_total{{{J},kind="write"}})', ">=", 1)
    ck.eq("HTTP requests are labelled with the matched route",
          f'sum(spendcap_http_requests_total{{{J},route="/v1/sessions/{{id}}/authorizations",method="POST",status="200"}})',
          w.authorize_requests)
    ck.empty("no raw paths in route labels",
             f'spendcap_http_requests_total{{{J},route=~".*(cap-|hot-|ghost-|exp-|idle-|au_).*"}}')
    # -- raft
    ck.eq("exactly one leader", f'sum(spendcap_raft_is_leader{{{J}}})', 1)
    ck.each("every node names the same leader", f'spendcap_raft_leader_id{{{J}}}', leader, n)
    ck.eq("the leader's id is the node that says it leads",
          f'max(spendcap_raft_leader_id{{{J}}} and on (instance) (spendcap_raft_is_leader{{{J}}} == 1))', leader)
    ck.eq("every node is in the same term",
          f'max(spendcap_raft_term{{{J}}}) - min(spendcap_raft_term{{{J}}})', 0)
    ck.cmp("elections counted", f'max(spendcap_raft_elections_total{{{J}}})', ">=", 1)
    ck.eq("applied index equal on every node",
          f'max(spendcap_raft_applied_index{{{J}}}) - min(spendcap_raft_applied_index{{{J}}})', 0)
    ck.eq("leader: committed = last log index",
          f'sum((spendcap_raft_committed_index{{{J}}} - spendcap_raft_last_log_index{{{J}}}) '
          f'and on (instance) (spendcap_raft_is_leader{{{J}}} == 1))', 0)
    ck.cmp("committed index covers the workload",
           f'min(spendcap_raft_committed_index{{{J}}})', ">=", leader_commit)
    ck.cmp("replication lag reported for every follower by the leader",
           f'count(spendcap_raft_replication_lag_entries{{{J}}} and on (instance) (spendcap_raft_is_leader{{{J}}} == 1))',
           ">=", n - 1)
    ck.cmp("replication lag bounded (<= 2 entries, the cluster is idle)",
           f'max(spendcap_raft_replication_lag_entries{{{J}}} and on (instance) (spendcap_raft_is_leader{{{J}}} == 1))',
           "<=", 2)
    # -- storage and process
    ck.eq("fsync latency recorded on every node",
          f'count(spendcap_storage_fsync_duration_seconds_count{{{J}}} > 0)', n)
    ck.eq("apply latency recorded on every node",
          f'count(spendcap_storage_apply_duration_seconds_count{{{J}}} > 0)', n)
    ck.eq("RocksDB size > 0 on every node", f'count(spendcap_storage_rocksdb_size_bytes{{{J}}} > 0)', n)
    ck.eq("process memory exported by every node", f'count(process_resident_memory_bytes{{{J}}} > 0)', n)
    ck.eq("process CPU exported by every node", f'count(process_cpu_seconds_total{{{J}}})', n)
    ck.eq("open fds exported by every node", f'count(process_open_fds{{{J}}} > 0)', n)
    # -- budgets and sessions (units: USDC * 10^6)
    ck.each("team:hot cap on every node",
            f'spendcap_budget_cap_units{{{J},budget="team:hot",asset="USDC"}}', 100 * USDC, n)
    ck.each("team:hot held 95.00 on every node",
            f'spendcap_budget_held_units{{{J},budget="team:hot"}}', 95 * USDC, n)
    ck.each("cap-1 spent 7.50 (captured) on every node",
            f'spendcap_session_spent_units{{{J},session="cap-1"}}', 7.5 * USDC, n)
    ck.each("cap-1 still holds its second 10.00",
            f'spendcap_session_held_units{{{J},session="cap-1"}}', 10 * USDC, n)
    # cap-4's holds were voided: nothing committed, so it ranks below the
    # export bound (sessions are exported fullest first) and has no series.
    ck.truth("a session with nothing committed is not among the exported ones",
             not prom.query(f'spendcap_session_held_units{{{J},session="cap-4"}}'))
    ck.each("every node knows every session", f'spendcap_ledger_sessions{{{J}}}', w.sessions, n)
    ck.truth(f"more sessions ({w.sessions}) than the export bound ({limit})", w.sessions > limit)
    ck.each(f"session gauges bounded: {limit} per node",
            f'count by (instance) (spendcap_session_cap_units{{{J}}})', limit, n)
    ck.each("the most used session is among the exported ones",
            f'count by (instance) (spendcap_session_cap_units{{{J},session="hot-1"}})', 1, n)
    ck.each("budget gauges: all 3 budgets exported (fewer than the bound)",
            f'count by (instance) (spendcap_budget_cap_units{{{J}}})', w.budgets, n)

    # -- every dashboard query runs against the real data
    dash = json.load(open(os.path.join(a.root, "cluster/grafana/spendcap-dashboard.json")))
    # Queries that may rightly be empty after this workload.
    may_be_empty = {"increase(spendcap_raft_snapshots_total", "increase(spendcap_raft_purges_total",
                    "spendcap_outcomes_unknown_total", "spendcap_raft_rpc_errors_total"}
    for p, t in dashboard_targets(dash):
        expr = substitute(t["expr"], job)
        desc = f"dashboard {p['title']!r} {t['refId']}"
        try:
            rows = prom.query(expr)
        except Failed as e:
            ck.truth(desc + " runs", False, str(e))
            continue
        if any(k in expr for k in may_be_empty):
            ck.truth(desc + " runs", True)
        else:
            ck.truth(desc + " has data", rows, f"{expr} returned nothing")
    rows = prom.query(substitute(
        next(t["expr"] for p, t in dashboard_targets(dash) if p["title"].startswith("Budgets: used")), job))
    top = {m.get("budget"): v for m, v in rows}
    ck.truth("dashboard budget bars: team:hot at 95 %", same(top.get("team:hot"), 0.95), str(top))

    # -- the alert rules, as the real Prometheus evaluates them
    groups = prom.api("/api/v1/rules?type=alert")["groups"]
    rules = {r["name"]: r for g in groups for r in g["rules"]}
    ck.truth("Prometheus loaded all alert rules", len(rules) >= 7, sorted(rules))
    wait_for("every alert rule to be evaluated",
             lambda: all(not r.get("lastEvaluation", "0001").startswith("0001")
                         for g in prom.api("/api/v1/rules?type=alert")["groups"] for r in g["rules"]) or None,
             a.timeout)
    for g in prom.api("/api/v1/rules?type=alert")["groups"]:
        for r in g["rules"]:
            ck.truth(f"rule {r['name']} evaluates without error",
                     r.get("health") == "ok" and not r.get("lastError"), f"{r.get('health')} {r.get('lastError')}")
    wait_for("SpendcapBudgetNearCap to go pending for team:hot",
             lambda: prom.query('ALERTS{alertname="SpendcapBudgetNearCap",budget="team:hot"}') or None, a.timeout)
    ck.eq("SpendcapBudgetNearCap: team:hot only",
          'count(ALERTS{alertname="SpendcapBudgetNearCap"})', 1)
    for quiet in ("SpendcapNoLeader", "SpendcapReplicationLagHigh", "SpendcapNodeDown", "SpendcapFsyncLatencyHigh",
                  "SpendcapOutcomesUnknown", "SpendcapLeaderFlapping"):
        ck.empty(f"{quiet} is quiet", f'ALERTS{{alertname="{quiet}"}}')

    # -- negative self-test: the same checks must fail on wrong expectations
    neg = Checks(prom, "negative self-test", negative=True)
    neg.eq("approvals off by one", f'sum(spendcap_decisions_total{{{J},outcome="approved"}})', w.approved + 1)
    neg.eq("session_cap denials off by one",
           f'sum(spendcap_decisions_total{{{J},outcome="denied",reason="session_cap"}})', w.denied["session_cap"] - 1)
    neg.eq("a misspelt metric is not zero", f'sum(spendcap_decision_total{{{J}}})', 0)
    neg.cmp("lag bound that is too tight", f'max(spendcap_raft_replication_lag_entries{{{J}}})', "<", 0)
    neg.each("a budget at the wrong amount", f'spendcap_budget_held_units{{{J},budget="team:hot"}}', 94 * USDC, n)
    neg.empty("a series that exists", f'spendcap_raft_is_leader{{{J}}}')
    if neg.passed:
        ck.truth("negative self-test: every wrong expectation fails", False,
                 f"{neg.passed} wrong expectation(s) passed")
    else:
        ck.truth(f"negative self-test: all {len(neg.failures)} wrong expectations fail", True)

    json.dump({"leader": leader, "apis": apis, "sessions": w.sessions, "approved": w.approved,
               "leader_changes": {m["instance"]: v for m, v in
                                  prom.query(f'spendcap_raft_leader_changes_total{{{J}}}')}},
              open(a.state, "w"))
    ck.finish()


# --------------------------------------------------------------------------
# console


class Dom(html.parser.HTMLParser):
    """A minimal DOM from Chromium's --dump-dom output."""

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}

    def __init__(self, text):
        super().__init__(convert_charrefs=True)
        self.root = {"tag": "#root", "attrs": {}, "children": [], "parent": None}
        self.cur = self.root
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        node = {"tag": tag, "attrs": dict(attrs), "children": [], "parent": self.cur}
        self.cur["children"].append(node)
        if tag not in self.VOID:
            self.cur = node

    def handle_endtag(self, tag):
        n = self.cur
        while n is not None and n["tag"] != tag:
            n = n["parent"]
        if n is not None and n["parent"] is not None:
            self.cur = n["parent"]

    def handle_data(self, data):
        self.cur["children"].append(data)

    def all(self, pred, node=None):
        node = node or self.root
        out = []
        for ch in node["children"]:
            if isinstance(ch, dict):
                if pred(ch):
                    out.append(ch)
                out.extend(self.all(pred, ch))
        return out

    def by_id(self, ident):
        found = self.all(lambda n: n["attrs"].get("id") == ident)
        return found[0] if found else None

    @staticmethod
    def text(node):
        if node is None:
            return ""
        parts = []
        for ch in node["children"]:
            parts.append(ch if isinstance(ch, str) else Dom.text(ch))
        return " ".join(" ".join(parts).split())

    @staticmethod
    def hidden(node):
        return node is not None and "hidden" in node["attrs"]

    def attr(self, ident, name):
        node = self.by_id(ident)
        return None if node is None else node["attrs"].get(name)


def chromium(args, url, timeout=90):
    _local(url)
    cmd = [os.environ.get("CHROMIUM", "chromium"), "--headless", "--no-sandbox", "--disable-gpu",
           "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check", "--hide-scrollbars",
           "--disable-extensions", "--disable-background-networking", "--disable-sync",
           "--disable-component-update", "--metrics-recording-only", "--password-store=basic",
           "--disable-default-apps", "--disable-domain-reliability", "--no-pings",
           "--disable-client-side-phishing-detection", "--disable-features=OptimizationHints,Translate,MediaRouter",
           # Nothing leaves this machine: names other than 127.0.0.1 do not
           # resolve, and anything not on loopback goes to a dead local port.
           "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
           "--proxy-server=http://127.0.0.1:9",
           ] + args + [url]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise Failed(f"chromium failed ({r.returncode}): {r.stderr[-2000:]}")
    return r.stdout


def cmd_console(a):
    base = a.api.rstrip("/")
    page = f"{base}/console"
    token = a.token
    ck = Checks(None, "monitoring console")
    os.makedirs(a.out, exist_ok=True)
    profile = os.path.join(a.tmp, "chromium-profile")

    # The node serves this very file, as HTML.
    status, body, headers = http("GET", page)
    source = open(os.path.join(a.root, "crates/node/src/http/console.html")).read()
    ck.truth("GET /console answers 200 without a token", status == 200, str(status))
    ck.truth("GET /console is HTML", (headers.get("Content-Type") or "").startswith("text/html"),
             headers.get("Content-Type"))
    ck.truth("GET /console serves crates/node/src/http/console.html (rebuild the binary if not)",
             body == source, f"served {len(body)} characters, the file has {len(source)}")
    if ck.failures:
        ck.finish()  # rendering another page would only add noise

    def render(fragment, budget_ms, name, extra=()):
        t0 = time.monotonic()
        dom = chromium(["--user-data-dir=" + profile + "-" + name, f"--virtual-time-budget={budget_ms}",
                        "--window-size=1400,1700", *extra, "--dump-dom"], page + fragment)
        open(os.path.join(a.out, f"console-{name}.html"), "w").write(dom)
        log(f"rendered {name} in {time.monotonic() - t0:.1f}s")
        return Dom(dom), dom

    # 1. No token: the login form, and no data.
    d, raw = render("", 3000, "no-token")
    body_el = d.all(lambda n: n["tag"] == "body")[0]
    ck.truth("no token: the page asks for it", body_el["attrs"].get("data-state") == "login"
             and not Dom.hidden(d.by_id("login")) and Dom.hidden(d.by_id("dash")),
             body_el["attrs"].get("data-state"))
    ck.truth("no token: no ledger data on the page", "team:hot" not in raw and "cap-1" not in raw)

    # 2. A wrong token: refused, back to the form, nothing shown.
    d, raw = render("#token=sca_not_the_admin_token_000000", 3000, "wrong-token")
    ck.truth("wrong token: refused and asked again",
             d.all(lambda n: n["tag"] == "body")[0]["attrs"].get("data-state") == "login"
             and "refused" in Dom.text(d.by_id("login-note")), Dom.text(d.by_id("login-note")))
    ck.truth("wrong token: no ledger data on the page", "team:hot" not in raw)

    # 3. The admin token: everything, checked against the API.
    st = http("GET", f"{base}/v1/cluster/status", token)[1]
    budgets = http("GET", f"{base}/v1/budgets?limit=1000", token)[1]["items"]
    recent = http("GET", f"{base}/v1/decisions/recent", token)[1]
    d, raw = render(f"#token={token}&refresh=1", 6000, "live")
    body_el = d.all(lambda n: n["tag"] == "body")[0]
    ck.truth("live: the dashboard is shown", body_el["attrs"].get("data-state") == "live"
             and Dom.hidden(d.by_id("login")) and not Dom.hidden(d.by_id("dash")), body_el["attrs"].get("data-state"))
    refreshes = int(body_el["attrs"].get("data-refreshes", "0"))
    ck.truth("live: the page refreshes by itself (>= 3 loads in 6 s at 1 s)", refreshes >= 3, f"{refreshes} loads")
    ck.truth("live: no error shown", Dom.text(d.by_id("error")) == "", Dom.text(d.by_id("error")))
    ck.truth("live: the token is not written into the page", token not in raw)
    ck.truth("live: cluster name", Dom.text(d.by_id("cluster-name")) == st["cluster"], Dom.text(d.by_id("cluster-name")))
    ck.truth("live: leader", d.attr("stat-leader", "data-leader") == str(st["leader_id"]),
             Dom.text(d.by_id("stat-leader")))
    members = d.all(lambda n: n["tag"] == "tr" and "data-node-id" in n["attrs"])
    ck.truth("live: every member listed", sorted(int(m["attrs"]["data-node-id"]) for m in members)
             == sorted(m["id"] for m in st["members"]), [m["attrs"] for m in members])
    leaders = [m["attrs"]["data-node-id"] for m in members if m["attrs"].get("data-leader") == "true"]
    ck.truth("live: the leader is marked, once", leaders == [str(st["leader_id"])], leaders)
    for m in st["members"]:
        ck.truth(f"live: member {m['id']} shows its API address", m["api_addr"] in raw)
    ck.truth("live: health ok", d.attr("health", "data-status") == "ok", Dom.text(d.by_id("health")))
    rows = d.all(lambda n: n["attrs"].get("data-kind") == "budget")
    shown = {r["attrs"]["data-id"]: int(r["attrs"]["data-used-pct"]) for r in rows}
    for b in budgets:
        used = (float(b["spent"]) + float(b["held"])) / float(b["cap"])
        ck.truth(f"live: budget {b['id']} drawn at {round(used * 100)} %",
                 shown.get(b["id"]) == round(used * 100), shown)
    hot = [r["attrs"] for r in rows if r["attrs"]["data-id"] == "team:hot"]
    ck.truth("live: team:hot is drawn as over 90 % (red)", hot and "full" in hot[0]["class"].split(), hot)
    bars = d.all(lambda n: n["attrs"].get("class") == "spent" and n["tag"] == "span")
    ck.truth("live: spend bars have widths", bars and all("width:" in b["attrs"].get("style", "") for b in bars))
    srows = {r["attrs"]["data-id"]: r for r in d.all(lambda n: n["attrs"].get("data-kind") == "session")}
    first = d.all(lambda n: n["attrs"].get("data-kind") == "session")[:1]
    ck.truth("live: sessions drawn most used first: hot-1 (50.00 of 60.00) at 83 %",
             first and first[0]["attrs"]["data-id"] == "hot-1" and first[0]["attrs"]["data-used-pct"] == "83",
             first and first[0]["attrs"])
    ck.truth("live: a session with voided holds drawn at 0 %",
             "cap-4" in srows and srows["cap-4"]["attrs"]["data-used-pct"] == "0", srows.get("cap-4", {}).get("attrs"))
    drows = d.all(lambda n: n["tag"] == "tr" and "data-result" in n["attrs"])
    results = {r["attrs"]["data-result"] for r in drows}
    ck.truth("live: recent decisions shown", len(drows) == min(50, len(recent)), f"{len(drows)} rows")
    for wanted in ("approved", "session_cap", "budget_cap", "tool_cap", "unknown_session"):
        ck.truth(f"live: recent decisions include {wanted}", wanted in results, sorted(results))
    if drows and recent:
        ck.truth("live: newest decision first", drows[0]["attrs"]["data-log-index"] == str(recent[0]["log_index"]),
                 drows[0]["attrs"])

    # A screenshot for people.
    shot = os.path.join(a.out, "console.png")
    chromium(["--user-data-dir=" + profile + "-shot", "--virtual-time-budget=4000", "--window-size=1400,1700",
              f"--screenshot={shot}"], page + f"#token={token}")
    with open(shot, "rb") as f:
        head = f.read(8)
    ck.truth(f"screenshot kept: {shot}", head == b"\x89PNG\r\n\x1a\n" and os.path.getsize(shot) > 20_000,
             f"{os.path.getsize(shot)} bytes")
    ck.finish()


# --------------------------------------------------------------------------
# failover


def cmd_leader(a):
    """Prints the leader's node id, as the live checks found it."""
    print(json.load(open(a.state))["leader"])


def cmd_failover(a):
    """After the script killed node --killed (the leader)."""
    state = json.load(open(a.state))
    apis = {int(k): v for k, v in state["apis"].items()}
    prom = Prom(a.prom)
    old = a.killed
    if old != state["leader"]:
        raise Failed(f"node {old} was killed, but node {state['leader']} was the leader")
    instance = urllib.parse.urlsplit(apis[old]).netloc
    changes_before = state["leader_changes"]
    t_kill = a.killed_at
    others = [i for i in apis if i != old]

    def new_leader():
        ids = [http("GET", apis[i] + "/healthz")[1].get("leader_id") for i in others]
        return ids[0] if ids[0] not in (None, old) and len(set(ids)) == 1 else None
    leader = wait_for("the survivors to elect a new leader", new_leader, a.timeout)
    t_elected = time.time()
    wait_for("a scrape of every target after the election",
             lambda: prom.one(f'count(timestamp(up{{job="spendcap"}}) > {t_elected:.3f})') == len(apis) or None,
             a.timeout)
    ck = Checks(prom, "monitoring failover")
    J = 'job="spendcap"'
    ck.eq("Prometheus sees the killed node down", f'up{{{J},instance="{instance}"}}', 0)
    ck.eq("exactly one leader among the survivors", f'sum(spendcap_raft_is_leader{{{J}}})', 1)
    ck.eq("it is the new leader", f'max(spendcap_raft_leader_id{{{J}}} and on (instance) (spendcap_raft_is_leader{{{J}}} == 1))', leader)
    ck.each("both survivors name it", f'spendcap_raft_leader_id{{{J}}}', leader, len(others))
    for i in others:
        inst = urllib.parse.urlsplit(apis[i]).netloc
        ck.cmp(f"node {i} counted the leader change", f'spendcap_raft_leader_changes_total{{{J},instance="{inst}"}}',
               ">", changes_before.get(inst, 0))
    wait_for("SpendcapNodeDown to go pending for the killed node",
             lambda: prom.query(f'ALERTS{{alertname="SpendcapNodeDown",instance="{instance}"}}') or None, a.timeout)
    ck.truth("SpendcapNodeDown pending for the killed node", True)
    ck.empty("SpendcapNoLeader is not firing", 'ALERTS{alertname="SpendcapNoLeader",alertstate="firing"}')
    log(f"new leader: node {leader}, {time.time() - t_kill:.1f}s after the kill")
    ck.finish()


# --------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=os.path.abspath(os.path.join(os.path.dirname(__file__), "../..")))
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("static")
    sub.add_parser("selftest-static")
    p = sub.add_parser("live")
    p.add_argument("--apis", required=True, help="comma-separated node API URLs, node 1 first")
    p.add_argument("--prom", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--state", required=True)
    p.add_argument("--timeout", type=float, default=30)
    p.add_argument("--sessions-limit", type=int, default=0,
                   help="the nodes' --metrics-sessions-max (default: the built-in default)")
    p = sub.add_parser("console")
    p.add_argument("--api", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--tmp", required=True)
    p = sub.add_parser("leader")
    p.add_argument("--state", required=True)
    p = sub.add_parser("failover")
    p.add_argument("--prom", required=True)
    p.add_argument("--state", required=True)
    p.add_argument("--killed", type=int, required=True, help="the node id the script killed")
    p.add_argument("--killed-at", type=float, required=True, help="when (Unix seconds)")
    p.add_argument("--timeout", type=float, default=30)
    a = ap.parse_args()
    try:
        {"static": cmd_static, "selftest-static": cmd_selftest_static, "live": cmd_live,
         "console": cmd_console, "leader": cmd_leader, "failover": cmd_failover}[a.cmd](a)
    except Failed as e:
        print(f"FAILED: {e}", file=sys.stderr, flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
