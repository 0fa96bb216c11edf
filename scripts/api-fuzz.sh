#!/usr/bin/env bash
# API fuzzing from the outside: schemathesis against the OpenAPI document a
# live single node serves (GET /v1/openapi.json), with the admin token.
#
# Asserts, over a fixed, derandomized budget of generated requests:
#   - no response has a 5xx status (not_a_server_error);
#   - no response disagrees with the document: status codes, content types,
#     headers and bodies (status_code_conformance, content_type_conformance,
#     response_headers_conformance, response_schema_conformance);
#   - requests that break the document's own rules are refused with a 4xx
#     (negative_data_rejection).
# The stateful phase follows the document's OpenAPI links from each create
# (budget, session, authorization, capture) to the routes that take its id.
#
# Not fuzzed: POST /v1/cluster/learners and /v1/cluster/membership. With the
# admin token they reconfigure the cluster (random addresses would make this
# one node wait for peers that do not exist), which is the operator's right,
# not a defect; the node's own tests cover them.
#
# Installs schemathesis (pinned) into a virtualenv it creates; never skips.
# Usage: scripts/api-fuzz.sh   (builds the spendcap binary if needed)
# Environment: SPENDCAP_FUZZ_EXAMPLES (examples per operation and phase,
# default 40), SPENDCAP_CACHE (default ~/.cache/spendcap).
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)

SCHEMATHESIS_VERSION=4.32.5
examples="${SPENDCAP_FUZZ_EXAMPLES:-40}"
# Hypothesis seed: the same requests every run.
seed=11
cache="${SPENDCAP_CACHE:-$HOME/.cache/spendcap}"
venv="$cache/schemathesis-$SCHEMATHESIS_VERSION"
st="$venv/bin/schemathesis"

fail() {
  echo "api-fuzz: FAILED: $*" >&2
  exit 1
}

# --- schemathesis, pinned, in its own virtualenv -----------------------------
if ! "$st" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  command -v python3 >/dev/null || fail "python3 is missing (scripts/setup.sh --test installs it)"
  rm -rf "$venv"
  mkdir -p "$cache"
  python3 -m venv "$venv" || fail "python3 -m venv failed (scripts/setup.sh --test installs python3-venv)"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION" ||
    fail "could not install schemathesis==$SCHEMATHESIS_VERSION from PyPI"
fi
"$st" --version | grep -q "$SCHEMATHESIS_VERSION" || fail "schemathesis $SCHEMATHESIS_VERSION is not runnable at $st"

# --- one live node -------------------------------------------------------------
# The same build as scripts/test.sh's (a no-op after it): one set of features,
# so nothing is compiled twice.
target_dir="${CARGO_TARGET_DIR:-target}"
nice cargo build --locked --workspace --all-targets
bin="$target_dir/x86_64-unknown-linux-gnu/debug/spendcap"
[ -x "$bin" ] || fail "$bin was not built"

work=$(mktemp -d "${TMPDIR:-/tmp}/spendcap-api-fuzz.XXXXXX")
node_pid=""
cleanup() {
  if [ -n "$node_pid" ]; then
    kill "$node_pid" 2>/dev/null || true
    wait "$node_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
api_port=$(free_port)
raft_port=$(free_port)
admin_token="fuzz-admin-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
api="http://127.0.0.1:$api_port"

"$bin" serve --id 1 --data-dir "$work/data" \
  --api-listen "127.0.0.1:$api_port" --raft-listen "127.0.0.1:$raft_port" \
  --admin-token "$admin_token" >"$work/node.log" 2>&1 &
node_pid=$!

# Ready: a leader and the document served (bounded: 60 s).
deadline=$(($(date +%s) + 60))
until curl -fsS "$api/readyz" >/dev/null 2>&1; do
  kill -0 "$node_pid" 2>/dev/null || { cat "$work/node.log" >&2; fail "the node exited during startup"; }
  [ "$(date +%s)" -lt "$deadline" ] || { cat "$work/node.log" >&2; fail "the node was not ready within 60 s"; }
  sleep 0.2
done
curl -fsS "$api/v1/openapi.json" -o "$work/openapi.json" || fail "GET /v1/openapi.json failed"

# --- the run -------------------------------------------------------------------
checks=not_a_server_error,status_code_conformance,content_type_conformance
checks+=,response_headers_conformance,response_schema_conformance,negative_data_rejection
fuzz_started=$(date +%s)
set +e
# Run from the temporary directory: schemathesis keeps a cache (.schemathesis/)
# in the working directory.
(cd "$work" && "$st" run "$api/v1/openapi.json" \
  --header "Authorization: Bearer $admin_token" \
  --checks "$checks" \
  --phases examples,coverage,fuzzing,stateful \
  --max-examples "$examples" \
  --seed "$seed" \
  --generation-deterministic \
  --exclude-path /v1/cluster/learners \
  --exclude-path /v1/cluster/membership \
  --workers 1 \
  --request-timeout 10 \
  --no-color \
  --report junit --report-junit-path "$work/junit.xml" \
  >"$work/schemathesis.log" 2>&1)
rc=$?
set -e
fuzz_elapsed=$(($(date +%s) - fuzz_started))
cat "$work/schemathesis.log"
mkdir -p target
cp "$work/schemathesis.log" target/api-fuzz.log

kill -0 "$node_pid" 2>/dev/null || { tail -50 "$work/node.log" >&2; fail "the node died during the run"; }
if grep -q " ERROR \| panicked" "$work/node.log"; then
  grep " ERROR \| panicked" "$work/node.log" | head -20 >&2
  fail "the node logged errors or panics during the run"
fi
[ "$rc" -eq 0 ] || fail "schemathesis found failures (exit $rc; log in target/api-fuzz.log)"
echo "api-fuzz: passed in ${fuzz_elapsed}s of fuzzing ($(($(date +%s) - started))s in all)"
