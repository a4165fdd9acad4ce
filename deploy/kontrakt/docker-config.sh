#!/bin/sh
# docker-config.sh: writes $DOCKER_CONFIG/config.json so that the build that follows pushes to
# $REGISTRY_NAME as this pod's ServiceAccount. The password is the projected ServiceAccount token
# (requested with the audience of the registry's [auth.serviceaccount]), read fresh from
# $TOKEN_FILE right before the build; the user name is `sa` (the registry takes any user name that
# is not an htpasswd user and checks the token). BuildKit (buildctl), kaniko and docker read the
# file. Run by the kontrakt Jobs' init container `docker-config` (deploy/kontrakt), and by
# deploy/tests/buildkit.sh from the rendered ConfigMap: the same bytes.
#
# Environment: REGISTRY_NAME [builds.registry.svc.cluster.local], TOKEN_FILE
# [/var/run/secrets/registry/token], DOCKER_CONFIG (the folder to write config.json into),
# REGISTRY_USER [sa].
# shellcheck shell=dash
set -eu
REGISTRY_NAME=${REGISTRY_NAME:-builds.registry.svc.cluster.local}
TOKEN_FILE=${TOKEN_FILE:-/var/run/secrets/registry/token}
REGISTRY_USER=${REGISTRY_USER:-sa}
: "${DOCKER_CONFIG:?DOCKER_CONFIG must name the folder for config.json}"

token=$(cat "$TOKEN_FILE") || { echo "docker-config: cannot read $TOKEN_FILE" >&2; exit 1; }
[ -n "$token" ] || { echo "docker-config: $TOKEN_FILE is empty" >&2; exit 1; }
auth=$(printf '%s:%s' "$REGISTRY_USER" "$token" | base64 | tr -d '\n')
mkdir -p "$DOCKER_CONFIG"
umask 077
printf '{"auths":{"%s":{"auth":"%s"}}}\n' "$REGISTRY_NAME" "$auth" >"$DOCKER_CONFIG/config.json.tmp"
mv -f "$DOCKER_CONFIG/config.json.tmp" "$DOCKER_CONFIG/config.json"
echo "docker-config: wrote $DOCKER_CONFIG/config.json: $REGISTRY_NAME as user $REGISTRY_USER with the token from $TOKEN_FILE"
