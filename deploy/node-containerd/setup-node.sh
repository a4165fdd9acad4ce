#!/bin/sh
# setup-node.sh: lets this node's container runtime pull the in-cluster registry by its service
# name (builds.registry.svc.cluster.local by default), with no runtime restart.
#
#   setup-node.sh run      reconcile now, then every $INTERVAL seconds until SIGTERM (the DaemonSet)
#   setup-node.sh once     reconcile once; exit 0 only when the runtime was seen pulling the
#                          probe image by the name (VERIFY=probe), 2 when something needs a human
#   setup-node.sh remove   remove what this script wrote and restore the files it replaced
#   setup-node.sh cleanup  `remove`, then idle until SIGTERM (deploy/node-containerd-cleanup: the
#                          uninstall; a rolling update or an eviction of `run` removes nothing)
#
# What it manages ($TARGETS, space separated):
#   containerd  <config_path>/<name>/hosts.toml (+ ca.crt for https) in the directory containerd
#               reads registry hosts from: plugins."io.containerd.grpc.v1.cri".registry.config_path
#               (containerd 1.x), plugins."io.containerd.cri.v1.images".registry.config_path
#               (containerd 2.x), plugins.cri.registry.config_path (version 1 configs), and the k3s /
#               rke2 config under /var/lib/rancher/{k3s,rke2}/agent/etc/containerd/. containerd reads
#               hosts.toml on every pull: no restart. A k3s/rke2 node whose containerd has no
#               config_path reads /etc/rancher/{k3s,rke2}/registries.yaml instead (at its start).
#               Where the file goes is decided by `registry node-setup plan` from the runtime's
#               effective configuration (CRI Status/Version over its socket, and the config file
#               with its imports); containerd 2.x with a config_path list and the transfer service
#               reads the whole list string as ONE folder, so the file goes there too. CRI-O: a
#               drop-in in /etc/containers/registries.conf.d/ (CRI-O re-reads it on SIGHUP only).
#               With UPSTREAMS set, also <config_path>/<host>/hosts.toml for each upstream registry
#               host: `server = "<url>"` and this registry as a [host] with capabilities pull and
#               resolve, so the node pulls through the registry's pull-through cache (containerd
#               adds ?ns=<host>) and falls back to the upstream itself when the registry is down.
#               An upstream dropped from UPSTREAMS loses its file at the next reconcile.
#   hosts       a marked block in /etc/hosts naming the registry, for runtimes that need the name.
#
# Readiness: with VERIFY=probe (the default) the node counts as ready only after the runtime pulled
# <name>/registry-node-setup/probe:1 through CRI PullImage (the kubelet's path), the probe image
# being pushed first by `registry node-setup probe`; then READY_FILE exists (the pod's
# readinessProbe) and the log says READY. Nothing else ever yields exit 0 from `once`.
#
# Every node path is read and written below $HOST_ROOT (the DaemonSet mounts the node's / there),
# so tests run it against a fake node root. A file it replaces is kept beside it as
# FILE.registry-node-setup.orig and put back by `remove`. Writes happen only when content differs,
# so a second run changes nothing. Everything it does is logged on stdout.
#
# Settings (environment):
#   HOST_ROOT          where the node's / is mounted                        [/host]
#   REGISTRY_NAME      the name pods push to and nodes pull             [builds.registry.svc.cluster.local]
#   REGISTRY_SCHEME    http or https                                        [http]
#   REGISTRY_PORT      the Service port                                     [80, 443 for https]
#   REGISTRY_ADDRESS   the address to use; when empty it is looked up, see ADDRESS_LOOKUP
#   ADDRESS_LOOKUP     lookup methods in order: dns (getent hosts REGISTRY_NAME, the pod's DNS),
#                      env (the variable named by SERVICE_HOST_ENV, set by the kubelet)  [dns env]
#   SERVICE_HOST_ENV   [BUILDS_SERVICE_HOST]
#   CA_FILE            CA certificate (PEM) for https                       [/tls/ca.crt]
#   UPSTREAMS          upstream registries the node pulls through the registry's cache, as
#                      host=url pairs (docker.io=https://registry-1.docker.io,ghcr.io=https://ghcr.io);
#                      checked by `registry node-setup upstreams`; containerd only   [empty: off]
#   TARGETS            [containerd]
#   CONTAINERD_CONFIG  node path of containerd's config.toml; default: the first that exists of the
#                      k3s, rke2 and /etc/containerd/config.toml ones
#   CONTAINERD_CONFIG_PATH  node path of the hosts directory, overriding what the config says
#   HOSTS_FILE         node path of the hosts file                         [/etc/hosts]
#   INTERVAL           seconds between reconciles in run mode              [60]
#   VERIFY             probe: prove the pull through CRI (needs NODE_SETUP_BIN and CRI_SOCKET);
#                      none: write files only and say they are unverified (file-layout tests)  [probe]
#   NODE_SETUP_BIN     the registry binary (its `node-setup` subcommand)    [/node-setup/registry]
#   CRI_SOCKET         the runtime's CRI socket as mounted here; default: the first that exists of
#                      $NODE_RUN/containerd/containerd.sock, $NODE_RUN/k3s/containerd/containerd.sock,
#                      microk8s's, $NODE_RUN/crio/crio.sock
#   NODE_RUN           where the node's /run is mounted (read-only)         [/node-run]
#   READY_FILE         created when the probe pull works, removed when not  [/run/node-setup/ready]
# shellcheck shell=dash
# (POSIX sh plus `local`, which dash, busybox sh and bash all have)
set -u

