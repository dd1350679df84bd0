# labcron in a container: build with the locked dependencies, run as a non-root user, keep every
# ledger, log and result on the /data volume, and let Docker check health through the binary itself.
#
#   docker build -t labcron .
#   docker run -d -p 8080:8080 -v labcron-data:/data -e LABCRON_ADMIN_PASSWORD=change-me labcron
#
# The runtime image is not a distribution: it holds the binary, the C libraries it links (found with
# ldd), CA certificates, the time-zone database, and a static busybox for the scripts EXTERNAL jobs run
# (/bin/sh, env, date, sed, awk, wget, ...). There is no package manager in it; to run scripts that need
# more (python, psql, ...), build your own image and `COPY --from=labcron /usr/local/bin/labcron`.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# Symbols only make the binary bigger; a panic's message and location still print.
ENV CARGO_PROFILE_RELEASE_STRIP=symbols
# Dependencies first, in their own layer, so a code change rebuilds only the crate itself.
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

# Assembles the runtime's root file system in /rootfs (and its /data in /data). The binary embeds
# its own zone data (chrono-tz) and CA roots (webpki-roots); the zoneinfo copy is for scripts, which
# run with TZ=<the job's zone>, and the CA bundle for scripts and the SSL_CERT_FILE convention.
FROM debian:bookworm-slim AS rootfs
RUN apt-get update \
    && apt-get install -y --no-install-recommends busybox-static ca-certificates tzdata \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/labcron /usr/local/bin/labcron
RUN set -eu; r=/rootfs; \
    mkdir -p "$r/usr/bin" "$r/usr/local/bin" "$r/etc/ssl/certs" "$r/usr/share/zoneinfo" "$r/tmp" \
        /data/scripts; \
    ln -s usr/bin "$r/bin"; \
    ln -s usr/bin "$r/sbin"; \
    cp /usr/local/bin/labcron "$r/usr/local/bin/"; \
    for lib in $(ldd /usr/local/bin/labcron | grep -o '/[^ ]*'); do cp --parents -L "$lib" "$r"; done; \
    cp /bin/busybox "$r/usr/bin/"; \
    for applet in $(busybox --list); do [ -e "$r/usr/bin/$applet" ] || ln -s busybox "$r/usr/bin/$applet"; done; \
    cp /etc/ssl/certs/ca-certificates.crt "$r/etc/ssl/certs/"; \
    cp -a /usr/share/zoneinfo/. "$r/usr/share/zoneinfo/"; \
    rm -rf "$r/usr/share/zoneinfo/right"; \
    printf 'root:x:0:0:root:/root:/bin/false\nlabcron:x:10001:10001:labcron:/data:/bin/false\n' > "$r/etc/passwd"; \
    printf 'root:x:0:\nlabcron:x:10001:\n' > "$r/etc/group"; \
    chmod 1777 "$r/tmp"; \
    chroot "$r" /usr/local/bin/labcron --version; \
    chroot "$r" /bin/sh -c 'TZ=Europe/Berlin date -d @0 +%Z' | grep -qx CET

FROM scratch
COPY --from=rootfs /rootfs /
COPY --from=rootfs --chown=10001:10001 /data /data
COPY labcron.example.toml /etc/labcron/labcron.example.toml
USER labcron:labcron
WORKDIR /data
ENV PATH=/usr/local/bin:/usr/bin:/bin
# Inside the container the server listens on every interface; publish the port to choose who sees it.
ENV LABCRON_BIND=0.0.0.0:8080 \
    LABCRON_DATA_DIR=/data
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 CMD ["labcron", "healthcheck"]
# labcron is PID 1 here, so every orphan in the container comes to it anyway; it is also a child
# subreaper and, at the end of each run, kills and reaps whatever the run left (by process group
# and by the run's marker in the environment). Docker mounts /sys/fs/cgroup read-only in an
# unprivileged container, so runs get no cgroup of their own here (README, Security).
# SIGTERM (docker stop) lets runs finish for runs.shutdown_grace_seconds (30 s by default):
# give docker stop a longer timeout (docker stop -t 60) so it does not SIGKILL first.
STOPSIGNAL SIGTERM
ENTRYPOINT ["labcron"]
CMD ["serve"]
