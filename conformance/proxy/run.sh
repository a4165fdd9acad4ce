#!/usr/bin/env bash
# Pull-through cache suite: two upstream CNCF Distribution registries started here on 127.0.0.1
# (one with token authentication from a token service started here, one with Basic auth over
# TLS), a hanging upstream, and this registry configured with all three as upstreams. Real
# clients (skopeo, podman, buildah by the path prefix; containerd's CRI PullImage through
# hosts.toml, which adds ?ns=) pull through the cache. Further registries check a catch-all
# upstream (Distribution's proxy mode) with inline credentials, access rules on proxied names,
# two replicas on one S3 bucket (moto) with one SIGKILLed mid-fill, and eviction under a small
# cache limit by the scheduled collection and by `registry garbage-collect` run by hand.
#
#   conformance/proxy/run.sh [REGISTRY_BINARY]
#
# REGISTRY_BINARY defaults to target/x86_64-unknown-linux-gnu/release/registry. PROXY_BIG_MIB sets the size of the big
# layers (default 64; the suite needs about 16 times that in free space under /tmp). Prints `PASS name` / `FAIL name: reason`
# per test and `N passed, N failed`; exits non-zero on any failure. PROXY_LOG_DIR=DIR keeps the
# logs. Needs root, docker-registry, skopeo, podman, buildah, containerd, moto_server, python3
# with cryptography and grpcio-tools (scripts/install-test-deps.sh installs them; missing Debian
# packages are installed here).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=SCRIPTDIR/../../conformance/testlib.sh
. "$ROOT/conformance/testlib.sh"
suite_setup proxy "${1:-}"
CMD_TIMEOUT=${PROXY_CMD_TIMEOUT:-120}
FRESH=6 # seconds a cached tag stays fresh
BIG_MIB=${PROXY_BIG_MIB:-64} # size of the big layers (the issue asks for 64 MiB)
need=()
for c in docker-registry:docker-registry skopeo:skopeo podman:podman buildah:buildah containerd:containerd jq:jq openssl:openssl; do
  command -v "${c%%:*}" >/dev/null || need+=("${c#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null 2>&1; }
fi
[ -x "$REG_BIN" ] || { echo "FAIL setup: no registry binary at $REG_BIN"; echo "0 passed, 1 failed"; exit 1; }

WORK=$(mktemp -d /tmp/registry-proxy.XXXXXX)
mkdir -p "$WORK/logs"
PIDS=()
REG_PID="" UPA_PID="" CTRD_PID="" MOTO_PID=""
PASSED=0 FAILED=0 REASON=""
TLOG="$WORK/logs/setup.log"

cleanup() {
  local rc=$?
  set +e
  stop_pid "$CTRD_PID"
  stop_pid "$REG_PID"
  stop_pid "$UPA_PID"
  stop_pid "$MOTO_PID"
  for p in "${PIDS[@]}"; do stop_pid "$p"; done
  for s in podman buildah; do
    [ -d "$WORK/$s" ] && timeout 30 buildah --root "$WORK/$s/root" --runroot "$WORK/$s/run" rm -a >/dev/null 2>&1
  done
  finish_work "${PROXY_LOG_DIR:-}"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_http URL: waits up to 20 s for any HTTP answer
wait_http() {
  for _ in $(seq 200); do
    [ "$(curl -sk --noproxy '*' --max-time 2 -o /dev/null -w '%{http_code}' "$1")" != 000 ] && return 0
    sleep 0.1
  done
  return 1
}

setup_fail() { echo "FAIL setup: $*"; FAILED=$((FAILED + 1)); finish; }

# ---------------------------------------------------------------- upstreams
TOK_PORT=$(free_port) || setup_fail "no free port"
"$PY" "$HERE/helpers.py" token-server "$WORK" "$TOK_PORT" >"$WORK/logs/token.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$TOK_PORT/token" || setup_fail "token service did not start"

UPA_PORT=$(free_port) || setup_fail "no free port"
UPA="127.0.0.1:$UPA_PORT"
mkdir -p "$WORK/upa-data"
cat >"$WORK/upa.yml" <<EOF
version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: $WORK/upa-data
  delete:
    enabled: true
http:
  addr: $UPA
auth:
  token:
    realm: http://127.0.0.1:$TOK_PORT/token
    service: upstream-a
    issuer: proxy-test
    rootcertbundle: $WORK/cert.pem
EOF
start_upa() {
  env -u AWS_CA_BUNDLE docker-registry serve "$WORK/upa.yml" >>"$WORK/logs/upstream-a.log" 2>&1 &
  UPA_PID=$!
  wait_http "http://$UPA/v2/"
}
start_upa || setup_fail "upstream A (Distribution, token auth) did not start"

# Upstream B: Basic auth (htpasswd), served over TLS with a private CA.
UPB_PORT=$(free_port) || setup_fail "no free port"
UPB="127.0.0.1:$UPB_PORT"
mkdir -p "$WORK/upb-data" "$WORK/tls"
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=proxy-test-ca" \
  -keyout "$WORK/tls/ca.key" -out "$WORK/tls/ca.pem" >>"$TLOG" 2>&1 || setup_fail "openssl CA"
openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout "$WORK/tls/key.pem" \
  -out "$WORK/tls/leaf.csr" >>"$TLOG" 2>&1 || setup_fail "openssl CSR"
printf 'subjectAltName=IP:127.0.0.1\n' >"$WORK/tls/ext"
openssl x509 -req -in "$WORK/tls/leaf.csr" -CA "$WORK/tls/ca.pem" -CAkey "$WORK/tls/ca.key" \
  -CAcreateserial -days 1 -extfile "$WORK/tls/ext" -out "$WORK/tls/cert.pem" >>"$TLOG" 2>&1 \
  || setup_fail "openssl leaf"
"$PY" "$HERE/helpers.py" htpasswd puller s3cret >"$WORK/htpasswd"
printf 'puller' >"$WORK/upb-user"; printf 's3cret\n' >"$WORK/upb-pass"
cat >"$WORK/upb.yml" <<EOF
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: $WORK/upb-data
http:
  addr: $UPB
  tls:
    certificate: $WORK/tls/cert.pem
    key: $WORK/tls/key.pem
auth:
  htpasswd:
    realm: upstream-b
    path: $WORK/htpasswd
EOF
env -u AWS_CA_BUNDLE docker-registry serve "$WORK/upb.yml" >"$WORK/logs/upstream-b.log" 2>&1 &
PIDS+=($!)
wait_http "https://$UPB/v2/" || setup_fail "upstream B (Distribution, Basic auth over TLS) did not start"

HANG_PORT=$(free_port) || setup_fail "no free port"
"$PY" "$HERE/helpers.py" hang "$HANG_PORT" >"$WORK/logs/hang.log" 2>&1 &
PIDS+=($!)

# ---------------------------------------------------------------- images in the upstreams
"$PY" "$HERE/helpers.py" image "$WORK/img1" 1 "$BIG_MIB" >>"$TLOG" 2>&1 || setup_fail "building image 1"
"$PY" "$HERE/helpers.py" image "$WORK/img2" 2 "$BIG_MIB" >>"$TLOG" 2>&1 || setup_fail "building image 2"
"$PY" "$HERE/helpers.py" image "$WORK/img3" 3 >>"$TLOG" 2>&1 || setup_fail "building image 3"
"$PY" "$HERE/helpers.py" image "$WORK/img4" 4 "$BIG_MIB" in-index >>"$TLOG" 2>&1 || setup_fail "building image 4"
push() { # push LAYOUT:TAG DEST [creds]
  timeout 300 skopeo copy --all --dest-tls-verify=false ${3:+--dest-creds "$3"} "oci:$1" "docker://$2" >>"$TLOG" 2>&1
}
push "$WORK/img1:1" "$UPA/library/multi:1" x:y || setup_fail "push to upstream A"
push "$WORK/img1:big" "$UPA/library/big:1" x:y || setup_fail "push big to upstream A"
push "$WORK/img2:big" "$UPA/library/big:2" x:y || setup_fail "push big 2 to upstream A"
push "$WORK/img3:1" "$UPA/library/moving:1" x:y || setup_fail "push moving to upstream A"
push "$WORK/img4:1" "$UPA/library/replicated:1" x:y || setup_fail "push replicated to upstream A"
push "$WORK/img1:1" "$UPB/team/multi:1" puller:s3cret || setup_fail "push to upstream B"
idx_of() { jq -r '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == "'"$2"'") | .digest' "$1/index.json"; }
IDX1=$(idx_of "$WORK/img1" 1)
IDX2=$(idx_of "$WORK/img2" 1)
IDX3=$(idx_of "$WORK/img3" 1)
# skopeo compresses the uncompressed big layer on push: ask the upstream for its digest.
big_layer() { timeout 60 skopeo inspect --raw --tls-verify=false --creds x:y "docker://$UPA/library/big:$1" | jq -r '.layers[0].digest'; }
BIG1=$(big_layer 1)
BIG2=$(big_layer 2)
# The multi-arch image whose amd64 image has a big layer (its largest), as upstream A holds it.
REP_RAW=$(timeout 60 skopeo inspect --raw --tls-verify=false --creds x:y "docker://$UPA/library/replicated:1" 2>>"$TLOG")
REP_IDX="sha256:$(printf '%s' "$REP_RAW" | sha256sum | cut -d' ' -f1)"
REP_AMD=$(printf '%s' "$REP_RAW" | jq -r '.manifests[] | select(.platform.architecture == "amd64") | .digest')
read -r REP_BIG REP_BIG_SIZE < <(timeout 60 skopeo inspect --raw --tls-verify=false --creds x:y \
  "docker://$UPA/library/replicated@$REP_AMD" | jq -r '.layers | max_by(.size) | "\(.digest) \(.size)"')
case "$BIG1$BIG2$REP_BIG" in sha256:*sha256:*sha256:*) ;; *) setup_fail "no big layer digests ($BIG1, $BIG2, $REP_BIG)" ;; esac

