#!/usr/bin/env bash
# Access control with real clients: a registry started here on 127.0.0.1 with an [auth] section
# (htpasswd written by `htpasswd -B`, a JWKS written by the test for ServiceAccount tokens,
# per-namespace rules). skopeo, buildah, podman, the ORAS Python SDK and containerd's ctr log in
# and push with credentials and pull anonymously; ServiceAccount tokens push into their namespace
# and are refused elsewhere; bad tokens get 401; a hostile pass over the auth surface; the access
# log names the caller (ServiceAccount, anonymous, nobody for refused credentials); and no
# secret may appear in the registry's log (captured at debug level for the whole run).
#
#   conformance/auth/run.sh [REGISTRY_BINARY]      (default target/x86_64-unknown-linux-gnu/release/registry)
#
# Prints `PASS name` / `FAIL name: reason` per test and `N passed, N failed`; exits non-zero on
# any failure. AUTH_LOG_DIR=DIR keeps the logs. Needs root, the tools of
# scripts/install-test-deps.sh, and installs apache2-utils (htpasswd) and PyPI cryptography when
# missing. The Docker client is not exercised here.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=SCRIPTDIR/../../conformance/testlib.sh
. "$ROOT/conformance/testlib.sh"
HERE="$ROOT/conformance/auth"
REG_BIN=${1:-$ROOT/target/x86_64-unknown-linux-gnu/release/registry}
CMD_TIMEOUT=${AUTH_CMD_TIMEOUT:-90}
SVC_NAME=auth.registry.svc.cluster.local

unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY all_proxy AWS_CA_BUNDLE REQUESTS_CA_BUNDLE
export NO_PROXY="127.0.0.1,localhost,$SVC_NAME" no_proxy="127.0.0.1,localhost,$SVC_NAME"

begin_root_suite auth "containerd, podman and buildah use real mounts"
command -v htpasswd >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q apache2-utils >/dev/null 2>&1 ||
  { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q apache2-utils >/dev/null 2>&1; }
"$PY" -c 'import cryptography' 2>/dev/null || "$PY" -m pip install -q cryptography >/dev/null 2>&1
"$PY" -c 'import oras.client' 2>/dev/null || "$PY" -m pip install -q oras >/dev/null 2>&1

REG_PID=""
CTRD_PID=""

cleanup() {
  local rc=$?
  set +e
  stop_pid "$CTRD_PID"
  if [ -d "$WORK/podman" ]; then
    timeout 30 "${PODMAN[@]}" rmi -af >/dev/null 2>&1
  fi
  [ -d "$WORK/build" ] && timeout 30 "${BUILDAH[@]}" rm -a >/dev/null 2>&1
  stop_pid "$REG_PID"
  finish_work "${AUTH_LOG_DIR:-}"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# req [--from IP] [-u USER:PASS | -H HEADER]... METHOD PATH: curl against the registry from a
# loopback source address (failed logins are counted per address); sets STATUS, HDRS and BODY.
req() {
  local src=127.0.0.1 args=()
  while [ $# -gt 2 ]; do
    case $1 in
      --from) src=$2; shift 2 ;;
      -u | -H) args+=("$1" "$2"); shift 2 ;;
      *) break ;;
    esac
  done
  local method=$1 path=$2
  if [ "$method" = HEAD ]; then args+=(-I); else args+=(-X "$method"); fi
  STATUS=$(curl -sS --noproxy '*' --max-time 30 --interface "$src" -o "$WORK/body" -D "$WORK/hdrs" \
    -w '%{http_code}' "${args[@]}" "http://$REG_HOST$path" 2>>"$TLOG") || STATUS=000
  HDRS=$(tr -d '\r' <"$WORK/hdrs")
  BODY=$(cat "$WORK/body")
  echo "req $method $path (from $src) -> $STATUS" >>"$TLOG"
}
hdr() { echo "$HDRS" | awk -v n="$(echo "$1" | tr '[:upper:]' '[:lower:]')" 'index(tolower($0), n": ") == 1 { sub(/^[^:]*: /, ""); print; exit }'; }
code() { echo "$BODY" | jq -r '.errors[0].code' 2>/dev/null; }

