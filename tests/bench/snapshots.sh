#!/usr/bin/env bash
# Snapshot backend benchmark, run by hand as root (never by CI).
#
#   tests/bench/snapshots.sh [--files 10000|100000|both] [--runs N] [--warmup N]
#                            [--k 10,1000] [--backends LIST] [--no-build] [--no-peers]
#                            [--bin FILE]
#
# Times the overlay crate's snapshotters (overlayfs, fuse-overlayfs, mirror) on
# the bench trees: prepare+mount, commit of K changed files (change set + new
# tree digest), revert, discard; beside `git status`, `git add -A && git commit`
# and `cp -a [--reflink=always]` on the same trees, on the same loop filesystems
# (ext4 and XFS images of their own), in the same run. Prints a markdown table
# with the targets' ratios. --bin FILE runs that prebuilt snapshots bench binary
# (no build: to compare two builds, run each in turn). See tests/bench/README.md,
# "Snapshot benchmarks".
#
# Environment: WS_BENCH_DIR (trees, shared with run.sh; default /var/tmp/ws-bench),
#              WS_BENCH_SNAP_DIR (images, mounts, results; default /var/tmp/ws-bench-snap),
#              WS_BENCH_TARGET (cargo target dir, default /var/tmp/ws-bench-target).
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
GEN="$SCRIPT_DIR/gen_tree.py"
SCRIPT_NAME=snapshots.sh
# shellcheck source=tests/bench/lib.sh
source "$SCRIPT_DIR/lib.sh"

BENCH=${WS_BENCH_DIR:-/var/tmp/ws-bench}
SNAP=${WS_BENCH_SNAP_DIR:-/var/tmp/ws-bench-snap}
TARGET=${WS_BENCH_TARGET:-/var/tmp/ws-bench-target}

SIZES=(10000 100000)
RUNS=5
WARMUP=1
KS=10,1000
BACKENDS=overlayfs,fuse-overlayfs,mirror-xfs,mirror-ext4
BUILD=1
PEERS=1
# Sparse images: only what is written takes space. ~10 GiB is written to the
# ext4 image and ~5 GiB to the XFS one for the 100k tree.
EXT4_SIZE=24G
XFS_SIZE=12G

usage() { usage_from_header 19 "${1:-0}"; }

parse_args() {
    while (($#)); do
        case $1 in
            --files) parse_sizes "${2:-}"; shift 2 ;;
            --runs) parse_runs "${2:-}"; shift 2 ;;
            --warmup)
                [[ ${2:-} =~ ^[0-9]+$ ]] || die "--warmup takes a number"
                WARMUP=$2; shift 2 ;;
            --k)
                [[ ${2:-} =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] || die "--k takes numbers separated by commas"
                KS=$2; shift 2 ;;
            --backends)
                local b
                for b in ${2//,/ }; do
                    case $b in
                        overlayfs | fuse-overlayfs | mirror-xfs | mirror-ext4) ;;
                        *) die "unknown backend $b (overlayfs, fuse-overlayfs, mirror-xfs, mirror-ext4)" ;;
                    esac
                done
                BACKENDS=$2; shift 2 ;;
            --no-build) BUILD=0; shift ;;
            --no-peers) PEERS=0; shift ;;
            --bin)
                [[ -x ${2:-} ]] || die "--bin takes the snapshots bench binary"
                BIN=$(realpath "$2"); BIN_GIVEN=1; BUILD=0; shift 2 ;;
            -h | --help) usage 0 ;;
            *) printf 'unknown argument: %s\n\n' "$1" >&2; usage 2 ;;
        esac
    done
}

# ---------------------------------------------------------------- setup

