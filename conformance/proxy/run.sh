#!/usr/bin/env bash
# Pull-through cache suite: two upstream CNCF Distribution registries started here on 127.0.0.1
# (one with token authentication from a token service started here, one with Basic auth over
# TLS), a hanging upstream, and this registry configured with all three as upstreams. Real
# clients (skopeo, podman, buildah by the path prefix; containerd's CRI PullImage through
# hosts.toml, which adds ?ns=) pull through the cache; a second registry checks eviction under a
# small cache limit.
#
#   conformance/proxy/run.sh [REGISTRY_BINARY]
#
# REGISTRY_BINARY defaults to target/x86_64-unknown-linux-gnu/release/registry. PROXY_BIG_MIB sets the size of the big
# layers (default 64; the suite needs about 10 times that in free space under /tmp). Prints `PASS name` / `FAIL name: reason`
# per test and `N passed, N failed`; exits non-zero on any failure. PROXY_LOG_DIR=DIR keeps the
# logs. Needs root, docker-registry, skopeo, podman, buildah, containerd, python3 with
# cryptography and grpcio-tools (scripts/install-test-deps.sh installs them; missing Debian
# packages are installed here).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=SCRIPTDIR/../../conformance/testlib.sh
. "$ROOT/conformance/testlib.sh"
HERE="$ROOT/conformance/proxy"
REG_BIN=${1:-$ROOT/target/x86_64-unknown-linux-gnu/release/registry}
PY=${PYTHON:-python3}
CMD_TIMEOUT=${PROXY_CMD_TIMEOUT:-120}
FRESH=6 # seconds a cached tag stays fresh
BIG_MIB=${PROXY_BIG_MIB:-64} # size of the big layers (the issue asks for 64 MiB)

unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY all_proxy AWS_CA_BUNDLE REQUESTS_CA_BUNDLE
export NO_PROXY="127.0.0.1,localhost" no_proxy="127.0.0.1,localhost"

if [ "$(id -u)" != 0 ]; then
  echo "FAIL setup: must run as root"; echo "0 passed, 1 failed"; exit 1
fi
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
REG_PID="" REG2_PID="" UPA_PID="" CTRD_PID=""
PASSED=0 FAILED=0 REASON=""
TLOG="$WORK/logs/setup.log"

stop_pid() {
  local p=$1
  [ -n "$p" ] || return 0
  kill "$p" 2>/dev/null || return 0
  for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$p" 2>/dev/null
  wait "$p" 2>/dev/null
  return 0
}

cleanup() {
  local rc=$?
  set +e
  stop_pid "$CTRD_PID"
  stop_pid "$REG_PID"
  stop_pid "$REG2_PID"
  stop_pid "$UPA_PID"
  for p in "${PIDS[@]}"; do stop_pid "$p"; done
  for s in podman buildah; do
    [ -d "$WORK/$s" ] && timeout 30 buildah --root "$WORK/$s/root" --runroot "$WORK/$s/run" rm -a >/dev/null 2>&1
  done
  umount_under "$WORK"
  if [ -n "${PROXY_LOG_DIR:-}" ]; then mkdir -p "$PROXY_LOG_DIR" && cp -r "$WORK/logs/." "$PROXY_LOG_DIR/"; fi
  rm -rf "$WORK" 2>/dev/null || { sleep 1; rm -rf "$WORK"; }
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  local p
  for _ in $(seq 100); do
    p=$((21000 + RANDOM % 2000))
    if port_free "$p"; then echo "$p"; return 0; fi
  done
  return 1
}

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
push() { # push LAYOUT:TAG DEST [creds]
  timeout 300 skopeo copy --all --dest-tls-verify=false ${3:+--dest-creds "$3"} "oci:$1" "docker://$2" >>"$TLOG" 2>&1
}
push "$WORK/img1:1" "$UPA/library/multi:1" x:y || setup_fail "push to upstream A"
push "$WORK/img1:big" "$UPA/library/big:1" x:y || setup_fail "push big to upstream A"
push "$WORK/img2:big" "$UPA/library/big:2" x:y || setup_fail "push big 2 to upstream A"
push "$WORK/img3:1" "$UPA/library/moving:1" x:y || setup_fail "push moving to upstream A"
push "$WORK/img1:1" "$UPB/team/multi:1" puller:s3cret || setup_fail "push to upstream B"
idx_of() { jq -r '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == "'"$2"'") | .digest' "$1/index.json"; }
IDX1=$(idx_of "$WORK/img1" 1)
IDX2=$(idx_of "$WORK/img2" 1)
IDX3=$(idx_of "$WORK/img3" 1)
# skopeo compresses the uncompressed big layer on push: ask the upstream for its digest.
big_layer() { timeout 60 skopeo inspect --raw --tls-verify=false --creds x:y "docker://$UPA/library/big:$1" | jq -r '.layers[0].digest'; }
BIG1=$(big_layer 1)
BIG2=$(big_layer 2)
case "$BIG1$BIG2" in sha256:*sha256:*) ;; *) setup_fail "no big layer digests ($BIG1, $BIG2)" ;; esac

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

