# The BuildKit kontrakt, for real (sourced by deploy/tests/runtimes.sh, whose helpers it uses):
# Docker 28.5.2's embedded BuildKit, on containerd 2.1.9 as dockerd's containerd with the containerd
# image store, builds deploy/kontrakt/context with --network none, pushes it to
# builds.registry.svc.cluster.local (port 80, the Service's port) with a provenance attestation and
# a registry cache (mode=max); a second build after pruning the build cache imports that cache
# (its steps show CACHED); then a node's containerd 2.1.9, set up by setup-node.sh, pulls the
# pushed image by the service name through CRI and runs it.
# dockerd and its containerd run in private mount namespaces (hosts file naming the service,
# tmpfs /run and /opt), with private sockets, data-root, exec-root; bridge none, iptables off.
# The registry listens on 127.0.0.3:80 for this part (the port the in-cluster name uses).
# shellcheck shell=bash disable=SC2016,SC2317,SC2154

BK_ADDR=127.0.0.3
DOCKER=("$CACHE/docker-cli-28/usr/bin/docker" -H "unix://$WORK/bk/docker.sock")
export DOCKER_CONFIG="$WORK/bk/docker-config"

# in_ns HOSTS CMD... (run it in the background only: it execs): CMD in a private mount namespace with HOSTS over /etc/hosts, tmpfs on /run,
# /opt and /etc/docker
in_ns() {
  exec unshare -m --propagation private bash -c '
    mount --bind "$0" /etc/hosts && mount -t tmpfs tmpfs /run && mount -t tmpfs tmpfs /opt || exit 1
    if [ -d /etc/docker ]; then mount -t tmpfs tmpfs /etc/docker || exit 1; fi
    exec "$@"' "$@"
}

bk_start() {
  mkdir -p "$WORK/bk/ctrd" "$WORK/bk/docker" "$DOCKER_CONFIG/cli-plugins"
  ln -sf "$CACHE/buildx/usr/libexec/docker/cli-plugins/docker-buildx" "$DOCKER_CONFIG/cli-plugins/docker-buildx"
  printf '127.0.0.1 localhost\n%s %s\n' "$BK_ADDR" "$SVC" >"$WORK/bk/hosts"
  # the registry on the address and port the name leads to
  stop_pid "$REG_PID_main"
  start_registry main "$BK_ADDR:80" || return 1
  cat >"$WORK/bk/ctrd/config.toml" <<EOF
version = 3
root = "$WORK/bk/ctrd/root"
state = "$WORK/bk/ctrd/state"
[grpc]
  address = "$WORK/bk/ctrd/containerd.sock"
[ttrpc]
  address = "$WORK/bk/ctrd/containerd.sock.ttrpc"
EOF
  in_ns "$WORK/bk/hosts" env PATH="$CACHE/containerd-2.1/usr/bin:$PATH" containerd --config "$WORK/bk/ctrd/config.toml" \
    >"$WORK/logs/bk-containerd.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do [ -S "$WORK/bk/ctrd/containerd.sock" ] && break; sleep 0.1; done
  [ -S "$WORK/bk/ctrd/containerd.sock" ] || fail "dockerd's containerd did not start: $(tail -n 2 "$WORK/logs/bk-containerd.log")" || return 1
  cat >"$WORK/bk/daemon.json" <<EOF
{
  "features": {"containerd-snapshotter": true},
  "bridge": "none", "iptables": false, "ip6tables": false,
  "data-root": "$WORK/bk/docker/data", "exec-root": "$WORK/bk/docker/exec",
  "pidfile": "$WORK/bk/docker/dockerd.pid",
  "hosts": ["unix://$WORK/bk/docker.sock"],
  "containerd": "$WORK/bk/ctrd/containerd.sock",
  "insecure-registries": ["$SVC"]
}
EOF
  in_ns "$WORK/bk/hosts" env PATH="$CACHE/docker-28/usr/sbin:$CACHE/docker-28/usr/bin:$CACHE/containerd-2.1/usr/bin:$PATH" \
    dockerd --config-file "$WORK/bk/daemon.json" >"$WORK/logs/bk-dockerd.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 300); do "${DOCKER[@]}" version >/dev/null 2>&1 && return 0; sleep 0.2; done
  fail "dockerd did not start: $(tail -n 3 "$WORK/logs/bk-dockerd.log" | tr '\n' ' ')"
}

