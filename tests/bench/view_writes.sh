#!/usr/bin/env bash
# Writes into a view, before and after a change: run by hand as root (never by CI).
#
#   tests/bench/view_writes.sh [--old DIR] [--new DIR] [--files 10000|100000|both]
#                              [--edits 10,1000] [--runs N] [--measure LIST] [--keep]
#
# Times `ws discard NAME` of K edited files of an open workspace, and `ws status
# NAME` of the same K edits (the capture alone: the reference for what a discard's
# capture of the edits into the store costs), for two builds of ws and wsd side by
# side: --old and --new name directories holding a `ws` and a `wsd` (release
# builds copied out of a target dir, so that the two do not overwrite each other).
# Each build serves its own state dir with its own daemon, started once, and opens
# one workspace per K (a discard writes the base's content back through the view,
# so those K files stay in the upper layer for every later status); the runs
# interleave the builds (old new, then new old, ...) so that both see the same
# minutes of a shared machine, and the table gives each build's median and range
# and the median of the paired new/old ratios. Whole `ws` processes, as a user runs
# them. Before each timed command the same K files (spread over the tree) get a new
# first line and the view is synced; every discard must report K discarded changes
# and leave the workspace clean, every status must list K changes (checked, untimed).
#
# Options:  --old DIR, --new DIR  the builds (default /var/tmp/rel-old, /var/tmp/rel-new)
#           --files               tree size(s) (default both)
#           --edits LIST          edited files per measurement (default 10,1000)
#           --runs N              timed runs per build and measurement (default 10)
#           --measure LIST        of discard, status, commit (`ws commit` of the K
#                                 edits), checkout (`ws store checkout` of the tree
#                                 into a new directory, once per run); default
#                                 discard,status
#           --keep                leave the daemons, state dirs and views for a look
#
# Environment: WS_BENCH_DIR (trees, shared with run.sh; default /var/tmp/ws-bench),
#              WS_BENCH_VIEWS_DIR (state dirs and results; default /var/tmp/ws-bench-views).
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
GEN="$SCRIPT_DIR/gen_tree.py"
SCRIPT_NAME=view_writes.sh
# shellcheck source=tests/bench/lib.sh
source "$SCRIPT_DIR/lib.sh"

BENCH=${WS_BENCH_DIR:-/var/tmp/ws-bench}
VDIR=${WS_BENCH_VIEWS_DIR:-/var/tmp/ws-bench-views}
OLD=/var/tmp/rel-old
NEW=/var/tmp/rel-new
SIZES=(10000 100000)
EDITS=10,1000
MEASURE=discard,status
RUNS=10
KEEP=0

JSONL="$VDIR/results.jsonl"
HELPER="$VDIR/helper.py"
FAILURES=0
declare -A WSD_PID=()

usage() { usage_from_header 33 "${1:-0}"; }

parse_args() {
    while (($#)); do
        case $1 in
            --old) OLD=${2:-}; shift 2 ;;
            --new) NEW=${2:-}; shift 2 ;;
            --files) parse_sizes "${2:-}"; shift 2 ;;
            --edits)
                [[ ${2:-} =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] || die "--edits takes numbers separated by commas"
                EDITS=$2; shift 2 ;;
            --runs) parse_runs "${2:-}"; shift 2 ;;
            --measure)
                local m
                for m in ${2//,/ }; do
                    case $m in
                        discard | status | commit | checkout) ;;
                        *) die "unknown measurement $m (discard, status, commit, checkout)" ;;
                    esac
                done
                MEASURE=${2:-}; shift 2 ;;
            --keep) KEEP=1; shift ;;
            -h | --help) usage 0 ;;
            *) printf 'unknown argument: %s\n\n' "$1" >&2; usage 2 ;;
        esac
    done
    local d
    for d in "$OLD" "$NEW"; do
        [[ -x $d/ws && -x $d/wsd ]] || die "no ws and wsd in '$d' (copy a release build there)"
    done
}

check_tools() {
    ((EUID == 0)) || die "run as root: the daemons mount overlays"
    local cmd
    for cmd in python3 flock findmnt; do
        command -v "$cmd" >/dev/null 2>&1 || die "missing tool: $cmd"
    done
}

# ---------------------------------------------------------------- daemons

bindir() { if [[ $1 == old ]]; then echo "$OLD"; else echo "$NEW"; fi; }
state_of() { echo "$VDIR/state-$1-$2"; } # BUILD FILES
# wsx BUILD FILES ARGS...: that build's `ws` on that state dir.
wsx() {
    local b=$1 n=$2
    shift 2
    WS_STATE_DIR=$(state_of "$b" "$n") "$(bindir "$b")/ws" "$@"
}

