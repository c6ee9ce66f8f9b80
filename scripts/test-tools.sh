#!/usr/bin/env bash
# Provides what the test suite needs besides RabbitMQ and PostgreSQL (scripts/services.sh
# provides those), when it is missing, from the Debian packages:
#   chromium, chromium-driver  the console's browser test (tests/it/browser.rs); installed
#   promtool                   scripts/check-deploy.sh; unpacked from the prometheus package
#                              into .qyzmet/tools/bin, not installed: installing the package
#                              would start a Prometheus server on every interface
#   nodejs, npm                scripts/check-asyncapi.sh; installed
# apt-get runs as root, or through sudo. When everything is there, nothing happens.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf 'test-tools: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

TOOLS="$PWD/.qyzmet/tools"
apt=(env DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=300)
updated=0
apt_update() {
    ((updated)) || as_root "${apt[@]}" update </dev/null
    updated=1
}

missing=()
command -v chromium >/dev/null || [[ -n "${QYZMET_CHROMIUM:-}" ]] || missing+=(chromium)
command -v chromedriver >/dev/null || [[ -n "${QYZMET_CHROMEDRIVER:-}" ]] || missing+=(chromium-driver)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if ((${#missing[@]})); then
    log "installing ${missing[*]} with apt-get"
    apt_update
    as_root "${apt[@]}" install -y --no-install-recommends "${missing[@]}" </dev/null
fi

if ! command -v promtool >/dev/null && [[ ! -x "$TOOLS/bin/promtool" ]]; then
    log "unpacking promtool from Debian's prometheus package into $TOOLS/bin"
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    (cd "$tmp" && apt-get -q download prometheus </dev/null) || { apt_update; (cd "$tmp" && apt-get -q download prometheus </dev/null); }
    dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/root"
    install -D -m 755 "$tmp/root/usr/bin/promtool" "$TOOLS/bin/promtool"
    "$TOOLS/bin/promtool" --version | head -n1
fi
