#!/usr/bin/env bash
# Durable-write performance: warden vs Apache ZooKeeper 3.8 (Debian package),
# both standalone with forceSync=yes, each on its own loopback port and fresh
# data dir on the same disk, started one at a time. Not part of the test suite.
#
#   cargo build --release --bins
#   perf/durability.sh            # results in $WORK/results.jsonl and a summary on stdout
#
# Environment knobs (defaults in brackets):
#   WORK [target/perf-durability]   scratch dir (data dirs, logs, results); wiped first
#   BASIC_ROUNDS [2]                rounds of the basic suite (zookeeper, warden, zookeeper, ...)
#   SNAP_ROUNDS [2]                 snapshot on/off rounds per system (alternating)
#   ZK_SNAPSHOT [1]                 also run the 1M-node snapshot comparison on ZooKeeper
#   NODES [1000000]                 tree size for the snapshot comparison
#   SUITES ["basic snap"]           which parts to run
#
# Every load is bounded in ops and seconds; every server started here is
# stopped on exit (trap), by its own pid.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=perf/lib.sh
source "$REPO/perf/lib.sh"
WARDEN="$REPO/target/release/warden"
LG="$REPO/target/release/warden-loadgen"
WORK="${WORK:-$REPO/target/perf-durability}"
BASIC_ROUNDS="${BASIC_ROUNDS:-2}"
SNAP_ROUNDS="${SNAP_ROUNDS:-2}"
ZK_SNAPSHOT="${ZK_SNAPSHOT:-1}"
NODES="${NODES:-1000000}"
SUITES="${SUITES:-basic snap}"
RESULTS="$WORK/results.jsonl"
JAVA="${JAVA:-java}"

for f in "$WARDEN" "$LG"; do
    [[ -x "$f" ]] || { echo "missing $f: run cargo build --release --bins" >&2; exit 1; }
done
[[ -f /usr/share/java/zookeeper.jar ]] || { echo "Apache ZooKeeper (Debian zookeeper package) not installed" >&2; exit 1; }

rm -rf "$WORK"
mkdir -p "$WORK/bin"
: > "$RESULTS"
# Run private copies, so a rebuild during the run cannot swap the binaries.
cp "$WARDEN" "$WORK/bin/warden"
cp "$LG" "$WORK/bin/warden-loadgen"
WARDEN="$WORK/bin/warden"
LG="$WORK/bin/warden-loadgen"
echo "warden: commit $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)," \
    "binary built $(date -u -r "$WORK/bin/warden" +%FT%TZ)" >&2
avail_kb=$(df -Pk "$WORK" | awk 'NR==2 {print $4}')
if (( avail_kb < 30 * 1024 * 1024 )); then
    echo "need 30 GiB free under $WORK (snapshots of the 1M-node tree pile up), have $((avail_kb / 1024)) MiB" >&2
    exit 1
fi

SERVER_PID=""
stop_server() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 200); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=""
}
trap stop_server EXIT
trap 'stop_server; exit 130' INT TERM

