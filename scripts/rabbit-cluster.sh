#!/usr/bin/env bash
# Start, inspect, break and stop a private 3-node RabbitMQ cluster on loopback,
# for failover tests and chaos drills (Docker users: the `cluster` profile of
# docker-compose.yml is the equivalent there).
#
#   scripts/rabbit-cluster.sh start            start (or reuse) the cluster; prints the env file's path
#   scripts/rabbit-cluster.sh stop             TERM every node (KILL after 60 s), then our epmd
#   scripts/rabbit-cluster.sh kill NODE...     SIGKILL a node's Erlang VM (simulates losing the node)
#   scripts/rabbit-cluster.sh restart NODE...  start killed nodes again on their data; they rejoin
#   scripts/rabbit-cluster.sh leader QUEUE [VHOST]
#                                              print the node leading a quorum queue (vhost /)
#   scripts/rabbit-cluster.sh status           nodes and cluster view; exit 0 if all 3 run, 3 otherwise
#   scripts/rabbit-cluster.sh env              print the path of the env file
#   scripts/rabbit-cluster.sh clean            stop, then delete the state dir
#
# NODE is an index (1, 2, 3), a node name (qyzmet-c2@localhost) or its short
# form (qyzmet-c2). Nodes are qyzmet-c1@localhost .. qyzmet-c3@localhost,
# clustered with c1; each has its own base dir (config, mnesia, logs, pid file)
# under the state dir and a copy of one shared Erlang cookie. Everything listens
# on 127.0.0.1 only. The env file exports CLUSTER_AMQP_URLS (space-separated,
# node 1 first), CLUSTER_MGMT_URL (node 1), CLUSTER_MGMT_URLS and CLUSTER_NODES.
#
# Environment (defaults in brackets):
#   QYZMET_CLUSTER_DIR          state dir [$REPO/.qyzmet/cluster]
#   QYZMET_CLUSTER_PORT_BASE    B [5700]; node i (1..3) gets:
#   QYZMET_CLUSTER_AMQP_BASE      AMQP port       AMQP_BASE+i [B]        5701..5703
#   QYZMET_CLUSTER_MGMT_BASE      management port MGMT_BASE+i [B+10000]  15701..15703
#   QYZMET_CLUSTER_DIST_BASE      Erlang dist     DIST_BASE+i [B+20000]  25701..25703
#   QYZMET_CLUSTER_CTL_PORT_MIN   rabbitmqctl's dist ports, 20 from here [B+30010] 35710..35729
#   QYZMET_CLUSTER_EPMD_PORT    our own epmd [B-1300] 4400
#   QYZMET_CLUSTER_NODE_PREFIX  node name prefix [qyzmet-c]
#   QYZMET_START_TIMEOUT        seconds any wait may take [120]
#
# Uses the Debian rabbitmq-server package (3.10 here; installed with apt-get
# when missing) and only features that 4.x has too. A killed node rejoins by
# itself on `restart` while a peer that outlived it still runs; after
# every node went down, restart them together (`restart 1 2 3`) or `start`,
# since a node waits for the peers that stopped after it. `stop` and `kill`
# never touch processes that this state dir did not start.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
DIR="${QYZMET_CLUSTER_DIR:-$REPO/.qyzmet/cluster}"
# Absolute, because paths under it identify our processes (see pid_alive).
DIR="$(realpath -m -- "$DIR")"

N=3
PORT_BASE="${QYZMET_CLUSTER_PORT_BASE:-5700}"
AMQP_BASE="${QYZMET_CLUSTER_AMQP_BASE:-$PORT_BASE}"
MGMT_BASE="${QYZMET_CLUSTER_MGMT_BASE:-$((PORT_BASE + 10000))}"
DIST_BASE="${QYZMET_CLUSTER_DIST_BASE:-$((PORT_BASE + 20000))}"
CTL_PORT_MIN="${QYZMET_CLUSTER_CTL_PORT_MIN:-$((PORT_BASE + 30010))}"
# A private epmd, as in services.sh: neither a system epmd on 4369 nor the one
# of services.sh (4370) blocks ours or gets stopped by `stop`.
EPMD_PORT="${QYZMET_CLUSTER_EPMD_PORT:-$((PORT_BASE - 1300))}"
PREFIX="${QYZMET_CLUSTER_NODE_PREFIX:-qyzmet-c}"
TIMEOUT="${QYZMET_START_TIMEOUT:-120}"

