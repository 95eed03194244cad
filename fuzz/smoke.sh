#!/usr/bin/env bash
# Fuzz smoke run: builds every cargo-fuzz target and runs each briefly under
# libFuzzer, from its seed corpus (corpus/<target>) and past crashes
# (regressions/<target>). Fails loudly on a crash, a panic, an input slower
# than FUZZ_TIMEOUT, memory above FUZZ_RSS_LIMIT_MB, or a missing tool.
#
# Works on stable Rust: with FUZZ_SANITIZER=none (the default) cargo-fuzz
# needs no nightly flag at all; with FUZZ_SANITIZER=address it passes
# -Zsanitizer, which stable accepts only with RUSTC_BOOTSTRAP=1 (set below).
#
# Environment (all optional):
#   FUZZ_SECONDS        total fuzzing time, split evenly across targets (default 100)
#   FUZZ_TARGETS        space-separated targets to run (default: all)
#   FUZZ_SANITIZER      none (default) or address
#   FUZZ_TIMEOUT        seconds one input may take (default 10)
#   FUZZ_RSS_LIMIT_MB   memory limit of the fuzzing process (default 2048)
#   FUZZ_MALLOC_LIMIT_MB  largest single allocation, address sanitizer only (default 512)
#   FUZZ_KEEP           a directory to keep the grown corpora and crash artifacts in
#                       (default: a temporary directory, removed at the end)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

CARGO_FUZZ_VERSION=0.13.2
FUZZ_SECONDS=${FUZZ_SECONDS:-100}
FUZZ_SANITIZER=${FUZZ_SANITIZER:-none}
FUZZ_TIMEOUT=${FUZZ_TIMEOUT:-10}
FUZZ_RSS_LIMIT_MB=${FUZZ_RSS_LIMIT_MB:-2048}
FUZZ_MALLOC_LIMIT_MB=${FUZZ_MALLOC_LIMIT_MB:-512}

fail() {
    echo "fuzz/smoke.sh: FAILED: $*" >&2
    exit 1
}

command -v cargo >/dev/null || fail "cargo not found; install the Rust toolchain (rustup)"
if ! cargo fuzz --version 2>/dev/null | grep -q " $CARGO_FUZZ_VERSION\$"; then
    echo "fuzz/smoke.sh: installing cargo-fuzz $CARGO_FUZZ_VERSION" >&2
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked ||
        fail "could not install cargo-fuzz $CARGO_FUZZ_VERSION"
fi
command -v c++ >/dev/null || fail "no C++ compiler (c++): libfuzzer-sys builds libFuzzer from source"

case "$FUZZ_SANITIZER" in
    none) ;;
    address) export RUSTC_BOOTSTRAP=1 ;;
    *) fail "FUZZ_SANITIZER must be none or address, not $FUZZ_SANITIZER" ;;
esac
# Cargo caches rustc's answers, failures included, keyed by the flags but not
# by RUSTC_BOOTSTRAP: one run without it would poison every later run with
# "the option Z is only accepted on the nightly compiler".
export CARGO_CACHE_RUSTC_INFO=0

targets=${FUZZ_TARGETS:-$(cargo fuzz list)}
[ -n "$targets" ] || fail "cargo fuzz list found no targets"
count=$(wc -w <<<"$targets")
seconds=$(( FUZZ_SECONDS / count ))
[ "$seconds" -ge 1 ] || seconds=1

if [ -n "${FUZZ_KEEP:-}" ]; then
    work=$FUZZ_KEEP
    mkdir -p "$work"
else
    work=$(mktemp -d "${TMPDIR:-/tmp}/warden-fuzz.XXXXXX")
    trap 'rm -rf "$work"' EXIT
fi

echo "== cargo fuzz build (sanitizer $FUZZ_SANITIZER)"
cargo fuzz build --sanitizer "$FUZZ_SANITIZER" --debug-assertions || fail "cargo fuzz build"

summary=()
for target in $targets; do
    [ -d "corpus/$target" ] || fail "no seed corpus in fuzz/corpus/$target"
    # libFuzzer writes new inputs to the first corpus directory: a scratch
    # one, so the checked-in seeds stay as generated.
    mkdir -p "$work/corpus/$target" "$work/artifacts/$target"
    corpora=("$work/corpus/$target" "corpus/$target")
    [ -d "regressions/$target" ] && corpora+=("regressions/$target")
    limits=(-rss_limit_mb="$FUZZ_RSS_LIMIT_MB" -timeout="$FUZZ_TIMEOUT")
    [ "$FUZZ_SANITIZER" = address ] && limits+=(-malloc_limit_mb="$FUZZ_MALLOC_LIMIT_MB")
    log="$work/$target.log"
    echo "== $target: ${seconds}s"
    if ! cargo fuzz run --sanitizer "$FUZZ_SANITIZER" --debug-assertions "$target" "${corpora[@]}" -- \
        -max_total_time="$seconds" "${limits[@]}" -artifact_prefix="$work/artifacts/$target/" \
        -print_final_stats=1 >"$log" 2>&1; then
        tail -n 60 "$log" >&2
        echo "fuzz/smoke.sh: crashing input(s):" >&2
        ls -l "$work/artifacts/$target" >&2 || true
        if [ -z "${FUZZ_KEEP:-}" ]; then
            mkdir -p artifacts/"$target"
            cp "$work/artifacts/$target"/* artifacts/"$target"/ 2>/dev/null || true
            echo "fuzz/smoke.sh: copied to fuzz/artifacts/$target/" >&2
        fi
        fail "$target: libFuzzer found a failure; fix it, then add the input to fuzz/regressions/$target/ (fuzz/README.md)"
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    coverage=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1)
    summary+=("$target: ${runs:-?} inputs, $coverage")
done
echo "== fuzz smoke: clean"
printf '   %s\n' "${summary[@]}"
