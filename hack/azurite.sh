#!/usr/bin/env bash
# Azurite (the Azure Storage emulator, from npm) for the tests: HTTPS with a local CA and OAuth
# (bearer tokens) enabled, on a free 127.0.0.1 port, in-memory.
#
#   hack/azurite.sh up     # install once (cached), start, write the env file
#   hack/azurite.sh env    # print the exports tests read: AMLID_AZURITE_BLOB, AMLID_AZURITE_CA
#   hack/azurite.sh down   # stop the process `up` started
set -euo pipefail
AZURITE_VERSION=3.37.0
CACHE_DIR=${AMLID_CACHE_DIR:-$HOME/.cache/aml-identity-operator}
PREFIX=$CACHE_DIR/azurite-$AZURITE_VERSION
STATE_DIR=${AMLID_AZURITE_DIR:-${TMPDIR:-/tmp}/aml-identity-operator-azurite}

log() { echo "azurite: $*" >&2; }

install() {
  [ -x "$PREFIX/node_modules/.bin/azurite-blob" ] && return 0
  command -v npm >/dev/null || {
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
  }
  log "installing azurite@$AZURITE_VERSION into $PREFIX"
  mkdir -p "$PREFIX"
  npm install --prefix "$PREFIX" --silent --no-audit --no-fund "azurite@$AZURITE_VERSION" >/dev/null 2>&1
}

stop() {
  [ -f "$STATE_DIR/azurite.pid" ] || return 0
  local pid
  pid=$(cat "$STATE_DIR/azurite.pid")
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$STATE_DIR/azurite.pid"
}

up() {
  install
  stop
  rm -rf "$STATE_DIR" && mkdir -p "$STATE_DIR"
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=azurite-test-ca" \
    -keyout "$STATE_DIR/ca.key" -out "$STATE_DIR/ca.pem" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout "$STATE_DIR/key.pem" -out "$STATE_DIR/req.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' > "$STATE_DIR/ext.cnf"
  openssl x509 -req -in "$STATE_DIR/req.csr" -CA "$STATE_DIR/ca.pem" -CAkey "$STATE_DIR/ca.key" -CAcreateserial \
    -days 30 -extfile "$STATE_DIR/ext.cnf" -out "$STATE_DIR/cert.pem" 2>/dev/null
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
  setsid "$PREFIX/node_modules/.bin/azurite-blob" --blobHost 127.0.0.1 --blobPort "$port" --inMemoryPersistence \
    --skipApiVersionCheck --disableTelemetry --oauth basic --cert "$STATE_DIR/cert.pem" --key "$STATE_DIR/key.pem" >"$STATE_DIR/azurite.log" 2>&1 &
  echo $! > "$STATE_DIR/azurite.pid"
  for _ in $(seq 1 100); do
    if curl -s --max-time 1 --cacert "$STATE_DIR/ca.pem" -o /dev/null "https://127.0.0.1:$port/devstoreaccount1?comp=list"; then
      printf 'export AMLID_AZURITE_BLOB=https://127.0.0.1:%s/devstoreaccount1\nexport AMLID_AZURITE_CA=%s\n' "$port" "$STATE_DIR/ca.pem" > "$STATE_DIR/env"
      log "up at https://127.0.0.1:$port"
      return 0
    fi
    sleep 0.2
  done
  log "did not start:"; tail -n 20 "$STATE_DIR/azurite.log" >&2; exit 1
}

case "${1:-}" in
  up) up ;;
  down) stop; rm -rf "$STATE_DIR" ;;
  env) cat "$STATE_DIR/env" ;;
  *) echo "usage: $0 up|env|down" >&2; exit 2 ;;
esac
