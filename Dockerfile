# syntax=docker/dockerfile:1
# pg_authaudit images, built the way scripts/setup.sh builds on Debian:
#   docker build --target postgres -t pg_authaudit/postgres .   PostgreSQL 15 + the extension
#   docker build --target sidecar  -t pg_authaudit/sidecar .    the MongoDB mirror
# docker-compose.yml wires them with MongoDB. Base: the official PostgreSQL 15
# image (Debian bookworm), so the extension is built against its headers.

FROM postgres:15-bookworm AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN apt-get update \
 && apt-get install -y --no-install-recommends curl ca-certificates build-essential \
 && rm -rf /var/lib/apt/lists/*
# The toolchain the project is verified with (docs/installation.md).
ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo PATH=/usr/local/cargo/bin:$PATH
RUN curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs \
    | sh -s -- -y --profile minimal --default-toolchain 1.95.0
WORKDIR /src
# Same steps as on a Debian machine: build packages, cargo-pgrx 0.18.0, pgrx init.
COPY scripts/setup.sh scripts/setup.sh
RUN scripts/setup.sh --build-only
COPY Cargo.toml Cargo.lock ./
COPY authaudit-core authaudit-core
COPY pg_authaudit pg_authaudit
COPY sidecar sidecar
COPY mongowire mongowire
COPY demo demo
COPY tests tests
COPY sql sql
COPY docs docs
RUN cargo pgrx package -p pg_authaudit --pg-config /usr/lib/postgresql/15/bin/pg_config \
 && cargo build --release --locked -p sidecar

FROM postgres:15-bookworm AS postgres
COPY --from=build /src/target/release/pg_authaudit-pg15/usr/share/postgresql/15/extension/ /usr/share/postgresql/15/extension/
COPY --from=build /src/target/release/pg_authaudit-pg15/usr/lib/postgresql/15/lib/ /usr/lib/postgresql/15/lib/
COPY docker/initdb/ /docker-entrypoint-initdb.d/
# The extension keeps chain heads in shared memory; the mirror needs
# logical decoding.
CMD ["postgres", "-c", "shared_preload_libraries=pg_authaudit", "-c", "wal_level=logical", \
     "-c", "max_replication_slots=10", "-c", "max_wal_senders=10"]

FROM debian:bookworm-slim AS sidecar
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/authaudit-sidecar /usr/local/bin/authaudit-sidecar
USER 65532:65532
EXPOSE 9187
# Inside the container the endpoint listens on every interface so that a
# published port reaches it; publish it on the host's loopback (compose).
ENV AUTHAUDIT_METRICS_LISTEN=0.0.0.0:9187
ENTRYPOINT ["/usr/local/bin/authaudit-sidecar"]
