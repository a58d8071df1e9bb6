#!/usr/bin/env bash
# The demo command (`make demo`): local control plane, CRDs, the operator, deploy/samples applied in
# namespace team-a, and every object's conditions printed. Everything is stopped at the end unless
# DEMO_KEEP=1; then `hack/demo.sh down` stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
STATE_DIR=${AMLID_CLUSTER_DIR:-${TMPDIR:-/tmp}/aml-identity-operator-cluster}
NS=team-a

down() {
  if [ -f "$STATE_DIR/operator.pid" ]; then
    pid=$(cat "$STATE_DIR/operator.pid")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$STATE_DIR/operator.pid"
  fi
  hack/local-cluster.sh down
}
if [ "${1:-}" = down ]; then down; exit 0; fi

if ! command -v kubectl >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends kubernetes-client >/dev/null
fi
cargo build --locked -q
hack/local-cluster.sh up
[ "${DEMO_KEEP:-0}" = 1 ] || trap down EXIT
eval "$(hack/local-cluster.sh env)"
BIN=target/debug/aml-identity-operator

echo "== installing the CRDs (CEL rules stripped: this local API server is Kubernetes 1.20)"
$BIN crdgen --strip-cel | kubectl apply -f - >/dev/null
# shellcheck disable=SC2046
kubectl wait --for condition=established --timeout=30s $(kubectl get crd -o name | grep amlidentity.io) >/dev/null

kubectl get namespace "$NS" >/dev/null 2>&1 || kubectl create namespace "$NS" >/dev/null
echo "== starting the operator (logs: $STATE_DIR/operator.log)"
$BIN run --lease-namespace "$NS" --health-addr 127.0.0.1:0 >"$STATE_DIR/operator.log" 2>&1 &
echo $! > "$STATE_DIR/operator.pid"

echo "== applying deploy/samples to namespace $NS"
kubectl apply -n "$NS" -f deploy/samples/
echo "== and one invalid object, to show how a bad spec is reported"
kubectl apply -n "$NS" -f deploy/samples/invalid/workspace-primary-not-listed.yaml

# Wait (bounded) until every object reports on its current generation.
for _ in $(seq 1 60); do
  [ "$(kubectl get aml -A -o json | python3 hack/conditions.py --pending)" = 0 ] && break
  sleep 0.5
done

echo
kubectl get aml -A
echo
echo "== conditions"
kubectl get aml -A -o json | python3 hack/conditions.py
if [ "${DEMO_KEEP:-0}" = 1 ]; then
  echo; echo "Still running. $(hack/local-cluster.sh env); stop with: hack/demo.sh down"
fi
