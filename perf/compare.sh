#!/usr/bin/env bash
# Side by side: warden vs Apache ZooKeeper 3.8 (Debian package), same load
# generator (warden-loadgen), same machine, one run. Writes perf/RESULTS.md.
#
#   perf/compare.sh --quick        # 3 s per workload, small counts (about 4 min)
#   perf/compare.sh                # full: 15 s per workload, 10,000 watchers, 1M znodes (about 14 min)
#   perf/compare.sh --nodes 200000 # the memory / snapshot tree size (either mode)
#   perf/compare.sh --render-only  # rewrite RESULTS.md from the last run's $WORK
#
# Both systems' servers of a setup run at the same time (each idle while the
# other is measured) and every workload runs on both back to back, so that
# load from elsewhere on a shared machine hits both alike. What it runs:
#   standalone and 3-node ensemble on loopback: YCSB a, b, c, create-heavy,
#     delete-heavy, session-churn, watch-fanout, large-values, and workload a
#     at a fixed offered load (p99 at the same load);
#   standalone only: resident memory after loading N znodes of 100 bytes, p99
#     setData latency on that tree with snapshots every 2000 txns vs none, and
#     warden's read throughput with --cores 1 vs --cores 2.
#
# Environment: WORK [/tmp/perf-compare] scratch (data dirs are removed as
# soon as their server stops; logs and results.jsonl stay), RESULTS
# [perf/RESULTS.md], JAVA [java], SKIP_BUILD=1 to use the existing binaries.
# For a machine without the Debian package or a build: ZK_JARS [/usr/share/java]
# and ZK_VERSION, the jars' directory and version; BIN_DIR [target/release],
# where warden and warden-loadgen are (set, it skips the build); COMMIT, the
# build to name (as perf/bundle.sh wrote it) when the binaries are not this
# checkout's build.
# CPU placement (`taskset -c` lists; unset = the scheduler's choice, all
# processes on all CPUs): SERVER_CPUS, the standalone and memory servers of
# both systems; ENSEMBLE_CPUS, three lists, one per ensemble node;
# LOADGEN_CPUS, the load generator; CORES_CPUS, the servers of the read
# scaling runs. CORES_LIST ["1 2"], the --cores values those compare, and
# CORES_CONNS [8], their connections (enough to land on every shard).
# ZK_SERVER_CPUS and ZK_ENSEMBLE_CPUS give ZooKeeper CPUs of its own (then
# SERVER_CPUS and ENSEMBLE_CPUS are warden's), so that neither system's
# background work shares a CPU with the other's measured run.
# A part of the run: SETUPS [standalone ensemble memory cores] and WORKLOADS
# [a b c a@rate create-heavy delete-heavy large-values session-churn
# watch-fanout] (of the standalone and ensemble setups).
# Every load is bounded in ops and seconds; every server started here is
# stopped by its own pid on exit.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=perf/lib.sh
source "$REPO/perf/lib.sh"
ARGS=("$@")
# The settings given (inputs, placement, parts), for the report's command line.
GIVEN=""
for var in JAVA ZK_JARS BIN_DIR SETUPS WORKLOADS ZK_SERVER_CPUS ZK_ENSEMBLE_CPUS SERVER_CPUS ENSEMBLE_CPUS LOADGEN_CPUS CORES_CPUS CORES_LIST CORES_CONNS; do
    [[ -z ${!var:-} ]] || GIVEN="$GIVEN$var=\"${!var}\" "
done
MODE=full
NODES=""
RENDER_ONLY=0
while (( $# )); do
    case "$1" in
        --quick) MODE=quick ;;
        --nodes) NODES="$2"; shift ;;
        --render-only) RENDER_ONLY=1 ;;
        *) echo "usage: $0 [--quick] [--nodes N] [--render-only]" >&2; exit 2 ;;
    esac
    shift
done
WORK="${WORK:-/tmp/perf-compare}"
RESULTS_MD="${RESULTS:-$REPO/perf/RESULTS.md}"
JAVA="${JAVA:-java}"
ZK_JARS="${ZK_JARS:-/usr/share/java}"
# ZooKeeper's server classpath, from the Debian package (perf/bundle.sh reads this line).
ZK_JAR_NAMES="zookeeper zookeeper-jute slf4j-api slf4j-nop netty-handler netty-common netty-buffer netty-transport netty-codec netty-resolver netty-transport-native-epoll netty-transport-native-unix-common metrics-core commons-cli snappy-java jline"
BIN_DIR="${BIN_DIR:-}"
SERVER_CPUS="${SERVER_CPUS:-}"
LOADGEN_CPUS="${LOADGEN_CPUS:-}"
CORES_CPUS="${CORES_CPUS:-}"
read -r -a ENSEMBLE_CPUS <<<"${ENSEMBLE_CPUS:-}"
ZK_SERVER_CPUS="${ZK_SERVER_CPUS:-$SERVER_CPUS}"
read -r -a ZK_ENSEMBLE_CPUS <<<"${ZK_ENSEMBLE_CPUS:-${ENSEMBLE_CPUS[*]}}"
SETUPS=" ${SETUPS:-standalone ensemble memory cores} "
WORKLOADS=" ${WORKLOADS:-a b c a@rate create-heavy delete-heavy large-values session-churn watch-fanout} "
read -r -a CORES_LIST <<<"${CORES_LIST:-1 2}"
CORES_CONNS="${CORES_CONNS:-8}"