RABBIT_BIN=/usr/lib/rabbitmq/bin
EPMD_MARK="epmd -address 127.0.0.1 -port $EPMD_PORT"
ERL_LOOPBACK="-kernel inet_dist_use_interface {127,0,0,1}"

log() { printf 'rabbit-cluster: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
    exit 2
}

for v in PORT_BASE AMQP_BASE MGMT_BASE DIST_BASE CTL_PORT_MIN EPMD_PORT TIMEOUT; do
    [[ "${!v}" =~ ^[0-9]+$ ]] || die "$v must be a number (got '${!v}')"
done
for p in "$((AMQP_BASE + N))" "$((MGMT_BASE + N))" "$((DIST_BASE + N))" "$((CTL_PORT_MIN + 19))" "$EPMD_PORT"; do
    ((p > 0 && p < 65536)) || die "port $p out of range: check QYZMET_CLUSTER_*PORT*"
done
[[ "$PREFIX" =~ ^[A-Za-z0-9_-]+$ ]] || die "QYZMET_CLUSTER_NODE_PREFIX may hold only letters, digits, _ and -"

# Per-node names, dirs and ports. i is 1..N.
node_name() { printf '%s%s@localhost' "$PREFIX" "$1"; }
node_dir() { printf '%s/c%s' "$DIR" "$1"; }
amqp_port() { echo $((AMQP_BASE + $1)); }
mgmt_port() { echo $((MGMT_BASE + $1)); }
dist_port() { echo $((DIST_BASE + $1)); }
# What identifies node i's VM in /proc/PID/cmdline: erl puts `-home $HOME`
# there, and HOME is the node's own base dir (the node name is not there).
node_mark() { printf -- '-home %s ' "$(node_dir "$1")"; }
node_logs() { printf '%s\n' "$(node_dir "$1")/stdout.log" "$(node_dir "$1")/log/$(node_name "$1").log"; }

# node_index NODE: 1..N from an index, a node name or its short form.
node_index() {
    local a="$1" i
    [[ "$a" =~ ^[1-9]$ ]] && ((a <= N)) && { echo "$a"; return; }
    for ((i = 1; i <= N; i++)); do
        if [[ "$a" == "$(node_name "$i")" || "$a" == "$PREFIX$i" ]]; then echo "$i"; return; fi
    done
    die "unknown node '$a' (1..$N or $(node_name 1) .. $(node_name "$N"))"
}

# --- small helpers (the process helpers are in scripts/lib.sh) ---------------------------------------

# shellcheck source=scripts/lib.sh
. "$REPO/scripts/lib.sh"

tail_logs() {
    local f shown=0
    for f in "$@"; do
        [[ -s "$f" ]] || continue
        printf '\n----- last lines of %s -----\n' "$f" >&2
        tail -n 40 "$f" >&2
        shown=1
    done
    ((shown)) || log "no log output yet in: $*"
}

install_packages() {
    [[ -x "$RABBIT_BIN/rabbitmq-server" ]] && return 0
    log "installing rabbitmq-server with apt-get"
    local apt=(env DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=300)
    as_root "${apt[@]}" update </dev/null 9>&-
    as_root "${apt[@]}" install -y --no-install-recommends rabbitmq-server </dev/null 9>&-
}

# An exclusive lock on the state dir for the commands that start or stop
# something. Daemons we launch get fd 9 closed (9>&-).
lock_state() {
    mkdir -p "$DIR"
    exec 9>"$DIR/.lock"
    flock -w "$((TIMEOUT + 60))" 9 || die "timed out waiting for the lock on $DIR"
}