bk_build() { # TAG [--cache-from ...]
  local tag=$1
  shift
  CMD_TIMEOUT=300 run "${DOCKER[@]}" buildx build --network none --progress plain \
    --build-arg "BASE=$SVC/nodes/hello:v1" \
    --provenance=mode=max \
    --cache-to "type=registry,ref=$SVC/kontrakt/cache,mode=max" "$@" \
    --push -t "$SVC/kontrakt/buildkit:$tag" "$ROOT/deploy/kontrakt/context"
}

test_buildkit_push() {
  bk_start || return 1
  bk_build 1 || return 1
  local idx
  idx=$(curl -s --max-time 5 -H 'Accept: application/vnd.oci.image.index.v1+json' "http://$BK_ADDR/v2/kontrakt/buildkit/manifests/1")
  expect_eq "pushed media type" "$(jq -r .mediaType <<<"$idx")" application/vnd.oci.image.index.v1+json || return 1
  jq -e '.manifests[] | select(.annotations["vnd.docker.reference.type"] == "attestation-manifest")' <<<"$idx" >/dev/null ||
    fail "no provenance attestation in the pushed index: $idx" || return 1
  expect_eq "registry cache manifest" \
    "$(curl -s --max-time 5 -o /dev/null -w '%{http_code}' -H 'Accept: application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json' "http://$BK_ADDR/v2/kontrakt/cache/manifests/latest")" 200
}

test_buildkit_cache_from() {
  # drop dockerd's build cache, so that only the registry cache can make the steps CACHED
  run "${DOCKER[@]}" builder prune -af || return 1
  bk_build 2 --cache-from "type=registry,ref=$SVC/kontrakt/cache" || return 1
  grep -q "importing cache manifest from $SVC/kontrakt/cache" <<<"$ERR$OUT" || fail "no cache import in the build output" || return 1
  # the COPY step (`#N [2/2] COPY kontrakt.txt ...`) is answered from the imported cache: `#N CACHED`
  local step
  step=$(sed -n 's/^\(#[0-9]*\) \[[0-9/]*\] COPY kontrakt.txt.*/\1/p' <<<"$ERR$OUT" | head -n 1)
  [ -n "$step" ] || fail "the COPY step is missing from the build output" || return 1
  grep -qx "$step CACHED" <<<"$ERR$OUT" || fail "the COPY step ($step) is not CACHED in the second build" || return 1
}

test_buildkit_node_pulls_and_runs() {
  local node="$WORK/node-kontrakt" want
  make_node "$node"
  node_config 2.1 one "$node"
  start_ctrd "$node" 2.1 || return 1
  local pid=$CTRD_PID
  setup "$node" REGISTRY_ADDRESS="$BK_ADDR" REGISTRY_PORT=80
  expect_eq "setup exit" "$SETUP_RC" 0 || { REASON="$REASON: $(tail -n 2 <<<"$SETUP_OUT" | tr '\n' ' ')"; return 1; }
  cri_pull "$node" "$SVC/kontrakt/buildkit:1" || return 1
  want=$(cat "$ROOT/deploy/kontrakt/context/kontrakt.txt")
  mkdir -p "$WORK/fifo"
  run "$CACHE/containerd-2.1/usr/bin/ctr" --address "$node/containerd.sock" -n k8s.io run --rm --fifo-dir "$WORK/fifo" \
    "$SVC/kontrakt/buildkit:1" "kontrakt-$RANDOM" || return 1
  expect_eq "output of the pushed image, run by the node" "$OUT" "$want" || return 1
  stop_pid "$pid"
}

t buildkit-kontrakt-push-provenance-cache test_buildkit_push
t buildkit-kontrakt-cache-from-shows-cached test_buildkit_cache_from
t buildkit-kontrakt-node-pulls-by-name-and-runs test_buildkit_node_pulls_and_runs
