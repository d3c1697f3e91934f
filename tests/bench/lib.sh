# shellcheck shell=bash disable=SC2034  # sets SIZES and RUNS for the sourcing script
# Shared by the benchmark drivers (run.sh, snapshots.sh, daemon.sh): sourced, not run.
# Expects SCRIPT_NAME to be set by the caller, and BENCH and GEN for the trees.

# Peers run with a neutral git config: the user's global config (signing,
# fsmonitor, hooks paths...) must not change what is measured.
export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
export GIT_AUTHOR_NAME=bench GIT_AUTHOR_EMAIL=bench@localhost
export GIT_COMMITTER_NAME=bench GIT_COMMITTER_EMAIL=bench@localhost
export LC_ALL=C

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { printf '\n%s: ERROR: %s\n' "$SCRIPT_NAME" "$*" >&2; exit 1; }
banner() { # loud, multi-line: for things that change how the numbers must be read
    printf '\n' >&2
    printf '!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n' >&2
    printf '!!! %s\n' "$@" >&2
    printf '!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\n' >&2
}

# Prints the header comment (lines 2..$1 of the calling script) and exits with $2.
usage_from_header() {
    sed -n "2,${1}p" "${BASH_SOURCE[1]}" | sed 's/^# \{0,1\}//'
    exit "${2:-0}"
}

# --files VALUE -> SIZES
parse_sizes() {
    case ${1:-} in
        10000 | 100000) SIZES=("$1") ;;
        both) SIZES=(10000 100000) ;;
        *) die "--files takes 10000, 100000 or both" ;;
    esac
}

# --runs VALUE -> RUNS
parse_runs() {
    [[ ${1:-} =~ ^[1-9][0-9]*$ ]] || die "--runs takes a positive number"
    RUNS=$1
}

# One benchmark at a time, whichever driver: they all take $BENCH/.lock. Also makes
# the directories given.
take_lock() {
    mkdir -p "$BENCH/trees" "$@"
    exec 9>>"$BENCH/.lock"
    flock -n 9 || die "another benchmark holds $BENCH/.lock ($(cat "$BENCH/.lock.pid" 2>/dev/null || echo '?')): wait for it"
    echo "pid $$ ($SCRIPT_NAME), started $(date '+%H:%M:%S')" >"$BENCH/.lock.pid"
}

# The generated tree of $1 files under $BENCH/trees, with its stamp: generated once,
# reused by every driver.
ensure_tree() {
    local n=$1 dir="$BENCH/trees/tree-$1" stamp
    stamp="gen_tree.py $(sha256sum "$GEN" | cut -c1-16) --files $n"
    if [[ -d $dir && -f $dir.stamp && $(<"$dir.stamp") == "$stamp" ]]; then
        log "reusing $dir"
        return
    fi
    log "generating $dir ($n files)"
    rm -rf -- "$dir" "$dir.tmp" "$dir.stamp" "$dir-mod" "$dir-mod.stamp"
    python3 "$GEN" "$dir.tmp" --files "$n" >&2
    mv "$dir.tmp" "$dir"
    echo "$stamp" >"$dir.stamp"
}

# Share of CPU time (%) that was busy over the last 2 s, from /proc/stat. Unlike
# the load average it does not lag: a build that just ended does not count.
cpu_busy() {
    local a b
    a=$(awk '/^cpu / { print $2+$3+$4+$7+$8+$9, $5+$6 }' /proc/stat)
    sleep 2
    b=$(awk '/^cpu / { print $2+$3+$4+$7+$8+$9, $5+$6 }' /proc/stat)
    awk -v a="$a" -v b="$b" 'BEGIN { split(a, x, " "); split(b, y, " ")
        busy = y[1] - x[1]; idle = y[2] - x[2]
        printf "%.0f", (busy + idle) ? 100 * busy / (busy + idle) : 0 }'
}