# ---------------------------------------------------------------- this registry
PORT=$(free_port) || setup_fail "no free port"
REG="127.0.0.1:$PORT"
cat >"$WORK/registry.toml" <<EOF
listen = "$REG"
storage = "$WORK/data"
gc_interval = 0

[proxy]
spool_dir = "$WORK/spool"

[[proxy.upstreams]]
name = "upa.test"
url = "http://$UPA"
tag_freshness = $FRESH
first_byte_timeout = 3

[[proxy.upstreams]]
name = "upb.test"
url = "https://$UPB"
username_file = "$WORK/upb-user"
password_file = "$WORK/upb-pass"
ca_file = "$WORK/tls/ca.pem"

[[proxy.upstreams]]
name = "hang.test"
url = "http://127.0.0.1:$HANG_PORT"
first_byte_timeout = 2
EOF
start_reg() {
  "$REG_BIN" serve --config "$WORK/registry.toml" >>"$WORK/logs/registry.log" 2>&1 &
  REG_PID=$!
  wait_http "http://$REG/v2/"
}
start_reg || setup_fail "registry did not start (see registry.log)"

# ---------------------------------------------------------------- helpers
ACCEPT_ALL="application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json"
# digest_at URL: Docker-Content-Digest of a HEAD
digest_at() {
  curl -sS --noproxy '*' --max-time 30 -I -H "Accept: $ACCEPT_ALL" "$1" 2>>"$TLOG" | tr -d '\r' \
    | awk -F': ' 'tolower($1) == "docker-content-digest" { print $2 }'
}
# upstream_blob_gets DIGEST: blob GETs upstream A answered with the bytes (200) for DIGEST; the
# 401s that start the token flow carry no bytes
upstream_blob_gets() {
  grep -c "\"GET /v2/[^ ]*/blobs/$1 HTTP/[0-9.]*\" 200 " "$WORK/logs/upstream-a.log"
}
stored_blob() { echo "$WORK/data/blobs/sha256/${1:7:2}/${1#sha256:}"; }

