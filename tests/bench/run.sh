#!/usr/bin/env bash
# Benchmark driver for the ws store, run by hand as root (never by CI).
#
#   tests/bench/run.sh [--files 10000|100000|both] [--runs N] [--no-ws] [--no-build]
#                      [--delete-between]
#
# Measures `ws store import/diff/checkout` against the tools a user would use
# instead (b3sum, ostree, git, find, cp), all in the same run, and prints a
# markdown table of median wall times and peak RSS. See tests/bench/README.md.
#
# Environment: WS_BENCH_DIR (scratch dir, default /var/tmp/ws-bench),
#              WS_BENCH_TARGET (cargo target dir, default /var/tmp/ws-bench-target).
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
GEN="$SCRIPT_DIR/gen_tree.py"
SCRIPT_NAME=run.sh
# shellcheck source=tests/bench/lib.sh
source "$SCRIPT_DIR/lib.sh"

BENCH=${WS_BENCH_DIR:-/var/tmp/ws-bench}
TARGET=${WS_BENCH_TARGET:-/var/tmp/ws-bench-target}
WS="$TARGET/release/ws"

SIZES=(10000 100000)
RUNS=5
WITH_WS=1      # --no-ws: measure the peers only (e.g. while ws is unfinished)
BUILD=1        # --no-build: use the ws binary already in $TARGET
DEFER_DELETE=1 # --delete-between: delete scratch dirs between runs (see retire)
MODIFY_K=10    # files changed between the two trees of the diff benchmark
MODIFY_SEED=1

# ---------------------------------------------------------------- helpers

usage() { usage_from_header 12 "${1:-0}"; }

parse_args() {
    while (($#)); do
        case $1 in
            --files) parse_sizes "${2:-}"; shift 2 ;;
            --runs) parse_runs "${2:-}"; shift 2 ;;
            --no-ws) WITH_WS=0; shift ;;
            --no-build) BUILD=0; shift ;;
            --delete-between) DEFER_DELETE=0; shift ;;
            -h | --help) usage 0 ;;
            *) printf 'unknown argument: %s\n\n' "$1" >&2; usage 2 ;;
        esac
    done
}

# ---------------------------------------------------------------- setup

