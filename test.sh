#!/usr/bin/env bash
# Runs every warden test: Rust unit and integration tests, then the Python
# suites (kazoo API and recipes, zkCli.sh, differential against Apache
# ZooKeeper). Installs what it needs on a fresh machine: the Debian
# `zookeeper` package (reference server and zkCli.sh) and the Python packages
# in tests/python/requirements.txt. Any missing prerequisite fails loudly.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

if ! command -v cargo >/dev/null; then
    echo "test.sh: cargo not found; install the Rust toolchain (rustup)" >&2
    exit 1
fi
if [ ! -e /usr/share/java/zookeeper.jar ]; then
    echo "test.sh: installing Apache ZooKeeper (Debian package zookeeper)" >&2
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq zookeeper >/dev/null; }; then
        echo "test.sh: FAILED to install the zookeeper package" >&2
        exit 1
    fi
fi

echo "== cargo build --release"
cargo build --release --locked
echo "== cargo test --release (unit, golden, fuzz smoke, tidy, server behaviour, zookeeper-client)"
cargo test --release --locked
echo "== fuzz smoke (cargo-fuzz on stable: every target briefly, from fuzz/corpus and fuzz/regressions)"
FUZZ_SECONDS="${FUZZ_SECONDS:-50}" fuzz/smoke.sh
echo "== python suites (kazoo, recipes, zkCli.sh, differential vs Apache ZooKeeper)"
WARDEN_BIN="$PWD/target/release/warden" bash tests/python/run.sh
