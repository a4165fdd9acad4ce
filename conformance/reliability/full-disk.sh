#!/usr/bin/env bash
# Full disk: the registry's storage on a small tmpfs that the test fills up.
#
#   conformance/reliability/full-disk.sh REGISTRY_BINARY      (as root: it mounts a tmpfs)
#
# With the disk full, a monolithic blob push, a chunked PATCH and a manifest push must each fail
# with a 5xx and the spec's JSON error body (a `code` field), and nothing partial may become
# visible: the blobs answer 404, the tags and manifests are unchanged, no temporary file is left
# outside uploads/, and `registry fsck` is clean. Once the filler is removed, the same pushes
# work (the chunked upload resumes from the offset the server reports), and fsck is still clean.
#
# Prints PASS/FAIL lines and `N passed, N failed`; exits 1 on any failure.
set -uo pipefail

BIN=${1:?usage: full-disk.sh REGISTRY_BINARY}
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
[ -x "$BIN" ] || { echo "FAIL registry binary $BIN not found"; echo "0 passed, 1 failed"; exit 1; }

work=$(mktemp -d /tmp/full-disk.XXXXXX)
mnt=$work/mnt
data=$mnt/data
pid=""
mounted=""
cleanup() {
  if [ -n "$pid" ]; then
    kill "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  fi
  if [ -n "$mounted" ]; then
    umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null
  fi
  rm -rf "$work"
}
trap cleanup EXIT

passed=0
failed=0
pass() { echo "PASS $*"; passed=$((passed + 1)); }
fail() { echo "FAIL $*"; failed=$((failed + 1)); }
check() { # check NAME COMMAND...: PASS when the command succeeds
  local name=$1
  shift
  if "$@"; then pass "$name"; else fail "$name"; fi
}
finish() {
  if [ "$failed" -gt 0 ] && [ -f "$work/registry.log" ]; then
    echo "--- last lines of the registry log ---"
    tail -n 30 "$work/registry.log"
  fi
  echo "$passed passed, $failed failed"
  [ "$failed" -eq 0 ]
  exit $?
}

mkdir -p "$mnt"
if ! mount -t tmpfs -o size=24m tmpfs "$mnt"; then
  fail "mount a 24 MiB tmpfs (needs root)"
  finish
fi
mounted=1
mkdir -p "$data"

# A free port in this test's range (21000-21999).
port=""
for _ in $(seq 1 50); do
  p=$((21000 + RANDOM % 1000))
  if python3 -c "import socket,sys; s=socket.socket(); s.bind(('127.0.0.1', $p))" 2>/dev/null; then
    port=$p
    break
  fi
done
[ -n "$port" ] || { fail "find a free port in 21000-21999"; finish; }
base="http://127.0.0.1:$port"

start_registry() {
  "$BIN" serve --listen "127.0.0.1:$port" --storage "$data" --fsync true --gc-interval 0 \
    --log-level warn >>"$work/registry.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 100); do
    if curl -sf -o /dev/null --max-time 2 "$base/livez"; then return 0; fi
    sleep 0.1
  done
  return 1
}
stop_registry() {
  kill -TERM "$pid" 2>/dev/null
  local rc=0
  for _ in $(seq 1 100); do
    if ! kill -0 "$pid" 2>/dev/null; then break; fi
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null
    rc=1
  fi
  wait "$pid" 2>/dev/null
  pid=""
  return $rc
}

# http METHOD URL [curl args...]: prints the status; the body goes to $work/body, headers to
# $work/headers.
http() {
  local method=$1 url=$2
  shift 2
  curl -s -X "$method" -o "$work/body" -D "$work/headers" -w '%{http_code}' --max-time 60 \
    "$@" "$url"
}
sha() { echo "sha256:$(sha256sum "$1" | cut -d' ' -f1)"; }
header() { grep -i "^$1:" "$work/headers" | head -n1 | cut -d' ' -f2- | tr -d '\r'; }
# A 5xx whose body is the spec's error JSON with a code.
is_5xx_json() {
  local status=$1
  [ "${status:0:1}" = 5 ] && jq -e '.errors[0].code | type == "string"' "$work/body" >/dev/null 2>&1
}
describe() { echo "status $1, body $(head -c 300 "$work/body" 2>/dev/null)"; }

