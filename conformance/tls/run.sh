#!/usr/bin/env bash
# TLS tests: `registry cert`, HTTPS (HTTP/1.1 and HTTP/2 by ALPN), h2c on plain HTTP, real clients
# (skopeo, buildah, podman with --cert-dir; containerd through hosts.toml with `ca = ...`) trusting
# a CA made by `registry cert`, RSA/ECDSA/Ed25519 keys, certificate reload during a large download
# (Kubernetes-style symlink swap), a broken new pair, mutual TLS, and graceful shutdown over TLS.
#
#   conformance/tls/run.sh [REGISTRY_BINARY]
#
# REGISTRY_BINARY defaults to target/x86_64-unknown-linux-gnu/release/registry (what
# scripts/test.sh builds). Prints `PASS name` / `FAIL name: reason`
# per test and a final `N passed, N failed`; exits non-zero on any failure. Set TLS_LOG_DIR=DIR to
# keep the logs. Needs root (containerd, buildah and podman mount filesystems; the service name is
# mapped through a private /etc/hosts in a mount namespace). Traffic stays on 127.0.0.1, ports
# 18000-18999.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=SCRIPTDIR/../../conformance/testlib.sh
. "$ROOT/conformance/testlib.sh"
REG_BIN=${1:-$ROOT/target/x86_64-unknown-linux-gnu/release/registry}
CMD_TIMEOUT=${TLS_CMD_TIMEOUT:-120}

unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY all_proxy AWS_CA_BUNDLE REQUESTS_CA_BUNDLE \
  SSL_CERT_FILE SSL_CERT_DIR CURL_CA_BUNDLE
for v in $(env | awk -F= '/^REGISTRY_/ { print $1 }'); do unset "$v"; done
export NO_PROXY="127.0.0.1,localhost,$SVC" no_proxy="127.0.0.1,localhost,$SVC"

PASSED=0
FAILED=0
if ! [ -x "$REG_BIN" ]; then
  echo "FAIL setup: registry binary $REG_BIN not found (cargo build --release -p registry)"
  FAILED=1
  finish
fi
begin_root_suite tls "containerd, podman and buildah use real mounts"
PIDS=()      # registries and helpers started here
CTRD_PID=""

cleanup() {
  local rc=$?
  set +e
  local p
  for p in "${PIDS[@]}"; do
    kill "$p" 2>/dev/null
  done
  stop_pid "$CTRD_PID"
  for p in "${PIDS[@]}"; do
    stop_pid "$p"
  done
  [ -d "$WORK/podman" ] && timeout 30 "${PODMAN[@]}" rmi -af >/dev/null 2>&1
  finish_work "${TLS_LOG_DIR:-}"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- helpers

# fails CMD...: the command must fail; its stderr is in $ERR
fails() {
  if run "$@"; then
    fail "'$*' succeeded but should have failed"
    return 1
  fi
  REASON=""
}

expect_match() {
  echo "check $1: '$2' =~ '$3'" >>"$TLOG"
  [[ "$2" =~ $3 ]] || fail "$1: '${2:0:300}' does not match '$3'"
}

sha256_file() { echo "sha256:$(sha256sum "$1" | cut -d' ' -f1)"; }

# fingerprint of the certificate a server presents (uppercase hex, no colons)
served_fp() {
  timeout 10 openssl s_client -connect "$1" -servername "${2:-localhost}" </dev/null 2>/dev/null |
    openssl x509 -noout -fingerprint -sha256 2>/dev/null | sed 's/.*=//; s/://g'
}
file_fp() { openssl x509 -in "$1" -noout -fingerprint -sha256 | sed 's/.*=//; s/://g'; }

USED_PORTS=" "
# pick_port VAR: sets VAR to a free port in 18000-18999 not handed out before
pick_port() {
  local p
  for _ in $(seq 200); do
    p=$((18000 + RANDOM % 1000))
    if [[ "$USED_PORTS" != *" $p "* ]] && port_free "$p"; then
      USED_PORTS="$USED_PORTS$p "
      printf -v "$1" '%s' "$p"
      return 0
    fi
  done
  return 1
}

# start_registry NAME ARGS...: starts a registry with fresh storage, plain HTTP on $PLAIN and
# HTTPS on $TLSP (both chosen here), waits for /readyz on plain HTTP. Sets REG_PID, REG_LOG.
start_registry() {
  local name=$1
  shift
  pick_port PLAIN && pick_port TLSP || { fail "no free port in 18000-18999"; return 1; }
  REG_LOG="$WORK/logs/registry-$name.log"
  "$REG_BIN" serve --listen "127.0.0.1:$PLAIN" --tls-listen "127.0.0.1:$TLSP" \
    --storage "$WORK/data-$name" --fsync false --log-level debug --log-format text "$@" \
    >"$REG_LOG" 2>&1 &
  REG_PID=$!
  PIDS+=("$REG_PID")
  for _ in $(seq 100); do
    kill -0 "$REG_PID" 2>/dev/null || break
    if [ "$(curl -s --max-time 2 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PLAIN/readyz")" = 200 ]; then
      # the HTTPS listener is bound before /readyz can answer; check it accepts
      port_free "$TLSP" || return 0
    fi
    sleep 0.1
  done
  fail "registry $name did not start: $(tail -n 3 "$REG_LOG" | tr '\n' ' ')"
}

stop_registry() {
  kill "$1" 2>/dev/null
  for _ in $(seq 100); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$1" 2>/dev/null
}

# The service name resolves to 127.0.0.1 only through this file, bound over /etc/hosts for one
# command in a private mount namespace.
printf '127.0.0.1 localhost\n127.0.0.1 %s\n' "$SVC" >"$WORK/hosts"
net() {
  run unshare -m --propagation private sh -c 'mount --bind "$0" /etc/hosts && exec "$@"' \
    "$WORK/hosts" "$@"
}

# ---------------------------------------------------------------- HTTP requests with curl
# req METHOD URL [curl args...]: uses CURL_PROTO (protocol flags); sets ST (status), HV (HTTP
# version); body in $WORK/body, headers in $WORK/hdr
req() {
  local method=$1 url=$2 out
  shift 2
  local args=(-sS --max-time 100 "${CURL_PROTO[@]}" -D "$WORK/hdr" -o "$WORK/body" -w '%{http_code} %{http_version}')
  if [ "$method" = HEAD ]; then args+=(-I); else args+=(-X "$method"); fi
  out=$(timeout 120 curl "${args[@]}" "$@" "$url" 2>>"$TLOG") || out="000 0"
  [ "$method" = HEAD ] && : >"$WORK/body"
  ST=${out% *}
  HV=${out#* }
  echo "req $method $url -> $ST (HTTP/$HV)" >>"$TLOG"
}
header() {
  tr -d '\r' <"$WORK/hdr" | awk -v n="$(echo "$1" | tr 'A-Z' 'a-z')" -F': ' \
    'tolower($1) == n { sub(/^[^:]*: /, ""); v = $0 } END { print v }'
}
# want STATUS WHAT: the last response had STATUS and the expected HTTP version
want() {
  expect_eq "$2: status" "$ST" "$1" || return 1
  expect_eq "$2: HTTP version" "$HV" "$WANT_HV"
}
# the Location of the last response as an absolute URL
location() {
  local l
  l=$(header Location)
  case "$l" in
    http://* | https://*) echo "$l" ;;
    *) echo "$BASE$l" ;;
  esac
}
with_digest() {
  case "$1" in
    *\?*) echo "$1&digest=$2" ;;
    *) echo "$1?digest=$2" ;;
  esac
}

