#!/usr/bin/env bash
# The managed identity endpoint's latency and throughput from its token cache, with release builds:
# `make bench-msi`. Runs the demo (which turns the endpoint on for cpu-cluster) with the endpoint's
# per-ComputeIdentity rate limit lifted, then measures against the running operator.
set -euo pipefail
cd "$(dirname "$0")/.."
export AMLID_RELEASE=1 DEMO_KEEP=1
export DEMO_OPERATOR_ARGS="--msi-rate 1000000 --msi-burst 1000000"
STATE_DIR=${AMLID_CLUSTER_DIR:-${TMPDIR:-/tmp}/aml-identity-operator-cluster}
hack/demo.sh >/dev/null
trap 'hack/demo.sh down >/dev/null' EXIT
eval "$(hack/local-cluster.sh env)"
secret() { kubectl -n team-a get secret cpu-cluster-identity -o jsonpath="{.data.$1}" | base64 -d; }
EMULATOR="https://$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["https"].split("//")[1])' "$STATE_DIR/emulator/addresses.json")"
PID=$(cat "$STATE_DIR/operator.pid")
cpu() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
CPU_BEFORE=$(cpu)
python3 hack/bench_msi.py "$(secret MSI_ENDPOINT)" "$(secret MSI_SECRET)" "$(secret DEFAULT_IDENTITY_CLIENT_ID)" \
  "$EMULATOR" "$STATE_DIR/emulator/ca.pem" "${SEQUENTIAL:-2000}" "${TOTAL:-20000}" "${THREADS:-32}"
echo "operator CPU during the run: $(( ($(cpu) - CPU_BEFORE) * 10 )) ms; RSS after: $(awk '/VmRSS/ {print $2, $3}' "/proc/$PID/status")"
