# syntax=docker/dockerfile:1
# One image with both binaries: hookline-ingress and hookline-worker (also the operator CLI).
#
#   docker build -t hookline .
#   docker run --rm hookline hookline-worker --help
#
# Dependencies are compiled in their own layer from the manifests alone, so a change to
# hookline's code rebuilds only hookline's crates.

ARG RUST_VERSION=1.95
FROM rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
ENV CARGO_TERM_COLOR=never
# aws-lc-sys (rustls, jsonwebtoken) may build with CMake; only this stage carries build tools.
RUN apt-get update && apt-get install -y --no-install-recommends cmake && rm -rf /var/lib/apt/lists/*

# 1. Dependencies only: the manifests, the lock file and empty crate roots.
COPY Cargo.toml Cargo.lock ./
COPY shared/Cargo.toml shared/
COPY ingress/Cargo.toml ingress/
COPY worker/Cargo.toml worker/
COPY tests/Cargo.toml tests/
RUN for c in shared ingress worker tests; do mkdir -p $c/src; done \
 && echo '' > shared/src/lib.rs \
 && echo 'fn main() {}' > ingress/src/main.rs && echo '' > ingress/src/lib.rs \
 && echo 'fn main() {}' > worker/src/main.rs && echo '' > worker/src/lib.rs \
 && mkdir -p tests/src/bin && echo '' > tests/src/lib.rs && echo 'fn main() {}' > tests/src/bin/loadgen.rs \
 && cargo build --release --locked -p hookline-ingress -p hookline-worker \
 && rm -rf shared/src ingress/src worker/src tests/src

# 2. hookline itself (migrations are embedded in the binaries at compile time).
COPY shared shared
COPY ingress ingress
COPY worker worker
COPY tests tests
COPY migrations migrations
RUN touch shared/src/lib.rs ingress/src/main.rs ingress/src/lib.rs worker/src/main.rs worker/src/lib.rs \
 && cargo build --release --locked -p hookline-ingress -p hookline-worker \
 && strip target/release/hookline-ingress target/release/hookline-worker

# Runtime: no compiler, no shell tools beyond what health checks need (curl), non-root.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin hookline
COPY --from=build /src/target/release/hookline-ingress /src/target/release/hookline-worker /usr/local/bin/
USER 10001:10001
ENV HOOKLINE_INGRESS_ADDR=0.0.0.0:8080 \
    HOOKLINE_WORKER_ADDR=0.0.0.0:9090 \
    RUST_LOG=info
EXPOSE 8080 9090
# The ingress by default; the worker image use is `hookline-worker run`.
CMD ["hookline-ingress"]
