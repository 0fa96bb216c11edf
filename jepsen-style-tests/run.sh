#!/usr/bin/env bash
# The fault suite as CI runs it (and as a person runs a soak).
#
#   jepsen-style-tests/run.sh [--ci]     (--ci: the defaults below, as CI runs it)
#
# 1. installs iptables/nsenter on the host when missing (partitions are made
#    inside each container's network namespace from the host);
# 2. builds the harness, and the image from the already-built debug binary
#    (target/x86_64-unknown-linux-gnu/debug/spendcap; run `cargo build -p
#    spendcap` first);
# 3. runs the nemesis schedules, each against a fresh three-node cluster,
#    and fails when any run is invalid; the `clock` schedule moves the nodes'
#    wall clocks, which needs the fault build (feature `fault-injection`) with
#    SPENDCAP_FAULT=clock (only the clock hook on), checked with a clock slack
#    of the allowed skew (2 s) + 250 ms;
# 4. runs the fault build with SPENDCAP_FAULT=local-decide and with
#    SPENDCAP_FAULT=clock-unbounded (the leader's stamps unbounded, under the
#    clock schedule) and fails unless the suite calls each invalid.
#
# Environment (all optional):
#   JEPSEN_SCHEDULES       default "partitions crashes mixed clock" (also: random, none)
#   JEPSEN_SECONDS         workload seconds per schedule, default 60 (the clock
#                          schedule: JEPSEN_CLOCK_SECONDS, default 40)
#   JEPSEN_CLIENTS         concurrent clients, default 20 (10-50)
#   JEPSEN_RESULTS         results folder, default jepsen-style-tests/results
#   JEPSEN_SEED            default 1
#   JEPSEN_SKIP_FAULT=1    skip step 4
#   SPENDCAP_BINARY        the node binary for step 2 (default: the debug build)
#   SPENDCAP_FAULT_BINARY  a prebuilt fault-injection binary; otherwise step 4
#                          builds one with cargo (and rebuilds the normal binary
#                          after, so target/.../debug/spendcap stays the normal one)
set -euo pipefail

for arg in "$@"; do
  case "$arg" in
    --ci) ;;
    -h|--help) sed -n '2,/^set -e/p' "$0" | grep '^#'; exit 0 ;;
    *) echo "unknown option: $arg (see --help)" >&2; exit 2 ;;
  esac
done

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
schedules="${JEPSEN_SCHEDULES:-partitions crashes mixed clock}"
seconds="${JEPSEN_SECONDS:-60}"
clock_seconds="${JEPSEN_CLOCK_SECONDS:-40}"
# The allowed clock skew of the nodes (their default) + the usual 250 ms.
clock_slack_ms=2250
clients="${JEPSEN_CLIENTS:-20}"
results="${JEPSEN_RESULTS:-$repo/jepsen-style-tests/results}"
seed="${JEPSEN_SEED:-1}"
target_dir="${CARGO_TARGET_DIR:-$repo/target}"
bin_dir="$target_dir/x86_64-unknown-linux-gnu/debug"

if ! command -v iptables >/dev/null 2>&1 || ! command -v nsenter >/dev/null 2>&1; then
  echo "installing iptables and util-linux (nsenter)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iptables util-linux >/dev/null
fi

echo "== building the harness"
cargo build -q -p jepsen-style-tests
harness="$bin_dir/spendcap-jepsen"

echo "== building the image from the debug binary"
cluster/build-image.sh --binary "${SPENDCAP_BINARY:-$bin_dir/spendcap}" --tag spendcap:test

passed=0
failed=0
# What each failed run said, repeated at the end so the tail of a CI log
# names the run and the checker (or the error) that failed.
failures="$(mktemp)"
run_log="$(mktemp)"
run() {
  if "$harness" run --results-dir "$results" --clients "$clients" --seed "$seed" "$@" 2>&1 | tee "$run_log"; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    {
      echo "-- failed: $* (seed $seed)"
      grep -E '^run |INVALID|^valid:|rror|panick' "$run_log" | head -n 20
      grep -A3 'INVALID' "$run_log" | grep -E '^ +- ' | head -n 10
      echo "   (last lines)"
      tail -n 5 "$run_log" | sed 's/^/   /'
    } >>"$failures"
  fi
}

need_fault=0
case " $schedules " in *" clock "*) need_fault=1 ;; esac
[ "${JEPSEN_SKIP_FAULT:-0}" != 1 ] && need_fault=1
if [ "$need_fault" = 1 ]; then
  fault_bin="${SPENDCAP_FAULT_BINARY:-}"
  if [ -z "$fault_bin" ]; then
    echo "== building the fault-injection binary"
    keep="$(mktemp -d)"
    trap 'rm -rf "$keep"' EXIT
    cargo build -q -p spendcap --features fault-injection
    cp "$bin_dir/spendcap" "$keep/spendcap-fault"
    # Put the normal binary back for whatever runs after.
    cargo build -q -p spendcap
    fault_bin="$keep/spendcap-fault"
  fi
  cluster/build-image.sh --binary "$fault_bin" --tag spendcap:fault
fi

for schedule in $schedules; do
  if [ "$schedule" = clock ]; then
    echo "== schedule clock ($clock_seconds s, fault build with SPENDCAP_FAULT=clock)"
    run --image spendcap:fault --schedule clock --seconds "$clock_seconds" \
      --node-env SPENDCAP_FAULT=clock --clock-slack-ms "$clock_slack_ms"
  else
    echo "== schedule $schedule ($seconds s)"
    run --image spendcap:test --schedule "$schedule" --seconds "$seconds"
  fi
done

if [ "${JEPSEN_SKIP_FAULT:-0}" != 1 ]; then
  echo "== fault build (SPENDCAP_FAULT=local-decide): must be found invalid"
  run --image spendcap:fault --schedule none --seconds 30 \
    --node-env SPENDCAP_FAULT=local-decide --expect-invalid
  echo "== fault build (SPENDCAP_FAULT=clock-unbounded): must be found invalid"
  run --image spendcap:fault --schedule clock --seconds 15 --seed-sessions 100 \
    --node-env SPENDCAP_FAULT=clock-unbounded --clock-slack-ms "$clock_slack_ms" --expect-invalid
fi

echo "results: $results"
if [ "$failed" != 0 ]; then
  echo "== failed runs"
  cat "$failures"
fi
rm -f "$failures" "$run_log"
echo "jepsen: $passed passed, $failed failed"
[ "$failed" = 0 ]
