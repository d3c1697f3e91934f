#!/usr/bin/env bash
# imports_commits.sh [--old DIR] [--new DIR] [--importers N] [--committers N] [--keep]
#
# Users committing while others import (issue 15): N importers open their own
# copy of a 100k-file tree all at once (each a first import: a walk and a hash of
# every file), while C clients commit 10 files each in turn in 10 shared
# workspaces over a 10k-file tree until the last import ends. Measured: the
# commits' latencies (p50, p99), the imports' durations, the daemon's peak RSS,
# and the time the daemon's threads spent in syncfs and fdatasync (perf trace's
# summary for the run), for two builds in turn (DIR holds ws, wsd and
# daemon_client), each on a fresh state directory under /var/tmp.
#
# The copies are hard links (cp -al): separate directories (so no stat cache or
# source watch serves one open from another), no extra data on disk.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
GEN="$SCRIPT_DIR/gen_tree.py"
BENCH=${WS_BENCH_DIR:-/var/tmp/ws-bench}
WORK=${WS_BENCH_IMPORTS_DIR:-/var/tmp/ws-bench-imports}
OLD="" NEW=/var/tmp/rel-new
IMPORTERS=17 COMMITTERS=33 KEEP=0

die() { echo "imports_commits.sh: $*" >&2; exit 2; }
log() { echo "[$(date -u +%T)] $*" >&2; }

while (($#)); do
    case $1 in
        --old) OLD=${2:?}; shift 2 ;;
        --new) NEW=${2:?}; shift 2 ;;
        --importers) IMPORTERS=${2:?}; shift 2 ;;
        --committers) COMMITTERS=${2:?}; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h | --help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument $1" ;;
    esac
done
((EUID == 0)) || die "run as root: the daemon mounts overlays"
for cmd in python3 perf cp; do command -v "$cmd" >/dev/null || die "missing tool: $cmd"; done

[[ -d $BENCH/t100k ]] || python3 "$GEN" "$BENCH/t100k" 100000 >&2
[[ -d $BENCH/t10k ]] || python3 "$GEN" "$BENCH/t10k" 10000 >&2
mkdir -p "$WORK"

WSD_PID=""
cleanup() {
    if [[ -n $WSD_PID ]]; then kill -TERM "$WSD_PID" 2>/dev/null || true; sleep 2; fi
    findmnt -rn -o TARGET | awk -v p="$WORK/" 'index($0, p) == 1' | sort -r |
        while read -r t; do umount -l "$t" 2>/dev/null || true; done
    ((KEEP)) || rm -rf "$WORK"
}
trap cleanup EXIT

run_build() { # LABEL DIR
    local label=$1 dir=$2 state="$WORK/state-$1" src="$WORK/src-$1"
    [[ -x $dir/ws && -x $dir/wsd && -x $dir/daemon_client ]] || die "no ws, wsd and daemon_client in $dir"
    rm -rf "$state" "$src"; mkdir -p "$state" "$src"
    local i
    for ((i = 0; i < IMPORTERS; i++)); do cp -al "$BENCH/t100k" "$src/big-$i"; done
    "$dir/wsd" --state-dir "$state" --bus none >"$WORK/wsd-$label.log" 2>&1 </dev/null &
    WSD_PID=$!
    for ((i = 0; i < 100; i++)); do [[ -S $state/wsd.sock ]] && break; sleep 0.1; done
    for ((i = 0; i < 10; i++)); do
        WS_STATE_DIR=$state "$dir/ws" open "shared-$i" --source "$BENCH/t10k" >/dev/null
    done
    sync
    log "$label: $IMPORTERS imports of 100k files, $COMMITTERS committers"
    perf trace -s -e syncfs,fdatasync,fsync -p "$WSD_PID" -o "$WORK/syncs-$label.txt" &
    local tracer=$!
    sleep 1
    "$dir/daemon_client" --socket "$state/wsd.sock" imports-and-commits \
        --source "$src/big" --count "$IMPORTERS" --shared shared- --tree "$BENCH/t10k" \
        --clients "$COMMITTERS" --k 10 --pid "$WSD_PID" >"$WORK/result-$label.json" ||
        log "$label: the client saw failures (see $WORK/result-$label.json)"
    kill -INT "$tracer" 2>/dev/null || true
    wait "$tracer" 2>/dev/null || true
    kill -TERM "$WSD_PID"; wait "$WSD_PID" 2>/dev/null || true; WSD_PID=""
    python3 - "$label" "$WORK/result-$label.json" "$WORK/syncs-$label.txt" <<'EOF'
import json, sys
label, result, syncs = sys.argv[1:]
r = json.loads(open(result).read().strip().splitlines()[-1])
c, imp = r["commit"], r["import_ms"]
seconds = lambda v: f"{v / 1000:.1f}" if v is not None else "-"
# perf trace's summary: per thread, "syscall calls errors total min avg max ..."
# (times in ms); summed over the threads.
waits = {}
for line in open(syncs):
    f = line.split()
    if len(f) >= 4 and f[0] in ("syncfs", "fdatasync", "fsync"):
        calls, total = waits.get(f[0], (0, 0.0))
        waits[f[0]] = (calls + int(f[1]), total + float(f[3]) / 1000)
print(f"| {label} | {c['runs']} | {c['p50_ms']} | {c['p99_ms']} | {c['max_ms']} "
      f"| {seconds(imp['p50_ms'])} / {seconds(imp['max_ms'])} | {r['peak_rss_mib']} "
      f"| {', '.join(f'{k} {v[0]} calls {v[1]:.1f} s' for k, v in sorted(waits.items()))} "
      f"| {r['errors'] or ''} {'; '.join(r['failed'])[:300]} |")
EOF
    umount_all
    rm -rf "$src" "$state"
}

umount_all() {
    findmnt -rn -o TARGET | awk -v p="$WORK/" 'index($0, p) == 1' | sort -r |
        while read -r t; do umount "$t" 2>/dev/null || umount -l "$t" 2>/dev/null || true; done
}

echo "| build | commits | commit p50 ms | commit p99 ms | max ms | import p50 / max s | peak RSS MiB | daemon time in syncs (perf trace) | errors |"
echo "|---|---:|---:|---:|---:|---|---:|---|---|"
[[ -z $OLD ]] || run_build old "$OLD"
run_build new "$NEW"