# Pushes blob FILE to REPO (POST then PUT); prints the status of the PUT.
push_blob() {
  local repo=$1 file=$2
  local st
  st=$(http POST "$base/v2/$repo/blobs/uploads/" -H 'Content-Length: 0')
  [ "$st" = 202 ] || { echo "$st"; return; }
  local loc
  loc=$(header location)
  http PUT "$base$loc?digest=$(sha "$file")" -H 'Content-Type: application/octet-stream' \
    --data-binary "@$file"
}
manifest_for() { # manifest_for CONFIG_FILE LAYER_FILE > manifest
  jq -cn --arg cd "$(sha "$1")" --argjson cs "$(stat -c %s "$1")" \
    --arg ld "$(sha "$2")" --argjson ls "$(stat -c %s "$2")" \
    '{schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
      config: {mediaType: "application/vnd.oci.image.config.v1+json", digest: $cd, size: $cs},
      layers: [{mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: $ld, size: $ls}]}'
}
tags_of() { curl -s --max-time 10 "$base/v2/$1/tags/list" | jq -c '.tags | sort'; }
no_tmp_files() { [ -z "$(find "$data" -path "$data/uploads" -prune -o -name '.tmp.*' -print)" ]; }
fsck_clean() { "$BIN" fsck --storage "$data" --log-level warn >"$work/fsck.out" 2>&1 || { cat "$work/fsck.out"; return 1; }; }

# new_image N ARCH CONFIG_BYTES LAYER_BYTES: a random image in $work: configN (JSON with a random
# comment of about CONFIG_BYTES), layerN (LAYER_BYTES random bytes) and manifestN naming them.
new_image() {
  head -c "$3" /dev/urandom | base64 -w0 | jq -Rc --arg arch "$2" '{architecture: $arch, os: "linux", comment: .}' >"$work/config$1"
  head -c "$4" /dev/urandom >"$work/layer$1"
  manifest_for "$work/config$1" "$work/layer$1" >"$work/manifest$1"
}

# push_blobs REPO NAME...: pushes each $work/NAME as a blob; a line per push that did not get 201,
# and false when there was one.
push_blobs() {
  local repo=$1 name st all=0
  shift
  for name in "$@"; do
    st=$(push_blob "$repo" "$work/$name")
    [ "$st" = 201 ] || { all=1; echo "  push $name: $(describe "$st")"; }
  done
  return $all
}

check "registry starts on a 24 MiB tmpfs" start_registry