install_tools() {
    # command -> Debian package
    local -A pkg=([b3sum]=b3sum [ostree]=ostree [hyperfine]=hyperfine [git]=git
                  [/usr/bin/time]=time [python3]=python3 [fincore]=util-linux)
    local missing=() cmd
    for cmd in "${!pkg[@]}"; do
        command -v "$cmd" >/dev/null 2>&1 || missing+=("${pkg[$cmd]}")
    done
    ((${#missing[@]} == 0)) && return
    log "installing missing tools: ${missing[*]}"
    ((EUID == 0)) || die "missing tools (${missing[*]}) and not root: install them or run as root"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

build_ws() {
    if ((!WITH_WS)); then
        log "--no-ws: not building ws, measuring the peers only"
        return
    fi
    if ((BUILD)); then
        log "building ws (release) into $TARGET"
        command -v cargo >/dev/null ||
            die "cargo not found: cannot build ws (under sudo, PATH may lack ~/.cargo/bin: try" \
                "'sudo env PATH=\"\$PATH\" $0 ...'; or use --no-ws to measure the peers only)"
        (cd "$REPO_ROOT" && CARGO_TARGET_DIR="$TARGET" cargo build --release -p ctl) ||
            die "cargo build --release -p ctl failed (use --no-ws to measure the peers only)"
    fi
    [[ -x $WS ]] || die "ws binary not found at $WS (build failed? use --no-ws to measure the peers only)"
    if ((BUILD)); then
        WS_BUILT="built now from $(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo 'no commit') + working tree"
    else
        WS_BUILT="prebuilt (--no-build), binary dated $(date -r "$WS" '+%Y-%m-%d %H:%M')"
    fi
    # The store subcommands are what is measured: fail now, not after an hour.
    "$WS" store --help >/dev/null 2>&1 ||
        die "$WS has no working 'store' subcommand ('ws store --help' failed); use --no-ws to measure the peers only"
}

WS_BUILT=""

# COLD=1 when `echo 3 > drop_caches` works and really empties the page cache.
COLD=0
check_drop_caches() {
    local probe
    probe=$(find "$BENCH/trees" -type f -size +1M -print -quit 2>/dev/null || true)
    [[ -n $probe ]] && cat "$probe" >/dev/null
    if ! { sync && echo 3 >/proc/sys/vm/drop_caches; } 2>/dev/null; then
        banner "echo 3 > /proc/sys/vm/drop_caches FAILED (not root, or /proc/sys read-only)." \
               "The 'cold' rows below are NOT cold: the tree is in the page cache."
        return
    fi
    # Check that it worked: the probe file must have no page left in memory.
    if [[ -n $probe ]] && command -v fincore >/dev/null; then
        local pages
        pages=$(fincore --noheadings --output PAGES "$probe" | tr -d ' ')
        if [[ $pages != 0 ]]; then
            banner "drop_caches returned success but $probe still has $pages pages cached." \
                   "The 'cold' rows below are NOT reliably cold."
            return
        fi
    fi
    COLD=1
    log "drop_caches works (checked with fincore)"
}

drop_caches() {
    ((COLD)) || return 0
    sync
    echo 3 >/proc/sys/vm/drop_caches
}

# Sequential read speed right after drop_caches: in a VM the host may still
# cache the virtual disk, which makes "cold" faster than a real cold disk.
cold_read_probe() {
    local f
    f=$(find "$BENCH/trees" -type f -size +4M -print -quit 2>/dev/null || true)
    [[ -n $f ]] || { echo "n/a"; return; }
    drop_caches
    local t0=${EPOCHREALTIME/./} size
    cat "$f" >/dev/null
    local us=$((${EPOCHREALTIME/./} - t0))
    size=$(stat -c %s "$f")
    awk -v b="$size" -v us="$us" 'BEGIN { printf "%.0f MB/s (%.1f MB file)", b / us, b / 1e6 }'
}

machine_description() {
    local fs mem cpu virt
    fs=$(findmnt -n -o FSTYPE -T "$BENCH" 2>/dev/null || stat -f -c %T "$BENCH")
    mem=$(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
    cpu=$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)
    virt=$(systemd-detect-virt 2>/dev/null || echo unknown)
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "- CPU: ${cpu:-unknown}, nproc $(nproc)"
    echo "- memory: $mem"
    echo "- kernel: $(uname -r) ($(uname -m)), virtualization: $virt"
    echo "- scratch dir: $BENCH on $fs ($(df -P "$BENCH" | awk 'NR==2 { print $1 }'))"
    if ((COLD)); then
        echo "- cold caches: drop_caches works; sequential read after it: $(cold_read_probe)"
    else
        echo "- cold caches: **NOT AVAILABLE** (drop_caches failed): 'cold' rows ran with a warm page cache"
    fi
    echo "- tools: $(b3sum --version), ostree $(ostree --version | awk -F"'" '/Version/ { print $2 }')," \
         "$(git --version), $(cp --version | head -1)"
    if ((WITH_WS)); then
        echo "- ws: $WS, $WS_BUILT"
    else
        echo "- ws: not measured (--no-ws)"
    fi
    echo "- runs per measurement: $RUNS (median wall time; peak RSS is the max over the runs)"
    if ((DEFER_DELETE)); then
        echo "- scratch dirs deleted: after the last measurement (deletion slows later runs here)"
    else
        echo "- scratch dirs deleted: in the background between runs, never during a timed command"
    fi
    echo "- machine load when this size started: $LOAD_START; when it ended: load average $(load1)"
}

load1() { cut -d' ' -f1 /proc/loadavg; }

# Anything else running (a cargo build, a test suite) skews every row: say so.
BUSY_NOW=""
check_load() {
    BUSY_NOW=$(cpu_busy)
    if ((BUSY_NOW > 20)); then
        banner "the CPUs were ${BUSY_NOW}% busy just now (load average $(load1)): something else is running." \
               "running now: $(ps -eo stat=,comm= | awk '$1 ~ /^[RD]/ && $2 != "ps" { printf "%s ", $2 }')" \
               "Timings will be noisy; prefer an idle machine."
    fi
}

# ---------------------------------------------------------------- scratch space
#
# Deleting a 100k-file tree takes seconds on ext4, so it never happens inside
# a timed section: `retire` renames the dir away (instant).
#
# By default the retired dirs are deleted only at the very end (empty_trash).
# Deleting between runs, even finished and synced before the next timed
# command, slowed the later runs: on the development VM (ext4 mounted with
# `discard`), `cp -a` of the 10k tree took 1.3, 3.2, 5.0, 4.9 s in runs 1-4
# with deletion between runs, and 0.5, 0.2, 0.2, 0.2 s without. The price is
# disk space (check_disk_space); --delete-between (or too little space)
# deletes in the background between runs instead, and `prepare_run` waits
# for those deletions before the next timed command starts.

TRASH_PIDS=()
TRASH_SEQ=0
SCRATCH_SEQ=0

retire() {
    local p
    for p in "$@"; do
        [[ -e $p || -L $p ]] || continue
        local t="$BENCH/trash.$$.$((++TRASH_SEQ))"
        mv -- "$p" "$t"
        ((DEFER_DELETE)) && continue # deleted by empty_trash at the end
        rm -rf -- "$t" &
        TRASH_PIDS+=($!)
    done
}

# Delete everything retired so far (deferred mode), after the last measurement.
empty_trash() {
    local t
    for t in "$BENCH/trash.$$."*; do
        [[ -e $t ]] || continue
        rm -rf -- "$t" &
        TRASH_PIDS+=($!)
    done
    wait_trash
}

wait_trash() {
    local p
    for p in "${TRASH_PIDS[@]}"; do wait "$p" || true; done
    TRASH_PIDS=()
}

# A new, not yet existing path under scratch/.
fresh() {
    echo "$BENCH/scratch/$1.$((++SCRATCH_SEQ))"
}

# Before each timed command: no background deletion running, no dirty pages
# from the previous step being written back, and for cold runs an empty page
# cache (so the tree and everything else is read from disk again).
prepare_run() {
    wait_trash
    sync
    if [[ $1 == cold ]]; then drop_caches; fi
}

# Two runs in the same scratch dir would delete each other's stores and skew
# each other's timings: the second one stops at once.
take_lock() {
    exec 9>>"$BENCH/.lock"
    if ! flock -n 9; then
        die "another run.sh is already using $BENCH ($(cat "$BENCH/.lock.pid" 2>/dev/null || echo '?')): wait for it, or set WS_BENCH_DIR"
    fi
    echo "pid $$, started $(date '+%H:%M:%S')" >"$BENCH/.lock.pid"
}

# Deferred deletion keeps every run's stores and copies until the end: per run
# about 2.5x the tree for the imports (ws store, ostree repo, git repo) and 2x
# for the copy checkouts (ws, cp -a). Without room for that, delete between
# runs, and say that the later copy runs are then slower than they should be.
check_disk_space() {
    ((DEFER_DELETE)) || return 0
    local n need=0 avail
    for n in "${SIZES[@]}"; do
        need=$((need + $(du -s --apparent-size -B1 "$BENCH/trees/tree-$n" | cut -f1) * 45 * RUNS / 10))
    done
    need=$((need * 12 / 10))
    avail=$(df -P -B1 "$BENCH" | awk 'NR == 2 { print $4 }')
    if ((avail < need)); then
        DEFER_DELETE=0
        banner "only $((avail >> 30)) GiB free in $BENCH, ~$((need >> 30)) GiB needed to keep every run's scratch dirs:" \
               "deleting them between runs instead, which slows the later copy runs on a discard-mounted fs"
    else
        log "keeping scratch dirs until the end: ~$((need >> 30)) GiB of $((avail >> 30)) GiB free"
    fi
}

# ---------------------------------------------------------------- trees

# The trees are generated once and reused while the stamp (generator
# arguments + a hash of gen_tree.py) matches.
gen_stamp() {
    echo "gen_tree.py $(sha256sum "$GEN" | cut -c1-16) $*"
}

ensure_tree() { # N -> $BENCH/trees/tree-N
    local n=$1 dir="$BENCH/trees/tree-$1"
    local stamp
    stamp=$(gen_stamp --files "$n")
    if [[ -d $dir && -f $dir.stamp && $(<"$dir.stamp") == "$stamp" ]]; then
        log "reusing $dir"
        return
    fi
    log "generating $dir ($n files)"
    retire "$dir" "$dir.tmp" "$dir.stamp" "$dir-mod" "$dir-mod.stamp"
    python3 "$GEN" "$dir.tmp" --files "$n"
    mv "$dir.tmp" "$dir"
    echo "$stamp" >"$dir.stamp"
}

ensure_mod_tree() { # N -> $BENCH/trees/tree-N-mod: a copy with MODIFY_K files changed
    local base="$BENCH/trees/tree-$1" dir="$BENCH/trees/tree-$1-mod"
    local stamp
    stamp="$(<"$base.stamp") | cp -a; gen_tree.py --modify $MODIFY_K --seed $MODIFY_SEED"
    if [[ -d $dir && -f $dir.stamp && $(<"$dir.stamp") == "$stamp" ]]; then
        log "reusing $dir"
        return
    fi
    log "making $dir ($MODIFY_K files modified)"
    retire "$dir" "$dir.tmp" "$dir.stamp"
    cp -a "$base" "$dir.tmp"
    python3 "$GEN" "$dir.tmp" --modify "$MODIFY_K" --seed "$MODIFY_SEED" 2>/dev/null
    mv "$dir.tmp" "$dir"
    echo "$stamp" >"$dir.stamp"
}

# ---------------------------------------------------------------- timing
#
# timed KEY STDOUT_FILE CMD...: runs CMD once under /usr/bin/time and appends
# "<wall µs> <peak RSS KiB>" to $RES/KEY. Wall time comes from $EPOCHREALTIME
# around the command (µs resolution; %e only has 10 ms, too coarse for diff);
# peak RSS from GNU time's %M (for a `bash -c` pipeline: the largest single
# process). CMD's stderr goes to $ERR_FILE; its exit status is returned.

RES=""       # per-size results dir, set in bench_size
ERR_FILE=""

timed() {
    local key=$1 out=$2
    shift 2
    local tf="$BENCH/scratch/time.out" rc=0
    local t0=${EPOCHREALTIME/./}
    /usr/bin/time -f '%M' -o "$tf" "$@" >"$out" 2>"$ERR_FILE" || rc=$?
    local us=$((${EPOCHREALTIME/./} - t0))
    if ((rc == 0)); then
        echo "$us $(tail -n1 "$tf")" >>"$RES/$key"
    fi
    return "$rc"
}

# A peer must work: a failure means the benchmark itself is broken.
peer() {
    local key=$1
    timed "$@" || die "peer command failed ($key): ${*:3}
$(tail -n 20 "$ERR_FILE")"
}

# A ws failure is reported loudly, recorded in the table, and the run goes on
# with the peers (ws is being written while this harness is).
WS_FAILURES=0
ws_timed() {
    local key=$1
    if timed "$@"; then return 0; fi
    WS_FAILURES=$((WS_FAILURES + 1))
    touch "$RES/${key%.warmup}.failed" # a failed warm-up skips the timed runs too
    banner "ws FAILED ($key): ${*:3}" "$(tail -n 5 "$ERR_FILE")"
    return 1
}

# Median wall time (s, 3 decimals) / max peak RSS (MiB) of a key, or a marker.
median_s() {
    local f="$RES/$1"
    if [[ -f $f.failed ]]; then echo FAILED; return; fi
    if [[ ! -s $f ]]; then echo "n/a"; return; fi
    sort -n "$f" | awk '{ a[NR] = $1 } END {
        m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
        printf "%.3f", m / 1e6 }'
}
peak_mib() {
    local f="$RES/$1"
    [[ -s $f ]] || { echo "n/a"; return; }
    awk '$2 > m { m = $2 } END { printf "%.0f", m / 1024 }' "$f"
}

# ---------------------------------------------------------------- ws helpers

# Check that an import printed "<64 hex>/<size>" and return the digest.
read_digest() {
    local d
    d=$(tail -n1 "$1")
    [[ $d =~ ^[0-9a-f]{64}/[0-9]+$ ]] || { banner "ws store import printed '$d', not <64 hex>/<size>"; return 1; }
    echo "$d"
}

# ---------------------------------------------------------------- benchmarks
# Per tree size, these share state: the last cold import's ws state dir and
# git repo are kept (STATE, GITDIR, DIGEST_A, COMMIT_A) for the warm rows.

STATE="" GITDIR="" DIGEST_A="" COMMIT_A=""

# Cold import: every run starts from a fresh store and an empty page cache.
# The tools are interleaved within each run, so slow drift of the machine
# (host load, disk) spreads over all of them alike.
bench_cold_import() {
    local tree=$1 i
    for ((i = 1; i <= RUNS; i++)); do
        log "cold import: run $i/$RUNS"

        if ((WITH_WS)) && [[ ! -f $RES/import-cold.ws.failed ]]; then
            retire "$STATE"
            STATE=$(fresh ws-state)
            prepare_run cold
            if ws_timed import-cold.ws "$BENCH/scratch/ws.out" "$WS" --state-dir "$STATE" store import "$tree"; then
                DIGEST_A=$(read_digest "$BENCH/scratch/ws.out") || { touch "$RES/import-cold.ws.failed"; DIGEST_A=""; }
            else
                DIGEST_A="" # the later ws rows need a good import: skip them
            fi
        fi

        prepare_run cold
        # shellcheck disable=SC2016 # $1 is expanded by the inner bash
        peer import-cold.b3sum /dev/null \
            bash -c 'find "$1" -type f -print0 | xargs -0 -P16 -n 64 b3sum' _ "$tree"

        local repo
        repo=$(fresh ostree)
        ostree --repo="$repo" init --mode=bare-user
        prepare_run cold
        peer import-cold.ostree /dev/null ostree --repo="$repo" commit --branch=b --tree=dir="$tree"
        retire "$repo"

        # git's index and objects go to a fresh GIT_DIR; the tree itself is
        # only read (no .git inside it, nothing written to it).
        retire "$GITDIR"
        GITDIR=$(fresh git)
        git --git-dir="$GITDIR" --work-tree="$tree" init -q
        prepare_run cold
        peer import-cold.git /dev/null env GIT_DIR="$GITDIR" GIT_WORK_TREE="$tree" \
            bash -c 'git add -A && git commit -q -m x'
    done
    COMMIT_A=$(git --git-dir="$GITDIR" rev-parse HEAD)
}

# Re-import of the unchanged tree: warm cache, the store already has it all.
# One untimed warm-up of each, then RUNS timed runs.
bench_warm_reimport() {
    local tree=$1 i
    local -a git_env=(env GIT_DIR="$GITDIR" GIT_WORK_TREE="$tree")
    for ((i = 0; i <= RUNS; i++)); do
        local sfx="" # run 0 is the warm-up: recorded under a throwaway key
        ((i == 0)) && sfx=.warmup
        log "warm re-import: run $i/$RUNS${sfx:+ (warm-up)}"
        if ((WITH_WS)) && [[ -n $DIGEST_A && ! -f $RES/import-warm.ws.failed ]]; then
            prepare_run warm
            if ws_timed "import-warm.ws$sfx" "$BENCH/scratch/ws.out" "$WS" --state-dir "$STATE" store import "$tree"; then
                local d
                d=$(tail -n1 "$BENCH/scratch/ws.out")
                [[ $d == "$DIGEST_A" ]] ||
                    banner "re-import of the unchanged tree gave $d, the first import $DIGEST_A"
            fi
        fi
        prepare_run warm
        peer "import-warm.find$sfx" /dev/null find "$tree" -type f
        prepare_run warm
        peer "import-warm.findstat$sfx" /dev/null find "$tree" -type f -printf '%s %T@\n'
        prepare_run warm
        peer "import-warm.gitstatus$sfx" /dev/null "${git_env[@]}" git status
        prepare_run warm
        peer "import-warm.gitadd$sfx" /dev/null "${git_env[@]}" git add -A
    done
}

# Diff of two trees that differ in MODIFY_K files: both are imported (untimed),
# then only the diff is timed, as a whole process (startup included).
bench_diff() {
    local tree=$1 modtree=$2 i
    local digest_b="" commit_b lines

    if ((WITH_WS)) && [[ -n $DIGEST_A ]]; then
        prepare_run warm
        if ws_timed diff.ws-import-b "$BENCH/scratch/ws.out" "$WS" --state-dir "$STATE" store import "$modtree"; then
            digest_b=$(read_digest "$BENCH/scratch/ws.out") || digest_b=""
        fi
        [[ -n $digest_b ]] || touch "$RES/diff.ws.failed"
    fi
    GIT_DIR="$GITDIR" GIT_WORK_TREE="$modtree" bash -c 'git add -A && git commit -q -m y'
    commit_b=$(git --git-dir="$GITDIR" rev-parse HEAD)

    for ((i = 0; i <= RUNS; i++)); do
        local sfx=""
        ((i == 0)) && sfx=.warmup
        log "diff: run $i/$RUNS${sfx:+ (warm-up)}"
        if [[ -n $digest_b && ! -f $RES/diff.ws.failed ]]; then
            prepare_run warm
            if ws_timed "diff.ws$sfx" "$BENCH/scratch/diff.out" "$WS" --state-dir "$STATE" store diff "$DIGEST_A" "$digest_b" --name-only; then
                lines=$(wc -l <"$BENCH/scratch/diff.out")
                ((lines == MODIFY_K)) || banner "ws store diff --name-only listed $lines paths, expected $MODIFY_K"
            fi
        fi
        prepare_run warm
        peer "diff.git$sfx" "$BENCH/scratch/diff.out" git --git-dir="$GITDIR" diff --name-only "$COMMIT_A" "$commit_b"
        lines=$(wc -l <"$BENCH/scratch/diff.out")
        ((lines == MODIFY_K)) || die "git diff --name-only listed $lines paths, expected $MODIFY_K"
    done
}

# Fingerprint of a tree (contents, types, modes, link targets), to check a
# checkout once (untimed). With "exec-only", only the executable bit of files
# counts: a hardlinked checkout shares read-only store objects, so its write
# bits legitimately differ from the source tree.
tree_fingerprint() {
    local modes=$2
    (cd "$1" && {
        find . -type f -print0 | sort -z | xargs -0 -r -n 256 b3sum
        if [[ $modes == exec-only ]]; then
            find . -mindepth 1 \( \( -type f -perm /111 -printf 'x ' \) -o -printf '- ' \) \
                -printf '%y %p -> %l\n' | sort
        else
            find . -mindepth 1 -printf '%y %m %p -> %l\n' | sort
        fi
    } | b3sum --no-names)
}

# Checkout from the store vs. copying the tree. Every run writes a fresh OUT;
# the previous one is retired (deleted in the background, outside timing).
bench_checkout() {
    local tree=$1 i mode out
    for ((i = 1; i <= RUNS; i++)); do
        log "checkout: run $i/$RUNS"
        for mode in hardlink copy; do
            if ((WITH_WS)) && [[ -n $DIGEST_A && ! -f $RES/checkout-$mode.ws.failed ]]; then
                out=$(fresh "co-$mode")
                prepare_run warm
                if ws_timed "checkout-$mode.ws" /dev/null "$WS" --state-dir "$STATE" store checkout "$DIGEST_A" "$out" --mode "$mode" &&
                    ((i == 1)); then
                    # Fast but wrong would be worthless: check the first one.
                    local modes=full what="modes"
                    if [[ $mode == hardlink ]]; then modes=exec-only what="exec bits"; fi
                    [[ $(tree_fingerprint "$out" $modes) == "$(tree_fingerprint "$tree" $modes)" ]] ||
                        banner "ws store checkout --mode $mode: the output differs from the tree" \
                               "(contents, types, $what or link targets)"
                fi
                retire "$out"
            fi

            out=$(fresh "cp-$mode")
            prepare_run warm
            if [[ $mode == hardlink ]]; then
                peer "checkout-$mode.cp" /dev/null cp -al "$tree" "$out"
            else
                peer "checkout-$mode.cp" /dev/null cp -a "$tree" "$out"
            fi
            retire "$out"
        done
    done
}

# ---------------------------------------------------------------- report

# row OPERATION WS_KEY PEER_LABEL PEER_KEY
row() {
    local op=$1 wk=$2 peer=$3 pk=$4
    local wsm pm ratio wsr
    if ((WITH_WS)); then
        wsm=$(median_s "$wk")
        wsr=$(peak_mib "$wk")
    else
        wsm="not run" wsr="-"
    fi
    pm=$(median_s "$pk")
    ratio=$(awk -v a="$wsm" -v b="$pm" 'BEGIN {
        if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && b > 0) printf "%.2f", a / b; else print "-" }')
    printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' \
        "$op" "$SIZE_LABEL" "$wsm" "$peer" "$pm" "$ratio" "$wsr" "$(peak_mib "$pk")"
}

report() {
    local cold_note="cold"
    ((COLD)) || cold_note="NOT cold (drop_caches failed)"
    echo "| operation | tree | ws median (s) | peer | peer median (s) | ws/peer | ws peak RSS (MiB) | peer peak RSS (MiB) |"
    echo "|---|---|---:|---|---:|---:|---:|---:|"
    row "import, $cold_note" import-cold.ws 'b3sum of every file, find + xargs -P16 (hash floor)' import-cold.b3sum
    row "import, $cold_note" import-cold.ws 'ostree commit (bare-user)' import-cold.ostree
    row "import, $cold_note" import-cold.ws 'git add -A && git commit' import-cold.git
    row "re-import unchanged, warm" import-warm.ws 'find -type f' import-warm.find
    row "re-import unchanged, warm" import-warm.ws "find -type f -printf '%s %T@' (stat walk)" import-warm.findstat
    row "re-import unchanged, warm" import-warm.ws 'git status' import-warm.gitstatus
    row "re-import unchanged, warm" import-warm.ws 'git add -A' import-warm.gitadd
    row "diff --name-only, $MODIFY_K files changed" diff.ws 'git diff --name-only C1 C2' diff.git
    row "checkout --mode hardlink" checkout-hardlink.ws 'cp -al' checkout-hardlink.cp
    row "checkout --mode copy" checkout-copy.ws 'cp -a' checkout-copy.cp
}

# The spread behind each median: on a shared VM single runs can be off by 2x,
# and a median is only worth as much as the runs agree.
spread() {
    echo "| measurement | runs | min (s) | median (s) | max (s) |"
    echo "|---|---:|---:|---:|---:|"
    local f
    for f in "$RES"/*; do
        [[ $f == *.warmup || $f == *.failed || ! -s $f ]] && continue
        sort -n "$f" | awk -v k="${f##*/}" '{ a[NR] = $1 } END {
            m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
            printf "| %s | %d | %.3f | %.3f | %.3f |\n", k, NR, a[1] / 1e6, m / 1e6, a[NR] / 1e6 }'
    done
}

