#!/usr/bin/env bash
# Resident memory of one warden build holding a big tree, before and after a
# restart: a standalone server and a 3-node ensemble on loopback, each loaded
# with COUNT znodes of 100 bytes (snapshots off, so a restart replays the log),
# then stopped and started again on the same data.
#
#   perf/rss.sh BINARY [COUNT]      (COUNT default 300000)
#
# Prints VmRSS (/proc/PID/status) of every server after loading and again
# once the restarted servers serve. Run two builds one after the other to
# compare them. Uses target/release/warden-loadgen.
set -euo pipefail

BINARY="${1:?usage: perf/rss.sh BINARY [COUNT]}"
COUNT="${2:-300000}"
REPO="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=perf/lib.sh
source "$REPO/perf/lib.sh"
use_loadgen "$REPO"

WORK="$(mktemp -d /tmp/warden-rss.XXXXXX)"
PIDS=()
stop_all() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2> /dev/null || true; done
    for pid in "${PIDS[@]}"; do
        while kill -0 "$pid" 2> /dev/null; do sleep 0.1; done
    done
    PIDS=()
}
trap 'stop_all; rm -rf "$WORK"' EXIT

report() {  # report LABEL PORT...
    local label=$1 i=0
    shift
    sleep 3
    for port in "$@"; do
        local pid=${PIDS[$i]} mode
        mode=$(srvr "$port" | sed -n 's/^Mode: //p')
        echo "$label: $mode pid $pid $(grep VmRSS "/proc/$pid/status" | tr -s ' \t' ' ')"
        i=$((i + 1))
    done
}

echo "build: $BINARY   $COUNT znodes of 100 bytes   load avg $(cut -d' ' -f1-3 /proc/loadavg)"

# Standalone.
port=$(free_ports 1)
start_standalone() {
    "$BINARY" server --client-port "$port" --client-port-address 127.0.0.1 --data-dir "$WORK/standalone" \
        --max-client-cnxns 0 --snap-count 100000000 >> "$WORK/standalone.log" 2>&1 &
    PIDS+=($!)
    wait_serving "$port"
}
mkdir -p "$WORK/standalone"
start_standalone
"$LG" --server "127.0.0.1:$port" --workload populate --count "$COUNT" --value-bytes 100 --parent /big \
    --connections 4 --in-flight 64 --seconds 900 > /dev/null
report "standalone, loaded" "$port"
stop_all
start_standalone
report "standalone, restarted" "$port"
stop_all

# 3-node ensemble.
read -r -a ports <<<"$(free_ports 9)"
for n in 1 2 3; do
    ensemble_node "$WORK/node$n" "$n" "${ports[@]}" "snapCount=100000000"
done
start_ensemble() {
    for n in 1 2 3; do
        "$BINARY" server --config "$WORK/node$n/zoo.cfg" >> "$WORK/node$n/server.log" 2>&1 &
        PIDS+=($!)
    done
    for n in 0 1 2; do wait_serving "${ports[$n]}"; done
}
start_ensemble
"$LG" --server "127.0.0.1:${ports[0]},127.0.0.1:${ports[1]},127.0.0.1:${ports[2]}" --workload populate \
    --count "$COUNT" --value-bytes 100 --parent /big --connections 4 --in-flight 64 --seconds 900 > /dev/null
report "ensemble, loaded" "${ports[0]}" "${ports[1]}" "${ports[2]}"
stop_all
start_ensemble
report "ensemble, restarted" "${ports[0]}" "${ports[1]}" "${ports[2]}"
