#!/usr/bin/env bash
# Runs the warden Python suites.
#
# With no arguments and WARDEN_TEST_TARGET unset, two passes:
#   1. every suite against a standalone warden (differential: DIFF_SEEDS, 40);
#   2. the compatibility suites (kazoo API, kazoo recipes, zkCli) and the
#      differential test against a 3-node warden ensemble on loopback, clients
#      spread over all three servers (differential: ENSEMBLE_DIFF_SEEDS, 15).
# With WARDEN_TEST_TARGET set, or with arguments, one pass:
#   WARDEN_TEST_TARGET=warden|apache    every suite against one standalone server
#   WARDEN_TEST_TARGET=ensemble         pass 2 only (DIFF_SEEDS defaults to 15);
#   WARDEN_TEST_TARGET=apache-ensemble  the same against an Apache 3.8 ensemble,
#                                       to check the suites' expectations
#   arguments go to pytest (e.g. tests/python/run.sh test_kazoo_api.py -k ttl),
#   and replace the ensemble pass's list of suites.
#   WARDEN_BIN=path                   warden binary (default <repo>/target/release/warden)
#   DIFF_SEEDS / DIFF_STEPS / DIFF_AGAINST=apache   differential test knobs
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY="${PYTHON:-python3}"

# 1. Python requirements (only if something is missing or at another version).
if ! "$PY" - "$HERE/requirements.txt" <<'PYEOF'
import sys
from importlib.metadata import version, PackageNotFoundError
ok = True
for line in open(sys.argv[1]):
    line = line.strip()
    if not line or line.startswith("#"):
        continue
    name, want = line.split("==")
    try:
        ok &= version(name) == want
    except PackageNotFoundError:
        ok = False
sys.exit(0 if ok else 1)
PYEOF
then
    echo "run.sh: installing Python requirements" >&2
    "$PY" -m pip install -q -r "$HERE/requirements.txt"
fi

# 2. Apache ZooKeeper (reference server and zkCli.sh).
if [ ! -e /usr/share/java/zookeeper.jar ] && ! ls /usr/share/zookeeper/lib/zookeeper-*.jar >/dev/null 2>&1; then
    echo "run.sh: Apache ZooKeeper not found; installing the Debian package" >&2
    if ! { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y zookeeper; }; then
        echo "run.sh: FAILED to install Apache ZooKeeper (apt-get install -y zookeeper)" >&2
        exit 1
    fi
fi
command -v java >/dev/null || { echo "run.sh: java not found (install default-jre-headless)" >&2; exit 1; }
[ -x /usr/share/zookeeper/bin/zkCli.sh ] || { echo "run.sh: /usr/share/zookeeper/bin/zkCli.sh missing" >&2; exit 1; }

# 3. The tests (per-test timeout from pytest.ini, overridable with PYTEST_TIMEOUT).
cd "$HERE"
PYTEST=("$PY" -m pytest -x -q -ra --timeout="${PYTEST_TIMEOUT:-120}")
# What runs against an ensemble (test_restart_kazoo.py is standalone-only).
ENSEMBLE_SUITES=(test_kazoo_api.py test_kazoo_recipes.py test_zkcli.py test_differential.py)

case "${WARDEN_TEST_TARGET:-}" in
    "")
        if [ $# -gt 0 ]; then
            WARDEN_TEST_TARGET=warden exec "${PYTEST[@]}" "$@"
        fi
        echo "run.sh: pass 1/2: standalone warden, every suite" >&2
        WARDEN_TEST_TARGET=warden "${PYTEST[@]}"
        echo "run.sh: pass 2/2: 3-node warden ensemble: ${ENSEMBLE_SUITES[*]}" >&2
        WARDEN_TEST_TARGET=ensemble DIFF_SEEDS="${ENSEMBLE_DIFF_SEEDS:-15}" \
            exec "${PYTEST[@]}" "${ENSEMBLE_SUITES[@]}"
        ;;
    ensemble|apache-ensemble)
        export DIFF_SEEDS="${DIFF_SEEDS:-${ENSEMBLE_DIFF_SEEDS:-15}}"
        if [ $# -gt 0 ]; then
            exec "${PYTEST[@]}" "$@"
        fi
        exec "${PYTEST[@]}" "${ENSEMBLE_SUITES[@]}"
        ;;
    *)
        exec "${PYTEST[@]}" "$@"
        ;;
esac
