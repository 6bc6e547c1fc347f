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
mkdir -p "$out"
cd "$here"
export PYTHONDONTWRITEBYTECODE=1
componentize-py -d "$here/../../wit" -w hard-example-miner componentize ibt -o "$out/hem-python.wasm"
