# The BuildKit kontrakt and the Docker client, for real, with access control on (sourced by
# deploy/tests/runtimes.sh, whose helpers it uses). The registry runs with an [auth] section as a
# cluster would: anonymous pull, ServiceAccount push into builds/{namespace}/** (a JWKS and a
# token signed by a test key, conformance/auth/jwt_tool.py), an htpasswd user `ci` pushing team/**.
# Docker 28.5.2's embedded BuildKit, on containerd 2.1.9 as dockerd's containerd with the containerd
# image store, builds deploy/kontrakt/context with --network none and pushes it by the service name
# with the config.json that the kontrakt Job's own step writes (docker-config.sh and its
# environment, taken from the rendered deploy/kontrakt), to builds/<the Job's namespace>/, with a
# provenance attestation and a registry cache (mode=max); the same push without that config gets
# 401 and a push outside builds/<namespace>/ is denied; a second build after pruning the build
# cache imports the registry cache (its steps show CACHED); a node's containerd 2.1.9, set up by
# setup-node.sh, pulls the pushed image anonymously by the service name through CRI and runs it.
# Then the Docker client (28.5.2, matching the daemon): anonymous pull, push without login refused
# with an authentication error, `docker login` and push, anonymous pull of what was pushed.
# dockerd and its containerd run in private mount namespaces (hosts file naming the service,
# tmpfs /run and /opt), with private sockets, data-root, exec-root; bridge none, iptables off.
# The registry listens on 127.0.0.3:80 for this part (the port the in-cluster name uses).
# shellcheck shell=bash disable=SC2016,SC2317,SC2154

BK_ADDR=127.0.0.3
# the client too sees the name only through the hosts file: with the docker driver, BuildKit's
# client side fetches the registry tokens (from the realm, by the service name)
DOCKER=(unshare -m --propagation private sh -c 'mount --bind "$0" /etc/hosts && exec "$@"' "$WORK/bk/hosts"
  "$CACHE/docker-cli-28/usr/bin/docker" -H "unix://$WORK/bk/docker.sock")
CI_PW="ci-pw-$RANDOM$RANDOM$RANDOM"

# in_ns HOSTS CMD... (run it in the background only: it execs): CMD in a private mount namespace with HOSTS over /etc/hosts, tmpfs on /run,
# /opt and /etc/docker
in_ns() {
  exec unshare -m --propagation private bash -c '
    mount --bind "$0" /etc/hosts && mount -t tmpfs tmpfs /run && mount -t tmpfs tmpfs /opt || exit 1
    if [ -d /etc/docker ]; then mount -t tmpfs tmpfs /etc/docker || exit 1; fi
    exec "$@"' "$@"
}

# docker_config DIR: a client config folder with the buildx plugin and nothing else (no credentials)
docker_config() {
  mkdir -p "$1/cli-plugins"
  ln -sf "$CACHE/buildx/usr/libexec/docker/cli-plugins/docker-buildx" "$1/cli-plugins/docker-buildx"
}

# the kontrakt Job as rendered: its push credentials step, namespace, audience (JSON in BK_JOB)
# and the registry's access control, keyed to that audience
bk_auth() {
  run "$PY" "$HERE/manifests.py" kontrakt "$WORK/bk/rendered" || return 1
  BK_JOB=$(cat "$WORK/bk/rendered/extracted/kontrakt-buildkit.json")
  BK_NS=$(jq -r .namespace <<<"$BK_JOB")
  mkdir -p "$WORK/bk/keys"
  run "$PY" "$ROOT/conformance/auth/jwt_tool.py" keys "$WORK/bk/keys" || return 1
  run htpasswd -B -b -c "$WORK/bk/htpasswd" ci "$CI_PW" || return 1
  cat >"$WORK/bk/registry.toml" <<TOML
log_format = "json"
[auth]
htpasswd = "$WORK/bk/htpasswd"
# in order: ServiceAccounts push into their namespace's builds/ folder; ci pushes team/;
# everyone pulls (the node setup's probe image is served by the registry: no push rule for it)
rules = [
  { repositories = ["builds/{namespace}/**"], identities = ["system:serviceaccount:*:*"], actions = ["pull", "push"] },
  { repositories = ["team/**"], identities = ["ci"], actions = ["pull", "push"] },
  { repositories = ["**"], identities = ["everyone"], actions = ["pull"] },
]
[auth.serviceaccount]
jwks_file = "$WORK/bk/keys/jwks.json"
issuer = "https://kubernetes.default.svc.cluster.local"
audience = "$(jq -r .audience <<<"$BK_JOB")"
TOML
}

