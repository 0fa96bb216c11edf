#!/usr/bin/env bash
# Runs every test: unit and property tests, the storage conformance suite,
# real clusters over HTTP on 127.0.0.1, the x402 gateway end to end, the
# monitoring checks against a real Prometheus and Chromium, and the
# Jepsen-style fault suite against the docker-compose deployment.
# Installs what it needs first. Fails loudly on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
step() { printf '\n==> %s (%ss)\n' "$*" "$(( $(date +%s) - started ))"; }

step "setup"
scripts/setup.sh --test

step "format"
cargo fmt --all -- --check

step "structure: no import cycles between modules"
scripts/check-module-cycles.py --self-test
scripts/check-module-cycles.py

# One build profile and one set of RUSTFLAGS for everything below (RocksDB
# compiles once): the dev profile, statically linked (.cargo/config.toml).
step "build"
cargo build --locked --workspace --all-targets

step "unit, property, storage, cluster and gateway tests"
cargo test --locked --workspace

step "API fuzzing: schemathesis against a live node's OpenAPI document"
scripts/api-fuzz.sh

if [ -x cluster/test-monitoring.sh ]; then
  step "monitoring: Prometheus, alert rules, dashboard, console"
  cluster/test-monitoring.sh
fi

if [ -x jepsen-style-tests/run.sh ]; then
  step "fault suite against the docker-compose cluster"
  jepsen-style-tests/run.sh --ci
fi

step "all tests passed"
