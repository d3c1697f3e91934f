#!/usr/bin/env bash
# Daemon and CLI benchmark, run by hand as root (never by CI).
#
#   tests/bench/daemon.sh [--files 10000|100000|both] [--runs N] [--status-runs N]
#                         [--workspaces N] [--clients N] [--duration SECS]
#                         [--backend B] [--fs ext4|xfs] [--no-build] [--no-peers] [--keep]
#                         [--bin DIR] [--phases open,commit,checkout,status,concurrency]
#   tests/bench/daemon.sh --cleanup        # after --keep: stop the daemon, unmount, delete
#
# Times wsd through the `ws` CLI (whole processes, hyperfine) and through raw D-Bus
# calls (tests/bench/daemon_client.rs): the second `ws open` of a directory, commit
# and discard of 10 changed files, `ws store checkout` of the tree into a new
# directory, `ws status` with 100 open workspaces (p99), the daemon's memory, and
# 50 concurrent clients (errors by name, ops/s, fd leaks); beside git on the same
# trees, on the same loop filesystem, in the same run. --bin DIR takes prebuilt
# ws, wsd and daemon_client from DIR (no build: to compare two builds, run each in
# turn); --phases runs only the phases named. Prints a markdown table. See
# tests/bench/README.md, "Daemon benchmark".
#
# Environment: WS_BENCH_DIR (trees, shared with run.sh; default /var/tmp/ws-bench),
#              WS_BENCH_DAEMON_DIR (image, mount, results; default /var/tmp/ws-bench-daemon),
#              WS_BENCH_TARGET (cargo target dir; default: the repository's target/).
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
GEN="$SCRIPT_DIR/gen_tree.py"
SCRIPT_NAME=daemon.sh
# shellcheck source=tests/bench/lib.sh
source "$SCRIPT_DIR/lib.sh"

BENCH=${WS_BENCH_DIR:-/var/tmp/ws-bench}
DDIR=${WS_BENCH_DAEMON_DIR:-/var/tmp/ws-bench-daemon}
# The repository's own target dir by default: the daemon links RocksDB, whose C++
# takes ~13 minutes to compile into a fresh target dir on 2 cores.
TARGET=${WS_BENCH_TARGET:-$REPO_ROOT/target}

SIZES=(10000 100000)
RUNS=10          # hyperfine runs for open, commit, discard (and the raw calls)
STATUS_RUNS=200  # runs for the status percentiles (CLI and git); raw calls: 10x
WORKSPACES=100   # open workspaces during the status, memory and concurrency phases
CLIENTS=50
DURATION=20
K=10             # files changed per commit / discard
BACKEND=""       # the daemon's choice
FSTYPE=ext4
IMG_SIZE=24G
BUILD=1
PEERS=1
KEEP=0
BIN_DIR=""       # --bin: prebuilt ws, wsd and daemon_client
PHASES=open,commit,checkout,status,concurrency

MNT="$DDIR/mnt"
STATE="$MNT/state"
RES="$DDIR/results.d"
JSONL="$DDIR/results.jsonl"
HELPER="$DDIR/helper.py"
WS="" WSD="" CLIENT="" WSD_PID=""
FAILURES=0

usage() { usage_from_header 22 "${1:-0}"; }

parse_args() {
    while (($#)); do
        case $1 in
            --files) parse_sizes "${2:-}"; shift 2 ;;
            --runs) parse_runs "${2:-}"; shift 2 ;;
            --status-runs)
                [[ ${2:-} =~ ^[1-9][0-9]*$ ]] || die "--status-runs takes a positive number"
                STATUS_RUNS=$2; shift 2 ;;
            --workspaces)
                [[ ${2:-} =~ ^[1-9][0-9]*$ ]] || die "--workspaces takes a positive number"
                WORKSPACES=$2; shift 2 ;;
            --clients)
                [[ ${2:-} =~ ^[1-9][0-9]*$ ]] || die "--clients takes a positive number"
                CLIENTS=$2; shift 2 ;;
            --duration)
                [[ ${2:-} =~ ^[1-9][0-9]*$ ]] || die "--duration takes whole seconds"
                DURATION=$2; shift 2 ;;
            --backend)
                case ${2:-} in
                    overlayfs | fuse-overlayfs | mirror) BACKEND=$2 ;;
                    *) die "--backend takes overlayfs, fuse-overlayfs or mirror" ;;
                esac
                shift 2 ;;
            --fs)
                case ${2:-} in
                    ext4 | xfs) FSTYPE=$2 ;;
                    *) die "--fs takes ext4 or xfs" ;;
                esac
                shift 2 ;;
            --no-build) BUILD=0; shift ;;
            --no-peers) PEERS=0; shift ;;
            --keep) KEEP=1; shift ;;
            --bin)
                [[ -d ${2:-} ]] || die "--bin takes a directory holding ws, wsd and daemon_client"
                BIN_DIR=$(cd "$2" && pwd); BUILD=0; shift 2 ;;
            --phases)
                local ph
                for ph in ${2//,/ }; do
                    case $ph in
                        open | commit | checkout | status | concurrency) ;;
                        *) die "unknown phase $ph (open, commit, checkout, status, concurrency)" ;;
                    esac
                done
                PHASES=${2:-}; shift 2 ;;
            --cleanup) check_root; unmount_all; rm -f -- "$DDIR/fs.img"; log "cleaned up $DDIR"; exit 0 ;;
            -h | --help) usage 0 ;;
            *) printf 'unknown argument: %s\n\n' "$1" >&2; usage 2 ;;
        esac
    done
}

