#!/usr/bin/env bash
# fetch-runtimes.sh: downloads the pinned container runtimes the node tests run, from Debian's
# trixie and sid suites, and unpacks them into a cache folder, without touching the machine's apt
# configuration (a private sources list and lists folder). Idempotent: what is unpacked already is
# kept. Fails loudly (non-zero, with the reason) when a package cannot be fetched.
#
#   deploy/tests/fetch-runtimes.sh [CACHE]      CACHE defaults to $RUNTIMES_CACHE or ~/.cache/registry-runtimes
#
# Afterwards:
#   CACHE/containerd-1.7/usr/bin/{containerd,ctr,containerd-shim-runc-v2}   1.7.24 (trixie)
#   CACHE/containerd-2.1/usr/bin/{containerd,ctr,containerd-shim-runc-v2}   2.1.9  (sid)
#   CACHE/docker-28/usr/sbin/dockerd, CACHE/docker-cli-28/usr/bin/docker 28.5.2 (sid)
#   CACHE/buildx/usr/libexec/docker/cli-plugins/docker-buildx            (sid)
# containerd 1.6.20 is Debian 12's own `containerd` package (apt-get install containerd).
set -euo pipefail

CACHE=${1:-${RUNTIMES_CACHE:-$HOME/.cache/registry-runtimes}}
PINS=(
  "containerd-1.7 containerd=1.7.24~ds1-6+deb13u1 usr/bin/containerd"
  "containerd-2.1 containerd=2.1.9+ds1-5 usr/bin/containerd"
  "docker-28 docker.io=28.5.2+dfsg4-5 usr/sbin/dockerd"
  "docker-cli-28 docker-cli=28.5.2+dfsg4-5 usr/bin/docker"
  "buildx docker-buildx=0.29.1+ds1-4 usr/libexec/docker/cli-plugins/docker-buildx"
)

die() { echo "fetch-runtimes: FAILED: $*" >&2; exit 1; }

missing=()
for p in "${PINS[@]}"; do
  read -r dir pkg probe <<<"$p"
  [ -x "$CACHE/$dir/$probe" ] || missing+=("$p")
done
if [ ${#missing[@]} = 0 ]; then
  echo "fetch-runtimes: all present in $CACHE"
  exit 0
fi

command -v apt-get >/dev/null || die "apt-get not found (a Debian machine is needed)"
mkdir -p "$CACHE/apt/lists/partial" "$CACHE/debs"
src=$CACHE/apt/sources.list
mirror=""
if [ -f /etc/apt/sources.list.d/debian.sources ]; then
  mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
fi
if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
  mirror=$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; exit } }' /etc/apt/sources.list)
fi
mirror=${mirror:-http://deb.debian.org/debian}
printf 'deb %s trixie main\ndeb %s sid main\n' "$mirror" "$mirror" >"$src"
opts=(-o "Dir::Etc::SourceList=$src" -o Dir::Etc::SourceParts=/dev/null -o "Dir::State::Lists=$CACHE/apt/lists"
  -o "Dir::Cache=$CACHE/apt/cache" -o APT::Get::List-Cleanup=false -o APT::Sandbox::User=root)
mkdir -p "$CACHE/apt/cache/archives/partial"

# the lists are refreshed at most once a day (pinned versions vanish from sid eventually: then the
# download below fails and says which)
if [ -z "$(find "$CACHE/apt/lists" -maxdepth 1 -name '*_Packages*' -mtime -1 2>/dev/null | head -n 1)" ]; then
  echo "fetch-runtimes: apt-get update (trixie, sid from $mirror) into $CACHE/apt/lists"
  apt-get "${opts[@]}" update -qq || die "apt-get update of the private trixie/sid lists"
fi

for p in "${missing[@]}"; do
  read -r dir pkg probe <<<"$p"
  name=${pkg%%=*}
  echo "fetch-runtimes: downloading $pkg"
  tmp=$(mktemp -d "$CACHE/debs/dl.XXXXXX")
  if ! (cd "$tmp" && apt-get "${opts[@]}" download "$pkg" >/dev/null); then
    rm -rf "$tmp"
    die "apt-get download $pkg (versions available: $(apt-cache "${opts[@]}" madison "$name" 2>/dev/null | awk '{print $3}' | tr '\n' ' '))"
  fi
  deb=$(ls "$tmp"/*.deb)
  rm -rf "${CACHE:?}/$dir.tmp"
  dpkg -x "$deb" "$CACHE/$dir.tmp" || die "dpkg -x $deb"
  [ -x "$CACHE/$dir.tmp/$probe" ] || die "$deb has no $probe"
  rm -rf "${CACHE:?}/$dir"
  mv "$CACHE/$dir.tmp" "$CACHE/$dir"
  rm -rf "$tmp"   # the .deb is not kept: the unpacked folder is what the tests run
  echo "fetch-runtimes: $pkg -> $CACHE/$dir"
done
echo "fetch-runtimes: all present in $CACHE"
