#!/usr/bin/env bash
# The forked engineioxide (vendor/engineioxide) is upstream's published crate plus one patch,
# vendor/engineioxide.patch, whose changes vendor/engineioxide/FORK.md lists with their reasons.
#
#   scripts/fork.sh check         the vendored tree is exactly the pinned upstream version with
#                                 the patch applied (exit status 1 and the difference if not)
#   scripts/fork.sh patch         rewrite the patch from the vendored tree (after editing it)
#   scripts/fork.sh test          run upstream's own integration tests against the fork's code
#   scripts/fork.sh update VER    move to upstream version VER: download it, apply the patch,
#                                 replace the vendored tree; the conflicts, if any, are left in
#                                 *.rej files to resolve by hand, then run `patch`
#
# The upstream version is the one in vendor/engineioxide/Cargo.toml. Upstream's tests, benches,
# lockfile and VCS metadata are not carried (the fork is tested end to end; see FORK.md).
set -euo pipefail
cd "$(dirname "$0")/.."

VENDORED=vendor/engineioxide
PATCH=vendor/engineioxide.patch
# What the fork adds that is not part of the patch.
KEEP=(FORK.md)
# What the published crate holds that the fork does not carry.
DROP=(tests benches Cargo.lock Cargo.toml.orig .cargo_vcs_info.json)

usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; }

version() { sed -n 's/^version = "\(.*\)"$/\1/p' "$VENDORED/Cargo.toml" | head -1; }

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# Downloads upstream's published crate $1 into $WORK/a (without what the fork drops, unless
# $2 is "all").
upstream() {
  local v="$1"
  curl -sSfL --retry 3 -o "$WORK/crate.tar.gz" "https://static.crates.io/crates/engineioxide/engineioxide-$v.crate"
  tar xzf "$WORK/crate.tar.gz" -C "$WORK"
  rm -rf "$WORK/a"
  mv "$WORK/engineioxide-$v" "$WORK/a"
  [ "${2:-}" = all ] && return 0
  local d; for d in "${DROP[@]}"; do rm -rf "${WORK:?}/a/$d"; done
}

# The vendored tree without what the patch does not cover, in $WORK/b.
vendored() {
  rm -rf "$WORK/b"
  cp -r "$VENDORED" "$WORK/b"
  local k; for k in "${KEEP[@]}"; do rm -f "$WORK/b/$k"; done
}

case "${1:-}" in
  check)
    upstream "$(version)"
    (cd "$WORK/a" && patch -p1 -s --no-backup-if-mismatch) <"$PATCH"
    vendored
    if ! diff -ruN "$WORK/a" "$WORK/b"; then
      echo "fork: $VENDORED is not engineioxide $(version) + $PATCH (the difference is above);" \
        "after a deliberate change run scripts/fork.sh patch" >&2
      exit 1
    fi
    echo "fork: $VENDORED = engineioxide $(version) + $PATCH"
    ;;
  patch)
    upstream "$(version)"
    vendored
    # diff exits 1 when the trees differ, which they do.
    (cd "$WORK" && diff -ruN a b | sed -E 's/^(---|\+\+\+) ([ab]\/[^\t]*)\t.*/\1 \2/') >"$PATCH" || true
    echo "fork: wrote $PATCH ($(grep -c '^+++ ' "$PATCH") files)"
    ;;
  test)
    # Upstream's manifest, lockfile and tests, the fork's sources; every feature (the tests need
    # the test harness's hooks, `__test_harness`).
    upstream "$(version)" all
    rm -rf "$WORK/a/src"
    cp -r "$VENDORED/src" "$WORK/a/src"
    # Three of upstream's tests check what the fork changes on purpose (FORK.md, "Tests"):
    # a closing server closes at once (change 4 makes one last round trip first), and the
    # WebSocket heartbeat's first ping comes at once (change 2 pings one interval after the
    # handshake, as the reference server does, so the timeout lands just past the test's 500 ms).
    (cd "$WORK/a" && CARGO_TARGET_DIR="$WORK/target" cargo test --locked --tests --all-features --no-fail-fast -- \
      --skip ws_server_closing --skip polling_server_closing_pending_poll --skip ws_heartbeat_timeout)
    ;;
  update)
    new="${2:?usage: scripts/fork.sh update VERSION}"
    upstream "$new"
    if ! (cd "$WORK/a" && patch -p1 --no-backup-if-mismatch) <"$PATCH"; then
      echo "fork: the patch does not apply cleanly to $new; the *.rej files in $VENDORED show" \
        "what to redo by hand" >&2
    fi
    vendored
    for k in "${KEEP[@]}"; do cp "$VENDORED/$k" "$WORK/a/$k"; done
    rm -rf "$VENDORED"
    cp -r "$WORK/a" "$VENDORED"
    echo "fork: $VENDORED is now engineioxide $new + the patch; build, run the e2e tests, then" \
      "scripts/fork.sh patch and update FORK.md"
    ;;
  -h|--help) usage ;;
  *) usage >&2; exit 2 ;;
esac
