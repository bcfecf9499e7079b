#!/usr/bin/env bash
# A/B of two (or more) server binaries on this machine: runs one `scalify bench` scenario
# against a fresh embedded node of each binary in turn, ROUNDS times, alternating, so that the
# machine's drift (other load, VM steal) falls on both sides alike. The load generator is the
# same binary for every run (LOADGEN, default: the first server binary).
#
#   scripts/bench-ab.sh 3 /tmp/scalify-before target/release/scalify
#   ARGS="--duration 5 --users 2 idle --connections 10000 --rooms 100" scripts/bench-ab.sh 2 A B
#
# Compare "acked sends per server CPU-s" first: it is steadier than sends/s on a noisy machine.
set -euo pipefail
rounds=$1; shift
loadgen=${LOADGEN:-$1}
read -r -a args <<<"${ARGS:---duration 10 durable --senders 256 --window 8 --rooms 256}"
for r in $(seq "$rounds"); do
  for bin in "$@"; do
    data=$(mktemp -d)
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    "$bin" serve --listen "127.0.0.1:$port" --data-dir "$data" --rate-limit-per-sec 0 >"$data/log" 2>&1 &
    pid=$!
    for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
    echo "== $bin, round $r"
    "$loadgen" bench --url "http://127.0.0.1:$port" --server-pid "$pid" "${args[@]}" \
      | grep -E "acked sends/s|send→ack|per connection|per server CPU|server CPU" || true
    kill -TERM "$pid"; wait "$pid" || true
    rm -rf "$data"
  done
done
