#!/usr/bin/env bash
# Remote cache benchmark, run by hand as root (never by CI).
#
#   tests/bench/remote.sh [--files 10000|100000|both] [--runs N] [--raw-inflight LIST]
#                         [--port P] [--no-build]
#
# Times ws's REAPI client (daemon/src/remote/, through tests/bench/remote_client.rs
# on a real store and RocksDB) pushing a generated tree to a local BuildGrid and
# pulling it into a second, fresh state dir; beside the floor, the same blobs sent
# with plain BatchUpdateBlobs (ByteStream for the large ones) and read back with
# BatchReadBlobs, in the same batches, to a fresh server of the same kind, in the
# same run. Then a second push of the same tree, which must send nothing (one
# FindMissingBlobs call per 20,000 digests, no other call). Every server starts
# with an empty CAS; each run has a fresh loop filesystem. Prints a markdown
# table. See tests/bench/README.md, "Remote cache benchmark".
#
# Environment: WS_BENCH_DIR (trees, shared with run.sh; default /var/tmp/ws-bench),
#              WS_BENCH_REMOTE_DIR (state dirs, servers, results; default /var/tmp/ws-remote-bench),
#              WS_BENCH_REMOTE_IMG (each run's filesystem image; default $WS_BENCH_REMOTE_DIR/fs.img),
#              WS_BENCH_TARGET (cargo target dir; default: the repository's target/),
#              BGD_VENV (BuildGrid's venv; default /var/tmp/ws-ci-buildgrid-venv).
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
GEN="$SCRIPT_DIR/gen_tree.py"
SCRIPT_NAME=remote.sh
# shellcheck source=tests/bench/lib.sh
source "$SCRIPT_DIR/lib.sh"

BENCH=${WS_BENCH_DIR:-/var/tmp/ws-bench}
RDIR=${WS_BENCH_REMOTE_DIR:-/var/tmp/ws-remote-bench}
# The repository's own target dir by default: the daemon links RocksDB, whose C++
# takes ~13 minutes to compile into a fresh target dir on 2 cores.
TARGET=${WS_BENCH_TARGET:-$REPO_ROOT/target}
VENV=${BGD_VENV:-/var/tmp/ws-ci-buildgrid-venv}
BGD="$REPO_ROOT/.ci/buildgrid"

SIZES=(100000)
RUNS=3
RAW_INFLIGHT=(1 4)
PORT=50391
BUILD=1

RES="$RDIR/results.d"
JSONL="$RDIR/results.jsonl"
IMG=${WS_BENCH_REMOTE_IMG:-$RDIR/fs.img}
MNT="$RDIR/mnt"
IMG_SIZE=16G
URL=""
RUN=0
LOOP_NOTE=""
CLIENT=""
SERVER=""   # the state dir of the BuildGrid running now, if any
FAILURES=0

usage() { usage_from_header 20 "${1:-0}"; }

parse_args() {
    while (($#)); do
        case $1 in
            --files) parse_sizes "${2:-}"; shift 2 ;;
            --runs) parse_runs "${2:-}"; shift 2 ;;
            --raw-inflight)
                [[ ${2:-} =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] || die "--raw-inflight takes a list like 1,4"
                IFS=, read -r -a RAW_INFLIGHT <<<"$2"; shift 2 ;;
            --port)
                [[ ${2:-} =~ ^[1-9][0-9]*$ ]] || die "--port takes a port number"
                PORT=$2; shift 2 ;;
            --no-build) BUILD=0; shift ;;
            -h | --help) usage 0 ;;
            *) printf 'unknown argument: %s\n\n' "$1" >&2; usage 2 ;;
        esac
    done
}

# ---------------------------------------------------------------- setup

build() {
    if ((BUILD)); then
        command -v cargo >/dev/null || die "cargo not found"
        log "building the remote client (release) into $TARGET"
        (cd "$REPO_ROOT" && CARGO_TARGET_DIR="$TARGET" cargo build --release -p ws-tests --bench remote_client) ||
            die "cargo build --release -p ws-tests --bench remote_client failed"
    fi
    # The bench binary has a hash in its name: take the newest.
    CLIENT=$(find "$TARGET/release/deps" -maxdepth 1 -type f -executable -name 'remote_client-*' \
        -printf '%T@ %p\n' 2>/dev/null | sort -rn | head -1 | cut -d' ' -f2-)
    [[ -n $CLIENT ]] || die "no remote_client bench binary in $TARGET/release/deps (build failed?)"
    "$CLIENT" --help >/dev/null || die "$CLIENT --help failed"
}

