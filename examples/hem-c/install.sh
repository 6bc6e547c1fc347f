#!/usr/bin/env bash
# Installs what examples/hem-c/build.sh needs, skipping whatever is already there:
#   - Debian's clang-19, lld-19 (wasm-ld-19), wasi-libc (a wasm32-wasi sysroot) and
#     libclang-rt-19-dev-wasm32 (compiler-rt builtins: wasi-libc's strtod and printf use
#     128-bit long double, whose arithmetic lives there);
#   - wit-bindgen-cli (the C generator only) into ~/.cargo/bin, pinned;
#   - the WASI preview1 -> 0.2 reactor adapter, copied out of the crates.io crate
#     wasi-preview1-component-adapter-provider (pinned) into
#     ~/.cache/sedna-examples/wasi-preview1-component-adapter-provider-VERSION/.
# The component linker, wasm-component-ld, ships with the project's pinned Rust toolchain
# (rust-toolchain.toml); rustup installs that toolchain if it is missing.
#
# Usage: examples/hem-c/install.sh        (as root, or as a user with sudo)
set -euo pipefail

WIT_BINDGEN_VERSION=0.61.1
ADAPTER_VERSION=48.0.8
APT_PACKAGES=(clang-19 lld-19 wasi-libc libclang-rt-19-dev-wasm32)

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cargo_home=${CARGO_HOME:-$HOME/.cargo}
cache=${SEDNA_EXAMPLES_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sedna-examples}
adapter_dir="$cache/wasi-preview1-component-adapter-provider-$ADAPTER_VERSION"
adapter="$adapter_dir/wasi_snapshot_preview1.reactor.wasm"
# Cargo runs outside the repository below; have rustup use the project's toolchain there
# too, so that no default toolchain is needed.
channel=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' "$repo/rust-toolchain.toml")
export RUSTUP_TOOLCHAIN="${RUSTUP_TOOLCHAIN:-$channel}"

say() { printf 'install.sh: %s\n' "$*"; }

# --- Debian packages ---------------------------------------------------------------
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    if [ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)" != "install ok installed" ]; then
        missing+=("$pkg")
    fi
done
if [ ${#missing[@]} -gt 0 ]; then
    sudo=()
    if [ "$(id -u)" -ne 0 ]; then sudo=(sudo); fi
    say "apt-get install ${missing[*]}"
    "${sudo[@]}" apt-get update
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
else
    say "apt packages already installed: ${APT_PACKAGES[*]}"
fi

# --- the project's Rust toolchain (cargo, and wasm-component-ld) -----------------------
if command -v rustup >/dev/null && ! rustup run "$RUSTUP_TOOLCHAIN" rustc --version >/dev/null 2>&1; then
    say "rustup toolchain install $RUSTUP_TOOLCHAIN"
    rustup toolchain install "$RUSTUP_TOOLCHAIN" --profile minimal
fi

# --- wit-bindgen-cli ---------------------------------------------------------------
wit_bindgen="$cargo_home/bin/wit-bindgen"
if [ -x "$wit_bindgen" ] && [ "$("$wit_bindgen" --version 2>/dev/null | awk '{print $2}')" = "$WIT_BINDGEN_VERSION" ]; then
    say "wit-bindgen $WIT_BINDGEN_VERSION already installed"
else
    say "cargo install wit-bindgen-cli $WIT_BINDGEN_VERSION"
    # In a temporary target directory (cargo install's own), not a shared CARGO_TARGET_DIR.
    (cd / && env -u CARGO_TARGET_DIR cargo install wit-bindgen-cli --version "=$WIT_BINDGEN_VERSION" \
        --locked --no-default-features --features c --force)
fi

# --- the reactor adapter -----------------------------------------------------------
if [ -s "$adapter" ]; then
    say "adapter $ADAPTER_VERSION already in $adapter_dir"
else
    say "fetching wasi-preview1-component-adapter-provider $ADAPTER_VERSION"
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    mkdir -p "$tmp/src"
    : >"$tmp/src/lib.rs"
    cat >"$tmp/Cargo.toml" <<EOF
[package]
name = "fetch-adapter"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
wasi-preview1-component-adapter-provider = "=$ADAPTER_VERSION"

[workspace]
EOF
    # `cargo metadata` downloads and unpacks the crate and says where it put it.
    manifest=$(cd "$tmp" && cargo metadata --format-version 1 --manifest-path "$tmp/Cargo.toml" |
        grep -o "\"manifest_path\":\"[^\"]*wasi-preview1-component-adapter-provider-$ADAPTER_VERSION/Cargo.toml\"" |
        head -n 1 | sed 's/^"manifest_path":"//; s/"$//')
    if [ -z "$manifest" ]; then
        say "could not locate the crate wasi-preview1-component-adapter-provider $ADAPTER_VERSION"
        exit 1
    fi
    src="$(dirname "$manifest")/artefacts/wasi_snapshot_preview1.reactor.wasm"
    mkdir -p "$adapter_dir"
    cp "$src" "$adapter.tmp"
    mv "$adapter.tmp" "$adapter"
    say "adapter copied to $adapter"
fi

# --- wasm-component-ld (from the project's Rust toolchain) ---------------------------
sysroot=$(cd "$repo" && rustc --print sysroot)
host=$(cd "$repo" && rustc -vV | sed -n 's/^host: //p')
component_ld="$sysroot/lib/rustlib/$host/bin/wasm-component-ld"
if [ -x "$component_ld" ]; then
    say "wasm-component-ld: $("$component_ld" --version)"
else
    say "wasm-component-ld is missing from $sysroot; install the project's toolchain:"
    say "  rustup toolchain install $channel --profile minimal"
    exit 1
fi
say "done"