HOST_ROOT=${HOST_ROOT-/host}
HOST_ROOT=${HOST_ROOT%/}
REGISTRY_NAME=${REGISTRY_NAME:-builds.registry.svc.cluster.local}
REGISTRY_SCHEME=${REGISTRY_SCHEME:-http}
case $REGISTRY_SCHEME in
  https) REGISTRY_PORT=${REGISTRY_PORT:-443} ;;
  *) REGISTRY_PORT=${REGISTRY_PORT:-80} ;;
esac
REGISTRY_ADDRESS=${REGISTRY_ADDRESS:-}
ADDRESS_LOOKUP=${ADDRESS_LOOKUP:-dns env}
SERVICE_HOST_ENV=${SERVICE_HOST_ENV:-BUILDS_SERVICE_HOST}
CA_FILE=${CA_FILE:-/tls/ca.crt}
UPSTREAMS=${UPSTREAMS:-}
TARGETS=${TARGETS:-containerd}
CONTAINERD_CONFIG=${CONTAINERD_CONFIG:-}
CONTAINERD_CONFIG_PATH=${CONTAINERD_CONFIG_PATH:-}
HOSTS_FILE=${HOSTS_FILE:-/etc/hosts}
INTERVAL=${INTERVAL:-60}
VERIFY=${VERIFY:-probe}
NODE_SETUP_BIN=${NODE_SETUP_BIN:-/node-setup/registry}
NODE_RUN=${NODE_RUN:-/node-run}
CRI_SOCKET=${CRI_SOCKET:-}
READY_FILE=${READY_FILE:-/run/node-setup/ready}
MICROK8S_CONFIG=/var/snap/microk8s/current/args/containerd.toml
MICROK8S_SOCKET=/var/snap/microk8s/common/run/containerd.sock
CRIO_DROPIN=/etc/containers/registries.conf.d/50-registry-node-setup.conf

MARK="Managed by registry node-setup"
UPSTREAM_MARK="An upstream mirrored by the registry (UPSTREAMS)"
BACKUP_SUFFIX=".registry-node-setup.orig"
CREATED_MARK=".registry-node-setup-created"
K3S_CONFIGS="/var/lib/rancher/k3s/agent/etc/containerd/config.toml /var/lib/rancher/rke2/agent/etc/containerd/config.toml"
DEFAULT_CONFIG=/etc/containerd/config.toml

# Quiet: after the first pass of `run`, lines about things already in sync are not repeated.
QUIET=0
NEEDS_HUMAN=0
FAILED=0

log() { printf '%s setup-node: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*"; }
info() { [ "$QUIET" = 1 ] || log "$@"; }
human() {
  NEEDS_HUMAN=1
  [ "$QUIET" = 1 ] && [ "${LAST_HUMAN:-}" = "$*" ] && return 0
  LAST_HUMAN=$*
  log "ACTION NEEDED: $*"
}
err() {
  FAILED=1
  log "ERROR: $*"
}

# host PATH: the node path PATH as seen from here
host() { printf '%s%s' "$HOST_ROOT" "$1"; }

# ------------------------------------------------------------------ address
# Sets ADDR to the address to reach the registry at (bracketed when IPv6) and ADDRESS_FROM.
lookup_address() {
  local a="" m
  ADDR=""
  if [ -n "$REGISTRY_ADDRESS" ]; then
    a=$REGISTRY_ADDRESS
    ADDRESS_FROM="REGISTRY_ADDRESS"
  else
    for m in $ADDRESS_LOOKUP; do
      case $m in
        dns)
          if command -v getent >/dev/null 2>&1; then
            a=$(getent hosts "$REGISTRY_NAME" 2>/dev/null | awk 'NR == 1 { print $1 }')
          elif command -v nslookup >/dev/null 2>&1; then
            a=$(nslookup "$REGISTRY_NAME" 2>/dev/null |
              awk '/^Name:/ { n = 1; next } n && /^Address/ { sub(/^Address[ 0-9]*:[ \t]*/, ""); print $1; exit }')
          fi
          ADDRESS_FROM="dns ($REGISTRY_NAME)"
          ;;
        env)
          eval "a=\${$SERVICE_HOST_ENV:-}"
          ADDRESS_FROM="env $SERVICE_HOST_ENV"
          ;;
        *) err "unknown ADDRESS_LOOKUP method '$m'" ;;
      esac
      [ -n "$a" ] && break
    done
  fi
  [ -n "$a" ] || return 1
  case $a in
    \[*) ;;
    *:*) a="[$a]" ;;
  esac
  ADDR=$a
}

# ------------------------------------------------------------------ files
# is_ours FILE: FILE carries our marker in its first lines
is_ours() { [ -f "$1" ] && head -n 3 "$1" | grep -q "$MARK"; }

# ensure_dir DIR: creates DIR (host path) if missing, leaving a marker so `remove` deletes it again
ensure_dir() {
  local parent
  [ -d "$1" ] && return 0
  # create the missing parents one by one, marking each one created
  parent=$(dirname "$1")
  ensure_dir "$parent" || return 1
  mkdir "$1" || { err "cannot create $1"; return 1; }
  : >"$1/$CREATED_MARK"
  info "created directory ${1#"$HOST_ROOT"}"
}

