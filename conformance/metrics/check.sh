#!/usr/bin/env bash
# /metrics: after real traffic (push, pull, a 404, a HEAD), the exposition passes
# `promtool check metrics` and the counters reflect the traffic.
#
#   conformance/metrics/check.sh REGISTRY_BINARY
#
# Prints PASS/FAIL lines and `N passed, N failed`; exits non-zero on failure.
set -uo pipefail
# shellcheck source=SCRIPTDIR/../testlib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../testlib.sh"
BIN=${1:?registry binary}
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY
WORK=$(mktemp -d /tmp/registry-metrics.XXXXXX)
PID=""
PASSED=0
FAILED=0
trap 'stop_pid "$PID"; rm -rf "$WORK"' EXIT

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$BIN" serve --listen "127.0.0.1:$PORT" --storage "$WORK/data" --gc-interval 0 >"$WORK/log" 2>&1 &
PID=$!
B="http://127.0.0.1:$PORT"
for _ in $(seq 100); do curl -sf "$B/readyz" >/dev/null && break; sleep 0.05; done

head -c 100000 /dev/urandom >"$WORK/blob"
D="sha256:$(sha256sum "$WORK/blob" | cut -d' ' -f1)"
curl -sf -X POST --data-binary @"$WORK/blob" "$B/v2/m/blobs/uploads/?digest=$D" -o /dev/null
curl -sf "$B/v2/m/blobs/$D" -o /dev/null
curl -sf -I "$B/v2/m/blobs/$D" -o /dev/null
curl -s "$B/v2/m/manifests/nope" -o /dev/null

curl -sf "$B/metrics" >"$WORK/metrics" || record fetch "GET /metrics failed"
if command -v promtool >/dev/null; then
  if out=$(promtool check metrics <"$WORK/metrics" 2>&1); then
    record promtool-check-metrics
  else
    record promtool-check-metrics "$out"
  fi
else
  record promtool-check-metrics "promtool is not installed (scripts/install-test-deps.sh installs it)"
fi
expect() {
  local name=$1 pattern=$2
  if grep -Eq "$pattern" "$WORK/metrics"; then record "$name"; else record "$name" "no line matches /$pattern/"; fi
}
expect push-counted '^registry_http_requests_total\{endpoint="start_upload",status="201"\} 1$'
expect pull-counted '^registry_http_requests_total\{endpoint="get_blob",status="200"\} 1$'
expect head-counted '^registry_http_requests_total\{endpoint="head_blob",status="200"\} 1$'
expect miss-counted '^registry_http_requests_total\{endpoint="get_manifest",status="404"\} 1$'
expect bytes-received '^registry_received_bytes_total 100000$'
expect bytes-sent '^registry_sent_bytes_total 100000$'
expect latency-histogram '^registry_http_request_duration_seconds_count\{endpoint="get_blob"\} 1$'
finish