# ---------------------------------------------------------------- main

SIZE_LABEL=""
LOAD_START=""

bench_size() {
    local n=$1
    local tree="$BENCH/trees/tree-$n" modtree="$BENCH/trees/tree-$n-mod"
    ensure_tree "$n"
    ensure_mod_tree "$n"

    RES="$BENCH/results-$n.d"
    rm -rf "$RES" && mkdir -p "$RES"
    local bytes
    bytes=$(du -s --apparent-size -B1 "$tree" | cut -f1)
    SIZE_LABEL="$((n / 1000))k files, $(awk -v b="$bytes" 'BEGIN { printf "%.0f MiB", b / 1048576 }')"
    STATE="" GITDIR="" DIGEST_A="" COMMIT_A=""

    check_load
    LOAD_START="CPUs $BUSY_NOW% busy, load average $(load1)"
    log "=== $SIZE_LABEL: $RUNS runs each ==="
    bench_cold_import "$tree"
    bench_warm_reimport "$tree"
    bench_diff "$tree" "$modtree"
    bench_checkout "$tree"
    retire "$STATE" "$GITDIR"

    local out="$BENCH/results-$n.md"
    {
        echo "## ws store benchmark, $SIZE_LABEL"
        echo
        machine_description
        echo
        report
        echo
        echo "Spread of the timed runs (warm-ups excluded):"
        echo
        spread
    } >"$out"
    echo
    cat "$out"
    echo
    log "written: $out (raw runs, µs and KiB: $RES/)"
}

main() {
    parse_args "$@"
    ((EUID == 0)) || banner "not running as root: cannot drop caches (cold rows will be warm) nor install tools"
    install_tools
    build_ws

    mkdir -p "$BENCH/trees"
    take_lock
    # Deferred deletions must not outlive the run, even a failed one.
    trap empty_trash EXIT
    # Leftovers of an interrupted run: delete in the background.
    local old
    for old in "$BENCH"/trash.* "$BENCH/scratch"; do retire "$old"; done
    mkdir -p "$BENCH/scratch"
    ERR_FILE="$BENCH/scratch/stderr"

    # Generate first, so that drop_caches can be checked on a real file.
    local n
    for n in "${SIZES[@]}"; do ensure_tree "$n"; done
    check_drop_caches

    check_disk_space
    for n in "${SIZES[@]}"; do bench_size "$n"; done
    log "deleting the scratch dirs"
    empty_trash

    if ((WS_FAILURES)); then
        banner "$WS_FAILURES ws command(s) FAILED: see the FAILED cells and the messages above"
        exit 1
    fi
    ((COLD)) || banner "drop_caches did not work: the 'cold' rows are NOT cold"
}

main "$@"
