# syntax=docker/dockerfile:1
# tenant-storage-operator: a static (musl) binary in distroless/static, running as 65532.
#
#   docker build -t <registry>/tenant-storage-operator:0.1.0 .
#   (or: buildah bud --layers -t <registry>/tenant-storage-operator:0.1.0 .)
#
# The binary is fully static: Alpine's Rust targets x86_64/aarch64-unknown-linux-musl, which
# link statically by default, and the crate uses rustls on ring (no OpenSSL, no aws-lc), so the
# only C it compiles is ring's, with Alpine's gcc. distroless/static carries what the binary
# needs from the OS: CA certificates (rustls-native-certs reads /etc/ssl/certs), tzdata, and a
# passwd entry for the nonroot user 65532.

ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-alpine AS build
RUN apk add --no-cache musl-dev binutils
WORKDIR /src
# Dependencies first, so a source change does not rebuild them (stub lib and main).
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && cargo build --release --locked \
 && rm -rf src
COPY src ./src
# touch: the stub's build artefacts are older than the real sources, but make sure of it.
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked \
 && install -D -m 0755 target/release/tenant-storage-operator /out/tenant-storage-operator \
 && if readelf -l /out/tenant-storage-operator | grep -q 'program interpreter'; then \
      echo "tenant-storage-operator is dynamically linked; expected a static musl binary"; exit 1; \
    fi

FROM gcr.io/distroless/static-debian12:nonroot
LABEL org.opencontainers.image.title="tenant-storage-operator" \
      org.opencontainers.image.description="Residency policy in the cluster; region-pinned, encrypted, locked-down tenant storage in AWS" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0"
COPY --from=build /out/tenant-storage-operator /usr/local/bin/tenant-storage-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/tenant-storage-operator"]
CMD ["run"]
