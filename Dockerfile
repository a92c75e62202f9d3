# syntax=docker/dockerfile:1
# Vigil's image: vigil-proxy and vigil-controller, built from this tree.
#   docker build -t vigil:dev .
#   docker run --rm -v /etc/vigil:/etc/vigil:ro -p 8080:8080 vigil:dev \
#     vigil-proxy run --config /etc/vigil/vigil-proxy.toml
# docs/deployment.md#container says more; helm/ runs it in Kubernetes.

# --- build ---
FROM rust:1.95-slim-bookworm AS build
# cmake builds zlib-ng (Pingora compresses with flate2 over zlib-ng).
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake=3.25.* make=4.3-* g++=4:12.* \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p vigil-proxy -p vigil-controller \
 && install -D -m 0755 target/release/vigil-proxy /out/usr/bin/vigil-proxy \
 && install -D -m 0755 target/release/vigil-controller /out/usr/bin/vigil-controller

# --- run ---
# glibc and libgcc only, no shell or package manager; uid/gid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/ /
USER 65532:65532
# State (session hash key, snapshot, SQLite store): mount a volume here.
WORKDIR /var/lib/vigil
EXPOSE 8080 8443 9901 9700
CMD ["vigil-proxy", "--help"]