OCI_MANIFEST=application/vnd.oci.image.manifest.v1+json

# Test data: a 24 MiB layer, a config, and a manifest naming both.
head -c $((24 * 1024 * 1024)) /dev/urandom >"$WORK/layer.bin"
LAYER_D=$(sha256_file "$WORK/layer.bin")
LAYER_N=$(stat -c %s "$WORK/layer.bin")
printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}' >"$WORK/config.json"
CFG_D=$(sha256_file "$WORK/config.json")
CFG_N=$(stat -c %s "$WORK/config.json")
printf '{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":%s}]}' \
  "$OCI_MANIFEST" "$CFG_D" "$CFG_N" "$LAYER_D" "$LAYER_N" >"$WORK/manifest.json"
MAN_D=$(sha256_file "$WORK/manifest.json")

# api_roundtrip REPO: every kind of endpoint over BASE with CURL_PROTO; each answer must come in
# HTTP version WANT_HV. The layer goes up as one streamed PATCH and comes back streamed.
api_roundtrip() {
  local repo=$1 loc
  req GET "$BASE/v2/"
  want 200 "GET /v2/" || return 1
  expect_eq "Docker-Distribution-API-Version" "$(header Docker-Distribution-API-Version)" registry/2.0 || return 1
  # chunked upload: POST, streamed PATCH, status, PUT ?digest=
  req POST "$BASE/v2/$repo/blobs/uploads/"
  want 202 "POST upload" || return 1
  loc=$(location)
  req PATCH "$loc" -H 'Content-Type: application/octet-stream' -T "$WORK/layer.bin"
  want 202 "PATCH 24 MiB" || return 1
  loc=$(location)
  req GET "$loc"
  want 204 "GET upload status" || return 1
  expect_eq "upload Range" "$(header Range)" "0-$((LAYER_N - 1))" || return 1
  req PUT "$(with_digest "$loc" "$LAYER_D")"
  want 201 "PUT finish upload" || return 1
  expect_eq "Docker-Content-Digest of the layer" "$(header Docker-Content-Digest)" "$LAYER_D" || return 1
  # monolithic: POST then PUT with the body
  req POST "$BASE/v2/$repo/blobs/uploads/"
  want 202 "POST upload (config)" || return 1
  loc=$(location)
  req PUT "$(with_digest "$loc" "$CFG_D")" -H 'Content-Type: application/octet-stream' -T "$WORK/config.json"
  want 201 "PUT monolithic config" || return 1
  # an upload cancelled
  req POST "$BASE/v2/$repo/blobs/uploads/"
  want 202 "POST upload (to cancel)" || return 1
  loc=$(location)
  req DELETE "$loc"
  want 204 "DELETE upload" || return 1
  # blob reads
  req HEAD "$BASE/v2/$repo/blobs/$LAYER_D"
  want 200 "HEAD layer" || return 1
  expect_eq "HEAD layer Content-Length" "$(header Content-Length)" "$LAYER_N" || return 1
  req GET "$BASE/v2/$repo/blobs/$LAYER_D"
  want 200 "GET layer" || return 1
  expect_eq "sha256 of the layer downloaded" "$(sha256_file "$WORK/body")" "$LAYER_D" || return 1
  req GET "$BASE/v2/$repo/blobs/$LAYER_D" -H 'Range: bytes=1000-1999'
  want 206 "GET layer range" || return 1
  cmp -s "$WORK/body" <(tail -c +1001 "$WORK/layer.bin" | head -c 1000) || fail "range bytes differ" || return 1
  # manifests, tags, referrers
  req PUT "$BASE/v2/$repo/manifests/v1" -H "Content-Type: $OCI_MANIFEST" -T "$WORK/manifest.json"
  want 201 "PUT manifest" || return 1
  expect_eq "Docker-Content-Digest of the manifest" "$(header Docker-Content-Digest)" "$MAN_D" || return 1
  req HEAD "$BASE/v2/$repo/manifests/v1" -H "Accept: $OCI_MANIFEST"
  want 200 "HEAD manifest" || return 1
  expect_eq "HEAD manifest digest" "$(header Docker-Content-Digest)" "$MAN_D" || return 1
  req GET "$BASE/v2/$repo/manifests/$MAN_D" -H "Accept: $OCI_MANIFEST"
  want 200 "GET manifest by digest" || return 1
  cmp -s "$WORK/body" "$WORK/manifest.json" || fail "manifest bytes differ" || return 1
  req GET "$BASE/v2/$repo/tags/list"
  want 200 "GET tags/list" || return 1
  expect_eq "tags" "$(jq -c .tags "$WORK/body")" '["v1"]' || return 1
  req GET "$BASE/v2/$repo/referrers/$MAN_D"
  want 200 "GET referrers" || return 1
  expect_eq "referrers mediaType" "$(jq -r .mediaType "$WORK/body")" application/vnd.oci.image.index.v1+json || return 1
  req DELETE "$BASE/v2/$repo/manifests/$MAN_D"
  want 202 "DELETE manifest" || return 1
  req GET "$BASE/v2/$repo/manifests/v1" -H "Accept: $OCI_MANIFEST"
  want 404 "GET deleted manifest" || return 1
  expect_eq "error code" "$(jq -r '.errors[0].code' "$WORK/body")" MANIFEST_UNKNOWN
}

