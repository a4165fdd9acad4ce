#!/bin/sh
# Publishes the registry's CA certificate ($CA_FILE, ca.crt of Secret registry/builds-tls) as
# ConfigMap $CONFIGMAP_NAME in namespace $TARGET_NAMESPACE (the node DaemonSets' namespace, which
# cannot mount a Secret of another namespace), through the Kubernetes API: created when absent,
# replaced when the CA differs (an unchanged replace is a no-op for the API server). Run by the
# CronJob builds-ca-publish (deploy/node-containerd-tls) every few minutes, so a rotated CA
# reaches the nodes. Only the certificate is published, never a key.
set -eu
SA=/var/run/secrets/kubernetes.io/serviceaccount
API="https://${KUBERNETES_SERVICE_HOST}:${KUBERNETES_SERVICE_PORT}"
URL="$API/api/v1/namespaces/$TARGET_NAMESPACE/configmaps"
[ -s "$CA_FILE" ] || { echo "$CA_FILE is missing (Secret builds-tls not created yet?)" >&2; exit 1; }
grep -q -- '-----BEGIN CERTIFICATE-----' "$CA_FILE" || { echo "$CA_FILE holds no certificate" >&2; exit 1; }
if grep -q -- 'PRIVATE KEY' "$CA_FILE"; then echo "$CA_FILE holds a private key: not published" >&2; exit 1; fi

api() { # METHOD URL [BODY]: prints the HTTP status
  if [ -n "${3:-}" ]; then
    printf '%s' "$3" | curl --silent --show-error --max-time 30 --cacert "$SA/ca.crt" \
      -H "Authorization: Bearer $(cat "$SA/token")" -H "Content-Type: application/json" \
      -X "$1" --data-binary @- -o /dev/null -w '%{http_code}' "$2"
  else
    curl --silent --show-error --max-time 30 --cacert "$SA/ca.crt" \
      -H "Authorization: Bearer $(cat "$SA/token")" -X "$1" -o /dev/null -w '%{http_code}' "$2"
  fi
}

# the PEM as a JSON string (PEM holds no quotes or backslashes)
pem=$(awk '{ printf "%s\\n", $0 }' "$CA_FILE")
body=$(printf '{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"%s","namespace":"%s","labels":{"app.kubernetes.io/part-of":"registry","app.kubernetes.io/managed-by":"builds-ca-publish"}},"data":{"ca.crt":"%s"}}' \
  "$CONFIGMAP_NAME" "$TARGET_NAMESPACE" "$pem")
status=$(api GET "$URL/$CONFIGMAP_NAME")
case $status in
  200) status=$(api PUT "$URL/$CONFIGMAP_NAME" "$body"); want=200 ;;
  404) status=$(api POST "$URL" "$body"); want=201 ;;
  *) echo "GET configmap $TARGET_NAMESPACE/$CONFIGMAP_NAME answered $status" >&2; exit 1 ;;
esac
[ "$status" = "$want" ] || { echo "writing configmap $TARGET_NAMESPACE/$CONFIGMAP_NAME answered $status" >&2; exit 1; }
echo "published the registry CA as configmap $TARGET_NAMESPACE/$CONFIGMAP_NAME"
