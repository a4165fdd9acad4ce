#!/bin/sh
# Creates Secret $SECRET_NAME (type kubernetes.io/tls: tls.crt, tls.key, ca.crt from $CERT_DIR) in
# this pod's namespace through the Kubernetes API, unless it exists. Exits 0 when the Secret
# exists afterwards, whoever created it.
set -eu
SA=/var/run/secrets/kubernetes.io/serviceaccount
NS=$(cat "$SA/namespace")
API="https://${KUBERNETES_SERVICE_HOST}:${KUBERNETES_SERVICE_PORT}"
URL="$API/api/v1/namespaces/$NS/secrets"

status=$(curl --silent --show-error --max-time 30 --cacert "$SA/ca.crt" \
  -H "Authorization: Bearer $(cat "$SA/token")" -o /dev/null -w '%{http_code}' "$URL/$SECRET_NAME")
case $status in
  200) echo "secret $NS/$SECRET_NAME exists; leaving it as it is"; exit 0 ;;
  404) ;;
  *) echo "GET secret $NS/$SECRET_NAME answered $status" >&2; exit 1 ;;
esac

b64() { base64 <"$CERT_DIR/$1" | tr -d '\n'; }
for f in tls.crt tls.key ca.crt; do
  [ -s "$CERT_DIR/$f" ] || { echo "$CERT_DIR/$f is missing" >&2; exit 1; }
done
body=$(printf '{"apiVersion":"v1","kind":"Secret","metadata":{"name":"%s","namespace":"%s","labels":{"app.kubernetes.io/part-of":"registry","app.kubernetes.io/managed-by":"builds-tls-job"}},"type":"kubernetes.io/tls","data":{"tls.crt":"%s","tls.key":"%s","ca.crt":"%s"}}' \
  "$SECRET_NAME" "$NS" "$(b64 tls.crt)" "$(b64 tls.key)" "$(b64 ca.crt)")
status=$(printf '%s' "$body" | curl --silent --show-error --max-time 30 --cacert "$SA/ca.crt" \
  -H "Authorization: Bearer $(cat "$SA/token")" -H "Content-Type: application/json" \
  -X POST --data-binary @- -o /dev/null -w '%{http_code}' "$URL")
case $status in
  201) echo "created secret $NS/$SECRET_NAME with a new private CA" ;;
  409) echo "secret $NS/$SECRET_NAME was created meanwhile; leaving it as it is" ;;
  *) echo "POST secret $NS/$SECRET_NAME answered $status" >&2; exit 1 ;;
esac