if [[ $MODE == quick ]]; then
    SECS=3; FANOUT=2000; DELETE_KEYS=20000; NODES="${NODES:-100000}"; SNAP_SECS=5
else
    SECS=15; FANOUT=10000; DELETE_KEYS=100000; NODES="${NODES:-1000000}"; SNAP_SECS=15
fi
# Offered load (ops/s) of the fixed-rate run of workload a, well below what
# either system sustains in that setup, so that p99 compares at the same load.
RATE_STANDALONE=4000
RATE_ENSEMBLE=2000
KEYS=1000          # key pool of the read/write mixes
CONNS=8            # connections of the pipelined workloads
IN_FLIGHT=32       # outstanding requests per connection

RESULTS="$WORK/results.jsonl"
SERVER_COMMANDS="$WORK/server-commands.txt"
if [[ $RENDER_ONLY == 1 ]]; then
    MODE=$(cat "$WORK/mode"); NODES=$(cat "$WORK/nodes"); ELAPSED=$(cat "$WORK/elapsed")
else
# --- prerequisites ----------------------------------------------------------
if [[ ! -f $ZK_JARS/zookeeper.jar ]]; then
    echo "installing the Debian zookeeper package" >&2
    SUDO=""; (( EUID == 0 )) || SUDO=sudo
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y zookeeper
fi
if [[ "${SKIP_BUILD:-0}" != 1 && -z $BIN_DIR ]]; then
    (cd "$REPO" && cargo build --release --bins)
fi
BIN_DIR="${BIN_DIR:-$REPO/target/release}"
need_taskset "$SERVER_CPUS$ZK_SERVER_CPUS$LOADGEN_CPUS$CORES_CPUS${ENSEMBLE_CPUS[*]}${ZK_ENSEMBLE_CPUS[*]}"
rm -rf "$WORK"
mkdir -p "$WORK/bin"
# Private copies, so that a rebuild during the run cannot swap the binaries.
cp "$BIN_DIR/warden" "$BIN_DIR/warden-loadgen" "$WORK/bin/"
WARDEN="$WORK/bin/warden"
LG="$WORK/bin/warden-loadgen"
: > "$RESULTS"
echo "$MODE" > "$WORK/mode"
echo "$NODES" > "$WORK/nodes"
{
    echo "server=${SERVER_CPUS:-any}"
    echo "ensemble=${ENSEMBLE_CPUS[*]:-any}"
    echo "zk_server=${ZK_SERVER_CPUS:-any}"
    echo "zk_ensemble=${ZK_ENSEMBLE_CPUS[*]:-any}"
    echo "loadgen=${LOADGEN_CPUS:-any}"
    echo "cores=${CORES_CPUS:-any}"
    echo "cores_list=${CORES_LIST[*]}"
    echo "cores_conns=$CORES_CONNS"
} > "$WORK/placement"
# What ran where, for the report (also when it is rendered elsewhere).
if [[ -n ${COMMIT:-} ]]; then
    build="$COMMIT"
else
    build="$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    dirty="$(git -C "$REPO" status --porcelain 2>/dev/null | grep -c . || true)"
    [[ ${dirty:-0} == 0 ]] || build="$build plus $dirty uncommitted file(s)"
fi
{
    echo "started=$(date -u '+%Y-%m-%d %H:%M')"
    echo "cpus=$(nproc)"
    echo "cpu_model=$(lscpu | sed -n 's/^Model name: *//p' | head -1)"
    echo "kernel=$(uname -r)"
    echo "memory=$(free -g | awk '/Mem:/ {print $2" GiB"}')"
    echo "filesystem=$(stat -f -c %T "$WORK")"
    echo "java=$("$JAVA" -version 2>&1 | head -1)"
    echo "zookeeper=${ZK_VERSION:-$(dpkg-query -W -f='${Version}' zookeeper 2>/dev/null || echo unknown)}"
    echo "build=$build"
    echo "command=${GIVEN}perf/compare.sh${ARGS[*]:+ ${ARGS[*]}}"
} > "$WORK/machine"
# 10,000 watching sessions need 10,000 sockets on each side.
ulimit -n "$(ulimit -Hn)"

CLASSPATH_ZK=""
for jar in $ZK_JAR_NAMES; do
    [[ -f $ZK_JARS/$jar.jar ]] && CLASSPATH_ZK="$CLASSPATH_ZK${CLASSPATH_ZK:+:}$ZK_JARS/$jar.jar"
done
ZK_JVM_FLAGS="-Xmx2g -Dzookeeper.admin.enableServer=false -Dzookeeper.jmx.log4j.disable=true"

