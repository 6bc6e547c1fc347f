#!/usr/bin/env bash
# Builds the Python IBT plugin into OUT_DIR/hem-python.wasm with componentize-py.
# Exit code 3: a tool is missing (the message says how to install it).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:?usage: build.sh OUT_DIR}"
version="$(cat "$here/componentize-py.version")"
if ! command -v componentize-py >/dev/null 2>&1; then
    echo "componentize-py is missing: install it with: pip install componentize-py==$version" >&2
    exit 3
fi
mkdir -p "$out/hem-python-src"
# Build from a copy, so that Python's bytecode caches land in OUT_DIR, not in the source.
cp "$here/ibt.py" "$out/hem-python-src/"
cd "$out/hem-python-src"
componentize-py -d "$here/../../wit" -w hard-example-miner componentize ibt -o "$out/hem-python.wasm"