# ---------------------------------------------------------------- certificates
CERTS="$WORK/certs"
test_cert_command() {
  run "$REG_BIN" cert --out "$CERTS" || return 1
  local f
  for f in ca.crt ca.key tls.crt tls.key; do
    [ -s "$CERTS/$f" ] || fail "$f not written" || return 1
  done
  expect_eq "mode of tls.key" "$(stat -c %a "$CERTS/tls.key")" 600 || return 1
  expect_eq "mode of ca.key" "$(stat -c %a "$CERTS/ca.key")" 600 || return 1
  run openssl verify -CAfile "$CERTS/ca.crt" "$CERTS/tls.crt" || return 1
  run openssl x509 -in "$CERTS/tls.crt" -noout -ext subjectAltName || return 1
  expect_match "SANs" "$(echo "$OUT" | tr -d ' \n')" \
    'DNS:builds.registry.svc.cluster.local,DNS:builds.registry.svc,DNS:builds.registry,DNS:localhost,IPAddress:127.0.0.1' || return 1
  run openssl x509 -in "$CERTS/ca.crt" -noout -ext basicConstraints || return 1
  expect_match "CA basicConstraints" "$OUT" 'CA:TRUE' || return 1
  # no overwrite without --force; nothing changes
  local before
  before=$(file_fp "$CERTS/tls.crt")
  fails "$REG_BIN" cert --out "$CERTS" || return 1
  expect_match "refusal message" "$ERR" 'refusing to overwrite' || return 1
  expect_eq "tls.crt after a refused run" "$(file_fp "$CERTS/tls.crt")" "$before" || return 1
  run "$REG_BIN" cert --out "$WORK/forced" || return 1
  run "$REG_BIN" cert --out "$WORK/forced" --force || return 1
  # a Secret manifest: type kubernetes.io/tls with tls.crt, tls.key, ca.crt
  run "$REG_BIN" cert --out "$WORK/secret" --secret registry-tls --namespace registry || return 1
  echo "$OUT" >"$WORK/secret.yaml"
  expect_match "Secret kind" "$OUT" $'kind: Secret\n' || return 1
  expect_match "Secret type" "$OUT" $'type: kubernetes.io/tls\n' || return 1
  expect_match "Secret name/namespace" "$OUT" $'name: registry-tls\n  namespace: registry\n' || return 1
  for f in tls.crt tls.key ca.crt; do
    awk -v k="  $f:" 'index($0, k) == 1 { print $2 }' "$WORK/secret.yaml" | base64 -d >"$WORK/secret.$f" ||
      fail "$f in the Secret is not base64" || return 1
    cmp -s "$WORK/secret.$f" "$WORK/secret/$f" || fail "$f in the Secret differs from the file" || return 1
  done
  if grep -q 'ca.key' "$WORK/secret.yaml"; then fail "the Secret holds the CA key" || return 1; fi
  # a client certificate from the CA; a second server pair from the same CA (used for reload)
  run "$REG_BIN" cert --ca "$CERTS" --client builder --out "$WORK/client" || return 1
  run openssl verify -CAfile "$CERTS/ca.crt" -purpose sslclient "$WORK/client/builder.crt" || return 1
  fails "$REG_BIN" cert --client builder --out "$WORK/client-noca" || return 1
  run "$REG_BIN" cert --ca "$CERTS" --out "$WORK/next" || return 1
  run openssl verify -CAfile "$CERTS/ca.crt" "$WORK/next/tls.crt" || return 1
  [ ! -e "$WORK/next/ca.key" ] || fail "--ca wrote a CA key" || return 1
  # other key types: Ed25519 by `registry cert`, RSA (PKCS#1) by openssl, both under our CA
  run "$REG_BIN" cert --ca "$CERTS" --key-type ed25519 --out "$WORK/ed25519" || return 1
  run openssl genrsa -traditional -out "$WORK/rsa.key" 2048 || return 1
  run openssl req -new -key "$WORK/rsa.key" -subj "/CN=$SVC" -out "$WORK/rsa.csr" || return 1
  printf 'subjectAltName=DNS:%s,DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' "$SVC" >"$WORK/rsa.ext"
  run openssl x509 -req -in "$WORK/rsa.csr" -CA "$CERTS/ca.crt" -CAkey "$CERTS/ca.key" \
    -CAcreateserial -days 30 -extfile "$WORK/rsa.ext" -out "$WORK/rsa.crt" || return 1
  # an unrelated CA for negative tests
  run "$REG_BIN" cert --out "$WORK/other" || return 1
  run "$REG_BIN" cert --ca "$WORK/other" --client stranger --out "$WORK/other-client" || return 1
}

