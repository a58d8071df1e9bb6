#!/usr/bin/env bash
# The demo command (`make demo`): local control plane, CRDs, the operator, deploy/samples applied in
# namespace team-a, deploy/samples/team-b in a second admitted namespace (whose object that names
# team-a's identity is refused), and every object's conditions printed. Everything is stopped at
# the end unless DEMO_KEEP=1; then `hack/demo.sh down` stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
STATE_DIR=${AMLID_CLUSTER_DIR:-${TMPDIR:-/tmp}/aml-identity-operator-cluster}
NS=team-a

stop() {
  [ -f "$STATE_DIR/$1.pid" ] || return 0
  local pid
  pid=$(cat "$STATE_DIR/$1.pid")
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$STATE_DIR/$1.pid"
}

down() {
  stop operator
  stop emulator
  hack/local-cluster.sh down
}
if [ "${1:-}" = down ]; then down; exit 0; fi

if ! command -v kubectl >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends kubernetes-client >/dev/null
fi
# AMLID_RELEASE=1 runs release builds (what the benchmarks measure).
PROFILE=debug
[ "${AMLID_RELEASE:-0}" = 1 ] && PROFILE=release
if [ "$PROFILE" = release ]; then cargo build --locked -q --workspace --release; else cargo build --locked -q --workspace; fi
hack/local-cluster.sh up
[ "${DEMO_KEEP:-0}" = 1 ] || trap down EXIT
eval "$(hack/local-cluster.sh env)"
BIN=target/$PROFILE/aml-identity-operator

echo "== installing the CRDs (CEL rules stripped: this local API server is Kubernetes 1.20)"
$BIN crdgen --strip-cel | kubectl apply -f - >/dev/null
# shellcheck disable=SC2046
kubectl wait --for condition=established --timeout=30s $(kubectl get crd -o name | grep amlidentity.io) >/dev/null

kubectl get namespace "$NS" >/dev/null 2>&1 || kubectl create namespace "$NS" >/dev/null

# The Azure side: the project's emulator, seeded to match deploy/samples (the federated credential
# names this cluster's issuer), trusted by the operator and reached under the real host names.
echo "== starting the Azure emulator (logs: $STATE_DIR/emulator.log)"
ISSUER=$(kubectl get --raw /.well-known/openid-configuration | python3 -c 'import json,sys; print(json.load(sys.stdin)["issuer"])')
mkdir -p "$STATE_DIR/emulator"
sed "s|@ISSUER@|$ISSUER|" deploy/emulator/seed.json > "$STATE_DIR/emulator/seed.json"
rm -f "$STATE_DIR/emulator/addresses.json"
target/$PROFILE/aml-identity-emulator --dir "$STATE_DIR/emulator" --seed "$STATE_DIR/emulator/seed.json" \
  --trust "$STATE_DIR/pki/ca.crt" >"$STATE_DIR/emulator.log" 2>&1 &
echo $! > "$STATE_DIR/emulator.pid"
for _ in $(seq 1 50); do [ -f "$STATE_DIR/emulator/addresses.json" ] && break; sleep 0.2; done
HTTPS_ADDR=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["https"].split("//")[1])' "$STATE_DIR/emulator/addresses.json")
IMDS=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["imds"])' "$STATE_DIR/emulator/addresses.json")

# What the platform team provides: the service principal's secret for the ClusterAzureCredential
# (in the operator's namespace) and the ServiceAccount the namespace's AzureCredential federates.
kubectl -n "$NS" create secret generic aml-platform-sp --from-literal=clientSecret=demo-only-client-secret-aml-platform \
  --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl -n "$NS" create serviceaccount aml-operator --dry-run=client -o yaml | kubectl apply -f - >/dev/null
# What the team provides: the training ServiceAccount and the storage account key the Datastore
# registers (pods get a SAS, never this key).
kubectl -n "$NS" create serviceaccount training --dry-run=client -o yaml | kubectl apply -f - >/dev/null
# The ServiceAccount the shared-registry RegistryConnection pulls as (federated with id-image-pull).
kubectl -n "$NS" create serviceaccount image-pull --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl -n "$NS" create secret generic stmlwteama-key --from-literal=accountKey="$(head -c 64 /dev/urandom | base64 -w0)" \
  --dry-run=client -o yaml | kubectl apply -f - >/dev/null

RESOLVE=""
for host in login.microsoftonline.com management.azure.com crmlwteama.azurecr.io; do RESOLVE="$RESOLVE${RESOLVE:+,}$host=$HTTPS_ADDR"; done
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
HEALTH_PORT=$(free_port)
MSI_PORT=$(free_port)
# DEMO_OPERATOR_ARGS: more flags for the operator (the benchmarks lift limits with it).
# shellcheck disable=SC2086
start_operator() {
  $BIN run --lease-namespace "$NS" --health-addr "127.0.0.1:$HEALTH_PORT" --azure-ca-bundle "$STATE_DIR/emulator/ca.pem" \
    --azure-resolve "$RESOLVE" --imds-endpoint "$IMDS" \
    --msi-endpoint-addr "127.0.0.1:$MSI_PORT" --msi-endpoint-url "http://127.0.0.1:$MSI_PORT/msi/token" \
    ${DEMO_OPERATOR_ARGS:-} >>"$STATE_DIR/operator.log" 2>&1 &
  echo $! > "$STATE_DIR/operator.pid"
}
echo "== starting the operator (logs: $STATE_DIR/operator.log)"
: > "$STATE_DIR/operator.log"
start_operator

