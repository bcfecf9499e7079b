#!/usr/bin/env bash
# A local ScalifyChat cluster: N nodes sharing PostgreSQL and Redis, behind nginx.
#
#   scripts/cluster.sh start [N]   # default 3 nodes; prints the load balancer's URL
#   scripts/cluster.sh status
#   scripts/cluster.sh stop
#
# Settings (environment):
#   SCALIFY_CLUSTER_DIR        state, logs, rendered nginx.conf   [.cluster]
#   SCALIFY_CLUSTER_PORT       load balancer port                 [8080]
#   SCALIFY_CLUSTER_NODE_PORT  first node's port (then +1, +2...) [3101]
#   SCALIFY_DATABASE_URL       PostgreSQL database (created if absent)
#                              [postgres://postgres@127.0.0.1:5432/scalify_cluster]
#   SCALIFY_REDIS_URL          [redis://127.0.0.1:6379]
#   SCALIFY_REDIS_PREFIX       [scalify-cluster]
#   SCALIFY_BIN                the binary [target/release/scalify, built if absent]
#   SCALIFY_CLUSTER_ARGS       extra `scalify serve` flags for every node
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DIR="${SCALIFY_CLUSTER_DIR:-$ROOT/.cluster}"
LB_PORT="${SCALIFY_CLUSTER_PORT:-8080}"
NODE_PORT="${SCALIFY_CLUSTER_NODE_PORT:-3101}"
DATABASE_URL="${SCALIFY_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/scalify_cluster}"
REDIS_URL="${SCALIFY_REDIS_URL:-redis://127.0.0.1:6379}"
PREFIX="${SCALIFY_REDIS_PREFIX:-scalify-cluster}"
BIN="${SCALIFY_BIN:-$ROOT/target/release/scalify}"

die() { echo "cluster: $*" >&2; exit 1; }

need_nginx() {
  command -v nginx >/dev/null && return
  [ -x /usr/sbin/nginx ] && { PATH="$PATH:/usr/sbin"; return; }
  command -v apt-get >/dev/null || die "nginx is required (Debian: apt-get install nginx-light)"
  echo "cluster: installing nginx (Debian package nginx-light)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null; }
}

ensure_database() {
  local name="${DATABASE_URL##*/}"; name="${name%%\?*}"
  local admin="${DATABASE_URL%/*}/postgres"
  [[ "$name" =~ ^[a-zA-Z0-9_]+$ ]] || die "unsupported database name '$name'"
  psql "$admin" -qtAc "SELECT 1" >/dev/null 2>&1 || die "PostgreSQL is not reachable at $admin"
  if ! psql "$admin" -qtAc "SELECT 1 FROM pg_database WHERE datname = '$name'" | grep -q 1; then
    psql "$admin" -qc "CREATE DATABASE $name" >/dev/null
  fi
}

wait_healthy() {
  local url="$1" pid="$2" log="$3"
  for _ in $(seq 1 100); do
    curl -fsS "$url/healthz" >/dev/null 2>&1 && return 0
    kill -0 "$pid" 2>/dev/null || { tail -20 "$log" >&2; die "node at $url exited"; }
    sleep 0.1
  done
  tail -20 "$log" >&2
  die "node at $url did not become healthy"
}

