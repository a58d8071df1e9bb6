#!/usr/bin/env bash
# Creates (once per requirements file) the Python venv the tests use and prints its python path.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE_DIR=${AMLID_CACHE_DIR:-$HOME/.cache/aml-identity-operator}
req=tests/python/requirements.txt
venv=$CACHE_DIR/venv-$(sha256sum "$req" | cut -c1-12)
if [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.complete" ]; then
  if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
  fi
  rm -rf "$venv"
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$req" >&2
  touch "$venv/.complete"
fi
echo "$venv/bin/python"
