#!/usr/bin/env bash
# Reproduces the figures in docs/performance.md. Builds the release binary, starts what each
# scenario needs on free ports (a node with a fresh data directory, rate limit off: the bench is
# the only client; a 2-node cluster; a private broker, a fresh database and a Redis prefix),
# runs the scenario and stops it all again — also when a scenario fails or is interrupted.
#
#   scripts/bench.sh [options] [scenario ...]        (no scenario: store durable single fanout pairs idle)
#
# Scenarios:
#   store durable single idle register-rss fanout pairs      one embedded node
#   login login-flood login-flood-unthrottled                 one embedded node: a real login
#                                   alone, and while 64 clients loop failed logins
#   cluster-fanout cluster-fanout-100 cluster-durable cluster-single cluster-pairs
#                                   2 nodes (scripts/cluster.sh) on PostgreSQL and Redis
#   kafka-ack-Nk                    durable mode at N thousand msgs/s (1k, 3k, 10k documented)
#   kafka-durable kafka-sink        durable mode, closed loop; the persister's drain rate
#   kafka-produce-Nk                the broker alone: the node's producer at that rate
#   pairs-Nk                        kafka-ack-Nk's load on an embedded node
#
# Options:
#   --database-url URL    PostgreSQL to create the bench databases in (default
#                         postgres://postgres@127.0.0.1:5432/postgres)
#   --redis-url URL       Redis (default redis://127.0.0.1:6379)
#   --seconds N           how long kafka-ack-Nk, kafka-produce-Nk and pairs-Nk send (10)
#   --pairs N             pairs those loads are spread over (500; 200 at 1k): each pair is two
#                         users online, so it also sets how much presence a node keeps alive
#   --partitions N        partitions of the durable topic (6)
#   --no-persister        kafka-ack-Nk without a persister
#   --persister-args "…"  extra flags of the persister, e.g. "--persister-writers 1"
#   --kafka-option K=V    a librdkafka setting of the node, the persister and the producer
#                         bench (repeatable)
#   --kafka-brokers LIST  a Kafka cluster of yours instead of the private tansu broker (a fresh
#                         topic and consumer group per run, left on the cluster)
#   --tansu-storage URL   the private broker's storage (memory://tansu/; sqlite://tansu.db)
#   --stages              kafka-ack-Nk also prints the node's per-stage p99 per half-second
#   --metrics-dir DIR     keeps the node's and the persister's /metrics of each durable run
#   --consume             kafka-produce-Nk with a plain consumer reading the topic meanwhile
#   -h, --help            this text
#
# SCALIFY_SERVER_BIN and SCALIFY_LOADGEN_BIN replace the node's and the load generator's
# binaries (scripts/bench-ab.sh sets them to compare two builds). SCALIFY_NODE_ARGS adds `serve`
# flags to every node the script starts (e.g. "--rate-limit-per-sec 1000000" to measure the
# per-user budget's cost with it on).
set -euo pipefail
cd "$(dirname "$0")/.."

PG_URL="postgres://postgres@127.0.0.1:5432/postgres"
REDIS_URL="redis://127.0.0.1:6379"
BENCH_SECONDS=10 BENCH_PAIRS="" KAFKA_PARTITIONS=6 PERSISTER=1 PERSISTER_ARGS="" KAFKA_OPTIONS=()
BENCH_KAFKA_BROKERS="" TANSU_STORAGE="memory://tansu/" STAGES=0 BENCH_METRICS_DIR="" CONSUME=""
scenarios=()
need() { [ $# -ge 2 ] || { echo "$1 needs a value (try --help)" >&2; exit 2; }; }
while [ $# -gt 0 ]; do
  case "$1" in
    --database-url) need "$@"; PG_URL=$2; shift ;;
    --redis-url) need "$@"; REDIS_URL=$2; shift ;;
    --seconds) need "$@"; BENCH_SECONDS=$2; shift ;;
    --pairs) need "$@"; BENCH_PAIRS=$2; shift ;;
    --partitions) need "$@"; KAFKA_PARTITIONS=$2; shift ;;
    --no-persister) PERSISTER=0 ;;
    --persister-args) need "$@"; PERSISTER_ARGS=$2; shift ;;
    --kafka-option) need "$@"; KAFKA_OPTIONS+=("$2"); shift ;;
    --kafka-brokers) need "$@"; BENCH_KAFKA_BROKERS=$2; shift ;;
    --tansu-storage) need "$@"; TANSU_STORAGE=$2; shift ;;
    --stages) STAGES=1 ;;
    --metrics-dir) need "$@"; BENCH_METRICS_DIR=$2; shift ;;
    --consume) CONSUME=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "unknown option $1 (try --help)" >&2; exit 2 ;;
    *) scenarios+=("$1") ;;
  esac
  shift
