# syntax=docker/dockerfile:1
# qyzmet image: one binary for `qyzmet migrate`, `qyzmet worker <pool>`, ...

FROM rust:1.95-bookworm AS builder
# Production images leave this empty: no demo PKI (and its embedded private key), no `demo`,
# `bench` or `pki demo` command. docker-compose.yml's demo stack builds with `demo`.
ARG QYZMET_FEATURES=""
WORKDIR /src
COPY . .
# Cache mounts keep the crate registry and build artifacts between builds;
# the binary is copied out because the target cache is not part of the layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --features "$QYZMET_FEATURES" \
    && install -D -m 755 target/release/qyzmet /out/qyzmet

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --system --no-create-home --home-dir /app --shell /usr/sbin/nologin qyzmet
WORKDIR /app
COPY --from=builder /out/qyzmet /app/qyzmet
COPY regulations/ /app/regulations/
COPY demo/ /app/demo/
ENV PATH=/app:$PATH
USER qyzmet
CMD ["qyzmet", "--help"]
