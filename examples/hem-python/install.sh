#!/usr/bin/env bash
# Installs componentize-py (from PyPI) at the version this example is tested with.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
version="$(cat "$here/componentize-py.version")"
if [ "$(componentize-py --version 2>/dev/null)" != "componentize-py $version" ]; then
    python3 -m pip install --quiet --disable-pip-version-check "componentize-py==$version"
fi
