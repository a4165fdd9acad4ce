# Helpers shared by the shell test suites (conformance/clients/run.sh, conformance/tls/run.sh,
# deploy/tests/run.sh). Source it; the script sets WORK (its temporary folder), TLOG (the log of
# the current test), CMD_TIMEOUT (seconds per external command) and the counters PASSED and FAILED.
# shellcheck shell=bash
# OUT, ERR, RUN_RC and REASON are set here for the sourcing script to read.
# shellcheck disable=SC2034

# The registry's Service name in the cluster, which the node setup and the suites resolve
# through their own hosts files.
SVC=builds.registry.svc.cluster.local
# The Python interpreter of the suites' helpers.
PY=${PYTHON:-python3}

# fail MESSAGE: records why the current test failed; returns 1.
fail() {
  REASON="$*"
  return 1
}

# run CMD...: runs an external command with a time limit and logs it; its stdout is left in $OUT,
# its stderr in $ERR and its exit code in $RUN_RC. Fails (with a reason) when the command does.
run() {
  echo "+ $*" >>"$TLOG"
  local rc=0
  timeout -k 5 "$CMD_TIMEOUT" "$@" >"$WORK/out" 2>"$WORK/err" </dev/null || rc=$?
  RUN_RC=$rc
  OUT=$(cat "$WORK/out")
  ERR=$(cat "$WORK/err")
  cat "$WORK/out" "$WORK/err" >>"$TLOG"
  if [ "$rc" -ne 0 ]; then
    local msg
    msg=$(cat "$WORK/err" "$WORK/out" | grep -v '^$' | tail -n 3 | tr '\n' ' ')
    [ "$rc" = 124 ] && msg="timed out after ${CMD_TIMEOUT}s; $msg"
    REASON="'$(basename "$1") ${2:-} ${3:-}' exited $rc: ${msg:0:500}"
    return 1
  fi
}

# expect_eq WHAT ACTUAL EXPECTED
expect_eq() {
  echo "check $1: got '$2' want '$3'" >>"$TLOG"
  [ "$2" == "$3" ] || fail "$1: expected '$3', got '$2'"
}

# t NAME CMD...: runs one test, prints `PASS NAME` or `FAIL NAME: reason`, counts it; on failure
# the end of the test's log goes to stderr.
t() {
  local name=$1
  shift
  REASON=""
  TLOG="$WORK/logs/$name.log"
  local start=$SECONDS
  if "$@"; then
    echo "PASS $name"
    PASSED=$((PASSED + 1))
  else
    echo "FAIL $name: ${REASON:-no reason recorded}"
    FAILED=$((FAILED + 1))
    { echo "---- last lines of $name.log:"; tail -n 15 "$TLOG" | sed 's/^/    /'; } >&2
  fi
  echo "# took $((SECONDS - start))s" >>"$TLOG"
}