start_daemon() { # BUILD FILES
    local b=$1 n=$2 state i
    state=$(state_of "$b" "$n")
    mkdir -p "$state"
    # Without fd 9 (the bench lock): the daemon must not hold it.
    "$(bindir "$b")/wsd" --state-dir "$state" --bus none >>"$VDIR/wsd-$b-$n.log" 2>&1 </dev/null 9>&- &
    WSD_PID[$b-$n]=$!
    for ((i = 0; i < 600; i++)); do
        if [[ -S $state/wsd.sock ]] && wsx "$b" "$n" list >/dev/null 2>&1; then
            log "wsd ($b) ${WSD_PID[$b-$n]} answers on $state"
            return
        fi
        kill -0 "${WSD_PID[$b-$n]}" 2>/dev/null || die "wsd ($b) exited: $(tail -n 3 "$VDIR/wsd-$b-$n.log")"
        sleep 0.1
    done
    die "wsd ($b) did not answer within 60 s"
}

stop_daemon() { # KEY (BUILD-FILES)
    local pid=${WSD_PID[$1]:-} i
    [[ -n $pid ]] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "wsd $pid ignored SIGTERM for 10 s: killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    unset "WSD_PID[$1]"
}

# Everything mounted under $VDIR, deepest first (the workspaces' views).
unmount_all() {
    local t
    while read -r t; do
        [[ -n $t ]] || continue
        umount "$t" 2>/dev/null || umount -l "$t" 2>/dev/null || log "cannot unmount $t"
    done < <(findmnt -rn -o TARGET | awk -v p="$VDIR/" 'index($0, p) == 1 { print length($0), $0 }' |
             sort -rn | cut -d' ' -f2-)
}

cleanup() {
    local rc=$? key
    if ((KEEP)); then
        log "--keep: daemons ${WSD_PID[*]} and $VDIR stay (unmount and delete by hand)"
        exit "$rc"
    fi
    for key in "${!WSD_PID[@]}"; do stop_daemon "$key"; done
    unmount_all
    rm -rf -- "$VDIR"/state-* "$VDIR"/pick-*
    exit "$rc"
}

# ---------------------------------------------------------------- helper