# ---------------------------------------------------------------- tests
test_skopeo_prefix_token_upstream() {
  run skopeo inspect --raw --tls-verify=false "docker://$REG/upa.test/library/multi:1" || return 1
  expect_eq "index digest" "sha256:$(printf '%s' "$OUT" | sha256sum | cut -d' ' -f1)" "$IDX1" || return 1
  run skopeo copy --all --src-tls-verify=false "docker://$REG/upa.test/library/multi:1" "oci:$WORK/out-skopeo:1" || return 1
  expect_eq "copied index" "$(idx_of "$WORK/out-skopeo" 1)" "$IDX1" || return 1
  grep -q "token " "$WORK/logs/token.log" || fail "no token was fetched from the token service"
}

test_skopeo_prefix_basic_tls_upstream() {
  run skopeo copy --all --src-tls-verify=false "docker://$REG/upb.test/team/multi:1" "oci:$WORK/out-b:1" || return 1
  expect_eq "copied index" "$(idx_of "$WORK/out-b" 1)" "$IDX1"
}

test_podman_and_buildah_prefix() {
  run podman --root "$WORK/podman/root" --runroot "$WORK/podman/run" pull --tls-verify=false \
    "$REG/upa.test/library/multi:1" || return 1
  run podman --root "$WORK/podman/root" --runroot "$WORK/podman/run" image inspect \
    --format '{{.Digest}}' "$REG/upa.test/library/multi:1" || return 1
  expect_eq "podman image digest" "$OUT" "$IDX1" || return 1
  run buildah --root "$WORK/buildah/root" --runroot "$WORK/buildah/run" pull --tls-verify=false \
    "$REG/upa.test/library/multi:1" || return 1
}