# record NAME [REASON]: counts and prints one result of a suite that does not run its tests
# through `t`: `PASS NAME`, or `FAIL NAME: REASON` when a REASON is given.
record() {
  if [ $# -lt 2 ]; then
    echo "PASS $1"
    PASSED=$((PASSED + 1))
  else
    echo "FAIL $1: $2"
    FAILED=$((FAILED + 1))
  fi
}

# finish: prints the closing `N passed, N failed` line and exits non-zero on any failure.
finish() {
  echo "$PASSED passed, $FAILED failed"
  [ "$FAILED" -eq 0 ]
  exit $?
}

# await_ok PID URL WHAT: waits up to 10 s for URL to answer 200 while PID lives; otherwise prints
# `FAIL setup: WHAT did not answer 200 on URL within 10s` and the end of $REG_LOG, and finishes.
await_ok() {
  local _i
  for _i in $(seq 100); do
    kill -0 "$1" 2>/dev/null || break
    [ "$(curl -s --noproxy '*' --max-time 2 -o /dev/null -w '%{http_code}' "$2")" = 200 ] && return 0
    sleep 0.1
  done
  echo "FAIL setup: $3 did not answer 200 on $2 within 10s"
  tail -n 20 "$REG_LOG" >&2
  FAILED=1
  finish
}

# port_free PORT: true when nothing listens on 127.0.0.1:PORT.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# umount_under DIR: unmounts everything mounted below DIR, deepest first.
umount_under() {
  local m
  # shellcheck disable=SC2013 # mount points hold no white space in these temp folders
  for m in $(awk -v w="$1" 'index($2, w) == 1 { print $2 }' /proc/mounts | sort -r); do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
  done
}

# stop_pid PID: SIGTERM to a process this script started, up to 5 s for it to go, then SIGKILL.
# Nothing when PID is empty or already gone.
stop_pid() {
  [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null || return 0
  kill "$1" 2>/dev/null
  local _i
  for _i in $(seq 50); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$1" 2>/dev/null
}

# finish_work LOG_DIR: the end of every cleanup trap: unmounts what is mounted below $WORK, copies
# its logs to LOG_DIR when that is set, removes $WORK.
finish_work() {
  umount_under "$WORK"
  if [ -n "${1:-}" ]; then
    mkdir -p "$1" && cp -r "$WORK/logs/." "$1/"
  fi
  rm -rf "$WORK" 2>/dev/null || { sleep 1; rm -rf "$WORK"; }
}

# containerd_config DIR: writes DIR/config.toml for a private containerd: root, state and sockets
# under DIR, the CRI plugin (what the kubelet talks to; no CNI configured, only its image service
# is used) reading registry hosts from DIR/hosts.
containerd_config() {
  cat >"$1/config.toml" <<EOF
version = 2
root = "$1/root"
state = "$1/state"
[grpc]
  address = "$1/containerd.sock"
[ttrpc]
  address = "$1/containerd.sock.ttrpc"
[debug]
  address = "$1/debug.sock"
  level = "info"
[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$1/cni/bin"
    conf_dir = "$1/cni/conf"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$1/hosts"
EOF
}

# hosts_toml FILE URL [CA]: a containerd hosts.toml sending pulls and pushes to URL, trusting the
# CA certificate file CA when given.
hosts_toml() {
  {
    printf 'server = "%s"\n\n[host."%s"]\n  capabilities = ["pull", "resolve", "push"]\n' "$2" "$2"
    [ -z "${3:-}" ] || printf '  ca = "%s"\n' "$3"
  } >"$1"
}

# start_private_containerd DIR CTR...: starts containerd on DIR/config.toml (log in
# $WORK/logs/containerd.log), sets CTRD_PID, and waits up to 10 s until `CTR... version` answers.
start_private_containerd() {
  local dir=$1
  shift
  containerd --config "$dir/config.toml" >"$WORK/logs/containerd.log" 2>&1 &
  CTRD_PID=$!
  local _i
  for _i in $(seq 100); do
    [ -S "$dir/containerd.sock" ] && timeout 5 "$@" version >/dev/null 2>&1 && return 0
    kill -0 "$CTRD_PID" 2>/dev/null || break
    sleep 0.1
  done
  fail "private containerd did not start: $(tail -n 2 "$WORK/logs/containerd.log" | tr '\n' ' ')"
}

# start_moto BUCKET: moto_server (log $WORK/logs/moto.log) on a free port of 20000-20999 with
# BUCKET made; sets MOTO_PID and MOTO_HOST. Checks that the listening socket is moto's own (not
# another server's). The caller stops MOTO_PID on exit.
start_moto() {
  command -v moto_server >/dev/null || fail "moto_server missing (scripts/install-test-deps.sh)" || return 1
  local mp attempt
  for attempt in 1 2 3; do
    mp=""
    for _ in $(seq 60); do
      local p=$((20000 + RANDOM % 1000))
      if port_free "$p"; then mp=$p; break; fi
    done
    [ -n "$mp" ] || fail "no free port in 20000-20999" || return 1
    env -u AWS_CA_BUNDLE -u REQUESTS_CA_BUNDLE moto_server -H 127.0.0.1 -p "$mp" \
      >>"$WORK/logs/moto.log" 2>&1 </dev/null &
    MOTO_PID=$!
    for _ in $(seq 300); do
      kill -0 "$MOTO_PID" 2>/dev/null || break
      if ss -Hltnp "sport = :$mp" 2>/dev/null | grep -q "pid=$MOTO_PID,"; then
        MOTO_HOST="127.0.0.1:$mp"
        [ "$(curl -s --noproxy '*' --max-time 10 -o /dev/null -w '%{http_code}' -X PUT "http://$MOTO_HOST/$1")" = 200 ] \
          || fail "moto on $MOTO_HOST did not create the bucket $1" || return 1
        echo "# moto_server (pid $MOTO_PID) on $MOTO_HOST, attempt $attempt" >&2
        return 0
      fi
      sleep 0.1
    done
    kill "$MOTO_PID" 2>/dev/null
    wait "$MOTO_PID" 2>/dev/null
    MOTO_PID=""
  done
  fail "moto_server did not listen within 30 s (see moto.log)"
}

# suite_setup NAME [REGISTRY_BINARY]: the start of the suite in conformance/NAME, after sourcing
# this file: sets HERE (its folder) and REG_BIN (the argument, else the release build);
# clears proxy settings and CA bundles so that every request stays on loopback; stops with a
# FAIL unless run as root.
suite_setup() {
  HERE="$ROOT/conformance/$1"
  REG_BIN=${2:-$ROOT/target/x86_64-unknown-linux-gnu/release/registry}
  unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY all_proxy AWS_CA_BUNDLE REQUESTS_CA_BUNDLE
  export NO_PROXY="127.0.0.1,localhost" no_proxy="127.0.0.1,localhost"
  [ "$(id -u)" = 0 ] || { echo "FAIL setup: must run as root"; echo "0 passed, 1 failed"; exit 1; }
}

# token_image CONTAINER REF [ARCH [CONFIG_ARG...]]: commits REF with buildah ("${BUILDAH[@]}"): a
# scratch image holding the static /bin/busybox and /token.txt (the line $TOKEN, written to
# $WORK/token.txt), whose entrypoint and command print the token; linux/ARCH (default amd64),
# with any further `buildah config` arguments. CONTAINER names the working container.
token_image() {
  local name=$1 ref=$2 arch=${3:-amd64} c
  shift 2
  shift $(($# > 0 ? 1 : 0))
  run "${BUILDAH[@]}" from --name "$name" scratch || return 1
  c=$OUT
  printf '%s\n' "$TOKEN" >"$WORK/token.txt"
  run "${BUILDAH[@]}" copy "$c" /bin/busybox /bin/busybox || return 1
  run "${BUILDAH[@]}" copy "$c" "$WORK/token.txt" /token.txt || return 1
  run "${BUILDAH[@]}" config --entrypoint '["/bin/busybox"]' --cmd '["cat","/token.txt"]' \
    --arch "$arch" --os linux "$@" "$c" || return 1
  run "${BUILDAH[@]}" commit -q --rm "$c" "$ref"
}

# free_port [FROM] [COUNT]: prints a port of FROM..FROM+COUNT-1 (default 21000 and 2000) on
# which nothing listens on 127.0.0.1; fails after 100 tries.
free_port() {
  local from=${1:-21000} count=${2:-2000} tries=100 p
  while [ "$tries" -gt 0 ]; do
    p=$((from + RANDOM % count))
    port_free "$p" && { echo "$p"; return 0; }
    tries=$((tries - 1))
  done
  return 1
}

# begin_root_suite NAME WHY: the start of a suite that needs root: without root, prints
# `FAIL setup: must run as root (WHY)` and exits through finish; otherwise sets PASSED, FAILED,
# REASON, WORK (a new /tmp/registry-NAME.XXXXXX holding logs/) and TLOG (its setup log).
begin_root_suite() {
  PASSED=0
  FAILED=0
  REASON=""
  if [ "$(id -u)" != 0 ]; then
    echo "FAIL setup: must run as root ($2)"
    FAILED=1
    finish
  fi
  WORK=$(mktemp -d "/tmp/registry-$1.XXXXXX")
  mkdir -p "$WORK/logs"
  TLOG="$WORK/logs/setup.log"
}
