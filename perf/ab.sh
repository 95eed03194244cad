#!/usr/bin/env bash
# Before/after numbers for a change: two warden builds side by side, same
# load generator, one run. Both standalone servers run at once (each idle
# while the other is measured); every workload runs on both back to back,
# alternating which goes first, ROUNDS times.
#
#   perf/ab.sh OLD_BINARY NEW_BINARY [WORKLOAD...]   (default: a b c create-heavy)
#   ROUNDS=3 SECS=5 CONNS=8 INFLIGHT=32 RATE=0 ENSEMBLE=0 perf/ab.sh ...
#
# ENSEMBLE=1 runs two 3-node ensembles on loopback instead (connections
# spread over each ensemble's three servers); RATE=N offers N ops/s.
# CPU placement (`taskset -c` lists, as in compare.sh): SERVER_CPUS for the
# standalone servers, ENSEMBLE_CPUS one list per ensemble node, LOADGEN_CPUS.
# Each run's line carries its server threads' CPU (server_threads_ms).
# Standalone only: SNAP=N starts the servers with --snap-count N; PREFILL=N
# first creates N znodes of 100 bytes under /prefill on each server, and the
# workloads then run on those keys (e.g. PREFILL=1000000 SNAP=2000 ... set:
# writes while snapshots of a big tree are taken) and prints each server's
# resident memory once they hold them.
#
# Prints one line per run and, per workload, the mean ops/s and CPU µs/op of
# each build and their ratio (new ÷ old). Uses target/release/warden-loadgen
# (LG=PATH for another).
set -euo pipefail

