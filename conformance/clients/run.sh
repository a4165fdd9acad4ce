#!/usr/bin/env bash
# Real-client tests: skopeo, buildah, podman, containerd (ctr) and the ORAS Python SDK against a
# registry started here on 127.0.0.1 with fresh storage.
#
#   conformance/clients/run.sh [REGISTRY_BINARY]
#
# REGISTRY_BINARY defaults to target/x86_64-unknown-linux-gnu/release/registry (what
# scripts/test.sh builds; building it is the caller's job). Pass
# `distribution` (or the path of a `docker-registry` binary) to run the same tests against CNCF
# Distribution instead. Prints `PASS name` / `FAIL name: reason` per test and a final
# `N passed, N failed`; exits non-zero on any failure. Set CLIENTS_LOG_DIR=DIR to keep the logs
# (registry log at debug level, one log per test) after the run; otherwise everything is removed.
# Needs root and the tools of scripts/install-test-deps.sh.
#
# Our registry only: CLIENTS_REGISTRY_ARGS="..." adds arguments to `registry serve` (split on
# spaces); CLIENTS_STORAGE=s3 starts moto_server on 127.0.0.1 (a port in 20000-20999), makes a
# bucket and serves from s3://clients/reg instead of a folder.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=SCRIPTDIR/../../conformance/testlib.sh
. "$ROOT/conformance/testlib.sh"
suite_setup clients "$@"
CMD_TIMEOUT=${CLIENTS_CMD_TIMEOUT:-120}
SVC_NAME=builds.registry.svc.cluster.local
export NO_PROXY="127.0.0.1,localhost,$SVC_NAME" no_proxy="127.0.0.1,localhost,$SVC_NAME"
begin_root_suite clients "containerd, podman and buildah use real mounts"
REG_PID=""
CTRD_PID=""
MOTO_PID=""

