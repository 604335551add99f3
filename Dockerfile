# Playtree's container image: docker build -t playtree .
# The build stage compiles the server with the locked dependencies; the runtime stage is
# Debian slim with the one binary, run as a non-root user, keeping its store in /data.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p playtree --bin playtree

FROM debian:bookworm-slim AS runtime
RUN groupadd --system --gid 10001 playtree \
 && useradd --system --uid 10001 --gid 10001 --home-dir /data --shell /usr/sbin/nologin playtree \
 && mkdir -p /data \
 && chown 10001:10001 /data
COPY --from=build /src/target/release/playtree /usr/local/bin/playtree
# Listen beyond the container's loopback; keep the store on the volume. Everything else
# comes from the embedded config/playtree.toml, a --config file or PLAYTREE_* variables.
ENV PLAYTREE_SERVER__LISTEN=0.0.0.0:7400 \
    PLAYTREE_SERVER__ADMIN_LISTEN=0.0.0.0:7401 \
    PLAYTREE_SERVER__DATA_DIR=/data
USER 10001:10001
VOLUME ["/data"]
# 7400: game clients and partner apps (websocket); 7401: /metrics, /healthz, /readyz.
EXPOSE 7400 7401
# Exec form: the server is PID 1 and gets SIGTERM itself (it drains and exits within
# server.shutdown_grace_ms).
ENTRYPOINT ["/usr/local/bin/playtree"]
CMD ["serve"]
