#!/usr/bin/env bash
# Runs every test ScalifyChat has, from a fresh clone, with no manual step:
#   lint (fmt, clippy) → Rust unit + integration tests → end-to-end tests of the real binary
#   with the official socket.io-client.
# It installs what it needs (Node.js + npm from Debian packages if absent; npm packages from
# tests/e2e/package-lock.json) and starts the services the tests need.
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
cargo --version; node --version

log "format and lint"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

log "build"
cargo build --workspace --locked

log "Rust unit and integration tests"
if command -v cargo-nextest >/dev/null || cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
  cargo test --workspace --locked --doc
else
  cargo test --workspace --locked --no-fail-fast
fi

log "end-to-end tests (real binary, official socket.io-client)"
(
  cd tests/e2e
  npm ci --no-audit --no-fund --loglevel=error
  SCALIFY_BIN="$PWD/../../target/debug/scalify" node --test --test-concurrency=1 --test-reporter=spec ./*.test.js
)

log "all tests passed"