# ---------------------------------------------------------------- cleanup
cleanup() {
  local rc=$?
  set +e
  if [ -n "$CTRD_PID" ] && kill -0 "$CTRD_PID" 2>/dev/null; then
    # stop leftover tasks of our private containerd, then containerd itself
    for t in $(timeout 10 "${CTR[@]}" tasks ls -q 2>/dev/null); do
      timeout 10 "${CTR[@]}" tasks kill -s KILL "$t" >/dev/null 2>&1
      timeout 10 "${CTR[@]}" tasks rm -f "$t" >/dev/null 2>&1
    done
  fi
  stop_pid "$CTRD_PID"
  if [ -d "$WORK/podman" ]; then
    timeout 30 "${PODMAN[@]}" rm -af >/dev/null 2>&1
  fi
  for s in build pull; do
    [ -d "$WORK/$s" ] && timeout 30 buildah "${BUILDAH_OPTS[@]/__STORE__/$s}" rm -a >/dev/null 2>&1
  done
  stop_pid "$REG_PID"
  stop_pid "$MOTO_PID"
  finish_work "${CLIENTS_LOG_DIR:-}"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- helpers

# http METHOD PATH [ACCEPT]: sets HTTP_STATUS, HTTP_HEADERS (file), HTTP_BODY (file)
http() {
  local method=$1 path=$2 accept=${3:-}
  local args=(-sS --noproxy '*' --max-time 30 -o "$WORK/http.body" -D "$WORK/http.headers" -w '%{http_code}')
  [ "$method" = HEAD ] && args+=(-I) || args+=(-X "$method")
  [ -n "$accept" ] && args+=(-H "Accept: $accept")
  HTTP_STATUS=$(curl "${args[@]}" "http://$REG_HOST$path" 2>>"$TLOG") || HTTP_STATUS=000
  HTTP_HEADERS="$WORK/http.headers"
  HTTP_BODY="$WORK/http.body"
  [ "$method" = HEAD ] && : >"$HTTP_BODY"
  echo "http $method $path -> $HTTP_STATUS" >>"$TLOG"
}

# header NAME: value of a response header of the last http call
header() {
  tr -d '\r' <"$HTTP_HEADERS" | awk -v n="$(echo "$1" | tr 'A-Z' 'a-z')" -F': ' \
    'tolower($1) == n { sub(/^[^:]*: /, ""); print; exit }'
}

sha256_file() { echo "sha256:$(sha256sum "$1" | cut -d' ' -f1)"; }

ACCEPT_ALL="application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json"

# check_manifest REPO REF DIGEST MEDIATYPE: the registry serves REF with that digest and media type
check_manifest() {
  local repo=$1 ref=$2 digest=$3 mt=$4
  http HEAD "/v2/$repo/manifests/$ref" "$ACCEPT_ALL"
  expect_eq "HEAD $repo:$ref status" "$HTTP_STATUS" 200 || return 1
  expect_eq "HEAD $repo:$ref Docker-Content-Digest" "$(header Docker-Content-Digest)" "$digest" || return 1
  local head_len
  head_len=$(header Content-Length)
  http GET "/v2/$repo/manifests/$ref" "$ACCEPT_ALL"
  expect_eq "GET $repo:$ref status" "$HTTP_STATUS" 200 || return 1
  expect_eq "GET $repo:$ref sha256(body)" "$(sha256_file "$HTTP_BODY")" "$digest" || return 1
  expect_eq "HEAD $repo:$ref Content-Length" "$head_len" "$(stat -c %s "$HTTP_BODY")" || return 1
  expect_eq "GET $repo:$ref Content-Type" "$(header Content-Type)" "$mt" || return 1
  expect_eq "GET $repo:$ref body mediaType" "$(jq -r .mediaType "$HTTP_BODY")" "$mt" || return 1
}

# check_blob REPO DIGEST: the registry serves the blob and its bytes hash to DIGEST
check_blob() {
  http GET "/v2/$1/blobs/$2"
  expect_eq "GET blob $2 status" "$HTTP_STATUS" 200 || return 1
  expect_eq "GET blob sha256(body)" "$(sha256_file "$HTTP_BODY")" "$2"
}

# ---------------------------------------------------------------- start the registry

PORT=$(free_port 15000 1000) || { echo "FAIL setup: no free port in 15000-15999"; FAILED=1; finish; }
REG_HOST="127.0.0.1:$PORT"
REG_LOG="$WORK/logs/registry.log"

if [ "$REG_BIN" = distribution ] || [ "$(basename "$REG_BIN")" = docker-registry ]; then
  [ "$REG_BIN" = distribution ] && REG_BIN=$(command -v docker-registry)
  IMPL=distribution
  mkdir -p "$WORK/registry-data"
  cat >"$WORK/distribution.yml" <<EOF
version: 0.1
log:
  level: debug
storage:
  filesystem:
    rootdirectory: $WORK/registry-data
  delete:
    enabled: true
http:
  addr: $REG_HOST
EOF
  env -u AWS_CA_BUNDLE "$REG_BIN" serve "$WORK/distribution.yml" >"$REG_LOG" 2>&1 &
  REG_PID=$!
else
  IMPL=ours
  if ! [ -x "$REG_BIN" ]; then
    echo "FAIL setup: registry binary $REG_BIN not found (build it: cargo build --release -p registry)"
    FAILED=1
    finish
  fi
  STORAGE_ARGS=(--storage "$WORK/registry-data")
  if [ "${CLIENTS_STORAGE:-fs}" = s3 ]; then
    start_moto clients || { echo "FAIL setup: $REASON"; FAILED=1; finish; }
    STORAGE_ARGS=(--storage s3://clients/reg --storage-option "endpoint=http://$MOTO_HOST"
      --storage-option allow_http=true --storage-option region=us-east-1)
    export AWS_ACCESS_KEY_ID=clients AWS_SECRET_ACCESS_KEY=clients-secret
    IMPL="ours on S3 (moto $MOTO_HOST)"
  fi
  read -r -a EXTRA_ARGS <<<"${CLIENTS_REGISTRY_ARGS:-}"
  "$REG_BIN" serve --listen "$REG_HOST" "${STORAGE_ARGS[@]}" \
    --log-level debug --log-format text "${EXTRA_ARGS[@]}" >"$REG_LOG" 2>&1 &
  REG_PID=$!
fi

await_ok "$REG_PID" "http://$REG_HOST/v2/" "registry ($IMPL, $REG_BIN)"
echo "# registry: $IMPL ($REG_BIN) on $REG_HOST, work dir $WORK" >&2

# ---------------------------------------------------------------- client settings
# Every containers-storage user gets its own root/runroot under WORK.
BUILDAH_OPTS=(--root "$WORK/__STORE__/root" --runroot "$WORK/__STORE__/runroot" --storage-driver overlay)
BUILDAH=(buildah "${BUILDAH_OPTS[@]/__STORE__/build}")
BUILDAH_PULL=(buildah "${BUILDAH_OPTS[@]/__STORE__/pull}")
mkdir -p "$WORK/podman/tmp"
PODMAN=(podman --root "$WORK/podman/root" --runroot "$WORK/podman/runroot" --storage-driver overlay
  --tmpdir "$WORK/podman/tmp" --cgroup-manager cgroupfs --events-backend file)
CTRD="$WORK/containerd"
CTR=(ctr --address "$CTRD/containerd.sock" --namespace clients-test)
export REGISTRY_AUTH_FILE="$WORK/auth.json"   # containers tools: no credentials from the machine
echo '{"auths":{}}' >"$REGISTRY_AUTH_FILE"

TOKEN="clients-test-ok-$RANDOM$RANDOM"
TOKEN_CTR="containerd-push-ok-$RANDOM$RANDOM"

# ---------------------------------------------------------------- build test images offline
# make_image NAME ARCH TOKEN: busybox + /token.txt, `cat /token.txt` as default command
make_image() {
  local name=$1 arch=$2 TOKEN=$3
  token_image "ctr-$name" "localhost/clients/$name:latest" "$arch" \
    --label "org.example.clients-test=$name"
}

setup_images() {
  # the image has no libc: busybox must be the statically linked one (apt busybox-static)
  [ -x /bin/busybox ] || fail "/bin/busybox missing (apt busybox-static)" || return 1
  if ldd /bin/busybox >/dev/null 2>&1; then fail "/bin/busybox is dynamically linked; install busybox-static" || return 1; fi
  make_image amd64 amd64 "$TOKEN" || return 1
  make_image arm64 arm64 "$TOKEN" || return 1
  make_image ctr amd64 "$TOKEN_CTR" || return 1
  run "${BUILDAH[@]}" push -q localhost/clients/amd64:latest "oci-archive:$WORK/amd64.tar:latest" || return 1
  run "${BUILDAH[@]}" push -q localhost/clients/ctr:latest "oci-archive:$WORK/ctr.tar:latest" || return 1
  mkdir -p "$WORK/amd64-oci" && tar -xf "$WORK/amd64.tar" -C "$WORK/amd64-oci" || fail "untar amd64.tar"
}

TLOG="$WORK/logs/setup.log"
if ! setup_images; then
  echo "FAIL setup: building test images with buildah: $REASON"
  tail -n 20 "$TLOG" >&2
  FAILED=1
  finish
fi
SRC_DIGEST=$(jq -r '.manifests[0].digest' "$WORK/amd64-oci/index.json")
SRC_MANIFEST="$WORK/amd64-oci/blobs/sha256/${SRC_DIGEST#sha256:}"
SRC_CONFIG=$(jq -r .config.digest "$SRC_MANIFEST")
SRC_LAYER=$(jq -r '.layers[0].digest' "$SRC_MANIFEST")
OCI_MANIFEST=application/vnd.oci.image.manifest.v1+json
DOCKER_MANIFEST=application/vnd.docker.distribution.manifest.v2+json

# ---------------------------------------------------------------- skopeo
test_skopeo_copy() {
  local repo=clients/skopeo
  run skopeo copy -q --dest-tls-verify=false --digestfile "$WORK/skopeo.digest" \
    "oci-archive:$WORK/amd64.tar:latest" "docker://$REG_HOST/$repo:v1" || return 1
  expect_eq "digest reported by skopeo push" "$(cat "$WORK/skopeo.digest")" "$SRC_DIGEST" || return 1
  check_manifest "$repo" v1 "$SRC_DIGEST" "$OCI_MANIFEST" || return 1
  cmp -s "$HTTP_BODY" "$SRC_MANIFEST" || fail "manifest bytes served differ from the pushed ones" || return 1
  check_manifest "$repo" "$SRC_DIGEST" "$SRC_DIGEST" "$OCI_MANIFEST" || return 1
  check_blob "$repo" "$SRC_CONFIG" || return 1
  check_blob "$repo" "$SRC_LAYER" || return 1
  # copy back out into an OCI layout and compare every file with the source
  run skopeo copy -q --src-tls-verify=false "docker://$REG_HOST/$repo:v1" "oci:$WORK/skopeo-out:v1" || return 1
  expect_eq "digest of the image copied back" "$(jq -r '.manifests[0].digest' "$WORK/skopeo-out/index.json")" "$SRC_DIGEST" || return 1
  local d
  for d in "$SRC_DIGEST" "$SRC_CONFIG" "$SRC_LAYER"; do
    cmp -s "$WORK/skopeo-out/blobs/sha256/${d#sha256:}" "$WORK/amd64-oci/blobs/sha256/${d#sha256:}" ||
      fail "blob $d copied back differs from the source" || return 1
  done
}

test_skopeo_inspect() {
  local repo=clients/skopeo
  run skopeo inspect --tls-verify=false "docker://$REG_HOST/$repo:v1" || return 1
  echo "$OUT" >"$WORK/inspect.json"
  expect_eq "inspect Digest" "$(jq -r .Digest "$WORK/inspect.json")" "$SRC_DIGEST" || return 1
  expect_eq "inspect Architecture" "$(jq -r .Architecture "$WORK/inspect.json")" amd64 || return 1
  expect_eq "inspect Layers" "$(jq -c .Layers "$WORK/inspect.json")" "[\"$SRC_LAYER\"]" || return 1
  expect_eq "inspect label" "$(jq -r '.Labels["org.example.clients-test"]' "$WORK/inspect.json")" amd64 || return 1
  run skopeo inspect --tls-verify=false --config "docker://$REG_HOST/$repo:v1" || return 1
  expect_eq "inspect --config Cmd" "$(echo "$OUT" | jq -c .config.Cmd)" '["cat","/token.txt"]' || return 1
  run skopeo inspect --tls-verify=false --raw "docker://$REG_HOST/$repo@$SRC_DIGEST" || return 1
  expect_eq "inspect --raw by digest, sha256" "sha256:$(printf '%s' "$OUT" | sha256sum | cut -d' ' -f1)" "$SRC_DIGEST"
}

test_skopeo_list_tags() {
  local repo=clients/skopeo
  run skopeo copy -q --src-tls-verify=false --dest-tls-verify=false \
    "docker://$REG_HOST/$repo:v1" "docker://$REG_HOST/$repo:v2" || return 1
  run skopeo copy -q --src-tls-verify=false --dest-tls-verify=false \
    "docker://$REG_HOST/$repo:v1" "docker://$REG_HOST/clients/skopeo-other:v1" || return 1
  run skopeo list-tags --tls-verify=false "docker://$REG_HOST/$repo" || return 1
  expect_eq "list-tags Repository" "$(echo "$OUT" | jq -r .Repository)" "$REG_HOST/$repo" || return 1
  expect_eq "list-tags Tags" "$(echo "$OUT" | jq -c '.Tags | sort')" '["v1","v2"]' || return 1
  check_manifest "$repo" v2 "$SRC_DIGEST" "$OCI_MANIFEST" || return 1
  check_manifest clients/skopeo-other v1 "$SRC_DIGEST" "$OCI_MANIFEST"
}

test_skopeo_delete() {
  local repo=clients/skopeo-delete
  run skopeo copy -q --dest-tls-verify=false "oci-archive:$WORK/amd64.tar:latest" "docker://$REG_HOST/$repo:v1" || return 1
  run skopeo copy -q --dest-tls-verify=false "oci-archive:$WORK/amd64.tar:latest" "docker://$REG_HOST/$repo-keep:v1" || return 1
  check_manifest "$repo" v1 "$SRC_DIGEST" "$OCI_MANIFEST" || return 1
  run skopeo delete --tls-verify=false "docker://$REG_HOST/$repo:v1" || return 1
  http GET "/v2/$repo/manifests/$SRC_DIGEST" "$ACCEPT_ALL"
  expect_eq "GET deleted manifest by digest" "$HTTP_STATUS" 404 || return 1
  http GET "/v2/$repo/manifests/v1" "$ACCEPT_ALL"
  expect_eq "GET tag of deleted manifest" "$HTTP_STATUS" 404 || return 1
  if run skopeo inspect --tls-verify=false "docker://$REG_HOST/$repo:v1"; then
    fail "skopeo inspect still finds the deleted image" || return 1
  fi
  # the same manifest pushed again to another repository is untouched by the delete
  check_manifest clients/skopeo-delete-keep v1 "$SRC_DIGEST" "$OCI_MANIFEST"
}

# ---------------------------------------------------------------- buildah
# buildah_push_pull FORMAT REPO MANIFEST_MEDIATYPE
buildah_push_pull() {
  local format=$1 repo=$2 mt=$3 digest cfg c mnt
  run "${BUILDAH[@]}" push -q --tls-verify=false --format "$format" --digestfile "$WORK/$format.digest" \
    localhost/clients/amd64:latest "docker://$REG_HOST/$repo:v1" || return 1
  digest=$(cat "$WORK/$format.digest")
  check_manifest "$repo" v1 "$digest" "$mt" || return 1
  cfg=$(jq -r .config.digest "$HTTP_BODY")
  check_blob "$repo" "$cfg" || return 1
  expect_eq "config architecture" "$(jq -r .architecture "$HTTP_BODY")" amd64 || return 1
  # pull into a separate, fresh store
  run "${BUILDAH_PULL[@]}" pull -q --tls-verify=false "$REG_HOST/$repo:v1" || return 1
  expect_eq "image ID of the pulled image" "sha256:$OUT" "$cfg" || return 1
  run "${BUILDAH_PULL[@]}" inspect --type image -f '{{.FromImageDigest}}' "$REG_HOST/$repo:v1" || return 1
  expect_eq "manifest digest of the pulled image" "$OUT" "$digest" || return 1
  run "${BUILDAH_PULL[@]}" from -q --pull-never --name "pulled-$format" "$REG_HOST/$repo:v1" || return 1
  c=$OUT
  run "${BUILDAH_PULL[@]}" mount "$c" || return 1
  mnt=$OUT
  expect_eq "/token.txt in the pulled image" "$(cat "$mnt/token.txt" 2>&1)" "$TOKEN" || return 1
  cmp -s "$mnt/bin/busybox" /bin/busybox || fail "/bin/busybox in the pulled image differs" || return 1
  run "${BUILDAH_PULL[@]}" rm "$c" || return 1
}

test_buildah_oci() { buildah_push_pull oci clients/buildah-oci "$OCI_MANIFEST"; }
test_buildah_docker() { buildah_push_pull docker clients/buildah-docker "$DOCKER_MANIFEST"; }

test_buildah_manifest() {
  local repo=clients/multiarch list=localhost/clients/multiarch:latest idx_mt n i d arch cfg
  run "${BUILDAH[@]}" manifest create "$list" || return 1
  run "${BUILDAH[@]}" manifest add "$list" localhost/clients/amd64:latest || return 1
  run "${BUILDAH[@]}" manifest add --arch arm64 --os linux "$list" localhost/clients/arm64:latest || return 1
  run "${BUILDAH[@]}" manifest push -q --all --tls-verify=false --digestfile "$WORK/index.digest" \
    "$list" "docker://$REG_HOST/$repo:v1" || return 1
  d=$(cat "$WORK/index.digest")
  http GET "/v2/$repo/manifests/v1" "$ACCEPT_ALL"
  expect_eq "GET index status" "$HTTP_STATUS" 200 || return 1
  idx_mt=$(jq -r .mediaType "$HTTP_BODY")
  case "$idx_mt" in
    application/vnd.oci.image.index.v1+json | application/vnd.docker.distribution.manifest.list.v2+json) ;;
    *) fail "index mediaType is '$idx_mt'" || return 1 ;;
  esac
  check_manifest "$repo" v1 "$d" "$idx_mt" || return 1
  cp "$HTTP_BODY" "$WORK/index.json"
  n=$(jq '.manifests | length' "$WORK/index.json")
  expect_eq "children in the index" "$n" 2 || return 1
  expect_eq "child platforms" "$(jq -c '[.manifests[].platform.architecture] | sort' "$WORK/index.json")" '["amd64","arm64"]' || return 1
  for i in 0 1; do
    d=$(jq -r ".manifests[$i].digest" "$WORK/index.json")
    arch=$(jq -r ".manifests[$i].platform.architecture" "$WORK/index.json")
    check_manifest "$repo" "$d" "$d" "$(jq -r ".manifests[$i].mediaType" "$WORK/index.json")" || return 1
    expect_eq "child $arch size" "$(stat -c %s "$HTTP_BODY")" "$(jq -r ".manifests[$i].size" "$WORK/index.json")" || return 1
    cfg=$(jq -r .config.digest "$HTTP_BODY")
    for l in $(jq -r '.layers[].digest' "$HTTP_BODY") "$cfg"; do
      http HEAD "/v2/$repo/blobs/$l"
      expect_eq "HEAD child $arch blob $l" "$HTTP_STATUS" 200 || return 1
    done
    check_blob "$repo" "$cfg" || return 1
    expect_eq "child $arch config architecture" "$(jq -r .architecture "$HTTP_BODY")" "$arch" || return 1
  done
  run skopeo inspect --tls-verify=false --override-arch arm64 "docker://$REG_HOST/$repo:v1" || return 1
  expect_eq "skopeo --override-arch arm64 resolves to" "$(echo "$OUT" | jq -r .Architecture)" arm64
}

