#!/usr/bin/env bash
# Validates the AsyncAPI 3.0 document of the external contract (docs/asyncapi.yaml) with the
# official AsyncAPI parser (tools/asyncapi), plus draft-07 checks of its schemas and examples.
#
#   scripts/check-asyncapi.sh [FILE]    FILE defaults to docs/asyncapi.yaml
#
# Installs tools/asyncapi's locked dependencies (`npm ci`) when node_modules is missing or was
# installed from another package-lock.json, then runs the validator. Exits non-zero, listing
# every error, when the document is not valid. Needs Node.js 18 or later and npm; the
# packages come from the npm registry. Install scripts are not run (none is needed, and one
# dependency's is only a telemetry ping).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
TOOL="$REPO/tools/asyncapi"
FILE="${1:-$REPO/docs/asyncapi.yaml}"

die() {
    echo "check-asyncapi: error: $*" >&2
    exit 1
}

command -v node >/dev/null 2>&1 ||
    die "node not found: install Node.js 18 or later (Debian: apt-get install nodejs npm)"
command -v npm >/dev/null 2>&1 ||
    die "npm not found: install npm (Debian: apt-get install npm)"
node_major="$(node -p 'process.versions.node.split(".")[0]')"
((node_major >= 18)) || die "Node.js $(node --version) is too old: the AsyncAPI parser needs 18 or later"
[[ -f "$FILE" ]] || die "no such file: $FILE"

# node_modules is current when it was installed from this very lock file.
lock_sum="$(sha256sum "$TOOL/package-lock.json" | cut -d' ' -f1)"
stamp="$TOOL/node_modules/.qyzmet-lock.sha256"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$lock_sum" ]]; then
    echo "check-asyncapi: installing tools/asyncapi dependencies (npm ci)"
    (cd "$TOOL" && SCARF_ANALYTICS=false npm ci --no-audit --no-fund --ignore-scripts --loglevel=error) ||
        die "npm ci failed in tools/asyncapi"
    echo "$lock_sum" >"$stamp"
fi

exec node "$TOOL/validate.mjs" "$FILE"
