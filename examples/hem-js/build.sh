#!/usr/bin/env bash
# Builds the JavaScript IBT plugin into a WebAssembly component: OUT_DIR/hem-js.wasm.
#
#   examples/hem-js/build.sh OUT_DIR
#
# Needs Node.js (>= 18) and this example's node_modules (`npm ci --prefix examples/hem-js`,
# or examples/hem-js/install.sh). Exits 3 when one of them is missing, saying what to run;
# any other failure exits non-zero but not 3. Works from any directory; intermediate files
# go only into OUT_DIR.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
wit="$root/wit"
cli="$here/node_modules/@bytecodealliance/componentize-js/src/cli.js"

if [ "$#" -ne 1 ] || [ -z "$1" ]; then
    echo "usage: $0 OUT_DIR" >&2
    exit 2
fi

missing() {
    echo "hem-js: $1" >&2
    echo "hem-js: install it with: $2" >&2
    exit 3
}

if ! command -v node >/dev/null 2>&1; then
    missing "Node.js (node, version 18 or later) is not on PATH" \
        "apt-get install nodejs npm   (then: npm ci --prefix examples/hem-js)"
fi
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 18 ]; then
    missing "Node.js $(node --version) is too old: componentize-js needs 18 or later" \
        "a Node.js 18+ package (Debian 13's nodejs is 20), then: npm ci --prefix examples/hem-js"
fi

# The pinned componentize-js and its platform binary (wizer) must be installed.
install_cmd="npm ci --prefix examples/hem-js   (from the repository root; or: bash examples/hem-js/install.sh)"
if ! command -v npm >/dev/null 2>&1; then
    install_cmd="apt-get install npm, then: $install_cmd"
fi
if [ ! -f "$cli" ]; then
    missing "node_modules of examples/hem-js are not installed ($cli is missing)" "$install_cmd"
fi
if ! problem="$(cd "$here" && node --input-type=module -e '
    import { readFileSync } from "node:fs";
    const want = JSON.parse(readFileSync("package.json", "utf8")).dependencies["@bytecodealliance/componentize-js"];
    const have = JSON.parse(readFileSync("node_modules/@bytecodealliance/componentize-js/package.json", "utf8")).version;
    if (have !== want) {
        console.log(`componentize-js ${have} is installed, package.json pins ${want}`);
        process.exit(1);
    }
    // Loading it also loads what it needs at build time (preview2-shim, jco, wizer).
    for (const name of ["@bytecodealliance/componentize-js", "@bytecodealliance/wizer"]) {
        try {
            await import(name);
        } catch (e) {
            console.log(`${name} does not load: ${e.message.split("\n")[0]}`);
            process.exit(1);
        }
    }
' 2>&1)"; then
    missing "${problem:-the installed node_modules of examples/hem-js are incomplete}" "$install_cmd"
fi

mkdir -p "$1"
out="$(cd "$1" && pwd)"
# componentize-js keeps its work directory under the OS temporary directory: keep it in OUT_DIR.
work="$out/.hem-js-build"
rm -rf "$work"
mkdir -p "$work/tmp"
trap 'rm -rf "$work"' EXIT

start=$(date +%s)
# Run from the example's directory so that the source is read through wizer's mapping of it.
# `http` and `fetch-event` are disabled: the component imports no wasi:http. Never `--aot`:
# it downloads a weval binary.
(
    cd "$here"
    TMPDIR="$work/tmp" node "$cli" ibt.js \
        --wit "$wit" \
        --world-name hard-example-miner \
        -d http -d fetch-event \
        -o "$work/hem-js.wasm"
) || {
    rc=$?
    echo "hem-js: componentize-js failed (exit $rc)" >&2
    [ "$rc" -eq 3 ] && rc=1
    exit "$rc"
}

if [ ! -s "$work/hem-js.wasm" ]; then
    echo "hem-js: componentize-js wrote no component" >&2
    exit 1
fi
mv -f "$work/hem-js.wasm" "$out/hem-js.wasm"
echo "hem-js: built $out/hem-js.wasm ($(wc -c <"$out/hem-js.wasm") bytes) in $(( $(date +%s) - start ))s"