# ---------------------------------------------------------------- podman
test_podman() {
  local repo=clients/podman img="$REG_HOST/clients/podman:v1" id digest
  run "${PODMAN[@]}" pull -q "oci-archive:$WORK/amd64.tar:latest" || return 1
  id=$OUT
  run "${PODMAN[@]}" push -q --tls-verify=false --digestfile "$WORK/podman.digest" "$id" "docker://$img" || return 1
  digest=$(cat "$WORK/podman.digest")
  check_manifest "$repo" v1 "$digest" "$OCI_MANIFEST" || return 1
  run "${PODMAN[@]}" rmi -af || return 1
  run "${PODMAN[@]}" images -q || return 1
  expect_eq "images left after rmi" "$OUT" "" || return 1
  run "${PODMAN[@]}" pull -q --tls-verify=false "$img" || return 1
  expect_eq "pulled image ID (config digest)" "sha256:$OUT" "$(jq -r .config.digest "$HTTP_BODY")" || return 1
  run "${PODMAN[@]}" run --rm --network none --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 "$img" ||
    { REASON="podman run could not run the pulled image: $REASON"; return 1; }
  expect_eq "output of podman run" "$OUT" "$TOKEN"
}

# ---------------------------------------------------------------- containerd + ctr
start_containerd() {
  [ -n "$CTRD_PID" ] && return 0
  mkdir -p "$CTRD/hosts/$SVC_NAME"
  containerd_config "$CTRD"
  hosts_toml "$CTRD/hosts/$SVC_NAME/hosts.toml" "http://$REG_HOST"
  # The service name resolves only through this file, bound over /etc/hosts for ctr alone.
  printf '127.0.0.1 localhost\n127.0.0.1 %s\n' "$SVC_NAME" >"$CTRD/etc-hosts"
  start_private_containerd "$CTRD" "${CTR[@]}"
}