done
[ ${#scenarios[@]} -eq 0 ] && scenarios=(store durable single fanout pairs idle)
# The node, the persister and the producer bench read their librdkafka settings from here.
if [ ${#KAFKA_OPTIONS[@]} -gt 0 ]; then
  SCALIFY_KAFKA_OPTIONS=$(IFS=,; echo "${KAFKA_OPTIONS[*]}"); export SCALIFY_KAFKA_OPTIONS
fi
[ -n "$CONSUME" ] && export CONSUME
# A database of the bench's own, on the server of --database-url.
db_url() { echo "${PG_URL%/*}/$1"; }
psql_admin() { psql "$PG_URL" -qc "$1" >/dev/null; }

cargo build --release --locked -p scalify --bins -p scalify-store -p scalify-kafka --examples >/dev/null
# The node's binary and the load generator's (bench-ab.sh sets them to compare two builds).
BIN=${SCALIFY_SERVER_BIN:-target/release/scalify}
LOADGEN=${SCALIFY_LOADGEN_BIN:-$BIN}

# The bench is the only client: no budgets, registration limit or connection cap on its nodes
# (each flag only if the binary has it: an A/B may run builds from before it).
open_flags() {
  local help flags=()
  [[ "${SCALIFY_NODE_ARGS:-}" == *--rate-limit-per-sec* ]] || flags+=(--rate-limit-per-sec 0)
  help=$("$BIN" serve --help)
  grep -q -- --registrations-per-address <<<"$help" && flags+=(--registrations-per-address 0)
  grep -q -- --max-connections-per-user <<<"$help" && flags+=(--max-connections-per-user 1000000)
  # shellcheck disable=SC2206
  flags+=(${SCALIFY_NODE_ARGS:-})
  echo "${flags[@]}"
}
start_node() {
  DATA=$(mktemp -d)
  PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  # shellcheck disable=SC2046
  "$BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$DATA" $(open_flags) "$@" >"$DATA/log" 2>&1 &
  PID=$!
  for _ in $(seq 50); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
  URL="http://127.0.0.1:$PORT"
}
stop_node() { [ -n "${DATA:-}" ] || return 0; kill -TERM "$PID" 2>/dev/null; wait "$PID" || true; rm -rf "$DATA"; DATA=""; }
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
run() { echo "\$ scalify bench $*"; "$LOADGEN" bench --url "$URL" --server-pid "$PID" "$@"; echo; }

# A 2-node cluster (fresh database, own Redis prefix) through scripts/cluster.sh; the bench
# connects to the nodes directly, half of the connections each.
start_cluster() {
  CDIR=$(mktemp -d)
  CDB="scalify_bench_$$"
  export SCALIFY_CLUSTER_DIR="$CDIR" SCALIFY_BIN="$(realpath "$BIN")" SCALIFY_REDIS_URL="$REDIS_URL"
  export SCALIFY_DATABASE_URL; SCALIFY_DATABASE_URL=$(db_url "$CDB")
  export SCALIFY_REDIS_PREFIX="bench-$$" SCALIFY_CLUSTER_ARGS="$(open_flags)"
  export SCALIFY_CLUSTER_PORT="${SCALIFY_CLUSTER_PORT:-18080}" SCALIFY_CLUSTER_NODE_PORT="${SCALIFY_CLUSTER_NODE_PORT:-13101}"
  scripts/cluster.sh start 2 >/dev/null
  URL=$(awk '{print "http://"$2}' "$CDIR/nodes" | paste -sd,)
  PID=$(awk '{print $1}' "$CDIR/nodes" | paste -sd,)
}
stop_cluster() {
  [ -n "${CDIR:-}" ] || return 0
  scripts/cluster.sh stop >/dev/null || true
  psql_admin "DROP DATABASE IF EXISTS $CDB WITH (FORCE)" || true
  unlink_keys "bench-$$"
  rm -rf "$CDIR"; CDIR=""
}
# Deletes the Redis keys under a prefix (a durable run leaves ~150k: seq counters, a day's
# idempotency keys, windows).
unlink_keys() {
  redis-cli -u "$REDIS_URL" --scan --pattern "$1:*" | xargs -r -n 5000 redis-cli -u "$REDIS_URL" UNLINK >/dev/null || true
}
redis_counters() {
  local publish out
  publish=$(redis-cli -u "$REDIS_URL" INFO commandstats | tr -d '\r' | sed -n 's/^cmdstat_publish:calls=\([0-9]*\).*/\1/p')
  out=$(redis-cli -u "$REDIS_URL" INFO stats | tr -d '\r' | sed -n 's/^total_net_output_bytes:\([0-9]*\)/\1/p')
  echo "${publish:-0} ${out:-0}"
}
run_counted() {
  read -r p0 _ < <(redis_counters)
  # Mid-run, how many nodes are subscribed to each room channel: a message crosses Redis once
  # per subscribed node, whatever the number of recipients.
  ( sleep 6
    chans=$(redis-cli -u "$REDIS_URL" PUBSUB CHANNELS "$SCALIFY_REDIS_PREFIX:room:*" | tr -d '\r')
    n=$(echo "$chans" | grep -c . || true)
    subs=$(echo "$chans" | head -5 | xargs -r redis-cli -u "$REDIS_URL" PUBSUB NUMSUB | tr -d '\r' | awk 'NR%2==0' | sort | uniq -c | awk '{print $1" channel(s) with "$2" subscriber(s)"}' | paste -sd';')
    echo "Redis mid-run: $n room channel(s); of the first 5: $subs" ) &
  local sampler=$!
  run "$@"
  wait "$sampler" || true
  read -r p1 _ < <(redis_counters)
  echo "Redis during the run: $((p1 - p0)) PUBLISH commands (messages + presence events)"
  echo
}

# Durable mode: a private tansu broker (memory storage), a fresh database, a Redis prefix, one
# node (`serve --kafka-brokers`) and, unless told otherwise, one `scalify persister` process.
TANSU_BIN="${TANSU_BIN:-$HOME/.cargo/bin/tansu}"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
start_tansu() {
  KDIR=$(mktemp -d)
  if [ -n "$BENCH_KAFKA_BROKERS" ]; then
    # A broker of the user's (Apache Kafka, Redpanda): a fresh topic and group per run,
    # passed to the node and the persister.
    KBROKERS=$BENCH_KAFKA_BROKERS
    KAFKA_RUN_ARGS=(--kafka-topic "scalify.bench.$$.$RANDOM" --kafka-group "scalify-bench-$$-$RANDOM")
    return
  fi
  KAFKA_RUN_ARGS=()
  kport=$(free_port)
  KBROKERS="127.0.0.1:$kport"
  (cd "$KDIR" && RUST_LOG=warn exec "$TANSU_BIN" broker --listener-url "tcp://127.0.0.1:$kport" \
    --advertised-listener-url "tcp://127.0.0.1:$kport" --storage-engine "$TANSU_STORAGE" >"$KDIR/tansu.log" 2>&1) &
  echo $! >"$KDIR/tansu.pid"
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$kport") 2>/dev/null && break; sleep 0.1; done
}
stop_tansu() {
  [ -n "${KDIR:-}" ] || return 0
  [ -f "$KDIR/tansu.pid" ] && kill "$(cat "$KDIR/tansu.pid")" 2>/dev/null
  rm -rf "$KDIR"; KDIR=""
}
# The private broker's pid (none with BENCH_KAFKA_BROKERS), and CPU seconds that read 0 for none.
tansu_pid() { cat "$KDIR/tansu.pid" 2>/dev/null || true; }
cpu_secs_or_0() { cpu_secs "$1" 2>/dev/null || echo 0; }
start_kafka() {
  start_tansu
  KDB="scalify_bench_k$$"
  psql_admin "CREATE DATABASE $KDB"
  export SCALIFY_TOKEN_SECRET; SCALIFY_TOKEN_SECRET=$(openssl rand -hex 32)
  KARGS=(--database-url "$(db_url "$KDB")" --redis-url "$REDIS_URL"
    --redis-prefix "bench-k$$" --kafka-brokers "$KBROKERS" --kafka-partitions "$KAFKA_PARTITIONS" "${KAFKA_RUN_ARGS[@]}")
  PORT=$(free_port)
  # shellcheck disable=SC2046
  "$BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$KDIR" $(open_flags) "${KARGS[@]}" >"$KDIR/node.log" 2>&1 &
  PID=$! KPID=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break; sleep 0.1; done
  URL="http://127.0.0.1:$PORT"
}
start_persister() {
  PPORT=$(free_port)
  "$BIN" persister --listen "127.0.0.1:$PPORT" "${KARGS[@]}" $PERSISTER_ARGS >"$KDIR/persister.log" 2>&1 &
  PPID_=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PPORT/healthz" >/dev/null && break; sleep 0.1; done
}
persister_metric() { curl -s "http://127.0.0.1:$PPORT/metrics" | awk -v m="$1" '$1 ~ "^"m"({|$)" {s+=$2} END {print s+0}'; }
# Whatever a failed or interrupted scenario left behind is stopped and deleted on exit: the
# node, the cluster, the persister, the broker, the databases and the Redis keys.
cleanup() {
  set +e
  [ -n "${PPID_:-}" ] && { kill "$PPID_" 2>/dev/null; wait "$PPID_"; PPID_=""; }
  stop_node; stop_cluster
  if [ -n "${KDIR:-}" ]; then BENCH_METRICS_DIR="" stop_kafka; fi
  return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM
stop_kafka() {
  # --metrics-dir keeps the node's and the persister's /metrics of each run.
  if [ -n "$BENCH_METRICS_DIR" ]; then
    mkdir -p "$BENCH_METRICS_DIR"; local stamp; stamp=$(date +%H%M%S)
    curl -s "$URL/metrics" >"$BENCH_METRICS_DIR/node-$stamp.prom" || true
    [ -n "${PPID_:-}" ] && { curl -s "http://127.0.0.1:$PPORT/metrics" >"$BENCH_METRICS_DIR/persister-$stamp.prom" || true; }
  fi
  [ -n "${PPID_:-}" ] && { kill -TERM "$PPID_"; wait "$PPID_" || true; PPID_=""; }
  [ -n "${KPID:-}" ] && { kill -TERM "$KPID" 2>/dev/null; wait "$KPID" || true; KPID=""; }
  [ -n "${KDB:-}" ] && { psql_admin "DROP DATABASE IF EXISTS $KDB WITH (FORCE)" || true; KDB=""; }
  unlink_keys "bench-k$$"
  stop_tansu
}
# The processes on the durable path, one "role pid" line each.
durable_pids() {
  { echo "node $PID"; echo "persister ${PPID_:-}"; echo "tansu $(tansu_pid)"
    pgrep -x redis-server | sed 's/^/redis /'; pgrep -x postgres | sed 's/^/postgres /'
    pgrep -f -- "^$LOADGEN bench --url" | sed 's/^/loadgen /' || true; }
}
HZ=$(getconf CLK_TCK)
# The CPU time (user + system) process $1 has used, in clock ticks, into TICKS. Shell builtins
# only, so that sampling mid-run starts no process: the pgrep/awk processes the sampler used
# to start took enough CPU at once to show as spikes in a run's p99 timeline.
cpu_ticks() {
  local stat f
  [ -r "/proc/$1/stat" ] && read -r stat <"/proc/$1/stat" || return 1
  read -ra f <<<"${stat##*) }"  # the fields after "pid (comm)": f[11] utime, f[12] stime
  TICKS=$((f[11] + f[12]))
}
# The same in seconds, printed (outside a measured phase).
cpu_secs() { cpu_ticks "$1" && echo "scale=2; $TICKS / $HZ" | bc; }
# CPU ticks of each "role pid" line of $1, as "role pid ticks" lines in SNAP.
cpu_snapshot() {
  local role pid
  SNAP=""
  while read -r role pid; do
    [ -n "$pid" ] && cpu_ticks "$pid" || continue
    SNAP+="$role $pid $TICKS"$'\n'
  done <<<"$1"
}
# Cores each role used in the middle of a run (out of the machine's `nproc`): from 4 s after
# the load generator starts (it connects and warms up first) until 4 s before its end
# (BENCH_SECONDS - 4; not printed for runs shorter than 6 s). The processes are looked up
# before the measured phase.
cpu_shares() {
  local span=$(( $BENCH_SECONDS - 4 ))
  [ "$span" -ge 2 ] || return 0
  sleep 1; local pids a; pids=$(durable_pids)
  sleep 3; cpu_snapshot "$pids"; a=$SNAP
  sleep "$span"; cpu_snapshot "$pids"
  { echo "$a"; echo ---; echo "$SNAP"; } | awk -v hz="$HZ" -v span="$span" '
    NF == 0 { next }
    $0 == "---" { after = 1; next }
    !after { t0[$2] = $3; next }
    { used[$1] += $3 - t0[$2] }
    END { printf "cores used mid-run (%d s):", span; for (r in used) printf " %s %.2f", r, used[r] / hz / span; print "" }'
}
# Samples the persister's total lag every second during a run (prints the maximum) and the
# cores each process used.
# kafka-ack-Nk and pairs-Nk: one open-loop load, N thousand msgs/s over 500 pairs (200 at 1k),
# as `scalify bench` arguments.
paced_pairs() {
  local n=$1 pairs=500
  [ "$n" -le 1 ] && pairs=200
  pairs=${BENCH_PAIRS:-$pairs}
  echo "--duration $BENCH_SECONDS pairs --pairs $pairs --rate $((n * 1000))"
}
run_with_lag() {
  local sampler=""
  if [ -n "${PPID_:-}" ]; then
    # One process for the whole run, started before the load, instead of a curl and an awk
    # process each second: the run's p99 timeline should show the product, not the sampler
    # (a process started mid-run shows as a spike).
    python3 - "$PPORT" $(($BENCH_SECONDS + 4)) <<'PY' &
import sys, time, urllib.request
port, samples = sys.argv[1], int(sys.argv[2])
url = f"http://127.0.0.1:{port}/metrics"
top = 0
for _ in range(samples):
    time.sleep(1)
    try:
        text = urllib.request.urlopen(url, timeout=2).read().decode()
    except OSError:
        continue
    lag = sum(float(line.split()[-1]) for line in text.splitlines()
              if line.startswith("scalify_persister_lag_messages"))
    top = max(top, int(lag))
print(f"persister lag during the run: max {top} messages (sampled each second)")
PY
    sampler=$!
  fi
  cpu_shares &
  local cpu_sampler=$! stages=""
  if [ "$STAGES" = 1 ]; then
    # Started with the load generator: it connects and warms up for a few seconds first.
    python3 scripts/stage-timeline.py "$URL" $(($BENCH_SECONDS + 6)) &
    stages=$!
  fi
  run "$@"
  wait $sampler "$cpu_sampler" $stages || true
  [ -n "${PPID_:-}" ] && echo "rows written by the persister: $(persister_metric scalify_persister_rows_total)"
  echo
}

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
    # A real user's logins alone; then while 64 clients on another address (127.0.0.2) loop
    # failed logins, with the default throttle and with none (the bounded hashing queue alone).
    login)   start_node; run --duration 10 --users 1 login --flooders 0; stop_node ;;
    login-flood) start_node; run --duration 10 --users 1 login --flooders 64 --flood-from 127.0.0.2; stop_node ;;
    login-flood-unthrottled)
      start_node --login-attempts-per-account 0 --login-attempts-per-address 0
      run --duration 10 --users 1 login --flooders 64 --flood-from 127.0.0.2; stop_node ;;
    # What the allocator keeps: the node's RSS at start, then after 16 concurrent registrations
    # (each password hash takes 19 MiB for a moment) and 2 s later.
    register-rss)
      start_node; sleep 1; r0=$(rss_kb "$PID"); curls=()
      for i in $(seq 16); do
        curl -s -o "$DATA/register-$i" -w '%{http_code}\n' -X POST -H 'content-type: application/json' \
          -d "{\"username\":\"rss$i\",\"password\":\"correct horse battery $i\"}" "$URL/api/auth/register" \
          >"$DATA/status-$i" &
        curls+=($!)
      done
      wait "${curls[@]}"; r1=$(rss_kb "$PID")
      # Without 16 hashes the figures would say nothing: every registration must have succeeded.
      ok=$(cat "$DATA"/status-* | grep -c '^201$' || true)
      [ "$ok" -eq 16 ] || { echo "register-rss: $ok of 16 registrations succeeded" >&2; exit 1; }
      sleep 2
      echo "node RSS: $r0 KiB at start, $r1 KiB after 16 concurrent registrations, $(rss_kb "$PID") KiB 2 s later"
      echo; stop_node ;;
    fanout)  start_node; run --duration 10 fanout --receivers 1000 --senders 4 --rate 50; stop_node ;;
    pairs)   start_node; run --duration 10 pairs --pairs 500 --rate 2000; stop_node ;;
    cluster-fanout)  start_cluster; run_counted --duration 10 fanout --receivers 1000 --senders 4 --rate 50; stop_cluster ;;
    cluster-durable) start_cluster; run_counted --duration 10 durable --senders 256 --window 8 --rooms 256; stop_cluster ;;
    cluster-fanout-100) start_cluster; run_counted --duration 10 fanout --receivers 1000 --senders 4 --rate 100; stop_cluster ;;
    cluster-pairs)   start_cluster; run_counted --duration 10 pairs --pairs 500 --rate 2000; stop_cluster ;;
    cluster-single)  start_cluster; run --duration 10 durable --senders 1 --window 1 --rooms 1; stop_cluster ;;
    # The broker alone: the node's producer (Ingest) at a fixed rate, no node, Redis or persister.
    kafka-produce-[0-9]*k)
      n=${s#kafka-produce-}; rate=$((${n%k} * 1000))
      start_tansu
      echo "\$ target/release/examples/produce_latency BROKERS $rate $BENCH_SECONDS 1000 300 $KAFKA_PARTITIONS"
      target/release/examples/produce_latency "$KBROKERS" "$rate" "$BENCH_SECONDS" 1000 300 "$KAFKA_PARTITIONS"; echo
      stop_tansu ;;
    # kafka-ack-Nk: N thousand msgs/s offered (1k, 3k and 10k are the documented ones).
    kafka-ack-[0-9]*k)
      n=${s#kafka-ack-}
      start_kafka; [ "$PERSISTER" != 0 ] && start_persister
      # shellcheck disable=SC2046 # paced_pairs prints arguments
      run_with_lag $(paced_pairs "${n%k}"); stop_kafka ;;
    # The same load on an embedded node (no broker, Redis or PostgreSQL): the socket path's share.
    pairs-[0-9]*k)
      n=${s#pairs-}
      # shellcheck disable=SC2046 # paced_pairs prints arguments
      start_node; run $(paced_pairs "${n%k}"); stop_node ;;
    # Closed loop, with the broker's and Redis's CPU seconds during the run.
    kafka-durable)
      start_kafka
      tp=$(tansu_pid); rp=$(pgrep -x redis-server | head -1)
      t0=$(cpu_secs_or_0 "$tp"); r0=$(cpu_secs "$rp")
      run --duration 8 durable --senders 64 --window 8 --rooms 64
      echo "tansu CPU during the run: $(echo "$(cpu_secs_or_0 "$tp") - $t0" | bc) s; redis-server: $(echo "$(cpu_secs "$rp") - $r0" | bc) s"; echo
      stop_kafka ;;
    # Sink rate: fill the topic with no persister running, then time one persister draining it.
    kafka-sink)
      start_kafka
      run --duration 10 durable --senders 256 --window 8 --rooms 256
      acked=$(curl -s "$URL/metrics" | awk '$1 ~ /^scalify_kafka_produced_total/ {s+=$2} END {print s+0}')
      start_persister
      # Timed from its first written batch (joining the group and fetching metadata excluded).
      while [ "$(persister_metric scalify_persister_rows_total | cut -d. -f1)" -eq 0 ]; do sleep 0.01; done
      t0=$(date +%s.%N); r0=$(persister_metric scalify_persister_rows_total | cut -d. -f1)
      tp=$(tansu_pid); tansu0=$(cpu_secs_or_0 "$tp")
      while [ "$(persister_metric scalify_persister_rows_total | cut -d. -f1)" -lt "$acked" ]; do sleep 0.05; done
      t1=$(date +%s.%N)
      echo "persister sink: $((acked - r0)) rows in $(echo "$t1 - $t0" | bc -l | cut -c1-6) s = $(echo "($acked - $r0) / ($t1 - $t0)" | bc) rows/s (one persister, batches of up to 2000; $acked in all)"
      echo "persister CPU: $(cpu_secs "$PPID_") s; tansu during the drain: $(echo "$(cpu_secs_or_0 "$tp") - $tansu0" | bc) s"
      n=$(persister_metric scalify_persister_batch_size_count); rows=$(persister_metric scalify_persister_batch_size_sum)
      secs=$(persister_metric scalify_persister_commit_seconds_sum)
      echo "persister batches: $n, mean $(echo "$rows / $n" | bc) messages, mean write $(echo "1000 * $secs / $n" | bc -l | cut -c1-5) ms, $(echo "$secs" | cut -c1-5) s writing in all"; echo
      stop_kafka ;;
    *) echo "unknown scenario $s" >&2; exit 2 ;;
  esac
done