OLD="${1:?usage: perf/ab.sh OLD_BINARY NEW_BINARY [WORKLOAD...]}"
NEW="${2:?usage: perf/ab.sh OLD_BINARY NEW_BINARY [WORKLOAD...]}"
shift 2
WORKLOADS=("$@")
[[ ${#WORKLOADS[@]} -gt 0 ]] || WORKLOADS=(a b c create-heavy)
ROUNDS="${ROUNDS:-3}"
SECS="${SECS:-5}"
CONNS="${CONNS:-8}"
INFLIGHT="${INFLIGHT:-32}"
RATE="${RATE:-0}"
ENSEMBLE="${ENSEMBLE:-0}"
REPO="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=perf/lib.sh
source "$REPO/perf/lib.sh"
SERVER_CPUS="${SERVER_CPUS:-}"
LOADGEN_CPUS="${LOADGEN_CPUS:-}"
read -r -a ENSEMBLE_CPUS <<<"${ENSEMBLE_CPUS:-}"
need_taskset "$SERVER_CPUS$LOADGEN_CPUS${ENSEMBLE_CPUS[*]}"
use_loadgen "$REPO"

WORK="$(mktemp -d /tmp/warden-ab.XXXXXX)"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2> /dev/null || true; done
    wait 2> /dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

declare -A SERVERS PIDLIST
for build in old new; do
    binary="$OLD"
    [[ $build == new ]] && binary="$NEW"
    if [[ $ENSEMBLE == 1 ]]; then
        read -r -a ports <<<"$(free_ports 9)"
        for n in 1 2 3; do
            dir="$WORK/$build/node$n"
            ensemble_node "$dir" "$n" "${ports[@]}"
            $(on_cpus "${ENSEMBLE_CPUS[$((n - 1))]:-}") "$binary" server --config "$dir/zoo.cfg" > "$dir/server.log" 2>&1 &
            PIDS+=($!)
            PIDLIST[$build]="${PIDLIST[$build]:-}${PIDLIST[$build]:+,}$!"
            SERVERS[$build]="${SERVERS[$build]:-}${SERVERS[$build]:+,}127.0.0.1:${ports[$((n - 1))]}"
        done
        for n in 0 1 2; do wait_serving "${ports[$n]}"; done
    else
        mkdir -p "$WORK/$build"
        port=$(free_ports 1)
        $(on_cpus "$SERVER_CPUS") "$binary" server --client-port "$port" --client-port-address 127.0.0.1 --data-dir "$WORK/$build" \
            --max-client-cnxns 0 ${SNAP:+--snap-count "$SNAP"} > "$WORK/$build.log" 2>&1 &
        PIDS+=($!)
        PIDLIST[$build]=$!
        SERVERS[$build]="127.0.0.1:$port"
        wait_serving "$port"
    fi
done

PREFILL="${PREFILL:-0}"
KEY_ARGS=()
if [[ $PREFILL -gt 0 ]]; then
    for build in old new; do
        "$LG" --server "${SERVERS[$build]}" --workload populate --count "$PREFILL" --value-bytes 100 --parent /prefill \
            --connections 4 --in-flight 64 --seconds 900 > /dev/null
    done
    KEY_ARGS=(--parent /prefill --keys "$PREFILL" --skip-setup)
    for build in old new; do
        for pid in ${PIDLIST[$build]//,/ }; do
            echo "$build: pid $pid $(grep VmRSS "/proc/$pid/status" | tr -s ' \t' ' ') after $PREFILL znodes"
        done
    done
fi

setup=standalone
[[ $ENSEMBLE == 1 ]] && setup="3-node ensembles"
echo "old: $OLD   new: $NEW   $setup, ${CONNS}x${INFLIGHT}, rate ${RATE}, ${SECS} s per run, ${ROUNDS} rounds; load avg $(cut -d' ' -f1-3 /proc/loadavg)"
RESULTS="$WORK/results.txt"
for workload in "${WORKLOADS[@]}"; do
    for round in $(seq "$ROUNDS"); do
        order="old new"
        (( round % 2 == 0 )) && order="new old"
        for build in $order; do
            keys=(--parent "/ab-$workload" --keys 1000)
            [[ ${#KEY_ARGS[@]} -gt 0 ]] && keys=("${KEY_ARGS[@]}")
            line=$($(on_cpus "$LOADGEN_CPUS") "$LG" --server "${SERVERS[$build]}" --pids "${PIDLIST[$build]}" --json --workload "$workload" \
                "${keys[@]}" --connections "$CONNS" --in-flight "$INFLIGHT" --seconds "$SECS" --rate "$RATE")
            echo "$workload $build $line" >> "$RESULTS"
            echo "$workload #$round $build: $line"
        done
    done
done

python3 - "$RESULTS" "old=${PIDLIST[old]}" "new=${PIDLIST[new]}" <<'EOF'
import json, sys, collections, re
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    workload, build, record = line.split(" ", 2)
    runs[(workload, build)].append(json.loads(record))
def mean(records, key):
    values = [float(r[key]) for r in records if r.get(key) is not None]
    return sum(values) / len(values) if values else float("nan")
print(f"\n| workload | old ops/s | new ops/s | new ÷ old | old p99 µs | new p99 µs | new ÷ old | old CPU µs/op | new CPU µs/op | new ÷ old |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for workload in dict.fromkeys(w for w, _ in runs):
    old, new = runs[(workload, "old")], runs[(workload, "new")]
    o, n = mean(old, "throughput"), mean(new, "throughput")
    oc, nc = mean(old, "cpu_us_per_op"), mean(new, "cpu_us_per_op")
    op, np_ = mean(old, "p99_us"), mean(new, "p99_us")
    print(f"| {workload} | {o:.0f} | {n:.0f} | {n / o:.2f} | {op:.0f} | {np_:.0f} | {np_ / op:.2f} | {oc:.1f} | {nc:.1f} | {nc / oc:.2f} |")

# Where each build's server CPU went: µs per op by server (node N of an
# ensemble) and thread name (glommio's executor id suffix dropped), the
# mean over rounds; threads under 2 % of the total are left out.
node_of = {}
for arg in sys.argv[2:]:
    build, pids = arg.split("=", 1)
    for index, pid in enumerate(p for p in pids.split(",") if p):
        node_of[pid] = (build, index + 1)
print("\nServer CPU µs/op by thread:\n")
for workload in dict.fromkeys(w for w, _ in runs):
    for build in ("old", "new"):
        per_thread = collections.defaultdict(float)
        records = runs[(workload, build)]
        for r in records:
            for key, ms in (r.get("server_threads_ms") or {}).items():
                pid, name = key.split("/", 1)
                node = node_of.get(pid, (build, 0))[1]
                name = re.sub(r"-\d+$", "", name) if name.startswith("warden-") else name
                per_thread[(node, name)] += ms * 1e3 / max(1, float(r["ops"])) / len(records)
        total = sum(per_thread.values())
        shown = sorted(((v, k) for k, v in per_thread.items() if v >= 0.02 * total), reverse=True)
        print(f"- {workload} {build}: " + ", ".join(f"node{k[0]} {k[1]} {v:.1f}" for v, k in shown))
EOF

# Snapshots each standalone server took during the runs, prefill included
# (count, median and max time in ms of those of the largest tree seen, from
# its "snapshot taken" log lines).
if [[ $ENSEMBLE != 1 ]]; then
    for build in old new; do
        { grep -o 'snapshot taken.*elapsed_ms[^ ]*' "$WORK/$build.log" || true; } | sed 's/\x1b\[[0-9;]*m//g' | sed -n 's/.*nodes=\([0-9]*\).*elapsed_ms=\([0-9]*\).*/\1 \2/p' |
            python3 -c '
import sys, statistics
rows = [tuple(map(int, line.split())) for line in sys.stdin]
if rows:
    largest = max(r[0] for r in rows)
    big = sorted(r[1] for r in rows if r[0] >= largest * 0.9)
    print(f"'"$build"' snapshots: {len(rows)}; of {len(big)} at >= 90 % of the largest tree ({largest} znodes): median {statistics.median(big):.0f} ms, max {big[-1]} ms")
else:
    print("'"$build"' snapshots: none")
'
    done
fi
