#!/usr/bin/env bash
# Runs ScalifyChat's tests from a fresh clone, with no manual step.
#
#   ./scripts/test.sh                  every stage, in order (what CI runs)
#   ./scripts/test.sh e2e browser      only those stages
#   ./scripts/test.sh --stress [stage…] the same with one busy process per core, as on a
#                                      machine doing other work (the suite must pass either way)
#   ./scripts/test.sh --help
#
# Stages:
#   web      the web app's type check and unit tests (Vitest)
#   lint     cargo fmt --check, clippy -D warnings, rustdoc -D warnings, the engineioxide fork
#            is its upstream version plus vendor/engineioxide.patch (scripts/fork.sh check)
#   rust     Rust unit and integration tests (store contract on SQLite and PostgreSQL, spawn_app
#            over real HTTP, the durable pipeline against a real Kafka-API broker)
#   e2e      the real binary with the official socket.io-client, one node (tests/e2e/*.test.js
#            but the ones below)
#   browser  the web app in Debian's Chromium driven by playwright-core (screenshots under
#            test-output/screenshots/)
#   cluster  three nodes sharing PostgreSQL and Redis, and scripts/cluster.sh behind nginx
#   kafka    durable mode end to end (Kafka-API broker, Redis, PostgreSQL)
#
# It installs what it needs (Node.js + npm, the PostgreSQL and Redis clients, nginx and Chromium
# from Debian packages if absent; the tansu broker with cargo; npm packages from the committed
# package-locks; moto, an S3-compatible server, from PyPI) and starts the services the tests
# need when the machine has none.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

ALL_STAGES=(web lint rust e2e browser cluster kafka)
STRESS=""
STAGES=()
for arg in "$@"; do
  case "$arg" in
    --stress) STRESS=1 ;;
    -h|--help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    web|lint|rust|e2e|browser|cluster|kafka) STAGES+=("$arg") ;;
    *) echo "unknown stage or option: $arg (try --help)" >&2; exit 2 ;;
  esac
