#!/usr/bin/env bash
# Builds the spendcap node image FROM scratch, with no registry access.
#
#   cluster/build-image.sh                  # release build -> spendcap:latest
#   cluster/build-image.sh --debug --no-build --tag spendcap:test
#                                           # CI: the debug binary it already built
#   cluster/build-image.sh --binary PATH --tag spendcap:fault
#                                           # any static binary, e.g. a fault build
#
# Options:
#   --release        use target/x86_64-unknown-linux-gnu/release/spendcap (default)
#   --debug          use target/x86_64-unknown-linux-gnu/debug/spendcap
#   --binary PATH    use this binary
#   --no-build       do not run cargo first (the binary must exist)
#   --tag NAME       image tag (default spendcap:latest)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
profile=release
binary=""
build=1
tag="spendcap:latest"

while [ $# -gt 0 ]; do
  case "$1" in
    --release) profile=release ;;
    --debug) profile=debug ;;
    --binary) binary="$2"; build=0; shift ;;
    --no-build) build=0 ;;
    --tag) tag="$2"; shift ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
  esac
  shift
done

target_dir="${CARGO_TARGET_DIR:-$repo/target}"
if [ -z "$binary" ]; then
  binary="$target_dir/x86_64-unknown-linux-gnu/$profile/spendcap"
  if [ "$build" = 1 ]; then
    if [ "$profile" = release ]; then
      (cd "$repo" && cargo build --release -p spendcap)
    else
      (cd "$repo" && cargo build -p spendcap)
    fi
  fi
fi
if [ ! -x "$binary" ]; then
  echo "no executable spendcap binary at $binary" >&2
  exit 1
fi
# FROM scratch has no loader and no libc: the binary must be static.
if command -v readelf >/dev/null 2>&1 && readelf -l "$binary" | grep -q 'Requesting program interpreter'; then
  echo "$binary is dynamically linked; build with the repo's .cargo/config.toml (static x86_64-unknown-linux-gnu)" >&2
  exit 1
fi

ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
cp "$binary" "$ctx/spendcap"
mkdir "$ctx/data"
# The classic builder needs nothing from a registry for FROM scratch.
DOCKER_BUILDKIT=0 docker build --quiet -f "$repo/cluster/Dockerfile" -t "$tag" "$ctx" >/dev/null
echo "built $tag from $binary ($(du -h "$binary" | cut -f1))"