# ---------------------------------------------------------------- keys, users, config
PORT=$(free_port 16000 1000) || { echo "FAIL setup: no free port in 16000-16999"; FAILED=1; finish; }
REG_HOST="127.0.0.1:$PORT"
REG_LOG="$WORK/logs/registry.log"
ALICE_PW="alice-pw-$RANDOM$RANDOM$RANDOM"
BOB_PW="bob-pw-$RANDOM$RANDOM$RANDOM"
htpasswd -B -b -c "$WORK/htpasswd" alice "$ALICE_PW" >/dev/null 2>&1 || { echo "FAIL setup: htpasswd -B"; FAILED=1; finish; }
htpasswd -B -b "$WORK/htpasswd" bob "$BOB_PW" >/dev/null 2>&1
mkdir -p "$WORK/keys"
"$PY" "$HERE/jwt_tool.py" keys "$WORK/keys" || { echo "FAIL setup: making test keys (python cryptography)"; FAILED=1; finish; }
mint() { "$PY" "$HERE/jwt_tool.py" mint "$WORK/keys" "$@"; }
cat >"$WORK/registry.toml" <<EOF
[auth]
service = "registry"
htpasswd = "$WORK/htpasswd"
max_failures = 20
failure_window = 60

[auth.serviceaccount]
jwks_file = "$WORK/keys/jwks.json"
issuer = "https://kubernetes.default.svc.cluster.local"
audience = "registry"

# A ServiceAccount pushes into builds/<its namespace>/.
[[auth.rules]]
repositories = ["builds/{namespace}/**"]
identities = ["system:serviceaccount:*:*"]
actions = ["pull", "push"]

# private/ is alice's alone.
[[auth.rules]]
repositories = ["private/**"]
identities = ["alice"]
actions = ["pull", "push", "delete"]

[[auth.rules]]
repositories = ["private/**"]
identities = ["everyone"]
actions = ["pull", "push", "delete"]
deny = true

# The users push everywhere else; everyone pulls.
[[auth.rules]]
repositories = ["**"]
identities = ["alice", "bob"]
actions = ["pull", "push"]

[[auth.rules]]
repositories = ["**"]
identities = ["everyone"]
actions = ["pull"]
EOF
[ -x "$REG_BIN" ] || { echo "FAIL setup: registry binary $REG_BIN not found (cargo build --release -p registry)"; FAILED=1; finish; }
"$REG_BIN" serve --config "$WORK/registry.toml" --listen "$REG_HOST" --storage "$WORK/data" \
  --fsync false --log-level debug --log-format text >"$REG_LOG" 2>&1 &
REG_PID=$!
await_ok "$REG_PID" "http://$REG_HOST/livez" "the registry"
echo "# registry $REG_BIN on $REG_HOST, work dir $WORK" >&2

BUILDAH=(buildah --root "$WORK/build/root" --runroot "$WORK/build/runroot" --storage-driver overlay)
mkdir -p "$WORK/podman/tmp"
PODMAN=(podman --root "$WORK/podman/root" --runroot "$WORK/podman/runroot" --storage-driver overlay
  --tmpdir "$WORK/podman/tmp" --cgroup-manager cgroupfs --events-backend file)
export REGISTRY_AUTH_FILE="$WORK/auth.json"
echo '{"auths":{}}' >"$REGISTRY_AUTH_FILE"
CTRD="$WORK/containerd"
CTR=(ctr --address "$CTRD/containerd.sock" --namespace auth-test)