# --- nodes -------------------------------------------------------------------

# node_env I: the environment of node I's server and of rabbitmqctl aimed at
# it. HOME is the node's base dir, which holds a copy of the cluster's cookie;
# the /usr/sbin wrappers are avoided (as root they switch to the rabbitmq
# user and its cookie).
node_env() {
    local base
    base="$(node_dir "$1")"
    export HOME="$base"
    export RABBITMQ_CONF_ENV_FILE=/dev/null
    export RABBITMQ_NODENAME
    RABBITMQ_NODENAME="$(node_name "$1")"
    export RABBITMQ_CONFIG_FILE="$base/rabbitmq.conf"
    export RABBITMQ_ENABLED_PLUGINS_FILE="$base/enabled_plugins"
    export RABBITMQ_MNESIA_BASE="$base/mnesia"
    export RABBITMQ_LOG_BASE="$base/log"
    export RABBITMQ_PID_FILE="$base/rabbit.pid"
    export RABBITMQ_DIST_PORT
    RABBITMQ_DIST_PORT="$(dist_port "$1")"
    export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="$ERL_LOOPBACK"
    export RABBITMQ_CTL_ERL_ARGS="$ERL_LOOPBACK"
    # rabbitmqctl's own dist port; by default 35672..35682, shared with
    # services.sh's node.
    export RABBITMQ_CTL_DIST_PORT_MIN="$CTL_PORT_MIN"
    export RABBITMQ_CTL_DIST_PORT_MAX="$((CTL_PORT_MIN + 19))"
    export ERL_EPMD_ADDRESS=127.0.0.1
    export ERL_EPMD_PORT="$EPMD_PORT"
}

# ctl SECONDS I ARGS...: rabbitmqctl against node I, bounded in time.
ctl() {
    local t="$1" i="$2"
    shift 2
    (node_env "$i" && exec timeout "$t" "$RABBIT_BIN/rabbitmqctl" "$@")
}

vm_alive() { pid_alive "$(node_dir "$1")/rabbit.pid" "$(node_mark "$1")"; }
launcher_alive() { pid_alive "$(node_dir "$1")/launcher.pid" rabbitmq-server; }
node_running() { vm_alive "$1" && port_open "$(amqp_port "$1")"; }

