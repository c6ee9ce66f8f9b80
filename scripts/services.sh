#!/usr/bin/env bash
# Start, stop and inspect the RabbitMQ broker and PostgreSQL server that qyzmet
# needs for tests and the demo.
#
#   scripts/services.sh start [--record FILE]   start (or reuse) both services
#   scripts/services.sh stop [rabbitmq|postgres ...]
#   scripts/services.sh status                  exit 0 if both run, 3 otherwise
#   scripts/services.sh env                     print the path of the env file
#   scripts/services.sh import-definitions FILE load RabbitMQ definitions (users, permissions)
#   scripts/services.sh rabbitmqctl ARGS...     run rabbitmqctl against the broker (drills, tests)
#   scripts/services.sh clean                   stop, then delete all data and logs
#
# Two modes, chosen at `start` and remembered in the state dir so `stop` uses
# the same one:
#   docker  a Docker engine answers `docker info`: `docker compose` runs the
#           rabbitmq and postgres services of docker-compose.yml;
#   local   no engine (CI, developer VMs): a private, loopback-only RabbitMQ
#           node and PostgreSQL 15 cluster from the Debian packages, with all
#           data, logs and pid files under the state dir.
# QYZMET_SERVICES_MODE=docker|local overrides the detection.
#
# `start --record FILE` writes to FILE the components (rabbitmq, postgres) that
# this call started, one per line; scripts/with-services.sh uses that to stop
# only what it started. `stop` with no argument stops everything this state
# dir started, and never touches processes it did not start.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
STATE="${QYZMET_STATE_DIR:-$REPO/.qyzmet}"
# Absolute, because paths under it identify our processes (see pid_alive).
STATE="$(realpath -m -- "$STATE")"

# Host ports. Defaults are the standard ports + 1 so that a system-wide
# RabbitMQ/PostgreSQL (or a developer's own) can keep the standard ones.
AMQP_PORT="${QYZMET_AMQP_PORT:-5673}"
MGMT_PORT="${QYZMET_MGMT_PORT:-15673}"
PROM_PORT="${QYZMET_PROM_PORT:-15693}"
DIST_PORT="${QYZMET_DIST_PORT:-25673}"
# A private epmd port too: a system epmd (e.g. one started by a packaged
# RabbitMQ) on 4369 then neither blocks ours nor gets killed by `stop`.
EPMD_PORT="${QYZMET_EPMD_PORT:-4370}"
PG_PORT="${QYZMET_PG_PORT:-5433}"
TIMEOUT="${QYZMET_START_TIMEOUT:-120}"

RABBIT_BIN=/usr/lib/rabbitmq/bin
PG_BIN="${QYZMET_PG_BIN:-/usr/lib/postgresql/15/bin}"
NODE=qyzmet@localhost
# What identifies our processes in /proc/PID/cmdline (see pid_alive). The
# node name is not on the VM's command line, its home directory is.
RMQ_MARK="-home $STATE/rabbitmq "
EPMD_MARK="epmd -address 127.0.0.1 -port "
RMQ_BASE="$STATE/rabbitmq"
COMPOSE_FILE="$REPO/docker-compose.yml"
RECORD=""

log() { printf 'services: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
    exit 2
}

# --- small helpers ---------------------------------------------------------

# shellcheck source=scripts/lib.sh
. "$REPO/scripts/lib.sh"

# stop_pid PIDFILE PATTERN NAME: TERM the process, wait up to 60 s, then KILL.
stop_pid() {
    local file="$1" pattern="$2" name="$3" pid
    if pid_alive "$file" "$pattern"; then
        pid="$(head -n1 "$file")"
        log "stopping $name (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        if ! wait_gone "$pid" 60; then
            log "$name did not stop within 60 s, killing it"
            kill -KILL "$pid" 2>/dev/null || true
            wait_gone "$pid" 10 || die "could not kill $name (pid $pid)"
        fi
    fi
    rm -f "$file"
}

tail_logs() {
    local f
    for f in "$@"; do
        [[ -s "$f" ]] || continue
        printf '\n----- last lines of %s -----\n' "$f" >&2
        tail -n 40 "$f" >&2
    done
}

