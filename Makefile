# The two set-up commands of the README: `make demo` and `make test`.
.PHONY: demo test bench bench-datastores bench-msi crds deploy-base chart-readme build cluster-up cluster-down

demo:
	hack/demo.sh

test:
	hack/test.sh

# Release builds; the operator at scale against the raw write rate of the same API server
# (BENCH_ARGS: `target/release/bench --help`).
bench:
	hack/bench.sh

# Release builds; N Datastores (default 500) against the raw write rate of the same API server.
bench-datastores:
	hack/bench-datastores.sh

# Release builds; the managed identity endpoint's latency and throughput from its token cache.
bench-msi:
	hack/bench-msi.sh

# deploy/base from the chart's default render (a test keeps them equal).
deploy-base:
	AMLID_PYTHON=$$(hack/python-env.sh) AMLID_KUSTOMIZE=$$(hack/kustomize.sh) AMLID_BLESS=1 \
		cargo nextest run --locked --test chart -E 'test(the_kustomize_base_is_the_default_render)'

# The values table of the chart's README from values.schema.json and values.yaml.
chart-readme:
	AMLID_PYTHON=$$(hack/python-env.sh) AMLID_BLESS=1 \
		cargo nextest run --locked --test chart -E 'test(the_chart_readme_lists_every_value)'

build:
	cargo build --locked

crds:
	cargo run --locked -q -- crdgen --out crds --chart charts/aml-identity-operator/templates/crds --docs docs/api

cluster-up:
	hack/local-cluster.sh up

cluster-down:
	hack/local-cluster.sh down