t cert-command test_cert_command
if ! [ -s "$CERTS/tls.crt" ] || ! [ -s "$WORK/rsa.crt" ]; then
  echo "FAIL setup: certificates were not made; the other tests need them"
  FAILED=$((FAILED + 1))
  finish
fi

# ---------------------------------------------------------------- the main TLS registry
TLOG="$WORK/logs/setup.log"
if ! start_registry main --tls-cert "$CERTS/tls.crt" --tls-key "$CERTS/tls.key"; then
  echo "FAIL setup: $REASON"
  FAILED=$((FAILED + 1))
  finish
fi
MAIN_PLAIN=$PLAIN
MAIN_TLS=$TLSP
MAIN_HOST="$SVC:$MAIN_TLS"
# curl resolves the service name with --resolve (no resolver involved)
RESOLVE=(--resolve "$SVC:$MAIN_TLS:127.0.0.1")
echo "# registry $REG_BIN: plain 127.0.0.1:$MAIN_PLAIN, HTTPS 127.0.0.1:$MAIN_TLS, work dir $WORK" >&2

# push_plain REPO FILE DIGEST WHAT: over plain HTTP/1.1 on $PLAIN (left set in BASE, CURL_PROTO and
# WANT_HV), POST an upload (202) and PUT FILE with ?digest=DIGEST (201; WHAT names it).
push_plain() {
  BASE="http://127.0.0.1:$PLAIN"
  CURL_PROTO=()
  WANT_HV=1.1
  req POST "$BASE/v2/$1/blobs/uploads/"
  want 202 "POST" || return 1
  req PUT "$(with_digest "$(location)" "$3")" -H 'Content-Type: application/octet-stream' -T "$2"
  want 201 "PUT $4"
}

test_https_http1() {
  BASE="https://$MAIN_HOST"
  CURL_PROTO=(--http1.1 --cacert "$CERTS/ca.crt" "${RESOLVE[@]}")
  WANT_HV=1.1
  api_roundtrip tls/http1
}

test_https_http2() {
  BASE="https://$MAIN_HOST"
  CURL_PROTO=(--http2 --cacert "$CERTS/ca.crt" "${RESOLVE[@]}")
  WANT_HV=2
  api_roundtrip tls/http2 || return 1
  # ALPN: the server picks h2 when offered, http/1.1 otherwise
  run sh -c "openssl s_client -connect 127.0.0.1:$MAIN_TLS -alpn h2,http/1.1 </dev/null 2>/dev/null | grep '^ALPN protocol'" || return 1
  expect_eq "ALPN with h2 offered" "$OUT" "ALPN protocol: h2" || return 1
  run sh -c "openssl s_client -connect 127.0.0.1:$MAIN_TLS -alpn http/1.1 </dev/null 2>/dev/null | grep '^ALPN protocol'" || return 1
  expect_eq "ALPN with only http/1.1 offered" "$OUT" "ALPN protocol: http/1.1"
}

test_h2c_prior_knowledge() {
  BASE="http://127.0.0.1:$MAIN_PLAIN"
  CURL_PROTO=(--http2-prior-knowledge)
  WANT_HV=2
  api_roundtrip plain/h2c || return 1
  # and plain HTTP/1.1 still works on the same port
  CURL_PROTO=(--http1.1)
  WANT_HV=1.1
  req GET "$BASE/v2/"
  want 200 "HTTP/1.1 on the plain port"
}

test_no_ca_fails() {
  local rc=0
  timeout 30 curl -sS -o /dev/null "${RESOLVE[@]}" "https://$MAIN_HOST/v2/" 2>"$WORK/err" || rc=$?
  expect_eq "curl exit code without the CA (60: certificate problem)" "$rc" 60 || return 1
  rc=0
  timeout 30 curl -sS -o /dev/null --cacert "$WORK/other/ca.crt" "${RESOLVE[@]}" "https://$MAIN_HOST/v2/" 2>"$WORK/err" || rc=$?
  expect_eq "curl exit code with another CA" "$rc" 60 || return 1
  # a name the certificate does not cover
  rc=0
  timeout 30 curl -sS -o /dev/null --cacert "$CERTS/ca.crt" --resolve "wrong.example:$MAIN_TLS:127.0.0.1" \
    "https://wrong.example:$MAIN_TLS/v2/" 2>"$WORK/err" || rc=$?
  expect_eq "curl exit code for a name not in the certificate" "$rc" 60 || return 1
  mkdir -p "$WORK/empty-certs"
  net skopeo inspect --cert-dir "$WORK/empty-certs" "docker://$MAIN_HOST/tls/http2:v1" && {
    fail "skopeo without the CA succeeded"
    return 1
  }
  expect_match "skopeo error without the CA" "$ERR" 'x509|certificate' || return 1
  REASON=""
}