check_tools() {
    ((EUID == 0)) || die "run as root: each run gets its own loop filesystem"
    local cmd
    for cmd in python3 losetup mkfs.ext4 mountpoint flock; do
        command -v "$cmd" >/dev/null 2>&1 || die "$cmd is needed"
    done
    command -v python3 >/dev/null || die "python3 is needed (gen_tree.py, the report)"
    if [[ ! -x $VENV/bin/bgd ]]; then
        log "no BuildGrid in $VENV: installing it ($BGD/install.sh)"
        "$BGD/install.sh" "$VENV" >&2 || die "$BGD/install.sh $VENV failed"
    fi
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && die "port $PORT is in use: pick another with --port"
    return 0
}

# ---------------------------------------------------------------- filesystem and servers

# Each run gets a fresh ext4 image (sparse, on a loop device with direct I/O) for
# its state dirs and its servers' CAS, deleted whole at the end of the run: on a
# filesystem where 100k files were just deleted, ext4 scans the recently freed
# inodes on every create (`recently_deleted` in a profile), which made creating
# files 4x slower and would have landed in whichever step came after a deletion.
make_fs() {
    drop_fs
    truncate -s "$IMG_SIZE" "$IMG"
    # Inode tables and journal written now, not in the background during the run.
    mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$IMG"
    local dev
    if dev=$(losetup --find --show --direct-io=on "$IMG" 2>/dev/null); then
        LOOP_NOTE="direct I/O"
    else
        dev=$(losetup --find --show "$IMG")
        LOOP_NOTE="buffered (direct I/O refused)"
    fi
    mkdir -p "$MNT"
    mount "$dev" "$MNT"
    losetup -d "$dev" # autoclear at umount
}

drop_fs() {
    stop_server
    if mountpoint -q "$MNT"; then umount "$MNT" || umount -l "$MNT"; fi
    rm -f -- "$IMG"
}

start_server() { # DIR: a fresh BuildGrid with an empty CAS in DIR
    stop_server
    rm -rf -- "$1"
    BGD_VENV=$VENV "$BGD/start.sh" "$1" "$PORT" >&2 || die "BuildGrid did not start in $1"
    SERVER=$1
}

# Stops the server; its CAS stays until the image goes.
stop_server() {
    [[ -n $SERVER ]] || return 0
    "$BGD/stop.sh" "$SERVER" >&2 || log "stop.sh $SERVER failed"
    cp -f -- "$SERVER/bgd.log" "$RES/$(basename "$SERVER")-run$RUN.log" 2>/dev/null || true
    SERVER=""
}

cleanup() {
    local rc=$?
    drop_fs
    exit "$rc"
}

# ---------------------------------------------------------------- measuring

LOADS=()
# Before each run: nothing dirty left to write back, and up to 10 s of waiting for
# the CPUs to be at most 20% busy (a shared machine seldom is: it is recorded).
settle() {
    sync
    local busy i
    for ((i = 0; i < 5; i++)); do
        busy=$(cpu_busy)
        ((busy > 20)) || break
    done
    LOADS+=("$1: CPUs ${busy}% busy at start, load average $(cut -d' ' -f1 /proc/loadavg)")
    ((busy <= 20)) || banner "the CPUs were ${busy}% busy just before '$1': timings will be noisy"
}

# Reads a store's blobs once (untimed), so that the machine's own cache dropping
# (see README.md, "Method") does not land in one side's figures.
warm() { find "$1/cas/blobs" -type f -print0 | xargs -0 -n 512 cat >/dev/null; }

# client RUN FILES ARGS...: runs the client, tags its JSON lines, appends them.
client() {
    local run=$1 n=$2; shift 2
    local out rc=0
    out=$("$CLIENT" "$@" 2>>"$RES/client.log") || rc=$?
    [[ -n $out ]] && sed "s/^{/{\"run\": $run, \"files\": $n, /" <<<"$out" >>"$JSONL"
    if ((rc)); then
        banner "remote_client $1 FAILED (exit $rc): see $RES/client.log"
        FAILURES=$((FAILURES + 1))
        tail -n 5 "$RES/client.log" >&2
    fi
    return "$rc"
}

field() { python3 -c 'import json, sys; print(json.loads(sys.stdin.read().splitlines()[-1])[sys.argv[1]])' "$1"; }

# The floor: plain calls, each in-flight count on its own fresh server.
run_raw() {
    local n=$1 tree=$2 k
    for k in "${RAW_INFLIGHT[@]}"; do
        start_server "$MNT/bgd-raw-$k"
        warm "$MNT/s1"
        sync -f "$MNT"
        log "run $RUN/$RUNS, $n files: raw upload and read, $k in flight"
        client "$RUN" "$n" raw --state "$MNT/s1" --digest "$tree" --url "$URL" --inflight "$k" || true
        stop_server
    done
}

