#!/usr/bin/env bash
# Runs the whole spendcap comparison: spendcap (three nodes) against etcd
# (three members), PostgreSQL and Redis, every workload, closed and open
# loop, and writes results/bench-<UTC timestamp>/ (report.md, results.json,
# charts/*.svg, logs/).
#
#   crates/bench/run.sh            # the full comparison (about 45 minutes)
#   crates/bench/run.sh --quick    # a smoke run (under 2 minutes once built)
#
# Options of its own (the rest go to `spendcap-bench run`, see --help):
#   --no-install   do not apt-get the peers (etcd-server, postgresql, redis-server)
#   --no-build     use the binaries already built
# Examples: --systems etcd,postgres,redis   --concurrency 1,16   --open-rates 1000
# Everything runs on 127.0.0.1 in temp dirs and is stopped at the end.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

install=1
build=1
want_spendcap=1
passthrough=()
while [ $# -gt 0 ]; do
  case "$1" in
    --no-install) install=0 ;;
    --no-build) build=0 ;;
    --systems)
      [ $# -ge 2 ] || { echo "--systems needs a value" >&2; exit 2; }
      case ",$2," in *,spendcap,* | *,spendcap-leader,*) ;; *) want_spendcap=0 ;; esac
      passthrough+=("$1" "$2"); shift ;;
    --systems=*)
      case ",${1#--systems=}," in *,spendcap,* | *,spendcap-leader,*) ;; *) want_spendcap=0 ;; esac
      passthrough+=("$1") ;;
    *) passthrough+=("$1") ;;
  esac
  shift
done

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "need root to run: $*" >&2; return 1; fi
}

if [ "$install" -eq 1 ]; then
  missing=()
  command -v etcd >/dev/null || missing+=(etcd-server)
  command -v redis-server >/dev/null || missing+=(redis-server)
  ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing+=(postgresql)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]}" >&2
    as_root apt-get update -q
    # The packages' own services stay as they are: the harness starts its own
    # servers on free ports and never touches theirs.
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  fi
fi

target_dir="${CARGO_TARGET_DIR:-$root/target}"
bin_dir="$target_dir/x86_64-unknown-linux-gnu/release"
if [ "$build" -eq 1 ]; then
  packages=(-p bench)
  [ "$want_spendcap" -eq 1 ] && packages+=(-p spendcap)
  cargo build --release "${packages[@]}"
fi

# The harness writes results/bench-<UTC timestamp>/ under the repository
# (or --out DIR) and finds spendcap at $bin_dir/spendcap (or --spendcap-bin).
extra=()
[ -n "${SPENDCAP_BIN:-}" ] && extra+=(--spendcap-bin "$SPENDCAP_BIN")
exec "$bin_dir/spendcap-bench" run "${extra[@]}" "${passthrough[@]}"
