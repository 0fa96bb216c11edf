#!/usr/bin/env bash
# Runs spendcap: a single-node cluster in ./spendcap-data that initializes
# itself, serving the API on http://127.0.0.1:7700. Extra arguments go to
# `spendcap serve` (see `--help`). The first build compiles RocksDB (C++):
# expect 10+ minutes on two cores.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec cargo run --release --locked -p spendcap -- serve "$@"
