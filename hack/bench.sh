#!/usr/bin/env bash
# The benchmark (`make bench`, README "Performance"): release builds, a fresh local control plane,
# and `bench` (bench/src/main.rs) with BENCH_ARGS, e.g.
#   BENCH_ARGS="--objects 10000 --namespaces 100 --identities 10" make bench
# The control plane is stopped at the end; the bench's namespaces go with it.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --locked -q --release --workspace
trap 'hack/local-cluster.sh down' EXIT
hack/local-cluster.sh up
eval "$(hack/local-cluster.sh env)"
# shellcheck disable=SC2086
target/release/bench ${BENCH_ARGS:-}
