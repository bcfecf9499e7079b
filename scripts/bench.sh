#!/usr/bin/env bash
# Reproduces the figures in docs/benchmarks.md: builds the release binary, starts one embedded
# node on a free port with a fresh data directory (rate limit off: the bench is the only
# client), runs each scenario against it with --server-pid, and stops it.
#   scripts/bench.sh [scenario ...]     scenarios: durable single idle fanout pairs store
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p scalify --examples -p scalify-store >/dev/null
BIN=target/release/scalify
scenarios=("$@")
[ ${#scenarios[@]} -eq 0 ] && scenarios=(store durable single fanout pairs idle)

start_node() {
  DATA=$(mktemp -d)
  PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "$BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$DATA" --rate-limit-per-sec 0 >"$DATA/log" 2>&1 &
  PID=$!
  for _ in $(seq 50); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
  URL="http://127.0.0.1:$PORT"
}
stop_node() { kill -TERM "$PID"; wait "$PID" || true; rm -rf "$DATA"; }
run() { echo "\$ scalify bench $*"; "$BIN" bench --url "$URL" --server-pid "$PID" "$@"; echo; }

echo "# $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores, $(git rev-parse --short HEAD)"
for s in "${scenarios[@]}"; do
  case $s in
    store)
      echo "\$ target/release/examples/append_throughput 512 64 5 / 2048 64 5 / 1 1 5"
      target/release/examples/append_throughput 512 64 5
      target/release/examples/append_throughput 2048 64 5
      target/release/examples/append_throughput 1 1 5; echo ;;
    durable) start_node; run --duration 10 durable --senders 256 --window 8 --rooms 256; stop_node ;;
    single)  start_node; run --duration 10 durable --senders 1 --window 1 --rooms 1; stop_node ;;
    # Two users only: each registration hashes a password (19 MiB), and glibc keeps that memory
    # as free heap that the first connections would reuse, hiding their real cost.
    idle)    start_node; run --duration 5 --users 2 idle --connections 10000 --rooms 100; stop_node ;;
    fanout)  start_node; run --duration 10 fanout --receivers 1000 --senders 4 --rate 50; stop_node ;;
    pairs)   start_node; run --duration 10 pairs --pairs 500 --rate 2000; stop_node ;;
    *) echo "unknown scenario $s" >&2; exit 2 ;;
  esac
done