start_containerd() {
  local C="$WORK/ctrd"
  mkdir -p "$C/hosts/upa.test"
  containerd_config "$C"
  # The node's view: upa.test is served by the upstream, with this registry as its mirror.
  cat >"$C/hosts/upa.test/hosts.toml" <<EOF
server = "http://$UPA"

[host."http://$REG"]
  capabilities = ["pull", "resolve"]
EOF
  containerd --config "$C/config.toml" >"$WORK/logs/containerd.log" 2>&1 &
  CTRD_PID=$!
  for _ in $(seq 100); do
    [ -S "$C/containerd.sock" ] && return 0
    sleep 0.1
  done
  fail "containerd did not start"
}

test_containerd_cri_mirror_ns() {
  start_containerd || return 1
  sleep 1
  run "$PY" "$ROOT/conformance/clients/cri/cri_pull.py" "$WORK/ctrd/containerd.sock" \
    "upa.test/library/multi:1" "$WORK/cri-gen" || return 1
  expect_eq "CRI repo_digests" "$(echo "$OUT" | jq -c .repo_digests)" "[\"upa.test/library/multi@$IDX1\"]" || return 1
  grep -q "ns=upa.test" "$WORK/logs/registry.log" "$WORK/logs/containerd.log" 2>/dev/null || true
  # containerd went through this registry: the mirror's cache holds the tag now.
  [ -e "$WORK/data/repositories/upa.test/library/multi/_tags/1" ] || fail "the mirror served nothing"
}

test_sixteen_concurrent_pulls_one_upstream_get() {
  local before i ok=0 pids=()
  before=$(upstream_blob_gets "$BIG1")
  # Each client's body is hashed as it arrives (16 copies on disk would take 1 GiB).
  for i in $(seq 16); do
    (curl -sS --noproxy '*' --max-time 120 "http://$REG/v2/upa.test/library/big/blobs/$BIG1" 2>>"$TLOG" \
      | sha256sum | cut -d' ' -f1 >"$WORK/big.$i") &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done
  for i in $(seq 16); do
    [ "sha256:$(cat "$WORK/big.$i")" = "$BIG1" ] && ok=$((ok + 1))
  done
  expect_eq "clients with the right bytes" "$ok" 16 || return 1
  sleep 1
  expect_eq "upstream blob GETs" "$(($(upstream_blob_gets "$BIG1") - before))" 1
}

test_killed_mid_fill_leaves_nothing_partial() {
  curl -sS --noproxy '*' --max-time 60 -o "$WORK/partial" "http://$REG/v2/upa.test/library/big/blobs/$BIG2" 2>>"$TLOG" &
  local c=$!
  for _ in $(seq 200); do [ -s "$WORK/partial" ] && break; sleep 0.01; done
  kill -9 "$REG_PID"; wait "$REG_PID" 2>/dev/null; REG_PID=""
  wait "$c" 2>/dev/null
  local f
  f=$(stored_blob "$BIG2")
  if [ -e "$f" ]; then
    expect_eq "a stored blob is whole" "sha256:$(sha256sum "$f" | cut -d' ' -f1)" "$BIG2" || return 1
  fi
  start_reg || fail "registry did not restart" || return 1
  run curl -sS --noproxy '*' --max-time 60 -o "$WORK/again" "http://$REG/v2/upa.test/library/big/blobs/$BIG2" || return 1
  expect_eq "bytes after restart" "sha256:$(sha256sum "$WORK/again" | cut -d' ' -f1)" "$BIG2"
}

test_digest_mismatch_is_an_error_and_not_cached() {
  # Corrupt a blob inside upstream A's storage (same length, other bytes).
  local layer f
  layer=$(jq -r '.manifests[0].digest' "$WORK/img3/blobs/sha256/${IDX3#sha256:}")
  layer=$(jq -r '.layers[0].digest' "$WORK/img3/blobs/sha256/${layer#sha256:}")
  f="$WORK/upa-data/docker/registry/v2/blobs/sha256/${layer:7:2}/${layer#sha256:}/data"
  [ -f "$f" ] || fail "upstream blob file $f missing" || return 1
  printf 'XX' | dd of="$f" bs=1 seek=0 conv=notrunc 2>/dev/null
  local code
  code=$(curl -sS --noproxy '*' --max-time 30 -o "$WORK/bad" -w '%{http_code}' "http://$REG/v2/upa.test/library/moving/blobs/$layer" 2>>"$TLOG")
  local rc=$?
  echo "status $code curl rc $rc" >>"$TLOG"
  if [ "$rc" = 0 ] && [ "sha256:$(sha256sum "$WORK/bad" | cut -d' ' -f1)" = "$layer" ]; then
    fail "the client got a complete, matching body from corrupt upstream bytes" || return 1
  fi
  [ "$rc" != 0 ] || [ "$code" -ge 500 ] || fail "no error: status $code, curl exit $rc" || return 1
  [ ! -e "$(stored_blob "$layer")" ] || fail "the mismatching blob was stored"
}