# --- servers ----------------------------------------------------------------
# Both systems of a setup run at the same time, each idle while the other is
# measured, and every workload runs on both back to back (alternating which
# goes first). The machine is shared, so load from elsewhere changes over
# minutes; pairing the runs seconds apart keeps the ratios comparable.
PIDS=()                 # every server process running now
DATA_DIRS=()            # removed when the servers stop
declare -A SERVERS      # instance name -> host:port[,host:port...]
declare -A SERVER_PIDS  # instance name -> pid[,pid...]

stop_all() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    local dir
    for dir in "${DATA_DIRS[@]}"; do rm -rf "$dir"; done
    PIDS=(); DATA_DIRS=(); SERVERS=(); SERVER_PIDS=()
}
trap stop_all EXIT
trap 'stop_all; exit 130' INT TERM

# wait_ready PORT TIMEOUT: until the server answers srvr with a Mode line.
wait_ready() {
    local port="$1" deadline=$((SECONDS + $2)) reply
    while (( SECONDS < deadline )); do
        for pid in "${PIDS[@]}"; do
            kill -0 "$pid" 2>/dev/null || { echo "a server exited early (pid $pid)" >&2; return 1; }
        done
        if reply=$(timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port && printf srvr >&3 && cat <&3" 2>/dev/null) \
            && grep -Eq '^Mode: (standalone|leader|follower)' <<<"$reply"; then
            return 0
        fi
        sleep 0.2
    done
    echo "server on port $port not ready after $2 s" >&2
    return 1
}

: > "$SERVER_COMMANDS"

# start_standalone SYSTEM INSTANCE [SNAP_COUNT [CORES [CPUS]]]: data in
# $WORK/INSTANCE/data (kept if it exists, for a restart on the same tree), on
# CPUS [the system's: SERVER_CPUS or ZK_SERVER_CPUS].
start_standalone() {
    local system="$1" name="$2" snap="${3:-100000}" cores="${4:-}" port dir cpus="$SERVER_CPUS"
    [[ $system == warden ]] || cpus="$ZK_SERVER_CPUS"
    cpus="${5-$cpus}"
    port=$(free_ports 1)
    dir="$WORK/$name"
    mkdir -p "$dir/data"
    if [[ $system == warden ]]; then
        local args=(server --client-port "$port" --client-port-address 127.0.0.1 --data-dir "$dir/data"
            --max-client-cnxns 0 --snap-count "$snap" --4lw-commands-whitelist '*')
        [[ -n $cores ]] && args+=(--cores "$cores")
        echo "$(basename "$WORK")/$name: warden ${args[*]}" >> "$SERVER_COMMANDS"
        NO_COLOR=1 $(on_cpus "$cpus") "$WARDEN" "${args[@]}" >> "$dir/server.log" 2>&1 &
    else
        cat > "$dir/zoo.cfg" <<EOF
tickTime=2000
dataDir=$dir/data
clientPort=$port
clientPortAddress=127.0.0.1
maxClientCnxns=0
snapCount=$snap
4lw.commands.whitelist=*
admin.enableServer=false
EOF
        echo "$(basename "$WORK")/$name: java $ZK_JVM_FLAGS -cp <Debian jars> org.apache.zookeeper.server.ZooKeeperServerMain zoo.cfg" \
            "($(grep -v '^dataDir\|^clientPort=' "$dir/zoo.cfg" | paste -sd' '))" >> "$SERVER_COMMANDS"
        # shellcheck disable=SC2086
        $(on_cpus "$cpus") "$JAVA" $ZK_JVM_FLAGS -cp "$CLASSPATH_ZK" org.apache.zookeeper.server.ZooKeeperServerMain "$dir/zoo.cfg" \
            >> "$dir/server.log" 2>&1 &
    fi
    PIDS+=($!)
    SERVERS[$name]="127.0.0.1:$port"
    SERVER_PIDS[$name]=$!
    wait_ready "$port" 600
}

# start_ensemble SYSTEM INSTANCE: three voters on loopback, from config/ensemble-3.
start_ensemble() {
    local system="$1" name="$2" ports n servers="" pids=""
    read -r -a ports <<<"$(free_ports 9)"
    for n in 1 2 3; do
        local dir="$WORK/$name/node$n"
        mkdir -p "$dir/data"
        DATA_DIRS+=("$dir/data")
        echo "$n" > "$dir/data/myid"
        # The shipped example with only dataDir, ports and maxClientCnxns changed.
        {
            grep -v '^\(dataDir\|clientPort\|server\.[0-9]*\)=' "$REPO/config/ensemble-3/node1.cfg" | grep -v '^#' | grep .
            echo "dataDir=$dir/data"
            echo "clientPort=${ports[$((n - 1))]}"
            echo "maxClientCnxns=0"
            echo "4lw.commands.whitelist=*"
            [[ $system == zookeeper ]] && echo "admin.enableServer=false"
            for m in 1 2 3; do
                echo "server.$m=127.0.0.1:${ports[$((m + 2))]}:${ports[$((m + 5))]}:participant;127.0.0.1:${ports[$((m - 1))]}"
            done
        } | grep -v '^4lw.commands.whitelist=srvr' > "$dir/zoo.cfg"
        if [[ $system == warden ]]; then
            NO_COLOR=1 $(on_cpus "${ENSEMBLE_CPUS[$((n - 1))]:-}") "$WARDEN" server --config "$dir/zoo.cfg" > "$dir/server.log" 2>&1 &
        else
            # shellcheck disable=SC2086
            $(on_cpus "${ZK_ENSEMBLE_CPUS[$((n - 1))]:-}") "$JAVA" $ZK_JVM_FLAGS -cp "$CLASSPATH_ZK" org.apache.zookeeper.server.quorum.QuorumPeerMain "$dir/zoo.cfg" \
                > "$dir/server.log" 2>&1 &
        fi
        PIDS+=($!)
        servers="$servers${servers:+,}127.0.0.1:${ports[$((n - 1))]}"
        pids="$pids${pids:+,}$!"
    done
    SERVERS[$name]="$servers"
    SERVER_PIDS[$name]="$pids"
    if [[ $system == warden ]]; then
        echo "$(basename "$WORK")/$name: warden server --config nodeN.cfg (N=1..3): $(grep -v '^dataDir\|^clientPort=' "$WORK/$name/node1/zoo.cfg" | paste -sd' ')" >> "$SERVER_COMMANDS"
    else
        echo "$(basename "$WORK")/$name: java $ZK_JVM_FLAGS -cp <Debian jars> org.apache.zookeeper.server.quorum.QuorumPeerMain nodeN.cfg (same files)" >> "$SERVER_COMMANDS"
    fi
    for n in 0 1 2; do wait_ready "${ports[$n]}" 300; done
}

# load SETUP SYSTEM INSTANCE LABEL LOADGEN-ARGS...: one bounded run against
# INSTANCE's servers, with their pids for CPU time; one JSON line into $RESULTS.
load() {
    local setup="$1" system="$2" instance="$3" label="$4" line status=0 loadavg
    shift 4
    local args=(--server "${SERVERS[$instance]}" --pids "${SERVER_PIDS[$instance]}" --json "$@")
    loadavg=$(cut -d' ' -f1 /proc/loadavg)
    echo "+ [$setup/$system] warden-loadgen ${args[*]}" >&2
    line=$(timeout 600 $(on_cpus "$LOADGEN_CPUS") "$LG" "${args[@]}" 2> "$WORK/loadgen-stderr.txt") || status=$?
    if [[ $status != 0 || -z $line ]]; then
        echo "  FAILED ($status): $(head -c 500 "$WORK/loadgen-stderr.txt")" >&2
        line="{\"workload\":\"$label\",\"failed\":\"exit $status: $(head -c 200 "$WORK/loadgen-stderr.txt" | tr -d '\"\\\n')\"}"
    fi
    echo "  $line" >&2
    python3 - "$setup" "$system" "$label" "$line" "warden-loadgen $*" "$loadavg" >> "$RESULTS" <<'EOF'
import json, sys
record = json.loads(sys.argv[4])
record.update(setup=sys.argv[1], system=sys.argv[2], label=sys.argv[3], command=sys.argv[5],
              loadavg_before=float(sys.argv[6]))
print(json.dumps(record))
EOF
}

note() {  # note SETUP SYSTEM LABEL KEY=VALUE...: a measurement that is not a load run
    python3 - "$@" >> "$RESULTS" <<'EOF'
import json, sys
record = dict(setup=sys.argv[1], system=sys.argv[2], label=sys.argv[3])
for kv in sys.argv[4:]:
    k, v = kv.split("=", 1)
    try: v = float(v)
    except ValueError: pass
    record[k] = v
print(json.dumps(record))
EOF
}

rss_kib() {  # rss_kib INSTANCE: total VmRSS of its server processes
    local total=0 pid kib
    for pid in ${SERVER_PIDS[$1]//,/ }; do
        kib=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status")
        total=$((total + kib))
    done
    echo "$total"
}

# pair SETUP INDEX LABEL LOADGEN-ARGS...: the same run on both systems of a
# setup (instances zookeeper and warden), back to back; ZooKeeper first on even
# INDEX, warden first on odd, so that neither always runs on a warmer machine.
pair() {
    local setup="$1" index="$2" label="$3" order system
    shift 3
    if (( index % 2 == 0 )); then order="zookeeper warden"; else order="warden zookeeper"; fi
    for system in $order; do load "$setup" "$system" "$system" "$label" "$@"; done
}

maybe_pair() {  # maybe_pair WORKLOAD PAIR-ARGS...: pair PAIR-ARGS... if WORKLOADS includes WORKLOAD
    local workload="$1"
    shift
    [[ $WORKLOADS != *" $workload "* ]] || pair "$@"
}

# The workloads both setups run. Reads and writes use separate parents so
# that every workload has its own key pool.
COMMON=(--connections "$CONNS" --in-flight "$IN_FLIGHT" --seconds "$SECS")
workloads() {
    local setup="$1" rate="$2" system
    # Warm-up, not recorded: JIT for the JVM, page cache and log preallocation for both.
    for system in zookeeper warden; do
        timeout 120 $(on_cpus "$LOADGEN_CPUS") "$LG" --server "${SERVERS[$system]}" --workload a --connections 4 --in-flight 32 --seconds 3 \
            --parent /warm >/dev/null 2>&1 || true
    done
    maybe_pair a "$setup" 0 a --workload a --keys "$KEYS" --parent /ycsb-a "${COMMON[@]}"
    maybe_pair b "$setup" 1 b --workload b --keys "$KEYS" --parent /ycsb-b "${COMMON[@]}"
    maybe_pair c "$setup" 2 c --workload c --keys "$KEYS" --parent /ycsb-c "${COMMON[@]}"
    maybe_pair a@rate "$setup" 3 "a@${rate}/s" --workload a --keys "$KEYS" --parent /ycsb-a-rate --rate "$rate" "${COMMON[@]}"
    maybe_pair create-heavy "$setup" 4 create-heavy --workload create-heavy --parent /create-heavy "${COMMON[@]}"
    maybe_pair delete-heavy "$setup" 5 delete-heavy --workload delete-heavy --keys "$DELETE_KEYS" --parent /delete-heavy "${COMMON[@]}"
    maybe_pair large-values "$setup" 6 large-values --workload large-values --keys 50 --connections 4 --in-flight 4 \
        --seconds "$SECS" --parent /large
    maybe_pair session-churn "$setup" 7 session-churn --workload session-churn --connections "$CONNS" --seconds "$SECS" --parent /churn
    maybe_pair watch-fanout "$setup" 8 watch-fanout --workload watch-fanout --sessions "$FANOUT" --seconds 60 --parent /fanout
}

# Snapshot files in a data dir: both systems name them version-2/snapshot.<zxid>
# and, with autopurge off (both defaults), keep every one.
count_snapshots() {
    find "$1/version-2" -maxdepth 1 -name 'snapshot.*' ! -name '*.tmp' 2>/dev/null | wc -l
}

# Memory of NODES znodes, then setData p99 on that tree without snapshots and,
# after a restart on the same data, with a snapshot every 2000 txns.
memory_and_snapshots() {
    local system snap_before
    declare -A before_rss from
    for system in zookeeper warden; do
        start_standalone "$system" "$system" 100000000
        sleep 2
        before_rss[$system]=$(rss_kib "$system")
    done
    for system in zookeeper warden; do
        load memory "$system" "$system" populate --workload populate --count "$NODES" --connections 4 --in-flight 64 \
            --value-bytes 100 --parent /big --seconds 600
    done
    sleep 3
    for system in zookeeper warden; do
        note memory "$system" memory "nodes=$NODES" "rss_idle_kib=${before_rss[$system]}" "rss_loaded_kib=$(rss_kib "$system")"
    done
    local steady=(--workload set --keys "$NODES" --skip-setup --parent /big --connections 2 --in-flight 8 --seconds "$SNAP_SECS")
    # Without snapshots first, on the servers that loaded the tree.
    pair memory 0 "set, no snapshots" "${steady[@]}"
    stop_all  # the data dirs stay (not in DATA_DIRS)
    for system in zookeeper warden; do
        start_standalone "$system" "$system" 2000
        DATA_DIRS+=("$WORK/$system/data")
    done
    sleep 2
    for system in zookeeper warden; do from[$system]=$(count_snapshots "$WORK/$system/data"); done
    pair memory 1 "set, snapCount 2000" "${steady[@]}"
    for system in zookeeper warden; do
        note memory "$system" snapshots "taken=$(( $(count_snapshots "$WORK/$system/data") - ${from[$system]} ))"
    done
    stop_all
}

# ---------------------------------------------------------------------------
START=$(date +%s)
echo "mode=$MODE work=$WORK nodes=$NODES" >&2

WORK_ROOT="$WORK"
for setup in standalone ensemble; do
    [[ $SETUPS == *" $setup "* ]] || continue
    # Instances are named after their system; each setup has its own directory.
    WORK="$WORK_ROOT/$setup"
    mkdir -p "$WORK"
    for system in zookeeper warden; do
        if [[ $setup == standalone ]]; then
            start_standalone "$system" "$system"
            DATA_DIRS+=("$WORK/$system/data")
        else
            start_ensemble "$system" "$system"
        fi
    done
    if [[ $setup == standalone ]]; then workloads standalone "$RATE_STANDALONE"; else workloads ensemble "$RATE_ENSEMBLE"; fi
    stop_all
done

if [[ $SETUPS == *" memory "* ]]; then
    WORK="$WORK_ROOT/memory"
    mkdir -p "$WORK"
    memory_and_snapshots
fi

if [[ $SETUPS == *" cores "* ]]; then
WORK="$WORK_ROOT/cores"
mkdir -p "$WORK"
for cores in "${CORES_LIST[@]}"; do
    start_standalone warden "cores-$cores" 100000 "$cores" "$CORES_CPUS"
    DATA_DIRS+=("$WORK/cores-$cores/data")
done
for round in 1 2; do
    # Ascending, then descending: each --cores setting runs once early and once late.
    if (( round == 1 )); then order="${CORES_LIST[*]}"; else order=$(printf '%s\n' "${CORES_LIST[@]}" | tac | paste -sd' '); fi
    for cores in $order; do
        load cores warden "cores-$cores" "c, --cores $cores #$round" --workload c --keys "$KEYS" --parent /cores \
            --connections "$CORES_CONNS" --in-flight "$IN_FLIGHT" --seconds "$SECS"
    done
done
stop_all
fi
WORK="$WORK_ROOT"
ELAPSED=$(( $(date +%s) - START ))
echo "$ELAPSED" > "$WORK/elapsed"
fi  # RENDER_ONLY

# ---------------------------------------------------------------------------
python3 - "$RESULTS" "$RESULTS_MD" "$MODE" "$ELAPSED" "$SERVER_COMMANDS" \
    "$CONNS" "$IN_FLIGHT" "$SECS" "$NODES" "$WORK/placement" "$WORK/machine" <<'EOF'
import json, os, sys
(results, out, mode, elapsed, server_commands,
 conns, in_flight, secs, nodes, placement_file, machine_file) = sys.argv[1:12]
def settings(path):
    return dict(l.rstrip("\n").split("=", 1) for l in open(path) if "=" in l)
placement = settings(placement_file)
machine = settings(machine_file)
rows = [json.loads(l) for l in open(results) if l.strip()]
by = {}
for r in rows:
    by[(r["setup"], r["system"], r["label"])] = r

def ratio(w, z, invert=False):
    try:
        w, z = float(w), float(z)
        if z == 0: return "–"
        return "%.2f" % (w / z)
    except (TypeError, ValueError):
        return "–"

def num(r, key, fmt="%d"):
    if r is None or key not in r: return "–"
    try: return fmt % float(r[key])
    except (TypeError, ValueError): return str(r[key])

L = []
L.append("# warden vs Apache ZooKeeper: side by side (`perf/compare.sh`)\n")
L.append("Generated by `%s`, started %s UTC, %s s. Every number below was measured in this one run;"
         % (machine["command"], machine["started"], elapsed))
L.append("nothing is copied from elsewhere. Ratios are warden ÷ ZooKeeper: above 1 means warden is higher"
         " (better for throughput, worse for latency, CPU and memory).\n")
L.append("## Machine and builds\n")
L.append("| | |\n|---|---|")
L.append("| CPUs | `nproc` = %s; %s |" % (machine["cpus"], machine["cpu_model"]))
L.append("| Kernel | %s |" % machine["kernel"])
L.append("| Memory | %s |" % machine["memory"])
L.append("| warden | commit `%s`, `cargo build --release` |" % machine["build"])
L.append("| ZooKeeper | Debian `zookeeper` %s; %s |" % (machine["zookeeper"], machine["java"]))
if placement.get("loadgen", "any") == "any":
    L.append("| Load | `warden-loadgen` on the same machine, so it competes with the servers for the same cores |")
else:
    zk_server, zk_ensemble = placement.get("zk_server", placement.get("server")), placement.get("zk_ensemble", placement.get("ensemble"))
    if (zk_server, zk_ensemble) == (placement.get("server"), placement.get("ensemble")):
        servers = ("standalone and memory servers: %s; ensemble nodes: %s; read-scaling servers: %s. Both systems run on the"
                   " same CPUs, each idle while the other is measured." % (placement.get("server"), placement.get("ensemble"), placement.get("cores")))
    else:
        servers = ("ZooKeeper's standalone server: %s, its ensemble nodes: %s; warden's standalone server: %s, its ensemble"
                   " nodes: %s; read-scaling servers: %s. Each system has as many CPUs as the other, and its own."
                   % (zk_server, zk_ensemble, placement.get("server"), placement.get("ensemble"), placement.get("cores")))
    L.append("| CPU placement (`taskset -c`) | load generator: CPUs %s; %s |" % (placement.get("loadgen"), servers))
L.append("")
L.append("Both systems run with their defaults for durability (`forceSync=yes`: every write is fsynced before"
         " it is acknowledged), on loopback, data dirs on the same filesystem (`%s`). Both servers (or both ensembles)"
         " of a setup run at the same time, each idle while the other is measured, and every workload runs on both"
         " back to back, alternating which goes first, so that each pair of numbers is taken seconds apart. Each"
         " system gets a 3 s warm-up (JIT for ZooKeeper) before its first measured workload in each setup."
         % machine["filesystem"])
loads = sorted(r["loadavg_before"] for r in rows if "loadavg_before" in r)
if loads:
    L.append("The machine is shared with other work: the 1-minute load average just before a run ranged %.2f–%.2f"
             " (median %.2f; the previous run's load generator and server count in it). Differences below about 1.5×"
             " between the two systems can be noise." % (loads[0], loads[-1], loads[len(loads) // 2]))
L.append("Server CPU is utime+stime of every server process (all threads, `/proc/PID/stat`) over the measured"
         " phase, divided by the completed operations; its resolution is 10 ms.\n")

def table(setup, title):
    labels = []
    for r in rows:
        if r["setup"] == setup and r["label"] not in labels and "memory" != r["label"]:
            labels.append(r["label"])
    if not labels: return
    L.append("## %s\n" % title)
    L.append("| workload | ZK ops/s | warden ops/s | **ratio** | ZK p50 / p99 / p99.9 µs | warden p50 / p99 / p99.9 µs | **p99 ratio** | ZK CPU µs/op | warden CPU µs/op | **CPU ratio** |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label in labels:
        z = by.get((setup, "zookeeper", label)); w = by.get((setup, "warden", label))
        def lat(r):
            if r is None: return "–"
            if "failed" in r: return "failed: " + r["failed"][:60]
            return "%s / %s / %s" % (num(r, "p50_us"), num(r, "p99_us"), num(r, "p999_us"))
        L.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            label, num(z, "throughput", "%.0f"), num(w, "throughput", "%.0f"),
            ratio(w and w.get("throughput"), z and z.get("throughput")),
            lat(z), lat(w), ratio(w and w.get("p99_us"), z and z.get("p99_us")),
            num(z, "cpu_us_per_op", "%.1f"), num(w, "cpu_us_per_op", "%.1f"),
            ratio(w and w.get("cpu_us_per_op"), z and z.get("cpu_us_per_op"))))
    fz = by.get((setup, "zookeeper", "watch-fanout")); fw = by.get((setup, "warden", "watch-fanout"))
    if fz and fw and "fanout_ms" in fz and "fanout_ms" in fw:
        L.append("")
        L.append("watch-fanout: %d sessions watch one node; one setData. Write to last notification: ZooKeeper %.1f ms,"
                 " warden %.1f ms (ratio %s). Its row above counts notifications: ops/s = sessions ÷ that time, latencies"
                 " are per notification from the write. Opening the watching sessions took ZooKeeper %.2f s, warden %.2f s."
                 % (fw["sessions"], fz["fanout_ms"], fw["fanout_ms"], ratio(fw["fanout_ms"], fz["fanout_ms"]),
                    fz["connect_seconds"], fw["connect_seconds"]))
    for r in (fz, fw):
        if r and r.get("close_unanswered"):
            L.append("")
            L.append("Note: after the %s watch-fanout, %d of its sessions' closeSession requests got no answer"
                     " within 20 s (see \"Server failures\" below)." % (r["system"], r["close_unanswered"]))
    errs = [r for r in rows if r["setup"] == setup and (r.get("errors") or r.get("failures") or "failed" in r)]
    for r in errs:
        L.append("")
        L.append("Note: %s %s reported errors=%s (first %s), failed connections=%s%s." % (
            r["system"], r["label"], r.get("errors"), r.get("first_error"), r.get("failures"),
            ", " + r["failed"] if "failed" in r else ""))
    L.append("")

table("standalone", "Standalone")
table("ensemble", "3-node ensemble on loopback (connections spread over the three servers)")

if any(r["setup"] == "memory" for r in rows):
    L.append("## Memory, and writes during snapshots (standalone, %s znodes of 100 bytes)\n" % nodes)
    L.append("| | ZooKeeper | warden | ratio |\n|---|---:|---:|---:|")
    mz = by.get(("memory", "zookeeper", "memory")); mw = by.get(("memory", "warden", "memory"))
    if mz and mw:
        L.append("| RSS idle, before loading (MiB) | %.0f | %.0f | %s |" % (mz["rss_idle_kib"] / 1024, mw["rss_idle_kib"] / 1024, ratio(mw["rss_idle_kib"], mz["rss_idle_kib"])))
        L.append("| RSS after loading %s znodes (MiB) | %.0f | %.0f | **%s** |" % (nodes, mz["rss_loaded_kib"] / 1024, mw["rss_loaded_kib"] / 1024, ratio(mw["rss_loaded_kib"], mz["rss_loaded_kib"])))
    pz = by.get(("memory", "zookeeper", "populate")); pw = by.get(("memory", "warden", "populate"))
    if pz and pw:
        L.append("| populate throughput (creates/s, 4×64) | %s | %s | %s |" % (num(pz, "throughput", "%.0f"), num(pw, "throughput", "%.0f"), ratio(pw.get("throughput"), pz.get("throughput"))))
    for system_label in ("set, no snapshots", "set, snapCount 2000"):
        z = by.get(("memory", "zookeeper", system_label)); w = by.get(("memory", "warden", system_label))
        if z and w:
            L.append("| %s: ops/s | %s | %s | %s |" % (system_label, num(z, "throughput", "%.0f"), num(w, "throughput", "%.0f"), ratio(w.get("throughput"), z.get("throughput"))))
            L.append("| %s: p99 / p99.9 µs | %s / %s | %s / %s | %s |" % (system_label, num(z, "p99_us"), num(z, "p999_us"), num(w, "p99_us"), num(w, "p999_us"), ratio(w.get("p99_us"), z.get("p99_us"))))
    sz = by.get(("memory", "zookeeper", "snapshots")); sw = by.get(("memory", "warden", "snapshots"))
    if sz and sw:
        L.append("| snapshots written during the snapCount 2000 run | %d | %d | |" % (sz["taken"], sw["taken"]))
    for system in ("zookeeper", "warden"):
        s = by.get(("memory", system, "set, snapCount 2000")); n = by.get(("memory", system, "set, no snapshots"))
        if s and n and "p99_us" in s and "p99_us" in n:
            L.append("| %s p99 with snapshots ÷ without | %s | | |" % (system, ratio(s["p99_us"], n["p99_us"])) if system == "zookeeper"
                     else "| warden p99 with snapshots ÷ without | | %s | |" % ratio(s["p99_us"], n["p99_us"]))
    L.append("")
    L.append("RSS is VmRSS from `/proc/PID/status`. ZooKeeper runs with `-Xmx2g` and the JVM's default collector (G1), so its"
             " RSS includes heap the collector has not returned: it is what the process costs the machine, not its live data."
             " The steady load is setData on random keys of the loaded tree (2 connections × 8 in flight): first on the server"
             " that loaded the tree (snapshots off), then after a restart on the same data with snapCount=2000.\n")

cores_rows = [r for r in rows if r["setup"] == "cores" and "throughput" in r]
if cores_rows:
    L.append("## warden read throughput by cores (workload c, standalone)\n")
    core_counts = [int(c) for c in placement.get("cores_list", "1 2").split()]
    cores_conns = int(placement.get("cores_conns", conns))
    L.append("One server per `--cores` value (%s), all running at once, each idle while another is measured: ascending,"
             " then descending. %d connections × %s in flight.\n" % (", ".join(map(str, core_counts)), cores_conns, in_flight))
    L.append("| run | ops/s | p50 / p99 µs | server CPU µs/op | server CPUs busy |\n|---|---:|---:|---:|---:|")
    for r in cores_rows:
        busy = r["throughput"] * r["cpu_us_per_op"] / 1e6 if "cpu_us_per_op" in r else None
        L.append("| %s | %s | %s / %s | %s | %s |" % (r["label"], num(r, "throughput", "%.0f"), num(r, "p50_us"), num(r, "p99_us"),
                 num(r, "cpu_us_per_op", "%.2f"), "%.2f" % busy if busy is not None else "–"))
    def mean_of(cores):
        values = [r["throughput"] for r in cores_rows if r["label"].startswith("c, --cores %d " % cores)]
        return sum(values) / len(values) if values else None
    base = mean_of(core_counts[0])
    for cores in core_counts[1:]:
        m = mean_of(cores)
        if base and m:
            L.append("| mean of --cores %d ÷ mean of --cores %d | %.2f | | | |" % (cores, core_counts[0], m / base))
    if placement.get("loadgen", "any") == "any":
        L.append("\nThe load generator (%d connections, %d threads) runs on the same machine, unpinned: it competes with the"
                 " server for the same cores, so on a small machine this table cannot show how reads scale with cores.\n"
                 % (cores_conns, 2 * cores_conns))
    else:
        L.append("\nThe servers run on CPUs %s and the load generator (%d connections, %d threads) on CPUs %s. \"Server CPUs"
                 " busy\" is server CPU time over the run's wall time: a server that keeps fewer CPUs busy than it has shards"
                 " is waiting on the load generator.\n" % (placement.get("cores"), cores_conns, 2 * cores_conns, placement.get("loadgen")))

# Anything a server logged about dying: a panic, or warden's refused proposals.
import glob, re
work = os.path.dirname(results)
failures = []
for log in sorted(glob.glob(os.path.join(work, "**", "server.log"), recursive=True)):
    text = re.sub(r"\x1b\[[0-9;]*m", "", open(log, errors="replace").read())
    panics = [l for l in text.splitlines() if "panicked at" in l]
    lines = text.splitlines()
    for i, l in enumerate(lines):
        if "panicked at" in l:
            failures.append("`%s`: %s %s" % (os.path.relpath(log, work), l.strip(), " ".join(x.strip() for x in lines[i + 1:i + 4])))
    refused = text.count("proposal refused")
    if refused:
        failures.append("`%s`: %d \"proposal refused\" warnings" % (os.path.relpath(log, work), refused))
L.append("## Server failures seen during this run\n")
if failures:
    for f in failures:
        L.append("- " + f)
else:
    L.append("None: no server log under the work dir has a panic or a refused proposal.")
L.append("")

L.append("## Commands\n")
L.append("```sh\n%s   # this whole run\n```\n" % machine["command"])
L.append("Servers (P = a free loopback port, D = a fresh data dir under the script's WORK dir):\n")
L.append("```")
for line in open(server_commands):
    L.append(line.rstrip())
L.append("```\n")
L.append("Load runs, each also given `--server <the setup's client addresses> --pids <the setup's server pids> --json`:\n")
L.append("| setup | system | run | command |\n|---|---|---|---|")
for r in rows:
    if "command" in r:
        L.append("| %s | %s | %s | `%s` |" % (r["setup"], r["system"], r["label"], r["command"]))
L.append("")
L.append("Raw results, one JSON object per run: `%s`." % results)
open(out, "w").write("\n".join(L) + "\n")
print("wrote", out)
EOF
echo "done in ${ELAPSED}s; results: $RESULTS_MD (raw: $RESULTS)" >&2