# ctr_net ARGS...: ctr with the private hosts file as /etc/hosts (mount namespace of its own)
ctr_net() {
  run unshare -m --propagation private sh -c 'mount --bind "$0" /etc/hosts && exec "$@"' \
    "$CTRD/etc-hosts" "${CTR[@]}" "$@"
}

ctr_image_digest() {
  run "${CTR[@]}" images ls "name==$1" || return 1
  echo "$OUT" | awk 'NR > 1 { print $3 }'
}

test_containerd_pull_run() {
  local ref="$SVC_NAME/clients/skopeo:v1" got
  start_containerd || return 1
  http HEAD "/v2/clients/skopeo/manifests/v1" "$ACCEPT_ALL"
  [ "$HTTP_STATUS" = 200 ] || fail "clients/skopeo:v1 missing (pushed by skopeo-copy-roundtrip)" || return 1
  ctr_net images pull --hosts-dir "$CTRD/hosts" "$ref" || return 1
  got=$(ctr_image_digest "$ref") || return 1
  expect_eq "digest of the image ctr pulled" "$got" "$SRC_DIGEST" || return 1
  run "${CTR[@]}" run --rm --fifo-dir "$CTRD/fifo" --runc-root "$CTRD/runc" "$ref" "pull-run-$$" || return 1
  expect_eq "output of ctr run" "$OUT" "$TOKEN"
}