echo "== applying deploy/samples to namespace $NS"
kubectl apply -n "$NS" -f deploy/samples/
echo "== and one invalid object, to show how a bad spec is reported"
kubectl apply -n "$NS" -f deploy/samples/invalid/workspace-primary-not-listed.yaml
echo "== a second team, team-b, admitted to the shared credential by label, naming team-a's identity"
kubectl get namespace team-b >/dev/null 2>&1 || kubectl create namespace team-b >/dev/null
kubectl label namespace team-b amlidentity.io/enabled=true --overwrite >/dev/null
kubectl -n team-b create serviceaccount training --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl apply -n team-b -f deploy/samples/team-b/

# Wait (bounded) until every object reports on its current generation and settles.
for _ in $(seq 1 120); do
  [ "$(kubectl get aml -A -o json | python3 hack/conditions.py --pending)" = 0 ] && break
  sleep 0.5
done

sleep 3
echo
kubectl get aml -A
echo
echo "== Secrets the operator wrote into $NS"
kubectl -n "$NS" get secrets,configmaps -l app.kubernetes.io/managed-by=aml-identity-operator
echo
echo "== conditions"
kubectl get aml -A -o json | python3 hack/conditions.py
echo
echo "== kubectl amlid status: one object, the identity it signs in through, its Secret and Events"
PATH="$PWD/target/$PROFILE:$PATH" kubectl amlid -n "$NS" status computeidentity/cpu-cluster
echo
echo "== kubectl amlid inspect secret: what the token Secret holds (claims, never a token)"
PATH="$PWD/target/$PROFILE:$PATH" kubectl amlid -n "$NS" inspect secret cpu-cluster-identity

# The documents' training code, unmodified, through the managed identity endpoint: a process whose
# only inputs are the token Secret's keys (what `envFrom: secretRef` gives a pod).
echo
echo "== the Azure ML managed identity endpoint: cpu-cluster opts in, a training pod runs the documents' code"
kubectl -n "$NS" patch computeidentity cpu-cluster --type merge -p '{"spec":{"tokenSecret":{"msiEndpoint":true}}}' >/dev/null
for _ in $(seq 1 60); do
  kubectl -n "$NS" get secret cpu-cluster-identity -o jsonpath='{.data.MSI_SECRET}' | grep -q . && break
  sleep 0.5
done
POD_PYTHON=$(hack/python-env.sh)
kubectl -n "$NS" get secret cpu-cluster-identity -o json | python3 hack/training_pod.py \
  --env REQUESTS_CA_BUNDLE="$STATE_DIR/emulator/ca.pem" --env PYTHONPATH="$PWD/tests/python/pod" \
  --env AMLID_POD_HOSTS="kv-mlw-team-a.vault.azure.net=$HTTPS_ADDR" \
  -- "$POD_PYTHON" hack/demo_training_pod.py

# A restart of a settled operator: it reads everything again and should write nothing.
echo
echo "== restarting the operator: what a settled cluster costs Azure and the API server"
EMULATOR_URL="https://$HTTPS_ADDR"
python3 hack/quiet_restart.py snapshot "$EMULATOR_URL" "$STATE_DIR/emulator/ca.pem" > "$STATE_DIR/before-restart.json"
stop operator
start_operator
OBJECTS=$(kubectl get aml -A --no-headers | wc -l)
for _ in $(seq 1 120); do
  DONE=$(curl -s "http://127.0.0.1:$HEALTH_PORT/metrics" | awk '/^aml_identity_operator_reconciles_total/ {s += $NF} END {print int(s)}')
  [ "${DONE:-0}" -ge "$OBJECTS" ] && break
  sleep 0.5
done
if [ "${DONE:-0}" -lt "$OBJECTS" ]; then
  echo "the restarted operator reconciled ${DONE:-0} of $OBJECTS objects within 60 s" >&2
  exit 1
fi
sleep 3
echo "the restarted operator reconciled all $OBJECTS objects ($DONE reconciles)"
python3 hack/quiet_restart.py compare "$STATE_DIR/before-restart.json" "$EMULATOR_URL" "$STATE_DIR/emulator/ca.pem"

# DEMO_BENCH_N=n: n more Datastores, timed (the small version of `make bench-datastores`).
if [ "${DEMO_BENCH_N:-0}" -gt 0 ]; then
  echo
  echo "== $DEMO_BENCH_N more Datastores, timed"
  python3 hack/bench_datastores.py operator "$DEMO_BENCH_N" "$(cat "$STATE_DIR/operator.pid")"
fi

if [ "${DEMO_KEEP:-0}" = 1 ]; then
  echo; echo "Still running. $(hack/local-cluster.sh env); stop with: hack/demo.sh down"
fi