check_tools() {
    ((EUID == 0)) || die "run as root: it makes loop filesystems and mounts overlays"
    local cmd missing=()
    for cmd in python3 git hyperfine losetup mkfs.ext4 mkfs.xfs fuse-overlayfs findmnt flock; do
        command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd")
    done
    ((${#missing[@]} == 0)) || die "missing tools: ${missing[*]} (apt-get install xfsprogs fuse-overlayfs hyperfine git)"
}

BIN="" BIN_GIVEN=0
build_bench() {
    if [[ -n $BIN ]]; then
        "$BIN" --help >/dev/null || die "$BIN --help failed"
        return
    fi
    if ((BUILD)); then
        command -v cargo >/dev/null ||
            die "cargo not found (under sudo, try 'sudo env PATH=\"\$PATH\" $0 ...')"
        log "building the snapshots bench (release) into $TARGET"
        (cd "$REPO_ROOT" && CARGO_TARGET_DIR="$TARGET" cargo build --release -p overlay --bench snapshots) ||
            die "cargo build --release -p overlay --bench snapshots failed"
    fi
    # The bench binary has a hash in its name: take the newest.
    BIN=$(find "$TARGET/release/deps" -maxdepth 1 -type f -executable -name 'snapshots-*' \
        -printf '%T@ %p\n' 2>/dev/null | sort -rn | head -1 | cut -d' ' -f2-)
    [[ -n $BIN ]] || die "no snapshots bench binary in $TARGET/release/deps (build failed?)"
    "$BIN" --help >/dev/null || die "$BIN --help failed"
}

# ---------------------------------------------------------------- loop filesystems

# Everything mounted under $SNAP, deepest first: the bench's views (overlay,
# fuse-overlayfs) on the loop filesystems, then the loop filesystems.
unmount_all() {
    local t
    while read -r t; do
        [[ -n $t ]] || continue
        umount "$t" 2>/dev/null || umount -l "$t" 2>/dev/null || log "cannot unmount $t"
    done < <(findmnt -rn -o TARGET | awk -v p="$SNAP/" 'index($0, p) == 1 { print length($0), $0 }' |
             sort -rn | cut -d' ' -f2-)
    # Loop devices still backed by our images (mount detaches them, losetup -d here).
    local dev
    while read -r dev; do
        if [[ -n $dev ]]; then losetup -d "$dev" 2>/dev/null || true; fi
    done < <(losetup -nO NAME,BACK-FILE 2>/dev/null | awk -v p="$SNAP/" 'index($2, p) == 1 { print $1 }')
}

cleanup() {
    local rc=$?
    unmount_all
    rm -f -- "$SNAP/ext4.img" "$SNAP/xfs.img"
    exit "$rc"
}

LOOP_NOTE=""
# make_fs NAME FSTYPE SIZE: a fresh sparse image mounted at $SNAP/NAME.
make_fs() {
    local name=$1 fstype=$2 size=$3 img="$SNAP/$1.img" mnt="$SNAP/$1" dev
    rm -f -- "$img"
    truncate -s "$size" "$img"
    case $fstype in
        # Inode tables and journal written now: ext4's lazy init would otherwise
        # write them in the background during the measurements.
        ext4) mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$img" ;;
        xfs) mkfs.xfs -q -f -m reflink=1 "$img" ;;
    esac
    # Direct I/O between the loop device and its image: no second page cache,
    # and a flush of the loop filesystem reaches the disk through the image only.
    if dev=$(losetup --find --show --direct-io=on "$img" 2>/dev/null); then
        LOOP_NOTE="direct I/O"
    else
        dev=$(losetup --find --show "$img")
        LOOP_NOTE="buffered (direct I/O refused)"
    fi
    mkdir -p "$mnt"
    mount "$dev" "$mnt"
    # The device stays attached while mounted; autoclear detaches it at umount.
    losetup -d "$dev"
    log "$fstype on $dev ($size sparse, $LOOP_NOTE) mounted at $mnt"
}

# ---------------------------------------------------------------- measurements
# Every figure is a JSON line in $JSONL, in the bench's format:
# {"bench", "backend", "label" (the filesystem), "files", "phase", "k",
#  "runs", "median_ms", "min_ms", "max_ms", "samples_ms"}.

JSONL=""
FAILURES=0

# emit BACKEND LABEL FILES PHASE K SAMPLES_MS...
emit() {
    python3 - "$@" >>"$JSONL" <<'EOF'
import json, sys
backend, label, files, phase, k, *samples = sys.argv[1:]
s = sorted(float(x) for x in samples)
n = len(s)
med = s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2
print(json.dumps({"bench": "baseline", "backend": backend, "label": label, "files": int(files),
                  "phase": phase, "k": int(k) if k else None, "runs": n,
                  "median_ms": round(med, 3), "min_ms": round(s[0], 3), "max_ms": round(s[-1], 3),
                  "samples_ms": [round(float(x), 3) for x in samples]}))
EOF
}

# Rewrites K regular files of TREE, spread over its listing sorted by bytes
# (indices i*n/K, as the bench picks them): a new first line, then the old
# content, in place (open with truncation).
MODIFY_PY=""
write_modify_py() {
    MODIFY_PY="$SNAP/modify.py"
    cat >"$MODIFY_PY" <<'EOF'
import os, sys, time
root, k = sys.argv[1], int(sys.argv[2])
files = []
for d, dirs, names in os.walk(os.fsencode(root)):
    for name in names:
        p = os.path.join(d, name)
        if os.path.isfile(p) and not os.path.islink(p):
            files.append(os.path.relpath(p, os.fsencode(root)))
files.sort()
n = len(files)
token = time.time_ns()
for i in range(k):
    p = os.path.join(os.fsencode(root), files[i * n // k])
    with open(p, "rb") as f:
        old = f.read()
    with open(p, "wb") as f:
        f.write(b"/* git bench edit %d */\n" % token + old)
EOF
}

# git on the tree's copy on filesystem FS: one untimed commit of the whole
# tree, then per K: `git status --porcelain` and `git add -A && git commit`
# after K files were rewritten (hyperfine --prepare, with a sync of the
# filesystem, as the bench syncs before each timed phase).
bench_git() {
    local fs=$1 n=$2 tree="$SNAP/$1/tree-$2" gitdir="$SNAP/$1/git-$2" k
    log "git on $fs, $n files: initial commit (untimed)"
    rm -rf -- "$gitdir"
    git --git-dir="$gitdir" --work-tree="$tree" init -q
    (cd "$tree" && GIT_DIR="$gitdir" GIT_WORK_TREE="$tree" git add -A &&
        GIT_DIR="$gitdir" GIT_WORK_TREE="$tree" git commit -q -m base)
    for k in ${KS//,/ }; do
        log "git on $fs, $n files, K=$k: git status --porcelain"
        local prep="python3 $MODIFY_PY $tree $k && sync -f $tree"
        local json="$RES/git-$fs-$n-$k"
        (cd "$tree" && GIT_DIR="$gitdir" GIT_WORK_TREE="$tree" hyperfine --style basic \
            --runs "$RUNS" --warmup "$WARMUP" --prepare "$prep" \
            --export-json "$json-status.json" 'git status --porcelain' >&2)
        local lines
        lines=$(cd "$tree" && GIT_DIR="$gitdir" GIT_WORK_TREE="$tree" git status --porcelain | wc -l)
        ((lines == k)) || banner "git status listed $lines paths after rewriting $k files"
        log "git on $fs, $n files, K=$k: git add -A && git commit"
        (cd "$tree" && GIT_DIR="$gitdir" GIT_WORK_TREE="$tree" hyperfine --style basic \
            --runs "$RUNS" --warmup "$WARMUP" --prepare "$prep" \
            --export-json "$json-commit.json" 'git add -A && git commit -q -m x' >&2)
        lines=$(git --git-dir="$gitdir" diff --name-only HEAD~1 HEAD | wc -l)
        ((lines == k)) || banner "the last git commit changed $lines paths, $k expected"
        local phase
        for phase in status commit; do
            # shellcheck disable=SC2046 # one word per sample
            emit git "$fs" "$n" "git_$phase" "$k" $(python3 -c '
import json, sys
for t in json.load(open(sys.argv[1]))["results"][0]["times"]: print(t * 1e3)' "$json-$phase.json")
        done
    done
}

# cp -a (--reflink=always on XFS) of the tree's copy, WARMUP + RUNS times;
# each copy is deleted (and the filesystem synced) before the next one, as the
# mirror backend's discard deletes its clone before the next prepare. Times the
# copy alone, and the copy followed by a sync of the filesystem.
bench_cp() {
    local fs=$1 n=$2 src="$SNAP/$1/tree-$2" i
    local -a flags=(-a)
    [[ $fs == xfs ]] && flags+=(--reflink=always)
    local cp_ms=() sync_ms=()
    for ((i = 0; i < WARMUP + RUNS; i++)); do
        log "cp ${flags[*]} on $fs, $n files: run $((i + 1))/$((WARMUP + RUNS))"
        local dst="$SNAP/$fs/cp-$n"
        rm -rf -- "$dst"
        sync -f "$SNAP/$fs"
        local t0=${EPOCHREALTIME/./}
        cp "${flags[@]}" "$src" "$dst"
        local t1=${EPOCHREALTIME/./}
        sync -f "$dst"
        local t2=${EPOCHREALTIME/./}
        if ((i >= WARMUP)); then
            cp_ms+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN { print (b - a) / 1000 }')")
            sync_ms+=("$(awk -v a="$t0" -v b="$t2" 'BEGIN { print (b - a) / 1000 }')")
        fi
    done
    rm -rf -- "$SNAP/$fs/cp-$n"
    emit cp "$fs" "$n" cp "" "${cp_ms[@]}"
    emit cp "$fs" "$n" cp_sync "" "${sync_ms[@]}"
}

# The bench binary, with a fresh state dir on the filesystem FS.
bench_ws() {
    local backend=$1 fs=$2 n=$3 tree="$BENCH/trees/tree-$3"
    local state="$SNAP/$fs/state-$backend-$n" name="$backend-$fs-$n"
    log "$backend on $fs, $n files: K=$KS, $RUNS runs (+$WARMUP warm-up)"
    rm -rf -- "$state"
    if ! "$BIN" --state "$state" --tree "$tree" --backend "$backend" --k "$KS" \
        --runs "$RUNS" --warmup "$WARMUP" --label "$fs" >"$RES/$name.jsonl" 2>"$RES/$name.err"; then
        FAILURES=$((FAILURES + 1))
        banner "the snapshots bench FAILED: $backend on $fs, $n files" "$(tail -n 5 "$RES/$name.err")"
    fi
    cat "$RES/$name.jsonl" >>"$JSONL"
    # Whatever a failure left mounted goes now, not at the end.
    local t
    for t in $(findmnt -rn -o TARGET | awk -v p="$state/" 'index($0, p) == 1'); do
        umount "$t" || true
    done
}

# Before each stage: nothing dirty left to write back (the untimed copies of
# the trees are GBs), and a note of how busy the machine was.
LOADS=()
settle() {
    sync
    local busy
    busy=$(cpu_busy)
    LOADS+=("$1: CPUs ${busy}% busy at start, load average $(cut -d' ' -f1 /proc/loadavg)")
    if ((busy > 20)); then
        banner "the CPUs were ${busy}% busy just before '$1': timings will be noisy"
    fi
}

# Each backend runs on both sizes back to back, so that the 100k/10k ratios
# come from the same minutes; then the peers.
run_all() {
    local n fs backend
    for n in "${SIZES[@]}"; do
        for fs in ext4 xfs; do
            log "copying tree-$n onto $fs (untimed)"
            rm -rf -- "$SNAP/$fs/tree-$n"
            cp -a "$BENCH/trees/tree-$n" "$SNAP/$fs/tree-$n"
        done
    done
    for backend in ${BACKENDS//,/ }; do
        for n in "${SIZES[@]}"; do
            settle "$backend, $n files"
            case $backend in
                overlayfs | fuse-overlayfs) bench_ws "$backend" ext4 "$n" ;;
                mirror-xfs) bench_ws mirror xfs "$n" ;;
                mirror-ext4) bench_ws mirror ext4 "$n" ;;
            esac
        done
    done
    ((PEERS)) || return 0
    for n in "${SIZES[@]}"; do
        for fs in ext4 xfs; do
            settle "git and cp on $fs, $n files"
            bench_git "$fs" "$n"
            bench_cp "$fs" "$n"
        done
    done
}

# ---------------------------------------------------------------- report

report() {
    python3 - "$JSONL" "$KS" <<'EOF'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
ks = [int(k) for k in sys.argv[2].split(",")]
k_small = min(ks)
sizes = sorted({l["files"] for l in lines})
fig = {}
for l in lines:
    fig[(l["backend"], l["label"], l["files"], l["phase"], l["k"])] = l

def get(backend, fs, n, phase, k=None, what="median_ms"):
    l = fig.get((backend, fs, n, phase, k))
    return None if l is None else l[what]

def ms(x):
    return "n/a" if x is None else (f"{x:.1f}" if x < 100 else f"{x:.0f}")

def ratio(a, b):
    return "n/a" if a is None or b is None or b == 0 else f"{a / b:.2f}"

def verdict(ok):
    return "n/a" if ok is None else ("yes" if ok else "**no**")

small, big = (sizes[0], sizes[-1]) if sizes else (None, None)
label = lambda n: f"{n // 1000}k"
out = []
both = len(sizes) > 1

out.append(f"### Overlay backends (state on ext4), median ms ({', '.join(label(n) for n in sizes)} files)")
out.append("")
cols = " | ".join(f"{label(n)} (ms)" for n in sizes)
out.append(f"| backend | measurement | {cols} | {label(big)}/{label(small)} | target | met? |")
out.append("|---|---|" + "---:|" * len(sizes) + "---:|---|---|")
rows = [("prepare_mount", None, "prepare+mount", 20.0),
        ("commit", k_small, f"commit, K={k_small}", 30.0),
        ("revert", k_small, f"revert, K={k_small}", 20.0),
        ("discard", k_small, f"discard, K={k_small}", None),
        ("modify", k_small, f"rewrite K={k_small} files through the view", None)]
for k in sorted(set(ks) - {k_small}):
    rows += [("commit", k, f"commit, K={k}", None),
             ("revert", k, f"revert, K={k}", None),
             ("discard", k, f"discard, K={k}", None),
             ("modify", k, f"rewrite K={k} files through the view", None)]
for backend in ("overlayfs", "fuse-overlayfs"):
    if not any(k[0] == backend for k in fig):
        continue
    for phase, k, name, target in rows:
        kk = k_small if phase == "prepare_mount" else k
        vals = [get(backend, "ext4", n, phase, kk) for n in sizes]
        tgt = "" if target is None else f"< {target:.0f} ms"
        ok = None
        if target is not None and all(v is not None for v in vals):
            ok = all(v < target for v in vals)
        if phase == "commit" and k == k_small:
            tgt += ", ratio near 1.0"
        out.append(f"| {backend} | {name} | " + " | ".join(ms(v) for v in vals)
                   + f" | {ratio(vals[-1], vals[0]) if both else '-'} | {tgt} | {verdict(ok) if target else ''} |")
out.append("")
out.append("prepare+mount is the first K's runs. Every commit listed exactly K changes and every")
out.append("revert gave back the base's tree (the bench fails otherwise).")
out.append("")

out.append("### Mirror backend against its peers, median ms")
out.append("")
out.append("| measurement | fs | files | mirror (ms) | peer | peer (ms) | mirror/peer | target | met? |")
out.append("|---|---|---:|---:|---|---:|---:|---|---|")
for fs in ("xfs", "ext4"):
    if not any(k[0] == "mirror" and k[1] == fs for k in fig):
        continue
    cp_name = "cp -a --reflink=always" if fs == "xfs" else "cp -a"
    for n in sizes:
        m = get("mirror", fs, n, "prepare_mount", k_small)
        for peer, phase in ((cp_name, "cp"), (cp_name + " && sync -f", "cp_sync")):
            p = get("cp", fs, n, phase)
            target = "≤ 1.5" if fs == "xfs" and phase == "cp" else ""
            ok = None if not target or m is None or p is None else m / p <= 1.5
            out.append(f"| clone (prepare) | {fs} | {label(n)} | {ms(m)} | `{peer}` | {ms(p)} | {ratio(m, p)} | {target} | {verdict(ok) if target else ''} |")
        for k in sorted(set(ks)):
            m = get("mirror", fs, n, "commit", k)
            for peer, phase in (("git status --porcelain", "git_status"), ("git add -A && git commit", "git_commit")):
                p = get("git", fs, n, phase, k)
                target = "≤ 1.5" if phase == "git_status" and k == k_small else ""
                ok = None if not target or m is None or p is None else m / p <= 1.5
                out.append(f"| commit, K={k} | {fs} | {label(n)} | {ms(m)} | `{peer}` | {ms(p)} | {ratio(m, p)} | {target} | {verdict(ok) if target else ''} |")
        for k in sorted(set(ks)):
            out.append(f"| revert, K={k} | {fs} | {label(n)} | {ms(get('mirror', fs, n, 'revert', k))} | | | | | |")
            out.append(f"| discard, K={k} | {fs} | {label(n)} | {ms(get('mirror', fs, n, 'discard', k))} | | | | | |")
out.append("")

out.append("### git against the overlay backends (same ext4 filesystem), median ms")
out.append("")
out.append("| files | K | `git status --porcelain` | `git add -A && git commit` | overlayfs commit | fuse-overlayfs commit |")
out.append("|---:|---:|---:|---:|---:|---:|")
for n in sizes:
    for k in ks:
        out.append(f"| {label(n)} | {k} | {ms(get('git', 'ext4', n, 'git_status', k))} | {ms(get('git', 'ext4', n, 'git_commit', k))}"
                   f" | {ms(get('overlayfs', 'ext4', n, 'commit', k))} | {ms(get('fuse-overlayfs', 'ext4', n, 'commit', k))} |")
out.append("")

out.append("### One-off steps (one run each), ms")
out.append("")
out.append("| backend | fs | files | import into the store | base checkout (`commit_tree`) |")
out.append("|---|---|---:|---:|---:|")
for (b, fs, n, phase, k), l in sorted(fig.items(), key=lambda x: (x[0][0], x[0][1], x[0][2])):
    if phase == "import":
        out.append(f"| {b} | {fs} | {label(n)} | {ms(l['median_ms'])} | {ms(get(b, fs, n, 'base_checkout'))} |")
out.append("")

out.append("### Spread: min / median / max over the runs, ms")
out.append("")
out.append("| backend or peer | fs | files | phase | K | runs | min | median | max | notes |")
out.append("|---|---|---:|---|---:|---:|---:|---:|---:|---|")
for l in sorted(lines, key=lambda l: (l["backend"], l["label"], l["files"], l["k"] or 0, l["phase"])):
    if l["phase"] in ("import", "base_checkout"):
        continue
    notes = []
    if l.get("hashed_files") is not None:
        notes.append(f"last run read {l['entries_read']} entries, hashed {l['hashed_files']} files")
    if l.get("busy_retries"):
        notes.append(f"remove found the layer busy {l['busy_retries']} times")
    out.append(f"| {l['backend']} | {l['label']} | {label(l['files'])} | {l['phase']} | {l['k'] if l['k'] is not None else ''} | {l['runs']}"
               f" | {ms(l['min_ms'])} | {ms(l['median_ms'])} | {ms(l['max_ms'])} | {'; '.join(notes)} |")
print("\n".join(out))
EOF
}

machine_description() {
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "- CPU: $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo), nproc $(nproc);" \
         "memory $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo);" \
         "kernel $(uname -r)"
    echo "- state dirs and peers' trees: loop images in $SNAP (ext4 $EXT4_SIZE, XFS $XFS_SIZE sparse," \
         "loop $LOOP_NOTE) on $(findmnt -n -o FSTYPE,OPTIONS -T "$SNAP" | tr -s ' ')"
    echo "- tools: $(git --version), $(hyperfine --version), fuse-overlayfs $(fuse-overlayfs --version 2>&1 | awk '/version/ { print $NF; exit }')," \
         "$(cp --version | head -1)"
    if ((BIN_GIVEN)); then
        echo "- bench: $BIN (prebuilt, --bin; built $(date -u -r "$BIN" '+%Y-%m-%d %H:%M UTC'))"
    else
        echo "- bench: $BIN, built from $(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo '?') + working tree"
    fi
    echo "- runs: $RUNS timed (+$WARMUP warm-up) per figure; K = $KS"
    local l
    for l in "${LOADS[@]}"; do echo "- load: $l"; done
}

# ---------------------------------------------------------------- main

main() {
    parse_args "$@"
    check_tools
    build_bench
    take_lock "$SNAP"
    local n
    for n in "${SIZES[@]}"; do ensure_tree "$n"; done

    # Leftovers of an interrupted run, then fresh images.
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    unmount_all
    local need=$((6 << 30))
    for n in "${SIZES[@]}"; do
        ((n == 100000)) && need=$((need + (16 << 30)))
    done
    local avail
    avail=$(df -P -B1 "$SNAP" | awk 'NR == 2 { print $4 }')
    ((avail > need)) || die "only $((avail >> 30)) GiB free in $SNAP; the loop images need ~$((need >> 30)) GiB"
    make_fs ext4 ext4 "$EXT4_SIZE"
    make_fs xfs xfs "$XFS_SIZE"
    write_modify_py

    RES="$SNAP/results.d"
    rm -rf -- "$RES" && mkdir -p "$RES"
    JSONL="$SNAP/results.jsonl"
    : >"$JSONL"
    run_all

    local out="$SNAP/results.md"
    {
        echo "## Snapshot benchmark"
        echo
        machine_description
        echo
        report
    } >"$out"
    echo
    cat "$out"
    echo
    log "written: $out (every figure as JSON: $JSONL; the bench's stderr: $RES/)"
    if ((FAILURES)); then
        banner "$FAILURES bench run(s) FAILED: see the messages above and $RES/*.err"
        exit 1
    fi
}

main "$@"
