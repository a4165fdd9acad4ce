#!/usr/bin/env bash
# Runs every test of the project on a fresh machine: installs what the tests need when it is
# missing, then format and lint checks, the Rust test suites (unit, storage backends including a
# real S3-compatible server, the spec suite over real sockets), and the real-client tests.
#
#   scripts/test.sh            # everything
#   SKIP_CLIENTS=1 scripts/test.sh   # skip the real-client tests (they need root)
#
# Prints a final line `N passed, N failed` over the suites it ran and exits non-zero on any failure.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export CARGO_TERM_COLOR=never

passed=0
failed=0
failures=()
step() {
  local name=$1
  shift
  echo "=== $name: $*"
  local t0=$SECONDS
  if "$@"; then
    passed=$((passed + 1))
    echo "=== $name: ok ($((SECONDS - t0)) s)"
  else
    failed=$((failed + 1))
    failures+=("$name")
    echo "=== $name: FAILED ($((SECONDS - t0)) s)"
  fi
}

step deps bash scripts/install-test-deps.sh
step fmt cargo fmt --all -- --check
step clippy cargo clippy --workspace --all-targets --locked -- -D warnings
step build cargo build --release --locked -p registry -p conformance --bins
step cargo-test cargo test --workspace --locked
step spec-s3 env CONFORMANCE_STORAGE=s3 cargo test --locked -p conformance --test spec
step metrics bash conformance/metrics/check.sh "$ROOT/target/release/registry"
step crash-soak target/release/crash-soak --registry "$ROOT/target/release/registry" --rounds 2 --seconds 60
step gc-soak target/release/gc-soak --registry "$ROOT/target/release/registry" --seconds 20
step full-disk bash conformance/reliability/full-disk.sh "$ROOT/target/release/registry"
step s3-replicas target/release/s3-replicas --registry "$ROOT/target/release/registry"
step s3-memory target/release/s3-memory --registry "$ROOT/target/release/registry"
step s3-outage target/release/s3-outage --registry "$ROOT/target/release/registry"
if [ -z "${SKIP_CLIENTS:-}" ]; then
  step clients bash conformance/clients/run.sh "$ROOT/target/release/registry"
  step clients-s3 env CLIENTS_STORAGE=s3 bash conformance/clients/run.sh "$ROOT/target/release/registry"
fi
for extra in deploy/tests/run.sh conformance/tls/run.sh; do
  if [ -f "$extra" ]; then
    step "$(dirname "$extra")" bash "$extra" "$ROOT/target/release/registry"
  fi
done

if [ "${#failures[@]}" -gt 0 ]; then
  echo "failed suites: ${failures[*]}"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