# put FILE CONTENT: makes FILE (host path) hold CONTENT plus a newline, through a temporary file
# and a rename, and only when it differs (so an unchanged node sees no write at all, not even a
# temporary file). Keeps a foreign FILE as a backup.
put() {
  local file="$1" content="$2" shown="${1#"$HOST_ROOT"}" keep tmp
  if [ -f "$file" ] && printf '%s\n' "$content" | cmp -s - "$file"; then
    info "in sync: $shown"
    return 0
  fi
  if [ -e "$file" ] && ! is_ours "$file"; then
    if [ -e "$file$BACKUP_SUFFIX" ]; then
      keep="$file.registry-node-setup.$(date -u +%Y%m%dT%H%M%SZ)"
      log "$shown was replaced by someone else since it was backed up; keeping that copy as ${keep#"$HOST_ROOT"}"
      cp -p "$file" "$keep" || { err "cannot back up $shown"; return 1; }
    else
      cp -p "$file" "$file$BACKUP_SUFFIX" || { err "cannot back up $shown"; return 1; }
      log "backed up $shown to $shown$BACKUP_SUFFIX"
    fi
  fi
  tmp=$(mktemp "$(dirname "$file")/.registry-node-setup.XXXXXX") || { err "cannot write next to $shown"; return 1; }
  if printf '%s\n' "$content" >"$tmp" && chmod 0644 "$tmp" && mv -f "$tmp" "$file"; then
    log "wrote $shown"
  else
    rm -f "$tmp"
    err "cannot write $shown"
    return 1
  fi
}

# unput FILE: removes FILE (host path) if it is ours, and restores its backup
unput() {
  local file="$1" shown="${1#"$HOST_ROOT"}"
  if [ -e "$file" ]; then
    if is_ours "$file"; then
      rm -f "$file" && log "removed $shown"
    else
      log "left $shown alone: not written by this script"
      return 0
    fi
  fi
  if [ -e "$file$BACKUP_SUFFIX" ]; then
    mv -f "$file$BACKUP_SUFFIX" "$file" && log "restored $shown from $shown$BACKUP_SUFFIX"
  fi
}

# undir DIR: removes DIR (host path) and the parents this script created, when empty
undir() {
  local d="$1"
  while [ -f "$d/$CREATED_MARK" ]; do
    rm -f "$d/$CREATED_MARK"
    if rmdir "$d" 2>/dev/null; then
      log "removed directory ${d#"$HOST_ROOT"}"
    else
      log "kept directory ${d#"$HOST_ROOT"}: it holds other files"
      return 0
    fi
    d=$(dirname "$d")
  done
}

