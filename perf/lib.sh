# Shared by the perf scripts (sourced).

# on_cpus CPUS: the command prefix that runs a command on CPUS (a `taskset -c`
# list), nothing if CPUS is empty; used unquoted. taskset execs the command,
# so $! stays the server's pid.
on_cpus() {
    [[ -z $1 ]] || echo "taskset -c $1"
}

# need_taskset CPUS...: fails loudly if any placement is asked for and
# taskset is missing.
need_taskset() {
    if [[ -n "$*" ]] && ! command -v taskset > /dev/null; then
        echo "CPU placement asked for, but taskset is missing (apt-get install util-linux)" >&2
        exit 1
    fi
}
