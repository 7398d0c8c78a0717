# syntax=docker/dockerfile:1
# rushgate container image: a release build in the pinned Rust image, run as a non-root user on
# debian:bookworm-slim. Config and the pass signing key are mounted at /etc/rushgate:
#
#   docker build -t rushgate .
#   docker run -v ./deploy/rushgate.toml:/etc/rushgate/rushgate.toml:ro \
#              -v ./keys:/etc/rushgate/keys:ro -p 8080:8080 rushgate
#
# deploy/compose.yaml runs two nodes with Redis, Prometheus and Grafana.

# ---- build ------------------------------------------------------------------------------------
# At least Cargo.toml's rust-version; bump deliberately.
FROM rust:1.95-bookworm AS build
WORKDIR /src

# Dependencies first, against placeholder sources: this layer is rebuilt only when Cargo.toml or
# Cargo.lock change, not on every source edit.
# loadtest/ is a workspace member: its manifest and a placeholder source must be present for
# cargo to read the workspace, though the image builds only the rushgate binary.
COPY Cargo.toml Cargo.lock ./
COPY loadtest/Cargo.toml loadtest/Cargo.toml
RUN mkdir -p src benches loadtest/src \
 && echo 'fn main() {}' > src/main.rs \
 && echo '//! placeholder' > src/lib.rs \
 && echo 'fn main() {}' > benches/hot_paths.rs \
 && echo 'fn main() {}' > loadtest/src/main.rs \
 && cargo build --release --locked -p rushgate --bin rushgate \
 && rm -rf src benches loadtest/src

# The real sources. `touch` makes them newer than the placeholder build, whatever the mtimes in
# the build context are, so cargo rebuilds the rushgate crate (and only it).
COPY src src
COPY benches benches
COPY config config
# The waiting page and demo shop are compiled in (include_str!).
COPY web web
RUN mkdir -p loadtest/src && echo 'fn main() {}' > loadtest/src/main.rs \
 && touch src/main.rs src/lib.rs \
 && cargo build --release --locked -p rushgate --bin rushgate

# ---- run --------------------------------------------------------------------------------------
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin rushgate \
 && mkdir -p /etc/rushgate/keys \
 && chown rushgate:rushgate /etc/rushgate/keys
COPY --from=build /src/target/release/rushgate /usr/local/bin/rushgate
# The slim image has no curl: the probe speaks HTTP over bash's /dev/tcp.
COPY deploy/healthcheck.sh /usr/local/bin/rushgate-healthcheck
USER rushgate
WORKDIR /etc/rushgate
# Public listener (shoppers, JSON API) and admin listener (probes, metrics, admin API). Inside a
# container both must listen on 0.0.0.0, which needs [admin] token (RUSHGATE_ADMIN_TOKEN).
EXPOSE 8080 9090
# /livez on the admin listener; set RUSHGATE_HEALTH_PORT when admin_listen uses another port.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["bash", "/usr/local/bin/rushgate-healthcheck"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["rushgate"]
CMD ["serve", "--config", "/etc/rushgate/rushgate.toml"]
