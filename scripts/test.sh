#!/usr/bin/env bash
# Runs the project's tests on a fresh machine: installs what the tests need when it is missing,
# then the suites of the table below (format and lint checks, the Rust test suites, the spec suite
# over real sockets, the reliability programs, the real-client and TLS tests).
#
#   scripts/test.sh                  # every suite (what CI runs: .ci/run)
#   scripts/test.sh SUITE...         # only these suites (after deps, and the build they need)
#   scripts/test.sh --list           # the suites, one a line, with what each checks
#   SKIP_CLIENTS=1 scripts/test.sh   # every suite but the real-client ones (they need root)
#
# Prints `=== NAME: ok` or `=== NAME: FAILED` per suite and a final line `N passed, N failed` over
# the suites it ran; exits non-zero on any failure.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export CARGO_TERM_COLOR=never

# One release build, statically linked (glibc with crt-static), serves every suite that runs a
# binary and is also the container image's binary (deploy/image/build.sh --binary). It lands in
# target/x86_64-unknown-linux-gnu/release (the target is named so that RUSTFLAGS do not reach
# build scripts and proc macros); every path in the README and the suites' defaults is this one.
TARGET=x86_64-unknown-linux-gnu
BIN="$ROOT/target/$TARGET/release"
REG="$BIN/registry"

# ---- The suites: one `suite` line each, run in this order. ----
# suite NAME NEEDS WHAT COMMAND...
#   NEEDS: `build` when the command runs the release binaries ($REG, $BIN/...), else `-`.
#   WHAT:  what the suite checks (shown by --list).
#   COMMAND: its words are expanded when the suite runs, so '$REG' and '$BIN' (single-quoted)
#   name the build above. The suites in CLIENT_SUITES are skipped by SKIP_CLIENTS=1.
NAMES=()
declare -A NEEDS WHAT COMMAND
suite() {
  NAMES+=("$1")
  NEEDS[$1]=$2
  WHAT[$1]=$3
  shift 3
  COMMAND[${NAMES[-1]}]="$*"
}
suite fmt -     "code is formatted (cargo fmt --check)" cargo fmt --all -- --check
suite clippy -  "no lint warnings in any crate or target" cargo clippy --workspace --all-targets --locked -- -D warnings
suite build -   "the static release build of registry and the test programs" \
  env RUSTFLAGS='"-C target-feature=+crt-static"' cargo build --release --locked --target "$TARGET" -p registry -p conformance --bins
# The deps step installed moto_server and Azurite: their storage cases must run, not skip.
suite cargo-test - "unit, property, storage backend (fs, S3, Azure) and spec tests of every crate" \
  env STORAGE_TEST_REQUIRE_S3=1 STORAGE_TEST_REQUIRE_AZURE=1 cargo test --workspace --locked
suite spec-s3 - "the spec suite again with every server on S3 storage (moto)" \
  env CONFORMANCE_STORAGE=s3 cargo test --locked -p conformance --test spec
suite metrics build   "/metrics passes promtool check metrics and counts real traffic" bash conformance/metrics/check.sh '$REG'
suite crash-soak build "SIGKILL under push load loses no acknowledged image (2 rounds of 60 s)" '$BIN/crash-soak' --registry '$REG' --rounds 2 --seconds 60
suite gc-soak build   "garbage collection every second under push/pull/delete load keeps every live image" '$BIN/gc-soak' --registry '$REG' --seconds 20
suite full-disk build "on a full disk pushes fail cleanly, nothing partial is left, uploads resume (root)" bash conformance/reliability/full-disk.sh '$REG'
suite s3-replicas build "three replicas on one S3 bucket serve one registry" '$BIN/s3-replicas' --registry '$REG'
suite s3-memory build "1 GiB pushed (streamed, chunked) and pulled on S3 storage in bounded memory" '$BIN/s3-memory' --registry '$REG'
suite s3-outage build "an S3 outage gives 503s, loses nothing, and the registry recovers" '$BIN/s3-outage' --registry '$REG'
suite clients build   "skopeo, buildah, podman, containerd and ORAS push and pull (root)" bash conformance/clients/run.sh '$REG'
suite clients-s3 build "the real-client tests on S3 storage (root)" env CLIENTS_STORAGE=s3 bash conformance/clients/run.sh '$REG'
suite deploy build    "the kustomize bases and the node setup (deploy/tests)" bash deploy/tests/run.sh '$REG'
suite tls build       "registry cert, HTTPS, HTTP/2, reload, mutual TLS with real clients (root)" bash conformance/tls/run.sh '$REG'
suite runtimes build  "containerd 1.6/1.7/2.1 node setup matrix without restarts, the readiness probe, the BuildKit kontrakt (root)" bash deploy/tests/runtimes.sh '$REG'
suite auth build      "access control: htpasswd and ServiceAccount tokens with real clients, rules, token flow, hostile auth input (root)" bash conformance/auth/run.sh '$REG'
suite events build    "a Distribution config.yml runs unchanged; build events arrive once through outages, SIGKILL and replicas" python3 conformance/events/run.py '$REG'
suite proxy build     "pull-through cache: token and Basic upstreams, containerd ?ns=, skopeo/podman/buildah, one fill per blob (root)" bash conformance/proxy/run.sh '$REG'
CLIENT_SUITES=" clients clients-s3 runtimes auth proxy "

if [ "${1:-}" = --list ]; then
  for n in "${NAMES[@]}"; do
    printf '%-12s %s\n' "$n" "${WHAT[$n]}"
  done
  exit 0
fi
if [ "${1:-}" = -h ] || [ "${1:-}" = --help ]; then
  sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
  exit 0
fi

# The suites to run: those named, in the table's order, or all.
chosen=()
if [ "$#" -gt 0 ]; then
  for want in "$@"; do
    if [ -z "${WHAT[$want]+x}" ]; then
      echo "unknown suite '$want'; scripts/test.sh --list names them" >&2
      exit 2
    fi
  done
  for n in "${NAMES[@]}"; do
    for want in "$@"; do
      [ "$n" = "$want" ] && chosen+=("$n") && break
    done
  done
  # A suite that runs the binaries gets the build first, unless it was named too.
  for n in "${chosen[@]}"; do
    if [ "${NEEDS[$n]}" = build ] && [[ " ${chosen[*]} " != *" build "* ]]; then
      chosen=(build "${chosen[@]}")
      break
    fi
  done
else
  for n in "${NAMES[@]}"; do
    if [ -n "${SKIP_CLIENTS:-}" ] && [[ $CLIENT_SUITES == *" $n "* ]]; then
      continue
    fi
    chosen+=("$n")
  done
fi

passed=0
failed=0
failures=()
step() {
  local name=$1
  shift
  # Expands '$REG' and '$BIN' and splits the words as the shell would.
  eval "set -- $*"
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

# Always first, whichever suites run: installs what is missing (idempotent, quick when nothing is).
step deps bash scripts/install-test-deps.sh
for n in "${chosen[@]}"; do
  step "$n" "${COMMAND[$n]}"
done

if [ "${#failures[@]}" -gt 0 ]; then
  echo "failed suites: ${failures[*]}"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
