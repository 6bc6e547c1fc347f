#!/usr/bin/env bash
# Builds the C IBT plugin (ibt.c) into a WebAssembly component for the world
# `hard-example-miner` of wit/plugin.wit:
#
#   1. wit-bindgen c      WIT -> hard_example_miner.{h,c} + the component-type object
#   2. clang-19           ibt.c + the bindings -> wasm32-wasi (preview1) objects
#   3. wasm-component-ld  links them against Debian's wasi-libc as a reactor (clang-19
#                         runs it in place of wasm-ld; it calls wasm-ld-19) and turns the
#                         core module into a component, adapting any WASI preview1 imports
#                         to WASI 0.2 with the reactor adapter of
#                         wasi-preview1-component-adapter-provider (pinned)
#
# Usage: examples/hem-c/build.sh OUT_DIR     -> OUT_DIR/hem-c.wasm
# Everything it generates goes under OUT_DIR; the source tree is only read.
# Exit codes: 0 built; 3 a tool is missing (each is named, with the command that installs
# it; examples/hem-c/install.sh installs them all); any other non-zero: the build failed.
set -euo pipefail

WIT_BINDGEN_VERSION=0.61.1
ADAPTER_VERSION=48.0.8

say() { printf 'build.sh: %s\n' "$*" >&2; }

if [ $# -ne 1 ] || [ -z "$1" ]; then
    say "usage: $0 OUT_DIR"
    exit 2
fi

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cargo_home=${CARGO_HOME:-$HOME/.cargo}
cache=${SEDNA_EXAMPLES_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sedna-examples}
adapter="$cache/wasi-preview1-component-adapter-provider-$ADAPTER_VERSION/wasi_snapshot_preview1.reactor.wasm"
target=wasm32-wasi

# ---- find the tools -----------------------------------------------------------------
missing=0
need() { # need WHAT INSTALL-COMMAND
    say "missing: $1"
    say "  install it with: $2"
    missing=1
}

clang=$(command -v clang-19 || true)
if [ -z "$clang" ]; then
    need "clang-19 (the C compiler)" "apt-get install -y clang-19"
else
    if [ ! -x "$("$clang" -print-prog-name=wasm-ld)" ] && ! command -v wasm-ld-19 >/dev/null; then
        need "wasm-ld-19 (the WebAssembly linker)" "apt-get install -y lld-19"
    fi
    if [ ! -f "$("$clang" --target=$target -print-file-name=libc.a)" ] ||
        [ ! -f "$("$clang" --target=$target -print-file-name=crt1-reactor.o)" ]; then
        need "wasi-libc (the wasm32-wasi C library)" "apt-get install -y wasi-libc"
    fi
    if [ ! -f "$("$clang" --target=$target -print-libgcc-file-name)" ]; then
        need "libclang_rt.builtins-wasm32.a (compiler-rt for wasm32)" "apt-get install -y libclang-rt-19-dev-wasm32"
    fi
fi

wit_bindgen=""
for candidate in "$cargo_home/bin/wit-bindgen" "$(command -v wit-bindgen || true)"; do
    if [ -n "$candidate" ] && [ -x "$candidate" ] &&
        [ "$("$candidate" --version 2>/dev/null | awk '{print $2}')" = "$WIT_BINDGEN_VERSION" ]; then
        wit_bindgen=$candidate
        break
    fi
done
if [ -z "$wit_bindgen" ]; then
    need "wit-bindgen $WIT_BINDGEN_VERSION (wit-bindgen-cli)" \
        "cargo install wit-bindgen-cli --version =$WIT_BINDGEN_VERSION --locked --no-default-features --features c --force"
fi

if [ ! -s "$adapter" ]; then
    need "the WASI reactor adapter ($adapter, from the crate wasi-preview1-component-adapter-provider $ADAPTER_VERSION)" \
        "$here/install.sh"
fi

# wasm-component-ld ships with the project's Rust toolchain (rust-toolchain.toml).
component_ld=""
if command -v rustc >/dev/null; then
    sysroot=$(cd "$repo" && rustc --print sysroot 2>/dev/null) || sysroot=""
    host=$(cd "$repo" && rustc -vV 2>/dev/null | sed -n 's/^host: //p') || host=""
    if [ -n "$sysroot" ] && [ -x "$sysroot/lib/rustlib/$host/bin/wasm-component-ld" ]; then
        component_ld="$sysroot/lib/rustlib/$host/bin/wasm-component-ld"
    fi
fi
if [ -z "$component_ld" ]; then
    channel=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' "$repo/rust-toolchain.toml")
    need "wasm-component-ld (part of the project's Rust toolchain $channel)" \
        "rustup toolchain install $channel --profile minimal"
fi

if [ "$missing" -ne 0 ]; then
    say "or install everything at once with: $here/install.sh"
    exit 3
fi

# ---- build --------------------------------------------------------------------------
# A failing step exits 1, never 3 (which means "a tool is missing").
run() { "$@" || { say "failed: $*"; exit 1; }; }

run mkdir -p "$1"
out=$(cd "$1" && pwd)
gen="$out/bindings"
obj="$out/obj"
run rm -rf "$gen" "$obj"
run mkdir -p "$gen" "$obj"

run "$wit_bindgen" c --world hard-example-miner --out-dir "$gen" "$repo/wit" >/dev/null

cflags=(--target=$target -O2 -std=c11 -Wall -Wextra -I "$gen")
run "$clang" "${cflags[@]}" -Werror -c "$here/ibt.c" -o "$obj/ibt.o"
run "$clang" "${cflags[@]}" -c "$gen/hard_example_miner.c" -o "$obj/hard_example_miner.o"

run "$clang" --target=$target -mexec-model=reactor \
    -fuse-ld="$component_ld" \
    -Wl,--wasi-adapter=none \
    -Wl,--adapt="wasi_snapshot_preview1=$adapter" \
    -Wl,--strip-debug \
    "$obj/ibt.o" "$obj/hard_example_miner.o" "$gen/hard_example_miner_component_type.o" \
    -o "$out/hem-c.wasm.tmp"
run mv "$out/hem-c.wasm.tmp" "$out/hem-c.wasm"

say "built $out/hem-c.wasm ($(wc -c <"$out/hem-c.wasm") bytes)"