# A second registry with a cache limit of half the big layer and a collection every 2 s: the big image
# pulled first is evicted, the small image pulled after it stays, and so does an image pushed
# into the registry's own repository.
test_eviction_least_recently_pulled_cached_only() {
  local p2 reg2
  p2=$(free_port) || fail "no free port" || return 1
  reg2="127.0.0.1:$p2"
  cat >"$WORK/registry2.toml" <<EOF
listen = "$reg2"
storage = "$WORK/data2"
gc_interval = 2
gc_grace = 1

[proxy]
spool_dir = "$WORK/spool2"
max_cache_bytes = $((BIG_MIB << 19))

[[proxy.upstreams]]
name = "upa.test"
url = "http://$UPA"
EOF
  "$REG_BIN" serve --config "$WORK/registry2.toml" >>"$WORK/logs/registry2.log" 2>&1 &
  REG2_PID=$!
  wait_http "http://$reg2/v2/" || fail "second registry did not start" || return 1
  run skopeo copy --all --dest-tls-verify=false "oci:$WORK/img3:1" "docker://$reg2/builds/own:1" || return 1
  run skopeo copy --src-tls-verify=false "docker://$reg2/upa.test/library/big:1" "oci:$WORK/ev-big:1" || return 1
  sleep 1
  run skopeo copy --all --src-tls-verify=false "docker://$reg2/upa.test/library/multi:1" "oci:$WORK/ev-multi:1" || return 1
  local big="$WORK/data2/blobs/sha256/${BIG1:7:2}/${BIG1#sha256:}"
  # The fill stores the blob after the client has its bytes: wait for it, then for its eviction.
  for _ in $(seq 300); do [ -e "$big" ] && break; sleep 0.1; done
  [ -e "$big" ] || fail "the big layer was never stored" || return 1
  for _ in $(seq 300); do [ -e "$big" ] || break; sleep 0.1; done
  [ ! -e "$big" ] || fail "the least recently pulled big layer was not evicted" || return 1
  grep -q "least recently pulled content evicted" "$WORK/logs/registry2.log" || fail "no eviction logged" || return 1
  local own_layer
  own_layer=$(jq -r '.manifests[0].digest' "$WORK/img3/blobs/sha256/${IDX3#sha256:}")
  own_layer=$(jq -r '.layers[0].digest' "$WORK/img3/blobs/sha256/${own_layer#sha256:}")
  [ -e "$WORK/data2/blobs/sha256/${own_layer:7:2}/${own_layer#sha256:}" ] || fail "a blob of the own repository was removed" || return 1
  run skopeo copy --all --src-tls-verify=false "docker://$reg2/builds/own:1" "oci:$WORK/ev-own:1" || return 1
  expect_eq "own image" "$(idx_of "$WORK/ev-own" 1)" "$IDX3" || return 1
  [ -e "$WORK/data2/repositories/upa.test/library/multi/_tags/1" ] || fail "the recently pulled image was evicted" || return 1
  stop_pid "$REG2_PID"; REG2_PID=""
}

t skopeo_prefix_token_upstream test_skopeo_prefix_token_upstream
t skopeo_prefix_basic_tls_upstream test_skopeo_prefix_basic_tls_upstream
t podman_and_buildah_prefix test_podman_and_buildah_prefix
t containerd_cri_mirror_ns test_containerd_cri_mirror_ns
t push_into_proxied_name_denied test_push_into_proxied_name_denied
t sixteen_concurrent_pulls_one_upstream_get test_sixteen_concurrent_pulls_one_upstream_get
t killed_mid_fill_leaves_nothing_partial test_killed_mid_fill_leaves_nothing_partial
t hanging_upstream_answers_in_time test_hanging_upstream_answers_in_time
t eviction_least_recently_pulled_cached_only test_eviction_least_recently_pulled_cached_only
t tag_update_seen_after_freshness_only test_tag_update_seen_after_freshness_only
t digest_mismatch_is_an_error_and_not_cached test_digest_mismatch_is_an_error_and_not_cached
t upstream_stopped_pulls_still_work test_upstream_stopped_pulls_still_work
finish
