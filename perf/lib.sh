# Shared by the perf scripts (sourced).

# on_cpus CPUS: the command prefix that runs a command on CPUS (a `taskset -c`
# list), nothing if CPUS is empty; used unquoted. taskset execs the command,
# so $! stays the server's pid.
on_cpus() {
    [[ -z $1 ]] || echo "taskset -c $1"
}

# need_taskset CPUS...: fails loudly if any placement is asked for and
# taskset is missing.
need_taskset() {
    if [[ -n "$*" ]] && ! command -v taskset > /dev/null; then
        echo "CPU placement asked for, but taskset is missing (apt-get install util-linux)" >&2
        exit 1
    fi
}

# use_loadgen REPO: sets LG to the load generator, LG=PATH or this checkout's
# release build, and fails loudly if it is missing.
use_loadgen() {
    LG="${LG:-$1/target/release/warden-loadgen}"
    [[ -x $LG ]] || { echo "no load generator at $LG: cargo build --release (or LG=PATH)" >&2; exit 1; }
}

# free_ports N: N distinct free loopback ports (all bound at once, so none
# repeats).
free_ports() {
    python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

# srvr PORT: the server's answer to srvr, or nothing.
srvr() {
    (echo srvr | timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1; cat >&3; cat <&3") 2> /dev/null || true
}

# wait_serving PORT: until the server on PORT answers srvr with its Mode (60 s).
wait_serving() {
    for _ in $(seq 600); do
        srvr "$1" | grep -q "Mode: [slf]" && return 0
        sleep 0.1
    done
    echo "server on port $1 never served" >&2
    return 1
}

# ensemble_node DIR N PORTS... [EXTRA...]: the data dir (with myid) and
# zoo.cfg in DIR of node N (1-3) of a 3-node loopback ensemble. PORTS are
# nine: the three client ports, then the three quorum ports, then the three
# election ports. Any EXTRA arguments are added as config lines.
ensemble_node() {
    local dir=$1 n=$2
    local ports=("${@:3:9}")
    shift 11
    mkdir -p "$dir/data"
    echo "$n" > "$dir/data/myid"
    {
        echo "tickTime=2000"; echo "initLimit=10"; echo "syncLimit=5"; echo "dataDir=$dir/data"
        echo "clientPort=${ports[$((n - 1))]}"; echo "clientPortAddress=127.0.0.1"; echo "maxClientCnxns=0"
        echo "4lw.commands.whitelist=*"
        for line in "$@"; do echo "$line"; done
        for m in 1 2 3; do
            echo "server.$m=127.0.0.1:${ports[$((m + 2))]}:${ports[$((m + 5))]}:participant;127.0.0.1:${ports[$((m - 1))]}"
        done
    } > "$dir/zoo.cfg"
}