done
[ ${#STAGES[@]} -gt 0 ] || STAGES=("${ALL_STAGES[@]}")
wants() { local s; for s in "${STAGES[@]}"; do [ "$s" = "$1" ] && return 0; done; return 1; }
wants_any() { local s; for s in "$@"; do wants "$s" && return 0; done; return 1; }

log() { printf '\n==> %s\n' "$*"; }

apt_install() {
  if ! command -v apt-get >/dev/null; then
    echo "missing $* and no apt-get to install it" >&2
    exit 1
  fi
  if [ -z "${APT_UPDATED:-}" ]; then apt-get update -qq; APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

log "toolchain (stages: ${STAGES[*]}${STRESS:+, under stress})"
command -v cargo >/dev/null || { echo "cargo is required (https://rustup.rs)" >&2; exit 1; }
command -v node >/dev/null && command -v npm >/dev/null || apt_install nodejs npm
command -v psql >/dev/null || apt_install postgresql-client
command -v redis-server >/dev/null && command -v redis-cli >/dev/null || apt_install redis-server redis-tools
export PATH="$PATH:/usr/sbin"
command -v nginx >/dev/null || apt_install nginx-light
[ -x /usr/bin/chromium ] || ! wants browser || apt_install chromium
# The Kafka-compatible test broker (tansu, from crates.io). The first build takes ~20 min on
# two cores; the installed binary is reused by later runs.
TANSU_VERSION=0.6.0
export TANSU_BIN="${TANSU_BIN:-$HOME/.cargo/bin/tansu}"
if wants_any rust kafka && ! "$TANSU_BIN" --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
  echo "installing tansu $TANSU_VERSION (Kafka-API-compatible broker for the durable pipeline's tests)"
  cargo install tansu --locked --version "$TANSU_VERSION" --features dynostore,libsql
fi
cargo --version; node --version; nginx -v

# The tests use real PostgreSQL and Redis: the machine's own (as configured below), or, when
# absent, private instances started here (Debian packages) and stopped on exit.
export SCALIFY_TEST_DATABASE_URL="${SCALIFY_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
export SCALIFY_TEST_REDIS_URL="${SCALIFY_TEST_REDIS_URL:-redis://127.0.0.1:6379}"
SERVICES_DIR=""
BUSY_PIDS=()
cleanup() {
  local pid
  for pid in "${BUSY_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  [ -n "$SERVICES_DIR" ] || return 0
  [ -f "$SERVICES_DIR/redis.pid" ] && kill "$(cat "$SERVICES_DIR/redis.pid")" 2>/dev/null
  [ -f "$SERVICES_DIR/tansu.pid" ] && kill "$(cat "$SERVICES_DIR/tansu.pid")" 2>/dev/null
  [ -f "$SERVICES_DIR/moto.pid" ] && kill "$(cat "$SERVICES_DIR/moto.pid")" 2>/dev/null
  [ -d "$SERVICES_DIR/pg" ] && su postgres -s /bin/sh -c "$PG_BIN/pg_ctl -D $SERVICES_DIR/pg -m fast stop" >/dev/null 2>&1
  rm -rf "$SERVICES_DIR"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
services_dir() {
  [ -n "$SERVICES_DIR" ] || { SERVICES_DIR="$(mktemp -d)"; chmod 755 "$SERVICES_DIR"; }
}

log "services"
if ! psql "$SCALIFY_TEST_DATABASE_URL" -qtAc 'SELECT 1' >/dev/null 2>&1; then
  echo "PostgreSQL not reachable at $SCALIFY_TEST_DATABASE_URL: starting a private one"
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || apt_install postgresql
  PG_BIN="$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)")"
  services_dir
  port="$(free_port)"
  chown postgres "$SERVICES_DIR" 2>/dev/null || true
  su postgres -s /bin/sh -c "$PG_BIN/initdb -D $SERVICES_DIR/pg -A trust -U postgres" >/dev/null
  su postgres -s /bin/sh -c "$PG_BIN/pg_ctl -D $SERVICES_DIR/pg -l $SERVICES_DIR/pg.log -o '-p $port -k $SERVICES_DIR -c listen_addresses=127.0.0.1' -w start" >/dev/null
  export SCALIFY_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
fi
if [ "$(redis-cli -u "$SCALIFY_TEST_REDIS_URL" ping 2>/dev/null)" != PONG ]; then
  echo "Redis not reachable at $SCALIFY_TEST_REDIS_URL: starting a private one"
  services_dir
  port="$(free_port)"
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
    --pidfile "$SERVICES_DIR/redis.pid" --logfile "$SERVICES_DIR/redis.log"
  export SCALIFY_TEST_REDIS_URL="redis://127.0.0.1:$port"
  for _ in $(seq 1 50); do [ "$(redis-cli -u "$SCALIFY_TEST_REDIS_URL" ping 2>/dev/null)" = PONG ] && break; sleep 0.1; done
fi
# Kafka: the tests that need a broker they do not stop share this one (each uses its own
# topics and consumer groups); drills that kill or restart a broker start their own.
if wants_any rust kafka && [ -z "${SCALIFY_TEST_KAFKA_BROKERS:-}" ]; then
  services_dir
  port="$(free_port)"
  # exec: the recorded pid is the broker's own, so cleanup stops it.
  (cd "$SERVICES_DIR" && RUST_LOG=warn exec "$TANSU_BIN" broker --listener-url "tcp://127.0.0.1:$port" \
    --advertised-listener-url "tcp://127.0.0.1:$port" --storage-engine memory://tansu/ \
    >"$SERVICES_DIR/tansu.log" 2>&1) &
  echo $! >"$SERVICES_DIR/tansu.pid"
  export SCALIFY_TEST_KAFKA_BROKERS="127.0.0.1:$port"
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
fi
# S3-compatible object storage for the attachments' tests: moto's server (PyPI), in memory,
# started here on a free port; each test makes its own bucket.
MOTO_VERSION=5.2.5
if wants_any rust cluster && [ -z "${SCALIFY_TEST_S3_ENDPOINT:-}" ]; then
  if ! python3 -c "import moto, sys; sys.exit(moto.__version__ != '$MOTO_VERSION')" 2>/dev/null; then
    echo "installing moto $MOTO_VERSION (S3-compatible server for the attachments' tests)"
    python3 -m pip install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
  fi
  services_dir
  port="$(free_port)"
  (cd "$SERVICES_DIR" && exec python3 -m moto.server -H 127.0.0.1 -p "$port" >"$SERVICES_DIR/moto.log" 2>&1) &
  echo $! >"$SERVICES_DIR/moto.pid"
  export SCALIFY_TEST_S3_ENDPOINT="http://127.0.0.1:$port"
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
fi
# Databases left behind by interrupted runs.
psql "$SCALIFY_TEST_DATABASE_URL" -qtAc "SELECT datname FROM pg_database WHERE datname LIKE 'scalify\_test\_%' OR datname LIKE 'scalify\_e2e\_%'" \
  | while read -r db; do [ -n "$db" ] && psql "$SCALIFY_TEST_DATABASE_URL" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null; done
echo "PostgreSQL: $SCALIFY_TEST_DATABASE_URL  Redis: $SCALIFY_TEST_REDIS_URL  Kafka: ${SCALIFY_TEST_KAFKA_BROKERS:-(not needed)}  S3: ${SCALIFY_TEST_S3_ENDPOINT:-(not needed)}"

if [ -n "$STRESS" ]; then
  # One busy process per core for the whole run: every wait in the tests must be for a
  # condition, with a deadline generous enough for a loaded machine.
  for _ in $(seq 1 "$(nproc)"); do sha256sum /dev/zero & BUSY_PIDS+=("$!"); done
  echo "stress: ${#BUSY_PIDS[@]} busy processes (${BUSY_PIDS[*]})"
fi

if wants web; then
  log "web: type check and unit tests (Vitest)"
  (
    cd web
    npm ci --no-audit --no-fund --loglevel=error
    npm run typecheck
    npm test
  )
fi

if wants lint; then
  log "lint: format, clippy, rustdoc"
  cargo fmt --all -- --check
  cargo clippy --workspace --all-targets --locked -- -D warnings
  # The API docs build without a broken link (a link to a private item, an unclosed tag).
  RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked
  # The vendored engineioxide is exactly its pinned upstream version plus the fork's patch.
  ./scripts/fork.sh check
fi

if wants rust; then
  log "rust: unit and integration tests"
  if command -v cargo-nextest >/dev/null || cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast
    cargo test --workspace --locked --doc
  else
    cargo test --workspace --locked --no-fail-fast
  fi
fi

# The end-to-end stages run the real binary with Node's test runner. --test-force-exit: a file
# whose tests are done exits even if a failed test left a timer or a socket behind;
# --test-timeout: a test that hangs fails after ten minutes. A failure never holds the run.
e2e_files() {
  case "$1" in
    browser) echo browser.test.js ;;
    cluster) echo cluster.test.js lb.test.js ;;
    kafka) echo kafka.test.js ;;
    e2e) (cd "$REPO/tests/e2e" && ls ./*.test.js | grep -v -e browser -e cluster -e '/lb\.' -e kafka) ;;
  esac
}
E2E_STAGES=()
for s in e2e browser cluster kafka; do wants "$s" && E2E_STAGES+=("$s"); done
if [ ${#E2E_STAGES[@]} -gt 0 ]; then
  log "build the binary for the end-to-end stages"
  cargo build --locked --bin scalify
  (cd tests/e2e && npm ci --no-audit --no-fund --loglevel=error)
  [ -x /usr/bin/chromium ] && /usr/bin/chromium --version
  for s in "${E2E_STAGES[@]}"; do
    log "$s: end to end (real binary; official socket.io-client)"
    files=$(e2e_files "$s")
    # An empty list would make the test runner run every file of the directory.
    [ -n "$files" ] || { echo "no test files for stage $s" >&2; exit 1; }
    # shellcheck disable=SC2046
    (cd tests/e2e && SCALIFY_BIN="$PWD/../../target/debug/scalify" node --test --test-force-exit --test-timeout=600000 \
      --test-concurrency=1 --test-reporter=spec $files)
  done
fi

log "all tests passed (stages: ${STAGES[*]}${STRESS:+, under stress})"
