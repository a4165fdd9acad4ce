#!/usr/bin/env bash
# Builds the registry's container image without any network: a statically linked `registry`
# binary in an image made by buildah from scratch, with OCI labels. No base image, no shell.
#
#   deploy/image/build.sh [--tag NAME] [--binary PATH] [--oci-archive FILE]
#
#   --tag NAME          image name to commit to    [localhost/registry:<workspace version>], the
#                       name deploy/generic's Deployment uses
#   --binary PATH       use this static binary instead of building one
#   --oci-archive FILE  also write the image to an OCI archive (for `ctr images import`, or
#                       `skopeo copy oci-archive:FILE docker://...`)
#   BUILDAH_OPTS        global buildah options, e.g. "--root DIR --runroot DIR" for private storage
#
# The binary: `cargo build --release --locked -p registry --target x86_64-unknown-linux-gnu` with
# `-C target-feature=+crt-static` (glibc, statically linked; no musl target is installable here),
# in target/static so it does not disturb the normal build. Name lookups work without libnss: static
# glibc falls back to its built-in files and dns sources.
# The image's creation time is the HEAD commit's time, so the same commit gives the same config.
# Prints the image ID and name on the last line.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TARGET=x86_64-unknown-linux-gnu
TAG=""
BINARY=""
ARCHIVE=""
while [ $# -gt 0 ]; do
  case $1 in
    --tag) TAG=$2; shift 2 ;;
    --binary) BINARY=$2; shift 2 ;;
    --oci-archive) ARCHIVE=$2; shift 2 ;;
    -h | --help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "build.sh: unknown argument $1" >&2; exit 64 ;;
  esac
done
read -r -a BOPTS <<<"${BUILDAH_OPTS:-}"

say() { echo "build.sh: $*" >&2; }

VERSION=$(awk '/^\[workspace.package\]/ { p = 1; next } /^\[/ { p = 0 } p && /^version *=/ { gsub(/[" ]/, ""); sub(/version=/, ""); print; exit }' "$ROOT/Cargo.toml")
[ -n "$VERSION" ] || { say "cannot read the version from Cargo.toml"; exit 1; }
TAG=${TAG:-localhost/registry:$VERSION}
REVISION=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)
EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null || date +%s)}
CREATED=$(date -u -d "@$EPOCH" +%Y-%m-%dT%H:%M:%SZ)

for tool in buildah cargo; do
  if [ "$tool" = cargo ] && [ -n "$BINARY" ]; then continue; fi
  command -v "$tool" >/dev/null || { say "$tool is missing (apt-get install buildah; Rust from rustup)"; exit 1; }
done

if [ -z "$BINARY" ]; then
  # glibc's static archives come with libc6-dev (which gcc pulls in).
  [ -f /usr/lib/x86_64-linux-gnu/libc.a ] || { say "libc.a missing: apt-get install libc6-dev"; exit 1; }
  say "building a static registry binary ($TARGET, crt-static) in target/static"
  # No debug info in the image (smaller, and a faster first build); symbols stay for backtraces.
  RUSTFLAGS="-C target-feature=+crt-static" CARGO_PROFILE_RELEASE_DEBUG=false \
    CARGO_PROFILE_RELEASE_STRIP=debuginfo \
    cargo build --release --locked -p registry --target "$TARGET" --target-dir "$ROOT/target/static" >&2
  BINARY="$ROOT/target/static/$TARGET/release/registry"
fi
[ -x "$BINARY" ] || { say "no executable at $BINARY"; exit 1; }
# A scratch image has no loader and no libc: refuse a dynamically linked binary.
if LC_ALL=C readelf -l "$BINARY" 2>/dev/null | grep -q 'INTERP'; then
  say "$BINARY is dynamically linked (it has a program interpreter); it cannot run from scratch"
  exit 1
fi
BIN_VERSION=$("$BINARY" --version)
say "binary: $BINARY ($BIN_VERSION)"

STAGE=$(mktemp -d)
c=""
cleanup() {
  [ -n "$c" ] && buildah "${BOPTS[@]}" rm "$c" >/dev/null 2>&1
  rm -rf "$STAGE"
}
trap cleanup EXIT

# Minimal /etc: CA roots for S3 over https, name lookups from files then DNS, a passwd entry for
# the non-root user the manifests run as.
mkdir -p "$STAGE/etc/ssl/certs" "$STAGE/var/lib/registry" "$STAGE/tmp"
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  cp /etc/ssl/certs/ca-certificates.crt "$STAGE/etc/ssl/certs/ca-certificates.crt"
fi
printf 'hosts: files dns\n' >"$STAGE/etc/nsswitch.conf"
printf 'root:x:0:0:root:/:/sbin/nologin\nregistry:x:65532:65532:registry:/var/lib/registry:/sbin/nologin\n' >"$STAGE/etc/passwd"
printf 'root:x:0:\nregistry:x:65532:\n' >"$STAGE/etc/group"
chmod 1777 "$STAGE/tmp"

chown 65532:65532 "$STAGE/var/lib/registry"
c=$(buildah "${BOPTS[@]}" from scratch)
buildah "${BOPTS[@]}" copy --quiet "$c" "$BINARY" /usr/bin/registry >/dev/null
buildah "${BOPTS[@]}" copy --quiet "$c" "$STAGE/" / >/dev/null

labels=(
  "org.opencontainers.image.title=registry"
  "org.opencontainers.image.description=OCI distribution registry for build clusters (builds.registry.svc.cluster.local)"
  "org.opencontainers.image.version=$VERSION"
  "org.opencontainers.image.revision=$REVISION"
  "org.opencontainers.image.created=$CREATED"
  "org.opencontainers.image.licenses=Apache-2.0"
  "org.opencontainers.image.ref.name=$TAG"
)
cfg=(--os linux --arch amd64
  --entrypoint '["/usr/bin/registry"]' --cmd '["serve"]'
  --user 65532:65532 --workingdir /var/lib/registry
  --port 5000/tcp --port 5443/tcp
  --env REGISTRY_STORAGE=/var/lib/registry
  --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
  --stop-signal SIGTERM)
for l in "${labels[@]}"; do cfg+=(--label "$l" --annotation "$l"); done
buildah "${BOPTS[@]}" config "${cfg[@]}" "$c"

id=$(buildah "${BOPTS[@]}" commit --quiet --format oci --timestamp "$EPOCH" --rm "$c" "$TAG")
c=""
if [ -n "$ARCHIVE" ]; then
  rm -f "$ARCHIVE"
  buildah "${BOPTS[@]}" push --quiet "$TAG" "oci-archive:$ARCHIVE:$TAG" >&2
  say "wrote $ARCHIVE"
fi
echo "$id $TAG"