# A test image built offline (busybox-static + a marker file).
MARK="auth-test-$RANDOM$RANDOM"
setup_image() {
  [ -x /bin/busybox ] || fail "/bin/busybox missing (apt busybox-static)" || return 1
  run "${BUILDAH[@]}" from scratch || return 1
  local c=$OUT
  printf '%s\n' "$MARK" >"$WORK/mark.txt"
  run "${BUILDAH[@]}" copy "$c" /bin/busybox /bin/busybox || return 1
  run "${BUILDAH[@]}" copy "$c" "$WORK/mark.txt" /mark.txt || return 1
  run "${BUILDAH[@]}" config --entrypoint '["/bin/busybox"]' --cmd '["cat","/mark.txt"]' "$c" || return 1
  run "${BUILDAH[@]}" commit -q --rm "$c" localhost/auth/img:latest || return 1
  run "${BUILDAH[@]}" push -q localhost/auth/img:latest "oci-archive:$WORK/img.tar:latest" || return 1
}
if ! setup_image; then
  echo "FAIL setup: building the test image: $REASON"
  FAILED=1
  finish
fi

# ---------------------------------------------------------------- tests
CHALLENGE_BASE="Bearer realm=\"http://$REG_HOST/token\",service=\"registry\""

test_anonymous_push_401() {
  req POST /v2/lib/app/blobs/uploads/
  expect_eq "status" "$STATUS" 401 || return 1
  expect_eq "WWW-Authenticate" "$(hdr WWW-Authenticate)" "$CHALLENGE_BASE,scope=\"repository:lib/app:pull,push\"" || return 1
  expect_eq "error code" "$(code)" UNAUTHORIZED || return 1
  req PUT /v2/lib/app/manifests/v1
  expect_eq "anonymous manifest PUT" "$STATUS" 401 || return 1
  req DELETE /v2/lib/app/manifests/v1
  expect_eq "anonymous DELETE" "$STATUS" 401 || return 1
  expect_eq "WWW-Authenticate on DELETE" "$(hdr WWW-Authenticate)" "$CHALLENGE_BASE,scope=\"repository:lib/app:delete\"" || return 1
  req GET /v2/
  expect_eq "anonymous GET /v2/" "$STATUS" 401 || return 1
  expect_eq "WWW-Authenticate on /v2/" "$(hdr WWW-Authenticate)" "$CHALLENGE_BASE"
}

test_open_endpoints() {
  local p
  for p in /livez /readyz /metrics; do
    req GET "$p"
    expect_eq "GET $p" "$STATUS" 200 || return 1
  done
}

test_skopeo_creds() {
  run skopeo copy -q --dest-tls-verify=false --dest-creds "alice:$ALICE_PW" \
    "oci-archive:$WORK/img.tar:latest" "docker://$REG_HOST/lib/skopeo:v1" || return 1
  # anonymous pull (skopeo fetches an anonymous token), then anonymous curl straight away
  run skopeo copy -q --src-tls-verify=false "docker://$REG_HOST/lib/skopeo:v1" "oci:$WORK/skopeo-out:v1" || return 1
  req HEAD /v2/lib/skopeo/manifests/v1 -H "Accept: application/vnd.oci.image.manifest.v1+json"
  expect_eq "anonymous HEAD manifest" "$STATUS" 200 || return 1
  if run skopeo copy -q --dest-tls-verify=false --dest-creds "alice:wrong-$RANDOM" \
    "oci-archive:$WORK/img.tar:latest" "docker://$REG_HOST/lib/skopeo:v2"; then
    fail "push with a wrong password succeeded" || return 1
  fi
  if run skopeo copy -q --dest-tls-verify=false "oci-archive:$WORK/img.tar:latest" "docker://$REG_HOST/lib/skopeo:v3"; then
    fail "anonymous skopeo push succeeded" || return 1
  fi
  true
}

test_buildah_login_push() {
  run "${BUILDAH[@]}" login --tls-verify=false -u bob -p "$BOB_PW" "$REG_HOST" || return 1
  run "${BUILDAH[@]}" push -q --tls-verify=false localhost/auth/img:latest "docker://$REG_HOST/lib/buildah:v1" || return 1
  run "${BUILDAH[@]}" logout "$REG_HOST" || return 1
  req GET /v2/lib/buildah/tags/list
  expect_eq "anonymous tags/list" "$(echo "$BODY" | jq -c .tags)" '["v1"]'
}