start() {
  local n="${1:-3}"
  [[ "$n" =~ ^[1-9][0-9]*$ ]] || die "N must be a positive number"
  if [ -f "$DIR/nodes" ]; then
    alive=0
    while read -r pid _; do kill -0 "$pid" 2>/dev/null && alive=1; done < "$DIR/nodes"
    [ "$alive" = 1 ] && die "a cluster is already running from $DIR (scripts/cluster.sh stop)"
    echo "cluster: clearing the state of a cluster that is no longer running"
    stop >/dev/null
  fi
  need_nginx
  command -v psql >/dev/null || die "psql is required"
  command -v redis-cli >/dev/null || die "redis-cli is required"
  [ -x "$BIN" ] || (cd "$ROOT" && cargo build --release --locked --bin scalify)
  ensure_database
  [ "$(redis-cli -u "$REDIS_URL" ping 2>/dev/null)" = PONG ] || die "Redis is not reachable at $REDIS_URL"
  mkdir -p "$DIR/nginx-tmp"
  # Every node must sign and check tokens with the same secret.
  if [ ! -s "$DIR/token-secret" ]; then
    (umask 077; od -An -tx1 -N32 /dev/urandom | tr -d ' \n' > "$DIR/token-secret")
  fi
  export SCALIFY_TOKEN_SECRET; SCALIFY_TOKEN_SECRET="$(cat "$DIR/token-secret")"
  "$BIN" migrate --database-url "$DATABASE_URL" >/dev/null

  local upstreams=""
  : > "$DIR/nodes"
  for i in $(seq 1 "$n"); do
    local port=$((NODE_PORT + i - 1))
    mkdir -p "$DIR/node$i" "$DIR/files"
    # One machine: the nodes share their uploads through one directory (a real cluster uses
    # S3-compatible storage: --s3-endpoint, docs/cluster.md).
    [ -e "$DIR/node$i/files" ] || ln -s "$DIR/files" "$DIR/node$i/files"
    # shellcheck disable=SC2086
    nohup "$BIN" serve --listen "127.0.0.1:$port" --data-dir "$DIR/node$i" \
      --database-url "$DATABASE_URL" --redis-url "$REDIS_URL" --redis-prefix "$PREFIX" \
      --trusted-proxies 127.0.0.1 ${SCALIFY_CLUSTER_ARGS:-} >"$DIR/node$i.log" 2>&1 &
    local pid=$!
    echo "$pid 127.0.0.1:$port" >> "$DIR/nodes"
    upstreams+="        server 127.0.0.1:$port max_fails=1 fail_timeout=5s;"$'\n'
  done
  while read -r pid addr; do
    wait_healthy "http://$addr" "$pid" "$DIR/node$(( ${addr##*:} - NODE_PORT + 1 )).log"
  done < "$DIR/nodes"

  UPSTREAMS="$upstreams" python3 - "$ROOT/deploy/nginx/cluster.conf.template" "$DIR/nginx.conf" "$DIR" "$LB_PORT" <<'PY'
import os, sys
src, dst, d, port = sys.argv[1:]
text = open(src).read().replace("@DIR@", d).replace("@PORT@", port)
text = text.replace("@UPSTREAMS@\n", os.environ["UPSTREAMS"])
open(dst, "w").write(text)
PY
  nginx -t -q -c "$DIR/nginx.conf" -p "$DIR" -g "error_log $DIR/nginx-error.log;" \
    || die "nginx rejected $DIR/nginx.conf"
  nginx -c "$DIR/nginx.conf" -p "$DIR" -g "error_log $DIR/nginx-error.log;"
  for _ in $(seq 1 50); do
    curl -fsS "http://127.0.0.1:$LB_PORT/healthz" >/dev/null 2>&1 && break
    sleep 0.1
  done
  curl -fsS "http://127.0.0.1:$LB_PORT/healthz" >/dev/null || die "load balancer not answering"
  echo "ScalifyChat cluster of $n node(s) is running at http://127.0.0.1:$LB_PORT/"
  echo "  nodes: $(awk '{print "http://"$2}' "$DIR/nodes" | paste -sd' ')  logs: $DIR/node*.log"
}

stop() {
  if [ -f "$DIR/nginx.pid" ]; then
    kill "$(cat "$DIR/nginx.pid")" 2>/dev/null || true
    rm -f "$DIR/nginx.pid"
  fi
  if [ -f "$DIR/nodes" ]; then
    while read -r pid _; do kill -TERM "$pid" 2>/dev/null || true; done < "$DIR/nodes"
    while read -r pid _; do
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null || true
    done < "$DIR/nodes"
    rm -f "$DIR/nodes"
  fi
  echo "cluster stopped"
}

status() {
  [ -f "$DIR/nodes" ] || { echo "no cluster running from $DIR"; exit 1; }
  while read -r pid addr; do
    if kill -0 "$pid" 2>/dev/null; then
      echo "node http://$addr (pid $pid): $(curl -s "http://$addr/readyz" || echo unreachable)"
    else
      echo "node http://$addr (pid $pid): not running"
    fi
  done < "$DIR/nodes"
  echo "load balancer http://127.0.0.1:$LB_PORT: $(curl -s "http://127.0.0.1:$LB_PORT/healthz" || echo unreachable)"
}

case "${1:-}" in
  start) start "${2:-3}" ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start [N] | status | stop" >&2; exit 2 ;;
esac