test_containerd_push() {
  local local_ref="localhost/clients/ctr:latest" ref="$SVC_NAME/clients/ctr-push:v2" digest cfg l
  start_containerd || return 1
  run "${CTR[@]}" images import --base-name localhost/clients/ctr "$WORK/ctr.tar" || return 1
  digest=$(ctr_image_digest "$local_ref") || return 1
  [ -n "$digest" ] || fail "ctr import did not create $local_ref: $OUT" || return 1
  run "${CTR[@]}" images tag "$local_ref" "$ref" || return 1
  ctr_net images push --hosts-dir "$CTRD/hosts" "$ref" || return 1
  check_manifest clients/ctr-push v2 "$digest" "$OCI_MANIFEST" || return 1
  cp "$HTTP_BODY" "$WORK/ctr-push-manifest.json"
  cfg=$(jq -r .config.digest "$WORK/ctr-push-manifest.json")
  for l in "$cfg" $(jq -r '.layers[].digest' "$WORK/ctr-push-manifest.json"); do
    check_blob clients/ctr-push "$l" || return 1
  done
  # drop the image and its content locally, pull it back from the registry, run it
  run "${CTR[@]}" images rm --sync "$local_ref" "$ref" || return 1
  run "${CTR[@]}" content ls -q || return 1
  if echo "$OUT" | grep -q "$cfg"; then fail "config blob still in containerd after images rm" || return 1; fi
  ctr_net images pull --hosts-dir "$CTRD/hosts" "$ref" || return 1
  expect_eq "digest of the image pulled back" "$(ctr_image_digest "$ref")" "$digest" || return 1
  run "${CTR[@]}" run --rm --fifo-dir "$CTRD/fifo" --runc-root "$CTRD/runc" "$ref" "push-run-$$" || return 1
  expect_eq "output of ctr run" "$OUT" "$TOKEN_CTR"
}

