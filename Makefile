# The two set-up commands of the README: `make demo` and `make test`.
.PHONY: demo test crds build cluster-up cluster-down

demo:
	hack/demo.sh

test:
	hack/test.sh

build:
	cargo build --locked

crds:
	cargo run --locked -q -- crdgen --out crds

cluster-up:
	hack/local-cluster.sh up

cluster-down:
	hack/local-cluster.sh down
