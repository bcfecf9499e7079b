#!/usr/bin/env bash
# Uploads under load: N clients each upload FILES files of SIZE MiB at once, streamed with no
# Content-Length (chunked), to one embedded node; reports MiB/s, upload latency p50/p99 and the
# node's peak resident memory (VmHWM) against its idle memory. Then the same with pictures
# (each a 4,000 × 3,000 PNG, previewed by the node) to show what previews cost.
#
#   scripts/bench-uploads.sh [--clients N] [--files N] [--size MiB] [--s3 URL]
#
# Defaults: 32 clients (the node's limit of uploads at once), 4 files each, 10 MiB (the
# default upload limit). --s3 URL keeps the files in a fresh bucket of that S3-compatible
# server instead of the data directory (credentials: any, for a test server).
# Needs the release binary (built here) and Node.js with tests/e2e's packages (npm ci).
set -euo pipefail
cd "$(dirname "$0")/.."

CLIENTS=32 FILES=4 SIZE=10 S3=""
while [ $# -gt 0 ]; do
  case "$1" in
    --clients) CLIENTS=$2; shift ;;
    --files) FILES=$2; shift ;;
    --size) SIZE=$2; shift ;;
    --s3) S3=$2; shift ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option: $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done

BIN="${SCALIFY_SERVER_BIN:-}"
if [ -z "$BIN" ]; then
  cargo build --release --locked --bin scalify >&2
  BIN=target/release/scalify
fi
WORK=$(mktemp -d)
NODE_PID=""
cleanup() {
  [ -n "$NODE_PID" ] && kill "$NODE_PID" 2>/dev/null && wait "$NODE_PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
ARGS=(serve --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" --rate-limit-per-sec 0 --registrations-per-address 0 --upload-max-bytes $((SIZE * 1024 * 1024)))
if [ -n "$S3" ]; then
  BUCKET="scalify-bench-$$"
  curl -sf -X PUT "$S3/$BUCKET" >/dev/null
  export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench
  ARGS+=(--s3-endpoint "$S3" --s3-bucket "$BUCKET")
fi
SCALIFY_LOG=warn "$BIN" "${ARGS[@]}" 2>"$WORK/node.log" &
NODE_PID=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done

rss() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$NODE_PID/status"; }
echo "idle: VmRSS $(( $(rss VmRSS) / 1024 )) MiB"

cd tests/e2e
URL="http://127.0.0.1:$PORT" CLIENTS=$CLIENTS FILES=$FILES SIZE=$SIZE NODE_PID=$NODE_PID node --input-type=module -e '
import { readFileSync } from "node:fs";
import { register, api } from "./harness.js";
import { rgbPng } from "./png.js";
const { URL: url, CLIENTS, FILES, SIZE, NODE_PID } = process.env;
const hwm = () => Number(readFileSync(`/proc/${NODE_PID}/status`, "utf8").match(/VmHWM:\s+(\d+)/)[1]) / 1024;
const users = [];
for (let i = 0; i < Number(CLIENTS); i++) users.push(await register(url, "up"));
const room = `bench-${process.pid}`;
await api(url, "POST", "/api/rooms", { name: room, kind: "public" }, users[0].token);
for (const u of users.slice(1)) await api(url, "POST", `/api/rooms/${room}/members`, { username: u.user.username }, u.token);
const chunk = new Uint8Array(256 * 1024).map((_, i) => (i * 31) & 255);
function streamed(bytes) {
  let sent = 0;
  return new ReadableStream({ pull(c) { if (sent >= bytes) return c.close(); sent += chunk.length; c.enqueue(chunk); } });
}
async function round(label, body, bytesEach) {
  const times = [];
  const started = performance.now();
  await Promise.all(users.map(async (u) => {
    for (let f = 0; f < Number(FILES); f++) {
      const t = performance.now();
      const res = await fetch(`${url}/api/rooms/${room}/uploads?name=f${f}.bin`, {
        method: "POST", headers: { authorization: `Bearer ${u.token}` }, body: body(), duplex: "half",
      });
      if (res.status !== 201) throw new Error(`${res.status} ${await res.text()}`);
      await res.arrayBuffer();
      times.push(performance.now() - t);
    }
  }));
  const secs = (performance.now() - started) / 1000;
  times.sort((a, b) => a - b);
  const mib = (users.length * Number(FILES) * bytesEach) / 1048576;
  console.log(`${label}: ${times.length} uploads, ${mib.toFixed(0)} MiB in ${secs.toFixed(1)} s = ${(mib / secs).toFixed(0)} MiB/s; per upload p50 ${times[Math.floor(times.length / 2)].toFixed(0)} ms, p99 ${times[Math.floor(times.length * 0.99)].toFixed(0)} ms; node peak RSS ${hwm().toFixed(0)} MiB`);
}
await round(`files of ${SIZE} MiB`, () => streamed(Number(SIZE) * 1048576), Number(SIZE) * 1048576);
const picture = rgbPng(4000, 3000);
await round(`pictures 4000x3000 (${(picture.length / 1048576).toFixed(1)} MiB PNG)`, () => picture, picture.length);
'
