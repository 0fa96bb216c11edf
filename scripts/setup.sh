#!/usr/bin/env bash
# Installs what building and testing spendcap need on a Debian machine that
# has only the Rust toolchain and Docker. Safe to run again: it installs only
# what is missing.
#
#   scripts/setup.sh          # to build: clang and libclang (RocksDB's bindgen)
#   scripts/setup.sh --test   # and what the tests use: iptables (fault
#                             # injection), prometheus and promtool, chromium,
#                             # python3-venv and curl (API fuzzing: schemathesis
#                             # goes into a virtualenv, scripts/api-fuzz.sh),
#                             # and the benchmark's peers, whose tests fail
#                             # when they are missing (crates/bench/tests/peers.rs):
#                             # redis-server, postgresql, etcd-server
set -euo pipefail

packages=(clang libclang-dev)
if [ "${1:-}" = "--test" ]; then
  packages+=(iptables prometheus chromium python3 python3-venv curl)
  # The benchmark's peers (their own services are left alone: the tests
  # start their servers on free ports in temp dirs).
  packages+=(redis-server postgresql etcd-server)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "setup: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The Prometheus package starts a service; the tests run their own.
if [ "${1:-}" = "--test" ] && command -v systemctl >/dev/null 2>&1; then
  systemctl stop prometheus prometheus-node-exporter >/dev/null 2>&1 || true
fi