# ---------------------------------------------------------------- setup

check_root() {
    ((EUID == 0)) || die "run as root: it makes a loop filesystem and the daemon mounts overlays"
}

check_tools() {
    check_root
    local cmd missing=()
    for cmd in python3 git hyperfine losetup mkfs.ext4 mkfs.xfs findmnt flock; do
        command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd")
    done
    ((${#missing[@]} == 0)) || die "missing tools: ${missing[*]} (apt-get install hyperfine git xfsprogs)"
}

build() {
    if ((BUILD)); then
        command -v cargo >/dev/null ||
            die "cargo not found (under sudo, try 'sudo env PATH=\"\$PATH\" $0 ...')"
        log "building ws, wsd and the D-Bus client (release) into $TARGET"
        (cd "$REPO_ROOT" && CARGO_TARGET_DIR="$TARGET" cargo build --release -p daemon -p ctl) ||
            die "cargo build --release -p daemon -p ctl failed"
        (cd "$REPO_ROOT" && CARGO_TARGET_DIR="$TARGET" cargo build --release -p ws-tests --bench daemon_client) ||
            die "cargo build --release -p ws-tests --bench daemon_client failed"
    fi
    if [[ -n $BIN_DIR ]]; then
        WS="$BIN_DIR/ws" WSD="$BIN_DIR/wsd" CLIENT="$BIN_DIR/daemon_client"
        [[ -x $WS && -x $WSD && -x $CLIENT ]] || die "--bin $BIN_DIR: no ws, wsd or daemon_client there"
        return
    fi
    WS="$TARGET/release/ws"
    WSD="$TARGET/release/wsd"
    [[ -x $WS && -x $WSD ]] || die "no ws or wsd in $TARGET/release (build them, or drop --no-build)"
    # The bench binary has a hash in its name: take the newest.
    CLIENT=$(find "$TARGET/release/deps" -maxdepth 1 -type f -executable -name 'daemon_client-*' \
        -printf '%T@ %p\n' 2>/dev/null | sort -rn | head -1 | cut -d' ' -f2-)
    [[ -n $CLIENT ]] || die "no daemon_client bench binary in $TARGET/release/deps (build failed?)"
    "$CLIENT" --help >/dev/null || die "$CLIENT --help failed"
    "$WS" --help >/dev/null || die "$WS --help failed"
}

# ---------------------------------------------------------------- daemon and mounts

stop_daemon() {
    [[ -n $WSD_PID ]] || return 0
    if kill -0 "$WSD_PID" 2>/dev/null; then
        kill -TERM "$WSD_PID" 2>/dev/null || true
        local i
        for ((i = 0; i < 100; i++)); do
            kill -0 "$WSD_PID" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$WSD_PID" 2>/dev/null; then
            log "wsd $WSD_PID did not stop within 10 s of SIGTERM: killing it"
            kill -KILL "$WSD_PID" 2>/dev/null || true
        fi
    fi
    WSD_PID=""
}

# Daemons left by --keep or an interrupted run on a state dir under $DDIR, found
# through /proc (fuser is not always installed).
stale_daemons() {
    local p
    for p in /proc/[0-9]*; do
        [[ $(cat "$p/comm" 2>/dev/null) == wsd ]] || continue
        tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -q -- "--state-dir $DDIR/" && echo "${p#/proc/}"
    done
}

# Everything mounted under $DDIR, deepest first (workspace views, then the image).
unmount_all() {
    local pid
    for pid in $(stale_daemons); do
        log "stopping the daemon $pid left on $STATE"
        WSD_PID=$pid stop_daemon
    done
    local t
    while read -r t; do
        [[ -n $t ]] || continue
        umount "$t" 2>/dev/null || umount -l "$t" 2>/dev/null || log "cannot unmount $t"
    done < <(findmnt -rn -o TARGET | awk -v p="$DDIR/" 'index($0, p) == 1 { print length($0), $0 }' |
             sort -rn | cut -d' ' -f2-)
    local dev
    while read -r dev; do
        if [[ -n $dev ]]; then losetup -d "$dev" 2>/dev/null || true; fi
    done < <(losetup -nO NAME,BACK-FILE 2>/dev/null | awk -v p="$DDIR/" 'index($2, p) == 1 { print $1 }')
}

cleanup() {
    local rc=$?
    if ((KEEP)); then
        log "--keep: the daemon ($WSD_PID) and $MNT stay; 'WS_STATE_DIR=$STATE $WS list';" \
            "'$0 --cleanup' removes them"
        exit "$rc"
    fi
    stop_daemon
    unmount_all
    rm -f -- "$DDIR/fs.img"
    exit "$rc"
}

LOOP_NOTE=""
make_fs() {
    local img="$DDIR/fs.img" dev
    rm -f -- "$img"
    truncate -s "$IMG_SIZE" "$img"
    case $FSTYPE in
        # Inode tables and journal written now, not in the background during the run.
        ext4) mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$img" ;;
        xfs) mkfs.xfs -q -f -m reflink=1 "$img" ;;
    esac
    if dev=$(losetup --find --show --direct-io=on "$img" 2>/dev/null); then
        LOOP_NOTE="direct I/O"
    else
        dev=$(losetup --find --show "$img")
        LOOP_NOTE="buffered (direct I/O refused)"
    fi
    mkdir -p "$MNT"
    mount "$dev" "$MNT"
    losetup -d "$dev" # autoclear at umount
    log "$FSTYPE on $dev ($IMG_SIZE sparse, $LOOP_NOTE) mounted at $MNT"
}

start_daemon() {
    mkdir -p "$STATE"
    log "starting wsd on $STATE"
    # Without fd 9 (the bench lock): the daemon must not hold it, nor count it.
    "$WSD" --state-dir "$STATE" --bus none >>"$RES/wsd.log" 2>&1 </dev/null 9>&- &
    WSD_PID=$!
    local i
    for ((i = 0; i < 600; i++)); do
        if [[ -S $STATE/wsd.sock ]] &&
            "$CLIENT" --socket "$STATE/wsd.sock" ping --runs 1 --warmup 0 >/dev/null 2>&1; then
            [[ $(cat "/proc/$WSD_PID/comm" 2>/dev/null) == wsd ]] || die "pid $WSD_PID is not wsd"
            log "wsd $WSD_PID answers"
            return
        fi
        kill -0 "$WSD_PID" 2>/dev/null || die "wsd exited: $(tail -n 3 "$RES/wsd.log")"
        sleep 0.1
    done
    die "wsd did not answer within 60 s: $(tail -n 3 "$RES/wsd.log")"
}

# ---------------------------------------------------------------- helpers in python

write_helper() {
    cat >"$HELPER" <<'EOF'
"""daemon.sh's helper: pick and rewrite files, convert figures, sample /proc, report."""
import json, os, sys, time

def regular_files(root):
    root = os.fsencode(root)
    out = []
    for d, dirs, names in os.walk(root):
        for name in names:
            p = os.path.join(d, name)
            if os.path.isfile(p) and not os.path.islink(p):
                out.append(os.path.relpath(p, root))
    out.sort()
    return out

def pct(s, q):
    if not s:
        return None
    import math
    r = max(1, min(len(s), math.ceil(q * len(s))))
    return s[r - 1]

def stats(samples):
    s = sorted(samples)
    n = len(s)
    med = s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2
    return {"runs": n, "min_ms": round(s[0], 3), "p50_ms": round(med, 3),
            "p90_ms": round(pct(s, 0.9), 3), "p99_ms": round(pct(s, 0.99), 3),
            "max_ms": round(s[-1], 3), "mean_ms": round(sum(s) / n, 3)}

def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "pick":  # TREE K OUT: K regular files, indices i*n/K of the sorted listing
        files = regular_files(args[0])
        k = int(args[1])
        with open(args[2], "wb") as f:
            for i in range(k):
                f.write(files[i * len(files) // k] + b"\n")
    elif cmd == "modify":  # ROOT LIST: a new first line, then the old content, in place
        root = os.fsencode(args[0])
        token = time.time_ns()
        for rel in open(args[1], "rb").read().split(b"\n"):
            if not rel:
                continue
            p = os.path.join(root, rel)
            with open(p, "rb") as f:
                old = f.read()
            with open(p, "wb") as f:
                f.write(b"/* daemon bench edit %d */\n" % token + old)
    elif cmd == "hf":  # JSON TOOL WHAT FILES: a hyperfine export as one figure
        times = [t * 1e3 for t in json.load(open(args[0]))["results"][0]["times"]]
        rec = {"tool": args[1], "what": args[2], "files": int(args[3])}
        rec.update(stats(times))
        rec["samples_ms"] = [round(t, 3) for t in times]
        print(json.dumps(rec))
    elif cmd == "tag":  # TOOL FILES: tags the client's JSON lines on stdin
        for line in sys.stdin:
            if line.strip():
                rec = json.loads(line)
                rec["tool"], rec["files"] = args[0], int(args[1])
                print(json.dumps(rec))
    elif cmd == "proc":  # PID LABEL STATE: the daemon's memory, threads, fds, mounts
        pid, label, state = args
        status = {}
        for line in open(f"/proc/{pid}/status"):
            k, _, v = line.partition(":")
            status[k] = v.strip()
        kib = lambda k: int(status.get(k, "0 kB").split()[0])
        fd_targets = {}
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                fd_targets[fd] = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                pass
        fds = len(fd_targets)
        mounts = sum(1 for l in open("/proc/self/mountinfo")
                     if l.split()[4].startswith(state + "/"))
        print(json.dumps({"tool": "proc", "what": "proc", "label": label,
                          "rss_kib": kib("VmRSS"), "hwm_kib": kib("VmHWM"),
                          "anon_kib": kib("RssAnon"), "file_kib": kib("RssFile"),
                          "threads": int(status.get("Threads", 0)), "fds": fds,
                          "mounts": mounts, "fd_targets": fd_targets, "time": time.time()}))
    elif cmd == "report":
        report(args[0], json.loads(args[1]))
    else:
        sys.exit(f"unknown helper command {cmd}")

def report(jsonl, targets):
    recs = [json.loads(l) for l in open(jsonl) if l.strip()]
    sizes = sorted({r["files"] for r in recs if isinstance(r.get("files"), int) and r["files"] > 0})
    def get(tool, what, n, field="p50_ms"):
        for r in reversed(recs):
            if r.get("tool") == tool and r.get("what") == what and r.get("files") == n:
                return r.get(field)
        return None
    def ms(x):
        if x is None:
            return "n/a"
        return f"{x:.2f}" if x < 10 else (f"{x:.1f}" if x < 100 else f"{x:.0f}")
    def ratio(a, b):
        return "n/a" if a is None or b in (None, 0) else f"{a / b:.2f}"
    def met(x, limit):
        return "n/a" if x is None else ("yes" if x < limit else "**no**")
    label = lambda n: f"{n // 1000}k"
    out = []
    out.append("| measurement | files | ws CLI (ms) | ws raw D-Bus (ms) | peer | peer (ms) | CLI/peer | target | met? |")
    out.append("|---|---:|---:|---:|---|---:|---:|---|---|")
    rows = [
        ("open (2nd open of the same dir), median", "open", "open", "p50_ms",
         [("`git worktree add --detach`", "worktree_add"), ("`git checkout -b` (no new dir)", "checkout_b")], 100),
        (f"commit, {targets['k']} files changed, median", "commit", "commit", "p50_ms",
         [("`git add -A && git commit`", "add_commit")], 50),
        (f"discard, {targets['k']} files changed, median", "discard", "discard", "p50_ms",
         [("`git checkout -- .`", "checkout_dot")], 50),
        (f"status, {targets['k']} files changed, p99", "status", "status", "p99_ms",
         [("`git status --porcelain`", "status")], 5),
        (f"status, {targets['k']} files changed, median", "status", "status", "p50_ms",
         [("`git status --porcelain`", "status")], None),
    ]
    for name, cli_what, raw_what, field, peers, limit in rows:
        for n in sizes:
            cli = get("ws-cli", cli_what, n, field)
            raw = get("ws-dbus", raw_what, n, field)
            if cli is None and raw is None:
                continue  # a phase not run (--phases)
            for i, (peer, pwhat) in enumerate(peers):
                p = get("git", pwhat, n, field)
                tgt = f"< {limit} ms" if limit and i == 0 else ""
                if limit and i == 0 and cli_what in ("commit", "discard"):
                    tgt += ", 100k/10k ≈ 1"
                ok = met(cli, limit) if limit and i == 0 else ""
                c, r = (ms(cli), ms(raw)) if i == 0 else ("", "")
                out.append(f"| {name if i == 0 else ''} | {label(n)} | {c} | {r} | {peer} | {ms(p)} | {ratio(cli, p)} | {tgt} | {ok} |")
    for n in sizes:
        co, cp = get("ws-cli", "checkout", n), get("cp", "cp_a", n)
        if co is not None or cp is not None:
            out.append(f"| `ws store checkout` into a new dir (copy), median | {label(n)} | {ms(co)} | | `cp -a` of the source | {ms(cp)} | {ratio(co, cp)} | | |")
    for n in sizes:
        out.append(f"| open of the stored tree (`OpenTree`: no walk of the source), median | {label(n)} | | {ms(get('ws-dbus', 'open_tree', n))} | | | | | |")
    for n in sizes:
        if get("ws-dbus", "ping", n) is not None:
            out.append(f"| D-Bus round trip floor (property get), p50 / p99 | {label(n)} | | {ms(get('ws-dbus', 'ping', n))} / {ms(get('ws-dbus', 'ping', n, 'p99_ms'))} | | | | | |")
            out.append(f"| `ws status` of all {targets['workspaces']} workspaces, median | {label(n)} | {ms(get('ws-cli', 'status_all', n))} | | | | | | |")
        out.append(f"| first open (import of the copied tree), one run | {label(n)} | {ms(get('ws-cli', 'first_open', n))} | | | | | | |")
    if len(sizes) > 1:
        small, big = sizes[0], sizes[-1]
        for what, f in (("commit", "p50_ms"), ("discard", "p50_ms"), ("open", "p50_ms"), ("status", "p99_ms")):
            a, b = get("ws-cli", what, big, f), get("ws-cli", what, small, f)
            c, d = get("ws-dbus", what, big, f), get("ws-dbus", what, small, f)
            out.append(f"| {what}: {label(big)}/{label(small)} ratio ({f[:-3]}) | | {ratio(a, b)} | {ratio(c, d)} | | | | {'≈ 1.0' if what in ('commit', 'discard') else ''} | |")
    out.append("")
    out.append("Raw D-Bus: the call alone, timed in `daemon_client` over its own connection. CLI: the whole")
    out.append("`ws` process (hyperfine, shell start subtracted). Percentiles are nearest-rank.")
    out.append("")

    procs = [r for r in recs if r.get("tool") == "proc"]
    if procs:
        out.append("#### The daemon process")
        out.append("")
        out.append("| when | VmRSS (MiB) | VmHWM (MiB) | anon / file (MiB) | threads | fds | mounts under the state dir |")
        out.append("|---|---:|---:|---:|---:|---:|---:|")
        for r in procs:
            mib = lambda k: f"{r[k] / 1024:.1f}"
            out.append(f"| {r['label']} | {mib('rss_kib')} | {mib('hwm_kib')} | {mib('anon_kib')} / {mib('file_kib')} | {r['threads']} | {r['fds']} | {r['mounts']} |")
        idle = [r for r in procs if r["label"].startswith("idle")]
        if idle:
            r = idle[-1]
            out.append("")
            out.append(f"Idle with {targets['workspaces']} open workspaces: VmRSS {r['rss_kib'] / 1024:.1f} MiB "
                       f"(target < 100 MiB: {'yes' if r['rss_kib'] < 100 * 1024 else '**no**'}); "
                       f"VmHWM {r['hwm_kib'] / 1024:.1f} MiB.")
        out.append("")

    conc = [r for r in recs if r.get("what") == "concurrent"]
    if conc:
        out.append(f"#### {targets['clients']} concurrent clients (edit+commit, edit+discard, open+close in turn)")
        out.append("")
        out.append("| files | duration (s) | ok ops | ops/s | failed calls, by error | unexpected errors | fds before → after (without RocksDB's files) | mounts before → after | left open |")
        out.append("|---:|---:|---:|---:|---|---:|---|---|---:|")
        for r in conc:
            n = r["files"]
            before = next((p for p in procs if p["label"] == f"before concurrency, {label(n)}"), None)
            after = next((p for p in procs if p["label"] == f"after concurrency, {label(n)}"), None)
            errs = ", ".join(f"{k.rsplit('.', 1)[-1]} {v}" for k, v in r["errors"].items()) or "none"
            other = lambda r: sum(1 for t in r.get("fd_targets", {}).values() if "/db/" not in t)
            fds = (f"{before['fds']} → {after['fds']} ({other(before)} → {other(after)})"
                   if before and after else "n/a")
            mnts = f"{before['mounts']} → {after['mounts']}" if before and after else "n/a"
            out.append(f"| {label(n)} | {r['duration_s']:.1f} | {r['ok_ops']} | {r['ops_per_s']:.1f} | {errs} | {r['unexpected_errors']} | {fds} | {mnts} | {r['left_open']} |")
        out.append("")
        out.append("| files | operation | ok | p50 (ms) | p99 (ms) | max (ms) |")
        out.append("|---:|---|---:|---:|---:|---:|")
        for r in conc:
            for op, s in r["ops"].items():
                out.append(f"| {label(r['files'])} | {op} | {s['runs']} | {ms(s['p50_ms'])} | {ms(s['p99_ms'])} | {ms(s['max_ms'])} |")
        examples = {k: v for r in conc for k, v in r.get("error_examples", {}).items()}
        if examples:
            out.append("")
            out.append("Error examples:")
            out.append("")
            for k, v in examples.items():
                out.append(f"- `{k}`: {v[:300]}")
        out.append("")

    out.append("#### Spread (every figure): min / p50 / p99 / max, ms")
    out.append("")
    out.append("| tool | measurement | files | runs | min | p50 | p99 | max |")
    out.append("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in recs:
        if "p50_ms" in r and r.get("tool") != "proc":
            out.append(f"| {r['tool']} | {r['what']} | {label(r['files'])} | {r['runs']} | {ms(r['min_ms'])} | {ms(r['p50_ms'])} | {ms(r['p99_ms'])} | {ms(r['max_ms'])} |")
    print("\n".join(out))

main()
EOF
}

H() { python3 "$HELPER" "$@"; }

phase() { [[ ,$PHASES, == *,$1,* ]]; }

proc_sample() { H proc "$WSD_PID" "$1" "$STATE" >>"$JSONL"; }

# hf NAME TOOL WHAT FILES [hyperfine args...]: runs hyperfine, records the figure.
hf() {
    local name=$1 tool=$2 what=$3 n=$4
    shift 4
    log "$tool $what, $n files"
    if hyperfine --style basic --export-json "$RES/$name.json" "$@" >&2; then
        H hf "$RES/$name.json" "$tool" "$what" "$n" >>"$JSONL"
    else
        FAILURES=$((FAILURES + 1))
        banner "hyperfine FAILED: $tool $what, $n files"
    fi
}

# client TOOL FILES ARGS...: a daemon_client measurement, recorded.
client() {
    local n=$1
    shift
    if ! "$CLIENT" --socket "$STATE/wsd.sock" "$@" >"$RES/client.out" 2>"$RES/client.err"; then
        FAILURES=$((FAILURES + 1))
        banner "daemon_client $1 FAILED ($n files)" "$(tail -n 5 "$RES/client.err")"
    fi
    H tag ws-dbus "$n" <"$RES/client.out" >>"$JSONL"
    cat "$RES/client.err" >>"$RES/client.log"
}

check() { # CONDITION-TEXT: records a failed check loudly
    FAILURES=$((FAILURES + 1))
    banner "CHECK FAILED: $*"
}

LOADS=()
# Before each stage: nothing dirty left to write back, and the CPUs quiet (the
# daemon's RocksDB flushes and compactions after many opens take seconds): up to
# 30 s of waiting for a 2 s sample at most 20% busy.
settle() {
    sync
    local busy i
    for ((i = 0; i < 15; i++)); do
        busy=$(cpu_busy)
        ((busy > 20)) || break
    done
    LOADS+=("$1: CPUs ${busy}% busy at start (after $((2 * i + 2)) s of waiting), load average $(cut -d' ' -f1 /proc/loadavg)")
    ((busy <= 20)) || banner "the CPUs were ${busy}% busy just before '$1': timings will be noisy"
}

view_of() { "$WS" status "$1" --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["path"])'; }

# ---------------------------------------------------------------- phases

setup_trees() {
    local n
    for n in "${SIZES[@]}"; do
        log "copying tree-$n onto $FSTYPE: the source and git's repository (untimed)"
        cp -a "$BENCH/trees/tree-$n" "$MNT/src-$n"
        H pick "$MNT/src-$n" "$K" "$DDIR/pick-$n"
        if ((PEERS)); then
            cp -a "$BENCH/trees/tree-$n" "$MNT/git-$n"
            log "git: initial commit of tree-$n (untimed)"
            (cd "$MNT/git-$n" && git init -q -b main && git config gc.auto 0 &&
                git add -A && git commit -q -m base && git status --porcelain >/dev/null)
        fi
    done
    sync
}

first_open() {
    local n=$1 t0 t1
    log "ws open first-$n (imports the tree)"
    t0=${EPOCHREALTIME/./}
    "$WS" open "first-$n" --source "$MNT/src-$n" ${BACKEND:+--backend "$BACKEND"} >&2
    t1=${EPOCHREALTIME/./}
    echo "{\"tool\": \"ws-cli\", \"what\": \"first_open\", \"files\": $n, \"runs\": 1," \
        "\"min_ms\": $(((t1 - t0) / 1000)), \"p50_ms\": $(((t1 - t0) / 1000))," \
        "\"p99_ms\": $(((t1 - t0) / 1000)), \"max_ms\": $(((t1 - t0) / 1000))}" >>"$JSONL"
}

# 1. A second open of the same directory, against git making a second editable
# directory (`git worktree add`) and git's cheapest new line of work (`checkout -b`).
bench_open() {
    local n=$1 b=${BACKEND:+--backend $BACKEND}
    settle "open, $n files"
    hf "open-ws-$n" ws-cli open "$n" --runs "$RUNS" --warmup 1 \
        --prepare "$WS close bo-$n --force >/dev/null 2>&1; sync -f $MNT" \
        "$WS open bo-$n --source $MNT/src-$n $b"
    "$WS" close "bo-$n" --force >/dev/null
    client "$n" open --source "$MNT/src-$n" --runs "$RUNS" --warmup 1 ${BACKEND:+--backend "$BACKEND"}
    # The same open without the walk of the source: OpenTree of the stored tree.
    local digest
    digest=$("$WS" status "first-$n" --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["base_source_digest"])')
    client "$n" open-tree --digest "$digest" --runs "$RUNS" --warmup 1 ${BACKEND:+--backend "$BACKEND"}
    ((PEERS)) || return 0
    local g="$MNT/git-$n" wt="$MNT/wt-$n"
    hf "open-git-wt-$n" git worktree_add "$n" --runs "$RUNS" --warmup 1 \
        --prepare "git -C $g worktree remove --force $wt >/dev/null 2>&1; rm -rf $wt; git -C $g worktree prune; sync -f $MNT" \
        "git -C $g worktree add -q --detach $wt"
    git -C "$g" worktree remove --force "$wt"
    hf "open-git-cob-$n" git checkout_b "$n" --runs "$RUNS" --warmup 1 \
        --prepare "git -C $g checkout -q main && (git -C $g branch -q -D bench 2>/dev/null; true)" \
        "git -C $g checkout -q -b bench"
    git -C "$g" checkout -q main
}

# 2. Commit and discard of K rewritten files (rewritten and synced in --prepare).
bench_commit_discard() {
    local n=$1 view
    settle "commit and discard, $n files"
    "$WS" open "cd-$n" --source "$MNT/src-$n" ${BACKEND:+--backend "$BACKEND"} >&2
    view=$(view_of "cd-$n")
    local prep="python3 $HELPER modify $view $DDIR/pick-$n && sync -f $view"
    hf "commit-ws-$n" ws-cli commit "$n" --runs "$RUNS" --warmup 1 --prepare "$prep" \
        "$WS commit cd-$n -m bench"
    local bad
    bad=$("$WS" log "cd-$n" --json | python3 -c '
import json, sys
log = [e for e in json.load(sys.stdin) if e["op"] == "commit"]
print(sum(1 for e in log if e["changes"] != int(sys.argv[1])), len(log))' "$K")
    [[ $bad == "0 $((RUNS + 1))" ]] || check "ws commit: (bad, commits) = ($bad), $((RUNS + 1)) commits of $K changes expected"
    hf "discard-ws-$n" ws-cli discard "$n" --runs "$RUNS" --warmup 1 --prepare "$prep" \
        "$WS discard cd-$n"
    python3 "$HELPER" modify "$view" "$DDIR/pick-$n"
    local dropped
    dropped=$("$WS" discard "cd-$n" --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["discarded"])')
    ((dropped == K)) || check "ws discard dropped $dropped changes, $K expected"
    if ((PEERS)); then
        local g="$MNT/git-$n"
        local gprep="python3 $HELPER modify $g $DDIR/pick-$n && sync -f $g"
        hf "commit-git-$n" git add_commit "$n" --runs "$RUNS" --warmup 1 --prepare "$gprep" \
            "git -C $g add -A && git -C $g commit -q -m bench"
        local lines
        lines=$(git -C "$g" diff --name-only HEAD~1 HEAD | wc -l)
        ((lines == K)) || check "the last git commit changed $lines paths, $K expected"
        hf "discard-git-$n" git checkout_dot "$n" --runs "$RUNS" --warmup 1 --prepare "$gprep" \
            "git -C $g checkout -q -- ."
        lines=$(git -C "$g" status --porcelain | wc -l)
        ((lines == 0)) || check "git checkout -- . left $lines changed paths"
    fi
    client "$n" commit --name "cd-$n" --tree "$MNT/src-$n" --k "$K" --runs "$RUNS" --warmup 1
    client "$n" discard --name "cd-$n" --tree "$MNT/src-$n" --k "$K" --runs "$RUNS" --warmup 1
}

# 2b. `ws store checkout` of the imported tree (copy mode, the default) into a new
# directory, made by the CLI; removed and the filesystem synced in --prepare. Peer:
# `cp -a` of the source (the same files written, nothing to read from a store).
bench_checkout() {
    local n=$1 digest co="$MNT/co-$n"
    settle "checkout, $n files"
    digest=$("$WS" status "first-$n" --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["base_source_digest"])')
    hf "checkout-ws-$n" ws-cli checkout "$n" --runs "$RUNS" --warmup 1 \
        --prepare "rm -rf $co; sync -f $MNT" \
        "$WS store checkout $digest $co"
    local want got
    want=$(find "$MNT/src-$n" -mindepth 1 | wc -l)
    got=$(find "$co" -mindepth 1 | wc -l)
    ((got == want)) || check "ws store checkout wrote $got entries, the source has $want"
    rm -rf -- "$co"
    ((PEERS)) || return 0
    hf "checkout-cp-$n" cp cp_a "$n" --runs "$RUNS" --warmup 1 \
        --prepare "rm -rf $co; sync -f $MNT" \
        "cp -a $MNT/src-$n $co"
    rm -rf -- "$co"
}

# Opens idle workspaces until $WORKSPACES are open, spread over the sizes.
fill_workspaces() {
    local open n i=0 per
    open=$("$WS" list --json | python3 -c 'import json, sys; print(len(json.load(sys.stdin)))')
    local need=$((WORKSPACES - open))
    ((need > 0)) || return 0
    for n in "${SIZES[@]}"; do
        per=$(((need + ${#SIZES[@]} - 1 - i) / ${#SIZES[@]}))
        i=$((i + 1))
        log "opening $per idle workspaces over tree-$n"
        client "$n" open-many --source "$MNT/src-$n" --prefix "idle-$n-" --count "$per" ${BACKEND:+--backend "$BACKEND"}
    done
    open=$("$WS" list --json | python3 -c 'import json, sys; print(len(json.load(sys.stdin)))')
    ((open == WORKSPACES)) || check "$open workspaces open, $WORKSPACES expected"
}

# 3. Status of a workspace with K uncommitted changes, among $WORKSPACES open ones.
bench_status() {
    local n=$1 view
    settle "status, $n files"
    view=$(view_of "cd-$n")
    python3 "$HELPER" modify "$view" "$DDIR/pick-$n"
    sync -f "$view"
    local lines
    lines=$("$WS" status "cd-$n" --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["dirty"])')
    ((lines == K)) || check "ws status cd-$n found $lines changes, $K expected"
    hf "status-ws-$n" ws-cli status "$n" --runs "$STATUS_RUNS" --warmup 5 \
        "$WS status cd-$n"
    client "$n" status --name "cd-$n" --runs $((STATUS_RUNS * 10)) --warmup 20
    client "$n" ping --runs $((STATUS_RUNS * 10)) --warmup 20
    hf "status-all-ws-$n" ws-cli status_all "$n" --runs 5 --warmup 1 "$WS status"
    if ((PEERS)); then
        local g="$MNT/git-$n"
        python3 "$HELPER" modify "$g" "$DDIR/pick-$n"
        sync -f "$g"
        lines=$(git -C "$g" status --porcelain | wc -l)
        ((lines == K)) || check "git status listed $lines paths, $K expected"
        hf "status-git-$n" git status "$n" --runs "$STATUS_RUNS" --warmup 5 \
            "git -C $g status --porcelain"
        git -C "$g" checkout -q -- .
    fi
    "$WS" discard "cd-$n" >/dev/null
}

# 5. Concurrent clients on the idle workspaces of one size.
bench_concurrent() {
    local n=$1
    settle "$CLIENTS concurrent clients, $n files"
    proc_sample "before concurrency, $((n / 1000))k"
    log "$CLIENTS clients for ${DURATION}s on tree-$n"
    client "$n" concurrent --source "$MNT/src-$n" --shared "idle-$n-00" --clients "$CLIENTS" \
        --duration "$DURATION" --k 2 ${BACKEND:+--backend "$BACKEND"}
    # The connections' tasks end when the daemon notices the peers left.
    sleep 3
    proc_sample "after concurrency, $((n / 1000))k"
    local before after
    read -r before after < <(python3 - "$JSONL" "$((n / 1000))k" <<'EOF'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
p = {r["label"]: r for r in recs if r.get("tool") == "proc"}
# RocksDB's own files (logs and tables come and go with flushes) are not counted.
other = lambda r: sum(1 for t in r["fd_targets"].values() if "/db/" not in t)
print(other(p[f"before concurrency, {sys.argv[2]}"]), other(p[f"after concurrency, {sys.argv[2]}"]))
EOF
)
    ((after <= before)) ||
        check "the daemon had $before fds (besides RocksDB's files) before the concurrent clients and $after after"
}

machine_description() {
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "- CPU: $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo), nproc $(nproc);" \
         "memory $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo);" \
         "kernel $(uname -r)"
    echo "- state dir, sources and git repositories: $FSTYPE loop image ($IMG_SIZE sparse, loop $LOOP_NOTE)" \
         "on $(findmnt -n -o FSTYPE,OPTIONS -T "$DDIR" | tr -s ' ')"
    echo "- backend: $("$WS" list --json | python3 -c 'import json, sys; print(", ".join(sorted({w["backend"] for w in json.load(sys.stdin)})) or "?")')"
    echo "- tools: $(git --version), $(hyperfine --version)"
    if [[ -n $BIN_DIR ]]; then
        echo "- ws: $WS (prebuilt, --bin; wsd built $(date -u -r "$WSD" '+%Y-%m-%d %H:%M UTC'))"
    else
        echo "- ws: $WS, built from $(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo '?') + working tree"
    fi
    echo "- phases: $PHASES"
    echo "- runs: $RUNS (+1 warm-up) for open/commit/discard; $STATUS_RUNS (+5) for status, $((STATUS_RUNS * 10)) raw;" \
         "$WORKSPACES open workspaces; $CLIENTS clients for ${DURATION}s"
    local l
    for l in "${LOADS[@]}"; do echo "- load: $l"; done
}

# ---------------------------------------------------------------- main

main() {
    parse_args "$@"
    check_tools
    build
    take_lock "$DDIR"
    local n
    for n in "${SIZES[@]}"; do ensure_tree "$n"; done

    trap cleanup EXIT
    trap 'exit 130' INT TERM
    unmount_all
    local avail need=$((4 << 30))
    for n in "${SIZES[@]}"; do ((n == 100000)) && need=$((need + (7 << 30))); done
    avail=$(df -P -B1 "$DDIR" | awk 'NR == 2 { print $4 }')
    ((avail > need)) || die "only $((avail >> 30)) GiB free in $DDIR; the run writes ~$((need >> 30)) GiB"
    make_fs
    rm -rf -- "$RES" && mkdir -p "$RES"
    : >"$JSONL"
    write_helper
    export WS_STATE_DIR="$STATE"

    setup_trees
    start_daemon
    proc_sample "started"
    for n in "${SIZES[@]}"; do first_open "$n"; done
    proc_sample "after the first open of each tree"
    if phase open; then for n in "${SIZES[@]}"; do bench_open "$n"; done; fi
    if phase commit; then for n in "${SIZES[@]}"; do bench_commit_discard "$n"; done; fi
    if phase checkout; then for n in "${SIZES[@]}"; do bench_checkout "$n"; done; fi
    if phase status || phase concurrency; then fill_workspaces; fi
    if phase status; then
        # The status phase edits the commit phase's workspace.
        phase commit || for n in "${SIZES[@]}"; do "$WS" open "cd-$n" --source "$MNT/src-$n" ${BACKEND:+--backend "$BACKEND"} >&2; done
        for n in "${SIZES[@]}"; do bench_status "$n"; done
    fi
    if phase status || phase concurrency; then
        log "letting the daemon idle for 10 s"
        sleep 10
        proc_sample "idle, $WORKSPACES workspaces open"
    fi
    if phase concurrency; then for n in "${SIZES[@]}"; do bench_concurrent "$n"; done; fi
    sleep 5
    proc_sample "end"

    local out="$DDIR/results.md"
    {
        echo "## Daemon and CLI benchmark"
        echo
        machine_description
        echo
        H report "$JSONL" "{\"k\": $K, \"workspaces\": $WORKSPACES, \"clients\": $CLIENTS}"
    } >"$out.tmp"
    mv "$out.tmp" "$out"
    echo
    cat "$out"
    echo
    log "written: $out (every figure as JSON: $JSONL; hyperfine exports, client and daemon logs: $RES/)"
    if ((FAILURES)); then
        banner "$FAILURES measurement(s) or check(s) FAILED: see the messages above"
        exit 1
    fi
}

main "$@"