test_podman_login_pull() {
  if run "${PODMAN[@]}" login --tls-verify=false -u alice -p "wrong-$RANDOM" "$REG_HOST"; then
    fail "podman login with a wrong password succeeded" || return 1
  fi
  run "${PODMAN[@]}" login --tls-verify=false -u alice -p "$ALICE_PW" "$REG_HOST" || return 1
  run "${PODMAN[@]}" pull -q "oci-archive:$WORK/img.tar:latest" || return 1
  run "${PODMAN[@]}" push -q --tls-verify=false "$OUT" "docker://$REG_HOST/private/podman:v1" || return 1
  run "${PODMAN[@]}" logout "$REG_HOST" || return 1
  # anonymous: the public image pulls, the private one does not
  run "${PODMAN[@]}" pull -q --tls-verify=false "$REG_HOST/lib/skopeo:v1" || return 1
  if run "${PODMAN[@]}" pull -q --tls-verify=false "$REG_HOST/private/podman:v1"; then
    fail "anonymous pull of private/ succeeded" || return 1
  fi
  true
}

test_oras_creds() {
  run "$PY" "$HERE/oras_auth.py" "$REG_HOST" lib/oras alice "$ALICE_PW" "$WORK" || { REASON="oras: ${OUT:-$REASON}"; return 1; }
  req GET /v2/lib/oras/tags/list
  expect_eq "tags of lib/oras" "$(echo "$BODY" | jq -c .tags)" '["v1"]'
}

start_containerd() {
  [ -n "$CTRD_PID" ] && return 0
  mkdir -p "$CTRD/hosts/$SVC_NAME"
  cat >"$CTRD/config.toml" <<EOF
version = 2
root = "$CTRD/root"
state = "$CTRD/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$CTRD/containerd.sock"
[ttrpc]
  address = "$CTRD/containerd.sock.ttrpc"
[debug]
  address = "$CTRD/debug.sock"
EOF
  cat >"$CTRD/hosts/$SVC_NAME/hosts.toml" <<EOF
server = "http://$REG_HOST"

[host."http://$REG_HOST"]
  capabilities = ["pull", "resolve", "push"]
EOF
  printf '127.0.0.1 localhost\n127.0.0.1 %s\n' "$SVC_NAME" >"$CTRD/etc-hosts"
  containerd --config "$CTRD/config.toml" >"$WORK/logs/containerd.log" 2>&1 &
  CTRD_PID=$!
  for _ in $(seq 100); do
    [ -S "$CTRD/containerd.sock" ] && timeout 5 "${CTR[@]}" version >/dev/null 2>&1 && return 0
    kill -0 "$CTRD_PID" 2>/dev/null || break
    sleep 0.1
  done
  fail "private containerd did not start"
}
ctr_net() {
  run unshare -m --propagation private sh -c 'mount --bind "$0" /etc/hosts && exec "$@"' \
    "$CTRD/etc-hosts" "${CTR[@]}" "$@"
}

test_ctr_pull_anonymous_push_user() {
  start_containerd || return 1
  ctr_net images pull --hosts-dir "$CTRD/hosts" "$SVC_NAME/lib/skopeo:v1" || return 1
  run "${CTR[@]}" images import --base-name localhost/auth/img "$WORK/img.tar" || return 1
  run "${CTR[@]}" images tag localhost/auth/img:latest "$SVC_NAME/lib/ctr:v1" || return 1
  if ctr_net images push --hosts-dir "$CTRD/hosts" "$SVC_NAME/lib/ctr:v1"; then
    fail "anonymous ctr push succeeded" || return 1
  fi
  ctr_net images push --hosts-dir "$CTRD/hosts" --user "bob:$BOB_PW" "$SVC_NAME/lib/ctr:v1" || return 1
  req GET /v2/lib/ctr/tags/list
  expect_eq "tags of lib/ctr" "$(echo "$BODY" | jq -c .tags)" '["v1"]'
}