# ---- Baseline, with room to spare. ----
repo=full/app
new_image 1 amd64 300 4096
ok=1
push_blobs "$repo" config1 layer1 || ok=""
st=$(http PUT "$base/v2/$repo/manifests/v1" -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' --data-binary "@$work/manifest1")
[ "$st" = 201 ] || { ok=""; echo "  push manifest v1: $(describe "$st")"; }
check "baseline image pushed (v1)" test -n "$ok"

# For the manifest case: blobs of a second image, pushed while there is room.
new_image 2 arm64 200 8192
check "blobs of image v2 pushed before the disk fills" push_blobs "$repo" config2 layer2

# For the chunked case: an upload holding its first 64 KiB.
head -c $((2 * 1024 * 1024 + 65536)) /dev/urandom >"$work/chunked"
head -c 65536 "$work/chunked" >"$work/chunk1"
tail -c +65537 "$work/chunked" >"$work/chunk2"
st=$(http POST "$base/v2/$repo/blobs/uploads/" -H 'Content-Length: 0')
chunk_loc=$(header location)
st2=$(http PATCH "$base$chunk_loc" -H 'Content-Type: application/octet-stream' -H 'Content-Range: 0-65535' --data-binary "@$work/chunk1")
check "chunked upload started with 64 KiB" test "$st" = 202 -a "$st2" = 202

tags_before=$(tags_of "$repo")
# ---- Fill the disk. ----
dd if=/dev/zero of="$mnt/filler" bs=1M status=none 2>/dev/null
dd if=/dev/zero of="$mnt/filler-small" bs=4k status=none 2>/dev/null
check "disk is full (no free blocks)" test "$(stat -f -c %a "$mnt")" -eq 0

# 1. Monolithic push.
head -c $((2 * 1024 * 1024)) /dev/urandom >"$work/big"
big=$(sha "$work/big")
st=$(http POST "$base/v2/$repo/blobs/uploads/?digest=$big" -H 'Content-Type: application/octet-stream' --data-binary "@$work/big")
if is_5xx_json "$st"; then pass "monolithic push on a full disk: $st $(jq -r '.errors[0].code' "$work/body")"; else fail "monolithic push on a full disk: want 5xx with a JSON code, got $(describe "$st")"; fi
st=$(http HEAD "$base/v2/$repo/blobs/$big" -I)
check "monolithic push left nothing visible (HEAD blob 404, got $st)" test "$st" = 404
hex=${big#sha256:}
check "no stored blob file for the failed monolithic push" test ! -e "$data/blobs/sha256/${hex:0:2}/$hex"
# The two-step form too (POST, then PUT with the whole body).
st=$(push_blob "$repo" "$work/big")
if is_5xx_json "$st"; then pass "POST+PUT push on a full disk: $st $(jq -r '.errors[0].code' "$work/body")"; else fail "POST+PUT push on a full disk: want 5xx with a JSON code, got $(describe "$st")"; fi
st=$(http HEAD "$base/v2/$repo/blobs/$big" -I)
check "POST+PUT push left nothing visible (HEAD blob 404, got $st)" test "$st" = 404

# 2. Chunked PATCH.
st=$(http PATCH "$base$chunk_loc" -H 'Content-Type: application/octet-stream' -H "Content-Range: 65536-$(($(stat -c %s "$work/chunked") - 1))" --data-binary "@$work/chunk2")
if is_5xx_json "$st"; then pass "chunked PATCH on a full disk: $st $(jq -r '.errors[0].code' "$work/body")"; else fail "chunked PATCH on a full disk: want 5xx with a JSON code, got $(describe "$st")"; fi
st=$(http GET "$base$chunk_loc")
range=$(header range)
check "upload status after the failed PATCH still 0-65535 (got $st, Range $range)" test "$st" = 204 -a "$range" = "0-65535"
chunked=$(sha "$work/chunked")
st=$(http HEAD "$base/v2/$repo/blobs/$chunked" -I)
check "chunked blob not visible (HEAD 404, got $st)" test "$st" = 404

# 3. Manifest push.
m2=$(sha "$work/manifest2")
st=$(http PUT "$base/v2/$repo/manifests/v2" -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' --data-binary "@$work/manifest2")
if is_5xx_json "$st"; then pass "manifest push on a full disk: $st $(jq -r '.errors[0].code' "$work/body")"; else fail "manifest push on a full disk: want 5xx with a JSON code, got $(describe "$st")"; fi
st=$(http GET "$base/v2/$repo/manifests/v2")
check "tag v2 not visible (GET 404, got $st)" test "$st" = 404
st=$(http GET "$base/v2/$repo/manifests/$m2")
check "manifest v2 not visible by digest (GET 404, got $st)" test "$st" = 404
tags_now=$(tags_of "$repo")
check "tags unchanged ($tags_now)" test "$tags_now" = "$tags_before"
st=$(http GET "$base/v2/$repo/manifests/v1" -H 'Accept: application/vnd.oci.image.manifest.v1+json')
check "manifest v1 unchanged (GET $st, same bytes)" cmp -s "$work/body" "$work/manifest1"
st=$(http GET "$base/v2/$repo/blobs/$(sha "$work/layer1")")
check "layer of v1 still whole ($st)" cmp -s "$work/body" "$work/layer1"
check "no temporary files left outside uploads/" no_tmp_files

check "SIGTERM: the registry exits cleanly" stop_registry
check "fsck is clean with the disk full" fsck_clean

# ---- Free the space; the same pushes work again. ----
rm -f "$mnt/filler" "$mnt/filler-small"
check "registry restarts after space is freed" start_registry

st=$(http POST "$base/v2/$repo/blobs/uploads/?digest=$big" -H 'Content-Type: application/octet-stream' --data-binary "@$work/big")
check "monolithic push works again ($st)" test "$st" = 201
st=$(http GET "$base/v2/$repo/blobs/$big")
check "monolithic blob reads back whole ($st)" cmp -s "$work/body" "$work/big"

st=$(http GET "$base$chunk_loc")
range=$(header range)
offset=$((${range#0-} + 1))
tail -c +$((offset + 1)) "$work/chunked" >"$work/rest"
st2=$(http PATCH "$base$chunk_loc" -H 'Content-Type: application/octet-stream' -H "Content-Range: $offset-$(($(stat -c %s "$work/chunked") - 1))" --data-binary "@$work/rest")
loc=$(header location)
[ -n "$loc" ] || loc=$chunk_loc
case "$loc" in *\?*) sep='&' ;; *) sep='?' ;; esac
st3=$(http PUT "$base$loc${sep}digest=$chunked" -H 'Content-Length: 0')
check "chunked upload resumes from $offset and completes (status $st, PATCH $st2, PUT $st3)" test "$st" = 204 -a "$st2" = 202 -a "$st3" = 201
st=$(http GET "$base/v2/$repo/blobs/$chunked")
check "chunked blob reads back whole ($st)" cmp -s "$work/body" "$work/chunked"

st=$(http PUT "$base/v2/$repo/manifests/v2" -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' --data-binary "@$work/manifest2")
check "manifest push works again ($st)" test "$st" = 201
tags_now=$(tags_of "$repo")
check "tags now v1 and v2 ($tags_now)" test "$tags_now" = '["v1","v2"]'
st=$(http GET "$base/v2/$repo/manifests/v2" -H 'Accept: application/vnd.oci.image.manifest.v1+json')
check "manifest v2 reads back byte for byte ($st)" cmp -s "$work/body" "$work/manifest2"

check "SIGTERM: the registry exits cleanly" stop_registry
check "fsck is clean at the end" fsck_clean
finish
