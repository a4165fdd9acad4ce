#!/usr/bin/env bash
# Installs what the tests need (the real-client tests of conformance/clients/run.sh, the S3 and
# Azure emulators of the storage tests), when it is missing.
# Idempotent and non-interactive (CI has no terminal); meant to run as root on Debian 12.
# A fast no-op when everything is already present.
set -euo pipefail

# command name -> Debian package that provides it
declare -A CMD_PKG=(
  [skopeo]=skopeo
  [buildah]=buildah
  [podman]=podman
  [containerd]=containerd
  [ctr]=containerd
  [runc]=runc
  [docker-registry]=docker-registry
  [umoci]=umoci
  [newuidmap]=uidmap
  [fuse-overlayfs]=fuse-overlayfs
  [jq]=jq
  [curl]=curl
  [unshare]=util-linux
  [setpriv]=util-linux
  [slirp4netns]=slirp4netns
  [catatonit]=catatonit
  [promtool]=prometheus
)

missing_pkgs=()
for cmd in "${!CMD_PKG[@]}"; do
  if ! command -v "$cmd" >/dev/null 2>&1; then
    missing_pkgs+=("${CMD_PKG[$cmd]}")
  fi
done
# The test images need a statically linked busybox (it runs inside an empty image).
if ! dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'install ok installed'; then
  missing_pkgs+=(busybox-static)
fi

# Python packages from PyPI:
#   oras                 the ORAS Python SDK (conformance/clients)
#   grpcio grpcio-tools  the CRI (Kubernetes) PullImage client (conformance/clients/cri)
#   moto[server]         the S3-compatible server of the storage tests (moto_server)
PY=${PYTHON:-python3}
PY_PKGS=(oras grpcio grpcio-tools 'moto[server]')
py_ok() {
  "$PY" -c 'import oras, grpc, grpc_tools.protoc' >/dev/null 2>&1 && command -v moto_server >/dev/null 2>&1
}
need_pip=0
if ! command -v "$PY" >/dev/null 2>&1; then
  missing_pkgs+=(python3 python3-pip)
  need_pip=1
elif ! py_ok; then
  need_pip=1
  if ! "$PY" -m pip --version >/dev/null 2>&1; then
    missing_pkgs+=(python3-pip)
  fi
fi

# Azurite (npm `azurite`, its `azurite-blob` command): the Azure Blob Storage emulator of the
# storage tests (storage/tests/integration.rs). npm comes with Node.js.
if ! command -v azurite-blob >/dev/null 2>&1 && ! command -v npm >/dev/null 2>&1; then
  missing_pkgs+=(nodejs npm)
fi

if [ "${#missing_pkgs[@]}" -gt 0 ]; then
  # de-duplicate
  mapfile -t missing_pkgs < <(printf '%s\n' "${missing_pkgs[@]}" | sort -u)
  echo "install-test-deps: apt-get install ${missing_pkgs[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  # No recommends: prometheus would pull in exporters and a web UI; only promtool is used.
  apt-get install -y -q --no-install-recommends "${missing_pkgs[@]}"
fi

if [ "$need_pip" = 1 ]; then
  echo "install-test-deps: pip install ${PY_PKGS[*]}" >&2
  # Debian's system python refuses plain pip installs (PEP 668); allow it there.
  if ! "$PY" -m pip install -q --root-user-action=ignore "${PY_PKGS[@]}" 2>/dev/null; then
    "$PY" -m pip install -q --root-user-action=ignore --break-system-packages "${PY_PKGS[@]}"
  fi
  # pyenv: make new console scripts (moto_server) visible through its shims
  if command -v pyenv >/dev/null 2>&1; then pyenv rehash || true; fi
  hash -r
  py_ok || { echo "install-test-deps: python packages still missing after pip install" >&2; exit 1; }
fi

if ! command -v azurite-blob >/dev/null 2>&1; then
  echo "install-test-deps: npm install -g azurite@3" >&2
  npm install -g --no-audit --no-fund --loglevel=error azurite@3
  hash -r
  command -v azurite-blob >/dev/null 2>&1 || {
    echo "install-test-deps: azurite-blob is not on PATH after npm install -g azurite (npm prefix: $(npm prefix -g))" >&2
    exit 1
  }
fi

# s3s-fs: a disk-backed S3-compatible server (keeps its data across a restart), for the outage
# and memory tests of the S3 backend (conformance/src/bin/s3-outage.rs, s3-memory.rs). 0.14.1 is
# the last release this toolchain builds; about 150 s to build.
if ! command -v s3s-fs >/dev/null 2>&1 && ! [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs" ]; then
  echo "install-test-deps: cargo install s3s-fs" >&2
  cargo install s3s-fs --version 0.14.1 --features binary --locked
fi

echo "install-test-deps: all test dependencies present" >&2