# ws: a first push (empty digest table, empty server), a pull into a second
# machine's fresh state dir, a second push of the same tree.
run_ws() {
    local n=$1 tree=$2 remote
    start_server "$MNT/bgd-ws"
    rm -rf -- "$MNT/s1/db"
    warm "$MNT/s1"
    sync -f "$MNT"
    log "run $RUN/$RUNS, $n files: ws push"
    if client "$RUN" "$n" push --state "$MNT/s1" --digest "$tree" --url "$URL"; then
        remote=$(tail -n 1 "$JSONL" | field root)
        # The server's CAS written back first: the pull's syncfs must not flush it.
        sync -f "$MNT"
        log "run $RUN/$RUNS, $n files: ws pull into a fresh state dir"
        client "$RUN" "$n" pull --state "$MNT/s2" --remote "$remote" --digest "$tree" --url "$URL" || true
        sync -f "$MNT"
        log "run $RUN/$RUNS, $n files: second ws push"
        client "$RUN" "$n" push --state "$MNT/s1" --digest "$tree" --url "$URL" --expect-resend-none || true
    fi
    stop_server
}

bench_size() {
    local n=$1 tree
    for ((RUN = 1; RUN <= RUNS; RUN++)); do
        make_fs
        log "run $RUN/$RUNS, $n files: importing tree-$n into a fresh state dir (untimed)"
        client "$RUN" "$n" import --state "$MNT/s1" --tree "$BENCH/trees/tree-$n" || { drop_fs; return 0; }
        tree=$(tail -n 1 "$JSONL" | field tree)
        settle "$n files, run $RUN"
        # Odd runs measure the floor first, even runs ws first: a drift of the
        # shared machine over a run favours neither.
        if ((RUN % 2)); then
            run_raw "$n" "$tree"; run_ws "$n" "$tree"
        else
            run_ws "$n" "$tree"; run_raw "$n" "$tree"
        fi
        drop_fs
    done
}

report() {
    python3 - "$JSONL" <<'EOF'
import json, statistics, sys

recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
med = statistics.median

def by(op, n, **kw):
    return [r for r in recs if r["op"] == op and r["files"] == n
            and all(r.get(k) == v for k, v in kw.items())]

def secs(rs):
    return med([r["seconds"] for r in rs]) if rs else None

def mib(rs):
    return max(r["max_rss_kib"] for r in rs) / 1024 if rs else None

def f(x, fmt="{:.2f}"):
    return "n/a" if x is None else fmt.format(x)

def ratio(ws_op, raw_op, n, k):
    """Median over runs of ws/raw, each pair from the same run."""
    out = []
    for r in sorted({x["run"] for x in by(ws_op, n)}):
        a, b = by(ws_op, n, run=r), by(raw_op, n, run=r, inflight=k)
        if a and b:
            out.append(a[0]["seconds"] / b[0]["seconds"])
    return med(out) if out else None

for n in sorted({r["files"] for r in recs if r["op"] != "import"}):
    ks = sorted({r["inflight"] for r in by("raw-upload", n)})
    runs = len(by("push", n))
    raw = by("raw-upload", n)
    blobs = raw[0]["blobs"] if raw else "?"
    size = raw[0]["bytes"] / 2**20 if raw else 0
    print(f"### {n} files: {blobs} blobs, {size:.0f} MiB ({runs} runs)\n")
    print("| step | ws (s) | floor: plain calls | floor (s) | ws / floor | ws MiB/s | ws peak RSS (MiB) |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for ws_op, raw_op, what in (("push", "raw-upload", "BatchUpdateBlobs"),
                                ("pull", "raw-read", "BatchReadBlobs")):
        ws = by(ws_op, n)
        t = secs(ws)
        for k in ks:
            rt = secs(by(raw_op, n, inflight=k))
            rate = size / t if t else None
            print(f"| ws {ws_op} | {f(t)} | {what}, {k} in flight | {f(rt)} | "
                  f"{f(ratio(ws_op, raw_op, n, k))} | {f(rate, '{:.1f}')} | {f(mib(ws), '{:.0f}')} |")
    imp = by("import", n)
    if imp:
        print(f"| (reference) import of the tree into a fresh store | {f(secs(imp))} | "
              f"(the store's own cost of writing what a pull writes) | | | | {f(mib(imp), '{:.0f}')} |")
    again = by("push-again", n)
    if again:
        rpc = again[-1]["rpc"]
        ok = all(r["ok"] for r in again)
        print(f"| second push | {f(secs(again), '{:.3f}')} | (nothing to send) | | | | {f(mib(again), '{:.0f}')} |")
        print()
        print(f"Second push ({len(again)} runs, {'all' if ok else 'NOT all'} as expected): "
              f"{rpc['find_missing_calls']} FindMissingBlobs calls for {again[-1]['blobs']} blobs, "
              f"{rpc['batch_update_calls']} BatchUpdateBlobs, {rpc['bytestream_writes']} ByteStream writes, "
              f"{rpc['blobs_sent']} blobs and {rpc['bytes_sent']} bytes sent.")
    push = by("push", n)
    if push:
        rpc = push[-1]["rpc"]
        print(f"First push: {rpc['find_missing_calls']} FindMissingBlobs, {rpc['batch_update_calls']} "
              f"BatchUpdateBlobs, {rpc['bytestream_writes']} ByteStream writes, {rpc['blobs_sent']} blobs "
              f"({rpc['bytes_sent']} bytes). Floor: {raw[0]['batches'] if raw else '?'} batches and "
              f"{raw[0]['streams'] if raw else '?'} streams.")
    pull = by("pull", n)
    if pull:
        rpc = pull[-1]["rpc"]
        print(f"Pull: {rpc['find_missing_calls']} FindMissingBlobs, {rpc['batch_read_calls']} BatchReadBlobs, "
              f"{rpc['bytestream_reads']} ByteStream reads, {rpc['blobs_received']} blobs "
              f"({rpc['bytes_received']} bytes), verified.")
    print()
    print("Every run (s): " + "; ".join(
        f"{op}{'/' + str(k) if k else ''}: " + ", ".join(f"{r['seconds']:.2f}" for r in by(op, n, **({'inflight': k} if k else {})))
        for op, k in [("push", None), ("pull", None), ("push-again", None), ("import", None)]
        + [(o, k) for o in ("raw-upload", "raw-read") for k in ks]))
    print()
EOF
}

