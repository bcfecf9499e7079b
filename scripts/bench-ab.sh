#!/usr/bin/env bash
# A/B of two (or more) server binaries on this machine: runs one scripts/bench.sh scenario
# (SCENARIO, default `durable`) against each binary in turn, ROUNDS times, alternating, so that
# the machine's drift (other load, VM steal) falls on both sides alike. The load generator is
# the same binary for every run (LOADGEN, default: the first server binary).
#
#   scripts/bench-ab.sh 3 /tmp/scalify-before target/release/scalify
#   SCENARIO=idle scripts/bench-ab.sh 2 /tmp/scalify-before target/release/scalify
#
# Compare "acked sends per server CPU-s" first: it is steadier than sends/s on a noisy machine.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=$1; shift
export SCALIFY_LOADGEN_BIN; SCALIFY_LOADGEN_BIN=$(realpath "${LOADGEN:-$1}")
for r in $(seq "$rounds"); do
  for bin in "$@"; do
    echo "== $bin, round $r"
    SCALIFY_SERVER_BIN=$(realpath "$bin") scripts/bench.sh "${SCENARIO:-durable}" \
      | grep -E "acked sends/s|send→ack|per connection|per server CPU|server CPU|cores used" || true
  done
done