test_hanging_upstream_answers_in_time() {
  local start=$SECONDS code
  code=$(curl -sS --noproxy '*' --max-time 20 -o /dev/null -w '%{http_code}' -H "Accept: $ACCEPT_ALL" \
    "http://$REG/v2/library/x/manifests/1?ns=hang.test" 2>>"$TLOG")
  expect_eq "status" "$code" 504 || return 1
  [ $((SECONDS - start)) -le 5 ] || fail "took $((SECONDS - start)) s, limit 2 s"
}

test_push_into_proxied_name_denied() {
  local code
  code=$(curl -sS --noproxy '*' --max-time 20 -o "$WORK/deny" -w '%{http_code}' -X POST \
    "http://$REG/v2/upa.test/library/multi/blobs/uploads/" 2>>"$TLOG")
  expect_eq "status" "$code" 403 || return 1
  expect_eq "code" "$(jq -r '.errors[0].code' "$WORK/deny")" DENIED
}

test_tag_update_seen_after_freshness_only() {
  local url="http://$REG/v2/upa.test/library/moving/manifests/1"
  expect_eq "first pull" "$(digest_at "$url")" "$IDX3" || return 1
  push "$WORK/img2:1" "$UPA/library/moving:1" x:y || fail "push update upstream" || return 1
  expect_eq "within the freshness time" "$(digest_at "$url")" "$IDX3" || return 1
  sleep $((FRESH + 1))
  expect_eq "after the freshness time" "$(digest_at "$url")" "$IDX2"
}

test_upstream_stopped_pulls_still_work() {
  stop_pid "$UPA_PID"; UPA_PID=""
  sleep $((FRESH + 1)) # the tag is stale now: served anyway, the upstream being down
  run skopeo copy --all --src-tls-verify=false "docker://$REG/upa.test/library/multi:1" "oci:$WORK/out-down:1" || return 1
  expect_eq "copied index" "$(idx_of "$WORK/out-down" 1)" "$IDX1" || return 1
  run curl -sS --noproxy '*' --max-time 10 "http://$REG/metrics" || return 1
  echo "$OUT" | grep -q '^registry_proxy_stale_total{upstream="upa.test"} [1-9]' \
    || fail "stale serves not counted: $(echo "$OUT" | grep proxy_stale)"
}

# serve_extra NAME ADDR: starts another registry on $WORK/NAME.toml (log logs/NAME.log), adds it
# to PIDS, waits until it answers on ADDR.
serve_extra() {
  "$REG_BIN" serve --config "$WORK/$1.toml" >>"$WORK/logs/$1.log" 2>&1 &
  PIDS+=($!)
  wait_http "http://$2/v2/"
}

# http_code METHOD URL [CURL_ARGS...]: the status of one request; the body goes to $WORK/body
http_code() {
  local m=$1 u=$2
  shift 2
  curl -sS --noproxy '*' --max-time 30 -o "$WORK/body" -w '%{http_code}' -X "$m" -H "Accept: $ACCEPT_ALL" "$@" "$u" 2>>"$TLOG"
}

# Distribution's proxy mode: a registry whose catch-all upstream serves every plain name, with
# a second upstream reached by its prefix with inline credentials (Basic over TLS).
test_catch_all_upstream_mirrors_plain_names() {
  local p rc
  p=$(free_port) || fail "no free port" || return 1
  rc="127.0.0.1:$p"
  cat >"$WORK/catchall.toml" <<EOF
listen = "$rc"
storage = "$WORK/data-catchall"
gc_interval = 0

[proxy]
spool_dir = "$WORK/spool-catchall"

[[proxy.upstreams]]
name = "upa.test"
url = "http://$UPA"
catch_all = true

[[proxy.upstreams]]
name = "upb.test"
url = "https://$UPB"
username = "puller"
password = "s3cret"
ca_file = "$WORK/tls/ca.pem"
EOF
  serve_extra catchall "$rc" || fail "catch-all registry did not start" || return 1
  run skopeo copy --all --src-tls-verify=false "docker://$rc/library/multi:1" "oci:$WORK/out-all:1" || return 1
  expect_eq "index through the catch-all upstream" "$(idx_of "$WORK/out-all" 1)" "$IDX1" || return 1
  run skopeo copy --all --src-tls-verify=false "docker://$rc/upb.test/team/multi:1" "oci:$WORK/out-all-b:1" || return 1
  expect_eq "index with inline credentials" "$(idx_of "$WORK/out-all-b" 1)" "$IDX1" || return 1
  if run skopeo copy --all --dest-tls-verify=false "oci:$WORK/img3:1" "docker://$rc/builds/own:1"; then
    fail "a push into the catch-all mirror succeeded" || return 1
  fi
  expect_eq "push status" "$(http_code POST "http://$rc/v2/builds/own/blobs/uploads/")" 403 || return 1
  expect_eq "push code" "$(jq -r '.errors[0].code' "$WORK/body")" DENIED || return 1
  expect_eq "unknown ns" "$(http_code GET "http://$rc/v2/library/multi/manifests/1?ns=nowhere.test")" 404 || return 1
  expect_eq "unknown ns code" "$(jq -r '.errors[0].code' "$WORK/body")" NAME_UNKNOWN || return 1
  ! grep -q s3cret "$WORK/logs/catchall.log" || fail "the inline password is in the log"
}

