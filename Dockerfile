# rrr on PANDA's official image: both engines' plugins are built, the PANDA one is installed
# where PANDA finds it, and PANDA is the default engine (the image's Ubuntu has no QEMU 10).
#
#   docker build -t rrr .
#   docker run --rm -it -v "$HOME/.cache/rrr:/root/.cache/rrr" -v "$PWD:/work" -w /work \
#       rrr run --stimulus examples/open-write-read.c --kernel-src linux-6.1.tar.xz
#
# (the image has no distro kernel source: pass --kernel-src, or use --syzbot BUG).
# PANDA_IMAGE picks another PANDA build (for example a pinned tag of pandare/panda).
ARG PANDA_IMAGE=pandare/panda:latest
FROM ${PANDA_IMAGE}

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# What rrr runs besides PANDA: the kernel and stimulus toolchain, the rootfs tools, gdb; and
# what building rrr needs (pkg-config and GLib for the panda-re crate, curl for rustup).
RUN apt-get update -q \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        build-essential ca-certificates curl git pkg-config libglib2.0-dev \
        bc bison flex libelf-dev libssl-dev dwarves cpio xz-utils zstd rsync kmod \
        busybox-static e2fsprogs qemu-utils gdb python3 patch \
    && rm -rf /var/lib/apt/lists/*

ENV RUSTUP_HOME=/usr/local/rustup \
    CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:$PATH
RUN curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs \
    | sh -s -- -y --profile minimal --default-toolchain stable --no-modify-path

WORKDIR /src/rrr
COPY . .
# rrr finds its plugins (and the QEMU engine's pacing library) next to itself; `install-panda-plugin` also puts panda_rrr_trace.so in
# PANDA's plugin directory, for replays by hand (`-panda rrr_trace:profile=P,out=T`).
RUN cargo build --release --locked \
    && install -m 0755 target/release/rrr /usr/local/bin/rrr \
    && install -m 0755 target/release/librrr_qemu.so target/release/librrr_skip_idle.so \
        target/release/libpanda_rrr_trace.so /usr/local/bin/ \
    && rrr install-panda-plugin --to /usr/local/lib/panda/x86_64 \
    && cargo clean \
    && rm -rf "$CARGO_HOME/registry" "$CARGO_HOME/git"

ENV RRR_ENGINE=panda
WORKDIR /work
ENTRYPOINT ["rrr"]
CMD ["--help"]
