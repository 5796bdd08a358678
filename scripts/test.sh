#!/usr/bin/env bash
# Installs everything the tests need (idempotent), starts a throwaway API server and AWS
# emulator on loopback, runs the whole test suite against them, and stops them.
set -euo pipefail
source "$(dirname "$0")/testenv.sh"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$TSO_CACHE/target}

testenv_install
trap testenv_down EXIT
testenv_up
cd "$TSO_ROOT"
if ! cargo test --locked "$@"; then
  log "tests failed; last lines of each operator log:"
  for f in "$TSO_RUN"/operator-*.log; do
    [ -f "$f" ] && { echo "--- $f"; tail -n 20 "$f"; }
  done
  exit 1
fi
# After the whole suite (not a filtered run): every right the chart grants was used by it.
if [ $# -eq 0 ]; then
  cargo test --locked --test rbac_usage -- --ignored
fi