# Commands of the PostgreSQL cluster run as the postgres user when we are root
# (initdb and postgres refuse to run as root), as ourselves otherwise.
as_pg() {
    if [[ $EUID -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

STARTED_NOW=()
record_started() {
    STARTED_NOW+=("$1")
    [[ -n "$RECORD" ]] && printf '%s\n' "$1" >>"$RECORD"
    return 0
}

# Take an exclusive lock on the state dir so two `start`s (say, two `make
# test` at once) do not both launch a node. Daemons we launch get fd 9 closed
# (9>&-) so they do not hold the lock forever.
lock_state() {
    mkdir -p "$STATE"
    exec 9>"$STATE/.lock"
    flock -w "$((TIMEOUT + 60))" 9 || die "timed out waiting for the lock on $STATE"
}

mode() {
    if [[ -s "$STATE/mode" ]]; then cat "$STATE/mode"; return; fi
    case "${QYZMET_SERVICES_MODE:-auto}" in
        docker | local) printf '%s\n' "$QYZMET_SERVICES_MODE" ;;
        auto)
            # `docker info` fails fast without an engine, but bound it anyway
            # in case the socket exists and nobody answers.
            if command -v docker >/dev/null && timeout 15 docker info >/dev/null 2>&1; then
                echo docker
            else
                echo local
            fi
            ;;
        *) die "QYZMET_SERVICES_MODE must be docker, local or auto" ;;
    esac
}

write_env() {
    local amqp="$1" mgmt="$2" pg="$3" tmp
    local amqp_url="amqp://guest:guest@127.0.0.1:$amqp/%2f"
    local mgmt_url="http://guest:guest@127.0.0.1:$mgmt"
    tmp="$(mktemp "$STATE/env.XXXXXX")"
    cat >"$tmp" <<EOF
# Written by scripts/services.sh start; source it: . "$STATE/env"
export QYZMET_AMQP_URL='$amqp_url'
export QYZMET_DATABASE_URL='postgres://postgres@127.0.0.1:$pg/qyzmet'
export QYZMET_AMQP_MANAGEMENT_URL='$mgmt_url'
export TEST_AMQP_URL='$amqp_url'
export TEST_DATABASE_URL='postgres://postgres@127.0.0.1:$pg/postgres'
export TEST_AMQP_MANAGEMENT_URL='$mgmt_url'
export TEST_RABBITMQCTL='$REPO/scripts/services.sh rabbitmqctl'
EOF
    chmod 644 "$tmp"
    mv -f "$tmp" "$STATE/env"
}

create_app_db() {
    local port="$1"
    local psql=("$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1)
    if [[ "$("${psql[@]}" -tAc "SELECT 1 FROM pg_database WHERE datname = 'qyzmet'")" != 1 ]]; then
        log "creating database qyzmet"
        "${psql[@]}" -c 'CREATE DATABASE qyzmet'
    fi
}

# --- local mode: RabbitMQ ---------------------------------------------------

# Environment shared by rabbitmq-server and rabbitmqctl. HOME points at the
# node's base dir so both read the same private .erlang.cookie; the
# /usr/sbin wrappers are avoided because as root they switch to the rabbitmq
# user and its cookie ("Invalid challenge reply").
rabbit_env() {
    export HOME="$RMQ_BASE"
    export RABBITMQ_CONF_ENV_FILE=/dev/null
    export RABBITMQ_NODENAME="$NODE"
    export RABBITMQ_CONFIG_FILE="$RMQ_BASE/rabbitmq.conf"
    export RABBITMQ_ENABLED_PLUGINS_FILE="$RMQ_BASE/enabled_plugins"
    export RABBITMQ_MNESIA_BASE="$RMQ_BASE/mnesia"
    export RABBITMQ_LOG_BASE="$RMQ_BASE/log"
    export RABBITMQ_PID_FILE="$RMQ_BASE/rabbit.pid"
    export RABBITMQ_DIST_PORT="$DIST_PORT"
    # The broker shares the machine's cores with PostgreSQL and the workers here, so its
    # schedulers do not spin while waiting for work (RabbitMQ's runtime guide: scheduler busy
    # waiting); QYZMET_RABBIT_ERL_EXTRA='' keeps the runtime's default.
    export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1} ${QYZMET_RABBIT_ERL_EXTRA-+sbwt none +sbwtdcpu none +sbwtdio none}"
    export RABBITMQ_CTL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
    export ERL_EPMD_ADDRESS=127.0.0.1
    export ERL_EPMD_PORT="$EPMD_PORT"
}