# ------------------------------------------------------------------ containerd config
# toml_keys FILE: prints "key=value" for every string or integer assignment in a TOML file, with
# the full dotted key (table + key), quotes and spaces removed. Enough for containerd's configs.
toml_keys() {
  awk '
    function strip(s) { gsub(/[ \t"'"'"']/, "", s); return s }
    /^[ \t]*#/ { next }
    /^[ \t]*\[/ {
      t = $0
      sub(/#.*/, "", t); gsub(/[\[\]]/, "", t)
      table = strip(t)
      next
    }
    /=/ {
      k = $0; sub(/=.*/, "", k); k = strip(k)
      v = $0; sub(/^[^=]*=[ \t]*/, "", v)
      if (v ~ /^"/) { sub(/^"/, "", v); sub(/".*$/, "", v) }
      else if (v ~ /^'"'"'/) { sub(/^'"'"'/, "", v); sub(/'"'"'.*$/, "", v) }
      else if (v ~ /^\[/) { sub(/#.*/, "", v) }
      else { sub(/[ \t]*#.*/, "", v); sub(/[ \t]+$/, "", v) }
      if (table != "") k = table "." k
      printf "%s=%s\n", k, v
    }
  ' "$1"
}

# config_files CONFIG: CONFIG (host path) and the files it imports, in merge order
config_files() {
  local imports pattern f
  printf '%s\n' "$1"
  imports=$(toml_keys "$1" | awk '/^imports=/ { sub(/^imports=/, ""); print }' | tr -d '[]"'"'"',')
  [ -n "$imports" ] || return 0
  for pattern in $imports; do
    case $pattern in
      /*) ;;
      *) pattern="$(dirname "${1#"$HOST_ROOT"}")/$pattern" ;;
    esac
    for f in $HOST_ROOT$pattern; do
      [ -f "$f" ] && printf '%s\n' "$f"
    done
  done
}

# find_config: sets CONFIG (node path) and FLAVOUR, or returns 1
find_config() {
  CONFIG="" FLAVOUR=""
  if [ -n "$CONTAINERD_CONFIG" ]; then
    CONFIG=$CONTAINERD_CONFIG
  else
    for c in $K3S_CONFIGS $MICROK8S_CONFIG $DEFAULT_CONFIG; do
      if [ -f "$(host "$c")" ]; then CONFIG=$c; break; fi
    done
  fi
  case $CONFIG in
    /var/lib/rancher/k3s/*) FLAVOUR=k3s ;;
    /var/lib/rancher/rke2/*) FLAVOUR=rke2 ;;
    /var/snap/microk8s/*) FLAVOUR=microk8s ;;
    *) FLAVOUR=containerd ;;
  esac
  [ -n "$CONFIG" ] && [ -f "$(host "$CONFIG")" ]
}

# read_config_path: sets HOSTS_DIR (node path) from the config, CONFIG_VERSION; returns 1 if unset
read_config_path() {
  local f keys v line
  HOSTS_DIR="" CONFIG_VERSION=1 KEY_FOUND=""
  for f in $(config_files "$(host "$CONFIG")"); do
    keys=$(toml_keys "$f")
    v=$(printf '%s\n' "$keys" | awk '/^version=/ { sub(/^version=/, ""); print }')
    [ -n "$v" ] && CONFIG_VERSION=$v
    # last assignment wins, as imports are merged over the main file
    line=$(printf '%s\n' "$keys" | awk -F '=' '
      $1 == "plugins.io.containerd.grpc.v1.cri.registry.config_path" ||
      $1 == "plugins.io.containerd.cri.v1.images.registry.config_path" ||
      $1 == "plugins.cri.registry.config_path" { found = $0 }
      END { if (found != "") print found }')
    if [ -n "$line" ]; then
      KEY_FOUND=${line%%=*}
      HOSTS_DIR=${line#*=}
      KEY_FILE=${f#"$HOST_ROOT"}
    fi
  done
  # containerd 2.x has no default config_path (2.1: '' for CRI and the transfer service).
  # A list: CRI's own resolver searches its folders in order (the first one wins), while 2.x's
  # transfer service takes the whole string as one folder: both are written.
  CONFIG_PATH_RAW=$HOSTS_DIR
  HOSTS_DIRS=$HOSTS_DIR
  case $HOSTS_DIR in
    *:*) HOSTS_DIRS="${HOSTS_DIR%%:*}"; [ "$CONFIG_VERSION" = 3 ] && HOSTS_DIRS="$HOSTS_DIR $HOSTS_DIRS" ;;
  esac
  HOSTS_DIR=${HOSTS_DIR%%:*}
  [ -n "$HOSTS_DIR" ]
}

one_time_change() {
  if [ "$CONFIG_VERSION" = 3 ]; then
    printf '%s' "[plugins.'io.containerd.cri.v1.images'.registry] config_path = '/etc/containerd/certs.d'"
  elif [ "$CONFIG_VERSION" = 2 ]; then
    printf '%s' "[plugins.\"io.containerd.grpc.v1.cri\".registry] config_path = \"/etc/containerd/certs.d\""
  else
    printf '%s' "[plugins.cri.registry] config_path = \"/etc/containerd/certs.d\""
  fi
}

# ------------------------------------------------------------------ containerd target
hosts_toml() { # ADDRESS
  printf '# %s (deploy/node-containerd/setup-node.sh); rewritten on every reconcile.\n' "$MARK"
  printf '# A file it replaced is kept as hosts.toml%s and restored when it is removed.\n' "$BACKUP_SUFFIX"
  printf 'server = "%s://%s"\n\n' "$REGISTRY_SCHEME" "$REGISTRY_NAME"
  printf '[host."%s://%s:%s"]\n' "$REGISTRY_SCHEME" "$1" "$REGISTRY_PORT"
  printf '  capabilities = ["pull", "resolve", "push"]\n'
  if [ "$REGISTRY_SCHEME" = https ]; then
    # relative to this file's directory
    printf '  ca = "ca.crt"\n'
  fi
}

# find_socket: sets SOCKET to the runtime's CRI socket (CRI_SOCKET or the first that exists)
find_socket() {
  local c
  SOCKET=$CRI_SOCKET
  [ -n "$SOCKET" ] && return 0
  for c in "$NODE_RUN/containerd/containerd.sock" "$NODE_RUN/k3s/containerd/containerd.sock" \
    "$(host "$MICROK8S_SOCKET")" "$NODE_RUN/crio/crio.sock"; do
    if [ -S "$c" ]; then SOCKET=$c; return 0; fi
  done
  return 1
}

# is_crio: the node runs CRI-O (its socket; or, with no socket found, its config and no
# containerd config)
is_crio() {
  case ${SOCKET:-} in *crio*) return 0 ;; esac
  [ -z "${SOCKET:-}" ] && [ -d "$(host /etc/crio)" ] && ! find_config
}

# node_setup ARGS...: runs `registry node-setup ARGS`; output in NS_OUT, exit code in NS_RC
node_setup() {
  NS_OUT=$("$NODE_SETUP_BIN" node-setup "$@" 2>&1)
  NS_RC=$?
}

not_ready() {
  rm -f "$READY_FILE" 2>/dev/null
  human "NOT READY: $*"
}

# verify ADDRESS [HINT]: the runtime pulls the probe image by the name (pushed to ADDRESS first),
# or the node is not ready (HINT added to the reason)
verify() {
  local ca=""
  if [ "$VERIFY" = none ]; then
    info "VERIFY=none: files written, pulls NOT verified (this run claims nothing about pulls)"
    return 0
  fi
  [ "$REGISTRY_SCHEME" = https ] && ca="--ca $CA_FILE"
  # shellcheck disable=SC2086
  node_setup probe --socket "$SOCKET" --name "$REGISTRY_NAME" --push-to "$1:$REGISTRY_PORT" $ca
  if [ "$NS_RC" = 0 ]; then
    if ! [ -e "$READY_FILE" ] || [ "$QUIET" = 0 ]; then
      log "READY: ${NS_OUT#probe-ok }"
    fi
    mkdir -p "$(dirname "$READY_FILE")" 2>/dev/null && : >"$READY_FILE" 2>/dev/null
  else
    not_ready "${NS_OUT#probe-failed }${2:+. $2}"
  fi
}

# plan: asks `registry node-setup plan`; sets HOSTS_DIRS (return 0), or reports why not (1), or
# sets PLAN_CHANGE to the one-time change (2)
plan() {
  local dirs=""
  if ! [ -x "$NODE_SETUP_BIN" ]; then
    not_ready "$NODE_SETUP_BIN is missing: cannot read the runtime's effective configuration, so nothing is claimed (VERIFY=none writes from the config file alone, unverified)"
    return 1
  fi
  if [ -z "${SOCKET:-}" ]; then
    not_ready "no CRI socket found (CRI_SOCKET; looked in $NODE_RUN and microk8s's): cannot read the runtime's effective configuration, so this node is not claimed ready"
    return 1
  fi
  node_setup plan --socket "$SOCKET" --host-root "${HOST_ROOT:-/}" --config "$CONFIG"
  case $NS_RC in
    0)
      info "$(printf '%s\n' "$NS_OUT" | sed -n 's/^why //p')"
      dirs=$(printf '%s\n' "$NS_OUT" | sed -n 's/^write //p' | tr '\n' ' ')
      HOSTS_DIRS=${dirs% }
      HOSTS_DIR=${HOSTS_DIRS%% *}
      return 0
      ;;
    2)
      PLAN_CHANGE="$(printf '%s\n' "$NS_OUT" | sed -n 's/^change //p') $(printf '%s\n' "$NS_OUT" | sed -n 's/^toml //p' | awk '{ printf "%s%s", (NR > 1 ? " | " : ""), $0 }')"
      return 2
      ;;
    *)
      not_ready "$(printf '%s' "$NS_OUT" | sed 's/^unknown //')"
      return 1
      ;;
  esac
}

sync_containerd() {
  local addr dir hd rc
  find_socket || SOCKET=""
  if is_crio; then
    sync_crio
    return 0
  fi
  find_config || CONFIG=${CONTAINERD_CONFIG:-$DEFAULT_CONFIG}
  [ -n "$FLAVOUR" ] || FLAVOUR=containerd
  if [ -n "$CONTAINERD_CONFIG_PATH" ]; then
    HOSTS_DIRS=$CONTAINERD_CONFIG_PATH
    info "hosts directory $HOSTS_DIRS (from CONTAINERD_CONFIG_PATH)"
  elif [ "$VERIFY" != none ]; then
    plan
    rc=$?
    if [ "$rc" = 2 ]; then
      if [ "$FLAVOUR" = k3s ] || [ "$FLAVOUR" = rke2 ]; then
        sync_registries_yaml
      else
        rm -f "$READY_FILE" 2>/dev/null
        human "nothing written: $PLAN_CHANGE (see deploy/README.md)"
      fi
      return 0
    fi
    [ "$rc" = 0 ] || return 0
  elif ! [ -f "$(host "$CONFIG")" ]; then
    human "no containerd config found (looked for ${CONTAINERD_CONFIG:-$K3S_CONFIGS $MICROK8S_CONFIG $DEFAULT_CONFIG} below the node's /): containerd then reads no hosts directory (1.x and 2.x alike). Give it one once: $(CONFIG_VERSION=2 one_time_change) (containerd 1.x) or version = 3 and $(CONFIG_VERSION=3 one_time_change) (2.x) in $DEFAULT_CONFIG and restart containerd (see deploy/README.md), or set CONTAINERD_CONFIG / CONTAINERD_CONFIG_PATH"
    return 0
  elif ! read_config_path; then
    if [ "$FLAVOUR" = k3s ] || [ "$FLAVOUR" = rke2 ]; then
      sync_registries_yaml
      return 0
    fi
    human "containerd config $CONFIG (version $CONFIG_VERSION) sets no registry config_path, so containerd reads no hosts.toml on this node and nothing was written. One-time change: add $(one_time_change) to $CONFIG and restart containerd once (see deploy/README.md)"
    return 0
  else
    info "containerd config $CONFIG ($FLAVOUR, version $CONFIG_VERSION): $KEY_FOUND = $CONFIG_PATH_RAW (in $KEY_FILE); writing into $HOSTS_DIRS"
  fi
  for hd in $HOSTS_DIRS; do
    case $hd in
      /*) ;;
      *) err "config_path '$hd' is not an absolute path"; return 0 ;;
    esac
  done

  if ! lookup_address; then
    err "cannot find the registry's address (tried: ${ADDRESS_LOOKUP}); will retry"
    rm -f "$READY_FILE" 2>/dev/null
    return 0
  fi
  addr=$ADDR
  info "registry address $addr (from $ADDRESS_FROM)"

  for hd in $HOSTS_DIRS; do
    dir=$(host "$hd/$REGISTRY_NAME")
    ensure_dir "$dir" || return 0
    if [ "$REGISTRY_SCHEME" = https ]; then
      if ! [ -s "$CA_FILE" ]; then
        err "REGISTRY_SCHEME=https but CA_FILE $CA_FILE is missing or empty; will retry"
        return 0
      fi
      put "$dir/ca.crt" "$(printf '# %s: the registry CA, from %s\n' "$MARK" "$CA_FILE"; cat "$CA_FILE")" || return 0
    elif is_ours "$dir/ca.crt"; then
      unput "$dir/ca.crt"
    fi
    put "$dir/hosts.toml" "$(hosts_toml "$addr")" || return 0
  done
  sync_upstreams "$addr" || { rm -f "$READY_FILE" 2>/dev/null; return 0; }
  verify "$addr" "hosts.toml is in $HOSTS_DIRS"
}

# ------------------------------------------------------------------ upstreams (pull-through cache)
# is_upstream FILE: an upstream hosts.toml this script wrote
is_upstream() { is_ours "$1" && head -n 3 "$1" | grep -q "$UPSTREAM_MARK"; }

upstream_hosts_toml() { # URL ADDRESS HOSTS_DIR
  printf '# %s (deploy/node-containerd/setup-node.sh); rewritten on every reconcile.\n' "$MARK"
  printf '# %s; removed when it leaves UPSTREAMS.\n' "$UPSTREAM_MARK"
  printf 'server = "%s"\n\n' "$1"
  printf '[host."%s://%s:%s"]\n' "$REGISTRY_SCHEME" "$2" "$REGISTRY_PORT"
  printf '  capabilities = ["pull", "resolve"]\n'
  if [ "$REGISTRY_SCHEME" = https ]; then
    printf '  ca = "%s"\n' "$3/$REGISTRY_NAME/ca.crt"
  fi
}

# remove_upstreams HOSTS_DIR [KEEP]: removes the upstream files in HOSTS_DIR (node path) whose
# host is not among the `HOST URL` lines of KEEP
remove_upstreams() {
  local f h
  for f in "$(host "$1")"/*/hosts.toml; do
    is_upstream "$f" || continue
    h=$(basename "$(dirname "$f")")
    printf '%s\n' "${2:-}" | awk -v h="$h" '$1 == h { found = 1 } END { exit !found }' && continue
    unput "$f"
    undir "$(dirname "$f")"
  done
}

# sync_upstreams ADDRESS: the upstream hosts.toml files in every folder of HOSTS_DIRS
sync_upstreams() {
  local list="" hd h url
  if [ -n "$UPSTREAMS" ]; then
    node_setup upstreams "$UPSTREAMS"
    [ "$NS_RC" = 0 ] || { err "$NS_OUT"; return 1; }
    list=$NS_OUT
  fi
  for hd in $HOSTS_DIRS; do
    while read -r h url; do
      [ -n "$h" ] || continue
      [ "$h" != "$REGISTRY_NAME" ] || { err "UPSTREAMS names the registry itself ($h)"; return 1; }
      ensure_dir "$(host "$hd/$h")" || return 1
      put "$(host "$hd/$h/hosts.toml")" "$(upstream_hosts_toml "$url" "$1" "$hd")" || return 1
    done <<EOF
$list
EOF
    remove_upstreams "$hd" "$list"
  done
  [ -z "$list" ] || info "upstreams through the registry, falling back to themselves: $(printf '%s\n' "$list" | awk '{ printf "%s%s", (NR > 1 ? ", " : ""), $1 }')"
}

# ------------------------------------------------------------------ CRI-O
crio_dropin() { # ADDRESS
  printf '# %s (deploy/node-containerd/setup-node.sh). CRI-O reads this at start and on SIGHUP.\n' "$MARK"
  printf '[[registry]]\nprefix = "%s"\nlocation = "%s:%s"\n' "$REGISTRY_NAME" "$1" "$REGISTRY_PORT"
  if [ "$REGISTRY_SCHEME" = http ]; then printf 'insecure = true\n'; fi
}

sync_crio() {
  local file before addr cadir
  info "CRI-O node (${SOCKET:-/etc/crio}): registries come from /etc/containers/registries.conf(.d), not hosts.toml"
  [ -z "$UPSTREAMS" ] || info "UPSTREAMS is for containerd's hosts.toml: nothing written for them on this CRI-O node"
  if ! lookup_address; then
    err "cannot find the registry's address (tried: ${ADDRESS_LOOKUP}); will retry"
    return 0
  fi
  addr=$ADDR
  file=$(host "$CRIO_DROPIN")
  ensure_dir "$(dirname "$file")" || return 0
  if [ "$REGISTRY_SCHEME" = https ]; then
    cadir=$(host "/etc/containers/certs.d/$addr:$REGISTRY_PORT")
    ensure_dir "$cadir" || return 0
    put "$cadir/ca.crt" "$(printf '# %s: the registry CA\n' "$MARK"; cat "$CA_FILE")" || return 0
  fi
  before=$(cat "$file" 2>/dev/null)
  put "$file" "$(crio_dropin "$addr")" || return 0
  if [ "$VERIFY" = none ] || [ -z "${SOCKET:-}" ]; then
    if [ "$before" != "$(cat "$file")" ]; then
      human "wrote $CRIO_DROPIN; CRI-O re-reads registries only at start and on SIGHUP: run 'systemctl reload crio' (or send SIGHUP to crio) once on this node"
    fi
    return 0
  fi
  verify "$addr" "CRI-O re-reads $CRIO_DROPIN only at start and on SIGHUP: run 'systemctl reload crio' once on this node"
}

remove_crio() {
  unput "$(host "$CRIO_DROPIN")"
  undir "$(dirname "$(host "$CRIO_DROPIN")")"
}

remove_containerd() {
  local dirs="" hd dir
  rm -f "$READY_FILE" 2>/dev/null
  [ -e "$(host "$CRIO_DROPIN")" ] && remove_crio
  [ -n "$CONTAINERD_CONFIG_PATH" ] && dirs=$CONTAINERD_CONFIG_PATH
  if find_config; then
    if read_config_path; then
      # a list: its first folder and the whole string as one folder (containerd 2.x's transfer
      # service), whatever the config version
      dirs="$dirs $HOSTS_DIR"
      [ "$CONFIG_PATH_RAW" != "$HOSTS_DIR" ] && dirs="$dirs $CONFIG_PATH_RAW"
    elif [ "$FLAVOUR" = k3s ] || [ "$FLAVOUR" = rke2 ]; then
      remove_registries_yaml
    fi
  fi
  [ -n "$dirs" ] || { log "no containerd hosts directory on this node: nothing to remove"; return 0; }
  for hd in $dirs; do
    remove_upstreams "$hd"
    dir=$(host "$hd/$REGISTRY_NAME")
    [ -d "$dir" ] || { log "nothing to remove in $hd"; continue; }
    unput "$dir/hosts.toml"
    unput "$dir/ca.crt"
    undir "$dir"
  done
}

# ------------------------------------------------------------------ k3s/rke2 registries.yaml
registries_yaml_path() { printf '/etc/rancher/%s/registries.yaml' "$FLAVOUR"; }

registries_yaml() { # ADDRESS
  printf '# %s (deploy/node-containerd/setup-node.sh). %s reads this file when it starts.\n' "$MARK" "$FLAVOUR"
  printf 'mirrors:\n  "%s":\n    endpoint:\n      - "%s://%s:%s"\n' "$REGISTRY_NAME" "$REGISTRY_SCHEME" "$1" "$REGISTRY_PORT"
  if [ "$REGISTRY_SCHEME" = https ]; then
    printf 'configs:\n  "%s:%s":\n    tls:\n      ca_file: "%s"\n' "$1" "$REGISTRY_PORT" "$(registries_yaml_path | sed 's/registries.yaml$/registry-ca.crt/')"
  fi
}

sync_registries_yaml() {
  local ry file addr cafile before
  ry=$(registries_yaml_path)
  file=$(host "$ry")
  if ! lookup_address; then
    err "cannot find the registry's address (tried: ${ADDRESS_LOOKUP}); will retry"
    return 0
  fi
  addr=$ADDR
  if [ -e "$file" ] && ! is_ours "$file"; then
    if grep -q "$REGISTRY_NAME" "$file"; then
      info "$ry (not ours) already names $REGISTRY_NAME; leaving it"
    else
      human "$FLAVOUR's containerd ($CONFIG) has no config_path, so it reads registries from $ry, which another tool owns. Add to it: mirrors: {\"$REGISTRY_NAME\": {endpoint: [\"$REGISTRY_SCHEME://$addr:$REGISTRY_PORT\"]}} and restart $FLAVOUR once; or upgrade $FLAVOUR to a release that sets config_path"
    fi
    return 0
  fi
  ensure_dir "$(dirname "$file")" || return 0
  if [ "$REGISTRY_SCHEME" = https ]; then
    cafile=$(host "$(registries_yaml_path | sed 's/registries.yaml$/registry-ca.crt/')")
    put "$cafile" "$(printf '# %s: the registry CA\n' "$MARK"; cat "$CA_FILE")" || return 0
  fi
  before=$(cat "$file" 2>/dev/null)
  put "$file" "$(registries_yaml "$addr")" || return 0
  if [ "$before" != "$(cat "$file")" ]; then
    human "$FLAVOUR's containerd has no config_path; wrote $ry, which $FLAVOUR reads only when it starts: restart $FLAVOUR once (systemctl restart $FLAVOUR-server or $FLAVOUR-agent; k3s servers: systemctl restart k3s) for it to take effect"
  fi
}

remove_registries_yaml() {
  local ry
  ry=$(registries_yaml_path)
  unput "$(host "$ry")"
  unput "$(host "$(registries_yaml_path | sed 's/registries.yaml$/registry-ca.crt/')")"
  undir "$(dirname "$(host "$ry")")"
}

# ------------------------------------------------------------------ hosts target
BEGIN_LINE() { printf '# BEGIN %s: %s' "$MARK" "$REGISTRY_NAME"; }
END_LINE() { printf '# END %s: %s' "$MARK" "$REGISTRY_NAME"; }

# hosts_edit FILE BLOCK: prints FILE with our block replaced by BLOCK (appended when absent;
# dropped when BLOCK is empty)
hosts_edit() {
  awk -v begin="$(BEGIN_LINE)" -v end="$(END_LINE)" -v block="$2" '
    function put_block() { if (block != "") print block; done = 1 }
    $0 == begin { skip = 1; put_block(); next }
    skip && $0 == end { skip = 0; next }
    skip { next }
    { print }
    END { if (!done) put_block() }
  ' "$1"
}

# hosts_write FILE CONTENT: writes CONTENT beside FILE, then renames it over FILE (never truncated
# in place: a reader sees the old file or the new one). Keeps FILE's mode.
hosts_write() {
  local tmp
  tmp=$(mktemp "$(dirname "$1")/.registry-node-setup-hosts.XXXXXX") || return 1
  if printf '%s\n' "$2" >"$tmp" && chmod "$(stat -c %a "$1" 2>/dev/null || echo 644)" "$tmp" && mv -f "$tmp" "$1"; then
    return 0
  fi
  rm -f "$tmp"
  return 1
}

sync_hosts() {
  local file addr new
  file=$(host "$HOSTS_FILE")
  [ -f "$file" ] || { err "$HOSTS_FILE does not exist on this node"; return 0; }
  if ! lookup_address; then
    err "cannot find the registry's address (tried: ${ADDRESS_LOOKUP}); will retry"
    return 0
  fi
  addr=$(printf '%s' "$ADDR" | tr -d '[]')
  new=$(hosts_edit "$file" "$(BEGIN_LINE)
$addr $REGISTRY_NAME
$(END_LINE)")
  if printf '%s\n' "$new" | cmp -s - "$file"; then
    info "in sync: $HOSTS_FILE ($addr $REGISTRY_NAME)"
    return 0
  fi
  if ! grep -qF "$(BEGIN_LINE)" "$file" && ! [ -e "$file$BACKUP_SUFFIX" ]; then
    cp -p "$file" "$file$BACKUP_SUFFIX" && log "backed up $HOSTS_FILE to $HOSTS_FILE$BACKUP_SUFFIX"
  fi
  if hosts_write "$file" "$new"; then
    log "wrote $HOSTS_FILE: $addr $REGISTRY_NAME"
  else
    err "cannot write $HOSTS_FILE"
  fi
}

remove_hosts() {
  local file
  file=$(host "$HOSTS_FILE")
  [ -f "$file" ] || return 0
  if grep -qF "$(BEGIN_LINE)" "$file"; then
    hosts_write "$file" "$(hosts_edit "$file" "")" && log "removed the $REGISTRY_NAME block from $HOSTS_FILE"
  else
    log "no $REGISTRY_NAME block in $HOSTS_FILE"
  fi
  # the block was the only change; the backup taken before it is no longer needed
  rm -f "$file$BACKUP_SUFFIX"
}

# ------------------------------------------------------------------ main
reconcile() {
  NEEDS_HUMAN=0 FAILED=0
  for t in $TARGETS; do
    case $t in
      containerd) sync_containerd ;;
      hosts) sync_hosts ;;
      *) err "unknown target '$t' (TARGETS: containerd, hosts)" ;;
    esac
  done
  # the hosts target alone has no pull to prove: ready when the block is in place
  case " $TARGETS " in
    *" containerd "*) ;;
    *) if [ "$FAILED" = 0 ]; then mkdir -p "$(dirname "$READY_FILE")" 2>/dev/null && : >"$READY_FILE" 2>/dev/null; fi ;;
  esac
}

remove_all() {
  for t in $TARGETS; do
    case $t in
      containerd) remove_containerd ;;
      hosts) remove_hosts ;;
      *) err "unknown target '$t'" ;;
    esac
  done
}

case ${1:-run} in
  once)
    log "reconciling once: targets '$TARGETS', $REGISTRY_SCHEME://$REGISTRY_NAME:$REGISTRY_PORT, node root '${HOST_ROOT:-/}'"
    reconcile
    [ "$FAILED" = 1 ] && exit 1
    [ "$NEEDS_HUMAN" = 1 ] && exit 2
    exit 0
    ;;
  run)
    log "reconciling every ${INTERVAL}s: targets '$TARGETS', $REGISTRY_SCHEME://$REGISTRY_NAME:$REGISTRY_PORT, node root '${HOST_ROOT:-/}'"
    trap 'log "stopping (files stay: a rolling update or an eviction must not break pulls; deploy/node-containerd-cleanup removes them)"; exit 0' TERM INT
    while :; do
      reconcile
      QUIET=1
      sleep "$INTERVAL" &
      wait $! 2>/dev/null
    done
    ;;
  remove)
    log "removing: targets '$TARGETS', node root '${HOST_ROOT:-/}'"
    remove_all
    [ "$FAILED" = 1 ] && exit 1
    exit 0
    ;;
  cleanup)
    # the uninstall (deploy/node-containerd-cleanup): remove, then stay up so the DaemonSet's
    # pods count as done; removing again on a restart is harmless
    log "cleanup: removing what the node setup wrote: targets '$TARGETS', node root '${HOST_ROOT:-/}'"
    remove_all
    [ "$FAILED" = 1 ] || { mkdir -p "$(dirname "$READY_FILE")" 2>/dev/null && : >"$READY_FILE" 2>/dev/null; }
    log "cleanup done; idling until the DaemonSet is deleted"
    trap 'kill "$SLEEPER" 2>/dev/null; exit 0' TERM INT
    while :; do
      sleep 3600 &
      SLEEPER=$!
      wait $SLEEPER 2>/dev/null
    done
    ;;
  *)
    echo "usage: $0 run|once|remove|cleanup" >&2
    exit 64
    ;;
esac
