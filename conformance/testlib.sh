# Helpers shared by the shell test suites (conformance/clients/run.sh, conformance/tls/run.sh,
# deploy/tests/run.sh). Source it; the script sets WORK (its temporary folder), TLOG (the log of
# the current test), CMD_TIMEOUT (seconds per external command) and the counters PASSED and FAILED.
# shellcheck shell=bash
# OUT, ERR, RUN_RC and REASON are set here for the sourcing script to read.
# shellcheck disable=SC2034

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

# finish: prints the closing `N passed, N failed` line and exits non-zero on any failure.
finish() {
  echo "$PASSED passed, $FAILED failed"
  [ "$FAILED" -eq 0 ]
  exit $?
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
