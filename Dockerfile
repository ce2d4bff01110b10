# syntax=docker/dockerfile:1
#
# hoop's container image: one static-ish binary with its eBPF programs
# embedded, on a minimal runtime base.
#
#   docker build -t ghcr.io/hoop/hoop:dev .
#
# Stage 1 builds exactly as a developer machine does: `cargo xtask setup`
# installs nightly rust-src and a bpf-linker built against the nightly's own
# LLVM, then builds hoop in release mode. hoop-userspace's build.rs builds
# the eBPF object (hoop-ebpf, bpfel-unknown-none) with that toolchain and
# embeds it, so the eBPF object is built here too.
FROM rust:1.95-bookworm AS build
RUN rustup toolchain install nightly --profile minimal --component rust-src
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo xtask setup \
    && install -D -m 0755 target/release/hoop /out/hoop

# Stage 2: glibc and libgcc only (distroless "cc"): no shell, no package
# manager. The agent runs as root with the capabilities the manifests grant;
# `hoop await` in an init container runs as any user.
FROM gcr.io/distroless/cc-debian12
COPY --from=build /out/hoop /usr/local/bin/hoop
ENTRYPOINT ["/usr/local/bin/hoop"]
CMD ["--help"]
