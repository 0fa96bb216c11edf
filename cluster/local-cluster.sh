#!/usr/bin/env bash
# A local three-node spendcap cluster on 127.0.0.1, for trying things out.
#
#   cluster/local-cluster.sh start   # build (if needed) and start nodes 1-3
#   cluster/local-cluster.sh status  # cluster status from each node
#   cluster/local-cluster.sh stop    # stop all three
#   cluster/local-cluster.sh wipe    # stop and delete their data
#
# APIs: http://127.0.0.1:7711, :7712, :7713 (Raft on :7811-:7813).
# Admin token: $SPENDCAP_ADMIN_TOKEN, or the one generated into
# ./local-cluster/admin-token on first start. Peer token (required on Raft
# RPCs between the nodes): $SPENDCAP_PEER_TOKEN, or the one generated into
# ./local-cluster/peer-token.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${SPENDCAP_LOCAL_DIR:-./local-cluster}
PROFILE=${SPENDCAP_PROFILE:-release}
BIN=target/x86_64-unknown-linux-gnu/$PROFILE/spendcap
[ "$PROFILE" = dev ] && BIN=target/x86_64-unknown-linux-gnu/debug/spendcap
MEMBERS="1=127.0.0.1:7811/127.0.0.1:7711,2=127.0.0.1:7812/127.0.0.1:7712,3=127.0.0.1:7813/127.0.0.1:7713"

# A secret kept in $DIR/<file> (mode 0600), generated on first use.
secret() {
  local file=$1 prefix=$2
  mkdir -p "$DIR"
  if [ ! -s "$DIR/$file" ]; then
    (umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' | sed "s/^/$prefix/" > "$DIR/$file")
  fi
  cat "$DIR/$file"
}

token() {
  if [ -n "${SPENDCAP_ADMIN_TOKEN:-}" ]; then echo "$SPENDCAP_ADMIN_TOKEN"; return; fi
  secret admin-token sca_
}

peer_token() {
  if [ -n "${SPENDCAP_PEER_TOKEN:-}" ]; then echo "$SPENDCAP_PEER_TOKEN"; return; fi
  secret peer-token scp_
}

start() {
  if [ ! -x "$BIN" ]; then
    scripts/setup.sh
    cargo build --profile "$PROFILE" -p spendcap
  fi
  local t p; t=$(token); p=$(peer_token)
  for id in 1 2 3; do
    if [ -f "$DIR/node$id.pid" ] && kill -0 "$(cat "$DIR/node$id.pid")" 2>/dev/null; then
      echo "node $id already running"; continue
    fi
    mkdir -p "$DIR/node$id"
    SPENDCAP_ADMIN_TOKEN="$t" SPENDCAP_PEER_TOKEN="$p" nohup "$BIN" serve --id "$id" --data-dir "$DIR/node$id" \
      --api-listen "127.0.0.1:771$id" --raft-listen "127.0.0.1:781$id" \
      --initial-members "$MEMBERS" > "$DIR/node$id.log" 2>&1 &
    echo $! > "$DIR/node$id.pid"
    echo "node $id: http://127.0.0.1:771$id (log $DIR/node$id.log)"
  done
  for id in 1 2 3; do
    for _ in $(seq 1 300); do
      "$BIN" health --api "http://127.0.0.1:771$id" >/dev/null 2>&1 && break
      sleep 0.1
    done
    "$BIN" health --api "http://127.0.0.1:771$id"
  done
  echo "admin token: export SPENDCAP_TOKEN=\$(cat $DIR/admin-token)"
}

stop() {
  for id in 1 2 3; do
    if [ -f "$DIR/node$id.pid" ]; then
      kill "$(cat "$DIR/node$id.pid")" 2>/dev/null || true
      rm -f "$DIR/node$id.pid"
    fi
  done
}

status() {
  local t; t=$(token)
  for id in 1 2 3; do
    "$BIN" cluster status --api "http://127.0.0.1:771$id" --token "$t" || true
  done
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  wipe) stop; rm -rf "$DIR" ;;
  *) echo "usage: $0 start|status|stop|wipe" >&2; exit 2 ;;
esac
