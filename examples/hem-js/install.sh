#!/usr/bin/env bash
# Installs what the JavaScript IBT example needs: its node_modules, exactly as
# package-lock.json pins them (`npm ci`). Idempotent: when the installed tree already
# matches the lockfile it does nothing. Works from any directory.
#
#   examples/hem-js/install.sh            # install if needed
#   examples/hem-js/install.sh --force    # reinstall
#
# Exits 3 when Node.js or npm is missing (the project's "toolchain missing").
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

for tool in node npm; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "hem-js: $tool is not on PATH; install Node.js 18+ and npm, e.g.: apt-get install nodejs npm" >&2
        exit 3
    fi
done

# The tree is current when every package that package-lock.json pins is installed at its
# version (optional ones, such as other platforms' binaries, may be absent) and the lockfile
# was made from this package.json. (`npm ls` can't tell: it flags an optional peer-dependency
# range of jco that npm itself resolves that way.)
if [ "${1:-}" != "--force" ] && (cd "$here" && node -e '
    const fs = require("fs");
    const lock = JSON.parse(fs.readFileSync("package-lock.json", "utf8")).packages;
    const pkg = JSON.parse(fs.readFileSync("package.json", "utf8"));
    if (JSON.stringify(lock[""].dependencies) !== JSON.stringify(pkg.dependencies)) process.exit(1);
    for (const [path, meta] of Object.entries(lock)) {
        if (path === "") continue;
        let installed;
        try {
            installed = JSON.parse(fs.readFileSync(path + "/package.json", "utf8")).version;
        } catch {
            if (meta.optional) continue;
            process.exit(1);
        }
        if (installed !== meta.version) process.exit(1);
    }
' 2>/dev/null); then
    echo "hem-js: node_modules is up to date"
    exit 0
fi

npm ci --prefix "$here" --no-audit --no-fund
