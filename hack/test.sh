#!/usr/bin/env bash
# The test command (`make test`): installs what is missing, starts one local control plane for the
# whole run, runs every test, stops what it started, and prints how long it took.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)

command -v cargo >/dev/null || { echo "cargo is required (install Rust with rustup)" >&2; exit 1; }
if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install --locked cargo-nextest
fi

AMLID_PYTHON=$(hack/python-env.sh)
export AMLID_PYTHON
hack/local-cluster.sh up
trap 'hack/local-cluster.sh down' EXIT
eval "$(hack/local-cluster.sh env)"

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo nextest run --workspace --locked --no-fail-fast

echo "make test took $(( $(date +%s) - start ))s"