# ---------------------------------------------------------------- real clients
CERT_DIR="$WORK/cert-dir"
mkdir -p "$CERT_DIR"
cp "$CERTS/ca.crt" "$CERT_DIR/ca.crt"
export REGISTRY_AUTH_FILE="$WORK/auth.json"
echo '{"auths":{}}' >"$REGISTRY_AUTH_FILE"
BUILDAH=(buildah --root "$WORK/buildah/root" --runroot "$WORK/buildah/runroot" --storage-driver overlay)
BUILDAH_PULL=(buildah --root "$WORK/buildah-pull/root" --runroot "$WORK/buildah-pull/runroot" --storage-driver overlay)
mkdir -p "$WORK/podman/tmp"
PODMAN=(podman --root "$WORK/podman/root" --runroot "$WORK/podman/runroot" --storage-driver overlay
  --tmpdir "$WORK/podman/tmp" --cgroup-manager cgroupfs --events-backend file)
TOKEN="tls-test-$RANDOM$RANDOM"

build_image() {
  [ -x /bin/busybox ] || fail "/bin/busybox missing (apt busybox-static)" || return 1
  token_image tls-img localhost/tls/img:latest || return 1
  run "${BUILDAH[@]}" push -q localhost/tls/img:latest "oci-archive:$WORK/img.tar:latest" || return 1
}
IMAGE_OK=0
TLOG="$WORK/logs/setup-image.log"
if build_image; then IMAGE_OK=1; else echo "# building the test image failed: $REASON" >&2; fi

need_image() { [ "$IMAGE_OK" = 1 ] || fail "test image could not be built (see setup-image.log)"; }

# plain_manifest REPO TAG: digest of the manifest as the registry serves it (over plain HTTP)
plain_digest() {
  curl -sS --max-time 30 -I -H "Accept: $OCI_MANIFEST" "http://127.0.0.1:$MAIN_PLAIN/v2/$1/manifests/$2" |
    tr -d '\r' | awk -F': ' 'tolower($1) == "docker-content-digest" { print $2 }'
}

test_skopeo() {
  need_image || return 1
  net skopeo copy -q --dest-cert-dir "$CERT_DIR" --digestfile "$WORK/skopeo.digest" \
    "oci-archive:$WORK/img.tar:latest" "docker://$MAIN_HOST/tls/skopeo:v1" || return 1
  SKOPEO_DIGEST=$(cat "$WORK/skopeo.digest")
  expect_eq "digest the registry serves" "$(plain_digest tls/skopeo v1)" "$SKOPEO_DIGEST" || return 1
  net skopeo inspect --cert-dir "$CERT_DIR" "docker://$MAIN_HOST/tls/skopeo:v1" || return 1
  expect_eq "skopeo inspect Digest" "$(echo "$OUT" | jq -r .Digest)" "$SKOPEO_DIGEST" || return 1
  net skopeo copy -q --src-cert-dir "$CERT_DIR" "docker://$MAIN_HOST/tls/skopeo:v1" "oci:$WORK/skopeo-out:v1" || return 1
  expect_eq "digest copied back" "$(jq -r '.manifests[0].digest' "$WORK/skopeo-out/index.json")" "$SKOPEO_DIGEST"
}

test_buildah() {
  need_image || return 1
  local digest id c mnt
  net "${BUILDAH[@]}" push -q --cert-dir "$CERT_DIR" --digestfile "$WORK/buildah.digest" \
    localhost/tls/img:latest "docker://$MAIN_HOST/tls/buildah:v1" || return 1
  digest=$(cat "$WORK/buildah.digest")
  expect_eq "digest the registry serves" "$(plain_digest tls/buildah v1)" "$digest" || return 1
  net "${BUILDAH_PULL[@]}" pull -q --cert-dir "$CERT_DIR" "$MAIN_HOST/tls/buildah:v1" || return 1
  id=$OUT
  run "${BUILDAH[@]}" inspect --type image -f '{{.FromImageID}}' localhost/tls/img:latest || return 1
  expect_eq "image ID pulled back" "$id" "$OUT" || return 1
  run "${BUILDAH_PULL[@]}" from -q --pull-never --name tls-pulled "$MAIN_HOST/tls/buildah:v1" || return 1
  c=$OUT
  run "${BUILDAH_PULL[@]}" mount "$c" || return 1
  mnt=$OUT
  expect_eq "/token.txt in the pulled image" "$(cat "$mnt/token.txt" 2>&1)" "$TOKEN" || return 1
  run "${BUILDAH_PULL[@]}" rm "$c"
}

test_podman() {
  need_image || return 1
  local id digest
  run "${PODMAN[@]}" pull -q "oci-archive:$WORK/img.tar:latest" || return 1
  id=$OUT
  net "${PODMAN[@]}" push -q --cert-dir "$CERT_DIR" --digestfile "$WORK/podman.digest" "$id" \
    "docker://$MAIN_HOST/tls/podman:v1" || return 1
  digest=$(cat "$WORK/podman.digest")
  expect_eq "digest the registry serves" "$(plain_digest tls/podman v1)" "$digest" || return 1
  run "${PODMAN[@]}" rmi -af || return 1
  net "${PODMAN[@]}" pull -q --cert-dir "$CERT_DIR" "$MAIN_HOST/tls/podman:v1" || return 1
  expect_eq "image ID pulled back" "$OUT" "$id" || return 1
  # without the CA podman refuses
  run "${PODMAN[@]}" rmi -af || return 1
  net "${PODMAN[@]}" pull -q --cert-dir "$WORK/empty-certs" "$MAIN_HOST/tls/podman:v1" && {
    fail "podman pull without the CA succeeded"
    return 1
  }
  expect_match "podman error without the CA" "$ERR" 'x509|certificate' || return 1
  REASON=""
}