# Waits (bounded) until the server on $1 answers srvr with a Mode line.
wait_ready() {
    local port="$1" timeout="$2" deadline=$((SECONDS + $2))
    while (( SECONDS < deadline )); do
        kill -0 "$SERVER_PID" 2>/dev/null || { echo "server exited early" >&2; return 1; }
        if reply=$(timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port && printf srvr >&3 && cat <&3" 2>/dev/null) \
            && grep -q '^Mode:' <<<"$reply"; then
            return 0
        fi
        sleep 0.2
    done
    echo "server on port $port not ready after ${timeout}s" >&2
    return 1
}

# start_zk DATA_DIR PORT SNAP_COUNT LOG
start_zk() {
    local data="$1" port="$2" snap="$3" log="$4"
    mkdir -p "$data"
    local j=/usr/share/java cp="" jar
    for jar in zookeeper zookeeper-jute slf4j-api slf4j-simple netty-handler netty-common netty-buffer \
        netty-transport netty-codec netty-resolver netty-transport-native-epoll \
        netty-transport-native-unix-common metrics-core commons-cli snappy-java jline; do
        [[ -f "$j/$jar.jar" ]] && cp="$cp${cp:+:}$j/$jar.jar"
    done
    cat > "$data/../zoo-$port.cfg" <<EOF
tickTime=2000
dataDir=$data
clientPort=$port
clientPortAddress=127.0.0.1
snapCount=$snap
4lw.commands.whitelist=*
admin.enableServer=false
EOF
    "$JAVA" -Xmx2g \
        -Dzookeeper.admin.enableServer=false -Dzookeeper.jmx.log4j.disable=true \
        -Dorg.slf4j.simpleLogger.showDateTime=true \
        -Dorg.slf4j.simpleLogger.dateTimeFormat=HH:mm:ss.SSS \
        -cp "$cp" org.apache.zookeeper.server.ZooKeeperServerMain "$data/../zoo-$port.cfg" \
        >> "$log" 2>&1 &
    SERVER_PID=$!
}

# start_warden DATA_DIR PORT SNAP_COUNT LOG
start_warden() {
    local data="$1" port="$2" snap="$3" log="$4"
    mkdir -p "$data"
    NO_COLOR=1 "$WARDEN" server --client-port "$port" --client-port-address 127.0.0.1 \
        --data-dir "$data" --snap-count "$snap" --4lw-commands-whitelist srvr \
        >> "$log" 2>&1 &
    SERVER_PID=$!
}

# load SYSTEM LABEL PORT LOADGEN-ARGS...: one bounded run, one JSON line into $RESULTS.
load() {
    local system="$1" label="$2" port="$3"
    shift 3
    local line
    echo "+ warden-loadgen --server 127.0.0.1:$port $*" >&2
    line=$(timeout 400 "$LG" --server "127.0.0.1:$port" --json "$@")
    echo "$line" >&2
    python3 - "$system" "$label" "$line" >> "$RESULTS" <<'EOF'
import json, sys
record = json.loads(sys.argv[3])
record["system"], record["label"] = sys.argv[1], sys.argv[2]
print(json.dumps(record))
EOF
}

# Lines in a log that mark a snapshot written.
snap_lines() {
    local system="$1" log="$2"
    if [[ "$system" == warden ]]; then
        sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -c 'snapshot taken' || true
    else
        grep -c 'Snapshotting: 0x' "$log" || true
    fi
}

# Appends a note about snapshots taken between log lines FROM and the end.
snap_note() {
    local system="$1" label="$2" log="$3" from="$4"
    python3 - "$system" "$label" "$log" "$from" >> "$RESULTS" <<'EOF'
import json, re, sys
system, label, path, start = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
text = re.sub(r"\x1b\[[0-9;]*m", "", open(path, errors="replace").read())
if system == "warden":
    hits = [l for l in text.splitlines() if "snapshot taken" in l]
    elapsed = [int(m.group(1)) for l in hits for m in [re.search(r"elapsed_ms=(\d+)", l)] if m]
else:
    hits = [l for l in text.splitlines() if "Snapshotting: 0x" in l]
    elapsed = []
busy = len([l for l in text.splitlines() if "Too busy to snap" in l])
new = hits[start:]
el = elapsed[start:]
print(json.dumps({"system": system, "label": label, "snapshots": len(new),
                  "snapshot_elapsed_ms": el, "too_busy_to_snap_total": busy}))
EOF
}

basic_suite() {
    local system="$1" r="$2" port data log
    port=$(free_ports 1)
    data="$WORK/$system-basic-$r/data"
    log="$WORK/$system-basic-$r/server.log"
    mkdir -p "$data"
    echo "== $system basic: port $port, data $data" >&2
    if [[ "$system" == warden ]]; then start_warden "$data" "$port" 100000 "$log"; else start_zk "$data" "$port" 100000 "$log"; fi
    wait_ready "$port" 60
    # Warm-up (JIT for the JVM; page cache and log preallocation for both); not recorded.
    timeout 60 "$LG" --server "127.0.0.1:$port" --workload create --connections 4 --in-flight 64 \
        --seconds 3 --ops 300000 --parent /warm >/dev/null
    load "$system" "serial#$r" "$port" --workload create-serial --connections 1 --ops 3000 --seconds 10 --value-bytes 100 --parent /serial
    load "$system" "create#$r" "$port" --workload create --connections 4 --in-flight 64 --ops 2000000 --seconds 10 --value-bytes 100 --parent /create
    load "$system" "set#$r" "$port" --workload set --connections 4 --in-flight 64 --ops 2000000 --seconds 10 --value-bytes 100 --keys 1000 --parent /set
    stop_server
    rm -rf "$data"
}

snapshot_suite() {
    local system="$1" port data log from round
    data="$WORK/$system-snap/data"
    log="$WORK/$system-snap/server.log"
    mkdir -p "$data"
    echo "== $system snapshot impact: data $data, $NODES nodes" >&2
    # A fresh port for every start: warden cannot re-bind a port that still has
    # connections in TIME_WAIT from its previous run (ZooKeeper can).
    start_one() {
        port=$(free_ports 1)
        if [[ "$system" == warden ]]; then start_warden "$data" "$port" "$1" "$log"; else start_zk "$data" "$port" "$1" "$log"; fi
        wait_ready "$port" 300
    }
    # Called in an `||` list (so one system's failure does not lose the
    # other's numbers): set -e is off in here, hence the explicit checks.
    start_one 100000000 || return 1
    load "$system" populate "$port" --workload populate --connections 4 --in-flight 64 --count "$NODES" --seconds 300 --value-bytes 100 --parent /big || return 1
    stop_server
    for round in $(seq 1 "$SNAP_ROUNDS"); do
        for mode in snap nosnap; do
            echo "-- $system round $round: $mode" >&2
            avail_kb=$(df -Pk "$WORK" | awk 'NR==2 {print $4}')
            if (( avail_kb < 8 * 1024 * 1024 )); then
                echo "less than 8 GiB free: skipping the rest of the $system snapshot rounds" >&2
                break 2
            fi
            if [[ $mode == snap ]]; then start_one 2000 || return 1; else start_one 100000000 || return 1; fi
            sleep 2
            from=$(snap_lines "$system" "$log")
            load "$system" "steady-$mode#$round" "$port" --workload set --connections 2 --in-flight 8 --ops 5000000 --seconds 15 \
                --value-bytes 100 --keys "$NODES" --skip-setup --parent /big || return 1
            snap_note "$system" "steady-$mode#$round" "$log" "$from"
            stop_server
        done
    done
    du -sh "$data" >&2 || true
    rm -rf "$data"
}

echo "machine: nproc=$(nproc) mem=$(free -g | awk '/Mem:/ {print $2}')GiB fs=$(stat -f -c %T "$WORK")" >&2
if [[ " $SUITES " == *" basic "* ]]; then
    for r in $(seq 1 "$BASIC_ROUNDS"); do
        basic_suite zookeeper "$r"
        basic_suite warden "$r"
    done
fi
if [[ " $SUITES " == *" snap "* ]]; then
    snapshot_suite warden || { echo "warden snapshot suite FAILED (log: $WORK/warden-snap/server.log)" >&2; stop_server; }
    if [[ "$ZK_SNAPSHOT" == 1 ]]; then
        snapshot_suite zookeeper || { echo "zookeeper snapshot suite FAILED (log: $WORK/zookeeper-snap/server.log)" >&2; stop_server; }
    fi
fi

python3 - "$RESULTS" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
runs = {(r["system"], r["label"]): r for r in rows if "throughput" in r}
print("\n%-10s %-16s %9s %7s %11s %8s %8s %9s %9s %6s" % (
    "system", "run", "ops", "secs", "ops/s", "p50us", "p99us", "p99.9us", "maxus", "errs"))
for r in rows:
    if "throughput" in r:
        print("%-10s %-16s %9d %7.2f %11.1f %8d %8d %9d %9d %6d" % (
            r["system"], r["label"], r["ops"], r["seconds"], r["throughput"], r["p50_us"],
            r["p99_us"], r["p999_us"], r["max_us"], r["errors"]))
    else:
        el = r["snapshot_elapsed_ms"]
        print("%-10s %-16s snapshots=%d elapsed_ms=%s too_busy_total=%d" % (
            r["system"], r["label"], r["snapshots"],
            ("min %d / median %d / max %d" % (min(el), sorted(el)[len(el)//2], max(el))) if el else "-",
            r["too_busy_to_snap_total"]))
print("\nwarden/zookeeper ratios per round (throughput: >1 = warden faster; latency: <1 = warden lower)")
for label in sorted({l for (_, l) in runs if l.split("#")[0] in ("serial", "create", "set")}):
    w, z = runs.get(("warden", label)), runs.get(("zookeeper", label))
    if w and z:
        print("%-9s throughput %.2f  p50 %.2f  p99 %.2f  p99.9 %.2f" % (
            label, w["throughput"] / z["throughput"], w["p50_us"] / max(z["p50_us"], 1),
            w["p99_us"] / max(z["p99_us"], 1), w["p999_us"] / max(z["p999_us"], 1)))
print("\nsnapshot impact per round (snapCount 2000 / no snapshots)")
for system in ("warden", "zookeeper"):
    for label in sorted({l for (sy, l) in runs if sy == system and l.startswith("steady-snap#")}):
        rnd = label.split("#")[1]
        s, n = runs.get((system, label)), runs.get((system, "steady-nosnap#" + rnd))
        if s and n:
            print("%-10s round %s  p99 %d/%d = %.2f  p99.9 %d/%d = %.2f  throughput %.2f" % (
                system, rnd, s["p99_us"], n["p99_us"], s["p99_us"] / max(n["p99_us"], 1),
                s["p999_us"], n["p999_us"], s["p999_us"] / max(n["p999_us"], 1),
                s["throughput"] / n["throughput"]))
EOF