# Access rules see a proxied name as <upstream>/<name> however it is reached: ?ns= and the
# prefix form are refused alike for a name no rule grants, a rule on the registry's own
# library/** grants no proxied name, an allowed proxied name pulls.
test_access_rules_apply_to_proxied_names() {
  local p ra form
  p=$(free_port) || fail "no free port" || return 1
  ra="127.0.0.1:$p"
  "$PY" "$HERE/helpers.py" htpasswd alice wonderland >"$WORK/reg-htpasswd"
  cat >"$WORK/authed.toml" <<EOF
listen = "$ra"
storage = "$WORK/data-authed"
gc_interval = 0

[proxy]
spool_dir = "$WORK/spool-authed"

[[proxy.upstreams]]
name = "upa.test"
url = "http://$UPA"

[auth]
htpasswd = "$WORK/reg-htpasswd"

[[auth.rules]]
repositories = ["upa.test/library/multi"]
identities = ["everyone"]
actions = ["pull"]

[[auth.rules]]
repositories = ["library/**"]
identities = ["everyone"]
actions = ["pull"]
EOF
  serve_extra authed "$ra" || fail "registry with [auth] did not start" || return 1
  for form in "library/big/manifests/1?ns=upa.test" "upa.test/library/big/manifests/1"; do
    expect_eq "anonymous $form" "$(http_code GET "http://$ra/v2/$form")" 401 || return 1
    expect_eq "alice $form" "$(http_code GET "http://$ra/v2/$form" -u alice:wonderland)" 403 || return 1
  done
  # library/** of the registry itself is open: not refused (just not there).
  expect_eq "own library/big" "$(http_code GET "http://$ra/v2/library/big/manifests/1")" 404 || return 1
  expect_eq "allowed by ns" "$(http_code GET "http://$ra/v2/library/multi/manifests/1?ns=upa.test")" 200 || return 1
  run skopeo copy --all --src-tls-verify=false "docker://$ra/upa.test/library/multi:1" "oci:$WORK/out-authed:1" || return 1
  expect_eq "allowed by prefix" "$(idx_of "$WORK/out-authed" 1)" "$IDX1"
}

# eviction_setup NAME GC_INTERVAL: a registry NAME with a cache limit of half the big layer, gc
# grace 1 s and a collection every GC_INTERVAL s (0: none); pushes an image into its own
# repository builds/own, pulls the big image through the cache, waits until its big layer is
# stored, then (1 s later) pulls the small one. Sets EV_REG, EV_DATA and EV_BIG (the big
# layer's file).
eviction_setup() {
  local p
  p=$(free_port) || fail "no free port" || return 1
  EV_REG="127.0.0.1:$p" EV_DATA="$WORK/data-$1"
  cat >"$WORK/$1.toml" <<EOF
listen = "$EV_REG"
storage = "$EV_DATA"
gc_interval = $2
gc_grace = 1

[proxy]
spool_dir = "$WORK/spool-$1"
max_cache_bytes = $((BIG_MIB << 19))

[[proxy.upstreams]]
name = "upa.test"
url = "http://$UPA"
EOF
  serve_extra "$1" "$EV_REG" || fail "registry $1 did not start" || return 1
  run skopeo copy --all --dest-tls-verify=false "oci:$WORK/img3:1" "docker://$EV_REG/builds/own:1" || return 1
  run skopeo copy --src-tls-verify=false "docker://$EV_REG/upa.test/library/big:1" "oci:$WORK/$1-big:1" || return 1
  EV_BIG="$EV_DATA/blobs/sha256/${BIG1:7:2}/${BIG1#sha256:}"
  # The fill stores the blob after the client has its bytes: wait for it (a scheduled
  # collection removes it no sooner than gc_grace after that).
  for _ in $(seq 300); do [ -e "$EV_BIG" ] && break; sleep 0.1; done
  [ -e "$EV_BIG" ] || fail "the big layer was never stored" || return 1
  sleep 1
  run skopeo copy --all --src-tls-verify=false "docker://$EV_REG/upa.test/library/multi:1" "oci:$WORK/$1-multi:1"
}