# ---------------------------------------------------------------- containerd
CTRD="$WORK/containerd"
CTR=(ctr --address "$CTRD/containerd.sock" --namespace tls-test)
start_containerd() {
  mkdir -p "$CTRD/hosts/$SVC" "$CTRD/hosts-noca/$SVC"
  containerd_config "$CTRD"
  # what a node gets: the service name, HTTPS, and the CA made by `registry cert`
  hosts_toml "$CTRD/hosts/$SVC/hosts.toml" "https://$SVC:$MAIN_TLS" "$CERTS/ca.crt"
  hosts_toml "$CTRD/hosts-noca/$SVC/hosts.toml" "https://$SVC:$MAIN_TLS"
  start_private_containerd "$CTRD" "${CTR[@]}"
}

test_containerd() {
  need_image || return 1
  [ -n "${SKOPEO_DIGEST:-}" ] || fail "tls/skopeo:v1 was not pushed (skopeo test failed)" || return 1
  start_containerd || return 1
  local ref="$SVC/tls/skopeo:v1" got
  # without the CA in hosts.toml the pull fails on the certificate
  net "${CTR[@]}" images pull --hosts-dir "$CTRD/hosts-noca" "$ref" && {
    fail "ctr pull without ca in hosts.toml succeeded"
    return 1
  }
  expect_match "ctr error without the CA" "$ERR$OUT" 'x509|certificate' || return 1
  REASON=""
  net "${CTR[@]}" images pull --hosts-dir "$CTRD/hosts" "$ref" || return 1
  run "${CTR[@]}" images ls "name==$ref" || return 1
  got=$(echo "$OUT" | awk 'NR > 1 { print $3 }')
  expect_eq "digest of the image ctr pulled" "$got" "$SKOPEO_DIGEST" || return 1
  run "${CTR[@]}" run --rm --fifo-dir "$CTRD/fifo" --runc-root "$CTRD/runc" "$ref" "tls-run-$$" || return 1
  expect_eq "output of ctr run" "$OUT" "$TOKEN" || return 1
  # and push through the same hosts.toml
  run "${CTR[@]}" images tag "$ref" "$SVC/tls/ctr-push:v1" || return 1
  net "${CTR[@]}" images push --hosts-dir "$CTRD/hosts" "$SVC/tls/ctr-push:v1" || return 1
  expect_eq "digest the registry serves after ctr push" "$(plain_digest tls/ctr-push v1)" "$SKOPEO_DIGEST"
}

# ---------------------------------------------------------------- key types
# key_type_server NAME CERT KEY: a registry with that pair; curl (HTTP/2) and skopeo trust it.
key_type_server() {
  local name=$1 cert=$2 key=$3 pid
  start_registry "$name" --tls-cert "$cert" --tls-key "$key" || return 1
  pid=$REG_PID
  expect_eq "served certificate" "$(served_fp "127.0.0.1:$TLSP")" "$(file_fp "$cert")" || return 1
  BASE="https://$SVC:$TLSP"
  CURL_PROTO=(--http2 --cacert "$CERTS/ca.crt" --resolve "$SVC:$TLSP:127.0.0.1")
  WANT_HV=2
  req GET "$BASE/v2/"
  want 200 "GET /v2/ with a $name key" || return 1
  if [ "$IMAGE_OK" = 1 ]; then
    net skopeo copy -q --dest-cert-dir "$CERT_DIR" "oci-archive:$WORK/img.tar:latest" \
      "docker://$SVC:$TLSP/tls/$name:v1" || return 1
  fi
  stop_registry "$pid"
}
test_rsa_key() {
  head -n1 "$WORK/rsa.key" | grep -q 'BEGIN RSA PRIVATE KEY' || fail "openssl did not write a PKCS#1 key" || return 1
  key_type_server rsa "$WORK/rsa.crt" "$WORK/rsa.key"
}
test_ed25519_key() {
  run openssl pkey -in "$WORK/ed25519/tls.key" -noout -text || return 1
  expect_match "key type" "$OUT" 'ED25519' || return 1
  key_type_server ed25519 "$WORK/ed25519/tls.crt" "$WORK/ed25519/tls.key"
}
test_ecdsa_sec1_key() {
  # the same ECDSA key in SEC1 form ("BEGIN EC PRIVATE KEY")
  run openssl ec -in "$CERTS/tls.key" -out "$WORK/sec1.key" || return 1
  head -n1 "$WORK/sec1.key" | grep -q 'BEGIN EC PRIVATE KEY' || fail "not a SEC1 key" || return 1
  key_type_server ecdsa-sec1 "$CERTS/tls.crt" "$WORK/sec1.key"
}
test_bad_pair_refused_at_start() {
  local rc=0
  pick_port PLAIN && pick_port TLSP || { fail "no free port"; return 1; }
  timeout 20 "$REG_BIN" serve --listen "127.0.0.1:$PLAIN" --tls-listen "127.0.0.1:$TLSP" --storage "$WORK/data-bad" \
    --tls-cert "$CERTS/tls.crt" --tls-key "$WORK/next/tls.key" >"$WORK/logs/registry-bad.log" 2>&1 || rc=$?
  [ "$rc" != 0 ] && [ "$rc" != 124 ] || fail "a mismatched pair did not stop the start (exit $rc)" || return 1
  expect_match "error for a mismatched pair" "$(cat "$WORK/logs/registry-bad.log")" 'does not belong' || return 1
  rc=0
  timeout 20 "$REG_BIN" serve --listen "127.0.0.1:$PLAIN" --storage "$WORK/data-bad" \
    --tls-cert "$CERTS/tls.crt" >"$WORK/logs/registry-bad2.log" 2>&1 || rc=$?
  expect_eq "exit code with tls_cert but no tls_key" "$rc" 2
}

