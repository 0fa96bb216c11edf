#!/usr/bin/env bash
# The monitoring checks, against real processes on 127.0.0.1:
#
#  1. alert rules: `promtool check rules`, `promtool test rules` (each alert
#     fires and stays quiet on synthetic series), and a negative self-test
#     (a broken copy of the rules must fail those unit tests);
#  2. static checks: dashboard JSON, Grafana provisioning, the console page,
#     docs/operations.md naming every metric, docker-compose.yml (if the
#     docker-compose tool is installed);
#  3. a three-node cluster scraped every second by a real Prometheus (Debian's
#     `prometheus`) that also evaluates cluster/alerts.yml: a known workload,
#     then PromQL answers checked against it, every dashboard query run,
#     alert states checked, and a negative self-test;
#  4. the console at GET /console, rendered in headless Chromium;
#  5. the leader killed: Prometheus sees it down and a new leader.
#
# Usage: cluster/test-monitoring.sh   (after `cargo build --workspace`)
# Uses ${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-gnu/debug/spendcap
# (or $SPENDCAP_BIN). Output (console screenshot, rendered pages, logs of a
# failed run): results/monitoring/ (or $MONITORING_OUT).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BIN=${SPENDCAP_BIN:-${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-gnu/debug/spendcap}
case "$BIN" in /*) ;; *) BIN="$ROOT/$BIN" ;; esac
OUT=${MONITORING_OUT:-$ROOT/results/monitoring}
PY=${PYTHON:-python3}
CHECK=("$PY" "$ROOT/cluster/monitoring-tests/monitoring.py" --root "$ROOT")
WAIT_S=30   # the longest any single condition is waited for

step() { printf '\n=== monitoring: %s\n' "$*"; }
die() { echo "test-monitoring: $*" >&2; exit 1; }

for tool in promtool prometheus chromium curl "$PY"; do
  command -v "$tool" >/dev/null || die "$tool not found (scripts/setup.sh --test installs it)"
done
[ -x "$BIN" ] || die "no spendcap binary at $BIN: run cargo build --workspace first"
mkdir -p "$OUT"
rm -f "$OUT"/console*.png "$OUT"/console-*.html

TMP=$(mktemp -d "${TMPDIR:-/tmp}/spendcap-monitoring.XXXXXX")
mkdir -p "$TMP/pids"
PIDS=()
ok=0
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ "$ok" != 1 ] && [ -d "$TMP" ]; then
    mkdir -p "$OUT/logs"
    cp "$TMP"/*.log "$TMP"/prometheus.yml "$OUT/logs/" 2>/dev/null || true
    echo "test-monitoring: FAILED; logs in $OUT/logs" >&2
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT

# ---- 1. alert rules ------------------------------------------------------
step "promtool check rules"
promtool check rules cluster/alerts.yml

step "promtool test rules"
promtool test rules cluster/monitoring-tests/alerts.test.yml

step "negative self-test: broken rules must fail their unit tests"
mutations=(
  's/) > 0\.9$/) > 0.96/'                              # budget threshold
  's/^          max by (job) (up{job="spendcap"}) == 0$/          vector(0) > 1/'  # "all down" clause
  's/^      - alert: SpendcapNodeDown$/      - alert: SpendcapNodeDOWN/'         # renamed alert
  's/^            (spendcap_raft_is_leader == 1)$/            (spendcap_raft_is_leader ^ 0)/'  # ex-leader's stale lag counted
  's/(spendcap_node_failed) > 0$/(spendcap_node_failed) > 1/'  # a failed node never alerts
)
mkdir -p "$TMP/neg/monitoring-tests"
cp cluster/monitoring-tests/alerts.test.yml "$TMP/neg/monitoring-tests/"
for m in "${mutations[@]}"; do
  sed "$m" cluster/alerts.yml > "$TMP/neg/alerts.yml"
  cmp -s cluster/alerts.yml "$TMP/neg/alerts.yml" && die "mutation '$m' changed nothing"
  if promtool test rules "$TMP/neg/monitoring-tests/alerts.test.yml" >"$TMP/neg/out" 2>&1; then
    cat "$TMP/neg/out"; die "alert unit tests passed on broken rules ($m)"
  fi
  echo "  ok   broken rules fail the unit tests: $m"
done

# ---- 2. static checks ----------------------------------------------------
step "static checks: dashboard, provisioning, console page, docs"
"${CHECK[@]}" static
"${CHECK[@]}" selftest-static
if command -v docker-compose >/dev/null; then
  SPENDCAP_ENV_FILE=cluster/compose.env.example docker-compose --profile monitoring config -q
  echo "  ok   docker-compose.yml is valid for docker-compose v1 (with the monitoring profile)"
fi
if docker compose version >/dev/null 2>&1; then
  SPENDCAP_ENV_FILE=cluster/compose.env.example docker compose --profile monitoring config -q
  echo "  ok   docker-compose.yml is valid for docker compose v2"
fi

# ---- 3. cluster + Prometheus ---------------------------------------------
step "three nodes and Prometheus on 127.0.0.1"
read -r -a PORTS <<<"$("$PY" - <<'EOF'
import socket
socks = [socket.socket() for _ in range(7)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
EOF
)"
[ "${#PORTS[@]}" -eq 7 ] || die "could not find free ports"
API=("" "${PORTS[0]}" "${PORTS[1]}" "${PORTS[2]}")
RAFT=("" "${PORTS[3]}" "${PORTS[4]}" "${PORTS[5]}")
PROM_PORT=${PORTS[6]}
TOKEN="sca_mon_$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
PEER_TOKEN="scp_mon_$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
# The bound on exported sessions: set it explicitly where the binary has
# the flag, else the built-in default applies (the checker reads it).
LIMIT_FLAGS=()
LIMIT_ARGS=()
if "$BIN" serve --help | grep -q -- '--metrics-sessions-max'; then
  LIMIT_FLAGS=(--metrics-sessions-max 20)
  LIMIT_ARGS=(--sessions-limit 20)
fi
MEMBERS="1=127.0.0.1:${RAFT[1]}/127.0.0.1:${API[1]},2=127.0.0.1:${RAFT[2]}/127.0.0.1:${API[2]},3=127.0.0.1:${RAFT[3]}/127.0.0.1:${API[3]}"
for id in 1 2 3; do
  SPENDCAP_ADMIN_TOKEN="$TOKEN" SPENDCAP_PEER_TOKEN="$PEER_TOKEN" "$BIN" serve --id "$id" --cluster spendcap-mon \
    --data-dir "$TMP/node$id" --api-listen "127.0.0.1:${API[$id]}" --raft-listen "127.0.0.1:${RAFT[$id]}" \
    --initial-members "$MEMBERS" "${LIMIT_FLAGS[@]}" >"$TMP/node$id.log" 2>&1 &
  PIDS+=("$!")
  echo "$!" >"$TMP/pids/node$id.pid"
done

cat >"$TMP/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - $ROOT/cluster/alerts.yml
scrape_configs:
  - job_name: spendcap
    metrics_path: /metrics
    static_configs:
      - targets: ["127.0.0.1:${API[1]}", "127.0.0.1:${API[2]}", "127.0.0.1:${API[3]}"]
EOF
promtool check config "$TMP/prometheus.yml" >/dev/null
prometheus --config.file="$TMP/prometheus.yml" --storage.tsdb.path="$TMP/prometheus-data" \
  --web.listen-address="127.0.0.1:$PROM_PORT" --log.level=warn >"$TMP/prometheus.log" 2>&1 &
PIDS+=("$!")

# Poll (bounded) until each process answers.
ready() {
  local what=$1 url=$2 deadline=$((SECONDS + WAIT_S))
  until curl -fs -o /dev/null --max-time 2 "$url"; do
    [ "$SECONDS" -lt "$deadline" ] || die "$what did not become ready at $url within ${WAIT_S}s"
    sleep 0.2
  done
}
for id in 1 2 3; do ready "node $id" "http://127.0.0.1:${API[$id]}/readyz"; done
ready "Prometheus" "http://127.0.0.1:$PROM_PORT/-/ready"
echo "  nodes on ${API[1]}, ${API[2]}, ${API[3]}; Prometheus on $PROM_PORT"

step "workload, then PromQL against what was done"
APIS="http://127.0.0.1:${API[1]},http://127.0.0.1:${API[2]},http://127.0.0.1:${API[3]}"
"${CHECK[@]}" live --apis "$APIS" --prom "http://127.0.0.1:$PROM_PORT" --token "$TOKEN" \
  --state "$TMP/state.json" --timeout "$WAIT_S" "${LIMIT_ARGS[@]}"

# ---- 4. console ----------------------------------------------------------
step "console: GET /console in headless Chromium"
"${CHECK[@]}" console --api "http://127.0.0.1:${API[2]}" --token "$TOKEN" --out "$OUT" --tmp "$TMP"

# ---- 5. failover ---------------------------------------------------------
step "failover: kill the leader, watch Prometheus"
LEADER=$("${CHECK[@]}" leader --state "$TMP/state.json")
pid=$(cat "$TMP/pids/node$LEADER.pid")
echo "  killing the leader, node $LEADER (pid $pid)"
killed_at=$(date +%s.%N)
kill -KILL "$pid"
wait "$pid" 2>/dev/null || true
"${CHECK[@]}" failover --prom "http://127.0.0.1:$PROM_PORT" --state "$TMP/state.json" \
  --killed "$LEADER" --killed-at "$killed_at" --timeout "$WAIT_S"

ok=1
step "all monitoring checks passed (screenshot: $OUT/console.png)"