test_serviceaccount_namespace() {
  local tok rsa
  tok=$(mint team-a) || fail "minting a token" || return 1
  rsa=$(mint team-a --alg RS256) || return 1
  # the projected token as the password, any user name (skopeo runs the token flow)
  run skopeo copy -q --dest-tls-verify=false --dest-creds "serviceaccount:$tok" \
    "oci-archive:$WORK/img.tar:latest" "docker://$REG_HOST/builds/team-a/app:v1" || return 1
  run skopeo copy -q --dest-tls-verify=false --dest-creds "x:$rsa" \
    "oci-archive:$WORK/img.tar:latest" "docker://$REG_HOST/builds/team-a/rsa:v1" || return 1
  # outside its namespace: 403 DENIED, with Basic and as a bearer token
  req -u "serviceaccount:$tok" POST /v2/builds/team-b/app/blobs/uploads/
  expect_eq "push into another namespace (Basic)" "$STATUS" 403 || return 1
  expect_eq "error code" "$(code)" DENIED || return 1
  req -H "Authorization: Bearer $tok" POST /v2/lib/app/blobs/uploads/
  expect_eq "push outside builds/ (Bearer)" "$STATUS" 403 || return 1
  if run skopeo copy -q --dest-tls-verify=false --dest-creds "serviceaccount:$tok" \
    "oci-archive:$WORK/img.tar:latest" "docker://$REG_HOST/builds/team-b/app:v1"; then
    fail "skopeo pushed into another namespace" || return 1
  fi
  # the token's granted subset: team-b is left out
  req -u "serviceaccount:$tok" GET "/token?service=registry&scope=repository:builds/team-a/app:pull,push&scope=repository:builds/team-b/app:pull,push"
  expect_eq "/token status" "$STATUS" 200 || return 1
  local granted
  granted=$(echo "$BODY" | jq -r .token | cut -d. -f2 | tr '_-' '/+' | base64 -d 2>/dev/null | jq -c '[.access[] | {name, actions}]')
  expect_eq "granted access" "$granted" '[{"name":"builds/team-a/app","actions":["pull","push"]},{"name":"builds/team-b/app","actions":["pull"]}]'
}

test_bad_tokens_401() {
  local name t
  for name in expired wrong-audience wrong-issuer other-key unknown-kid alg-none; do
    case $name in
      expired) t=$(mint team-a --exp -3600) ;;
      wrong-audience) t=$(mint team-a --aud somebody-else) ;;
      wrong-issuer) t=$(mint team-a --iss https://evil.example) ;;
      other-key) t=$(mint team-a --other) ;;
      unknown-kid) t=$(mint team-a --kid nope) ;;
      alg-none) t=$(mint team-a --alg none) ;;
    esac
    req --from 127.0.0.2 -u "serviceaccount:$t" POST /v2/builds/team-a/app/blobs/uploads/
    expect_eq "$name (Basic)" "$STATUS" 401 || return 1
    expect_eq "$name error code" "$(code)" UNAUTHORIZED || return 1
    req --from 127.0.0.2 -H "Authorization: Bearer $t" GET /v2/builds/team-a/app/tags/list
    expect_eq "$name (Bearer)" "$STATUS" 401 || return 1
    req --from 127.0.0.2 -u "serviceaccount:$t" GET "/token?service=registry&scope=repository:builds/team-a/app:push"
    expect_eq "$name (/token)" "$STATUS" 401 || return 1
  done
}

