#!/usr/bin/env bash
# Packs what perf/compare.sh needs for a machine that has no Debian zookeeper
# package, no JDK and no Rust toolchain, and cannot fetch them: stripped
# warden and warden-loadgen, ZooKeeper's jars, and a JRE cut to the modules
# ZooKeeper uses (jlink). Built from this machine's packages and build.
#
#   perf/bundle.sh DIR
#   # then, on the other machine, in a checkout that holds DIR:
#   tar -C /tmp -xJf DIR/jre.tar.xz
#   JAVA=/tmp/jre/bin/java ZK_JARS=DIR/zkjars ZK_VERSION="$(cat DIR/zk-version)" \
#       BIN_DIR=DIR/bin COMMIT="$(cat DIR/commit)" perf/compare.sh
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
DIR="${1:?usage: $0 DIR}"
ZK_JARS="${ZK_JARS:-/usr/share/java}"
# The module list is jdeps' answer for these jars (java.base, java.logging,
# java.management, java.naming, java.security.jgss, java.security.sasl,
# jdk.unsupported) plus what ZooKeeper reaches by reflection or JMX.
MODULES=java.base,java.logging,java.management,java.naming,java.security.jgss,java.security.sasl,jdk.unsupported,jdk.management,jdk.security.auth,java.xml,java.scripting,java.sql

for tool in jlink strip; do
    command -v "$tool" >/dev/null || { echo "$tool is missing (apt-get install openjdk-17-jdk-headless binutils)" >&2; exit 1; }
done
[[ -f $ZK_JARS/zookeeper.jar ]] || { echo "no ZooKeeper jars in $ZK_JARS (apt-get install zookeeper)" >&2; exit 1; }
eval "$(grep '^ZK_JAR_NAMES=' "$REPO/perf/compare.sh")"

(cd "$REPO" && cargo build --release --bins)
rm -rf "$DIR"
mkdir -p "$DIR/bin" "$DIR/zkjars"
for bin in warden warden-loadgen; do strip -o "$DIR/bin/$bin" "$REPO/target/release/$bin"; done
for jar in $ZK_JAR_NAMES; do
    [[ ! -f $ZK_JARS/$jar.jar ]] || cp -L "$ZK_JARS/$jar.jar" "$DIR/zkjars/"
done
jre="$(mktemp -d)"
jlink --add-modules "$MODULES" --strip-debug --no-header-files --no-man-pages --compress=2 --output "$jre/jre"
tar -C "$jre" -cJf "$DIR/jre.tar.xz" jre
rm -rf "$jre"
echo "$(dpkg-query -W -f='${Version}' zookeeper 2>/dev/null || echo unknown) (the Debian package's jars)" > "$DIR/zk-version"
commit="$(git -C "$REPO" rev-parse --short HEAD)"
dirty="$(git -C "$REPO" status --porcelain | grep -c . || true)"
[[ $dirty == 0 ]] || commit="$commit plus $dirty uncommitted file(s)"
echo "$commit" > "$DIR/commit"
du -sh "$DIR"/*
