#!/usr/bin/env bash
# A long, bounded run of the property tests (the project's fuzzing on stable Rust), one target at
# a time (the machine is small), each for about SECONDS_PER_TARGET seconds (default 600):
#
#   conformance/reliability/fuzz-long.sh [SECONDS_PER_TARGET]
#
# Targets: types (Digest, RepoName, Tag, Reference parsers), manifest (manifest::parse),
# endpoint (Endpoint::parse), content-range (parse_content_range), range (parse_range).
# Each target's time is split over its properties (PROPTEST_SECONDS each); every property prints
# `property NAME: N cases in S s`. Prints PASS/FAIL per target and `N passed, N failed`.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
per_target=${1:-600}

passed=0
failed=0
# name | package | number of properties | test functions (each runs one or two properties)
targets=(
  "types|storage|9|digest_arbitrary_input digest_valid_by_construction name_arbitrary_input name_valid_by_construction name_length_limit tag_arbitrary_and_valid reference_arbitrary_and_valid"
  "manifest|storage|4|manifest_arbitrary_input manifest_valid_by_construction"
  "endpoint|registry|2|endpoint_arbitrary_input endpoint_valid_by_construction"
  "content-range|registry|2|content_range_arbitrary_input content_range_valid_by_construction"
  "range|registry|2|range_arbitrary_input range_valid_by_construction"
)

# Build once, then run the test executables directly (no rebuilds while the clock runs).
declare -A exe
while IFS='|' read -r pkg path; do
  exe[$pkg]=$path
done < <(cargo test --release -p storage -p registry --test properties --no-run --message-format=json \
  | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "properties":
        print(m["package_id"].split("#")[0].rstrip("/").split("/")[-1].split("@")[0] + "|" + m["executable"])
')
for pkg in storage registry; do
  [ -x "${exe[$pkg]:-}" ] || { echo "FAIL build: no property test executable for $pkg"; exit 1; }
done

for t in "${targets[@]}"; do
  IFS='|' read -r name pkg props filters <<<"$t"
  each=$(((per_target + props - 1) / props))
  t0=$SECONDS
  # shellcheck disable=SC2086
  PROPTEST_SECONDS=$each timeout $((per_target * 2 + 120)) \
    "${exe[$pkg]}" --test-threads=1 --nocapture --exact $filters 2>&1 \
    | grep -oE 'property [a-z_]+: [0-9]+ cases in [0-9.]+ s|test result.*|panicked.*|.*property failed.*'
  if [ "${PIPESTATUS[0]}" -eq 0 ]; then
    echo "PASS $name ($((SECONDS - t0)) s)"
    passed=$((passed + 1))
  else
    echo "FAIL $name ($((SECONDS - t0)) s)"
    failed=$((failed + 1))
  fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
