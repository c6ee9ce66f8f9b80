# Process and port helpers shared by scripts/services.sh and scripts/rabbit-cluster.sh.
# Source it; it defines functions only. The caller defines log and die.

# pid_alive PIDFILE TEXT: the pid in PIDFILE runs and its command line
# contains TEXT. That guards against a recycled pid after a reboot or a
# crash: we never signal a process that is not the one we started.
pid_alive() {
    local file="$1" pattern="$2" pid
    [[ -s "$file" ]] || return 1
    pid="$(head -n1 "$file")"
    [[ "$pid" =~ ^[0-9]+$ ]] && running "$pid" || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$pattern"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# running PID: the process exists and is not a zombie. Our daemons are
# reparented to PID 1, which may take its time to reap them; a zombie has
# exited all the same.
running() {
    local stat
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
    stat="${stat##*) }"
    [[ "${stat:0:1}" != Z ]]
}

# wait_gone PID SECONDS: wait until PID exits; 1 if it is still there.
wait_gone() {
    local pid="$1" i
    for ((i = 0; i < $2 * 10; i++)); do
        running "$pid" || return 0
        sleep 0.1
    done
    return 1
}

as_root() {
    if [[ $EUID -eq 0 ]]; then "$@"
    elif command -v sudo >/dev/null; then sudo "$@"
    else die "need root to run: $*"
    fi
}