# eviction_kept: the registry's own image and the recently pulled cached image are still there.
eviction_kept() {
  local own_layer
  own_layer=$(jq -r '.manifests[0].digest' "$WORK/img3/blobs/sha256/${IDX3#sha256:}")
  own_layer=$(jq -r '.layers[0].digest' "$WORK/img3/blobs/sha256/${own_layer#sha256:}")
  [ -e "$EV_DATA/blobs/sha256/${own_layer:7:2}/${own_layer#sha256:}" ] || fail "a blob of the own repository was removed" || return 1
  [ -e "$EV_DATA/repositories/upa.test/library/multi/_tags/1" ] || fail "the recently pulled image was evicted" || return 1
  run skopeo copy --all --src-tls-verify=false "docker://$EV_REG/builds/own:1" "oci:$WORK/ev-own-$RANDOM:1" || return 1
}

# The scheduled collection (every 2 s) evicts the big image pulled first; the small image pulled
# after it and the image pushed into the registry's own repository stay.
test_eviction_least_recently_pulled_cached_only() {
  eviction_setup evict 2 || return 1
  for _ in $(seq 300); do [ -e "$EV_BIG" ] || break; sleep 0.1; done
  [ ! -e "$EV_BIG" ] || fail "the least recently pulled big layer was not evicted" || return 1
  grep -q "least recently pulled content evicted" "$WORK/logs/evict.log" || fail "no eviction logged" || return 1
  eviction_kept
}

# `registry garbage-collect CONFIG` run by hand (no scheduled collection) evicts the same way;
# its dry run only lists.
test_garbage_collect_by_hand_evicts() {
  eviction_setup evict-by-hand 0 || return 1
  sleep 2 # past gc_grace
  run "$REG_BIN" garbage-collect --dry-run "$WORK/evict-by-hand.toml" || return 1
  echo "$OUT" | grep -q "would evict cached upa.test/library/big@" || fail "the dry run lists no eviction: $OUT" || return 1
  [ -e "$EV_BIG" ] || fail "the dry run removed the big layer" || return 1
  run "$REG_BIN" garbage-collect "$WORK/evict-by-hand.toml" || return 1
  echo "$OUT" | grep -q "^evicted cached upa.test/library/big@" || fail "no eviction reported: $OUT" || return 1
  [ ! -e "$EV_BIG" ] || fail "the least recently pulled big layer was not removed" || return 1
  eviction_kept
}