# cri_pull REPO TAG: PullImage + ImageStatus through the CRI plugin; JSON result in $OUT
cri_pull() {
  "$PY" -c 'import grpc, grpc_tools.protoc' 2>/dev/null ||
    fail "python modules grpcio/grpcio-tools missing (scripts/install-test-deps.sh)" || return 1
  if ! run "$PY" "$HERE/cri/cri_pull.py" "$CTRD/containerd.sock" "$SVC_NAME/$1:$2" "$WORK/cri-gen"; then
    REASON="CRI PullImage of $SVC_NAME/$1:$2: ${OUT:-$REASON}"
    return 1
  fi
}

# The Kubernetes path: the kubelet's CRI PullImage of a multi-arch index and of a Docker-format image.
test_containerd_cri_pull() {
  local repo idx child cfg
  start_containerd || return 1
  # multi-arch index (pushed by buildah-manifest-multiarch): the linux/amd64 child must be chosen
  http GET "/v2/clients/multiarch/manifests/v1" "$ACCEPT_ALL"
  [ "$HTTP_STATUS" = 200 ] || fail "clients/multiarch:v1 missing (pushed by buildah-manifest-multiarch)" || return 1
  idx=$(sha256_file "$HTTP_BODY")
  child=$(jq -r '.manifests[] | select(.platform.architecture == "amd64") | .digest' "$HTTP_BODY")
  http GET "/v2/clients/multiarch/manifests/$child" "$ACCEPT_ALL"
  cfg=$(jq -r .config.digest "$HTTP_BODY")
  cri_pull clients/multiarch v1 || return 1
  expect_eq "CRI image id (config of the amd64 child)" "$(echo "$OUT" | jq -r .id)" "$cfg" || return 1
  expect_eq "CRI repo_digests" "$(echo "$OUT" | jq -c .repo_digests)" "[\"$SVC_NAME/clients/multiarch@$idx\"]" || return 1
  expect_eq "CRI repo_tags" "$(echo "$OUT" | jq -c .repo_tags)" "[\"$SVC_NAME/clients/multiarch:v1\"]" || return 1
  # Docker schema 2 image (pushed by buildah-push-pull-docker)
  repo=clients/buildah-docker
  http GET "/v2/$repo/manifests/v1" "$ACCEPT_ALL"
  [ "$HTTP_STATUS" = 200 ] || fail "$repo:v1 missing (pushed by buildah-push-pull-docker)" || return 1
  cfg=$(jq -r .config.digest "$HTTP_BODY")
  idx=$(sha256_file "$HTTP_BODY")
  cri_pull "$repo" v1 || return 1
  expect_eq "CRI image id of the Docker-format image" "$(echo "$OUT" | jq -r .id)" "$cfg" || return 1
  # CRI groups references by image id: other names of the same config may be listed too
  expect_eq "CRI repo_digests has $SVC_NAME/$repo@$idx" \
    "$(echo "$OUT" | jq --arg r "$SVC_NAME/$repo@$idx" '.repo_digests | index($r) != null')" true
}

# ---------------------------------------------------------------- oras (Python SDK)
oras_py() {
  "$PY" -c 'import oras' 2>/dev/null || fail "python module oras missing (scripts/install-test-deps.sh)" || return 1
  if ! run "$PY" "$HERE/oras_test.py" "$1" "$REG_HOST" "$WORK/oras-$1"; then
    REASON="${OUT:-$REASON}"
    return 1
  fi
}
test_oras_artifact() { oras_py artifact; }
test_oras_referrers() { oras_py referrers; }

# ---------------------------------------------------------------- run
t skopeo-copy-roundtrip test_skopeo_copy
t skopeo-inspect test_skopeo_inspect
t skopeo-list-tags test_skopeo_list_tags
t skopeo-delete test_skopeo_delete
t buildah-push-pull-oci test_buildah_oci
t buildah-push-pull-docker test_buildah_docker
t buildah-manifest-multiarch test_buildah_manifest
t podman-push-rmi-pull-run test_podman
t containerd-pull-run test_containerd_pull_run
t containerd-push-pull-run test_containerd_push
t containerd-cri-pull test_containerd_cri_pull
t oras-artifact test_oras_artifact
t oras-referrers test_oras_referrers
finish