# ---------------------------------------------------------------- reload
# A Kubernetes Secret volume: tls.crt -> ..data/tls.crt, ..data -> ..<timestamp>/; an update
# writes a new ..<timestamp>/ folder and renames a new ..data symlink over the old one.
SECRET_VOL="$WORK/secret-volume"
secret_publish() { # secret_publish VERSION CERT KEY
  local v="..$1"
  mkdir -p "$SECRET_VOL/$v"
  cp "$2" "$SECRET_VOL/$v/tls.crt"
  cp "$3" "$SECRET_VOL/$v/tls.key"
  ln -sfn "$v" "$SECRET_VOL/..data_tmp"
  mv -T "$SECRET_VOL/..data_tmp" "$SECRET_VOL/..data"
  [ -L "$SECRET_VOL/tls.crt" ] || ln -s ..data/tls.crt "$SECRET_VOL/tls.crt"
  [ -L "$SECRET_VOL/tls.key" ] || ln -s ..data/tls.key "$SECRET_VOL/tls.key"
}

# wait_fp ADDR FP SECONDS: until the server presents FP
wait_fp() {
  local i got=""
  for i in $(seq $(($3 * 4))); do
    got=$(served_fp "$1")
    [ "$got" = "$2" ] && return 0
    sleep 0.25
  done
  fail "server still presents ${got:-nothing} after $3 s, want $2"
}

test_reload() {
  local pid fp1 fp2 fp3 big big_d dl1 dl2
  secret_publish v1 "$CERTS/tls.crt" "$CERTS/tls.key"
  start_registry reload --tls-cert "$SECRET_VOL/tls.crt" --tls-key "$SECRET_VOL/tls.key" \
    --tls-reload-interval 1 || return 1
  pid=$REG_PID
  fp1=$(file_fp "$CERTS/tls.crt")
  fp2=$(file_fp "$WORK/next/tls.crt")
  fp3=$(file_fp "$WORK/ed25519/tls.crt")
  expect_eq "certificate before the swap" "$(served_fp "127.0.0.1:$TLSP")" "$fp1" || return 1
  # a 200 MiB blob, pushed over plain HTTP
  big="$WORK/big.bin"
  head -c $((200 * 1024 * 1024)) /dev/urandom >"$big"
  big_d=$(sha256_file "$big")
  push_plain tls/big "$big" "$big_d" "200 MiB" || return 1
  rm -f "$big"
  # two rate-limited downloads over HTTPS (HTTP/1.1 and HTTP/2), each about 10 s long
  local url="https://$SVC:$TLSP/v2/tls/big/blobs/$big_d"
  local curl_dl=(curl -sS --max-time 120 --limit-rate 20M --cacert "$CERTS/ca.crt" --resolve "$SVC:$TLSP:127.0.0.1")
  (timeout 150 "${curl_dl[@]}" --http1.1 -w '%{http_code} %{http_version}' -o >(sha256sum | cut -d' ' -f1 >"$WORK/dl1.sha") "$url" >"$WORK/dl1.out" 2>"$WORK/dl1.err") &
  dl1=$!
  (timeout 150 "${curl_dl[@]}" --http2 -w '%{http_code} %{http_version}' -o >(sha256sum | cut -d' ' -f1 >"$WORK/dl2.sha") "$url" >"$WORK/dl2.out" 2>"$WORK/dl2.err") &
  dl2=$!
  PIDS+=("$dl1" "$dl2")
  sleep 2
  kill -0 "$dl1" 2>/dev/null && kill -0 "$dl2" 2>/dev/null || fail "downloads ended before the swap" || return 1
  secret_publish v2 "$WORK/next/tls.crt" "$WORK/next/tls.key"
  wait_fp "127.0.0.1:$TLSP" "$fp2" 10 || return 1
  kill -0 "$dl1" 2>/dev/null && kill -0 "$dl2" 2>/dev/null ||
    fail "a download had ended before new connections got the new certificate; the swap did not happen during it" || return 1
  # a broken pair (certificate without its key): the previous certificate stays
  secret_publish v3 "$WORK/ed25519/tls.crt" "$CERTS/tls.key"
  sleep 3
  expect_eq "certificate after a broken update" "$(served_fp "127.0.0.1:$TLSP")" "$fp2" || return 1
  grep -q 'TLS certificate reload failed; keeping the previous certificate' "$REG_LOG" ||
    fail "no error logged for the broken pair" || return 1
  # then a good one again
  secret_publish v4 "$WORK/ed25519/tls.crt" "$WORK/ed25519/tls.key"
  wait_fp "127.0.0.1:$TLSP" "$fp3" 10 || return 1
  # the downloads that spanned all of this completed with the right bytes
  wait "$dl1"
  wait "$dl2"
  sleep 0.5
  expect_eq "HTTP/1.1 download status" "$(cat "$WORK/dl1.out")" "200 1.1" || return 1
  expect_eq "HTTP/2 download status" "$(cat "$WORK/dl2.out")" "200 2" || return 1
  expect_eq "HTTP/1.1 download digest" "sha256:$(cat "$WORK/dl1.sha")" "$big_d" || return 1
  expect_eq "HTTP/2 download digest" "sha256:$(cat "$WORK/dl2.sha")" "$big_d" || return 1
  # clients trust the new certificate (same CA)
  CURL_PROTO=(--http2 --cacert "$CERTS/ca.crt" --resolve "$SVC:$TLSP:127.0.0.1")
  WANT_HV=2
  BASE="https://$SVC:$TLSP"
  req HEAD "$BASE/v2/tls/big/blobs/$big_d"
  want 200 "HEAD after the reloads" || return 1
  stop_registry "$pid"
}