test_mount_and_catalog() {
  local layer tok
  layer=$(tar -xOf "$WORK/img.tar" index.json | jq -r '.manifests[0].digest')
  layer=$(tar -xOf "$WORK/img.tar" "blobs/sha256/${layer#sha256:}" | jq -r '.layers[0].digest')
  req -u "alice:$ALICE_PW" HEAD "/v2/private/podman/blobs/$layer"
  expect_eq "layer in private/podman (alice)" "$STATUS" 200 || return 1
  req HEAD "/v2/private/podman/blobs/$layer"
  expect_eq "anonymous HEAD in private/" "$STATUS" 401 || return 1
  tok=$(mint team-c)
  req -u "sa:$tok" POST "/v2/builds/team-c/x/blobs/uploads/?mount=$layer&from=private/podman"
  expect_eq "mount from a repository the caller may not pull" "$STATUS" 202 || return 1
  req -u "sa:$tok" HEAD "/v2/builds/team-c/x/blobs/$layer"
  expect_eq "the blob did not leak into builds/team-c/x" "$STATUS" 404 || return 1
  req -u "sa:$tok" POST "/v2/builds/team-c/x/blobs/uploads/?mount=$layer&from=lib/skopeo"
  expect_eq "mount from a public repository" "$STATUS" 201 || return 1
  req GET /v2/_catalog
  expect_eq "anonymous catalog hides private/" "$(echo "$BODY" | jq -c '[.repositories[] | select(startswith("private/"))]')" '[]' || return 1
  req -u "alice:$ALICE_PW" GET /v2/_catalog
  expect_eq "alice's catalog shows private/podman" "$(echo "$BODY" | jq -c '[.repositories[] | select(startswith("private/"))]')" '["private/podman"]'
}

test_hostile_headers() {
  local h big
  big=$(head -c 20000 /dev/zero | tr '\0' 'A')
  for h in "Basic" "Basic !!!notbase64" "Basic $(printf 'nocolon' | base64)" "Bearer" "Bearer a.b" \
    "Bearer ...." "Bearer $big.$big.$big" "Basic $big" "Digest username=x" "bearer x.y.z" \
    "Basic $(printf 'alice:%s' "$ALICE_PW" | base64 | rev)"; do
    req --from 127.0.0.3 -H "Authorization: $h" GET /v2/lib/skopeo/tags/list
    case $STATUS in
      401 | 431 | 400) ;;
      *) fail "Authorization '${h:0:30}...' answered $STATUS" || return 1 ;;
    esac
  done
  # the registry is still fine
  req GET /v2/lib/skopeo/tags/list
  expect_eq "anonymous pull after the hostile pass" "$STATUS" 200
}

test_failed_logins_429() {
  local i
  for i in $(seq 20); do
    req --from 127.0.0.4 -u "alice:wrong-$i" GET /v2/
    [ "$STATUS" = 401 ] || fail "failure $i answered $STATUS" || return 1
  done
  req --from 127.0.0.4 -u "alice:$ALICE_PW" GET /v2/
  expect_eq "21st login from the address (right password)" "$STATUS" 429 || return 1
  [ -n "$(hdr Retry-After)" ] || fail "no Retry-After" || return 1
  expect_eq "error code" "$(code)" TOOMANYREQUESTS || return 1
  req --from 127.0.0.4 -u "alice:$ALICE_PW" GET "/token?service=registry"
  expect_eq "/token from the blocked address" "$STATUS" 429 || return 1
  req --from 127.0.0.5 -u "alice:$ALICE_PW" GET /v2/
  expect_eq "another address" "$STATUS" 200 || return 1
  req --from 127.0.0.4 GET /v2/lib/skopeo/tags/list
  expect_eq "anonymous pull from the blocked address" "$STATUS" 200
}

# access_lines REPO METHOD: the registry's access-log lines for METHOD requests on REPO.
access_lines() {
  grep -F 'registry::access' "$REG_LOG" | grep -F "repository=\"$1\"" | grep -F "method=$2 " || true
}

