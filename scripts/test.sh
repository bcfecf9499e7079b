#!/usr/bin/env bash
# Runs every test ScalifyChat has, from a fresh clone, with no manual step:
#   web UI type check + unit tests → lint (fmt, clippy, rustdoc) → Rust unit + integration tests →
#   end-to-end tests of the real binary with the official socket.io-client and a real
#   Chromium (screenshots under test-output/screenshots/).
# It installs what it needs (Node.js + npm, the PostgreSQL and Redis clients, nginx and
# Chromium from Debian packages if absent; npm packages from the committed package-locks) and
# starts the services the tests need when the machine has none (see "services" below).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

apt_install() {
  if ! command -v apt-get >/dev/null; then
    echo "missing $* and no apt-get to install it" >&2
    exit 1
  fi
  if [ -z "${APT_UPDATED:-}" ]; then apt-get update -qq; APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

log "toolchain"
command -v cargo >/dev/null || { echo "cargo is required (https://rustup.rs)" >&2; exit 1; }
command -v node >/dev/null && command -v npm >/dev/null || apt_install nodejs npm
command -v psql >/dev/null || apt_install postgresql-client
command -v redis-server >/dev/null && command -v redis-cli >/dev/null || apt_install redis-server redis-tools
export PATH="$PATH:/usr/sbin"
command -v nginx >/dev/null || apt_install nginx-light
[ -x /usr/bin/chromium ] || apt_install chromium
# The Kafka-compatible test broker (tansu, from crates.io). The first build takes ~20 min on
# two cores; the installed binary is reused by later runs.
TANSU_VERSION=0.6.0
export TANSU_BIN="${TANSU_BIN:-$HOME/.cargo/bin/tansu}"
if ! "$TANSU_BIN" --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
  echo "installing tansu $TANSU_VERSION (Kafka-API-compatible broker for the durable pipeline's tests)"
  cargo install tansu --locked --version "$TANSU_VERSION" --features dynostore,libsql
fi
cargo --version; node --version; nginx -v; /usr/bin/chromium --version; "$TANSU_BIN" --version

# The tests use real PostgreSQL and Redis: the machine's own (as configured below), or, when
# absent, private instances started here (Debian packages) and stopped on exit.
export SCALIFY_TEST_DATABASE_URL="${SCALIFY_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
export SCALIFY_TEST_REDIS_URL="${SCALIFY_TEST_REDIS_URL:-redis://127.0.0.1:6379}"
SERVICES_DIR=""
cleanup() {
  [ -n "$SERVICES_DIR" ] || return 0
  [ -f "$SERVICES_DIR/redis.pid" ] && kill "$(cat "$SERVICES_DIR/redis.pid")" 2>/dev/null
  [ -f "$SERVICES_DIR/tansu.pid" ] && kill "$(cat "$SERVICES_DIR/tansu.pid")" 2>/dev/null
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
if [ -z "${SCALIFY_TEST_KAFKA_BROKERS:-}" ]; then
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
# Databases left behind by interrupted runs.
psql "$SCALIFY_TEST_DATABASE_URL" -qtAc "SELECT datname FROM pg_database WHERE datname LIKE 'scalify\_test\_%' OR datname LIKE 'scalify\_e2e\_%'" \
  | while read -r db; do [ -n "$db" ] && psql "$SCALIFY_TEST_DATABASE_URL" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null; done
echo "PostgreSQL: $SCALIFY_TEST_DATABASE_URL  Redis: $SCALIFY_TEST_REDIS_URL  Kafka: $SCALIFY_TEST_KAFKA_BROKERS"

log "web UI: type check and unit tests (Vitest)"
(
  cd web
  npm ci --no-audit --no-fund --loglevel=error
  npm run typecheck
  npm test
)

log "format and lint"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The API docs build without a broken link (a link to a private item, an unclosed tag).
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked

log "build"
cargo build --workspace --locked

log "Rust unit and integration tests"
if command -v cargo-nextest >/dev/null || cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
  cargo test --workspace --locked --doc
else
  cargo test --workspace --locked --no-fail-fast
fi

log "end-to-end tests (real binary; official socket.io-client; Chromium via playwright-core)"
(
  cd tests/e2e
  npm ci --no-audit --no-fund --loglevel=error
  # --test-force-exit: a file whose tests are done exits even if a failed test left a timer or
  # a socket behind (session 8: a failed test's traffic loop kept its file, and CI, waiting).
  SCALIFY_BIN="$PWD/../../target/debug/scalify" node --test --test-force-exit --test-concurrency=1 --test-reporter=spec ./*.test.js
)

log "all tests passed"
