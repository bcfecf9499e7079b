#!/usr/bin/env bash
# A/B of two (or more) server binaries on this machine: runs one scripts/bench.sh scenario
# against each binary in turn, ROUNDS times, alternating, so that the machine's drift (other
# load, VM steal) falls on both sides alike. The load generator is the same binary for every
# run (LOADGEN, default: the first server binary).
#
#   scripts/bench-ab.sh ROUNDS BIN... [-- bench.sh arguments]     (default arguments: durable)
#   scripts/bench-ab.sh 3 /tmp/scalify-before target/release/scalify
#   scripts/bench-ab.sh 2 /tmp/scalify-before target/release/scalify -- kafka-ack-5k --no-persister --seconds 20
#
# Compare "acked sends per server CPU-s" first: it is steadier than sends/s on a noisy machine.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=$1; shift
bins=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do bins+=("$1"); shift; done
[ $# -gt 0 ] && shift
bench_args=("$@")
[ ${#bench_args[@]} -gt 0 ] || bench_args=(durable)
export SCALIFY_LOADGEN_BIN; SCALIFY_LOADGEN_BIN=$(realpath "${LOADGEN:-${bins[0]}}")
for r in $(seq "$rounds"); do
  for bin in "${bins[@]}"; do
    echo "== $bin, round $r"
    SCALIFY_SERVER_BIN=$(realpath "$bin") scripts/bench.sh "${bench_args[@]}" \
      | grep -E "acked sends/s|send→ack|per connection|per server CPU|server CPU|cores used" || true
  done
done