bk_start() {
  mkdir -p "$WORK/bk/ctrd" "$WORK/bk/docker"
  docker_config "$WORK/bk/docker-config"
  printf '127.0.0.1 localhost\n%s %s\n' "$BK_ADDR" "$SVC" >"$WORK/bk/hosts"
  bk_auth || return 1
  # the registry on the address and port the name leads to, with access control on
  stop_pid "$REG_PID_main"
  REG_CONFIG="$WORK/bk/registry.toml" start_registry main "$BK_ADDR:80" || return 1
  cat >"$WORK/bk/ctrd/config.toml" <<TOML
version = 3
root = "$WORK/bk/ctrd/root"
state = "$WORK/bk/ctrd/state"
[grpc]
  address = "$WORK/bk/ctrd/containerd.sock"
[ttrpc]
  address = "$WORK/bk/ctrd/containerd.sock.ttrpc"
TOML
  in_ns "$WORK/bk/hosts" env PATH="$CACHE/containerd-2.1/usr/bin:$PATH" containerd --config "$WORK/bk/ctrd/config.toml" \
    >"$WORK/logs/bk-containerd.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do [ -S "$WORK/bk/ctrd/containerd.sock" ] && break; sleep 0.1; done
  [ -S "$WORK/bk/ctrd/containerd.sock" ] || fail "dockerd's containerd did not start: $(tail -n 2 "$WORK/logs/bk-containerd.log")" || return 1
  cat >"$WORK/bk/daemon.json" <<JSON
{
  "features": {"containerd-snapshotter": true},
  "bridge": "none", "iptables": false, "ip6tables": false,
  "data-root": "$WORK/bk/docker/data", "exec-root": "$WORK/bk/docker/exec",
  "pidfile": "$WORK/bk/docker/dockerd.pid",
  "hosts": ["unix://$WORK/bk/docker.sock"],
  "containerd": "$WORK/bk/ctrd/containerd.sock",
  "insecure-registries": ["$SVC"]
}
JSON
  in_ns "$WORK/bk/hosts" env PATH="$CACHE/docker-28/usr/sbin:$CACHE/docker-28/usr/bin:$CACHE/containerd-2.1/usr/bin:$PATH" \
    dockerd --config-file "$WORK/bk/daemon.json" >"$WORK/logs/bk-dockerd.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 300); do "${DOCKER[@]}" version >/dev/null 2>&1 && return 0; sleep 0.2; done
  fail "dockerd did not start: $(tail -n 3 "$WORK/logs/bk-dockerd.log" | tr '\n' ' ')"
}

# bk_build CONFIG_DIR REF [--cache-from ...]: the kontrakt build pushed to REF with the client
# config in CONFIG_DIR (its credentials, or none)
bk_build() {
  local cfg=$1 ref=$2
  shift 2
  CMD_TIMEOUT=300 run env DOCKER_CONFIG="$cfg" "${DOCKER[@]}" buildx build --network none --progress plain \
    --build-arg "BASE=$SVC/nodes/hello:v1" \
    --provenance=mode=max \
    --cache-to "type=registry,ref=$SVC/builds/$BK_NS/cache,mode=max" "$@" \
    --push -t "$ref" "$ROOT/deploy/kontrakt/context"
}

# upload_status REPO [CONFIG_DIR]: the registry's answer to starting an upload into REPO with
# the credentials of CONFIG_DIR/config.json for the service name (none: anonymous), as the build's
# push starts it
upload_status() {
  local h=()
  [ -n "${2:-}" ] && h=(-H "Authorization: Basic $(jq -r --arg s "$SVC" '.auths[$s].auth' "$2/config.json")")
  curl -s --max-time 5 -o /dev/null -w '%{http_code}' -X POST "${h[@]}" "http://$BK_ADDR/v2/$1/blobs/uploads/"
}

# manifest_status REPO TAG: the HTTP status of an anonymous GET of the manifest
manifest_status() {
  curl -s --max-time 5 -o /dev/null -w '%{http_code}' \
    -H 'Accept: application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json' \
    "http://$BK_ADDR/v2/$1/manifests/$2"
}

