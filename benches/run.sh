#!/usr/bin/env bash
# Side-by-side benchmark of our registry and CNCF Distribution 2.8 (docker-registry) on loopback.
#
#   benches/run.sh [--quick] [--no-build] [--only Scenario,...] [--out FILE] [--main] [--s3] [--tls]
#                  [--auth] [--proxy] [--link-mbit N]
#
# Sections: --main (ours vs Distribution, below), --s3 (push/pull through the S3 backend on
# s3s-fs, one replica vs three replicas on one bucket with requests spread round robin), --tls
# (push/pull over plain HTTP, HTTPS with HTTP/1.1 and HTTPS with HTTP/2), --auth (GET manifest
# and HEAD blob with no auth, with a bearer token, with an ignored header of the token's length
# and with Basic credentials on every request),
# --proxy (an image pulled through the pull-through cache, cold and warm, beside direct and local
# pulls, and through Distribution as a proxy; then cold pulls through the cache and direct with
# the upstream reached over an emulated link of --link-mbit Mbit/s, default 1000, 0 for none).
# Without any section flag all run; with some, only those. --only applies to --main.
#
# --no-build uses the binaries already built (the build can take minutes on a busy machine; the
# time limits below are for the benchmark itself). The registry measured is the statically
# linked build that scripts/test.sh makes and the container image ships
# (target/x86_64-unknown-linux-gnu/release/registry); regbench is an ordinary release build.
# Builds `registry` and `regbench` in release, measures start-to-ready time of both servers (ours
# also with 10,000 repositories in storage), starts ours (fsync on), ours (fsync off) and
# Distribution, each on fresh storage in a temp folder, runs every scenario against each (see
# BENCHMARKS.md), and writes the table to target/bench-results.md (and .json).
# Full run: about 10 minutes on 2 cores (--auth and --proxy add about 3); --quick with every
# section: about 5 minutes. Traffic goes to 127.0.0.1 only, on ports 16100-16199 (--main),
# 22100-22299 (--s3, --tls), 22301-22306 (--auth) and 22401-22403 (--proxy; its link relay
# takes an ephemeral port).
# Every server started here is stopped on exit.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
QUICK=""
ONLY=""
BUILD=1
OUT="$ROOT/target/bench-results.md"
SEC_MAIN=0; SEC_S3=0; SEC_TLS=0; SEC_AUTH=0; SEC_PROXY=0
LINK_MBIT=1000
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK="--quick" ;;
    --no-build) BUILD=0 ;;
    --only) ONLY="$2"; shift ;;
    --out) OUT="$2"; shift ;;
    --main) SEC_MAIN=1 ;;
    --s3) SEC_S3=1 ;;
    --tls) SEC_TLS=1 ;;
    --auth) SEC_AUTH=1 ;;
    --proxy) SEC_PROXY=1 ;;
    --link-mbit) LINK_MBIT="$2"; shift ;;
    -h|--help) sed -n '2,29p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done

if [ $SEC_MAIN$SEC_S3$SEC_TLS$SEC_AUTH$SEC_PROXY = 00000 ]; then
  SEC_MAIN=1; SEC_S3=1; SEC_TLS=1; SEC_AUTH=1; SEC_PROXY=1
fi

PORT_OURS=16101
PORT_NOFSYNC=16102
PORT_DIST=16103
PORT_FLOOR=16104
PORT_START_OURS=16110
PORT_START_DIST=16111
START_RUNS=5
[ -n "$QUICK" ] && START_RUNS=3
SEED_REPOS=10000

# The peers (Distribution, s3s-fs) come from the test command's installer, which installs what
# is missing and is a quick no-op otherwise.
NEED_DIST=$((SEC_MAIN + SEC_AUTH + SEC_PROXY))
if { [ $NEED_DIST -gt 0 ] && ! command -v docker-registry >/dev/null; } ||
  { [ $SEC_S3 = 1 ] && ! command -v s3s-fs >/dev/null; }; then
  echo "== installing what the benchmark needs (scripts/install-test-deps.sh)" >&2
  bash "$ROOT/scripts/install-test-deps.sh" >&2
  export PATH="$PATH:${CARGO_HOME:-$HOME/.cargo}/bin"
