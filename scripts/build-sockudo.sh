#!/usr/bin/env bash
# Builds the Sockudo peer for `herald-bench run --system sockudo`, once, into a cache
# outside the repository (it takes a long time on two cores). Run it again to check that
# the build is there; it does nothing then.
#
#   scripts/build-sockudo.sh
#
# It installs to $HERALD_BENCH_SOCKUDO_ROOT: by default /var/cache/herald-bench/sockudo,
# where herald-bench looks, or ~/.cache/herald-bench/sockudo when that is not writable
# (then give herald-bench HERALD_BENCH_SOCKUDO, as the script says at the end).
#
# The version is pinned so that results stay comparable; only the Redis adapter and the
# in-memory app manager are built in (no OpenTelemetry, no databases, no v2 protocol).
set -euo pipefail

version=5.2.0
default_root=/var/cache/herald-bench/sockudo
if [[ -z "${HERALD_BENCH_SOCKUDO_ROOT:-}" ]] && ! mkdir -p "$default_root" 2>/dev/null; then
    HERALD_BENCH_SOCKUDO_ROOT="$HOME/.cache/herald-bench/sockudo"
fi
root="${HERALD_BENCH_SOCKUDO_ROOT:-$default_root}"
bin="$root/bin/sockudo"

done_msg() {
    echo "sockudo $version is at $bin"
    if [[ "$bin" != "$default_root/bin/sockudo" ]]; then
        echo "run herald-bench with HERALD_BENCH_SOCKUDO=$bin"
    fi
}

if [[ -x "$bin" ]] && "$bin" --version 2>/dev/null | grep -qF "$version"; then
    done_msg
    exit 0
fi

# Sockudo 5.2 needs Rust 1.95 or later.
if ! command -v cargo >/dev/null; then
    echo "build-sockudo: cargo is not on the PATH" >&2
    exit 1
fi
rust=$(rustc --version | awk '{print $2}')
if [[ "$(printf '%s\n1.95.0\n' "$rust" | sort -V | head -n1)" != "1.95.0" ]]; then
    echo "build-sockudo: Sockudo $version needs Rust 1.95 or later, this is $rust" >&2
    exit 1
fi

# Its build needs a C toolchain (jemalloc, aws-lc), cmake (aws-lc), protoc
# (metrics-exporter-tcp) and OpenSSL's headers (its webhook client).
missing=()
command -v cc >/dev/null && command -v make >/dev/null || missing+=(build-essential)
command -v cmake >/dev/null || missing+=(cmake)
command -v protoc >/dev/null || missing+=(protobuf-compiler)
command -v pkg-config >/dev/null || missing+=(pkg-config)
{ command -v pkg-config >/dev/null && pkg-config --exists openssl; } || missing+=(libssl-dev)
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "build-sockudo: install ${missing[*]} first" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

mkdir -p "$root"
CARGO_TARGET_DIR="$root/target" cargo install sockudo --version "$version" --locked \
    --no-default-features --features redis,local -j2 --root "$root"
# The build tree is over a gigabyte; the binary is all that is used.
rm -rf "$root/target"
done_msg