rabbit_running() {
    pid_alive "$RMQ_BASE/rabbit.pid" "$RMQ_MARK" && port_open "$AMQP_PORT"
}

start_epmd() {
    if pid_alive "$STATE/epmd.pid" "$EPMD_MARK"; then return; fi
    port_open "$EPMD_PORT" && die "port $EPMD_PORT (epmd) is taken by a process we did not start; set QYZMET_EPMD_PORT"
    # Not `epmd -daemon`: that forks and we would not know its pid. setsid
    # keeps a Ctrl-C in the calling terminal away from it.
    setsid epmd -address 127.0.0.1 -port "$EPMD_PORT" </dev/null >>"$STATE/epmd.log" 2>&1 9>&- &
    echo $! >"$STATE/epmd.pid"
    local i
    for ((i = 0; i < 50; i++)); do
        port_open "$EPMD_PORT" && return
        sleep 0.1
    done
    tail_logs "$STATE/epmd.log"
    die "epmd did not listen on 127.0.0.1:$EPMD_PORT"
}

start_rabbit() {
    if rabbit_running; then
        log "rabbitmq: reusing node $NODE (pid $(cat "$RMQ_BASE/rabbit.pid")) on 127.0.0.1:$AMQP_PORT"
        return
    fi
    if pid_alive "$RMQ_BASE/rabbit.pid" "$RMQ_MARK"; then
        die "rabbitmq node $NODE runs (pid $(cat "$RMQ_BASE/rabbit.pid")) but 127.0.0.1:$AMQP_PORT does not answer; run '$0 stop' first"
    fi
    local p
    for p in "$AMQP_PORT" "$MGMT_PORT" "$PROM_PORT" "$DIST_PORT"; do
        port_open "$p" && die "port $p is already in use by a process we did not start"
    done

    mkdir -p "$RMQ_BASE/log" "$RMQ_BASE/mnesia"
    rm -f "$RMQ_BASE/rabbit.pid"
    if [[ ! -s "$RMQ_BASE/.erlang.cookie" ]]; then
        (umask 077 && head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' >"$RMQ_BASE/.erlang.cookie")
        chmod 400 "$RMQ_BASE/.erlang.cookie"
    fi
    # Rewritten on every start so port changes take effect. consumer_timeout
    # is left at its default on purpose (the code must cope with it).
    cat >"$RMQ_BASE/rabbitmq.conf" <<EOF
listeners.tcp.1 = 127.0.0.1:$AMQP_PORT
management.tcp.ip = 127.0.0.1
management.tcp.port = $MGMT_PORT
prometheus.tcp.ip = 127.0.0.1
prometheus.tcp.port = $PROM_PORT
log.console = false
log.file.level = info
EOF
    echo '[rabbitmq_management,rabbitmq_prometheus].' >"$RMQ_BASE/enabled_plugins"

    start_epmd
    log "rabbitmq: starting node $NODE on 127.0.0.1:$AMQP_PORT (management $MGMT_PORT)"
    (
        rabbit_env
        cd "$RMQ_BASE"
        exec setsid "$RABBIT_BIN/rabbitmq-server" </dev/null >>"$RMQ_BASE/stdout.log" 2>&1 9>&-
    ) &
    echo $! >"$RMQ_BASE/launcher.pid"
    record_started rabbitmq
}

wait_rabbit() {
    local deadline=$((SECONDS + TIMEOUT))
    local logs=("$RMQ_BASE/stdout.log" "$RMQ_BASE/log/$NODE.log")
    until (rabbit_env && "$RABBIT_BIN/rabbitmqctl" -q await_startup --timeout 2) >/dev/null 2>&1; do
        if ! pid_alive "$RMQ_BASE/launcher.pid" rabbitmq-server && ! pid_alive "$RMQ_BASE/rabbit.pid" "$RMQ_MARK"; then
            tail_logs "${logs[@]}"
            die "rabbitmq node $NODE exited during startup (logs above, under $RMQ_BASE)"
        fi
        if ((SECONDS >= deadline)); then
            tail_logs "${logs[@]}"
            die "rabbitmq node $NODE not ready after ${TIMEOUT}s (logs above, under $RMQ_BASE)"
        fi
        sleep 0.5
    done
    # await_startup can return before the listeners are bound on a busy box.
    until port_open "$AMQP_PORT" && port_open "$MGMT_PORT"; do
        ((SECONDS < deadline)) || { tail_logs "${logs[@]}"; die "rabbitmq ports $AMQP_PORT/$MGMT_PORT not open after ${TIMEOUT}s"; }
        sleep 0.2
    done
}

# Stopping RabbitMQ is split in two so that `stop` can stop PostgreSQL while
# the node shuts down (several seconds). The VM's pid is read before the
# signal: the node deletes its pid file early in its shutdown.
RABBIT_VM_PID=""
RABBIT_LAUNCHER_PID=""
signal_rabbit() {
    if pid_alive "$RMQ_BASE/rabbit.pid" "$RMQ_MARK"; then
        RABBIT_VM_PID="$(head -n1 "$RMQ_BASE/rabbit.pid")"
    fi
    if pid_alive "$RMQ_BASE/launcher.pid" rabbitmq-server; then
        RABBIT_LAUNCHER_PID="$(head -n1 "$RMQ_BASE/launcher.pid")"
    fi
    if [[ -n "$RABBIT_VM_PID" ]]; then
        log "stopping rabbitmq node $NODE (pid $RABBIT_VM_PID)"
        # TERM to the VM itself: a clean shutdown that keeps durable data.
        kill -TERM "$RABBIT_VM_PID" 2>/dev/null || true
    elif [[ -n "$RABBIT_LAUNCHER_PID" ]]; then
        # Still booting (no pid file yet): the launcher forwards TERM.
        log "stopping rabbitmq launcher (pid $RABBIT_LAUNCHER_PID)"
        kill -TERM "$RABBIT_LAUNCHER_PID" 2>/dev/null || true
    fi
}

finish_stop_rabbit() {
    local pid
    for pid in $RABBIT_VM_PID $RABBIT_LAUNCHER_PID; do
        if ! wait_gone "$pid" 60; then
            log "rabbitmq process $pid did not stop within 60 s, killing it"
            kill -KILL "$pid" 2>/dev/null || true
            wait_gone "$pid" 10 || die "could not kill rabbitmq process $pid"
        fi
    done
    rm -f "$RMQ_BASE/rabbit.pid" "$RMQ_BASE/launcher.pid"
    # Our epmd goes with our node (it serves nothing else).
    stop_pid "$STATE/epmd.pid" "$EPMD_MARK" epmd
}

# --- local mode: PostgreSQL -------------------------------------------------

# The cluster lives under the state dir when the postgres user can reach it,
# otherwise (a repo under a private home directory) under /tmp, in a dir named
# after the state dir. The choice is remembered in $STATE/postgres.dir.
pg_dir() {
    local dir
    if [[ -s "$STATE/postgres.dir" ]]; then
        dir="$(cat "$STATE/postgres.dir")"
        # A /tmp dir may have been cleaned by a reboot: make it again.
        [[ -d "$dir" ]] || install -d -m 700 "$dir"
        [[ $EUID -ne 0 ]] || chown postgres: "$dir"
        printf '%s\n' "$dir"
        return
    fi
    dir="$STATE/postgres"
    mkdir -p "$dir"
    if [[ $EUID -eq 0 ]]; then
        chown postgres: "$dir"
        if ! runuser -u postgres -- test -w "$dir"; then
            rmdir "$dir" 2>/dev/null || true
            dir="/tmp/qyzmet-pg-$(printf '%s' "$STATE" | sha256sum | cut -c1-12)"
            install -d -o postgres -g postgres -m 700 "$dir"
        fi
    fi
    printf '%s\n' "$dir" >"$STATE/postgres.dir"
    printf '%s\n' "$dir"
}

pg_running() {
    local dir="$1"
    pid_alive "$dir/data/postmaster.pid" "-D $dir/data " && "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"
}

start_pg() {
    local dir data
    dir="$(pg_dir)"
    data="$dir/data"
    if pg_running "$dir"; then
        log "postgres: reusing cluster $data (pid $(head -n1 "$data/postmaster.pid")) on 127.0.0.1:$PG_PORT"
        return
    fi
    if pid_alive "$data/postmaster.pid" "-D $data "; then
        die "postgres runs on $data but 127.0.0.1:$PG_PORT does not answer; run '$0 stop' first"
    fi
    port_open "$PG_PORT" && die "port $PG_PORT is already in use by a process we did not start"

    if [[ ! -s "$data/PG_VERSION" ]]; then
        log "postgres: initdb $data"
        rm -rf "$data"
        as_pg "$PG_BIN/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --no-locale \
            >"$dir/initdb.log" 2>&1 9>&- || { tail_logs "$dir/initdb.log"; die "initdb failed"; }
    fi
    log "postgres: starting cluster $data on 127.0.0.1:$PG_PORT"
    # TCP on loopback only and no Unix socket, so nothing clashes with a
    # system cluster's /var/run/postgresql. pg_ctl puts the server in its own
    # session and sends its output to the log.
    if ! as_pg "$PG_BIN/pg_ctl" -D "$data" -l "$dir/postgres.log" -w -t "$TIMEOUT" \
        -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -c unix_socket_directories='' -c max_connections=200 -c fsync=on" \
        start </dev/null >"$dir/pg_ctl.log" 2>&1 9>&-; then
        tail_logs "$dir/pg_ctl.log" "$dir/postgres.log"
        die "postgres did not start (logs above, under $dir)"
    fi
    head -n1 "$data/postmaster.pid" >"$STATE/postgres.pid"
    record_started postgres
}

wait_pg() {
    local dir deadline=$((SECONDS + TIMEOUT))
    dir="$(pg_dir)"
    until "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; do
        if ((SECONDS >= deadline)); then
            tail_logs "$dir/postgres.log"
            die "postgres not ready on 127.0.0.1:$PG_PORT after ${TIMEOUT}s"
        fi
        sleep 0.2
    done
}

stop_pg() {
    local dir data
    [[ -s "$STATE/postgres.dir" ]] || return 0
    dir="$(pg_dir)"
    data="$dir/data"
    if pid_alive "$data/postmaster.pid" "-D $data "; then
        log "stopping postgres (pid $(head -n1 "$data/postmaster.pid"))"
        as_pg "$PG_BIN/pg_ctl" -D "$data" -m fast -w -t 60 stop >/dev/null 2>&1 9>&- ||
            stop_pid "$data/postmaster.pid" "-D $data " postgres
    fi
    rm -f "$STATE/postgres.pid"
}

install_packages() {
    local pkgs=()
    [[ -x "$RABBIT_BIN/rabbitmq-server" ]] || pkgs+=(rabbitmq-server)
    [[ -x "$PG_BIN/pg_ctl" ]] || pkgs+=(postgresql)
    ((${#pkgs[@]})) || return 0
    log "installing ${pkgs[*]} with apt-get"
    # The packages' postinst does not start system services when
    # policy-rc.d forbids it (CI); where it does, their standard ports and
    # epmd port do not collide with ours.
    local apt=(env DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=300)
    as_root "${apt[@]}" update </dev/null 9>&-
    as_root "${apt[@]}" install -y --no-install-recommends "${pkgs[@]}" </dev/null 9>&-
}

# --- docker mode -------------------------------------------------------------

compose() { docker compose -f "$COMPOSE_FILE" "$@"; }

docker_port() {
    # Actual host port of a service's container port, e.g. 127.0.0.1:5673.
    local hp
    hp="$(compose port "$1" "$2" 2>/dev/null | head -n1)"
    [[ -n "$hp" ]] && printf '%s\n' "${hp##*:}" || printf '%s\n' "$3"
}

docker_start() {
    local running svc
    running="$(compose ps --status running --services 2>/dev/null || true)"
    for svc in rabbitmq postgres; do
        if grep -qx "$svc" <<<"$running"; then log "$svc: reusing running container"
        else record_started "$svc"
        fi
    done
    log "docker compose up rabbitmq postgres"
    timeout "$((TIMEOUT + 600))" docker compose -f "$COMPOSE_FILE" up -d --wait --wait-timeout "$TIMEOUT" rabbitmq postgres 9>&- ||
        { compose logs --tail 40 rabbitmq postgres >&2 || true; die "docker services did not become healthy"; }
    AMQP_PORT="$(docker_port rabbitmq 5672 "$AMQP_PORT")"
    MGMT_PORT="$(docker_port rabbitmq 15672 "$MGMT_PORT")"
    PG_PORT="$(docker_port postgres 5432 "$PG_PORT")"
    # POSTGRES_DB already creates it; this is for a volume from an older setup.
    compose exec -T postgres psql -U postgres -d postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname = 'qyzmet'" | grep -q 1 ||
        compose exec -T postgres psql -U postgres -d postgres -c 'CREATE DATABASE qyzmet'
}

# --- commands ----------------------------------------------------------------

cmd_start() {
    RECORD=""
    while (($#)); do
        case "$1" in
            --record) RECORD="${2:?--record needs a file}"; shift 2 ;;
            *) usage ;;
        esac
    done
    lock_state
    # A failed start stops what it launched itself, so it leaves nothing
    # half-running behind (with-services.sh then has nothing left to stop).
    trap 'start_failed $?' EXIT
    local t0=$SECONDS m
    m="$(mode)"
    # Remembered before anything starts, so that `stop` after a failed start
    # still finds what was launched.
    printf '%s\n' "$m" >"$STATE/mode"
    if [[ "$m" == docker ]]; then
        docker_start
    else
        install_packages
        # Both start in parallel; RabbitMQ is the slow one (~8 s).
        start_rabbit
        start_pg
        wait_pg
        create_app_db "$PG_PORT"
        wait_rabbit
    fi
    write_env "$AMQP_PORT" "$MGMT_PORT" "$PG_PORT"
    trap - EXIT
    log "ready in $((SECONDS - t0))s ($m mode); env: $STATE/env"
}

start_failed() {
    local rc="$1"
    trap - EXIT
    ((rc != 0)) || return 0
    if ((${#STARTED_NOW[@]})); then
        log "start failed: stopping what it started (${STARTED_NOW[*]})"
        do_stop "${STARTED_NOW[@]}" || true
    fi
    exit "$rc"
}

cmd_stop() {
    local want=("$@") c
    ((${#want[@]})) || want=(rabbitmq postgres)
    for c in "${want[@]}"; do
        [[ "$c" == rabbitmq || "$c" == postgres ]] || die "unknown component '$c' (rabbitmq, postgres)"
    done
    [[ -d "$STATE" ]] || { log "nothing to stop ($STATE does not exist)"; return 0; }
    lock_state
    do_stop "${want[@]}"
}

# do_stop COMPONENT...: the work of `stop`, with the lock already held.
do_stop() {
    local want=("$@") t0=$SECONDS
    # No mode file: never started, or already stopped. The local stop is
    # pid-based and does nothing when nothing of ours runs.
    if [[ "$(cat "$STATE/mode" 2>/dev/null)" == docker ]]; then
        compose stop "${want[@]}"
    else
        # RabbitMQ takes several seconds to shut down: signal it first, stop
        # PostgreSQL meanwhile, then wait for RabbitMQ.
        [[ " ${want[*]} " != *" rabbitmq "* ]] || signal_rabbit
        [[ " ${want[*]} " != *" postgres "* ]] || stop_pg
        [[ " ${want[*]} " != *" rabbitmq "* ]] || finish_stop_rabbit
    fi
    # Forget the mode once everything is down, so the next start detects again.
    if ! local_any_running; then rm -f "$STATE/mode"; fi
    log "stopped ${want[*]} in $((SECONDS - t0))s"
}

local_any_running() {
    [[ "$(cat "$STATE/mode" 2>/dev/null)" == docker ]] &&
        [[ -n "$(compose ps --status running --services 2>/dev/null)" ]] && return 0
    pid_alive "$RMQ_BASE/rabbit.pid" "$RMQ_MARK" && return 0
    pid_alive "$RMQ_BASE/launcher.pid" rabbitmq-server && return 0
    pid_alive "$STATE/epmd.pid" "$EPMD_MARK" && return 0
    [[ -s "$STATE/postgres.dir" ]] && pid_alive "$(cat "$STATE/postgres.dir")/data/postmaster.pid" "-D $(cat "$STATE/postgres.dir")/data " && return 0
    return 1
}

cmd_status() {
    local m ok=0
    if [[ ! -s "$STATE/mode" ]]; then
        echo "not started (state dir: $STATE)"
        if local_any_running; then echo "warning: processes from this state dir still run"; fi
        return 3
    fi
    m="$(cat "$STATE/mode")"
    echo "mode: $m; state dir: $STATE"
    if [[ "$m" == docker ]]; then
        compose ps rabbitmq postgres
        [[ "$(compose ps --status running --services rabbitmq postgres 2>/dev/null | wc -l)" -eq 2 ]] || ok=3
    else
        if rabbit_running; then
            echo "rabbitmq: running, node $NODE pid $(cat "$RMQ_BASE/rabbit.pid"), amqp 127.0.0.1:$AMQP_PORT, management 127.0.0.1:$MGMT_PORT"
        else
            echo "rabbitmq: not running"; ok=3
        fi
        if pid_alive "$STATE/epmd.pid" "$EPMD_MARK"; then
            echo "epmd: running, pid $(cat "$STATE/epmd.pid"), 127.0.0.1:$EPMD_PORT"
        else
            echo "epmd: not running"
        fi
        local dir
        dir="$(cat "$STATE/postgres.dir" 2>/dev/null || true)"
        if [[ -n "$dir" ]] && pg_running "$dir"; then
            echo "postgres: running, pid $(head -n1 "$dir/data/postmaster.pid"), 127.0.0.1:$PG_PORT, data $dir/data"
        else
            echo "postgres: not running"; ok=3
        fi
    fi
    [[ -s "$STATE/env" ]] && echo "env: $STATE/env"
    return "$ok"
}

# Durable queues, messages and databases survive stop/start; this forgets them.
# In Docker mode the data is in the compose project's named volumes, so this
# is `docker compose down -v` (workers included).
cmd_clean() {
    [[ -d "$STATE" ]] || return 0
    if [[ "$(cat "$STATE/mode" 2>/dev/null)" == docker ]]; then
        compose down -v --remove-orphans
    else
        cmd_stop
    fi
    local dir
    dir="$(cat "$STATE/postgres.dir" 2>/dev/null || true)"
    # Only the /tmp fallback lives outside the state dir.
    [[ "$dir" != /tmp/qyzmet-pg-* ]] || rm -rf -- "$dir"
    rm -rf -- "$STATE"
    log "removed $STATE"
}

cmd_env() {
    echo "$STATE/env"
    [[ -s "$STATE/env" ]] || { log "$STATE/env does not exist yet: run '$0 start'"; return 1; }
}

# Loads RabbitMQ definitions (`qyzmet systems definitions`: users, permissions, topic
# permissions, queues) into the running broker; idempotent.
cmd_import_definitions() {
    local file="${1:-}"
    [[ -s "$file" ]] || die "usage: $0 import-definitions FILE (a non-empty definitions JSON file)"
    if [[ "$(mode)" == docker ]]; then
        compose cp "$file" rabbitmq:/tmp/qyzmet-definitions.json
        compose exec -T rabbitmq rabbitmqctl -q import_definitions /tmp/qyzmet-definitions.json
        compose exec -T rabbitmq rm -f /tmp/qyzmet-definitions.json
    else
        rabbit_running || die "rabbitmq is not running: run '$0 start' first"
        (rabbit_env && "$RABBIT_BIN/rabbitmqctl" -q import_definitions "$(realpath -- "$file")")
    fi
    log "rabbitmq: definitions imported from $file"
}

# rabbitmqctl against our broker, whichever mode started it (tests raise a memory alarm).
cmd_rabbitmqctl() {
    if [[ "$(mode)" == docker ]]; then
        compose exec -T rabbitmq rabbitmqctl "$@"
    else
        # The node, not its AMQP port: after `rabbitmqctl stop_app` only the node is up.
        pid_alive "$RMQ_BASE/rabbit.pid" "$RMQ_MARK" || die "rabbitmq is not running: run '$0 start' first"
        (rabbit_env && "$RABBIT_BIN/rabbitmqctl" "$@")
    fi
}

case "${1:-}" in
    start) shift; cmd_start "$@" ;;
    import-definitions) shift; cmd_import_definitions "$@" ;;
    rabbitmqctl) shift; cmd_rabbitmqctl "$@" ;;
    stop) shift; cmd_stop "$@" ;;
    status) cmd_status ;;
    env) cmd_env ;;
    clean) cmd_clean ;;
    *) usage ;;
esac