# The Job's own step: docker-config.sh from the rendered ConfigMap, with the Job's environment,
# the projected token file being a token minted for the Job's namespace and audience.
test_buildkit_job_config() {
  bk_start || return 1
  local env=() k v tokfile="$WORK/bk/sa/token" want
  mkdir -p "$WORK/bk/sa"
  run "$PY" "$ROOT/conformance/auth/jwt_tool.py" mint "$WORK/bk/keys" "$BK_NS" --aud "$(jq -r .audience <<<"$BK_JOB")" --exp 3600 || return 1
  printf '%s' "$OUT" >"$tokfile"
  while IFS='=' read -r k v; do
    case $k in
      TOKEN_FILE) v=$tokfile ;;
      DOCKER_CONFIG) v="$WORK/bk/job-docker-config" ;;
    esac
    env+=("$k=$v")
  done < <(jq -r '.env | to_entries[] | "\(.key)=\(.value)"' <<<"$BK_JOB")
  run env -i PATH="$PATH" "${env[@]}" sh "$WORK/bk/rendered/extracted/docker-config.sh" || return 1
  want=$(printf 'sa:%s' "$(cat "$tokfile")" | base64 -w 0)
  expect_eq "config.json auth for $SVC" "$(jq -r --arg s "$SVC" '.auths[$s].auth' "$WORK/bk/job-docker-config/config.json")" "$want" || return 1
  docker_config "$WORK/bk/job-docker-config"
}

test_buildkit_push() {
  [ -f "$WORK/bk/job-docker-config/config.json" ] || fail "no config.json from the Job's step" || return 1
  bk_build "$WORK/bk/job-docker-config" "$SVC/builds/$BK_NS/buildkit:1" || return 1
  local idx
  idx=$(curl -s --max-time 5 -H 'Accept: application/vnd.oci.image.index.v1+json' "http://$BK_ADDR/v2/builds/$BK_NS/buildkit/manifests/1")
  expect_eq "pushed media type" "$(jq -r .mediaType <<<"$idx")" application/vnd.oci.image.index.v1+json || return 1
  jq -e '.manifests[] | select(.annotations["vnd.docker.reference.type"] == "attestation-manifest")' <<<"$idx" >/dev/null ||
    fail "no provenance attestation in the pushed index: $idx" || return 1
  expect_eq "registry cache manifest" "$(manifest_status "builds/$BK_NS/cache" latest)" 200
}

test_buildkit_push_without_credentials() {
  docker_config "$WORK/bk/no-credentials"
  if bk_build "$WORK/bk/no-credentials" "$SVC/builds/$BK_NS/buildkit:anonymous"; then
    fail "pushed without credentials"
    return 1
  fi
  # BuildKit's words for a 401 after the anonymous token flow
  grep -q "failed to push $SVC/builds/$BK_NS/buildkit:anonymous: unauthorized" <<<"$ERR$OUT" ||
    fail "the build failed, but not with 401: $(grep -i error <<<"$ERR$OUT" | tail -n 1)" || return 1
  expect_eq "anonymous upload into builds/$BK_NS/buildkit" "$(upload_status "builds/$BK_NS/buildkit")" 401 || return 1
  expect_eq "the tag pushed without credentials" "$(manifest_status "builds/$BK_NS/buildkit" anonymous)" 404
}

test_buildkit_push_outside_namespace() {
  local repo
  for repo in kontrakt/buildkit builds/another-namespace/buildkit; do
    if bk_build "$WORK/bk/job-docker-config" "$SVC/$repo:1"; then
      fail "the ServiceAccount of $BK_NS pushed $repo"
      return 1
    fi
    grep -q "failed to push $SVC/$repo:1: denied: system:serviceaccount:$BK_NS:" <<<"$ERR$OUT" ||
      fail "push to $repo failed, but not denied: $(grep -i error <<<"$ERR$OUT" | tail -n 1)" || return 1
    expect_eq "upload into $repo with the Job's config.json" "$(upload_status "$repo" "$WORK/bk/job-docker-config")" 403 || return 1
    expect_eq "the tag pushed to $repo" "$(manifest_status "$repo" 1)" 404 || return 1
  done
}

test_buildkit_cache_from() {
  # drop dockerd's build cache, so that only the registry cache can make the steps CACHED
  run "${DOCKER[@]}" builder prune -af || return 1
  bk_build "$WORK/bk/job-docker-config" "$SVC/builds/$BK_NS/buildkit:2" --cache-from "type=registry,ref=$SVC/builds/$BK_NS/cache" || return 1
  grep -q "importing cache manifest from $SVC/builds/$BK_NS/cache" <<<"$ERR$OUT" || fail "no cache import in the build output" || return 1
  # the COPY step (`#N [2/2] COPY kontrakt.txt ...`) is answered from the imported cache: `#N CACHED`
  local step
  step=$(sed -n 's/^\(#[0-9]*\) \[[0-9/]*\] COPY kontrakt.txt.*/\1/p' <<<"$ERR$OUT" | head -n 1)
  [ -n "$step" ] || fail "the COPY step is missing from the build output" || return 1
  grep -qx "$step CACHED" <<<"$ERR$OUT" || fail "the COPY step ($step) is not CACHED in the second build" || return 1
}