test_access_log_identity() {
  local tok lines
  tok=$(mint team-a) || fail "minting a token" || return 1
  run skopeo copy -q --dest-tls-verify=false --dest-creds "serviceaccount:$tok" \
    "oci-archive:$WORK/img.tar:latest" "docker://$REG_HOST/builds/team-a/logged:v1" || return 1
  lines=$(access_lines builds/team-a/logged PUT | grep -F 'endpoint="put_manifest"')
  [ -n "$lines" ] || fail "no access-log line for the manifest PUT" || return 1
  echo "$lines" | grep -qF 'identity="system:serviceaccount:team-a:builder"' ||
    fail "the manifest PUT's access-log line does not name the ServiceAccount: $lines" || return 1
  req -H "Accept: application/vnd.oci.image.manifest.v1+json" GET /v2/builds/team-a/logged/manifests/v1
  expect_eq "anonymous pull of builds/team-a/logged" "$STATUS" 200 || return 1
  lines=$(access_lines builds/team-a/logged GET | grep -F 'endpoint="get_manifest"' | grep -F 'status=200')
  [ "$(echo "$lines" | grep -c .)" = 1 ] || fail "expected one access-log line for the anonymous GET, got: $lines" || return 1
  echo "$lines" | grep -qF 'identity="anonymous"' ||
    fail "the anonymous pull's access-log line does not say anonymous: $lines" || return 1
  # a refused login names nobody, and the 401 is logged too
  req --from 127.0.0.6 -u "alice:wrong-$RANDOM" GET /v2/builds/team-a/logged/tags/list
  expect_eq "wrong password" "$STATUS" 401 || return 1
  lines=$(access_lines builds/team-a/logged GET | grep -F 'endpoint="list_tags"' | grep -F 'status=401')
  [ -n "$lines" ] || fail "the refused request has no access-log line" || return 1
  if echo "$lines" | grep -qF 'identity='; then fail "a refused login is logged with an identity: $lines" || return 1; fi
  true
}

test_no_secret_in_logs() {
  local s secrets=("$ALICE_PW" "$BOB_PW") tok key
  tok=$(mint team-a)
  secrets+=("${tok##*.}" "$(echo "$tok" | cut -d. -f2)")
  req -u "alice:$ALICE_PW" GET "/token?service=registry&scope=repository:lib/app:pull"
  secrets+=("$(echo "$BODY" | jq -r .token | cut -d. -f3)")
  key=$(cat "$WORK/data/auth/token-key" 2>/dev/null)
  [ -n "$key" ] || fail "no token key in storage at auth/token-key" || return 1
  secrets+=("$key" "$(printf 'alice:%s' "$ALICE_PW" | base64)")
  req GET /metrics
  echo "$BODY" >"$WORK/logs/metrics.txt"
  for s in "${secrets[@]}"; do
    [ -n "$s" ] || continue
    if grep -qF -- "$s" "$REG_LOG" "$WORK/logs/metrics.txt"; then
      fail "a secret (${#s} chars, starting ${s:0:4}) appears in the registry log or metrics" || return 1
    fi
  done
  grep -q "access control on" "$REG_LOG" || fail "start-up log does not say access control is on" || return 1
  grep -q "authentication failed" "$REG_LOG" || fail "failed logins are not logged at all"
}

t anonymous-push-401 test_anonymous_push_401
t health-and-metrics-open test_open_endpoints
t skopeo-creds-push-anonymous-pull test_skopeo_creds
t buildah-login-push test_buildah_login_push
t podman-login-anonymous-pull test_podman_login_pull
t oras-creds-push-anonymous-pull test_oras_creds
t ctr-anonymous-pull-push-user test_ctr_pull_anonymous_push_user
t serviceaccount-own-namespace-only test_serviceaccount_namespace
t bad-tokens-401 test_bad_tokens_401
t mount-and-catalog-follow-pull-rights test_mount_and_catalog
t hostile-authorization-headers test_hostile_headers
t failed-logins-429 test_failed_logins_429
t access-log-names-the-caller test_access_log_identity
t no-secret-in-logs test_no_secret_in_logs
finish
