# labcron in a container: build with the locked dependencies, run as a non-root user, keep every
# ledger, log and result on the /data volume, and let Docker check health through the binary itself.
#
#   docker build -t labcron .
#   docker run -d -p 8080:8080 -v labcron-data:/data -e LABCRON_ADMIN_PASSWORD=change-me labcron

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# Dependencies first, so a code change does not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches && echo 'fn main() {}' > src/main.rs && touch src/lib.rs && echo 'fn main() {}' > benches/bench.rs \
    && cargo build --release --locked --bin labcron \
    && rm -rf src benches
COPY schema.sql labcron.example.toml ./
COPY migrations migrations
COPY benches benches
COPY src src
# The stub build left newer timestamps on its outputs; make sure the real sources win.
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin labcron

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates tzdata \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /data --shell /usr/sbin/nologin labcron \
    && mkdir -p /data/scripts \
    && chown -R labcron:labcron /data
COPY --from=build /src/target/release/labcron /usr/local/bin/labcron
COPY labcron.example.toml /etc/labcron/labcron.example.toml
USER labcron:labcron
WORKDIR /data
# Inside the container the server listens on every interface; publish the port to choose who sees it.
ENV LABCRON_BIND=0.0.0.0:8080 \
    LABCRON_DATA_DIR=/data
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 CMD ["labcron", "healthcheck"]
# labcron is PID 1 here, so every orphan in the container comes to it anyway; it is also a child
# subreaper and, at the end of each run, kills and reaps whatever the run left (by process group
# and by the run's marker in the environment). No cgroup per run is used.
# SIGTERM (docker stop) lets runs finish for runs.shutdown_grace_seconds (30 s by default):
# give docker stop a longer timeout (docker stop -t 60) so it does not SIGKILL first.
STOPSIGNAL SIGTERM
ENTRYPOINT ["labcron"]
CMD ["serve"]
