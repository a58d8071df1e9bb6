#!/usr/bin/env bash
# A real Kubernetes 1.20 control plane (etcd + kube-apiserver + kube-controller-manager) on 127.0.0.1,
# built from Debian's source package once and cached. See README "Local control plane".
#
#   hack/local-cluster.sh build   # install packages, build binaries into the cache (idempotent)
#   hack/local-cluster.sh up      # build if needed, start on free ports, write the kubeconfig
#   hack/local-cluster.sh env     # print `export KUBECONFIG=...` for a running cluster
#   hack/local-cluster.sh down    # stop exactly the processes `up` started
#   hack/local-cluster.sh restart-apiserver  # stop and start kube-apiserver on the same etcd and port
set -euo pipefail

K8S_VERSION=1.20.2
CACHE_DIR=${AMLID_CACHE_DIR:-$HOME/.cache/aml-identity-operator}
BIN_DIR=$CACHE_DIR/kubernetes-$K8S_VERSION/bin
STATE_DIR=${AMLID_CLUSTER_DIR:-${TMPDIR:-/tmp}/aml-identity-operator-cluster}

log() { echo "local-cluster: $*" >&2; }

apt_install() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

build() {
  apt_install etcd-server openssl curl ca-certificates
  if [ -x "$BIN_DIR/kube-apiserver" ] && [ -x "$BIN_DIR/kube-controller-manager" ]; then
    return 0
  fi
  log "building kube-apiserver and kube-controller-manager $K8S_VERSION (once; cached in $BIN_DIR)"
  apt_install golang-go rsync golang-github-modern-go-reflect2-dev dpkg-dev make
  if [ ! -f /etc/apt/sources.list.d/debian-src.sources ]; then
    sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources \
      > /etc/apt/sources.list.d/debian-src.sources
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
  fi
  local work=$CACHE_DIR/kubernetes-build
  rm -rf "$work" && mkdir -p "$work/home"
  (cd "$work" && apt-get source --download-only kubernetes >/dev/null 2>&1)
  local tarball
  tarball=$(ls "$work"/kubernetes_*.orig.tar.gz | head -n1)
  tar -C "$work" -xzf "$tarball"
  local src=$work/kubernetes-$K8S_VERSION
  # The vendored reflect2 1.0.1 crashes the API server when built with Go >= 1.18; Debian's 1.0.2 is fixed.
  rm -rf "$src/vendor/github.com/modern-go/reflect2"
  cp -r /usr/share/gocode/src/github.com/modern-go/reflect2 "$src/vendor/github.com/modern-go/reflect2"
  rm -f "$src/vendor/github.com/modern-go/reflect2/go.mod" "$src"/vendor/github.com/modern-go/reflect2/*_test.go
  mkdir -p "$src/.go/src/k8s.io" && ln -sfn ../../.. "$src/.go/src/k8s.io/kubernetes"
  (cd "$src" && GOPATH=$src/.go GO111MODULE=off CGO_ENABLED=0 HOME=$work/home \
     make WHAT="cmd/kube-apiserver cmd/kube-controller-manager" >"$work/build.log" 2>&1) \
    || { tail -n 40 "$work/build.log" >&2; exit 1; }
  mkdir -p "$BIN_DIR.tmp"
  cp "$src/_output/bin/kube-apiserver" "$src/_output/bin/kube-controller-manager" "$BIN_DIR.tmp/"
  rm -rf "$BIN_DIR" && mv "$BIN_DIR.tmp" "$BIN_DIR"
  rm -rf "$work"
  log "built into $BIN_DIR"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

alive() { [ -f "$STATE_DIR/$1.pid" ] && kill -0 "$(cat "$STATE_DIR/$1.pid")" 2>/dev/null; }

api_ready() {
  [ -f "$STATE_DIR/kubeconfig" ] || return 1
  local server token
  server=$(cat "$STATE_DIR/server")
  token=$(cat "$STATE_DIR/admin.token")
  curl -fsS --max-time 2 --cacert "$STATE_DIR/pki/ca.crt" -H "Authorization: Bearer $token" "$server/readyz" >/dev/null 2>&1
}

# Stops one process by the PID this script recorded: SIGTERM, a bounded wait, then SIGKILL.
stop_pid() {
  local name=$1 pid
  [ -f "$STATE_DIR/$name.pid" ] || return 0
  pid=$(cat "$STATE_DIR/$name.pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$STATE_DIR/$name.pid"
}

down() {
  # The API server first: with etcd gone it ignores SIGTERM for a long time.
  stop_pid kube-controller-manager
  stop_pid kube-apiserver
  stop_pid etcd
  rm -rf "$STATE_DIR"
  log "stopped"
}

make_pki() {
  local pki=$STATE_DIR/pki
  mkdir -p "$pki"
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=aml-identity-operator-local-ca" \
    -keyout "$pki/ca.key" -out "$pki/ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" \
    -keyout "$pki/apiserver.key" -out "$pki/apiserver.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' > "$pki/ext.cnf"
  openssl x509 -req -in "$pki/apiserver.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 30 -extfile "$pki/ext.cnf" -out "$pki/apiserver.crt" 2>/dev/null
  openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
  openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
}

wait_for() {
  local what=$1 tries=$2; shift 2
  for _ in $(seq 1 "$tries"); do "$@" && return 0; sleep 0.5; done
  log "$what did not become ready; last log lines:"
  tail -n 30 "$STATE_DIR/$what.log" >&2 || true
  return 1
}

# Starts kube-apiserver on the recorded etcd and port, and waits until it is ready.
start_apiserver() {
  local eport server aport
  eport=$(cat "$STATE_DIR/etcd.port")
  server=$(cat "$STATE_DIR/server")
  aport=${server##*:}
  setsid "$BIN_DIR/kube-apiserver" --etcd-servers="http://127.0.0.1:$eport" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$aport" \
    --tls-cert-file="$STATE_DIR/pki/apiserver.crt" --tls-private-key-file="$STATE_DIR/pki/apiserver.key" \
    --client-ca-file="$STATE_DIR/pki/ca.crt" --token-auth-file="$STATE_DIR/pki/tokens.csv" \
    --authorization-mode=RBAC --service-account-issuer="$server" \
    --service-account-key-file="$STATE_DIR/pki/sa.pub" \
    --service-account-signing-key-file="$STATE_DIR/pki/sa.key" --api-audiences="$server" \
    --service-cluster-ip-range=10.0.0.0/24 --cert-dir="$STATE_DIR/pki" \
    >>"$STATE_DIR/kube-apiserver.log" 2>&1 &
  echo $! > "$STATE_DIR/kube-apiserver.pid"
  wait_for kube-apiserver 120 api_ready
}

# The API server stopped and started again on the same etcd and port (the restart drill): clients
# see their connections and watches break, then the same server.
restart_apiserver() {
  alive kube-apiserver || { log "not running; run '$0 up'"; exit 1; }
  stop_pid kube-apiserver
  start_apiserver
  log "kube-apiserver restarted"
}

up() {
  build
  if alive etcd && alive kube-apiserver && alive kube-controller-manager && api_ready; then
    log "already running ($(cat "$STATE_DIR/server"))"
    return 0
  fi
  down >/dev/null 2>&1 || true
  mkdir -p "$STATE_DIR"
  make_pki
  local eport pport aport server token
  eport=$(free_port); pport=$(free_port); aport=$(free_port)
  server="https://127.0.0.1:$aport"
  token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
  echo "$server" > "$STATE_DIR/server"
  echo "$token" > "$STATE_DIR/admin.token"
  echo "$token,admin,admin,\"system:masters\"" > "$STATE_DIR/pki/tokens.csv"
  cat > "$STATE_DIR/kubeconfig" <<KCFG
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: $server
    certificate-authority: $STATE_DIR/pki/ca.crt
users:
- name: admin
  user:
    token: $token
contexts:
- name: local
  context: {cluster: local, user: admin}
current-context: local
KCFG

  setsid etcd --data-dir "$STATE_DIR/etcd" --listen-client-urls "http://127.0.0.1:$eport" \
    --advertise-client-urls "http://127.0.0.1:$eport" --listen-peer-urls "http://127.0.0.1:$pport" \
    --initial-advertise-peer-urls "http://127.0.0.1:$pport" \
    --initial-cluster "default=http://127.0.0.1:$pport" >"$STATE_DIR/etcd.log" 2>&1 &
  echo $! > "$STATE_DIR/etcd.pid"
  wait_for etcd 40 curl -fsS --max-time 1 -o /dev/null "http://127.0.0.1:$eport/health"

  echo "$eport" > "$STATE_DIR/etcd.port"
  : > "$STATE_DIR/kube-apiserver.log"
  start_apiserver

  setsid "$BIN_DIR/kube-controller-manager" --kubeconfig="$STATE_DIR/kubeconfig" \
    --controllers=garbagecollector,namespace,serviceaccount,serviceaccount-token \
    --service-account-private-key-file="$STATE_DIR/pki/sa.key" --root-ca-file="$STATE_DIR/pki/ca.crt" \
    --bind-address=127.0.0.1 --secure-port=0 --port=0 --leader-elect=false \
    >"$STATE_DIR/kube-controller-manager.log" 2>&1 &
  echo $! > "$STATE_DIR/kube-controller-manager.pid"

  # Let anyone read the OIDC discovery document and JWKS, as a cloud provider's issuer does.
  curl -fsS --max-time 5 --cacert "$STATE_DIR/pki/ca.crt" -H "Authorization: Bearer $token" \
    -H 'Content-Type: application/json' -X POST "$server/apis/rbac.authorization.k8s.io/v1/clusterrolebindings" \
    -d '{"metadata":{"name":"service-account-issuer-discovery-unauthenticated"},"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"system:service-account-issuer-discovery"},"subjects":[{"apiGroup":"rbac.authorization.k8s.io","kind":"Group","name":"system:unauthenticated"}]}' \
    >/dev/null
  log "up at $server (KUBECONFIG=$STATE_DIR/kubeconfig)"
}

case "${1:-}" in
  build) build ;;
  up) up ;;
  down) down ;;
  restart-apiserver) restart_apiserver ;;
  env)
    api_ready || { log "not running; run '$0 up'"; exit 1; }
    echo "export KUBECONFIG=$STATE_DIR/kubeconfig"
    ;;
  *) echo "usage: $0 build|up|env|down|restart-apiserver" >&2; exit 2 ;;
esac
