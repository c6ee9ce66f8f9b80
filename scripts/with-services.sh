#!/usr/bin/env bash
# Run a command with RabbitMQ and PostgreSQL available:
#
#   scripts/with-services.sh CMD [ARGS...]
#
# Starts the services (scripts/services.sh start), runs CMD with the env file
# sourced (QYZMET_*_URL, TEST_*_URL), then stops only what this invocation
# started: services that were already running (`make services-up`, another
# shell) are reused and left running. Exits with CMD's exit status; stopping
# happens even when CMD fails or the wrapper is interrupted.
set -euo pipefail

(($#)) || { echo "usage: $0 CMD [ARGS...]" >&2; exit 2; }

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
SERVICES="$HERE/services.sh"

started="$(mktemp "${TMPDIR:-/tmp}/qyzmet-started.XXXXXX")"

# shellcheck disable=SC2317  # invoked by the traps below
cleanup() {
    local rc=$? components=()
    trap - EXIT INT TERM
    mapfile -t components <"$started"
    rm -f "$started"
    if ((${#components[@]})); then
        "$SERVICES" stop "${components[@]}" || echo "with-services: stopping ${components[*]} failed" >&2
    fi
    exit "$rc"
}
# On a signal, exit with the conventional status; the EXIT trap then stops
# the services. (The command, in our process group, gets the signal too.)
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A failed start may still have launched something: the EXIT trap stops it.
"$SERVICES" start --record "$started"

# shellcheck source=/dev/null
. "$("$SERVICES" env)"

# Not `exec`: the trap must run after the command. `|| rc=$?` keeps set -e
# from exiting before we have the status.
rc=0
"$@" || rc=$?
exit "$rc"
