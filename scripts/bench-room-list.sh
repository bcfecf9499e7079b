#!/usr/bin/env bash
# The room list of a user with many rooms and a long history: `GET /api/rooms` latency
# (p50/p99 over sequential requests), with every room read to its end and with every room
# 100 or more messages behind (the unread count's worst case: it stops counting at 100).
#
#   scripts/bench-room-list.sh [--postgres] [--rooms N] [--per-room N] [--requests N]
#
# Defaults: 500 rooms of 2,000 messages each (1,000,000 messages), 200 requests per case, on
# an embedded node (SQLite); --postgres runs the node on a fresh PostgreSQL database
# (SCALIFY_BENCH_DATABASE_URL, default postgres://postgres@127.0.0.1:5432/postgres). The
# rooms are created through the API; the messages are written into the database directly
# (the API would take minutes to send a million), then the node is started again on it.
# Needs the release binary (built here), curl, and sqlite3 or psql.
set -euo pipefail
cd "$(dirname "$0")/.."

ROOMS=500 PER_ROOM=2000 REQUESTS=200 ENGINE=sqlite
PG_URL="${SCALIFY_BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
while [ $# -gt 0 ]; do
  case "$1" in
    --postgres) ENGINE=postgres ;;
    --rooms) ROOMS=$2; shift ;;
    --per-room) PER_ROOM=$2; shift ;;
    --requests) REQUESTS=$2; shift ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
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
DB_NAME="" NODE_PID=""
cleanup() {
  [ -n "$NODE_PID" ] && kill "$NODE_PID" 2>/dev/null && wait "$NODE_PID" 2>/dev/null
  [ -n "$DB_NAME" ] && psql -q "$PG_URL" -c "DROP DATABASE IF EXISTS $DB_NAME" >/dev/null 2>&1
  rm -rf "$WORK"
}
trap cleanup EXIT

args=(serve --listen 127.0.0.1:0 --data-dir "$WORK" --rate-limit-per-sec 0)
if [ "$ENGINE" = postgres ]; then
  DB_NAME="scalify_bench_rooms_$$"
  psql -q "$PG_URL" -c "CREATE DATABASE $DB_NAME" >/dev/null
  DB_URL="${PG_URL%/*}/$DB_NAME"
  args+=(--database-url "$DB_URL")
fi
start_node() {
  SCALIFY_LOG=warn "$BIN" "${args[@]}" >"$WORK/out" 2>"$WORK/err" &
  NODE_PID=$!
  for _ in $(seq 200); do
    URL=$(grep -o 'http://[^/ ]*' "$WORK/out" | head -1 || true)
    [ -n "$URL" ] && return 0
    sleep 0.1
  done
  cat "$WORK/err" >&2; exit 1
}
stop_node() { kill "$NODE_PID"; wait "$NODE_PID" || true; NODE_PID=""; }
api() { curl -sf -X "$1" "$URL$2" -H 'content-type: application/json' ${3:+-H "authorization: Bearer $3"} ${4:+-d "$4"}; }

start_node
reader_json=$(api POST /api/auth/register "" '{"username":"reader","password":"correct-horse"}')
reader=$(echo "$reader_json" | sed 's/.*"token":"\([^"]*\)".*/\1/')
reader_id=$(echo "$reader_json" | sed 's/.*"user":{"id":"\([^"]*\)".*/\1/')
writer_json=$(api POST /api/auth/register "" '{"username":"writer","password":"correct-horse"}')
writer=$(echo "$writer_json" | sed 's/.*"token":"\([^"]*\)".*/\1/')
writer_id=$(echo "$writer_json" | sed 's/.*"user":{"id":"\([^"]*\)".*/\1/')
for i in $(seq "$ROOMS"); do
  api POST /api/rooms "$writer" "{\"name\":\"bench-$i\",\"kind\":\"public\",\"members\":[\"reader\"]}" >/dev/null
done
stop_node

echo "seeding $ROOMS rooms × $PER_ROOM messages ($ENGINE)…" >&2
seed_sql="
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $PER_ROOM)
INSERT INTO messages (room_id, seq, id, sender_id, sender_name, client_id, text, ts)
SELECT r.id, n.i, r.id || '-' || n.i, '$writer_id', 'writer', 'c' || n.i, 'message ' || n.i, 0
FROM rooms r, n WHERE r.name LIKE 'bench-%';
UPDATE rooms SET last_seq = $PER_ROOM WHERE name LIKE 'bench-%';"
sql() {
  if [ "$ENGINE" = postgres ]; then psql -q "$DB_URL" -c "$1" >/dev/null; else sqlite3 "$WORK/scalify.db" "$1"; fi
}
sql "$seed_sql"
if [ "$ENGINE" = postgres ]; then sql "ANALYZE"; fi
start_node

measure() {
  local label=$1 times
  api GET /api/rooms "$reader" >/dev/null # warm
  times=$(for _ in $(seq "$REQUESTS"); do
    curl -sf -o /dev/null -w '%{time_total}\n' "$URL/api/rooms" -H "authorization: Bearer $reader"
  done | sort -n)
  local p50 p99 count
  p50=$(echo "$times" | awk -v n="$REQUESTS" 'NR == int(n * 0.5) + 0 { printf "%.1f", $1 * 1000 }')
  p99=$(echo "$times" | awk -v n="$REQUESTS" 'NR == int(n * 0.99) + 0 { printf "%.1f", $1 * 1000 }')
  count=$(api GET /api/rooms "$reader" | { grep -o '"unread":100' || true; } | wc -l)
  mentioned=$(api GET /api/rooms "$reader" | { grep -o '"mentions":[1-9][0-9]*' || true; } | wc -l)
  echo "room list, $ROOMS rooms × $PER_ROOM messages ($ENGINE), $label: p50 $p50 ms, p99 $p99 ms ($count rooms at 100 unread, $mentioned with mentions)"
}
sql "UPDATE members SET last_read = $PER_ROOM WHERE room_id IN (SELECT id FROM rooms WHERE name LIKE 'bench-%')"
measure "every room read"
sql "UPDATE members SET last_read = 0 WHERE room_id IN (SELECT id FROM rooms WHERE name LIKE 'bench-%')"
measure "every room 100+ unread"
# With mentions: half of all messages mention another user, one in fifty the reader (written
# as a node writes them: the column, and a row of the mentions table each).
has_mentions() {
  if [ "$ENGINE" = postgres ]; then
    [ "$(psql -tA "$DB_URL" -c "SELECT count(*) FROM information_schema.columns WHERE table_name = 'messages' AND column_name = 'mentions'")" = 1 ]
  else
    sqlite3 "$WORK/scalify.db" "SELECT mentions FROM messages LIMIT 0" >/dev/null 2>&1
  fi
}
if has_mentions; then
  stop_node
  sql "UPDATE messages SET mentions = CASE WHEN seq % 50 = 0 THEN '$reader_id' ELSE '01ARZ3NDEKTSV4RRFFQ69G5FAV' END WHERE seq % 2 = 0;
       INSERT INTO mentions (user_id, room_id, seq, sender_id)
       SELECT mentions, room_id, seq, sender_id FROM messages WHERE mentions IS NOT NULL;"
  if [ "$ENGINE" = postgres ]; then sql "ANALYZE"; fi
  start_node
  measure "every room 100+ unread, half the messages mentioning someone"
fi
