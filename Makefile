# The two set-up commands of the README: `make demo` and `make test`.
.PHONY: demo test bench-datastores crds build cluster-up cluster-down

demo:
	hack/demo.sh

test:
	hack/test.sh

# Release builds; N Datastores (default 500) against the raw write rate of the same API server.
bench-datastores:
	hack/bench-datastores.sh

build:
	cargo build --locked

crds:
	cargo run --locked -q -- crdgen --out crds

cluster-up:
	hack/local-cluster.sh up

cluster-down:
	hack/local-cluster.sh down
