#!/usr/bin/env bash
# Datastore throughput and CPU per object against the raw write rate of the same API server, with
# release builds: `make bench-datastores` (N=500 by default; `make test` runs a small N).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-500}
export AMLID_RELEASE=1 DEMO_KEEP=1
STATE_DIR=${AMLID_CLUSTER_DIR:-${TMPDIR:-/tmp}/aml-identity-operator-cluster}
hack/demo.sh >/dev/null
trap 'hack/demo.sh down >/dev/null' EXIT
eval "$(hack/local-cluster.sh env)"
RESULT=$(mktemp)
export BENCH_RESULT=$RESULT
python3 hack/bench_datastores.py operator "$N" "$(cat "$STATE_DIR/operator.pid")"
echo "operator RSS after: $(awk '/VmRSS/ {print $2, $3}' "/proc/$(cat "$STATE_DIR/operator.pid")/status")"
# The raw client runs with the operator stopped, so nothing else writes meanwhile.
kill -TERM "$(cat "$STATE_DIR/operator.pid")"
for _ in $(seq 1 50); do kill -0 "$(cat "$STATE_DIR/operator.pid")" 2>/dev/null || break; sleep 0.2; done
python3 hack/bench_datastores.py raw "$N"
python3 - "$RESULT" <<'PY'
import sys
rates = dict(line.split() for line in open(sys.argv[1]))
print(f"ratio: the operator converges at {float(rates['operator']) / float(rates['raw']):.2f}x the raw write rate")
PY
rm -f "$RESULT"