make_cookie() {
    mkdir -p "$DIR"
    # Marks the dir as ours, for `clean`.
    [[ -e "$DIR/.qyzmet-cluster" ]] || printf 'state dir of scripts/rabbit-cluster.sh\n' >"$DIR/.qyzmet-cluster"
    if [[ ! -s "$DIR/.erlang.cookie" ]]; then
        (umask 077 && head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' >"$DIR/.erlang.cookie")
        chmod 400 "$DIR/.erlang.cookie"
    fi
}

start_epmd() {
    if pid_alive "$DIR/epmd.pid" "$EPMD_MARK"; then return; fi
    port_open "$EPMD_PORT" && die "port $EPMD_PORT (epmd) is taken by a process we did not start; set QYZMET_CLUSTER_EPMD_PORT"
    # Not `epmd -daemon`: that forks and we would not know its pid.
    setsid epmd -address 127.0.0.1 -port "$EPMD_PORT" </dev/null >>"$DIR/epmd.log" 2>&1 9>&- &
    echo $! >"$DIR/epmd.pid"
    EPMD_STARTED=1
    local i
    for ((i = 0; i < 50; i++)); do
        port_open "$EPMD_PORT" && return
        sleep 0.1
    done
    tail_logs "$DIR/epmd.log"
    die "epmd did not listen on 127.0.0.1:$EPMD_PORT"
}

STARTED_NOW=()
EPMD_STARTED=0

# launch_node I: start node I's VM in the background unless it runs.
launch_node() {
    local i="$1" base name p
    base="$(node_dir "$i")"
    name="$(node_name "$i")"
    if node_running "$i"; then
        log "reusing node $name (pid $(head -n1 "$base/rabbit.pid")) on 127.0.0.1:$(amqp_port "$i")"
        return
    fi
    if vm_alive "$i" || launcher_alive "$i"; then
        # Booting (a concurrent caller gave up on it) or wedged: wait_node decides.
        log "node $name is already starting"
        return
    fi
    for p in "$(amqp_port "$i")" "$(mgmt_port "$i")" "$(dist_port "$i")"; do
        port_open "$p" && die "port $p (node $name) is already in use by a process we did not start; set QYZMET_CLUSTER_PORT_BASE"
    done
    mkdir -p "$base/log" "$base/mnesia"
    rm -f "$base/rabbit.pid"
    install -m 400 "$DIR/.erlang.cookie" "$base/.erlang.cookie"
    # Rewritten on every start so that port changes take effect.
    cat >"$base/rabbitmq.conf" <<EOF
listeners.tcp.1 = 127.0.0.1:$(amqp_port "$i")
management.tcp.ip = 127.0.0.1
management.tcp.port = $(mgmt_port "$i")
log.console = false
log.file.level = info
EOF
    echo '[rabbitmq_management].' >"$base/enabled_plugins"
    log "starting node $name on 127.0.0.1:$(amqp_port "$i") (management $(mgmt_port "$i"), dist $(dist_port "$i"))"
    (
        node_env "$i"
        cd "$base"
        exec setsid "$RABBIT_BIN/rabbitmq-server" </dev/null >>"$base/stdout.log" 2>&1 9>&-
    ) &
    echo $! >"$base/launcher.pid"
    STARTED_NOW+=("$i")
}

# wait_node I DEADLINE: node I has booted and its listeners are open.
wait_node() {
    local i="$1" deadline="$2" name logs=()
    name="$(node_name "$i")"
    mapfile -t logs < <(node_logs "$i")
    until ctl 30 "$i" -q await_startup --timeout 2 >/dev/null 2>&1; do
        if ! launcher_alive "$i" && ! vm_alive "$i"; then
            tail_logs "${logs[@]}"
            die "node $name exited during startup (see logs under $(node_dir "$i"))"
        fi
        if ((SECONDS >= deadline)); then
            tail_logs "${logs[@]}"
            die "node $name not ready after ${TIMEOUT}s (see logs under $(node_dir "$i"))"
        fi
        sleep 0.5
    done
    until port_open "$(amqp_port "$i")" && port_open "$(mgmt_port "$i")"; do
        ((SECONDS < deadline)) || { tail_logs "${logs[@]}"; die "node $name: ports $(amqp_port "$i")/$(mgmt_port "$i") not open after ${TIMEOUT}s"; }
        sleep 0.2
    done
}

# json_nodes KEY: node names in the array KEY of cluster_status's JSON (stdin).
json_nodes() {
    grep -o "\"$1\":\[[^]]*\]" | grep -o '"[^"]*@[^"]*"' | tr -d '"' || true
}

# cluster_view I KEY: running_nodes or disk_nodes as node I sees them.
cluster_view() {
    local out
    out="$(ctl 30 "$1" -q cluster_status --formatter json 2>/dev/null)" || return 1
    json_nodes "$2" <<<"$out"
}

all_names() {
    local i
    for ((i = 1; i <= N; i++)); do node_name "$i"; echo; done
}

# wait_cluster I DEADLINE: node I sees all N nodes running.
wait_cluster() {
    local i="$1" deadline="$2" seen
    while :; do
        seen="$(cluster_view "$i" running_nodes | sort || true)"
        [[ "$seen" == "$(all_names | sort)" ]] && return 0
        if ((SECONDS >= deadline)); then
            local j
            for ((j = 1; j <= N; j++)); do tail_logs "$(node_dir "$j")/log/$(node_name "$j").log"; done
            die "cluster not formed after ${TIMEOUT}s; $(node_name "$i") sees running: ${seen//$'\n'/ }"
        fi
        sleep 1
    done
}

# time_left DEADLINE: seconds until DEADLINE, at least 10 (for one CLI call).
time_left() {
    local t=$(($1 - SECONDS))
    echo $((t > 10 ? t : 10))
}

# join_node I DEADLINE: make node I a member of node 1's cluster.
join_node() {
    local i="$1" deadline="$2" name
    name="$(node_name "$i")"
    log "joining $name to $(node_name 1)"
    if ! { ctl "$(time_left "$deadline")" "$i" -q stop_app >/dev/null &&
        ctl "$(time_left "$deadline")" "$i" -q join_cluster "$(node_name 1)" &&
        ctl "$(time_left "$deadline")" "$i" -q start_app >/dev/null; }; then
        local logs=()
        mapfile -t logs < <(node_logs "$i")
        tail_logs "${logs[@]}"
        die "could not join $name to $(node_name 1)"
    fi
    wait_node "$i" "$deadline"
}

# Stopping is split in two so that all nodes shut down at once. The VM's pid
# is read before the signal: the node deletes its pid file early in shutdown.
declare -A STOP_PIDS=()
signal_node() {
    local i="$1" sig="$2" base vm="" launcher=""
    base="$(node_dir "$i")"
    vm_alive "$i" && vm="$(head -n1 "$base/rabbit.pid")"
    launcher_alive "$i" && launcher="$(head -n1 "$base/launcher.pid")"
    if [[ -n "$vm" ]]; then
        log "sending SIG$sig to node $(node_name "$i") (pid $vm)"
        kill "-$sig" "$vm" 2>/dev/null || true
    elif [[ -n "$launcher" ]]; then
        # Still booting (no pid file yet): the launcher forwards TERM.
        log "sending SIG$sig to the launcher of $(node_name "$i") (pid $launcher)"
        kill "-$sig" "$launcher" 2>/dev/null || true
    fi
    STOP_PIDS[$i]="$vm $launcher"
}

finish_node() {
    local i="$1" grace="$2" pid
    for pid in ${STOP_PIDS[$i]:-}; do
        if ! wait_gone "$pid" "$grace"; then
            log "process $pid of $(node_name "$i") did not stop within $grace s, killing it"
            kill -KILL "$pid" 2>/dev/null || true
            wait_gone "$pid" 10 || die "could not kill process $pid of $(node_name "$i")"
        fi
    done
    rm -f "$(node_dir "$i")/rabbit.pid" "$(node_dir "$i")/launcher.pid"
}

stop_epmd() {
    if pid_alive "$DIR/epmd.pid" "$EPMD_MARK"; then
        local pid
        pid="$(head -n1 "$DIR/epmd.pid")"
        log "stopping epmd (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        wait_gone "$pid" 10 || { kill -KILL "$pid" 2>/dev/null || true; wait_gone "$pid" 5 || true; }
    fi
    rm -f "$DIR/epmd.pid"
}

# do_stop I...: TERM the nodes, wait, KILL after 60 s; our epmd goes when no
# node of ours is left.
do_stop() {
    local i
    for i in "$@"; do signal_node "$i" TERM; done
    for i in "$@"; do finish_node "$i" 60; done
    for ((i = 1; i <= N; i++)); do
        if vm_alive "$i" || launcher_alive "$i"; then return 0; fi
    done
    stop_epmd
}

write_env() {
    local i amqp="" mgmt="" nodes="" tmp
    for ((i = 1; i <= N; i++)); do
        amqp+="${amqp:+ }amqp://guest:guest@127.0.0.1:$(amqp_port "$i")/%2f"
        mgmt+="${mgmt:+ }http://guest:guest@127.0.0.1:$(mgmt_port "$i")"
        nodes+="${nodes:+ }$(node_name "$i")"
    done
    tmp="$(mktemp "$DIR/env.XXXXXX")"
    cat >"$tmp" <<EOF
# Written by scripts/rabbit-cluster.sh start; source it: . "$DIR/env"
export CLUSTER_AMQP_URLS='$amqp'
export CLUSTER_MGMT_URL='http://guest:guest@127.0.0.1:$(mgmt_port 1)'
export CLUSTER_MGMT_URLS='$mgmt'
export CLUSTER_NODES='$nodes'
EOF
    chmod 644 "$tmp"
    mv -f "$tmp" "$DIR/env"
}

# --- commands ----------------------------------------------------------------

cmd_start() {
    (($# == 0)) || usage
    lock_state
    # A failed start stops what it launched itself.
    trap 'start_failed $?' EXIT
    local t0=$SECONDS deadline=$((SECONDS + TIMEOUT)) i
    install_packages
    make_cookie
    start_epmd
    # All at once: a node that was clustered waits for its peers at boot.
    for ((i = 1; i <= N; i++)); do launch_node "$i"; done
    for ((i = 1; i <= N; i++)); do wait_node "$i" "$deadline"; done
    local members
    members="$(cluster_view 1 disk_nodes)" || die "cannot read cluster_status of $(node_name 1)"
    for ((i = 2; i <= N; i++)); do
        grep -qxF -- "$(node_name "$i")" <<<"$members" || join_node "$i" "$deadline"
    done
    wait_cluster 1 "$deadline"
    write_env
    trap - EXIT
    log "cluster of $N nodes ready in $((SECONDS - t0))s"
    echo "$DIR/env"
}

start_failed() {
    local rc="$1"
    trap - EXIT
    ((rc != 0)) || return 0
    if ((${#STARTED_NOW[@]})); then
        log "start failed: stopping the nodes it started (${STARTED_NOW[*]})"
        do_stop "${STARTED_NOW[@]}" || true
    elif ((EPMD_STARTED)); then
        do_stop || true
    fi
    exit "$rc"
}

cmd_stop() {
    (($# == 0)) || usage
    [[ -d "$DIR" ]] || { log "nothing to stop ($DIR does not exist)"; return 0; }
    lock_state
    local t0=$SECONDS all=() i
    for ((i = 1; i <= N; i++)); do all+=("$i"); done
    do_stop "${all[@]}"
    log "stopped in $((SECONDS - t0))s"
}

cmd_kill() {
    (($#)) || usage
    local idx=() a i pid
    for a in "$@"; do idx+=("$(node_index "$a")"); done
    lock_state
    for i in "${idx[@]}"; do
        vm_alive "$i" || die "node $(node_name "$i") is not running"
    done
    for i in "${idx[@]}"; do signal_node "$i" KILL; done
    for i in "${idx[@]}"; do
        for pid in ${STOP_PIDS[$i]}; do
            wait_gone "$pid" 10 || die "process $pid of $(node_name "$i") survived SIGKILL"
        done
        log "killed $(node_name "$i")"
    done
}

cmd_restart() {
    (($#)) || usage
    local idx=() a i t0=$SECONDS deadline=$((SECONDS + TIMEOUT))
    for a in "$@"; do idx+=("$(node_index "$a")"); done
    lock_state
    for i in "${idx[@]}"; do
        [[ -d "$(node_dir "$i")/mnesia" ]] || die "node $(node_name "$i") has no data dir: use '$0 start'"
    done
    start_epmd
    for i in "${idx[@]}"; do launch_node "$i"; done
    for i in "${idx[@]}"; do wait_node "$i" "$deadline"; done
    # Back in the cluster: it sees itself among the running nodes with its peers.
    for i in "${idx[@]}"; do
        local seen
        until seen="$(cluster_view "$i" running_nodes)" && grep -qxF -- "$(node_name "$i")" <<<"$seen" &&
            (($(wc -l <<<"$seen") > 1 || N == 1)); do
            ((SECONDS < deadline)) || die "$(node_name "$i") did not rejoin within ${TIMEOUT}s (sees: ${seen//$'\n'/ })"
            sleep 1
        done
        log "$(node_name "$i") is running again; it sees: ${seen//$'\n'/ }"
    done
    log "restarted in $((SECONDS - t0))s"
}

# leader QUEUE [VHOST]: asks each running node in turn, so that it works
# whichever node is down. list_queues' `leader` column is set for quorum
# queues (3.10 and 4.x); it is empty for classic queues.
cmd_leader() {
    (($# >= 1 && $# <= 2)) || usage
    local q="$1" vhost="${2:-/}" i out leader type asked=0
    for ((i = 1; i <= N; i++)); do
        vm_alive "$i" || continue
        asked=1
        out="$(ctl 30 "$i" -q list_queues -p "$vhost" --no-table-headers name type leader 2>/dev/null)" || continue
        if ! leader="$(awk -F'\t' -v q="$q" '$1 == q { print $2 "\t" $3; f = 1 } END { exit !f }' <<<"$out")"; then
            die "no queue '$q' in vhost '$vhost' (asked $(node_name "$i"))"
        fi
        # 3.10 reports a queue whose node is down by its module (rabbit_classic_queue).
        type="${leader%%$'\t'*}"
        type="${type#rabbit_}"
        type="${type%_queue}"
        [[ "$type" == quorum ]] || die "queue '$q' is a $type queue, not a quorum queue"
        leader="${leader#*$'\t'}"
        [[ -n "$leader" ]] || die "queue '$q' has no leader right now (asked $(node_name "$i"))"
        echo "$leader"
        return 0
    done
    ((asked)) || die "no node of the cluster is running"
    die "no running node answered list_queues"
}

cmd_status() {
    local i ok=0 up=() base
    echo "state dir: $DIR"
    for ((i = 1; i <= N; i++)); do
        base="$(node_dir "$i")"
        if node_running "$i"; then
            echo "$(node_name "$i"): running, pid $(head -n1 "$base/rabbit.pid"), amqp 127.0.0.1:$(amqp_port "$i"), management 127.0.0.1:$(mgmt_port "$i")"
            up+=("$i")
        elif vm_alive "$i" || launcher_alive "$i"; then
            echo "$(node_name "$i"): starting or stopping"; ok=3
        else
            echo "$(node_name "$i"): not running"; ok=3
        fi
    done
    if pid_alive "$DIR/epmd.pid" "$EPMD_MARK"; then
        echo "epmd: running, pid $(head -n1 "$DIR/epmd.pid"), 127.0.0.1:$EPMD_PORT"
    else
        echo "epmd: not running"
    fi
    if ((${#up[@]})); then
        local seen
        if seen="$(cluster_view "${up[0]}" running_nodes)"; then
            echo "running nodes as $(node_name "${up[0]}") sees them ($(grep -c . <<<"$seen" || true)): ${seen//$'\n'/ }"
            [[ "$(sort <<<"$seen")" == "$(all_names | sort)" ]] || ok=3
        else
            echo "cluster_status of $(node_name "${up[0]}") failed"; ok=3
        fi
    fi
    [[ -s "$DIR/env" ]] && echo "env: $DIR/env"
    return "$ok"
}

cmd_env() {
    echo "$DIR/env"
    [[ -s "$DIR/env" ]] || { log "$DIR/env does not exist yet: run '$0 start'"; return 1; }
}

cmd_clean() {
    [[ -d "$DIR" ]] || return 0
    [[ -e "$DIR/.qyzmet-cluster" ]] || die "$DIR was not made by this script (no .qyzmet-cluster in it); not deleting it"
    cmd_stop
    local i
    for ((i = 1; i <= N; i++)); do
        if vm_alive "$i" || launcher_alive "$i"; then die "node $(node_name "$i") still runs; not deleting $DIR"; fi
    done
    rm -rf -- "$DIR"
    log "removed $DIR"
}

case "${1:-}" in
    start) shift; cmd_start "$@" ;;
    stop) shift; cmd_stop "$@" ;;
    kill) shift; cmd_kill "$@" ;;
    restart) shift; cmd_restart "$@" ;;
    leader) shift; cmd_leader "$@" ;;
    status) shift; (($# == 0)) || usage; cmd_status ;;
    env) cmd_env ;;
    clean) cmd_clean ;;
    *) usage ;;
esac