write_helper() {
    cat >"$HELPER" <<'EOF'
"""view_writes.sh's helper: pick and rewrite files, check outputs, report."""
import json, os, sys, time

def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "pick":  # TREE K OUT: K regular files, indices i*n/K of the sorted listing
        root = os.fsencode(args[0])
        files = []
        for d, dirs, names in os.walk(root):
            for name in names:
                p = os.path.join(d, name)
                if os.path.isfile(p) and not os.path.islink(p):
                    files.append(os.path.relpath(p, root))
        files.sort()
        k = int(args[1])
        with open(args[2], "wb") as f:
            for i in range(k):
                f.write(files[i * len(files) // k] + b"\n")
    elif cmd == "modify":  # ROOT LIST: a new first line, then the old content, in place
        root = os.fsencode(args[0])
        token = time.time_ns()
        for rel in open(args[1], "rb").read().split(b"\n"):
            if rel:
                p = os.path.join(root, rel)
                with open(p, "rb") as f:
                    old = f.read()
                with open(p, "wb") as f:
                    f.write(b"/* view_writes bench edit %d */\n" % token + old)
    elif cmd == "field":  # FILE KEY: one field of a JSON object
        print(json.load(open(args[0]))[args[1]])
    elif cmd == "report":
        report(args[0])
    else:
        sys.exit(f"unknown helper command {cmd}")

def median(s):
    s = sorted(s)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2

def report(jsonl):
    recs = [json.loads(l) for l in open(jsonl) if l.strip()]
    keys = []
    for r in recs:
        k = (r["files"], r["edits"], r["what"])
        if k not in keys:
            keys.append(k)
    ms = lambda x: f"{x:.1f}" if x < 100 else f"{x:.0f}"
    out = ["| files | edited | command | old: median (min–max) ms | new: median (min–max) ms | new/old (median of paired ratios) | pairs |",
           "|---:|---:|---|---:|---:|---:|---:|"]
    order = {"discard": 0, "status": 1, "commit": 2, "checkout": 3}
    for files, edits, what in sorted(keys, key=lambda k: (k[0], order[k[2]], k[1])):
        sel = lambda b: {r["run"]: r["ms"] for r in recs
                         if (r["files"], r["edits"], r["what"], r["build"]) == (files, edits, what, b)}
        old, new = sel("old"), sel("new")
        pairs = [new[i] / old[i] for i in old if i in new and old[i] > 0]
        cell = lambda d: f"{ms(median(d.values()))} ({ms(min(d.values()))}–{ms(max(d.values()))})" if d else "n/a"
        ratio = f"{median(pairs):.2f} ({min(pairs):.2f}–{max(pairs):.2f})" if pairs else "n/a"
        cmd = "`ws store checkout` into a new dir" if what == "checkout" else f"`ws {what}`"
        out.append(f"| {files // 1000}k | {edits or ''} | {cmd} | {cell(old)} | {cell(new)} | {ratio} | {len(pairs)} |")
    print("\n".join(out))

main()
EOF
}

H() { python3 "$HELPER" "$@"; }

check() {
    FAILURES=$((FAILURES + 1))
    banner "CHECK FAILED: $*"
}

# ---------------------------------------------------------------- measurements

# record BUILD FILES EDITS WHAT RUN T0 T1 (EPOCHREALTIME without the dot: µs); run 0
# is the untimed warm-up round, not recorded.
record() {
    (($5)) || return 0
    printf '{"build": "%s", "files": %d, "edits": %d, "what": "%s", "run": %d, "ms": %s}\n' \
        "$1" "$2" "$3" "$4" "$5" "$(awk -v a="$6" -v b="$7" 'BEGIN { printf "%.3f", (b - a) / 1000 }')" >>"$JSONL"
}

declare -A VIEW=()

# One timed discard of K edited files: edit, sync, `ws discard`; then (untimed) the
# count it reports, and a status that must be clean.
discard_round() { # BUILD FILES K RUN
    local b=$1 n=$2 k=$3 r=$4 view=${VIEW[$1-$2-$3]} t0 t1 got
    H modify "$view" "$VDIR/pick-$n-$k"
    sync -f "$view"
    t0=${EPOCHREALTIME/./}
    wsx "$b" "$n" discard "vw-$n-$k" --json >"$VDIR/out.json"
    t1=${EPOCHREALTIME/./}
    record "$b" "$n" "$k" discard "$r" "$t0" "$t1"
    got=$(H field "$VDIR/out.json" discarded)
    ((got == k)) || check "$b: ws discard reported $got discarded changes, $k expected ($n files)"
    wsx "$b" "$n" status "vw-$n-$k" --json >"$VDIR/out.json"
    got=$(H field "$VDIR/out.json" dirty)
    ((got == 0)) || check "$b: $got changes left after ws discard ($n files, $k edits)"
}

# One timed status of K edited files (the capture alone); then (untimed) a discard.
status_round() { # BUILD FILES K RUN
    local b=$1 n=$2 k=$3 r=$4 view=${VIEW[$1-$2-$3]} t0 t1 got
    H modify "$view" "$VDIR/pick-$n-$k"
    sync -f "$view"
    t0=${EPOCHREALTIME/./}
    wsx "$b" "$n" status "vw-$n-$k" --json >"$VDIR/out.json"
    t1=${EPOCHREALTIME/./}
    record "$b" "$n" "$k" status "$r" "$t0" "$t1"
    got=$(H field "$VDIR/out.json" dirty)
    ((got == k)) || check "$b: ws status listed $got changes, $k expected ($n files)"
    wsx "$b" "$n" discard "vw-$n-$k" >/dev/null
}

# One timed commit of K edited files; then (untimed) a status that must be clean.
commit_round() { # BUILD FILES K RUN
    local b=$1 n=$2 k=$3 r=$4 view=${VIEW[$1-$2-$3]} t0 t1 got
    H modify "$view" "$VDIR/pick-$n-$k"
    sync -f "$view"
    t0=${EPOCHREALTIME/./}
    wsx "$b" "$n" commit "vw-$n-$k" -m bench >/dev/null
    t1=${EPOCHREALTIME/./}
    record "$b" "$n" "$k" commit "$r" "$t0" "$t1"
    wsx "$b" "$n" status "vw-$n-$k" --json >"$VDIR/out.json"
    got=$(H field "$VDIR/out.json" dirty)
    ((got == 0)) || check "$b: $got changes left after ws commit ($n files, $k edits)"
}

# One timed `ws store checkout` of the tree into a new directory (made by the CLI);
# then (untimed) a count of what it wrote, and its removal.
declare -A ENTRIES=() DIGEST=()
checkout_round() { # BUILD FILES RUN
    local b=$1 n=$2 r=$3 co="$VDIR/co-$1-$2" t0 t1 got
    rm -rf -- "$co"
    sync -f "$VDIR"
    t0=${EPOCHREALTIME/./}
    wsx "$b" "$n" store checkout "${DIGEST[$b-$n]}" "$co" >/dev/null
    t1=${EPOCHREALTIME/./}
    record "$b" "$n" 0 checkout "$r" "$t0" "$t1"
    got=$(find "$co" -mindepth 1 | wc -l)
    ((got == ENTRIES[$n])) || check "$b: ws store checkout wrote $got entries, the tree has ${ENTRIES[$n]}"
    rm -rf -- "$co"
}

measure() { [[ ,$MEASURE, == *,$1,* ]]; }

# All the rounds of run RUN for BUILD.
rounds() { # BUILD FILES RUN
    local b=$1 n=$2 r=$3 k
    for k in ${EDITS//,/ }; do
        if measure discard; then discard_round "$b" "$n" "$k" "$r"; fi
        if measure status; then status_round "$b" "$n" "$k" "$r"; fi
        if measure commit; then commit_round "$b" "$n" "$k" "$r"; fi
    done
    if measure checkout; then checkout_round "$b" "$n" "$r"; fi
}

LOADS=()
bench_size() {
    local n=$1 tree="$BENCH/trees/tree-$1" b k r
    for k in ${EDITS//,/ }; do H pick "$tree" "$k" "$VDIR/pick-$n-$k"; done
    ENTRIES[$n]=$(find "$tree" -mindepth 1 | wc -l)
    for b in old new; do
        rm -rf -- "$(state_of "$b" "$n")"
        start_daemon "$b" "$n"
        # A workspace per K: a discard writes the base's content back through the
        # view, so the K files stay in its upper layer, and every later status
        # compares them; the 10-file figures must not carry 1000 files of the others.
        for k in ${EDITS//,/ }; do
            log "$b: ws open vw-$n-$k (the first imports tree-$n, untimed)"
            wsx "$b" "$n" open "vw-$n-$k" --source "$tree" >&2
            wsx "$b" "$n" status "vw-$n-$k" --json >"$VDIR/out.json"
            VIEW[$b-$n-$k]=$(H field "$VDIR/out.json" path)
        done
        wsx "$b" "$n" status "vw-$n-${EDITS%%,*}" --json >"$VDIR/out.json"
        DIGEST[$b-$n]=$(H field "$VDIR/out.json" base_source_digest)
        # One untimed round of each, as a warm-up.
        rounds "$b" "$n" 0
    done
    sync
    LOADS+=("$((n / 1000))k: CPUs $(cpu_busy)% busy at start, load average $(cut -d' ' -f1 /proc/loadavg)")
    local order
    for ((r = 1; r <= RUNS; r++)); do
        if ((r % 2)); then order="old new"; else order="new old"; fi
        log "$n files: run $r/$RUNS ($order)"
        for b in $order; do rounds "$b" "$n" "$r"; done
    done
    LOADS+=("$((n / 1000))k: load average $(cut -d' ' -f1 /proc/loadavg) at the end")
    for b in old new; do
        for k in ${EDITS//,/ }; do
            wsx "$b" "$n" close "vw-$n-$k" --force >/dev/null 2>&1 || log "$b: ws close vw-$n-$k failed"
        done
        stop_daemon "$b-$n"
    done
    unmount_all
    rm -rf -- "$(state_of old "$n")" "$(state_of new "$n")"
}

describe() { # DIR: the build's version line and binary's mtime
    echo "\`$1\` ($("$1/ws" --version 2>/dev/null | head -1), built $(date -u -r "$1/wsd" '+%Y-%m-%d %H:%M UTC'))"
}

main() {
    parse_args "$@"
    check_tools
    take_lock "$VDIR"
    local n
    for n in "${SIZES[@]}"; do ensure_tree "$n"; done
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    unmount_all
    : >"$JSONL"
    write_helper
    for n in "${SIZES[@]}"; do bench_size "$n"; done

    local out="$VDIR/results.md"
    {
        echo "## Writes into a view: old against new"
        echo
        echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
        echo "- CPU: $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo), nproc $(nproc);" \
             "kernel $(uname -r)"
        echo "- state dirs: $VDIR on $(findmnt -n -o FSTYPE,OPTIONS -T "$VDIR" | tr -s ' ')"
        echo "- old: $(describe "$OLD")"
        echo "- new: $(describe "$NEW")"
        echo "- runs: $RUNS per build and measurement (+1 untimed), interleaved old/new; edits: $EDITS; measured: $MEASURE"
        local l
        for l in "${LOADS[@]}"; do echo "- load: $l"; done
        echo
        H report "$JSONL"
    } >"$out.tmp"
    mv "$out.tmp" "$out"
    echo
    cat "$out"
    echo
    log "written: $out (every sample: $JSONL)"
    if ((FAILURES)); then
        banner "$FAILURES check(s) FAILED: see the messages above"
        exit 1
    fi
}

main "$@"