test_buildkit_node_pulls_and_runs() {
  local node="$WORK/node-kontrakt" want ref="$SVC/builds/$BK_NS/buildkit:1"
  make_node "$node"
  node_config 2.1 one "$node"
  start_ctrd "$node" 2.1 || return 1
  local pid=$CTRD_PID
  setup "$node" REGISTRY_ADDRESS="$BK_ADDR" REGISTRY_PORT=80
  expect_eq "setup exit" "$SETUP_RC" 0 || { REASON="$REASON: $(tail -n 2 <<<"$SETUP_OUT" | tr '\n' ' ')"; return 1; }
  # the node has no credentials: an anonymous pull through CRI
  cri_pull "$node" "$ref" || return 1
  want=$(cat "$ROOT/deploy/kontrakt/context/kontrakt.txt")
  mkdir -p "$WORK/fifo"
  run "$CACHE/containerd-2.1/usr/bin/ctr" --address "$node/containerd.sock" -n k8s.io run --rm --fifo-dir "$WORK/fifo" \
    "$ref" "kontrakt-$RANDOM" || return 1
  expect_eq "output of the pushed image, run by the node" "$OUT" "$want" || return 1
  stop_pid "$pid"
}

# The Docker client 28.5.2 (the daemon's own version) against the same registry.
test_docker_client() {
  local cfg="$WORK/bk/docker-client" ref="$SVC/team/docker:1" d1 d2
  docker_config "$cfg"
  local D=(env DOCKER_CONFIG="$cfg" "${DOCKER[@]}")
  run "${D[@]}" pull "$SVC/nodes/hello:v1" || { REASON="anonymous docker pull: $REASON"; return 1; }
  run "${D[@]}" tag "$SVC/nodes/hello:v1" "$ref" || return 1
  if run "${D[@]}" push "$ref"; then fail "docker push without login succeeded"; return 1; fi
  grep -qiE 'unauthorized|authentication required|no basic auth credentials' <<<"$ERR$OUT" ||
    fail "docker push without login failed, but not with an authentication error: $(tail -n 1 <<<"$ERR$OUT")" || return 1
  expect_eq "the tag pushed without login" "$(manifest_status team/docker 1)" 404 || return 1
  if run "${D[@]}" login -u ci -p "wrong-$CI_PW" "$SVC"; then fail "docker login with a wrong password succeeded"; return 1; fi
  printf '%s' "$CI_PW" >"$WORK/bk/ci-password"
  run sh -c 'exec "$@" <"$0"' "$WORK/bk/ci-password" "${D[@]}" login -u ci --password-stdin "$SVC" || return 1
  grep -q "Login Succeeded" <<<"$OUT$ERR" || fail "no 'Login Succeeded': $OUT" || return 1
  run "${D[@]}" push "$ref" || { REASON="docker push after login: $REASON"; return 1; }
  d1=$(sed -n 's/.*digest: \(sha256:[0-9a-f]*\).*/\1/p' <<<"$OUT" | tail -n 1)
  [ -n "$d1" ] || fail "docker push printed no digest: $(tail -n 1 <<<"$OUT")" || return 1
  expect_eq "anonymous GET of the pushed tag" "$(manifest_status team/docker 1)" 200 || return 1
  run "${D[@]}" logout "$SVC" || return 1
  run "${D[@]}" rmi "$ref" || return 1
  run "${D[@]}" pull "$ref" || { REASON="anonymous docker pull of the pushed tag: $REASON"; return 1; }
  d2=$(sed -n 's/^Digest: \(sha256:[0-9a-f]*\).*/\1/p' <<<"$OUT")
  expect_eq "digest pulled anonymously" "$d2" "$d1"
}

t buildkit-kontrakt-job-writes-config-json-from-sa-token test_buildkit_job_config
t buildkit-kontrakt-push-as-serviceaccount-provenance-cache test_buildkit_push
t buildkit-kontrakt-push-without-config-gets-401 test_buildkit_push_without_credentials
t buildkit-kontrakt-push-outside-namespace-denied test_buildkit_push_outside_namespace
t buildkit-kontrakt-cache-from-shows-cached test_buildkit_cache_from
t buildkit-kontrakt-node-pulls-anonymously-and-runs test_buildkit_node_pulls_and_runs
t docker-client-login-push-anonymous-pull test_docker_client
