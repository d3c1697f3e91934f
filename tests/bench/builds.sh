#!/usr/bin/env bash
# Build benchmark, run by hand as root (never by CI).
#
#   tests/bench/builds.sh [--files 10000|100000|both] [--runs N] [--profile release|debug]
#                         [--no-build]
#
# Measures what ws itself costs around a build, with a trivial build command
# (`true`) so that the figure is the tool's overhead, not the compiler's, on a
# generated element of 10k and 100k source files:
#   - a build in a workspace after editing one file (target < 150 ms),
#   - a fully cached build, key hit, outside and inside a workspace (< 100 ms),
#   - opening a workspace from a failed buildtree (< 200 ms),
# beside `git status` on the same tree in the same run (what noticing one edit
# costs a user's usual tool), as ratios. Whole `ws` processes are timed, as a user
# runs them, median of N runs. Prints a markdown table.
#
# Environment: WS_BENCH_DIR (trees, shared with run.sh; default /var/tmp/ws-bench),
#              WS_BENCH_TARGET (cargo target dir; default /var/tmp/ws-ci-target).
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
GEN="$SCRIPT_DIR/gen_tree.py"
SCRIPT_NAME=builds.sh
# shellcheck source=tests/bench/lib.sh
source "$SCRIPT_DIR/lib.sh"

BENCH=${WS_BENCH_DIR:-/var/tmp/ws-bench}
TARGET=${WS_BENCH_TARGET:-/var/tmp/ws-ci-target}
SIZES=(10000 100000)
RUNS=7
PROFILE=release
BUILD=1

while (($#)); do
    case $1 in
        --files) parse_sizes "${2:-}"; shift 2 ;;
        --runs) parse_runs "${2:-}"; shift 2 ;;
        --profile) PROFILE=${2:-}; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        -h | --help) usage_from_header 17 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done
[[ $PROFILE == release || $PROFILE == debug ]] || die "--profile takes release or debug"
[[ $(id -u) == 0 ]] || die "run as root: builds run in a sandbox, which needs root here"

if ((BUILD)); then
    flag=()
    [[ $PROFILE == release ]] && flag=(--release)
    log "building ws and wsd ($PROFILE) in $TARGET"
    (cd "$REPO_ROOT" && CARGO_TARGET_DIR=$TARGET cargo build "${flag[@]}" -p ctl -p daemon --bins >&2)
fi
WS="$TARGET/$PROFILE/ws"
[[ -x $WS && -x $TARGET/$PROFILE/wsd ]] || die "$WS or wsd is not built (drop --no-build)"
take_lock "$BENCH/builds"

now_ns() { date +%s%N; }

# The median of the numbers on stdin (ms, one decimal).
median() { sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.1f", m/1e6}'; }

# Runs "$@" once, printing its wall time in ns; fails loudly when it fails.
timed() {
    local start end
    start=$(now_ns)
    "$@" >/dev/null 2>"$BENCH/builds/last.err" || { cat "$BENCH/builds/last.err" >&2; die "failed: $*"; }
    end=$(now_ns)
    echo $((end - start))
}

rows=()
for n in "${SIZES[@]}"; do
    ensure_tree "$n"
    dir="$BENCH/builds/project-$n"
    state="$BENCH/builds/state-$n"
    for pid in $(pgrep -f "wsd --state-dir $state" || true); do kill "$pid"; done
    sleep 0.5
    grep -o " $state[^ ]*" /proc/self/mountinfo | tac | xargs -r -n1 umount -l 2>/dev/null || true
    rm -rf "$dir" "$state"
    mkdir -p "$dir"
    log "project of $n files: hard links of the generated tree"
    cp -al "$BENCH/trees/tree-$n" "$dir/src"
    cat >"$dir/ws.toml" <<TOML
[element.big]
sources = "src"
build = ["true"]

[element.fails]
sources = "src"
build = ["exit 1"]
TOML
    export WS_STATE_DIR=$state
    # The lock's descriptor stays here: a daemon ws starts must not inherit it.
    ws() { "$WS" -C "$dir" "$@" 9>&-; }

    log "$n: first build (imports the sources)"
    ws build big >/dev/null
    cached=()
    for _ in $(seq "$RUNS"); do cached+=("$(timed ws build big)"); done

    log "$n: open from a failed buildtree"
    ws build fails >/dev/null 2>&1 || true
    reopen=()
    for _ in $(seq "$RUNS"); do
        reopen+=("$(timed ws open fails)")
        ws close fails --force >/dev/null
    done

    log "$n: builds in a workspace after editing one file"
    ws open big >/dev/null
    view=$(ws status big --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["path"])')
    file=$(cd "$view" && find . -type f -name '*.c' -print -quit)
    ws build big >/dev/null
    incremental=()
    ws_cached=()
    for i in $(seq "$RUNS"); do
        echo "/* edit $i */" >>"$view/$file"
        incremental+=("$(timed ws build big)")
        ws_cached+=("$(timed ws build big)")
    done

    log "$n: git status after editing one file, on the same tree"
    git_dir="$BENCH/builds/git-$n"
    rm -rf "$git_dir"
    cp -a "$BENCH/trees/tree-$n" "$git_dir"
    git -C "$git_dir" init -q && git -C "$git_dir" add -A && git -C "$git_dir" commit -qm base
    git -C "$git_dir" status >/dev/null
    gits=()
    for i in $(seq "$RUNS"); do
        echo "/* edit $i */" >>"$git_dir/$file"
        gits+=("$(timed git -C "$git_dir" status)")
    done

    m_inc=$(printf '%s\n' "${incremental[@]}" | median)
    m_cached=$(printf '%s\n' "${cached[@]}" | median)
    m_ws_cached=$(printf '%s\n' "${ws_cached[@]}" | median)
    m_open=$(printf '%s\n' "${reopen[@]}" | median)
    m_git=$(printf '%s\n' "${gits[@]}" | median)
    ratio() { awk -v a="$1" -v b="$m_git" 'BEGIN {printf "%.2f", a/b}'; }
    rows+=("| $n | workspace build after a 1-file edit | $m_inc ms | < 150 ms | $(ratio "$m_inc") |")
    rows+=("| $n | cached build, in the workspace (key hit) | $m_ws_cached ms | < 100 ms | $(ratio "$m_ws_cached") |")
    rows+=("| $n | cached build, no workspace (re-import + key hit) | $m_cached ms | < 100 ms | $(ratio "$m_cached") |")
    rows+=("| $n | \`ws open\` from a failed buildtree | $m_open ms | < 200 ms | $(ratio "$m_open") |")
    rows+=("| $n | \`git status\` after a 1-file edit (peer) | $m_git ms | | 1.00 |")
    for pid in $(pgrep -f "wsd --state-dir $state" || true); do kill "$pid"; done
done

printf '\n%s build, %s runs each, medians; ratio = ws / git status on the same tree\n\n' "$PROFILE" "$RUNS"
echo "| files | measurement | ws | target | ratio to git status |"
echo "|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
