#!/usr/bin/env bash
# Installs (once per lock file) the Azure SDK for JavaScript the Node training pod of the tests
# uses, from tests/node/package-lock.json, and prints its node_modules path (for NODE_PATH).
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE_DIR=${AMLID_CACHE_DIR:-$HOME/.cache/aml-identity-operator}
lock=tests/node/package-lock.json
prefix=$CACHE_DIR/node-pod-$(cat tests/node/package.json "$lock" | sha256sum | cut -c1-12)
if [ ! -f "$prefix/.complete" ]; then
  command -v npm >/dev/null || {
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
  }
  # @azure/identity 4 supports Node.js 20 and later.
  major=$(node -p 'process.versions.node.split(".")[0]')
  [ "$major" -ge 20 ] || { echo "node-env: Node.js $(node --version) is too old; the Azure SDK needs 20 or later" >&2; exit 1; }
  echo "node-env: installing the Azure SDK for JavaScript into $prefix" >&2
  rm -rf "$prefix" && mkdir -p "$prefix"
  cp tests/node/package.json "$lock" "$prefix/"
  npm ci --prefix "$prefix" --silent --no-audit --no-fund >/dev/null
  touch "$prefix/.complete"
fi
echo "$prefix/node_modules"
