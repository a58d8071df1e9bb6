#!/usr/bin/env bash
# The test command (`make test`): installs what is missing (nextest, the Python venv, the Node
# Azure SDK, Azurite, kustomize, the Kubernetes binaries, docker-registry and skopeo), starts one local control plane and one Azurite for the whole run, runs every
# test, stops what it started, and prints how long it took. Emulators start inside the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)

command -v cargo >/dev/null || { echo "cargo is required (install Rust with rustup)" >&2; exit 1; }
if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install --locked cargo-nextest
fi

# A real OCI registry and client for the pull-Secret tests.
missing=()
for p in docker-registry skopeo; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

AMLID_PYTHON=$(hack/python-env.sh)
export AMLID_PYTHON
AMLID_KUSTOMIZE=$(hack/kustomize.sh)
export AMLID_KUSTOMIZE
AMLID_NODE_MODULES=$(hack/node-env.sh)
export AMLID_NODE_MODULES
trap 'hack/azurite.sh down; hack/local-cluster.sh down' EXIT
hack/local-cluster.sh up
eval "$(hack/local-cluster.sh env)"
hack/azurite.sh up
eval "$(hack/azurite.sh env)"

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The image's binaries, built as the Dockerfile builds them (tests/image.rs checks what they need).
image_build=$(sed -n 's/^RUN \(cargo build --release .*\)$/\1/p' Dockerfile)
[ -n "$image_build" ] || { echo "the Dockerfile has no 'RUN cargo build --release' line" >&2; exit 1; }
$image_build
# Every operator the tests start signs in as the chart's ServiceAccount with the chart's RBAC.
export AMLID_OPERATOR_KUBECONFIG="${TMPDIR:-/tmp}/aml-identity-operator-cluster/operator.kubeconfig"
cargo nextest run --locked --test chart --run-ignored only
cargo nextest run --workspace --locked --no-fail-fast
# The benchmark's small version (README "Performance"), so it cannot rot: every object Ready, no ARM
# write and no Entra request beyond one per token lifetime in the steady state, renewal included;
# the burst's token Secrets renewing all at once (the storm) and then Azure throttling for a minute.
cargo build --release --locked -p aml-identity-bench
target/release/bench --objects 100 --namespaces 4 --identities 2 --steady-seconds 4 \
  --unrelated-secrets 200 --idle-minutes 2 --token-lifetime 120 --storm --throttle-for 60 --check
# The drills' small version (README "Reliability"), on two shards by namespace label: the API server
# restarted under the operators, then every instance killed with SIGKILL every 15 s for a minute
# while objects arrive and tokens renew; each object reported by exactly one shard, no duplicate in
# Azure, every Secret unexpired, and removal through the operators orphans nothing. Runs last: it
# restarts the API server.
target/release/bench --objects 60 --namespaces 4 --identities 2 --shards 2 --steady-seconds 0 \
  --unrelated-secrets 0 --idle-minutes 0 --token-lifetime 60 --operator-arg=--lease-duration=4 \
  --restart-api-server "hack/local-cluster.sh restart-apiserver" --kill-every 15 --kill-for 60 --check

echo "make test took $(( $(date +%s) - start ))s"
