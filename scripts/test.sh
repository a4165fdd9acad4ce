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
# One release build, statically linked (glibc with crt-static), serves every suite below and is
# also the container image's binary (deploy/image/build.sh --binary): one build instead of two.
TARGET=x86_64-unknown-linux-gnu
BIN="$ROOT/target/$TARGET/release"
REG="$BIN/registry"
step build env RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --release --locked --target "$TARGET" -p registry -p conformance --bins
# The deps step installed moto_server and Azurite: their storage cases must run, not skip.
step cargo-test env STORAGE_TEST_REQUIRE_S3=1 STORAGE_TEST_REQUIRE_AZURE=1 \
  cargo test --workspace --locked
step spec-s3 env CONFORMANCE_STORAGE=s3 cargo test --locked -p conformance --test spec
step metrics bash conformance/metrics/check.sh "$REG"
step crash-soak "$BIN/crash-soak" --registry "$REG" --rounds 2 --seconds 60
step gc-soak "$BIN/gc-soak" --registry "$REG" --seconds 20
step full-disk bash conformance/reliability/full-disk.sh "$REG"
step s3-replicas "$BIN/s3-replicas" --registry "$REG"
step s3-memory "$BIN/s3-memory" --registry "$REG"
step s3-outage "$BIN/s3-outage" --registry "$REG"
if [ -z "${SKIP_CLIENTS:-}" ]; then
  step clients bash conformance/clients/run.sh "$REG"
  step clients-s3 env CLIENTS_STORAGE=s3 bash conformance/clients/run.sh "$REG"
fi
for extra in deploy/tests/run.sh conformance/tls/run.sh; do
  if [ -f "$extra" ]; then
    step "$(dirname "$extra")" bash "$extra" "$REG"
  fi
done

if [ "${#failures[@]}" -gt 0 ]; then
  echo "failed suites: ${failures[*]}"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
