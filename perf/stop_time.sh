#!/usr/bin/env bash
# Time from SIGTERM to exit for a standalone server holding the tree that
# LOAD seconds of create-heavy built (LOAD=30: about 2.2M znodes here).
#
#   LOAD=30 perf/stop_time.sh BINARY
#
# Uses target/release/warden-loadgen. Prints the seconds from the signal to
# the exit and the server's last log lines about stopping.
set -euo pipefail

BINARY="${1:?usage: perf/stop_time.sh BINARY}"
LOAD="${LOAD:-30}"
REPO="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=perf/lib.sh
source "$REPO/perf/lib.sh"
use_loadgen "$REPO"

WORK="$(mktemp -d /tmp/warden-stop.XXXXXX)"
PID=""
cleanup() {
    [[ -n $PID ]] && kill "$PID" 2> /dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

PORT=$(free_ports 1)
"$BINARY" server --client-port "$PORT" --client-port-address 127.0.0.1 --data-dir "$WORK/data" --max-client-cnxns 0 > "$WORK/log" 2>&1 &
PID=$!
wait_serving "$PORT"
"$LG" --server "127.0.0.1:$PORT" --workload create-heavy --parent /stop --connections 8 --in-flight 32 --seconds "$LOAD" > /dev/null
sleep 3
started=$(date +%s.%N)
kill -TERM "$PID"
wait "$PID" || true
ended=$(date +%s.%N)
PID=""
echo "exit $(python3 -c "print(round($ended - $started, 2))") s after SIGTERM"
grep -E "shutdown requested|snapshot (taken|abandoned)|warden stopped" "$WORK/log" | tail -3 | sed 's/\x1b\[[0-9;]*m//g' | cut -c1-160
