# syntax=docker/dockerfile:1
# The operator image: built from the locked sources, run as a non-root user on distroless.
#   docker build -t aml-identity-operator:0.1.0 .
# The chart runs it with `run …` arguments; `kubectl-amlid` is in the image too, for debugging
# from inside the cluster (`kubectl exec deploy/aml-identity-operator -- kubectl-amlid status -A`).

FROM docker.io/library/rust:1.95-slim-bookworm AS build
WORKDIR /src
# aws-lc-rs and jemalloc build their C libraries with the image's gcc; jemalloc's also needs make.
RUN apt-get update && apt-get install -y --no-install-recommends make && rm -rf /var/lib/apt/lists/*
COPY Cargo.toml Cargo.lock ./
COPY emulator emulator
COPY src src
RUN cargo build --release --locked --bin aml-identity-operator --bin kubectl-amlid

# glibc and libgcc, nothing else: no shell, no package manager. `nonroot` is UID 65532, which
# satisfies runAsNonRoot without the chart fixing a UID.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/aml-identity-operator /usr/local/bin/aml-identity-operator
COPY --from=build /src/target/release/kubectl-amlid /usr/local/bin/kubectl-amlid
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/aml-identity-operator"]
CMD ["run"]