machine_description() {
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "- CPU: $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo), nproc $(nproc);" \
         "memory $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo);" \
         "kernel $(uname -r)"
    echo "- state dirs and servers' CAS: a fresh ext4 image per run ($IMG, $IMG_SIZE sparse, loop $LOOP_NOTE)" \
         "on $(findmnt -n -o FSTYPE,OPTIONS -T "$(dirname "$IMG")" | tr -s ' ')"
    echo "- server: BuildGrid $("$VENV/bin/pip" show buildgrid 2>/dev/null | awk '/^Version/ { print $2 }'), disk CAS, .ci/buildgrid/buildgrid.yml, 127.0.0.1:$PORT"
    echo "- client: $CLIENT, built from $(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo '?') + working tree"
    echo "- runs: $RUNS; raw floor with ${RAW_INFLIGHT[*]} call(s) in flight"
    local l
    for l in "${LOADS[@]}"; do echo "- load: $l"; done
}

# ---------------------------------------------------------------- main

main() {
    parse_args "$@"
    check_tools
    build
    take_lock "$RDIR"
    local n
    for n in "${SIZES[@]}"; do ensure_tree "$n"; done

    trap cleanup EXIT
    trap 'exit 130' INT TERM
    drop_fs
    rm -rf -- "$RES" && mkdir -p "$RES"
    : >"$JSONL"
    URL="grpc://127.0.0.1:$PORT"
    # One run's image at a time: the source's store, one CAS per server, the pull's
    # store, ~11 KiB a file each, and the filesystem's own tables.
    local avail need=0 size
    for n in "${SIZES[@]}"; do
        size=$(((n * 11 * 1024) * (3 + ${#RAW_INFLIGHT[@]}) + (1 << 30)))
        ((size > need)) && need=$size
    done
    mkdir -p "$(dirname "$IMG")"
    avail=$(df -P -B1 "$(dirname "$IMG")" | awk 'NR == 2 { print $4 }')
    ((avail > need)) || die "only $((avail >> 30)) GiB free for $IMG; a run needs ~$((need >> 30)) GiB at once (WS_BENCH_REMOTE_IMG puts it elsewhere)"

    for n in "${SIZES[@]}"; do bench_size "$n"; done

    local out="$RDIR/results.md"
    {
        echo "## Remote cache benchmark"
        echo
        machine_description
        echo
        report
    } >"$out.tmp"
    mv "$out.tmp" "$out"
    echo
    cat "$out"
    echo
    log "written: $out (every figure as JSON: $JSONL; the client's log: $RES/client.log)"
    if ((FAILURES)); then
        banner "$FAILURES step(s) FAILED: see the messages above"
        exit 1
    fi
}

main "$@"