# Two replicas over one S3 bucket (moto) pull the same uncached multi-arch image through the
# cache at once; replica 1 is SIGKILLed while it fills the image's big layer. Replica 2 serves
# the right bytes; after replica 1 restarts, both serve the whole image and fsck finds nothing
# partial or damaged in the bucket.
test_replicas_on_s3_killed_mid_fill() {
  start_moto proxy || return 1
  export AWS_ACCESS_KEY_ID=proxy AWS_SECRET_ACCESS_KEY=proxy-secret
  local i p addrs=() pids=()
  for i in 1 2; do
    p=$(free_port) || fail "no free port" || return 1
    addrs+=("127.0.0.1:$p")
    cat >"$WORK/replica$i.toml" <<EOF
listen = "127.0.0.1:$p"
storage = "s3://proxy/reg"
gc_interval = 0

[storage_options]
endpoint = "http://$MOTO_HOST"
allow_http = "true"
region = "us-east-1"

[proxy]
spool_dir = "$WORK/spool-replica$i"

[[proxy.upstreams]]
name = "upa.test"
url = "http://$UPA"
EOF
    serve_extra "replica$i" "${addrs[-1]}" || fail "replica $i did not start" || return 1
  done
  local r1_pid=${PIDS[-2]}
  # Replica 1's fill of the big layer: a spool file that has grown but is not complete.
  (timeout 120 skopeo copy --all --src-tls-verify=false "docker://${addrs[0]}/upa.test/library/replicated:1" \
    "oci:$WORK/rep1:1" >>"$TLOG" 2>&1) &
  pids+=($!)
  (timeout 120 skopeo copy --all --src-tls-verify=false "docker://${addrs[1]}/upa.test/library/replicated:1" \
    "oci:$WORK/rep2:1" >>"$TLOG" 2>&1; echo $? >"$WORK/rep2.rc") &
  pids+=($!)
  local size caught=""
  for _ in $(seq 1200); do
    size=$(find "$WORK/spool-replica1" -name 'fill-*' -size +1M -printf '%s\n' 2>/dev/null | sort -n | tail -n 1)
    if [ -n "$size" ] && [ "$size" -lt "$REP_BIG_SIZE" ]; then caught=$size; break; fi
    sleep 0.02
  done
  kill -9 "$r1_pid" 2>/dev/null
  wait "$r1_pid" 2>/dev/null
  echo "replica 1 killed with $caught of $REP_BIG_SIZE bytes spooled" >>"$TLOG"
  for p in "${pids[@]}"; do wait "$p"; done
  [ -n "$caught" ] || fail "replica 1's fill of the big layer was not caught in progress" || return 1
  expect_eq "replica 2's pull" "$(cat "$WORK/rep2.rc")" 0 || return 1
  expect_eq "replica 2's index" "$(idx_of "$WORK/rep2" 1)" "$REP_IDX" || return 1
  expect_eq "replica 2's big layer" "$(sha256sum "$WORK/rep2/blobs/sha256/${REP_BIG#sha256:}" | cut -d' ' -f1)" "${REP_BIG#sha256:}" || return 1
  # Restart replica 1 on the same bucket: it serves the whole image too.
  serve_extra replica1 "${addrs[0]}" || fail "replica 1 did not restart" || return 1
  run skopeo copy --all --src-tls-verify=false "docker://${addrs[0]}/upa.test/library/replicated:1" "oci:$WORK/rep1b:1" || return 1
  expect_eq "replica 1's index after restart" "$(idx_of "$WORK/rep1b" 1)" "$REP_IDX" || return 1
  for a in "${addrs[@]}"; do
    expect_eq "big layer from $a" "sha256:$(curl -sS --noproxy '*' --max-time 60 "http://$a/v2/upa.test/library/replicated/blobs/$REP_BIG" 2>>"$TLOG" | sha256sum | cut -d' ' -f1)" "$REP_BIG" || return 1
  done
  run "$REG_BIN" fsck --config "$WORK/replica1.toml" || return 1
  echo "$OUT" | grep -q " 0 problems" || fail "fsck: $OUT"
}

# A ranged GET of a blob nobody has pulled yet through this registry: 206 with the range's bytes
# from the fill it starts, then the whole blob from the cache.
test_ranged_get_during_fill() {
  local url="http://$REG/v2/upa.test/library/replicated/blobs/$REP_BIG" want="$WORK/rep2/blobs/sha256/${REP_BIG#sha256:}"
  [ -f "$want" ] || fail "no reference copy of the big layer (the replicas case makes it)" || return 1
  [ ! -e "$(stored_blob "$REP_BIG")" ] || fail "the big layer is cached already" || return 1
  local code
  code=$(curl -sS --noproxy '*' --max-time 60 -r 1000-66535 -D "$WORK/range.h" -o "$WORK/range.b" -w '%{http_code}' "$url" 2>>"$TLOG")
  expect_eq "status" "$code" 206 || return 1
  expect_eq "Content-Range" "$(tr -d '\r' <"$WORK/range.h" | awk -F': ' 'tolower($1) == "content-range" { print $2 }')" "bytes 1000-66535/$REP_BIG_SIZE" || return 1
  expect_eq "range bytes" "$(sha256sum <"$WORK/range.b" | cut -d' ' -f1)" "$(tail -c +1001 "$want" | head -c 65536 | sha256sum | cut -d' ' -f1)" || return 1
  expect_eq "whole blob" "sha256:$(curl -sS --noproxy '*' --max-time 60 "$url" 2>>"$TLOG" | sha256sum | cut -d' ' -f1)" "$REP_BIG"
}

t skopeo_prefix_token_upstream test_skopeo_prefix_token_upstream
t skopeo_prefix_basic_tls_upstream test_skopeo_prefix_basic_tls_upstream
t podman_and_buildah_prefix test_podman_and_buildah_prefix
t containerd_cri_mirror_ns test_containerd_cri_mirror_ns
t push_into_proxied_name_denied test_push_into_proxied_name_denied
t catch_all_upstream_mirrors_plain_names test_catch_all_upstream_mirrors_plain_names
t access_rules_apply_to_proxied_names test_access_rules_apply_to_proxied_names
t sixteen_concurrent_pulls_one_upstream_get test_sixteen_concurrent_pulls_one_upstream_get
t killed_mid_fill_leaves_nothing_partial test_killed_mid_fill_leaves_nothing_partial
t hanging_upstream_answers_in_time test_hanging_upstream_answers_in_time
t replicas_on_s3_killed_mid_fill test_replicas_on_s3_killed_mid_fill
t ranged_get_during_fill test_ranged_get_during_fill
t eviction_least_recently_pulled_cached_only test_eviction_least_recently_pulled_cached_only
t garbage_collect_by_hand_evicts test_garbage_collect_by_hand_evicts
t tag_update_seen_after_freshness_only test_tag_update_seen_after_freshness_only
t digest_mismatch_is_an_error_and_not_cached test_digest_mismatch_is_an_error_and_not_cached
t upstream_stopped_pulls_still_work test_upstream_stopped_pulls_still_work
finish