# ---------------------------------------------------------------- mutual TLS
test_mtls() {
  local pid
  start_registry mtls --tls-cert "$CERTS/tls.crt" --tls-key "$CERTS/tls.key" --tls-client-ca "$CERTS/ca.crt" || return 1
  pid=$REG_PID
  BASE="https://$SVC:$TLSP"
  WANT_HV=2
  CURL_PROTO=(--http2 --cacert "$CERTS/ca.crt" --resolve "$SVC:$TLSP:127.0.0.1"
    --cert "$WORK/client/builder.crt" --key "$WORK/client/builder.key")
  req GET "$BASE/v2/"
  want 200 "GET /v2/ with a client certificate from the CA" || return 1
  CURL_PROTO=(--http1.1 --cacert "$CERTS/ca.crt" --resolve "$SVC:$TLSP:127.0.0.1"
    --cert "$WORK/client/builder.crt" --key "$WORK/client/builder.key")
  WANT_HV=1.1
  req GET "$BASE/v2/"
  want 200 "GET /v2/ over HTTP/1.1 with a client certificate" || return 1
  CURL_PROTO=(--cacert "$CERTS/ca.crt" --resolve "$SVC:$TLSP:127.0.0.1")
  req GET "$BASE/v2/"
  expect_eq "status without a client certificate" "$ST" 000 || return 1
  expect_match "curl error without a client certificate" "$(tail -n 2 "$TLOG")" 'alert|certificate|SSL' || return 1
  CURL_PROTO=(--cacert "$CERTS/ca.crt" --resolve "$SVC:$TLSP:127.0.0.1"
    --cert "$WORK/other-client/stranger.crt" --key "$WORK/other-client/stranger.key")
  req GET "$BASE/v2/"
  expect_eq "status with a client certificate from another CA" "$ST" 000 || return 1
  # plain HTTP is not affected by tls_client_ca
  CURL_PROTO=()
  req GET "http://127.0.0.1:$PLAIN/v2/"
  want 200 "plain GET /v2/" || return 1
  # skopeo with the client pair in its cert dir (client.cert / client.key), and without
  if [ "$IMAGE_OK" = 1 ]; then
    mkdir -p "$WORK/mtls-certs"
    cp "$CERTS/ca.crt" "$WORK/mtls-certs/ca.crt"
    cp "$WORK/client/builder.crt" "$WORK/mtls-certs/client.cert"
    cp "$WORK/client/builder.key" "$WORK/mtls-certs/client.key"
    net skopeo copy -q --dest-cert-dir "$WORK/mtls-certs" "oci-archive:$WORK/img.tar:latest" \
      "docker://$SVC:$TLSP/tls/mtls:v1" || return 1
    net skopeo inspect --cert-dir "$CERT_DIR" "docker://$SVC:$TLSP/tls/mtls:v1" && {
      fail "skopeo without a client certificate succeeded"
      return 1
    }
    REASON=""
  fi
  stop_registry "$pid"
}

# ---------------------------------------------------------------- graceful shutdown over TLS
test_graceful_shutdown() {
  local pid dl rc d
  start_registry shutdown --tls-cert "$CERTS/tls.crt" --tls-key "$CERTS/tls.key" --shutdown-timeout 30 || return 1
  pid=$REG_PID
  push_plain tls/shutdown "$WORK/layer.bin" "$LAYER_D" "24 MiB" || return 1
  # a 24 MiB download over HTTP/2 at 6 MB/s takes about 4 s; SIGTERM arrives after 1 s
  (timeout 60 curl -sS --http2 --limit-rate 6M --cacert "$CERTS/ca.crt" --resolve "$SVC:$TLSP:127.0.0.1" \
    -w '%{http_code}' -o "$WORK/shutdown.bin" "https://$SVC:$TLSP/v2/tls/shutdown/blobs/$LAYER_D" \
    >"$WORK/shutdown.out" 2>"$WORK/shutdown.err") &
  dl=$!
  PIDS+=("$dl")
  sleep 1
  kill -TERM "$pid"
  sleep 0.5
  kill -0 "$dl" 2>/dev/null || fail "the download ended right after SIGTERM" || return 1
  # new connections are refused while the download finishes
  rc=0
  timeout 10 curl -sS -o /dev/null --cacert "$CERTS/ca.crt" --resolve "$SVC:$TLSP:127.0.0.1" \
    "https://$SVC:$TLSP/v2/" 2>/dev/null || rc=$?
  [ "$rc" != 0 ] || fail "a new HTTPS connection was served after SIGTERM" || return 1
  wait "$dl"
  expect_eq "download status across shutdown" "$(cat "$WORK/shutdown.out")" 200 || return 1
  expect_eq "download digest across shutdown" "$(sha256_file "$WORK/shutdown.bin")" "$LAYER_D" || return 1
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then fail "registry still running 10 s after the download ended" || return 1; fi
  wait "$pid"
  d=$?
  expect_eq "registry exit code" "$d" 0
}

t https-http1.1-all-endpoints test_https_http1
t https-http2-all-endpoints test_https_http2
t h2c-prior-knowledge-all-endpoints test_h2c_prior_knowledge
t client-without-ca-fails test_no_ca_fails
t skopeo-cert-dir-push-pull test_skopeo
t buildah-cert-dir-push-pull test_buildah
t podman-cert-dir-push-pull test_podman
t containerd-hosts-toml-ca-pull-run-push test_containerd
t rsa-key test_rsa_key
t ed25519-key test_ed25519_key
t ecdsa-sec1-key test_ecdsa_sec1_key
t bad-pair-refused-at-start test_bad_pair_refused_at_start
t reload-during-download test_reload
t mutual-tls test_mtls
t graceful-shutdown-over-tls test_graceful_shutdown
finish
