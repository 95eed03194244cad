#!/usr/bin/env bash
# Writes while the leader syncs a learner with a SNAP: a 3-node ensemble of
# one build holding COUNT znodes of 100 bytes; one follower is stopped and
# its data wiped, so that it comes back empty and needs the whole tree. A
# steady setData load (RATE ops/s, on the leader and the other follower)
# runs for SECS seconds; the emptied follower restarts 2 s into it. Prints
# the load's latencies (max_us shows a stall of the write path) and how long
# the follower took to serve again. Run two builds one after the other to
# compare them.
#
#   perf/snap_sync.sh BINARY [COUNT]     (COUNT default 300000)
#   RATE=2000 SECS=12 perf/snap_sync.sh ...      (RATE=0: as fast as it goes)
#   KEEP=1 keeps the servers' logs (the directory is printed).
#   TIMELINE=1 runs the load one second at a time and prints each second's
#   latencies instead (the follower restarts 2 s in).
set -euo pipefail

BINARY="${1:?usage: perf/snap_sync.sh BINARY [COUNT]}"
COUNT="${2:-300000}"
RATE="${RATE:-2000}"
SECS="${SECS:-12}"
REPO="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=perf/lib.sh
source "$REPO/perf/lib.sh"
use_loadgen "$REPO"

WORK="$(mktemp -d /tmp/warden-snapsync.XXXXXX)"
declare -A PID
cleanup() {
    for pid in "${PID[@]}"; do kill "$pid" 2> /dev/null || true; done
    wait 2> /dev/null || true
    if [[ -n ${KEEP:-} ]]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

read -r -a ports <<<"$(free_ports 9)"
start() {  # start N
    local n=$1 dir="$WORK/node$1"
    "$BINARY" server --config "$dir/zoo.cfg" >> "$dir/server.log" 2>&1 &
    PID[$n]=$!
}
for n in 1 2 3; do
    ensemble_node "$WORK/node$n" "$n" "${ports[@]}"
    start "$n"
done
for n in 0 1 2; do wait_serving "${ports[$n]}"; done

all="127.0.0.1:${ports[0]},127.0.0.1:${ports[1]},127.0.0.1:${ports[2]}"
"$LG" --server "$all" --workload populate --count "$COUNT" --value-bytes 100 --parent /big \
    --connections 4 --in-flight 64 --seconds 900 > /dev/null

leader=0
for n in 1 2 3; do
    srvr "${ports[$((n - 1))]}" | grep -q "Mode: leader" && leader=$n
done
[[ $leader != 0 ]] || { echo "no leader" >&2; exit 1; }
lagging=$(( leader % 3 + 1 ))
other=$(( lagging % 3 + 1 ))
[[ $other == "$leader" ]] && other=$(( other % 3 + 1 ))
kill "${PID[$lagging]}"
wait "${PID[$lagging]}" 2> /dev/null || true
find "$WORK/node$lagging/data" -mindepth 1 -not -name myid -delete

load_servers="127.0.0.1:${ports[$((leader - 1))]},127.0.0.1:${ports[$((other - 1))]}"
if [[ -n ${TIMELINE:-} ]]; then
    # One load run per second instead, each printing its latencies.
    (
        for second in $(seq "$SECS"); do
            "$LG" --server "$load_servers" --workload set --keys "$COUNT" --skip-setup --parent /big \
                --connections 4 --in-flight 8 --rate "$RATE" --seconds 1 |
                sed -n "s/.* throughput=\([0-9.]*\).* p50_us=\([0-9]*\) p99_us=\([0-9]*\).* max_us=\([0-9]*\).*/second $second: ops\/s \1 p50 \2 p99 \3 max \4 µs/p"
        done
    ) &
    load=$!
    sleep 2
    start "$lagging"
    wait "$load"
    exit 0
fi
"$LG" --server "$load_servers" --json \
    --workload set --keys "$COUNT" --skip-setup --parent /big --connections 4 --in-flight 8 \
    --rate "$RATE" --seconds "$SECS" > "$WORK/load.json" &
load=$!
sleep 2
restarted=$(date +%s.%N)
start "$lagging"
wait_serving "${ports[$((lagging - 1))]}"
served=$(date +%s.%N)
wait "$load"

python3 - "$WORK/load.json" "$restarted" "$served" "$COUNT" "$RATE" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
back = float(sys.argv[3]) - float(sys.argv[2])
print(f"{sys.argv[4]} znodes, setData at {sys.argv[5]}/s: ops/s {r['throughput']:.0f}, p50 {r['p50_us']} µs, "
      f"p99 {r['p99_us']} µs, p99.9 {r['p999_us']} µs, max {r['max_us']} µs, errors {r['errors']}; "
      f"the emptied follower served again {back:.2f} s after its restart")
EOF
grep -h -o 'sent a snapshot.*' "$WORK"/node*/server.log | sed 's/\x1b\[[0-9;]*m//g' | head -3
