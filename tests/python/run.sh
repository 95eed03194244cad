#!/usr/bin/env bash
# Runs the warden Python suites.
#   WARDEN_TEST_TARGET=warden|apache  target of the compat suites (default warden)
#   WARDEN_BIN=path                   warden binary (default <repo>/target/release/warden)
#   DIFF_SEEDS / DIFF_STEPS / DIFF_AGAINST=apache   differential test knobs
# Extra arguments go to pytest (e.g. tests/python/run.sh test_kazoo_api.py -k ttl).
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
exec "$PY" -m pytest -x -q -ra --timeout="${PYTEST_TIMEOUT:-120}" "$@"