fi
[ $NEED_DIST = 0 ] || command -v docker-registry >/dev/null || {
  echo "docker-registry (CNCF Distribution) is still missing: apt-get install -y docker-registry" >&2
  exit 1
}
[ $SEC_S3 = 0 ] || command -v s3s-fs >/dev/null || {
  echo "s3s-fs is still missing: cargo install s3s-fs" >&2
  exit 1
}
if [ $SEC_AUTH = 1 ] && ! command -v htpasswd >/dev/null; then
  echo "== installing apache2-utils (htpasswd -B)" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q apache2-utils >&2 || {
    echo "htpasswd is missing: apt-get install -y apache2-utils" >&2
    exit 1
  }
fi

T0=$(date +%s)
WORK="$(mktemp -d "${TMPDIR:-/tmp}/regbench.XXXXXX")"
PIDS=()
cleanup() {
  local rc=$?
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    # Gone or a zombie (exited, not yet reaped) both count as stopped.
    for _ in $(seq 1 50); do
      case "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" in ''|Z) break ;; esac
      sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ $rc -ne 0 ]; then
    for log in "$WORK"/*.log; do
      [ -f "$log" ] || continue
      echo "--- last lines of $(basename "$log")" >&2
      tail -n 20 "$log" >&2
    done
  fi
  rm -rf "$WORK"
  case "${SEED_DIR:-}" in /dev/shm/regbench-seed.*) rm -rf "$SEED_DIR" ;; esac
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

phase() { echo "== [$(( $(date +%s) - T0 )) s] $*" >&2; }

# Appends a section's heading and its note to the results file.
section() { # title note
  printf '\n### %s\n\n- %s\n\n' "$1" "$2" >> "$OUT"
}

if [ $BUILD = 1 ]; then
  phase "building registry and regbench (release)"
  (cd "$ROOT" &&
    env RUSTFLAGS="-C target-feature=+crt-static" cargo build --release \
      --target x86_64-unknown-linux-gnu -p registry --bin registry &&
    cargo build --release -p benches --bin regbench) >&2
  T0=$(date +%s) # the limits are for the benchmark, not for a build that may wait on other work
fi
# Private copies: other work may rebuild target/release while the benchmark runs.
mkdir -p "$WORK/bin"
cp "$ROOT/target/x86_64-unknown-linux-gnu/release/registry" "$ROOT/target/release/regbench" \
  "$WORK/bin/"
REGISTRY="$WORK/bin/registry"
REGBENCH="$WORK/bin/regbench"

dist_config() { # port storage-dir [extra YAML] -> config file path
  local cfg="$WORK/dist-$1.yml"
  cat > "$cfg" <<YML
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $2
  cache:
    blobdescriptor: inmemory
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$1
${3:-}
YML
  echo "$cfg"
}

wait_ready() { # url pid name
  for _ in $(seq 1 300); do
    if ! kill -0 "$2" 2>/dev/null; then echo "$3 exited during start-up" >&2; return 1; fi
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$1")" = 200 ] && return 0
    sleep 0.1
  done
  echo "$3 not ready after 30 s" >&2
  return 1
}

DIST_VERSION=""
[ $NEED_DIST = 0 ] || DIST_VERSION="$(docker-registry --version 2>/dev/null | head -1)"
mkdir -p "$(dirname "$OUT")"
{
  echo "## Results $(date -u '+%Y-%m-%d %H:%M UTC')${QUICK:+ (quick mode)}"
  echo
  echo "- machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(free -g | awk '/Mem:/{print $2}') GiB RAM, kernel $(uname -r), storage on $(df -T "$WORK" | awk 'NR==2{print $2}')"
  echo "- ours: $("$REGISTRY" --version 2>/dev/null || echo registry) at $(cd "$ROOT" && git describe --always --dirty 2>/dev/null || echo '?')${DIST_VERSION:+; distribution: $DIST_VERSION}"
  echo "- MB = 10^6 bytes; server CPU = utime+stime from /proc/<pid>/stat around the timed part; peak RSS = VmHWM, reset before each scenario"
  echo
} > "$OUT"

if [ $SEC_MAIN = 1 ]; then
  STARTUP="$WORK/startup.json"
  phase "start-to-ready times"
  # The seeded storage has about 140,000 small files; creating and deleting them on a busy disk
  # takes minutes, so it lives on tmpfs when there is room (the row label says where).
  SEED_DIR="$WORK/start-10k"; SEED_WHERE="$(df -T "$WORK" | awk 'NR==2{print $2}')"
  if [ -d /dev/shm ] && [ "$(df -Pk /dev/shm | awk 'NR==2{print $4}')" -gt 2097152 ]; then
    SEED_DIR="$(mktemp -d /dev/shm/regbench-seed.XXXXXX)"; SEED_WHERE=tmpfs
  fi
  mkdir -p "$WORK/start-empty" "$WORK/start-dist"
  "$REGBENCH" startup --server ours --label "empty storage" --addr 127.0.0.1:$PORT_START_OURS \
    --path /readyz --runs $START_RUNS --out "$STARTUP" -- \
    "$REGISTRY" serve --listen 127.0.0.1:$PORT_START_OURS --storage "$WORK/start-empty" --log-level warn
  "$REGBENCH" startup --server distribution --label "empty storage" --addr 127.0.0.1:$PORT_START_DIST \
    --path /v2/ --runs $START_RUNS --out "$STARTUP" -- \
    docker-registry serve "$(dist_config $PORT_START_DIST "$WORK/start-dist")"
  "$REGBENCH" seed --storage "$SEED_DIR" --repos $SEED_REPOS
  "$REGBENCH" startup --server ours --label "$SEED_REPOS repositories in storage ($SEED_WHERE)" \
    --addr 127.0.0.1:$PORT_START_OURS --path /readyz --runs $START_RUNS --out "$STARTUP" -- \
    "$REGISTRY" serve --listen 127.0.0.1:$PORT_START_OURS --storage "$SEED_DIR" --log-level warn
  "$REGBENCH" na --server distribution --label "$SEED_REPOS repositories in storage ($SEED_WHERE)" \
    --why "not measured" --out "$STARTUP"
  rm -rf "$SEED_DIR"

  phase "starting servers"
  mkdir -p "$WORK/ours" "$WORK/ours-nofsync" "$WORK/dist"
  "$REGISTRY" serve --listen 127.0.0.1:$PORT_OURS --storage "$WORK/ours" --fsync true \
    --log-level warn >"$WORK/ours.log" 2>&1 &
  PID_OURS=$!; PIDS+=("$PID_OURS")
  "$REGISTRY" serve --listen 127.0.0.1:$PORT_NOFSYNC --storage "$WORK/ours-nofsync" --fsync false \
    --log-level warn >"$WORK/ours-nofsync.log" 2>&1 &
  PID_NOFSYNC=$!; PIDS+=("$PID_NOFSYNC")
  # `env` execs the server, so $! is the server's own pid.
  env -u AWS_CA_BUNDLE docker-registry serve "$(dist_config $PORT_DIST "$WORK/dist")" \
    >"$WORK/distribution.log" 2>&1 &
  PID_DIST=$!; PIDS+=("$PID_DIST")
  wait_ready "http://127.0.0.1:$PORT_OURS/readyz" "$PID_OURS" ours
  wait_ready "http://127.0.0.1:$PORT_NOFSYNC/readyz" "$PID_NOFSYNC" ours-nofsync
  # The push floor: the least work a blob push needs (benches/src/floor.rs), its own process.
  mkdir -p "$WORK/floor"
  "$REGBENCH" floor --listen 127.0.0.1:$PORT_FLOOR --dir "$WORK/floor" --fsync true \
    >"$WORK/floor.log" 2>&1 &
  PID_FLOOR=$!; PIDS+=("$PID_FLOOR")
  wait_ready "http://127.0.0.1:$PORT_FLOOR/v2/" "$PID_FLOOR" floor
  wait_ready "http://127.0.0.1:$PORT_DIST/v2/" "$PID_DIST" distribution
  sleep 1 # let both settle before reading idle RSS


  phase "scenarios"
  "$REGBENCH" run $QUICK ${ONLY:+--only "$ONLY"} --clk-tck "$(getconf CLK_TCK)" \
    --server "ours=127.0.0.1:$PORT_OURS,$PID_OURS" \
    --server "distribution=127.0.0.1:$PORT_DIST,$PID_DIST" \
    --server "ours-nofsync=127.0.0.1:$PORT_NOFSYNC,$PID_NOFSYNC,push-only" \
    --server "floor=127.0.0.1:$PORT_FLOOR,$PID_FLOOR,blob-pushes-only" \
    --title "ours=ours (fsync on)" --title "distribution=Distribution 2.8.2" \
    --title "ours-nofsync=ours (fsync off)" \
    --title "floor=push floor (fsync on)" \
    --merge "$STARTUP" --out "$OUT" --json "${OUT%.md}.json"

fi

# Starts `registry serve ARGS...` in the background with its log in $WORK/NAME.log; sets $LAST_PID.
start_ours() { # name args...
  local name=$1; shift
  env -u AWS_CA_BUNDLE "$REGISTRY" serve --log-level warn "$@" >"$WORK/$name.log" 2>&1 &
  LAST_PID=$!; PIDS+=("$LAST_PID")
}

if [ $SEC_S3 = 1 ]; then
  phase "S3 backend (s3s-fs): one replica vs three replicas on one bucket"
  S3_PORT=22100
  S3_KEY=regbench S3_SECRET=regbench-secret-key
  mkdir -p "$WORK/s3/regbench"
  s3s-fs --host 127.0.0.1 --port $S3_PORT --access-key $S3_KEY --secret-key $S3_SECRET \
    "$WORK/s3" >"$WORK/s3s-fs.log" 2>&1 &
  PID_S3=$!; PIDS+=("$PID_S3")
  for _ in $(seq 1 100); do
    curl -s -o /dev/null "http://127.0.0.1:$S3_PORT/" && break
    kill -0 "$PID_S3" 2>/dev/null || { echo "s3s-fs exited during start-up" >&2; exit 1; }
    sleep 0.1
  done
  s3_args() { # prefix
    echo --storage "s3://regbench/$1" --storage-option "endpoint=http://127.0.0.1:$S3_PORT" \
      --storage-option allow_http=true --storage-option region=us-east-1
  }
  export AWS_ACCESS_KEY_ID=$S3_KEY AWS_SECRET_ACCESS_KEY=$S3_SECRET
  # shellcheck disable=SC2046 # s3_args prints words without spaces
  start_ours s3-one --listen 127.0.0.1:22101 $(s3_args one)
  PID_ONE=$LAST_PID
  THREE_ADDRS=(); THREE_PIDS=()
  for port in 22102 22103 22104; do
    # shellcheck disable=SC2046
    start_ours "s3-three-$port" --listen 127.0.0.1:$port $(s3_args three)
    THREE_ADDRS+=("127.0.0.1:$port"); THREE_PIDS+=("$LAST_PID")
  done
  unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
  wait_ready "http://127.0.0.1:22101/readyz" "$PID_ONE" s3-one
  for i in 0 1 2; do
    wait_ready "http://${THREE_ADDRS[$i]}/readyz" "${THREE_PIDS[$i]}" "s3-three-$i"
  done
  sleep 1
  section "S3 backend (s3s-fs $(s3s-fs --version 2>/dev/null | awk '{print $2}') on 127.0.0.1, one bucket): one replica vs three replicas" \
    "three replicas: requests go to the three addresses in turn (round robin per request: the POST, each PATCH and the PUT of one upload land on different replicas); server CPU is the sum of the replicas, peak RSS the largest replica's, then each replica's"
  join_by() { local IFS="$1"; shift; echo "$*"; }
  "$REGBENCH" run --quick --big-mib 64 --reps 3 --only PushMono,PushChunked,PullFirst,PullWarm \
    --clk-tck "$(getconf CLK_TCK)" \
    --server "s3-one=127.0.0.1:22101,$PID_ONE" \
    --server "s3-three=$(join_by + "${THREE_ADDRS[@]}"),$(join_by + "${THREE_PIDS[@]}")" \
    --title "s3-one=1 replica" --title "s3-three=3 replicas" \
    --out "$OUT" --json "${OUT%.md}-s3.json"
fi

if [ $SEC_TLS = 1 ]; then
  phase "HTTPS: plain HTTP/1.1 vs HTTPS with HTTP/1.1 vs HTTPS with HTTP/2"
  "$REGISTRY" cert --out "$WORK/tls" >/dev/null
  mkdir -p "$WORK/tls-http" "$WORK/tls-h1" "$WORK/tls-h2"
  TLS_ARGS=(--tls-cert "$WORK/tls/tls.crt" --tls-key "$WORK/tls/tls.key")
  start_ours tls-http --listen 127.0.0.1:22201 --storage "$WORK/tls-http"
  PID_HTTP=$LAST_PID
  start_ours tls-h1 --listen 127.0.0.1:22211 --storage "$WORK/tls-h1" "${TLS_ARGS[@]}" \
    --tls-listen 127.0.0.1:22202
  PID_H1=$LAST_PID
  start_ours tls-h2 --listen 127.0.0.1:22212 --storage "$WORK/tls-h2" "${TLS_ARGS[@]}" \
    --tls-listen 127.0.0.1:22203
  PID_H2=$LAST_PID
  wait_ready "http://127.0.0.1:22201/readyz" "$PID_HTTP" tls-http
  wait_ready "http://127.0.0.1:22211/readyz" "$PID_H1" tls-h1
  wait_ready "http://127.0.0.1:22212/readyz" "$PID_H2" tls-h2
  sleep 1
  section "HTTPS (rustls, ring) vs plain HTTP, same binary, filesystem storage (fsync on)" \
    "each column is its own server process on fresh storage; the HTTPS ones are measured on their --tls-listen port, the client (rustls, ring) trusts the CA from \`registry cert\` and offers only the ALPN named in the column (the harness fails if another is negotiated)"
  "$REGBENCH" run --quick --big-mib 256 --reps 3 \
    --only PushMono,PushChunked,PullFirst,PullWarm,GetManifest --clk-tck "$(getconf CLK_TCK)" \
    --ca-cert "$WORK/tls/ca.crt" \
    --server "http=127.0.0.1:22201,$PID_HTTP" \
    --server "https-h2=127.0.0.1:22203,$PID_H2,tls=h2" \
    --server "https-h1=127.0.0.1:22202,$PID_H1,tls=http1" \
    --title "http=HTTP/1.1 (plain)" --title "https-h2=HTTPS, HTTP/2" \
    --title "https-h1=HTTPS, HTTP/1.1" \
    --out "$OUT" --json "${OUT%.md}-tls.json"
fi

if [ $SEC_AUTH = 1 ]; then
  phase "access control: no auth vs a bearer token vs Basic credentials on every request"
  AUTH_ROUNDS=$([ -n "$QUICK" ] && echo 3 || echo 5)
  mkdir -p "$WORK/auth" "$WORK/auth-open" "$WORK/auth-bearer" "$WORK/auth-basic" \
    "$WORK/auth-dist" "$WORK/auth-dist-htpasswd" "$WORK/auth-open-header"
  AUTH_PW="regbench-$RANDOM$RANDOM$RANDOM"
  htpasswd -B -b -c "$WORK/auth/htpasswd" bench "$AUTH_PW" >/dev/null 2>&1
  # The per-namespace setup of the README, with the benchmark's user granted bench/**: the rules
  # before it are looked at and do not match, and anonymous requests are refused.
  cat > "$WORK/auth/registry.toml" <<TOML
[auth]
htpasswd = "$WORK/auth/htpasswd"
rules = [
  { repositories = ["builds/{namespace}/**"], identities = ["system:serviceaccount:*:*"], actions = ["pull", "push"] },
  { repositories = ["private/**"], identities = ["alice"], actions = ["pull", "push", "delete"] },
  { repositories = ["bench/**"], identities = ["bench"], actions = ["pull", "push"] },
]
TOML
  start_ours auth-open --listen 127.0.0.1:22301 --storage "$WORK/auth-open"
  PID_OPEN=$LAST_PID
  start_ours auth-bearer --config "$WORK/auth/registry.toml" --listen 127.0.0.1:22302 \
    --storage "$WORK/auth-bearer"
  PID_BEARER=$LAST_PID
  start_ours auth-basic --config "$WORK/auth/registry.toml" --listen 127.0.0.1:22303 \
    --storage "$WORK/auth-basic"
  PID_BASIC=$LAST_PID
  start_ours auth-open-header --listen 127.0.0.1:22306 --storage "$WORK/auth-open-header"
  PID_OPEN_HDR=$LAST_PID
  env -u AWS_CA_BUNDLE docker-registry serve "$(dist_config 22304 "$WORK/auth-dist")" \
    >"$WORK/auth-dist.log" 2>&1 &
  PID_ADIST=$!; PIDS+=("$PID_ADIST")
  env -u AWS_CA_BUNDLE docker-registry serve "$(dist_config 22305 "$WORK/auth-dist-htpasswd" \
    "auth:
  htpasswd:
    realm: regbench
    path: $WORK/auth/htpasswd")" >"$WORK/auth-dist-htpasswd.log" 2>&1 &
  PID_ADIST_H=$!; PIDS+=("$PID_ADIST_H")
  wait_ready "http://127.0.0.1:22301/readyz" "$PID_OPEN" auth-open
  wait_ready "http://127.0.0.1:22302/readyz" "$PID_BEARER" auth-bearer
  wait_ready "http://127.0.0.1:22303/readyz" "$PID_BASIC" auth-basic
  wait_ready "http://127.0.0.1:22304/v2/" "$PID_ADIST" auth-dist
  for _ in $(seq 1 100); do # 401 without credentials once it is up
    [ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:22305/v2/)" = 401 ] && break
    kill -0 "$PID_ADIST_H" 2>/dev/null || { echo "auth-dist-htpasswd exited" >&2; exit 1; }
    sleep 0.1
  done
  wait_ready "http://127.0.0.1:22306/readyz" "$PID_OPEN_HDR" auth-open-header
  # The length of the token regbench will get (the scopes of benches/src/auth.rs's REPOS), for
  # the column that carries an ignored header of that length to a server without access control.
  SCOPES=""
  for r in big chunked load small tags mixed; do SCOPES="$SCOPES&scope=repository:bench/$r:pull,push"; done
  TOKEN_LEN=$(curl -sf -u "bench:$AUTH_PW" "http://127.0.0.1:22302/token?service=registry$SCOPES" |
    python3 -c 'import json, sys; print(len(json.load(sys.stdin)["token"]))') || {
    echo "GET /token on the bearer server failed" >&2
    exit 1
  }
  sleep 1
  section "Access control: cost per request (median of $AUTH_ROUNDS rounds, the servers' order alternating)" \
    "every column is its own server process on fresh storage; \"ours, bearer token\" and \"ours, Basic\" run with an [auth] section (htpasswd with a bcrypt entry, three rules, anonymous refused: checked before each scenario); the bearer token comes from GET /token with Basic credentials once per scenario, outside the timed part, and goes with every request; \"Basic\" sends the user and password with every request; Distribution's htpasswd column sends Basic credentials with every request; \"ours, no auth, ignored header\" is a server without access control sent a dummy bearer header as long as the token ($TOKEN_LEN characters) with every request: what carrying the token costs alone"
  "$REGBENCH" run --quick --rounds $AUTH_ROUNDS --only GetManifest,HeadBlob \
    --clk-tck "$(getconf CLK_TCK)" \
    --server "open=127.0.0.1:22301,$PID_OPEN" \
    --server "bearer=127.0.0.1:22302,$PID_BEARER,auth=bearer:bench:$AUTH_PW" \
    --server "open-header=127.0.0.1:22306,$PID_OPEN_HDR,auth=ignored:$TOKEN_LEN" \
    --server "basic=127.0.0.1:22303,$PID_BASIC,auth=basic:bench:$AUTH_PW" \
    --server "dist=127.0.0.1:22304,$PID_ADIST" \
    --server "dist-htpasswd=127.0.0.1:22305,$PID_ADIST_H,auth=basic:bench:$AUTH_PW" \
    --title "open=ours, no auth" --title "bearer=ours, bearer token" \
    --title "open-header=ours, no auth, ignored header" \
    --title "basic=ours, Basic" --title "dist=Distribution 2.8.2, no auth" \
    --title "dist-htpasswd=Distribution 2.8.2, htpasswd (Basic)" \
    --ratio bearer/open --ratio open-header/open --ratio basic/open --ratio dist-htpasswd/dist \
    --out "$OUT" --json "${OUT%.md}-auth.json"
fi

if [ $SEC_PROXY = 1 ]; then
  phase "pull-through cache: cold and warm pulls through ours and through Distribution"
  PROXY_ITER=$([ -n "$QUICK" ] && echo 3 || echo 7)
  mkdir -p "$WORK/upstream"
  # The upstream: CNCF Distribution on its own storage, plain HTTP on loopback.
  env -u AWS_CA_BUNDLE docker-registry serve "$(dist_config 22401 "$WORK/upstream")" \
    >"$WORK/upstream.log" 2>&1 &
  PID_UP=$!; PIDS+=("$PID_UP")
  wait_ready "http://127.0.0.1:22401/v2/" "$PID_UP" upstream
  section "Pull-through cache: an image in an upstream Distribution on 127.0.0.1, pulled through the cache (medians of $PROXY_ITER pulls)" \
    "a pull: GET manifest by tag, then config and layers 3 at a time, each compared byte for byte; cold: ours (or Distribution with proxy.remoteurl) started on fresh storage for each pull, the direct pull from the upstream alternating with it; warm: pulled again from the filled cache, alternating with a pull of the same image pushed into the same registry (ours) or a direct pull from the upstream (Distribution); serving process's CPU: ours (or the Distribution proxy) through the cache, the upstream for direct pulls; over a link: the same cold pulls with both ours and the direct pull reaching the upstream through a TCP relay in regbench that paces each direction to that rate, all connections sharing it (the client reaches ours on loopback)"
  "$REGBENCH" pullthrough --registry "$REGISTRY" --distribution "$(command -v docker-registry)" \
    --upstream 127.0.0.1:22401 --upstream-pid "$PID_UP" --work "$WORK" --port 22402 \
    --iterations $PROXY_ITER --clk-tck "$(getconf CLK_TCK)" --link-mbit "$LINK_MBIT" \
    --title "cache=ours, through the cache" --title "reference=reference (direct; warm: local in ours)" \
    --title "dist-cache=Distribution 2.8.2 as a proxy" --title "dist-direct=direct from the upstream" \
    --out "$OUT" --json "${OUT%.md}-pullthrough.json"
fi

phase "done; table in $OUT"
