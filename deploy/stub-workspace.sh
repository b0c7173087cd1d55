#!/bin/sh
# Copies the Cargo workspace at SRC into DEST as manifests only (every Cargo.toml, the
# Cargo.lock, any build.rs), with placeholder crate roots where the real tree has
# sources. A container build compiles this skeleton first, so the dependency layer is
# rebuilt only when a manifest or the lockfile changes, not on every source edit.
#
# Every workspace member gets a skeleton, not only the `herald` package: Cargo needs
# all members' manifests to load the workspace and to check `--locked`.
#
# Usage: stub-workspace.sh SRC DEST
# deploy/validate runs it too and loads the result with `cargo metadata --locked`.
set -eu

if [ "$#" -ne 2 ]; then
    echo "usage: $0 SRC DEST" >&2
    exit 64
fi
src=$(cd "$1" && pwd)
mkdir -p "$2"
dest=$(cd "$2" && pwd)

cd "$src"
find . \( -name target -o -name node_modules -o -name .git \) -prune -o \
    -type f \( -name Cargo.toml -o -name Cargo.lock -o -name build.rs \) -print |
    while read -r file; do
        mkdir -p "$dest/$(dirname "$file")"
        cp "$file" "$dest/$file"
    done

find "$dest" -name Cargo.toml | while read -r manifest; do
    grep -q '^\[package\]' "$manifest" || continue # the workspace root
    dir=$(dirname "$manifest")
    real="$src${dir#"$dest"}"
    mkdir -p "$dir/src"
    if [ -f "$real/src/lib.rs" ]; then
        echo '//! Placeholder: the real sources replace it.' >"$dir/src/lib.rs"
    fi
    if [ -f "$real/src/main.rs" ]; then
        echo 'fn main() {}' >"$dir/src/main.rs"
    fi
    # Targets declared with an explicit `path = "..."` ([[bin]], [lib], ...).
    sed -n 's/^path *= *"\([^"]*\)".*/\1/p' "$manifest" | while read -r target; do
        if [ ! -e "$dir/$target" ]; then
            mkdir -p "$(dirname "$dir/$target")"
            echo 'fn main() {}' >"$dir/$target"
        fi
    done
done
